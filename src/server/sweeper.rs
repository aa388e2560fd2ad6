//! The expiry sweep: now and then, drop the stored messages and kept notices
//! that have outlived the mail lifetime (`--mail-ttl`), and ring the senders
//! who were made an `Expired` notice. It runs beside the sessions and stops
//! with the server.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::notices;
use super::state::State;
use super::stored::Mail;
use crate::clock::unix_ms;

/// The most records one sweep transaction removes (more take more sweeps
/// right after, so no transaction grows without bound).
const SWEEP_LIMIT: usize = 1024;

/// How often to sweep for a lifetime of `ttl`: a tenth of it, between 100 ms
/// and a minute, so a message outlives its lifetime by at most that much.
pub(crate) fn interval_for(ttl: Duration) -> Duration {
    (ttl / 10).clamp(Duration::from_millis(100), Duration::from_secs(60))
}

/// Sweep every [`interval_for`] the lifetime until `stop` is cancelled.
pub(crate) async fn run(state: Arc<State>, mail: Mail, stop: CancellationToken) {
    let mut ticks = tokio::time::interval(interval_for(mail.ttl));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticks.tick() => sweep(&state, &mail).await,
        }
    }
}

/// One sweep: everything that has expired by now, in bounded transactions.
async fn sweep(state: &State, mail: &Mail) {
    if mail.shared.is_some() {
        return sweep_shared(state, mail).await;
    }
    loop {
        let now = unix_ms();
        match mail
            .writer
            .sweep(mail.expiry_cutoff(now), now, SWEEP_LIMIT)
            .await
        {
            Ok(swept) => {
                mail.metrics.expired.inc_by(swept.messages);
                mail.metrics.receipts_expired.inc_by(swept.notices);
                if swept.messages > 0 || swept.notices > 0 {
                    tracing::info!(
                        messages = swept.messages,
                        receipts = swept.notices,
                        "expired stored mail"
                    );
                }
                notices::tell(
                    &state.presence,
                    mail,
                    &swept.told,
                    state.limits.delivery_timeout,
                );
                if !swept.more {
                    return;
                }
            }
            Err(e) => {
                tracing::error!("cannot expire stored mail: {e}");
                return;
            }
        }
    }
}

/// One sweep of a cluster's shared mail (every node sweeps; see
/// [`Mail::sweep_shared`]).
async fn sweep_shared(state: &State, mail: &Mail) {
    loop {
        let now = unix_ms();
        match mail
            .sweep_shared(mail.expiry_cutoff(now), now, SWEEP_LIMIT)
            .await
        {
            Ok((expired, told, more)) => {
                mail.metrics.expired.inc_by(expired);
                if expired > 0 {
                    tracing::info!(messages = expired, "expired stored mail");
                }
                notices::tell(&state.presence, mail, &told, state.limits.delivery_timeout);
                if !more {
                    return;
                }
            }
            Err(e) => {
                tracing::error!("cannot expire stored mail: {e}");
                return;
            }
        }
    }
}
