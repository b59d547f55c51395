//! The retention job: purges message bodies after `content_retention_days`, then emails
//! and their timelines after `event_retention_days`, and records that outlived their use.
//! Each step is a few small transactions; the job loop runs steps back to back while there
//! is work and then sleeps for `retention.interval`.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::config::RetentionConfig;
use crate::job_loop::RunOutcome;
use crate::store::{Store, StoreError};

const DAY_MS: i64 = 24 * 3600 * 1000;

#[derive(Clone)]
pub struct RetentionJob {
    pub store: Store,
    pub clock: Arc<dyn Clock>,
    pub config: RetentionConfig,
}

impl RetentionJob {
    /// One batch of each purge that is due; `Worked(n)` with the rows purged.
    pub async fn run_once(&self) -> Result<RunOutcome, StoreError> {
        let now = self.clock.now_ms();
        let batch = i64::from(self.config.batch_size);
        let cutoff = |days: u32| (days > 0).then(|| now - i64::from(days) * DAY_MS);
        let mut purged = 0;
        if let Some(before) = cutoff(self.config.content_retention_days) {
            let n = self.store.purge_contents(before, now, batch).await?;
            if n > 0 {
                tracing::info!(emails = n, "purged message contents past retention");
            }
            purged += n;
        }
        if let Some(before) = cutoff(self.config.event_retention_days) {
            let n = self.store.purge_emails(before, batch).await?;
            if n > 0 {
                tracing::info!(emails = n, "deleted emails and events past retention");
            }
            purged += n + self.store.purge_records(before, now, batch).await?;
        }
        Ok(match usize::try_from(purged).unwrap_or(usize::MAX) {
            0 => RunOutcome::Idle,
            n => RunOutcome::Worked(n),
        })
    }

    pub async fn run(self, cancel: CancellationToken) {
        let poll: Duration = self.config.interval;
        crate::job_loop::run_until_cancelled(
            "retention",
            Arc::new(Notify::new()),
            cancel,
            poll,
            || self.run_once(),
        )
        .await;
    }
}
