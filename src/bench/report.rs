//! The benchmark's results: a readable table, or one JSON object.

use serde::Serialize;

/// Everything one benchmark run measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// `pairs`, `fanin`, `connect`, `idle`, `queued` or `drain`.
    pub workload: String,
    /// The bench's clients: `ours` (this project's transport settings) or
    /// `plain` (quinn's defaults, as a third-party client).
    pub client: String,
    /// Senders (pairs, fanin), concurrent connectors (connect) or connections (idle).
    pub clients: usize,
    /// Sends in flight per sender.
    pub in_flight: usize,
    /// Message body size in bytes.
    pub body_bytes: usize,
    /// Length of the measured window, in seconds.
    pub seconds: f64,
    /// Messages delivered (pairs, fanin), connections made (connect), Sends
    /// answered `Queued` (queued) in the window, or stored messages drained (drain).
    pub count: u64,
    /// `count` per second.
    pub per_second: f64,
    /// Send-to-deliver (messages) or connect-to-welcome (connect) latency, in microseconds.
    pub latency_us: Option<Latency>,
    /// Send-to-receipt latency (how long a sender waits for `Delivered`), in microseconds.
    pub receipt_latency_us: Option<Latency>,
    /// Sender-side receipt statuses seen in the window, by name.
    pub statuses: std::collections::BTreeMap<String, u64>,
    /// Requests that failed outright (connection errors).
    pub errors: u64,
    /// Server CPU time per delivered message (or per connection), in microseconds.
    pub server_cpu_us_per_op: Option<f64>,
    /// Server CPU use over the window, in cores (1.0 = one core busy).
    pub server_cores: Option<f64>,
    /// The load generator's own CPU time per operation, in microseconds: what
    /// the clients' side cost, when generator and server share the machine.
    pub generator_cpu_us_per_op: Option<f64>,
    /// Server resident memory at the end, in KiB.
    pub server_rss_kib: Option<u64>,
    /// Server resident memory per held connection (idle), in KiB.
    pub rss_per_connection_kib: Option<f64>,
    /// Store workloads: Sends answered `Queued` over the whole run (warm-up
    /// and the sends still in flight at the end included): what was stored.
    pub stored: Option<u64>,
    /// Store workloads: the `queued` counts the recipients' `Session`
    /// replies announced when they connected afterwards, summed.
    pub announced: Option<u64>,
    /// Store workloads: stored messages the recipients then received.
    pub drained: Option<u64>,
    /// Message workloads: the server's packets per delivered message over the
    /// window, as the bench's connections counted them.
    pub wire_per_op: Option<Wire>,
}

/// UDP datagrams and ACK frames between the bench's connections and the
/// server (quinn's connection statistics, summed over the connections):
/// totals, or per message in a report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Wire {
    /// Datagrams the server received (QUIC packets, coalesced ones counted once).
    pub datagrams_to_server: f64,
    /// Datagrams the server sent.
    pub datagrams_from_server: f64,
    /// ACK frames the server received.
    pub acks_to_server: f64,
    /// ACK frames the server sent.
    pub acks_from_server: f64,
    /// Packets the bench's connections declared lost (sent to the server).
    pub lost_to_server: f64,
}

impl Wire {
    /// What `connection` has sent and received so far, as the server saw it.
    pub fn of(connection: &quinn::Connection) -> Self {
        let stats = connection.stats();
        Wire {
            datagrams_to_server: stats.udp_tx.datagrams as f64,
            datagrams_from_server: stats.udp_rx.datagrams as f64,
            acks_to_server: stats.frame_tx.acks as f64,
            acks_from_server: stats.frame_rx.acks as f64,
            lost_to_server: stats.path.lost_packets as f64,
        }
    }

    /// The sum of `self` and `other`.
    pub fn plus(self, other: Wire) -> Self {
        self.zip(other, |a, b| a + b)
    }

    /// What happened between `earlier` and `self`, per one of `ops` operations.
    pub fn per_op_since(self, earlier: Wire, ops: u64) -> Option<Self> {
        let ops = (ops > 0).then_some(ops as f64)?;
        Some(self.zip(earlier, |now, then| (now - then) / ops))
    }

