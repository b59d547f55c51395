//! Group commit: the store's hot writes share one transaction and one fsync.
//!
//! Three kinds of job queue on one channel: requests to accept emails, delivery workers'
//! outcomes, and their claims. One task takes whatever is waiting (up to `MAX_BATCH`), writes
//! the emails of every request without an idempotency key together (one multi-row statement
//! per table: their ids are new, they cannot conflict), the outcomes of every worker together
//! (one `UPDATE`, fenced by each lease), runs the claims, then each request with a key inside
//! its own savepoint (a reused key rolls back only that request), commits once, and only then
//! answers every job.
//! While one commit is in flight the next jobs gather, so the batch size follows the load:
//! one at a time when idle, hundreds under pressure. On SQLite this is the single writer; on
//! Postgres it turns N commits into one.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use sqlx::AnyPool;
use tokio::sync::{mpsc, oneshot};

use super::emails::{IdempotencyRecord, NewEmail, insert_emails, insert_request};
use super::queue::{ClaimRow, Outcome, Recorded, apply_outcomes, claim_rows};
use super::stats::EmailDims;
use super::webhooks::{EndpointCache, Outbox};
use super::{Home, StoreError, StoreResult};
use crate::metrics::WriterFigures;

const MAX_BATCH: usize = 256;

type Dims = HashMap<String, EmailDims>;

enum Job {
    Ingest(IngestJob),
    Outcomes(OutcomeJob),
    Claim(ClaimJob),
}

struct IngestJob {
    emails: Vec<NewEmail>,
    idempotency: Option<IdempotencyRecord>,
    reply: oneshot::Sender<StoreResult<()>>,
}

struct OutcomeJob {
    owner: String,
    outcomes: Vec<Outcome>,
    reply: oneshot::Sender<StoreResult<Recorded>>,
}

struct ClaimJob {
    owner: String,
    now_ms: i64,
    lease_ms: i64,
    limit: usize,
    reply: oneshot::Sender<StoreResult<Vec<ClaimRow>>>,
}

/// The handle jobs are submitted through.
#[derive(Debug, Clone)]
pub(super) struct Writer {
    tx: mpsc::Sender<Job>,
    counters: Arc<Counters>,
}

/// What the writer has done, for `/metrics`.
#[derive(Debug, Default)]
struct Counters {
    commits: AtomicU64,
    jobs: AtomicU64,
    busy_micros: AtomicU64,
}

impl Writer {
    /// Starts `writers` writer tasks taking batches from the one channel (SQLite: one, it has
    /// one writer anyway; Postgres: a few, so one batch's commit does not wait for another's).
    /// Each writer's rollup increments go to a shard of its own, so writers (and processes
    /// sharing a Postgres database) do not queue on one hot row.
    pub(super) fn start(
        pool: AnyPool,
        endpoints: Arc<EndpointCache>,
        home: Home,
        writers: usize,
    ) -> Self {
        let (tx, rx) = mpsc::channel(4 * MAX_BATCH);
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        let counters = Arc::new(Counters::default());
        let writers = writers.max(1);
        for _ in 0..writers {
            let task = run(
                pool.clone(),
                Arc::clone(&rx),
                uuid::Uuid::new_v4().to_string(),
                Arc::clone(&endpoints),
                Arc::clone(&counters),
                KEPT_DIMS / writers,
            );
            home.spawn("herald-writer", task);
        }
        Self { tx, counters }
    }

    pub(super) fn figures(&self) -> WriterFigures {
        let c = &self.counters;
        WriterFigures {
            commits: c.commits.load(Ordering::Relaxed),
            jobs: c.jobs.load(Ordering::Relaxed),
            busy_seconds: c.busy_micros.load(Ordering::Relaxed) as f64 / 1e6,
        }
    }

