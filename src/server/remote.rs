//! This node's part in a cluster (only with `--cluster`): names claimed in
//! the whole cluster, deliveries to and from users on other nodes, the
//! questions other nodes ask about this node's users, and fencing (a node
//! that lost its lease closes its users' connections). The engine under it
//! is [`crate::cluster`]; this module ties it to mailboxes and the registry.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::delivery::{self, DeliveryOutcome, Envelope};
use super::metrics::Metrics;
use super::registry::{ClaimError, Registry};
use crate::cluster::{self, Cluster, Control, ControlAnswer, RemoteAnswer, TakeOverError};
use crate::protocol::{codec, CloseCode, NameKey};

/// How long a node waits for another's answer to a question about a name.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a claim of a name in the cluster may take.
const CLAIM_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a remote delivery may take beyond the delivery budget (the
/// trips through NATS), still well inside the 10 s every Send is answered in.
const REMOTE_MARGIN: Duration = Duration::from_secs(1);

/// The pauses before a delivery nobody took is tried again, while a live
/// node claims the name (300 ms in all, inside the 10 s every Send is
/// answered in): a node whose NATS server died has its subscriptions back
/// on another server within milliseconds. A name online nowhere is not
/// tried again.
const RESUBSCRIBE_PAUSES: [Duration; 4] = [
    Duration::from_millis(20),
    Duration::from_millis(40),
    Duration::from_millis(80),
    Duration::from_millis(160),
];

/// The most stale claims one node clears per lease lifetime.
const STALE_PER_ROUND: usize = 1000;

/// How often a claim is tried again when the claim changed under it.
const CLAIM_ROUNDS: usize = 3;

/// The reason a connection is closed with when its account signed in on another node.
const SIGNED_IN_ELSEWHERE: &str = "signed in elsewhere";

/// The reason a connection the operator kicked is closed with.
pub(crate) const KICKED: &str = "disconnected by the operator";

/// The reason connections are closed with when the node fences itself.
pub(crate) const FENCED_REASON: &str = "this server lost contact with its cluster";

/// The outcome bytes a node answers (one per [`DeliveryOutcome`]), so an
/// answer needs no allocation.
static OUTCOME_BYTES: [u8; DeliveryOutcome::ALL.len()] = [0, 1, 2, 3, 4, 5];

/// Close `key`'s connection on this node with REPLACED (it signed in
/// elsewhere, or the operator kicked it); false if it is not connected here.
pub(crate) fn kick_local(local: &Registry, key: NameKey, reason: &str) -> bool {
    match local.lookup(&key) {
        Some(mailbox) => {
            info!(user = %mailbox.name, "disconnected: {reason}");
            mailbox.close();
            mailbox.disconnect(CloseCode::Replaced, reason);
            true
        }
        None => false,
    }
}

/// This node in its cluster. Shared by presence and the background tasks.
#[derive(Debug)]
pub(crate) struct Remote {
    cluster: Arc<Cluster>,
    local: Registry,
    delivery_timeout: Duration,
    metrics: Arc<Metrics>,
}

/// A name held in the cluster for one registration of this node, and its
/// delivery subscription; dropping it ends both.
#[derive(Debug)]
pub(crate) struct RemoteClaim {
    remote: Arc<Remote>,
    claim: cluster::Claim,
    inbox: CancellationToken,
}

impl Drop for RemoteClaim {
    fn drop(&mut self) {
        self.inbox.cancel();
        let (remote, claim) = (Arc::clone(&self.remote), self.claim.clone());
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let released =
                    tokio::time::timeout(CONTROL_TIMEOUT, remote.cluster.names().release(&claim))
                        .await;
                if !matches!(released, Ok(Ok(()))) {
                    // The claim stays until this run's lease ends or the
                    // name is claimed again (a claim nobody here holds is
                    // answered "free" to the node that asks).
                    debug!("a name claim could not be released now");
                }
            });
        }
    }
}

impl Remote {
    /// This node's part in `cluster`, whose local users are `local`.
    pub(crate) fn new(
        cluster: Arc<Cluster>,
        local: Registry,
        delivery_timeout: Duration,
        metrics: Arc<Metrics>,
    ) -> Self {
        Remote {
            cluster,
            local,
            delivery_timeout,
            metrics,
        }
    }

    /// The cluster this node is in.
    pub(crate) fn cluster(&self) -> &Arc<Cluster> {
        &self.cluster
    }

    /// Whether this node may serve users now (its lease is held and fresh,
    /// by the clock now, and it is not fencing).
    pub(crate) fn serving(&self) -> bool {
        let lease = self.cluster.lease();
        lease.serving_now() && *lease.serving().borrow()
    }

