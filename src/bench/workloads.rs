//! The workloads: message pairs and fan-in, connection rate, idle memory.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::task::JoinSet;

use super::report::{Latency, Report, Wire};
use super::{BenchConfig, BenchError, Meter, Window, Workload};
use crate::client::{Client, ClientEvent, Connector, Incoming};
use crate::protocol::Status;

/// Digits of the send timestamp at the front of every body.
const STAMP_DIGITS: usize = 20;

pub(super) fn histogram() -> Histogram<u64> {
    // 1 µs to 100 s, 3 significant digits.
    Histogram::new_with_bounds(1, 100_000_000, 3).expect("valid histogram bounds")
}

/// A reusable message body of a fixed size: the send timestamp, then filler.
pub(super) struct StampedBody {
    text: String,
}

impl StampedBody {
    /// A body of `size` bytes (at least the stamp).
    pub(super) fn new(size: usize) -> Self {
        let mut text = "0".repeat(STAMP_DIGITS);
        text.push_str(&"x".repeat(size.saturating_sub(STAMP_DIGITS)));
        StampedBody { text }
    }

    /// The body, its stamp set to now: nanoseconds since `epoch`. Rewrites only
    /// the stamp, so that making a body costs the generator next to nothing.
    pub(super) fn stamp(&mut self, epoch: Instant) -> &str {
        let nanos = epoch.elapsed().as_nanos();
        let stamp = format!("{nanos:0width$}", width = STAMP_DIGITS);
        // Same length in and out: replaced in place, the filler is not moved.
        self.text
            .replace_range(..STAMP_DIGITS, &stamp[..STAMP_DIGITS]);
        &self.text
    }
}

/// Microseconds since the stamp at the front of `body`.
fn latency_us(epoch: Instant, body: &str) -> Option<u64> {
    let sent: u128 = body.get(..STAMP_DIGITS)?.parse().ok()?;
    let now = epoch.elapsed().as_nanos();
    u64::try_from(now.saturating_sub(sent) / 1000).ok()
}

/// Shared run state: the epoch of timestamps, and the measuring/stop flags.
pub(super) struct Phase {
    pub(super) epoch: Instant,
    pub(super) measuring: AtomicBool,
    pub(super) stopped: AtomicBool,
}

impl Phase {
    pub(super) fn new() -> Arc<Self> {
        Arc::new(Phase {
            epoch: Instant::now(),
            measuring: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
        })
    }

    /// Warm up, measure for the configured window, then tell the workers to stop.
    pub(super) async fn run(&self, config: &BenchConfig, meter: &Meter) -> Window {
        self.run_counting(config, meter, || ()).await.0
    }

    /// [`Phase::run`], also taking `count()` as the window opens and as it
    /// closes.
    pub(super) async fn run_counting<T>(
        &self,
        config: &BenchConfig,
        meter: &Meter,
        count: impl Fn() -> T,
    ) -> (Window, T, T) {
        meter.phase("warm-up", config.warmup).await;
        let window_start = meter.mark();
        let first = count();
        self.measuring.store(true, Ordering::Relaxed);
        meter.phase("measuring", config.duration).await;
        self.measuring.store(false, Ordering::Relaxed);
        let window = meter.elapsed_since(&window_start);
        let last = count();
        self.stopped.store(true, Ordering::Relaxed);
        (window, first, last)
    }
}

