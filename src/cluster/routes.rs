//! The subjects nodes talk on, all NATS core request/reply:
//!
//! - `<prefix>.dm.<name key>`: while a user is online, its node subscribes
//!   to this (in a queue group, so one copy is taken even while an account
//!   moves between nodes). A sender's node sends the finished `Deliver`
//!   frame as the request; the recipient's node writes those very bytes on
//!   a delivery stream and answers one byte, what became of it. A name
//!   online nowhere has no subscriber, and NATS answers "no responders" at
//!   once; a node that dies loses its subscriptions with its connection.
//! - `<prefix>.bell.<name key>`: the user's node(s) also hear bells there,
//!   with no reply: an empty message says that mail was stored for the user
//!   (its node drains again), `n` that a late receipt was kept.
//! - `<prefix>.node.<node id>.control`: each node answers questions about
//!   its users (`check NAME`: is it connected here? `kick NAME`: close it,
//!   it signed in elsewhere).

use std::time::Duration;

use async_nats::Subscriber;
use bytes::Bytes;

use super::names::name_subject;
use super::replies::Reply;
use super::{Cluster, ClusterError};
use crate::protocol::NameKey;

/// The bell that says a late receipt was kept for the user.
pub const NOTICE_BELL: &[u8] = b"n";

/// The queue group of every delivery subscription.
const QUEUE_GROUP: &str = "deliver";

/// A user's subscriptions on its node: delivery requests, and bells.
#[derive(Debug)]
pub struct NameSubscriptions {
    /// `<prefix>.dm.<name key>`, in the delivery queue group.
    pub deliveries: Subscriber,
    /// `<prefix>.bell.<name key>`: an empty message (mail was stored) or
    /// [`NOTICE_BELL`] (a late receipt was kept).
    pub bells: Subscriber,
}

/// What a node answered to a delivery request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoteAnswer {
    /// The recipient's node answered this outcome byte.
    Answered(u8),
    /// Nobody in the cluster serves the name: it is online nowhere.
    NobodyThere,
    /// No answer in time (the node is stuck or NATS is unreachable).
    NoAnswer,
}

/// A question to a node about one of its users.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Is the name connected to you?
    Check(NameKey),
    /// Close the name's connection with REPLACED: it signed in elsewhere.
    Kick(NameKey),
}

/// A node's answer to a [`Control`] question.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlAnswer {
    /// The name is connected there (a `Check`).
    Held,
    /// The name is not connected there.
    Free,
    /// The name's connection there was closed (a `Kick`).
    Kicked,
}

impl Control {
    /// The request's payload.
    fn encode(&self) -> Bytes {
        match self {
            Control::Check(key) => format!("check {}", key.as_str()).into(),
            Control::Kick(key) => format!("kick {}", key.as_str()).into(),
        }
    }

    /// A request from its payload; `None` for bytes no node sends.
    pub fn decode(payload: &[u8]) -> Option<Control> {
        let text = std::str::from_utf8(payload).ok()?;
        let (verb, name) = text.split_once(' ')?;
        let key = NameKey::new(name).ok()?;
        match verb {
            "check" => Some(Control::Check(key)),
            "kick" => Some(Control::Kick(key)),
            _ => None,
        }
    }
}

impl ControlAnswer {
    /// The answer's payload.
    pub fn encode(self) -> Bytes {
        Bytes::from_static(match self {
            ControlAnswer::Held => b"held",
            ControlAnswer::Free => b"free",
            ControlAnswer::Kicked => b"kicked",
        })
    }

    fn decode(payload: &[u8]) -> Option<ControlAnswer> {
        match payload {
            b"held" => Some(ControlAnswer::Held),
            b"free" => Some(ControlAnswer::Free),
            b"kicked" => Some(ControlAnswer::Kicked),
            _ => None,
        }
    }
}

impl Cluster {
    fn dm_subject(&self, key: &NameKey) -> String {
        name_subject(&self.prefix, "dm", key)
    }

    fn control_subject(&self, node: &str) -> String {
        format!("{}.node.{node}.control", self.prefix)
    }

    fn bell_subject(&self, key: &NameKey) -> String {
        name_subject(&self.prefix, "bell", key)
    }

