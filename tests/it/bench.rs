//! `quic-chat bench` runs each workload briefly and reports sane figures.
//! (Speed itself is measured by hand and recorded in docs/BENCHMARKS.md.)

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::harness::process::{output_within, start_server_with, BIN};

/// How long one short bench run may take before it counts as hung.
const BENCH_LIMIT: Duration = Duration::from_secs(60);

fn bench(args: &[&str]) -> serde_json::Value {
    let output = output_within(
        Command::new(BIN)
            .arg("bench")
            .args(args)
            .args(["--json", "--warmup", "0.2"]),
        BENCH_LIMIT,
    );
    assert!(
        output.status.success(),
        "bench failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

/// The report carries the server's CPU per operation and its memory.
fn assert_server_measured(report: &serde_json::Value) {
    assert!(
        report["server_cpu_us_per_op"].as_f64().unwrap() > 0.0,
        "{report}"
    );
    assert!(
        report["server_rss_kib"].as_u64().unwrap() > 1000,
        "{report}"
    );
}

#[test]
fn pairs_reports_throughput_latency_and_server_cost() {
    let report = bench(&["-w", "pairs", "-n", "2", "--in-flight", "4", "-d", "1"]);
    assert_eq!(report["workload"], "pairs");
    let count = report["count"].as_u64().unwrap();
    assert!(count > 10, "{report}");
    let rate = report["per_second"].as_f64().unwrap();
    let seconds = report["seconds"].as_f64().unwrap();
    assert!((rate * seconds - count as f64).abs() < 1.0, "{report}");
    let latency = &report["latency_us"];
    let (p50, p99, max) = (
        latency["p50"].as_u64().unwrap(),
        latency["p99"].as_u64().unwrap(),
        latency["max"].as_u64().unwrap(),
    );
    assert!(
        0 < p50 && p50 <= p99 && p99 <= max && max < 10_000_000,
        "{report}"
    );
    assert!(
        report["statuses"]["delivered"].as_u64().unwrap() > 0,
        "{report}"
    );
    assert_server_measured(&report);
    assert!(
        report["generator_cpu_us_per_op"].as_f64().unwrap() > 0.0,
        "{report}"
    );
    // Packets per message, each way: some, and not absurdly many (a message
    // is a Send in and a Deliver out, several to a packet when batched).
    let wire = &report["wire_per_op"];
    for way in ["datagrams_to_server", "datagrams_from_server"] {
        let per = wire[way].as_f64().unwrap();
        assert!(0.0 < per && per < 20.0, "{way}: {report}");
    }
    assert!(wire["acks_to_server"].as_f64().unwrap() >= 0.0, "{report}");
    assert_eq!(report["errors"], 0);
}

#[test]
fn fanin_connect_and_idle_run() {
    let fanin = bench(&["-w", "fanin", "-n", "3", "--in-flight", "2", "-d", "0.5"]);
    assert!(fanin["count"].as_u64().unwrap() > 0, "{fanin}");
    let connect = bench(&["-w", "connect", "-n", "2", "-d", "0.5"]);
    assert!(connect["count"].as_u64().unwrap() > 0, "{connect}");
    assert!(
        connect["latency_us"]["p50"].as_u64().unwrap() > 0,
        "{connect}"
    );
    let idle = bench(&["-w", "idle", "-n", "20", "-d", "0.5"]);
    assert_eq!(idle["count"], 20, "{idle}");
    let per_connection = idle["rss_per_connection_kib"].as_f64().unwrap();
    assert!(per_connection < 1024.0, "{idle}");
    let accounts = bench(&["-w", "idle-accounts", "-n", "5", "-d", "0.5"]);
    assert_eq!(accounts["workload"], "idle-accounts", "{accounts}");
    assert_eq!(accounts["count"], 5, "{accounts}");
    let per_connection = accounts["rss_per_connection_kib"].as_f64().unwrap();
    assert!(per_connection < 2048.0, "{accounts}");
}

#[test]
fn a_running_server_is_measured_through_its_pid() {
    let dir = tempfile::tempdir().unwrap();
    let (server, port, ca) =
        start_server_with(dir.path(), Stdio::null(), &["--rate-limit", "0"], &[]);
    let (addr, ca) = (format!("127.0.0.1:{port}"), dir.path().join(ca));
    let ca = ca.to_str().unwrap();
    let pairs = ["-w", "pairs", "-n", "2", "--in-flight", "2", "-d", "0.5"];
    let pid = server.child.id().to_string();
    let measured = bench(
        &[
            &[addr.as_str(), "--ca", ca, "--server-pid", &pid][..],
            &pairs,
        ]
        .concat(),
    );
    assert!(measured["count"].as_u64().unwrap() > 0, "{measured}");
    assert_eq!(measured["errors"], 0, "{measured}");
    assert_eq!(
        measured["statuses"].as_object().unwrap().len(),
        1,
        "{measured}"
    );
    assert!(
        measured["statuses"]["delivered"].as_u64().unwrap() > 0,
        "{measured}"
    );
    assert_server_measured(&measured);
    let unmeasured = bench(&[&[addr.as_str(), "--ca", ca][..], &pairs].concat());
    assert!(unmeasured["count"].as_u64().unwrap() > 0, "{unmeasured}");
    assert!(unmeasured["server_cpu_us_per_op"].is_null(), "{unmeasured}");

    let no_such = output_within(
        Command::new(BIN).args(["bench", &addr, "--ca", ca, "--server-pid", "999999999"]),
        BENCH_LIMIT,
    );
    assert!(!no_such.status.success());
    let stderr = String::from_utf8_lossy(&no_such.stderr);
    assert!(
        stderr.contains("cannot read the CPU time of process 999999999"),
        "{stderr}"
    );
}

fn count(report: &serde_json::Value, field: &str) -> u64 {
    report[field]
        .as_u64()
        .unwrap_or_else(|| panic!("no {field}: {report}"))
}

#[test]
fn queued_counts_sends_the_store_then_delivers_to_the_accounts() {
    let report = bench(&["-w", "queued", "-n", "3", "--in-flight", "4", "-d", "1"]);
    assert_eq!(report["workload"], "queued");
    let queued = count(&report, "count");
    assert!(queued > 10, "{report}");
    assert_eq!(
        report["statuses"],
        serde_json::json!({ "queued": queued }),
        "every Send to an offline account is stored: {report}"
    );
    let rate = report["per_second"].as_f64().unwrap();
    let seconds = report["seconds"].as_f64().unwrap();
    assert!((rate * seconds - queued as f64).abs() < 1.0, "{report}");
    // Warm-up and the sends in flight at the end are stored too: the
    // recipients, connecting afterwards, are told of all of them and get them.
    let stored = count(&report, "stored");
    assert!(stored >= queued, "{report}");
    assert_eq!(count(&report, "announced"), stored, "{report}");
    assert_eq!(count(&report, "drained"), stored, "{report}");
    assert!(report["receipt_latency_us"]["p50"].as_u64().unwrap() > 0);
    assert_server_measured(&report);
    assert_eq!(report["errors"], 0, "{report}");
}

#[test]
fn drain_delivers_exactly_what_was_stored() {
    let report = bench(&["-w", "drain", "-n", "3", "--in-flight", "4", "-m", "700"]);
    assert_eq!(report["workload"], "drain");
    assert_eq!(report["statuses"], serde_json::json!({ "queued": 700 }));
    for field in ["stored", "announced", "drained", "count"] {
        assert_eq!(count(&report, field), 700, "{field}: {report}");
    }
    let rate = report["per_second"].as_f64().unwrap();
    let seconds = report["seconds"].as_f64().unwrap();
    assert!(
        rate > 0.0 && (rate * seconds - 700.0).abs() < 1.0,
        "{report}"
    );
    assert_server_measured(&report);
    assert_eq!(report["errors"], 0, "{report}");
}

#[test]
fn a_running_servers_mailbox_cap_shows_in_the_store_counts() {
    // The server's own caps apply: 40 stored, the rest refused, and the
    // drain delivers the 40 only.
    let dir = tempfile::tempdir().unwrap();
    let args = ["--rate-limit", "0", "--mailbox-max-messages", "40"];
    let (_server, port, ca) = start_server_with(dir.path(), Stdio::null(), &args, &[]);
    let (addr, ca) = (format!("127.0.0.1:{port}"), dir.path().join(ca));
    let ca = ca.to_str().unwrap();
    let drain = ["-w", "drain", "-n", "2", "--in-flight", "3", "-m", "100"];
    let report = bench(&[&[addr.as_str(), "--ca", ca][..], &drain].concat());
    assert_eq!(
        report["statuses"],
        serde_json::json!({ "queued": 40, "recipient_busy": 60 }),
        "{report}"
    );
    for field in ["stored", "announced", "drained", "count"] {
        assert_eq!(count(&report, field), 40, "{field}: {report}");
    }
    // A second run on the same server makes accounts of its own.
    let queued = ["-w", "queued", "-n", "2", "--in-flight", "2", "-d", "0.5"];
    let report = bench(&[&[addr.as_str(), "--ca", ca][..], &queued].concat());
    let stored = count(&report, "stored");
    assert!(stored > 0 && stored <= 2 * 40, "{report}");
    assert_eq!(count(&report, "drained"), stored, "{report}");
}

#[test]
fn pairs_with_a_plain_quinn_client_reports_the_same_figures() {
    let report = bench(&[
        "-w",
        "pairs",
        "-n",
        "2",
        "--in-flight",
        "4",
        "-d",
        "1",
        "--client",
        "plain",
    ]);
    assert_eq!(report["client"], "plain", "{report}");
    assert!(report["count"].as_u64().unwrap() > 10, "{report}");
    assert_eq!(
        report["statuses"]["delivered"],
        report["statuses"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_u64().unwrap())
            .sum::<u64>(),
        "{report}"
    );
    assert_server_measured(&report);
    let ours = bench(&["-w", "pairs", "-n", "1", "-d", "0.3"]);
    assert_eq!(ours["client"], "ours");
}
