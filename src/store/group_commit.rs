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

use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyPool, Transaction};
use tokio::sync::{mpsc, oneshot};

use super::emails::{IdempotencyRecord, NewEmail, insert_emails, insert_request};
use super::kept::Kept;
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
    ) -> StoreResult<Self> {
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
            home.spawn("herald-writer", task)?;
        }
        Ok(Self { tx, counters })
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
    let mut kept = Kept::new(pool);
    loop {
        // Whatever is waiting, up to MAX_BATCH, once at least one job is.
        let mut jobs = Vec::new();
        {
            // A writer about to wait (for jobs, or for another writer that is waiting for
            // them) gives its connection back to the pool first.
            let mut rx = match rx.try_lock() {
                Ok(rx) => rx,
                Err(_) => {
                    kept.release();
                    rx.lock().await
                }
            };
            if rx.is_empty() {
                kept.release();
            }
            if rx.recv_many(&mut jobs, MAX_BATCH).await == 0 {
                return;
            }
        }
        let started = Instant::now();
        let n = jobs.len() as u64;
        let batch = Batch::of(jobs);
        let conn = match kept.get().await {
            Ok(conn) => conn,
            Err(e) => {
                let msg = e.to_string();
                batch.fail(|| StoreError::from_shared(&msg, &e));
                continue;
            }
        };
        let committed;
        (dims, committed) = commit(conn, batch, &shard, &endpoints, dims).await;
        if !committed {
            kept.release();
        }
        counters.commits.fetch_add(1, Ordering::Relaxed);
        counters.jobs.fetch_add(n, Ordering::Relaxed);
        let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        counters.busy_micros.fetch_add(micros, Ordering::Relaxed);
        if dims.len() > kept_dims {
            dims = HashMap::new();
        }
    }
}

/// One transaction's jobs, by kind.
#[derive(Default)]
struct Batch {
    ingest: Vec<IngestJob>,
    settled: Vec<OutcomeJob>,
    claims: Vec<ClaimJob>,
}

/// What a batch's writes gave each job: a result per request, a count per outcome group,
/// the leased rows per claim.
struct Written {
    results: Vec<StoreResult<()>>,
    applied: Vec<usize>,
    claimed: Vec<Vec<ClaimRow>>,
}

impl Batch {
    fn of(jobs: Vec<Job>) -> Self {
        let mut batch = Batch::default();
        for job in jobs {
            match job {
                Job::Ingest(j) => batch.ingest.push(j),
                Job::Outcomes(j) => batch.settled.push(j),
                Job::Claim(j) => batch.claims.push(j),
            }
        }
        batch
    }

    /// Answers every job of a batch that could not be committed: nothing of it was.
    fn fail(self, err: impl Fn() -> StoreError) {
        for job in self.ingest {
            let _ = job.reply.send(Err(err()));
        }
        for job in self.settled {
            let _ = job.reply.send(Err(err()));
        }
        for job in self.claims {
            let _ = job.reply.send(Err(err()));
        }
    }

    /// Answers every job after the commit.
    fn answer(self, written: Written, announced: usize) {
        for (job, result) in self.ingest.into_iter().zip(written.results) {
            let _ = job.reply.send(result);
        }
        for (job, applied) in self.settled.into_iter().zip(written.applied) {
            let _ = job.reply.send(Ok(Recorded { applied, announced }));
        }
        for (job, rows) in self.claims.into_iter().zip(written.claimed) {
            let _ = job.reply.send(Ok(rows));
        }
    }

    /// The projects whose webhook endpoints the batch's events may need.
    fn projects(&self) -> impl Iterator<Item = &str> {
        let accepted = self
            .ingest
            .iter()
            .flat_map(|j| j.emails.iter().map(|e| e.project_id.as_str()));
        let settled = self
            .settled
            .iter()
            .flat_map(|j| j.outcomes.iter().map(|o| o.project_id.as_str()));
        accepted.chain(settled)
    }
}