    /// Each figure of `self` combined with the same one of `other` by `f`.
    fn zip(self, other: Wire, f: impl Fn(f64, f64) -> f64) -> Self {
        Wire {
            datagrams_to_server: f(self.datagrams_to_server, other.datagrams_to_server),
            datagrams_from_server: f(self.datagrams_from_server, other.datagrams_from_server),
            acks_to_server: f(self.acks_to_server, other.acks_to_server),
            acks_from_server: f(self.acks_from_server, other.acks_from_server),
            lost_to_server: f(self.lost_to_server, other.lost_to_server),
        }
    }
}

/// Latency percentiles, in microseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Latency {
    /// Median.
    pub p50: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest seen.
    pub max: u64,
}

impl Latency {
    /// Percentiles of a histogram recorded in microseconds.
    pub fn of(histogram: &hdrhistogram::Histogram<u64>) -> Option<Self> {
        (!histogram.is_empty()).then(|| Latency {
            p50: histogram.value_at_quantile(0.50),
            p99: histogram.value_at_quantile(0.99),
            p999: histogram.value_at_quantile(0.999),
            max: histogram.max(),
        })
    }
}

impl Report {
    /// The report as a human-readable table.
    pub fn table(&self) -> String {
        let mut rows: Vec<(String, String)> = vec![
            ("workload".into(), self.workload.clone()),
            ("client".into(), self.client.clone()),
            ("clients".into(), self.clients.to_string()),
        ];
        if ["pairs", "fanin", "queued", "drain"].contains(&self.workload.as_str()) {
            rows.push(("in flight per sender".into(), self.in_flight.to_string()));
            rows.push(("body".into(), format!("{} B", self.body_bytes)));
        }
        if !self.workload.starts_with("idle") {
            let unit = match self.workload.as_str() {
                "connect" => "connections",
                "queued" => "queued",
                _ => "messages",
            };
            rows.push(("window".into(), format!("{:.1} s", self.seconds)));
            rows.push((unit.into(), self.count.to_string()));
            rows.push((format!("{unit}/s"), format!("{:.0}", self.per_second)));
        }
        let latencies = [
            ("latency p50 / p99 / p99.9 / max", self.latency_us),
            ("receipt p50 / p99 / p99.9 / max", self.receipt_latency_us),
        ];
        for (label, l) in latencies {
            let Some(l) = l else { continue };
            rows.push((
                label.into(),
                format!(
                    "{} / {} / {} / {}",
                    micros(l.p50),
                    micros(l.p99),
                    micros(l.p999),
                    micros(l.max)
                ),
            ));
        }
        for (status, count) in &self.statuses {
            rows.push((format!("receipts {status}"), count.to_string()));
        }
        let store_counts = [
            ("stored (whole run)", self.stored),
            ("announced by Session", self.announced),
            ("drained", self.drained),
        ];
        for (label, count) in store_counts {
            if let Some(count) = count {
                rows.push((label.into(), count.to_string()));
            }
        }
        if self.errors > 0 {
            rows.push(("errors".into(), self.errors.to_string()));
        }
        if let Some(cpu) = self.server_cpu_us_per_op {
            rows.push(("server CPU per op".into(), format!("{cpu:.2} µs")));
        }
        if let Some(cores) = self.server_cores {
            rows.push(("server CPU".into(), format!("{cores:.2} cores")));
        }
        if let Some(cpu) = self.generator_cpu_us_per_op {
            rows.push(("generator CPU per op".into(), format!("{cpu:.2} µs")));
        }
        if let Some(w) = self.wire_per_op {
            rows.push((
                "datagrams per message in / out".into(),
                format!(
                    "{:.2} / {:.2} (ACK frames {:.2} / {:.2}, lost {:.3})",
                    w.datagrams_to_server,
                    w.datagrams_from_server,
                    w.acks_to_server,
                    w.acks_from_server,
                    w.lost_to_server
                ),
            ));
        }
        if let Some(rss) = self.server_rss_kib {
            rows.push(("server RSS".into(), format!("{rss} KiB")));
        }
        if let Some(per) = self.rss_per_connection_kib {
            rows.push(("server RSS per connection".into(), format!("{per:.1} KiB")));
        }
        let width = rows
            .iter()
            .map(|(k, _)| k.chars().count())
            .max()
            .unwrap_or(0);
        rows.iter()
            .map(|(k, v)| format!("{k:<width$}  {v}\n"))
            .collect()
    }
}

fn micros(us: u64) -> String {
    if us >= 10_000 {
        format!("{:.1} ms", us as f64 / 1000.0)
    } else {
        format!("{us} µs")
    }
}
