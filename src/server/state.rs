//! What every session of one server shares: presence, limits, message ids and
//! the name it announces, and the metrics. Built once by [`super::Server::bind`] and handed to
//! sessions as an `Arc`.

use std::sync::Arc;

use super::accounts::Accounts;
use super::config::Limits;
use super::ids::MessageIds;
use super::metrics::Metrics;
use super::presence::Presence;
use super::registry::Registry;
use super::remote::Remote;
use super::stored::Mail;

/// The server's shared state.
#[derive(Debug)]
pub(crate) struct State {
    /// Who is online and how to reach them.
    pub(crate) presence: Presence,
    /// Who may hold which name.
    pub(crate) accounts: Accounts,
    /// The server's limits.
    pub(crate) limits: Limits,
    /// Stored mail for accounts not connected; `None` with `--no-store`.
    pub(crate) mail: Option<Mail>,
    /// Where message ids come from.
    pub(crate) ids: MessageIds,
    /// Name and version sent in `Welcome`.
    pub(crate) server_name: String,
    /// What the server counts, and the registry it is read from.
    pub(crate) metrics: Arc<Metrics>,
}

impl State {
    /// The state of a server with these limits and accounts, whose message
    /// ids start with `id_prefix` (distinct for every run, and in a cluster
    /// for every node), in `cluster` if it is in one.
    pub(crate) fn new(
        limits: Limits,
        accounts: Accounts,
        mail: Option<Mail>,
        id_prefix: u32,
        server_name: String,
        metrics: Arc<Metrics>,
        cluster: Option<Arc<crate::cluster::Cluster>>,
    ) -> Self {
        let local = Registry::new(limits.max_connections);
        let remote = cluster.map(|cluster| {
            Arc::new(Remote::new(
                cluster,
                local.clone(),
                limits.delivery_timeout,
                Arc::clone(&metrics),
            ))
        });
        State {
            presence: Presence::new(local, remote),
            accounts,
            mail,
            ids: MessageIds::new(id_prefix),
            limits,
            server_name,
            metrics,
        }
    }
}
