//! The server's metrics: one prometheus-client registry per server (no
//! global state), the handles the server counts with, and the HTTP exporter
//! (`exporter.rs`) that `--metrics ADDR` serves them from.
//!
//! Every labelled counter the hot path touches is resolved to its handle
//! when the server starts, so counting a Send or a delivery is one relaxed
//! atomic add on a handle (no label lookup, lock, allocation or log). What
//! the store holds, and the admission and TLS counters that already exist,
//! are read when a scrape asks (`collect.rs`), not maintained per message.

mod cluster;
mod collect;
mod exporter;
mod histogram;

use std::sync::Arc;

use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

pub(crate) use cluster::RemoteRoutes;
pub(crate) use exporter::{bind, serve};
pub(crate) use histogram::LatencyHistogram;

use super::admission::AdmissionStats;
use super::delivery::DeliveryOutcome;
use crate::protocol::{RefuseReason, Status, Version};
use crate::store::Store;
use crate::tls::TlsStats;

/// The `Content-Type` of what [`Metrics::encode`] returns.
pub(crate) const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// One label, as every labelled metric here has.
type Label = [(&'static str, &'static str); 1];

/// The registry of one server and the handles it counts with.
#[derive(Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    /// Connections: open, accepted, failed handshakes.
    pub(crate) connections: ConnectionMetrics,
    /// Hellos answered, by outcome.
    pub(crate) registrations: RegistrationMetrics,
    /// Sends answered, by status (indexed by `Status as usize`, wire order).
    sends: [Counter; Status::ALL.len()],
    /// Live deliveries: outcomes and latency.
    pub(crate) deliveries: DeliveryMetrics,
    /// Stored mail and late receipts.
    pub(crate) mail: MailMetrics,
    /// Sends to users of other nodes (counted only in cluster mode).
    pub(crate) remote: RemoteRoutes,
}

/// Connection counters.
#[derive(Debug, Clone)]
pub(crate) struct ConnectionMetrics {
    /// Connections past their handshake that have not ended.
    open: Gauge,
    /// Handshakes completed.
    accepted: Counter,
    /// Failed handshakes, by [`HandshakeFailure`] (in its `ALL` order).
    failed: [Counter; HandshakeFailure::ALL.len()],
}

/// Why a QUIC handshake failed, as the metrics tell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HandshakeFailure {
    /// TLS failed: a crypto error code, sent by either side.
    Tls,
    /// The peer went quiet.
    TimedOut,
    /// The peer closed, reset or abandoned the connection.
    Closed,
    /// Anything else (a transport error, a version mismatch, ...).
    Other,
}

impl HandshakeFailure {
    /// Every reason, in label order.
    pub(crate) const ALL: [HandshakeFailure; 4] = [
        HandshakeFailure::Tls,
        HandshakeFailure::TimedOut,
        HandshakeFailure::Closed,
        HandshakeFailure::Other,
    ];

    /// The `reason` label.
    pub(crate) const fn name(self) -> &'static str {
        match self {
            HandshakeFailure::Tls => "tls",
            HandshakeFailure::TimedOut => "timed_out",
            HandshakeFailure::Closed => "closed",
            HandshakeFailure::Other => "other",
        }
    }

    /// The reason of a failed handshake's error.
    pub(crate) fn of(error: &quinn::ConnectionError) -> Self {
        use quinn::ConnectionError as E;
        // TLS alerts are carried as QUIC error codes 0x100..=0x1ff (RFC 9001, 4.8).
        let crypto = |code: quinn::TransportErrorCode| (0x100..0x200).contains(&u64::from(code));
        match error {
            E::TransportError(e) if crypto(e.code) => HandshakeFailure::Tls,
            E::ConnectionClosed(close) if crypto(close.error_code) => HandshakeFailure::Tls,
            E::TimedOut => HandshakeFailure::TimedOut,
            E::ConnectionClosed(_) | E::ApplicationClosed(_) | E::Reset => HandshakeFailure::Closed,
            _ => HandshakeFailure::Other,
        }
    }
}

