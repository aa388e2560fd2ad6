//! Cluster mode's metrics (registered only with `--cluster`): how the sends
//! to users of other nodes went, read at each scrape the lease's state, the
//! live nodes and the users on them, and the last measured NATS round trip.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::ConstGauge;

use crate::cluster::Cluster;

/// The counters of sends routed through NATS, by what came back.
#[derive(Debug, Clone, Default)]
pub(crate) struct RemoteRoutes {
    /// The recipient's node answered.
    pub(crate) answered: Counter,
    /// Nobody serves the name (online nowhere).
    pub(crate) nobody_there: Counter,
    /// No answer in time.
    pub(crate) no_answer: Counter,
}

/// The cluster's state, read at each scrape.
#[derive(Debug)]
pub(super) struct ClusterScraped {
    pub(super) cluster: Arc<Cluster>,
}

impl Collector for ClusterScraped {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let cluster = &self.cluster;
        let lease = cluster.lease().state();
        let serving = *cluster.lease().serving().borrow();
        let me = cluster.node_id().as_str();
        let integers = [
            (
                "cluster_lease_held",
                "1 while this node holds its lease in the cluster",
                i64::from(lease.held),
            ),
            (
                "cluster_serving",
                "1 while this node serves users (0: fenced, its lease is lost or stale)",
                i64::from(serving),
            ),
            (
                "cluster_nodes",
                "Live nodes in the cluster, this one included",
                cluster.roster().nodes().len() as i64,
            ),
            (
                "cluster_users_elsewhere",
                "Users online on the other nodes",
                cluster.roster().count_elsewhere(me) as i64,
            ),
        ];
        for (name, help, value) in integers {
            let gauge = ConstGauge::new(value);
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        let floats = [
            (
                "cluster_lease_age_seconds",
                "Seconds since this node's lease was last renewed",
                lease.renewed.elapsed().as_secs_f64(),
            ),
            (
                "cluster_nats_round_trip_seconds",
                "The last measured round trip to NATS (every 5 s)",
                cluster.last_round_trip().as_secs_f64(),
            ),
        ];
        for (name, help, value) in floats {
            let gauge = ConstGauge::new(value);
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        Ok(())
    }
}