    async fn submit<T>(
        &self,
        job: Job,
        answer: oneshot::Receiver<StoreResult<T>>,
    ) -> StoreResult<T> {
        let stopped = || StoreError::Unavailable("the store's writer has stopped".into());
        self.tx.send(job).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    /// Commits one request's emails; returns after the commit that holds them.
    pub(super) async fn submit_emails(
        &self,
        emails: Vec<NewEmail>,
        idempotency: Option<IdempotencyRecord>,
    ) -> StoreResult<()> {
        let (reply, answer) = oneshot::channel();
        let job = Job::Ingest(IngestJob {
            emails,
            idempotency,
            reply,
        });
        self.submit(job, answer).await
    }

    /// Records one worker's outcomes; returns after their commit.
    pub(super) async fn submit_outcomes(
        &self,
        owner: String,
        outcomes: Vec<Outcome>,
    ) -> StoreResult<Recorded> {
        let (reply, answer) = oneshot::channel();
        let job = Job::Outcomes(OutcomeJob {
            owner,
            outcomes,
            reply,
        });
        self.submit(job, answer).await
    }

    /// Leases up to `limit` due recipients to `owner`; returns them after the commit.
    pub(super) async fn submit_claim(
        &self,
        owner: String,
        now_ms: i64,
        lease_ms: i64,
        limit: usize,
    ) -> StoreResult<Vec<ClaimRow>> {
        let (reply, answer) = oneshot::channel();
        let job = Job::Claim(ClaimJob {
            owner,
            now_ms,
            lease_ms,
            limit,
            reply,
        });
        self.submit(job, answer).await
    }
}

/// Email dimensions the writers keep between batches (most outcomes are of emails just
/// written), at most this many in all (each writer its share).
const KEPT_DIMS: usize = 50_000;

async fn run(
    pool: AnyPool,
    rx: Arc<tokio::sync::Mutex<mpsc::Receiver<Job>>>,
    shard: String,
    endpoints: Arc<EndpointCache>,
    counters: Arc<Counters>,
    kept_dims: usize,
) {
    let mut dims = HashMap::new();
    loop {
        let jobs = {
            let mut rx = rx.lock().await;
            let Some(first) = rx.recv().await else {
                return;
            };
            let mut jobs = vec![first];
            while jobs.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(job) => jobs.push(job),
                    Err(_) => break,
                }
            }
            jobs
        };
        let started = Instant::now();
        let n = jobs.len() as u64;
        dims = commit(&pool, jobs, &shard, &endpoints, dims).await;
        counters.commits.fetch_add(1, Ordering::Relaxed);
        counters.jobs.fetch_add(n, Ordering::Relaxed);
        let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        counters.busy_micros.fetch_add(micros, Ordering::Relaxed);
        if dims.len() > kept_dims {
            dims = HashMap::new();
        }
    }
}

/// Answers every job of a batch that could not be committed: nothing of it was.
fn fail_all(
    ingest: Vec<IngestJob>,
    outcomes: Vec<OutcomeJob>,
    claims: Vec<ClaimJob>,
    err: impl Fn() -> StoreError,
) {
    for job in ingest {
        let _ = job.reply.send(Err(err()));
    }
    for job in outcomes {
        let _ = job.reply.send(Err(err()));
    }
    for job in claims {
        let _ = job.reply.send(Err(err()));
    }
}