/// Held while a connection is open; counts it in the open-connections gauge.
#[derive(Debug)]
pub(crate) struct OpenConnection(Gauge);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl ConnectionMetrics {
    /// A handshake completed: count it, and the connection as open until
    /// the returned guard is dropped.
    pub(crate) fn accepted(&self) -> OpenConnection {
        self.accepted.inc();
        self.open.inc();
        OpenConnection(self.open.clone())
    }

    /// A handshake failed with `error`.
    pub(crate) fn failed(&self, error: &quinn::ConnectionError) {
        let reason = HandshakeFailure::of(error);
        self.failed[reason as usize].inc();
    }
}

/// Hello outcome counters.
#[derive(Debug, Clone)]
pub(crate) struct RegistrationMetrics {
    welcome: Counter,
    session: Counter,
    /// Refusals, by reason (indexed by `RefuseReason as usize`, wire order).
    refused: [Counter; RefuseReason::ALL.len()],
}

impl RegistrationMetrics {
    /// A Hello was answered `Welcome` (v1) or `Session` (v2).
    pub(crate) fn registered(&self, version: Version) {
        match version {
            Version::V1 => self.welcome.inc(),
            Version::V2 => self.session.inc(),
        };
    }

    /// A Hello was answered `Refused{reason}`.
    pub(crate) fn refused(&self, reason: RefuseReason) {
        self.refused[reason as usize].inc();
    }
}

/// Live delivery counters.
#[derive(Debug, Clone)]
pub(crate) struct DeliveryMetrics {
    /// Outcomes (indexed by `DeliveryOutcome as usize`).
    outcomes: [Counter; DeliveryOutcome::ALL.len()],
    /// From opening the stream to its acknowledgement, acknowledged ones only.
    pub(crate) latency: LatencyHistogram,
}

impl DeliveryMetrics {
    /// A live delivery ended with `outcome`.
    pub(crate) fn ended(&self, outcome: DeliveryOutcome) {
        self.outcomes[outcome as usize].inc();
    }
}

/// Stored-mail counters.
#[derive(Debug, Clone, Default)]
pub(crate) struct MailMetrics {
    /// Messages stored for an offline account.
    pub(crate) queued: Counter,
    /// Stored messages delivered and removed.
    pub(crate) drained: Counter,
    /// Stored messages dropped unread at the end of their lifetime.
    pub(crate) expired: Counter,
    /// Kept late receipts dropped at the end of their lifetime.
    pub(crate) receipts_expired: Counter,
    /// Late receipts acknowledged by their sender's connection.
    pub(crate) receipts_sent: Counter,
}