    /// Claim `key` (registered as `name`) in the whole cluster for a
    /// connection this node already holds it for locally. A guest needs it
    /// free everywhere; an account takes it over from another node (whose
    /// connection is closed with REPLACED first). Then this node takes the
    /// name's deliveries.
    pub(crate) async fn claim(
        self: &Arc<Self>,
        key: NameKey,
        name: &str,
        account: bool,
    ) -> Result<RemoteClaim, ClaimError> {
        if !self.serving() {
            return Err(ClaimError::Unavailable);
        }
        let claim = tokio::time::timeout(CLAIM_TIMEOUT, self.claim_name(key, name, account))
            .await
            .unwrap_or(Err(ClaimError::Unavailable))?;
        let subscriptions = match self.cluster.serve_name(&key).await {
            Ok(subscriptions) => subscriptions,
            Err(e) => {
                warn!("cannot take deliveries for {name}: {e}");
                let _ = self.cluster.names().release(&claim).await;
                return Err(ClaimError::Unavailable);
            }
        };
        let inbox = CancellationToken::new();
        tokio::spawn(Arc::clone(self).serve_inbox(key, subscriptions, inbox.clone()));
        Ok(RemoteClaim {
            remote: Arc::clone(self),
            claim,
            inbox,
        })
    }

    async fn claim_name(
        &self,
        key: NameKey,
        name: &str,
        account: bool,
    ) -> Result<cluster::Claim, ClaimError> {
        let (names, lease) = (self.cluster.names(), self.cluster.lease());
        for _ in 0..CLAIM_ROUNDS {
            let (node, revision) = match names.claim(&key, name, lease).await {
                Ok(claim) => return Ok(claim),
                Err(cluster::ClaimError::Taken { node, revision }) => (node, revision),
                Err(cluster::ClaimError::Unavailable(e)) => {
                    warn!("cannot claim {name} in the cluster: {e}");
                    return Err(ClaimError::Unavailable);
                }
            };
            let question = if account {
                Control::Kick(key)
            } else {
                Control::Check(key)
            };
            match self.cluster.ask(&node, question, CONTROL_TIMEOUT).await {
                Ok(ControlAnswer::Held) => return Err(ClaimError::Taken),
                Ok(ControlAnswer::Free | ControlAnswer::Kicked) => {}
                Err(e) => {
                    // A live lease but no answer: the holder may still be
                    // serving; two holders must never be.
                    warn!("cannot claim {name}: {e}");
                    return Err(ClaimError::Unavailable);
                }
            }
            match names.take_over(&key, name, lease, revision).await {
                Ok(claim) => return Ok(claim),
                Err(TakeOverError::Changed) => continue,
                Err(TakeOverError::Unavailable(e)) => {
                    warn!("cannot claim {name} in the cluster: {e}");
                    return Err(ClaimError::Unavailable);
                }
            }
        }
        Err(ClaimError::Unavailable)
    }

    /// Deliver `envelope` to `key` on whichever node serves it. `None` when
    /// the name is online nowhere.
    pub(crate) async fn deliver(
        &self,
        key: &NameKey,
        envelope: Envelope<'_>,
    ) -> Option<DeliveryOutcome> {
        let Some([header, body]) = delivery::frame(envelope) else {
            return Some(DeliveryOutcome::Oversized);
        };
        let mut frame = BytesMut::with_capacity(header.len() + body.len());
        frame.extend_from_slice(&header);
        frame.extend_from_slice(&body);
        let frame = frame.freeze();
        let timeout = self.delivery_timeout + REMOTE_MARGIN;
        let mut answer = self.cluster.deliver(key, frame.clone(), timeout).await;
        // Nobody took it, yet a live node claims the name: its subscription
        // may be moving to another NATS server (its own server died, it is
        // reconnecting), which takes milliseconds. Ask again for a moment
        // before calling the user offline.
        for pause in RESUBSCRIBE_PAUSES {
            if answer != RemoteAnswer::NobodyThere || !self.held_elsewhere(key) {
                break;
            }
            tokio::time::sleep(pause).await;
            answer = self.cluster.deliver(key, frame.clone(), timeout).await;
        }
        let routes = &self.metrics.remote;
        match answer {
            RemoteAnswer::Answered(byte) => {
                routes.answered.inc();
                Some(DeliveryOutcome::from_byte(byte).unwrap_or(DeliveryOutcome::TimedOut))
            }
            RemoteAnswer::NobodyThere => {
                routes.nobody_there.inc();
                None
            }
            RemoteAnswer::NoAnswer => {
                routes.no_answer.inc();
                Some(DeliveryOutcome::TimedOut)
            }
        }
    }

