//! Admission of new connections, before any handshake work is spent on them:
//! a per-IP connection cap, and QUIC address validation (Retry) when many
//! handshakes are in progress, so that spoofed-source floods cost little.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// What to do with one incoming connection attempt.
#[derive(Debug)]
pub(crate) enum Decision {
    /// Go ahead; the slot counts the connection until it is dropped.
    Accept(ConnectionSlot),
    /// Ask the client to prove its address with a Retry first.
    Retry,
    /// Refuse at once (too many connections from this address).
    Refuse,
}

/// Counters an operator (or a test) can read while the server runs.
#[derive(Debug, Default)]
pub struct AdmissionStats {
    /// Retry packets sent for address validation.
    pub retries: AtomicU64,
    /// Connection attempts refused by the per-IP cap.
    pub refused: AtomicU64,
}

/// The admission policy and its bookkeeping. Shared by the accept loop and every session.
#[derive(Debug)]
pub(crate) struct Admission {
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    max_per_ip: usize,
    handshaking: AtomicUsize,
    retry_above: usize,
    stats: Arc<AdmissionStats>,
}

impl Admission {
    /// A policy allowing `max_per_ip` connections per address (0 = unlimited) and
    /// asking for address validation once more than `retry_above` handshakes are
    /// in progress (0 = always).
    pub(crate) fn new(max_per_ip: usize, retry_above: usize) -> Arc<Self> {
        Arc::new(Admission {
            per_ip: Mutex::new(HashMap::new()),
            max_per_ip,
            handshaking: AtomicUsize::new(0),
            retry_above,
            stats: Arc::default(),
        })
    }

    /// The live counters.
    pub(crate) fn stats(&self) -> Arc<AdmissionStats> {
        Arc::clone(&self.stats)
    }

    /// Decide about one connection attempt.
    pub(crate) fn admit(self: &Arc<Self>, incoming: &quinn::Incoming) -> Decision {
        let busy = self.handshaking.load(Ordering::Relaxed) >= self.retry_above;
        if busy && !incoming.remote_address_validated() && incoming.may_retry() {
            self.stats.retries.fetch_add(1, Ordering::Relaxed);
            return Decision::Retry;
        }
        let ip = incoming.remote_address().ip().to_canonical();
        if self.max_per_ip > 0 {
            let mut per_ip = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
            let count = per_ip.entry(ip).or_insert(0);
            if *count >= self.max_per_ip {
                self.stats.refused.fetch_add(1, Ordering::Relaxed);
                return Decision::Refuse;
            }
            *count += 1;
        }
        self.handshaking.fetch_add(1, Ordering::Relaxed);
        Decision::Accept(ConnectionSlot {
            admission: Arc::clone(self),
            ip,
            handshaking: true,
        })
    }
}

/// One admitted connection. Dropping it gives its per-IP slot back.
#[derive(Debug)]
pub(crate) struct ConnectionSlot {
    admission: Arc<Admission>,
    ip: IpAddr,
    handshaking: bool,
}

impl ConnectionSlot {
    /// The handshake finished (either way): it no longer counts as in progress.
    pub(crate) fn handshake_done(&mut self) {
        if std::mem::take(&mut self.handshaking) {
            self.admission.handshaking.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.handshake_done();
        if self.admission.max_per_ip > 0 {
            let mut per_ip = self
                .admission
                .per_ip
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if let Some(count) = per_ip.get_mut(&self.ip) {
                *count -= 1;
                if *count == 0 {
                    per_ip.remove(&self.ip);
                }
            }
        }
    }
}