    /// Take deliveries and bells for `key` on this node: both subscriptions
    /// are in place at NATS when this returns, and end when dropped. Bells
    /// are not in a queue group: while an account moves, both its old and
    /// its new node hear them (only the one holding it acts).
    pub async fn serve_name(&self, key: &NameKey) -> Result<NameSubscriptions, ClusterError> {
        let nats = |e: &dyn std::fmt::Display| ClusterError::Nats(e.to_string());
        let deliveries = self
            .client
            .queue_subscribe(self.dm_subject(key), QUEUE_GROUP.to_owned())
            .await
            .map_err(|e| nats(&e))?;
        let bells = self
            .client
            .subscribe(self.bell_subject(key))
            .await
            .map_err(|e| nats(&e))?;
        self.client.flush().await.map_err(|e| nats(&e))?;
        Ok(NameSubscriptions { deliveries, bells })
    }

    /// Ask the node serving `key` to deliver `frame` (a whole `Deliver`
    /// frame), waiting at most `timeout` for its answer.
    pub async fn deliver(&self, key: &NameKey, frame: Bytes, timeout: Duration) -> RemoteAnswer {
        let subject = self.dm_subject(key);
        match self
            .replies
            .request(&self.client, subject, frame, timeout)
            .await
        {
            Reply::Answered(payload) => match payload.as_ref() {
                [byte] => RemoteAnswer::Answered(*byte),
                _ => RemoteAnswer::NoAnswer,
            },
            Reply::NoResponders => RemoteAnswer::NobodyThere,
            Reply::NoAnswer => RemoteAnswer::NoAnswer,
        }
    }

    /// How many deliveries to other nodes wait for their answer now
    /// (bounded by the deliveries in flight: a slot goes when its wait ends).
    pub fn deliveries_waiting(&self) -> usize {
        self.replies.waiting()
    }

    /// Tell the node serving `key` (if any) that mail was stored for it:
    /// an empty message on its bell subject, answered by nobody.
    pub async fn ring(&self, key: &NameKey) {
        self.bell(key, Bytes::new()).await;
    }

    /// Tell the node serving `key` (if any) that a late receipt was kept
    /// for it: [`NOTICE_BELL`] on its bell subject.
    pub async fn ring_notices(&self, key: &NameKey) {
        self.bell(key, Bytes::from_static(NOTICE_BELL)).await;
    }

    async fn bell(&self, key: &NameKey, payload: Bytes) {
        if let Err(e) = self.client.publish(self.bell_subject(key), payload).await {
            tracing::debug!("cannot ring a mailbox through NATS: {e}");
        }
    }

    /// The questions other nodes ask this one (see [`Control`]).
    pub async fn control_requests(&self) -> Result<Subscriber, ClusterError> {
        let subscriber = self
            .client
            .subscribe(self.control_subject(self.node.as_str()))
            .await
            .map_err(|e| ClusterError::Nats(e.to_string()))?;
        self.client
            .flush()
            .await
            .map_err(|e| ClusterError::Nats(e.to_string()))?;
        Ok(subscriber)
    }

    /// Ask `node` a question about one of its users.
    pub async fn ask(
        &self,
        node: &str,
        question: Control,
        timeout: Duration,
    ) -> Result<ControlAnswer, ClusterError> {
        let subject = self.control_subject(node);
        let payload = question.encode();
        let answer = match self
            .replies
            .request(&self.client, subject, payload, timeout)
            .await
        {
            Reply::Answered(payload) => payload,
            Reply::NoResponders => {
                return Err(ClusterError::Nats(format!(
                    "node {node} did not answer: no responders"
                )))
            }
            Reply::NoAnswer => {
                return Err(ClusterError::Nats(format!(
                    "node {node} did not answer in {timeout:?}"
                )))
            }
        };
        ControlAnswer::decode(&answer)
            .ok_or_else(|| ClusterError::Nats(format!("node {node} answered nonsense")))
    }

    /// Answer a request (a delivery's outcome byte, or a control answer).
    pub async fn respond(&self, request: &async_nats::Message, answer: Bytes) {
        if let Some(reply) = &request.reply {
            if let Err(e) = self.client.publish(reply.clone(), answer).await {
                tracing::debug!("cannot answer through NATS: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_round_trips_and_rejects_garbage() {
        let key = NameKey::new("Bob.x-y").unwrap();
        for question in [Control::Check(key), Control::Kick(key)] {
            assert_eq!(Control::decode(&question.encode()), Some(question));
        }
        for bad in [
            &b""[..],
            b"kick",
            b"kick ",
            b"kick a b",
            b"ban bob",
            b"\xff bob",
        ] {
            assert_eq!(Control::decode(bad), None, "{bad:?}");
        }
        for answer in [
            ControlAnswer::Held,
            ControlAnswer::Free,
            ControlAnswer::Kicked,
        ] {
            assert_eq!(ControlAnswer::decode(&answer.encode()), Some(answer));
        }
        assert_eq!(ControlAnswer::decode(b"yes"), None);
    }
}