    /// Whether the replica of the cluster's names says another live node
    /// holds `key`.
    fn held_elsewhere(&self, key: &NameKey) -> bool {
        let me = self.cluster.node_id().as_str();
        self.cluster
            .roster()
            .holder(&cluster::name_key(key))
            .is_some_and(|holder| holder.node != me)
    }

    /// Take the deliveries other nodes send to `key` until `stop`.
    async fn serve_inbox(
        self: Arc<Self>,
        key: NameKey,
        subscriptions: cluster::NameSubscriptions,
        stop: CancellationToken,
    ) {
        let cluster::NameSubscriptions {
            mut deliveries,
            mut bells,
        } = subscriptions;
        // Deliveries run concurrently inside this task, as a connection's
        // requests do inside its session: no task spawned per message.
        let mut taking = FuturesUnordered::new();
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                request = deliveries.next() => match request {
                    Some(request) => taking.push(Arc::clone(&self).take_delivery(key, request)),
                    None => break,
                },
                Some(()) = taking.next(), if !taking.is_empty() => {}
                bell = bells.next() => match bell {
                    Some(bell) => self.hear_bell(key, &bell.payload),
                    None => break,
                },
            }
        }
        // Dropping the subscribers unsubscribes; deliveries already taken
        // still finish and answer their senders.
        drop((deliveries, bells));
        if !taking.is_empty() {
            tokio::spawn(async move { while taking.next().await.is_some() {} });
        }
    }

    /// Mail was stored (an empty bell), or a late receipt kept (the notice
    /// bell), for `key`: have its connection here, if any, read it.
    fn hear_bell(&self, key: NameKey, payload: &[u8]) {
        let Some(mailbox) = self.local.lookup(&key) else {
            return;
        };
        if payload.is_empty() {
            mailbox.ring_mail();
        } else if payload == cluster::NOTICE_BELL && mailbox.is_account() {
            mailbox.ring_notices();
        }
    }

    /// Deliver one frame another node sent, and answer what became of it.
    async fn take_delivery(self: Arc<Self>, key: NameKey, request: async_nats::Message) {
        let frame = codec::decode_deliver(&request.payload)
            .ok()
            .filter(|frame| {
                request.payload.len() <= crate::protocol::MAX_FRAME_BYTES
                    && frame.body.len() <= crate::protocol::MAX_BODY_BYTES
                    && NameKey::new(frame.from).is_ok()
            });
        let Some(frame) = frame else {
            // No node sends that: leave the sender to its timeout.
            warn!("a delivery through NATS was not a valid Deliver frame; dropped");
            return;
        };
        let id = frame.id;
        // A node whose lease is stale delivers nothing: it is about to close
        // its users, and the name may already be another node's (a node that
        // wakes from a suspension finds the requests of the whole pause
        // waiting, their senders long answered).
        let outcome = match self.local.lookup(&key).filter(|_| self.serving()) {
            Some(mailbox) => {
                let outcome = mailbox
                    .deliver_frame(
                        request.payload.clone(),
                        self.delivery_timeout,
                        &self.metrics.deliveries,
                    )
                    .await;
                if matches!(outcome, DeliveryOutcome::Stopped | DeliveryOutcome::Lost) {
                    // The sender's node stores it for an account; a drain
                    // on this connection skips it, as on one node.
                    mailbox.refuse(id);
                }
                outcome
            }
            None => DeliveryOutcome::Lost,
        };
        let byte = usize::from(outcome.to_byte());
        let answer = Bytes::from_static(&OUTCOME_BYTES[byte..=byte]);
        self.cluster.respond(&request, answer).await;
    }

    /// Answer the other nodes' questions about this node's users, until `stop`.
    pub(crate) async fn serve_control(self: Arc<Self>, stop: CancellationToken) {
        let mut requests = loop {
            match self.cluster.control_requests().await {
                Ok(requests) => break requests,
                Err(e) => {
                    warn!("cannot take questions from other nodes yet: {e}");
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        };
        loop {
            let request = tokio::select! {
                () = stop.cancelled() => return,
                request = requests.next() => request,
            };
            let Some(request) = request else { return };
            let answer = match Control::decode(&request.payload) {
                Some(Control::Check(key)) => match self.local.lookup(&key) {
                    Some(_) => ControlAnswer::Held,
                    None => ControlAnswer::Free,
                },
                Some(Control::Kick(key)) => match kick_local(&self.local, key, SIGNED_IN_ELSEWHERE)
                {
                    true => ControlAnswer::Kicked,
                    false => ControlAnswer::Free,
                },
                None => {
                    warn!("a question from another node made no sense; ignored");
                    continue;
                }
            };
            self.cluster.respond(&request, answer.encode()).await;
        }
    }

    /// What the operator's `cluster` command prints: this node (lease,
    /// users here, NATS round trip), then every other live node.
    pub(crate) async fn status_lines(&self, here: usize) -> Vec<String> {
        let cluster = &self.cluster;
        let lease = cluster.lease().state();
        let round_trip = match tokio::time::timeout(CONTROL_TIMEOUT, cluster.round_trip()).await {
            Ok(Ok(took)) => format!("{:.2} ms", took.as_secs_f64() * 1e3),
            Ok(Err(e)) => format!("failed ({e})"),
            Err(_) => "no answer".to_owned(),
        };
        let me = cluster.node_id().as_str();
        let mut lines = vec![format!(
            "node {me} (this one): {} users here; lease {} (renewed {:.1} s ago, lives {:?});              {}; NATS {} round trip {round_trip}",
            here,
            if lease.held { "held" } else { "lost" },
            lease.renewed.elapsed().as_secs_f64(),
            cluster.lease().ttl(),
            if self.serving() { "serving" } else { "fenced" },
            cluster.server_version(),
        )];
        for (node, users) in cluster.roster().nodes() {
            if node != me {
                lines.push(format!("node {node}: {users} users"));
            }
        }
        lines
    }

    /// The operator's `cluster kick NAME`: disconnect `key` wherever it is.
    pub(crate) async fn kick(&self, key: NameKey) -> String {
        let name = key.as_str();
        if kick_local(&self.local, key, KICKED) {
            return format!("disconnected {name} (on this node)");
        }
        let holder = match self.cluster.names().holder_of(&key).await {
            Ok(Some(holder)) => holder,
            Ok(None) => return format!("{name} is not online"),
            Err(e) => return format!("error: {e}"),
        };
        if holder.node == self.cluster.node_id().as_str() {
            return format!("{name} is not online");
        }
        match self
            .cluster
            .ask(&holder.node, Control::Kick(key), CONTROL_TIMEOUT)
            .await
        {
            Ok(ControlAnswer::Kicked) => format!("disconnected {name} (on node {})", holder.node),
            Ok(_) => format!("{name} is not online"),
            Err(e) => format!("error: {e}"),
        }
    }

    /// Every lease lifetime, delete up to [`STALE_PER_ROUND`] claims whose
    /// holder's lease is gone (a node that died or fenced keeps its claims
    /// until someone claims the name again): the names bucket, and every
    /// node's replica of it, hold only what is live, until `stop`.
    pub(crate) async fn clear_stale_claims(self: Arc<Self>, stop: CancellationToken) {
        let mut every = tokio::time::interval(self.cluster.lease().ttl());
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = every.tick() => {}
            }
            if !self.serving() {
                continue;
            }
            let (names, lease) = (self.cluster.names(), self.cluster.lease());
            let mut cleared = 0;
            for key in self.cluster.roster().stale(STALE_PER_ROUND) {
                match names.clear_stale(&key, lease).await {
                    Ok(true) => cleared += 1,
                    Ok(false) => {}
                    Err(e) => {
                        debug!("cannot clear stale name claims now: {e}");
                        break;
                    }
                }
            }
            if cleared > 0 {
                info!(cleared, "cleared the name claims of nodes that are gone");
            }
        }
    }

    /// Measure the NATS round trip every 5 s (for the metrics), until `stop`.
    pub(crate) async fn sample_round_trips(self: Arc<Self>, stop: CancellationToken) {
        let mut every = tokio::time::interval(Duration::from_secs(5));
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = every.tick() => {}
            }
            if let Ok(Ok(took)) =
                tokio::time::timeout(CONTROL_TIMEOUT, self.cluster.round_trip()).await
            {
                self.cluster.record_round_trip(took);
            }
        }
    }

    /// Close every user's connection whenever this node stops serving (its
    /// lease is lost or stale), before any other node can take their names.
    pub(crate) async fn fence(self: Arc<Self>, stop: CancellationToken) {
        let mut serving = self.cluster.lease().serving();
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                changed = serving.changed() => if changed.is_err() { return },
            }
            if !*serving.borrow_and_update() {
                let mailboxes = self.local.mailboxes();
                warn!(
                    "fenced: closing {} connection(s) until the cluster answers",
                    mailboxes.len()
                );
                for mailbox in mailboxes {
                    mailbox.close();
                    mailbox.disconnect(CloseCode::ServerShutdown, FENCED_REASON);
                }
            }
        }
    }
}
