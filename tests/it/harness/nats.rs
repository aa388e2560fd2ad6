//! Real nats-server processes for the cluster tests: the pinned release that
//! `scripts/nats-server.sh` provisions under `target/` (run here if
//! `QUIC_CHAT_NATS_SERVER` does not name a binary), each on a free loopback
//! port with JetStream in its own temporary directory, killed on drop.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

/// The nats-server binary, provisioned once per test run.
fn binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY
        .get_or_init(|| {
            if let Some(path) = std::env::var_os("QUIC_CHAT_NATS_SERVER") {
                return PathBuf::from(path);
            }
            let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/nats-server.sh");
            let out = Command::new("bash")
                .arg(script)
                .stderr(Stdio::inherit())
                .output()
                .expect("run scripts/nats-server.sh");
            assert!(
                out.status.success(),
                "scripts/nats-server.sh failed: cannot provision nats-server"
            );
            PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
        })
        .clone()
}

/// One running nats-server.
pub struct NatsServer {
    child: Child,
    /// `nats://127.0.0.1:PORT`.
    pub url: String,
    _dir: tempfile::TempDir,
}

impl NatsServer {
    /// A server with JetStream.
    pub fn start() -> Self {
        Self::start_with(&["-js"])
    }

    /// A server with these extra arguments (`-js` for JetStream).
    pub fn start_with(args: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(binary())
            .args(["-a", "127.0.0.1", "-p", "-1", "-sd"])
            .arg(dir.path())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start nats-server");
        // It logs its port, then "Server is ready"; wait for both, bounded.
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut port = None;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(at) = line.find("Listening for client connections on ") {
                    port = line[at..].rsplit(':').next().map(str::to_owned);
                }
                if line.contains("Server is ready") {
                    let _ = tx.send(port.take());
                }
            }
        });
        let port = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("nats-server ready within 20 s")
            .expect("nats-server logged its port");
        NatsServer {
            child,
            url: format!("nats://127.0.0.1:{}", port.trim()),
            _dir: dir,
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
