//! The loop every background job runs (delivery workers, the webhook dispatcher, the domain
//! verifier): do steps while there is work, then sleep until woken or the poll interval
//! passes, until cancelled. Each job exposes one step so tests can drive it deterministically.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::store::StoreError;

/// What one step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunOutcome {
    /// Items were handled (this many).
    Worked(usize),
    /// Nothing was due.
    Idle,
}

/// Runs `step` until `cancel`. `what` names the job in logs.
pub async fn run_until_cancelled<F, Fut>(
    what: &'static str,
    wake: Arc<Notify>,
    cancel: CancellationToken,
    poll: Duration,
    mut step: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<RunOutcome, StoreError>>,
{
    loop {
        // Arm the notification before looking, so work announced meanwhile is not missed.
        let notified = wake.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if cancel.is_cancelled() {
            return;
        }
        match step().await {
            Ok(RunOutcome::Worked(_)) => continue,
            Ok(RunOutcome::Idle) => {}
            Err(e) => tracing::error!(error = %e, job = what, "step failed; will retry"),
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            () = &mut notified => {}
            () = tokio::time::sleep(poll) => {}
        }
    }
}
