//! Group commit for ingest: concurrent requests share one transaction and one fsync.
//!
//! Requests queue on a channel; one task takes whatever is waiting (up to `MAX_BATCH`),
//! writes the emails of every request without an idempotency key together (one multi-row
//! statement per table: their ids are new, they cannot conflict), then each request with a key
//! inside its own savepoint (a reused key rolls back only that request), commits once, and
//! only then answers every request. While one commit is in flight the next requests gather, so the batch size follows
//! the load: one at a time when idle, hundreds under pressure. On SQLite this is the single
//! writer; on Postgres it turns N commits into one.

use sqlx::AnyPool;
use tokio::sync::{mpsc, oneshot};

use super::emails::{IdempotencyRecord, NewEmail, insert_emails, insert_request};
use super::webhooks::Outbox;
use super::{StoreError, StoreResult};

const MAX_BATCH: usize = 256;

struct Job {
    emails: Vec<NewEmail>,
    idempotency: Option<IdempotencyRecord>,
    reply: oneshot::Sender<StoreResult<()>>,
}

/// The handle requests are submitted through.
#[derive(Debug, Clone)]
pub(super) struct Ingest {
    tx: mpsc::Sender<Job>,
}

impl Ingest {
    pub(super) fn start(pool: AnyPool) -> Self {
        let (tx, rx) = mpsc::channel(4 * MAX_BATCH);
        tokio::spawn(run(pool, rx));
        Self { tx }
    }

    /// Commits one request's emails; returns after the commit that holds them.
    pub(super) async fn submit(
        &self,
        emails: Vec<NewEmail>,
        idempotency: Option<IdempotencyRecord>,
    ) -> StoreResult<()> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Job {
                emails,
                idempotency,
                reply,
            })
            .await
            .map_err(|_| StoreError::Unavailable("the ingest writer has stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Unavailable("the ingest writer has stopped".into()))?
    }
}

async fn run(pool: AnyPool, mut rx: mpsc::Receiver<Job>) {
    while let Some(first) = rx.recv().await {
        let mut jobs = vec![first];
        while jobs.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        commit(&pool, jobs).await;
    }
}

async fn commit(pool: &AnyPool, jobs: Vec<Job>) {
    let mut tx = match pool.begin().await {
        Ok(tx) => tx,
        Err(e) => {
            let msg = e.to_string();
            for job in jobs {
                let _ = job.reply.send(Err(StoreError::from_shared(&msg, &e)));
            }
            return;
        }
    };
    let mut outcomes: Vec<Option<StoreResult<()>>> = jobs.iter().map(|_| None).collect();
    let mut outbox = Outbox::default();
    // Requests without an idempotency key cannot conflict with anything (their ids are new):
    // all their emails go in together, one statement per table.
    let plain: Vec<&NewEmail> = jobs
        .iter()
        .filter(|j| j.idempotency.is_none())
        .flat_map(|j| &j.emails)
        .collect();
    if !plain.is_empty() {
        if let Err(e) = insert_emails(&mut tx, &mut outbox, plain.iter().copied()).await {
            // The transaction is unusable: nothing of this batch is committed.
            let msg = e.to_string();
            drop(tx);
            for job in jobs {
                let _ = job.reply.send(Err(StoreError::Unavailable(msg.clone())));
            }
            return;
        }
        for (job, outcome) in jobs.iter().zip(outcomes.iter_mut()) {
            if job.idempotency.is_none() {
                *outcome = Some(Ok(()));
            }
        }
    }
    // A request with a key may find it taken: each goes in its own savepoint, so its failure
    // rolls back only that request.
    let keyed = jobs.iter().filter(|j| j.idempotency.is_some()).count();
    for (job, outcome) in jobs.iter().zip(outcomes.iter_mut()) {
        if job.idempotency.is_none() {
            continue;
        }
        if keyed == 1 && plain.is_empty() {
            *outcome = Some(
                insert_request(&mut tx, &mut outbox, &job.emails, job.idempotency.as_ref()).await,
            );
            continue;
        }
        let mark = outbox.stats.mark();
        let step = async {
            sqlx::query("SAVEPOINT ingest").execute(&mut *tx).await?;
            let r =
                insert_request(&mut tx, &mut outbox, &job.emails, job.idempotency.as_ref()).await;
            let end = if r.is_ok() {
                "RELEASE SAVEPOINT ingest"
            } else {
                "ROLLBACK TO SAVEPOINT ingest"
            };
            sqlx::query(end).execute(&mut *tx).await?;
            if r.is_err() {
                // ROLLBACK TO leaves the savepoint open; close it so the next request starts
                // from a clean slate. (The outbox's endpoint cache is read-only: still valid.)
                sqlx::query("RELEASE SAVEPOINT ingest")
                    .execute(&mut *tx)
                    .await?;
            }
            Ok::<_, StoreError>(r)
        };
        match step.await {
            Ok(r) => {
                if r.is_err() {
                    outbox.stats.rollback_to(mark);
                }
                *outcome = Some(r);
            }
            Err(e) => {
                // The transaction itself is broken: nothing of this batch is committed.
                let msg = e.to_string();
                drop(tx);
                for job in jobs {
                    let _ = job.reply.send(Err(StoreError::Unavailable(msg.clone())));
                }
                return;
            }
        }
    }
    let outcomes: Vec<StoreResult<()>> =
        outcomes.into_iter().map(|o| o.unwrap_or(Ok(()))).collect();
    if outcomes.iter().all(Result::is_err) {
        // Nothing to keep: roll back (dropping the transaction does) and report.
        drop(tx);
        for (job, outcome) in jobs.into_iter().zip(outcomes) {
            let _ = job.reply.send(outcome);
        }
        return;
    }
    match outbox.commit(tx).await {
        Ok(()) => {
            for (job, outcome) in jobs.into_iter().zip(outcomes) {
                let _ = job.reply.send(outcome);
            }
        }
        Err(e) => {
            let msg = e.to_string();
            for job in jobs {
                let _ = job.reply.send(Err(StoreError::Unavailable(msg.clone())));
            }
        }
    }
}