/// Commits one batch on `conn`; returns the email dimensions the stats log knew (to keep)
/// and whether the connection ended the batch in good order (committed or cleanly rolled
/// back).
async fn commit(
    conn: &mut PoolConnection<Any>,
    batch: Batch,
    shard: &str,
    endpoints: &EndpointCache,
    dims: Dims,
) -> (Dims, bool) {
    let mut tx = match sqlx::Connection::begin(&mut **conn).await {
        Ok(tx) => tx,
        Err(e) => {
            let msg = e.to_string();
            batch.fail(|| StoreError::from_shared(&msg, &e));
            return (dims, false);
        }
    };
    let mut outbox = Outbox::default();
    outbox.stats.use_shard_of(shard);
    outbox.stats.adopt_dims(dims);
    outbox.use_cached_endpoints(endpoints, batch.projects());
    let written = match write(&mut tx, &mut outbox, &batch).await {
        Ok(written) => written,
        Err(e) => {
            // The transaction is unusable: nothing of this batch is committed.
            drop(tx);
            let msg = e.to_string();
            batch.fail(|| StoreError::Unavailable(msg.clone()));
            return (outbox.stats.take_dims(), false);
        }
    };
    if batch.settled.is_empty()
        && batch.claims.is_empty()
        && written.results.iter().all(Result::is_err)
    {
        // Nothing to keep: roll back and report.
        let rolled_back = tx.rollback().await.is_ok();
        batch.answer(written, 0);
        return (outbox.stats.take_dims(), rolled_back);
    }
    outbox.remember_endpoints(endpoints);
    let announced = outbox.announced;
    let committed = match outbox.stats.flush(&mut tx).await {
        Ok(()) => tx.commit().await.map_err(StoreError::from),
        Err(e) => Err(e),
    };
    let ok = committed.is_ok();
    match committed {
        Ok(()) => batch.answer(written, announced),
        Err(e) => {
            let msg = e.to_string();
            batch.fail(|| StoreError::Unavailable(msg.clone()));
        }
    }
    (outbox.stats.take_dims(), ok)
}

/// The batch's writes inside `tx`. Requests without an idempotency key cannot conflict with
/// anything (their ids are new): all their emails go in together, one statement per table.
/// Then every worker's outcomes, then the claims (they may lease what this very batch
/// accepted), then each request with a key in its own savepoint, so a key found taken rolls
/// back only that request. An error is the transaction's: nothing of the batch can commit.
async fn write(
    tx: &mut Transaction<'_, Any>,
    outbox: &mut Outbox,
    batch: &Batch,
) -> StoreResult<Written> {
    let plain: Vec<&NewEmail> = batch
        .ingest
        .iter()
        .filter(|j| j.idempotency.is_none())
        .flat_map(|j| &j.emails)
        .collect();
    if !plain.is_empty() {
        insert_emails(tx, outbox, plain.iter().copied()).await?;
    }
    let applied = if batch.settled.is_empty() {
        Vec::new()
    } else {
        let groups: Vec<(&str, &[Outcome])> = batch
            .settled
            .iter()
            .map(|j| (j.owner.as_str(), j.outcomes.as_slice()))
            .collect();
        apply_outcomes(tx, outbox, &groups).await?
    };
    let mut claimed = Vec::with_capacity(batch.claims.len());
    for job in &batch.claims {
        claimed.push(claim_rows(tx, &job.owner, job.now_ms, job.lease_ms, job.limit).await?);
    }
    let keyed = batch
        .ingest
        .iter()
        .filter(|j| j.idempotency.is_some())
        .count();
    let alone = keyed == 1 && batch.ingest.len() == 1 && applied.is_empty() && claimed.is_empty();
    let mut results = Vec::with_capacity(batch.ingest.len());
    for job in &batch.ingest {
        let Some(idempotency) = &job.idempotency else {
            results.push(Ok(()));
            continue;
        };
        if alone {
            // Its failure rolls the whole transaction back: no savepoint needed.
            results.push(insert_request(tx, outbox, &job.emails, Some(idempotency)).await);
            continue;
        }
        let mark = outbox.stats.mark();
        sqlx::query("SAVEPOINT ingest").execute(&mut **tx).await?;
        let r = insert_request(tx, outbox, &job.emails, Some(idempotency)).await;
        if r.is_ok() {
            sqlx::query("RELEASE SAVEPOINT ingest")
                .execute(&mut **tx)
                .await?;
        } else {
            // ROLLBACK TO leaves the savepoint open; close it so the next request starts
            // from a clean slate. (The outbox's endpoint cache is read-only: still valid.)
            sqlx::query("ROLLBACK TO SAVEPOINT ingest")
                .execute(&mut **tx)
                .await?;
            sqlx::query("RELEASE SAVEPOINT ingest")
                .execute(&mut **tx)
                .await?;
            outbox.stats.rollback_to(mark);
        }
        results.push(r);
    }
    Ok(Written {
        results,
        applied,
        claimed,
    })
}
