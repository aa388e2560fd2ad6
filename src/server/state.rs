//! What every session of one server shares: presence, limits, message ids and
//! the name it announces, and the metrics. Built once by [`super::Server::bind`] and handed to
//! sessions as an `Arc`.

use std::sync::Arc;

use super::accounts::Accounts;
use super::config::Limits;
use super::ids::MessageIds;
use super::metrics::Metrics;
use super::presence::Presence;
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
    /// The state of a single server with these limits and accounts, whose
    /// message ids start with `id_prefix` (distinct for every run).
    pub(crate) fn new(
        limits: Limits,
        accounts: Accounts,
        mail: Option<Mail>,
        id_prefix: u32,
        server_name: String,
        metrics: Arc<Metrics>,
    ) -> Self {
        State {
            presence: Presence::local(limits.max_connections),
            accounts,
            mail,
            ids: MessageIds::new(id_prefix),
            limits,
            server_name,
            metrics,
        }
    }
}