/// Commits one batch; returns the email dimensions the stats log knew (to keep).
async fn commit(
    pool: &AnyPool,
    jobs: Vec<Job>,
    shard: &str,
    endpoints: &EndpointCache,
    dims: Dims,
) -> Dims {
    let mut ingest = Vec::new();
    let mut settled = Vec::new();
    let mut claims = Vec::new();
    for job in jobs {
        match job {
            Job::Ingest(j) => ingest.push(j),
            Job::Outcomes(j) => settled.push(j),
            Job::Claim(j) => claims.push(j),
        }
    }
    let mut tx = match pool.begin().await {
        Ok(tx) => tx,
        Err(e) => {
            let msg = e.to_string();
            fail_all(ingest, settled, claims, || {
                StoreError::from_shared(&msg, &e)
            });
            return dims;
        }
    };
    let unavailable = |e: StoreError| {
        let msg = e.to_string();
        move || StoreError::Unavailable(msg.clone())
    };
    let mut results: Vec<Option<StoreResult<()>>> = ingest.iter().map(|_| None).collect();
    let mut outbox = Outbox::default();
    outbox.stats.use_shard_of(shard);
    outbox.stats.adopt_dims(dims);
    let projects = ingest
        .iter()
        .flat_map(|j| j.emails.iter().map(|e| e.project_id.as_str()))
        .chain(
            settled
                .iter()
                .flat_map(|j| j.outcomes.iter().map(|o| o.project_id.as_str())),
        );
    outbox.use_cached_endpoints(endpoints, projects);
    // Requests without an idempotency key cannot conflict with anything (their ids are new):
    // all their emails go in together, one statement per table.
    let plain: Vec<&NewEmail> = ingest
        .iter()
        .filter(|j| j.idempotency.is_none())
        .flat_map(|j| &j.emails)
        .collect();
    if !plain.is_empty() {
        if let Err(e) = insert_emails(&mut tx, &mut outbox, plain.iter().copied()).await {
            // The transaction is unusable: nothing of this batch is committed.
            drop(tx);
            fail_all(ingest, settled, claims, unavailable(e));
            return Dims::new();
        }
        for (job, result) in ingest.iter().zip(results.iter_mut()) {
            if job.idempotency.is_none() {
                *result = Some(Ok(()));
            }
        }
    }
    let applied = if settled.is_empty() {
        Vec::new()
    } else {
        let batches: Vec<(&str, &[Outcome])> = settled
            .iter()
            .map(|j| (j.owner.as_str(), j.outcomes.as_slice()))
            .collect();
        match apply_outcomes(&mut tx, &mut outbox, &batches).await {
            Ok(counts) => counts,
            Err(e) => {
                drop(tx);
                fail_all(ingest, settled, claims, unavailable(e));
                return Dims::new();
            }
        }
    };
    // Claims last: they may lease recipients this very batch accepted.
    let mut claimed = Vec::with_capacity(claims.len());
    for job in &claims {
        match claim_rows(&mut tx, &job.owner, job.now_ms, job.lease_ms, job.limit).await {
            Ok(rows) => claimed.push(rows),
            Err(e) => {
                drop(tx);
                fail_all(ingest, settled, claims, unavailable(e));
                return Dims::new();
            }
        }
    }
    // A request with a key may find it taken: each goes in its own savepoint, so its failure
    // rolls back only that request.
    let keyed = ingest.iter().filter(|j| j.idempotency.is_some()).count();
    let alone = keyed == 1 && plain.is_empty() && settled.is_empty() && claims.is_empty();
    for (job, result) in ingest.iter().zip(results.iter_mut()) {
        if job.idempotency.is_none() {
            continue;
        }
        if alone {
            *result = Some(
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
                *result = Some(r);
            }
            Err(e) => {
                // The transaction itself is broken: nothing of this batch is committed.
                drop(tx);
                fail_all(ingest, settled, claims, unavailable(e));
                return Dims::new();
            }
        }
    }
    let results: Vec<StoreResult<()>> = results.into_iter().map(|o| o.unwrap_or(Ok(()))).collect();
    if settled.is_empty() && claims.is_empty() && results.iter().all(Result::is_err) {
        // Nothing to keep: roll back (dropping the transaction does) and report.
        drop(tx);
        for (job, result) in ingest.into_iter().zip(results) {
            let _ = job.reply.send(result);
        }
        return Dims::new();
    }
    outbox.remember_endpoints(endpoints);
    let announced = outbox.announced;
    let committed = match outbox.stats.flush(&mut tx).await {
        Ok(()) => tx.commit().await.map_err(StoreError::from),
        Err(e) => Err(e),
    };
    let dims = outbox.stats.take_dims();
    if let Err(e) = committed {
        fail_all(ingest, settled, claims, unavailable(e));
        return dims;
    }
    for (job, result) in ingest.into_iter().zip(results) {
        let _ = job.reply.send(result);
    }
    for (job, applied) in settled.into_iter().zip(applied) {
        let _ = job.reply.send(Ok(Recorded { applied, announced }));
    }
    for (job, rows) in claims.into_iter().zip(claimed) {
        let _ = job.reply.send(Ok(rows));
    }
    dims
}
