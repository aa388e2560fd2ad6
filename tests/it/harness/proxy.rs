//! A TCP proxy on 127.0.0.1 that can be cut off: while blackholed it moves
//! no bytes in either direction (what it has read it holds, the rest waits
//! in the sockets' buffers), yet closes no socket, as a network partition
//! looks to both ends. New connections are accepted and held the same way.
//! Restored, it forwards everything held and goes on. Everything stops on drop.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

/// A running proxy to one target.
pub struct Proxy {
    /// Where it listens.
    pub addr: SocketAddr,
    open: watch::Sender<bool>,
    accepted: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Proxy {
    /// Listen on 127.0.0.1 (a free port) and forward every connection to `target`.
    pub async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("proxy binds");
        let addr = listener.local_addr().unwrap();
        let (open, gate) = watch::channel(true);
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&accepted);
        let task = tokio::spawn(async move {
            // Dropped with the accept loop: aborts every connection's pumps.
            let mut connections = JoinSet::new();
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                counter.fetch_add(1, Ordering::Relaxed);
                let gate = gate.clone();
                connections.spawn(async move {
                    let Ok(server) = TcpStream::connect(target).await else {
                        return;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    tokio::join!(
                        pump(client_read, server_write, gate.clone()),
                        pump(server_read, client_write, gate),
                    );
                });
                // Reap the finished ones.
                while connections.try_join_next().is_some() {}
            }
        });
        Proxy {
            addr,
            open,
            accepted,
            task,
        }
    }

    /// How many connections it has accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::Relaxed)
    }

    /// `nats://` URL of the proxy.
    pub fn nats_url(&self) -> String {
        format!("nats://{}", self.addr)
    }

    /// Stop moving bytes, in both directions, on every connection (sockets stay open).
    pub fn blackhole(&self) {
        self.open.send_replace(false);
    }

    /// Forward again (what was held first).
    pub fn restore(&self) {
        self.open.send_replace(true);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Copy `from` to `to` while the gate is open; an end of stream is passed on
/// (when open) as a shutdown of the write side.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut gate: watch::Receiver<bool>,
) {
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        if gate.wait_for(|open| *open).await.is_err() {
            return;
        }
        // An error ends the stream like an end of stream does.
        let read: usize = from.read(&mut buffer).await.unwrap_or_default();
        // Cut off while reading: hold what was read until restored.
        if gate.wait_for(|open| *open).await.is_err() {
            return;
        }
        if read == 0 {
            let _ = to.shutdown().await;
            return;
        }
        if to.write_all(&buffer[..read]).await.is_err() {
            return;
        }
    }
}
