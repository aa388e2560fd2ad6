//! What a scrape reads when it asks, rather than what the server counts as
//! it goes: the store's size (one read transaction, O(1) table lengths),
//! and the admission and TLS counters those modules already keep.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use crate::server::admission::AdmissionStats;
use crate::store::Store;
use crate::tls::TlsStats;

/// The metrics read at each scrape.
#[derive(Debug)]
pub(super) struct Scraped {
    /// The server's database.
    pub(super) store: Store,
    /// The admission counters.
    pub(super) admission: Arc<AdmissionStats>,
    /// The TLS counters.
    pub(super) tls: Arc<TlsStats>,
}

impl Collector for Scraped {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let refused = ConstCounter::new(self.admission.refused.load(Ordering::Relaxed));
        let mut family = encoder.encode_descriptor(
            "connections_refused",
            "Connection attempts refused before their handshake, by reason",
            None,
            refused.metric_type(),
        )?;
        refused.encode(family.encode_family(&[("reason", "per_ip_limit")])?)?;

        let counters = [
            (
                "address_validations",
                "QUIC Retry packets sent to make a new client prove its address (many handshakes in progress)",
                self.admission.retries.load(Ordering::Relaxed),
            ),
            (
                "tls_resumptions",
                "TLS session tickets taken back from returning clients",
                self.tls.tickets_accepted.load(Ordering::Relaxed),
            ),
        ];
        for (name, help, value) in counters {
            let counter = ConstCounter::new(value);
            counter.encode(encoder.encode_descriptor(
                name,
                help,
                None,
                counter.metric_type(),
            )?)?;
        }

        let totals = match self.store.totals() {
            Ok(totals) => totals,
            Err(e) => {
                // The other metrics still go out; these are missing from this scrape.
                tracing::error!("metrics: cannot read the store's size: {e}");
                return Ok(());
            }
        };
        let gauges = [
            (
                "mail_stored_messages",
                "Messages in the store waiting for their recipient",
                totals.messages,
            ),
            (
                "mail_stored_bytes",
                "Bytes of the stored messages' records",
                totals.bytes,
            ),
            (
                "late_receipts_kept",
                "Late receipts kept in the store for senders not connected",
                totals.notices,
            ),
        ];
        for (name, help, value) in gauges {
            let gauge = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        Ok(())
    }
}
