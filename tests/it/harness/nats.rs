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
        let port = client_port_when_ready(&mut child);
        NatsServer {
            child,
            url: format!("nats://127.0.0.1:{port}"),
            _dir: dir,
        }
    }

    /// The address clients connect to.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.url.trim_start_matches("nats://").parse().unwrap()
    }
}

/// Wait (at most 20 s) until `child` logged "Server is ready"; returns the
/// client port it logged before that. Its stderr is read until it exits.
fn client_port_when_ready(child: &mut Child) -> u16 {
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
    port.trim().parse().expect("a port number")
}

/// A cluster of nats-servers with JetStream, each on fixed loopback ports
/// (client, route, monitoring) written into its config file, so a server
/// killed and started again comes back on the same ports with its own
/// JetStream directory. Killed on drop.
pub struct NatsCluster {
    servers: Vec<Option<Child>>,
    configs: Vec<PathBuf>,
    /// `nats://127.0.0.1:PORT` of each server, in order.
    pub urls: Vec<String>,
    monitors: Vec<u16>,
    dir: tempfile::TempDir,
}

impl NatsCluster {
    /// `size` servers named s1, s2, … routed to each other; returns once
    /// every one of them knows the JetStream meta leader (at most 30 s).
    pub fn start(size: usize) -> NatsCluster {
        let dir = tempfile::tempdir().unwrap();
        // All bound at once, so no two are the same, then closed for the servers.
        let listeners: Vec<std::net::TcpListener> = (0..size * 3)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        let port = |i: usize| listeners[i].local_addr().unwrap().port();
        let ports: Vec<(u16, u16, u16)> = (0..size)
            .map(|i| (port(3 * i), port(3 * i + 1), port(3 * i + 2)))
            .collect();
        drop(listeners);
        let routes: Vec<String> = ports
            .iter()
            .map(|(_, route, _)| format!("\"nats-route://127.0.0.1:{route}\""))
            .collect();
        let mut configs = Vec::new();
        for (i, (client, route, monitor)) in ports.iter().enumerate() {
            let name = format!("s{}", i + 1);
            let store = dir.path().join(&name);
            let config = format!(
                "server_name: {name}\n\
                 listen: \"127.0.0.1:{client}\"\n\
                 http: \"127.0.0.1:{monitor}\"\n\
                 jetstream {{ store_dir: \"{}\" }}\n\
                 cluster {{\n  name: \"qc-nats\"\n  listen: \"127.0.0.1:{route}\"\n  routes: [{}]\n}}\n",
                store.display(),
                routes.join(", ")
            );
            let path = dir.path().join(format!("{name}.conf"));
            std::fs::write(&path, config).unwrap();
            configs.push(path);
        }
        let mut cluster = NatsCluster {
            servers: (0..size).map(|_| None).collect(),
            configs,
            urls: ports
                .iter()
                .map(|(client, _, _)| format!("nats://127.0.0.1:{client}"))
                .collect(),
            monitors: ports.iter().map(|(_, _, monitor)| *monitor).collect(),
            dir,
        };
        // Started together: each waits for routes before JetStream is up.
        let children: Vec<Child> = (0..size).map(|i| cluster.spawn(i)).collect();
        for (i, mut child) in children.into_iter().enumerate() {
            let port = client_port_when_ready(&mut child);
            assert_eq!(cluster.urls[i], format!("nats://127.0.0.1:{port}"));
            cluster.servers[i] = Some(child);
        }
        for i in 0..size {
            cluster.wait_for_meta_leader(i, Duration::from_secs(30));
        }
        cluster
    }

    fn spawn(&self, i: usize) -> Child {
        Command::new(binary())
            .arg("-c")
            .arg(&self.configs[i])
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start nats-server")
    }

    /// Kill server `i` with SIGKILL and reap it.
    pub fn kill(&mut self, i: usize) {
        let mut child = self.servers[i].take().expect("server is running");
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Start server `i` again (same ports, same JetStream directory); returns
    /// once it listens (JetStream may still be catching up).
    pub fn restart(&mut self, i: usize) {
        assert!(self.servers[i].is_none(), "server {i} is running");
        let mut child = self.spawn(i);
        client_port_when_ready(&mut child);
        self.servers[i] = Some(child);
    }

    /// The JetStream meta leader server `i` knows of, if it is running and knows one.
    pub fn meta_leader(&self, i: usize) -> Option<String> {
        self.servers[i].as_ref()?;
        let jsz = monitor_get(self.monitors[i], "/jsz")?;
        let leader = jsz.get("meta_cluster")?.get("leader")?.as_str()?;
        (!leader.is_empty()).then(|| leader.to_owned())
    }

    fn wait_for_meta_leader(&self, i: usize, limit: Duration) {
        let deadline = std::time::Instant::now() + limit;
        while self.meta_leader(i).is_none() {
            assert!(
                std::time::Instant::now() < deadline,
                "nats-server s{} knows no JetStream meta leader after {limit:?}",
                i + 1
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The index of the running server that has a client connection named
    /// `name` (quic-chat names its connection `quic-chat <node id>`).
    pub fn serving_client(&self, name: &str) -> Option<usize> {
        (0..self.servers.len()).find(|&i| {
            self.servers[i].is_some()
                && monitor_get(self.monitors[i], "/connz").is_some_and(|connz| {
                    connz["connections"].as_array().is_some_and(|connections| {
                        connections
                            .iter()
                            .any(|connection| connection["name"].as_str() == Some(name))
                    })
                })
        })
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for child in self.servers.iter_mut().flatten() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// GET `path` from a monitoring port on 127.0.0.1, as JSON (at most 2 s).
fn monitor_get(port: u16, path: &str) -> Option<serde_json::Value> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).ok()?;
    let text = String::from_utf8(response).ok()?;
    let (_, body) = text.split_once("\r\n\r\n")?;
    serde_json::from_str(body).ok()
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