impl Metrics {
    /// The metrics of a server on `store`, whose admission and TLS counters
    /// are `admission` and `tls` (read at each scrape).
    pub(crate) fn new(
        store: Store,
        admission: Arc<AdmissionStats>,
        tls: Arc<TlsStats>,
        cluster: Option<Arc<crate::cluster::Cluster>>,
    ) -> Self {
        let mut registry = Registry::with_prefix("quic_chat");
        let (open, accepted) = (Gauge::default(), Counter::default());
        registry.register(
            "connections_open",
            "QUIC connections past their handshake that have not ended",
            open.clone(),
        );
        registry.register(
            "connections_accepted",
            "QUIC handshakes completed",
            accepted.clone(),
        );
        let failed = labelled(
            &mut registry,
            "handshakes_failed",
            "QUIC handshakes that failed, by reason (tls: a TLS alert from either side)",
            "reason",
            HandshakeFailure::ALL.map(HandshakeFailure::name),
        );
        let connections = ConnectionMetrics {
            open,
            accepted,
            failed,
        };

        let family = Family::<Label, Counter>::default();
        registry.register(
            "registrations",
            "Hellos answered, by outcome: welcome (v1), session (v2) or the refusal reason",
            family.clone(),
        );
        let handle = |outcome: &'static str| family.get_or_create_owned(&[("outcome", outcome)]);
        let registrations = RegistrationMetrics {
            welcome: handle("welcome"),
            session: handle("session"),
            refused: RefuseReason::ALL.map(|reason| handle(reason.name())),
        };

        let sends = labelled(
            &mut registry,
            "sends",
            "Send requests answered, by status",
            "status",
            Status::ALL.map(Status::name),
        );

        let latency = LatencyHistogram::default();
        let outcomes = labelled(
            &mut registry,
            "deliveries",
            "Live deliveries (not drained mail), by outcome",
            "outcome",
            DeliveryOutcome::ALL.map(DeliveryOutcome::name),
        );
        registry.register(
            "delivery_seconds",
            "Seconds from opening a live delivery stream to the recipient's acknowledgement of it",
            latency.clone(),
        );
        let deliveries = DeliveryMetrics { outcomes, latency };

        let mail = MailMetrics::default();
        for (name, help, counter) in [
            (
                "mail_queued",
                "Messages stored for an offline account (answered Queued)",
                &mail.queued,
            ),
            (
                "mail_drained",
                "Stored messages delivered to their recipient and removed from the store",
                &mail.drained,
            ),
            (
                "mail_expired",
                "Stored messages dropped unread at the end of their lifetime (--mail-ttl)",
                &mail.expired,
            ),
            (
                "late_receipts_expired",
                "Kept late receipts dropped undelivered at the end of their lifetime",
                &mail.receipts_expired,
            ),
            (
                "late_receipts_sent",
                "Late receipts (Push::Receipt) acknowledged by their sender's connection",
                &mail.receipts_sent,
            ),
        ] {
            registry.register(name, help, counter.clone());
        }

        registry.register_collector(Box::new(collect::Scraped {
            store,
            admission,
            tls,
        }));
        let mut remote = RemoteRoutes::default();
        if let Some(cluster) = cluster {
            let family = Family::<Label, Counter>::default();
            registry.register(
                "cluster_remote_sends",
                "Sends to users not on this node, by what NATS brought back: answered (by the \
                 recipient's node), nobody_there (online nowhere), no_answer (in time)",
                family.clone(),
            );
            let handle =
                |outcome: &'static str| family.get_or_create_owned(&[("outcome", outcome)]);
            remote = RemoteRoutes {
                answered: handle("answered"),
                nobody_there: handle("nobody_there"),
                no_answer: handle("no_answer"),
            };
            registry.register_collector(Box::new(cluster::ClusterScraped { cluster }));
        }
        Metrics {
            registry,
            connections,
            registrations,
            sends,
            deliveries,
            mail,
            remote,
        }
    }

    /// A Send was answered `status`.
    pub(crate) fn sent(&self, status: Status) {
        self.sends[status as usize].inc();
    }

    /// Everything, in the Prometheus text format ([`CONTENT_TYPE`]). Reads
    /// the store: call it off the async workers.
    pub(crate) fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        prometheus_text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

/// Register a counter family `name` with one label `key`, and return the
/// handle of each of `values`, in order.
fn labelled<const N: usize>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    key: &'static str,
    values: [&'static str; N],
) -> [Counter; N] {
    let family = Family::<Label, Counter>::default();
    registry.register(name, help, family.clone());
    values.map(|value| family.get_or_create_owned(&[(key, value)]))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The handle arrays are indexed by `as usize`: that must be the index
    /// in `ALL`, for every enum counted so.
    #[test]
    fn enum_discriminants_are_their_index_in_all() {
        for (i, status) in Status::ALL.into_iter().enumerate() {
            assert_eq!(status as usize, i, "{status:?}");
        }
        for (i, reason) in RefuseReason::ALL.into_iter().enumerate() {
            assert_eq!(reason as usize, i, "{reason:?}");
        }
        for (i, outcome) in DeliveryOutcome::ALL.into_iter().enumerate() {
            assert_eq!(outcome as usize, i, "{outcome:?}");
        }
        for (i, failure) in HandshakeFailure::ALL.into_iter().enumerate() {
            assert_eq!(failure as usize, i, "{failure:?}");
        }
    }
}