/// `pairs` (each sender to its own receiver) or `fanin` (every sender to one
/// receiver); the receivers connect through `rx_connector` (the same server,
/// or another node of its cluster).
pub async fn messages(
    config: &BenchConfig,
    connector: &Connector,
    rx_connector: &Connector,
    meter: &Meter,
) -> Result<Report, BenchError> {
    let senders = config.clients.max(1);
    let receivers = if config.workload == Workload::Fanin {
        1
    } else {
        senders
    };
    let run = std::process::id();
    let mut inboxes = Vec::new();
    for r in 0..receivers {
        inboxes.push(rx_connector.connect(&format!("rx{r}-{run}")).await?);
    }
    let mut clients = Vec::new();
    for s in 0..senders {
        clients.push(Arc::new(
            connector.connect(&format!("tx{s}-{run}")).await?.0,
        ));
    }
    let phase = Phase::new();

    let connections: Vec<quinn::Connection> = (clients.iter().map(|c| c.connection()))
        .chain(inboxes.iter().map(|(c, _)| c.connection()))
        .cloned()
        .collect();
    let wire = || {
        (connections.iter())
            .map(Wire::of)
            .fold(Wire::default(), Wire::plus)
    };
    let mut receiving = JoinSet::new();
    for (client, incoming) in inboxes {
        receiving.spawn(receive(client, incoming, Arc::clone(&phase)));
    }
    let errors = Arc::new(AtomicU64::new(0));
    let mut sending = JoinSet::new();
    for (s, client) in clients.iter().enumerate() {
        let to = format!("rx{}-{run}", if receivers == 1 { 0 } else { s });
        for _ in 0..config.in_flight.max(1) {
            let (client, to, phase) = (Arc::clone(client), to.clone(), Arc::clone(&phase));
            let errors = Arc::clone(&errors);
            let size = config.body_bytes;
            sending.spawn(async move {
                let mut receipt_latencies = histogram();
                let mut statuses = BTreeMap::<Status, u64>::new();
                let mut body = StampedBody::new(size);
                while !phase.stopped.load(Ordering::Relaxed) {
                    let body = body.stamp(phase.epoch);
                    let sent = Instant::now();
                    match client.send(&to, body).await {
                        Ok(receipt) if phase.measuring.load(Ordering::Relaxed) => {
                            *statuses.entry(receipt.status).or_default() += 1;
                            let us = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
                            receipt_latencies.saturating_record(us.max(1));
                        }
                        Ok(_) => {}
                        Err(_) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                    }
                }
                (receipt_latencies, statuses)
            });
        }
    }

    let (window, wire_before, wire_after) = phase.run_counting(config, meter, wire).await;
    let mut receipt_latencies = histogram();
    let mut statuses = BTreeMap::<Status, u64>::new();
    let drained = async {
        while let Some(done) = sending.join_next().await {
            if let Ok((histogram, counts)) = done {
                let _ = receipt_latencies.add(histogram);
                for (status, count) in counts {
                    *statuses.entry(status).or_default() += count;
                }
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(15), drained).await;

    let mut latencies = histogram();
    let mut delivered = 0;
    // Receivers notice the stop within their 200 ms poll and hand back their counts.
    while let Some(done) = receiving.join_next().await {
        if let Ok((count, histogram)) = done {
            delivered += count;
            let _ = latencies.add(histogram);
        }
    }
    for client in &clients {
        client.close_ref().await;
    }
    let mut report = Report {
        workload: config.workload.name().into(),
        clients: senders,
        in_flight: config.in_flight,
        body_bytes: config.body_bytes,
        seconds: window.wall.as_secs_f64(),
        count: delivered,
        per_second: delivered as f64 / window.wall.as_secs_f64(),
        latency_us: Latency::of(&latencies),
        receipt_latency_us: Latency::of(&receipt_latencies),
        errors: errors.load(Ordering::Relaxed),
        wire_per_op: wire_after.per_op_since(wire_before, delivered),
        ..Report::default()
    };
    for (status, count) in statuses {
        report.statuses.insert(status.name().into(), count);
    }
    window.fill(&mut report, delivered);
    Ok(report)
}

/// Count and time deliveries while measuring; stops when the phase stops.
async fn receive(
    client: Client,
    mut incoming: Incoming,
    phase: Arc<Phase>,
) -> (u64, Histogram<u64>) {
    let mut latencies = histogram();
    let mut count = 0;
    loop {
        let next = tokio::time::timeout(Duration::from_millis(200), incoming.next()).await;
        match next {
            Ok(Ok(ClientEvent::Message(message))) => {
                if phase.measuring.load(Ordering::Relaxed) {
                    count += 1;
                    if let Some(us) = latency_us(phase.epoch, &message.body) {
                        latencies.saturating_record(us.max(1));
                    }
                }
            }
            // Late receipts: only for queued messages, which this workload does not send.
            Ok(Ok(ClientEvent::Receipt(_))) => {}
            Ok(Err(_)) => break,
            Err(_) if phase.stopped.load(Ordering::Relaxed) => break,
            Err(_) => {}
        }
        if phase.stopped.load(Ordering::Relaxed) && !phase.measuring.load(Ordering::Relaxed) {
            break;
        }
    }
    client.close_ref().await;
    (count, latencies)
}

/// `connect`: full connections (handshake, Hello, Welcome, BYE) per second.
pub async fn connect(
    config: &BenchConfig,
    connector: &Connector,
    meter: &Meter,
) -> Result<Report, BenchError> {
    let phase = Phase::new();
    let errors = Arc::new(AtomicU64::new(0));
    let mut loops = JoinSet::new();
    let run = std::process::id();
    for worker in 0..config.clients.max(1) {
        let (connector, phase, errors) =
            (connector.clone(), Arc::clone(&phase), Arc::clone(&errors));
        loops.spawn(async move {
            let mut latencies = histogram();
            let mut count = 0u64;
            let mut i = 0u64;
            while !phase.stopped.load(Ordering::Relaxed) {
                i += 1;
                let started = Instant::now();
                match connector.connect(&format!("c{worker}-{i}-{run}")).await {
                    Ok((client, _incoming)) => {
                        if phase.measuring.load(Ordering::Relaxed) {
                            count += 1;
                            let us =
                                u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
                            latencies.saturating_record(us.max(1));
                        }
                        client.close_ref().await;
                    }
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            (count, latencies)
        });
    }
    let window = phase.run(config, meter).await;
    let mut latencies = histogram();
    let mut count = 0;
    while let Some(done) = loops.join_next().await {
        if let Ok((n, histogram)) = done {
            count += n;
            let _ = latencies.add(histogram);
        }
    }
    let mut report = Report {
        workload: "connect".into(),
        clients: config.clients,
        seconds: window.wall.as_secs_f64(),
        count,
        per_second: count as f64 / window.wall.as_secs_f64(),
        latency_us: Latency::of(&latencies),
        errors: errors.load(Ordering::Relaxed),
        ..Report::default()
    };
    window.fill(&mut report, count);
    Ok(report)
}

/// `idle`: hold `clients` registered connections and read the server's memory per connection.
pub async fn idle(
    config: &BenchConfig,
    connector: &Connector,
    meter: &Meter,
) -> Result<Report, BenchError> {
    let before = meter.server_rss();
    let run = std::process::id();
    let total = config.clients.max(1);
    let mut held = Vec::with_capacity(total);
    let mut opening = JoinSet::new();
    let mut next = 0;
    let mut errors = 0u64;
    meter.progress_len(total as u64, "connecting");
    while held.len() + (errors as usize) < total {
        while next < total && opening.len() < 64 {
            let connector = connector.clone();
            let name = format!("idle{next}-{run}");
            opening.spawn(async move { connector.connect(&name).await });
            next += 1;
        }
        match opening.join_next().await {
            Some(Ok(Ok(connected))) => {
                held.push(connected);
                meter.progress_set(held.len() as u64);
            }
            Some(_) => errors += 1,
            None => break,
        }
    }
    let mut report = hold_and_measure(config, meter, before, held.len()).await;
    for (client, _) in held {
        client.close_ref().await;
    }
    report.workload = "idle".into();
    report.clients = total;
    report.errors = errors;
    Ok(report)
}

/// With `held` connections open (the server's RSS was `before` without
/// them): let the server settle (handshake buffers released), then read its
/// memory per connection.
pub(super) async fn hold_and_measure(
    config: &BenchConfig,
    meter: &Meter,
    before: Option<u64>,
    held: usize,
) -> Report {
    meter
        .phase("holding", config.duration.min(Duration::from_secs(5)))
        .await;
    let after = meter.server_rss();
    let per_connection = match (before, after) {
        (Some(b), Some(a)) if held > 0 => Some(a.saturating_sub(b) as f64 / 1024.0 / held as f64),
        _ => None,
    };
    Report {
        count: held as u64,
        server_rss_kib: after.map(|a| a / 1024),
        rss_per_connection_kib: per_connection,
        ..Report::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamped_body_keeps_its_size_and_carries_its_send_time() {
        let epoch = Instant::now() - Duration::from_millis(5);
        let mut body = StampedBody::new(4096);
        let first = body.stamp(epoch).to_owned();
        assert_eq!(first.len(), 4096);
        assert!(first[STAMP_DIGITS..].bytes().all(|b| b == b'x'));
        let stamped_at: u128 = first[..STAMP_DIGITS].parse().expect("digits");
        assert!(
            stamped_at >= 5_000_000,
            "stamped {stamped_at} ns after the epoch"
        );
        let age = latency_us(epoch, &first).expect("a stamp");
        assert!(age < 60_000_000, "{age} µs");
        // Restamping rewrites the stamp only, in place.
        let (address, capacity) = (body.text.as_ptr(), body.text.capacity());
        let second = body.stamp(epoch - Duration::from_secs(1)).to_owned();
        assert_eq!(
            (body.text.as_ptr(), body.text.capacity()),
            (address, capacity)
        );
        assert_eq!(second.len(), 4096);
        assert_ne!(first[..STAMP_DIGITS], second[..STAMP_DIGITS]);
        assert_eq!(first[STAMP_DIGITS..], second[STAMP_DIGITS..]);
        // A body no bigger than the stamp is just the stamp.
        assert_eq!(StampedBody::new(3).stamp(epoch).len(), STAMP_DIGITS);
    }
}
