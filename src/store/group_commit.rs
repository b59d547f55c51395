//! Group commit: the store's hot writes share one transaction and one fsync.
//!
//! Three kinds of job queue on one channel: requests to accept emails, delivery workers'
//! outcomes, and their claims. One task takes whatever is waiting (up to `MAX_BATCH`), reads
//! the suppression list for every new recipient (one query per project: a request learns from
//! its commit which of its recipients were suppressed), writes
//! the emails of every request without an idempotency key together (one multi-row statement
//! per table: their ids are new, they cannot conflict), the outcomes of every worker together
//! (one `UPDATE`, fenced by each lease), runs the claims, then each request with a key inside
//! its own savepoint (a reused key rolls back only that request), commits once, and only then
//! answers every job.
//! While one commit is in flight the next jobs gather, so the batch size follows the load:
//! one at a time when idle, hundreds under pressure. On SQLite this is the single writer; on
//! Postgres it turns N commits into one.
//!
//! On SQLite the disk's flush is taken out of the commit. The writer's connection runs with
//! `synchronous = NORMAL` while the writer keeps it (back to `FULL` before anyone else gets
//! it): a commit writes its frames to the write-ahead log and returns without an fsync. A
//! second thread, the syncer (`store::wal_sync`, with the checkpoints), then `fdatasync`s the
//! log and answers the jobs of every commit made before that flush began. The writer meanwhile writes the next batch, so the single
//! writer's cycle is its writes, not its writes plus the flush, and one flush covers all the
//! commits that landed while the previous flush ran. Nothing is answered before the flush
//! that holds it: on power loss, SQLite's recovery keeps the log up to its last whole commit,
//! so what was lost was never acknowledged. (SQLite's own `FULL` does the same flush inside
//! `COMMIT`, holding the write lock while the disk works.)
//!
//! Also on SQLite, the requests without an idempotency key, the outcomes and the claims are
//! written on the writer's own connection, on its own thread ([`Lite`], see `store::lite`), in
//! a transaction of their own; the requests with a key follow on the pool's writer
//! connection, which the writer holds throughout.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sqlx::{AnyConnection, AnyPool, Executor};
use tokio::sync::{mpsc, oneshot};

use super::bulk::{Partial, is_sqlite};
use super::checkpoint::Figures as CheckpointFigures;
use super::emails::{
    IdempotencyRecord, NewEmail, Respond, Suppressed, insert_emails, insert_emails_lite,
    insert_request,
};
use super::kept::Kept;
use super::lite::Lite;
use super::queue::{
    ClaimRow, Outcome, Recorded, apply_outcomes, apply_outcomes_lite, claim_rows, claim_rows_lite,
};
use super::stats::EmailDims;
use super::suppressions::{self, SuppressionRecord, find_for, find_for_lite};
use super::wal_sync::{Flushed, Syncer, Wal};
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
    /// Writes the idempotency record's response once the suppressions are known.
    respond: Option<Respond>,
    /// The suppressions that applied to each email, found in the commit's transaction.
    suppressed: Suppressed,
    reply: oneshot::Sender<StoreResult<Suppressed>>,
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
    checkpoints: Option<Arc<CheckpointFigures>>,
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
        wal: Option<Wal>,
    ) -> StoreResult<Self> {
        let (tx, rx) = mpsc::channel(4 * MAX_BATCH);
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        let counters = Arc::new(Counters::default());
        let writers = writers.max(1);
        let checkpoints = wal.as_ref().map(|w| w.checkpointer.figures());
        let mut own = wal
            .map(|w| Ok::<_, StoreError>((Lite::open(&w.database)?, Syncer::start(w)?)))
            .transpose()?;
        for _ in 0..writers {
            let task = run(
                pool.clone(),
                Arc::clone(&rx),
                uuid::Uuid::new_v4().to_string(),
                Arc::clone(&endpoints),
                Arc::clone(&counters),
                KEPT_DIMS / writers,
                // A write-ahead log is SQLite's, which has one writer.
                own.take(),
            );
            home.spawn("herald-writer", task)?;
        }
        Ok(Self {
            tx,
            counters,
            checkpoints,
        })
    }

    pub(super) fn figures(&self) -> WriterFigures {
        let c = &self.counters;
        WriterFigures {
            commits: c.commits.load(Ordering::Relaxed),
            jobs: c.jobs.load(Ordering::Relaxed),
            busy_seconds: c.busy_micros.load(Ordering::Relaxed) as f64 / 1e6,
            checkpoints: self.checkpoints.as_ref().map_or(0, |c| c.checkpoints()),
            wal_frames: self.checkpoints.as_ref().map_or(0, |c| c.log_frames()),
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

    /// Commits one request's emails; returns, after the commit that holds them, the
    /// suppressions that applied to each.
    pub(super) async fn submit_emails(
        &self,
        emails: Vec<NewEmail>,
        idempotency: Option<IdempotencyRecord>,
        respond: Option<Respond>,
    ) -> StoreResult<Suppressed> {
        let (reply, answer) = oneshot::channel();
        let job = Job::Ingest(IngestJob {
            emails,
            idempotency,
            respond,
            suppressed: Vec::new(),
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

/// How long a writer with nothing to do keeps its connection before giving it back.
const LINGER: Duration = Duration::from_millis(5);

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
    own: Option<(Lite, Syncer<Committed>)>,
) {
    let mut dims = HashMap::new();
    let (mut lite, syncer) = own.unzip();
    let (mut kept, settle, synced_all) = match syncer {
        Some(Syncer { commits, done, .. }) => {
            let kept = Kept::with_setting(
                pool,
                "PRAGMA synchronous = NORMAL",
                "PRAGMA synchronous = FULL",
            );
            (kept, Settle::AfterSync(commits), Some(done))
        }
        None => (Kept::new(pool), Settle::Now, None),
    };
    let writing = Writing {
        shard: &shard,
        endpoints: &endpoints,
        settle: &settle,
    };
    loop {
        // Whatever is waiting, up to MAX_BATCH, once at least one job is.
        let mut jobs = Vec::new();
        {
            // A writer about to wait (for jobs, or for another writer that is waiting for
            // them) gives its connection back to the pool first.
            let mut rx = match rx.try_lock() {
                Ok(rx) => rx,
                Err(_) => {
                    kept.release().await;
                    rx.lock().await
                }
            };
            // Nothing waiting: under a steady trickle the next job is a moment away, so the
            // connection is kept a little longer before it goes back (giving it back and
            // taking it again costs four hand-offs to its thread on SQLite).
            let received = if !rx.is_empty() {
                rx.recv_many(&mut jobs, MAX_BATCH).await
            } else {
                let next = tokio::time::timeout(LINGER, rx.recv_many(&mut jobs, MAX_BATCH));
                match next.await {
                    Ok(n) => n,
                    Err(_) => {
                        kept.release().await;
                        rx.recv_many(&mut jobs, MAX_BATCH).await
                    }
                }
            };
            if received == 0 {
                break;
            }
        }
        let started = Instant::now();
        let n = jobs.len() as u64;
        let (own, rest) = match lite {
            Some(_) => Batch::of(jobs).split_own(),
            None => (Batch::default(), Batch::of(jobs)),
        };
        let mut in_order = true;
        let mut transactions = 0;
        if let (Some(lite), false) = (lite.as_mut(), own.is_empty()) {
            transactions += 1;
            let committed;
            (dims, committed) = commit_lite(&mut kept, lite, own, dims, &writing).await;
            in_order &= committed;
        }
        if !rest.is_empty() {
            transactions += 1;
            let committed;
            (dims, committed) = commit(&mut kept, rest, dims, &writing).await;
            in_order &= committed;
        }
        if !in_order {
            kept.release().await;
        }
        counters.commits.fetch_add(transactions, Ordering::Relaxed);
        counters.jobs.fetch_add(n, Ordering::Relaxed);
        let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        counters.busy_micros.fetch_add(micros, Ordering::Relaxed);
        if dims.len() > kept_dims {
            dims = HashMap::new();
        }
    }
    // Every sender is gone: the connection goes back (the transaction left open rolled
    // back), the syncer answers the commits it still holds, then ends, and only then does
    // the writer (its own runtime stops when this task returns).
    kept.release().await;
    drop(settle);
    if let Some(done) = synced_all {
        let _ = done.await;
    }
}

/// What a writer writes every batch with: its stats shard, the endpoints it caches, how it
/// answers a commit's jobs.
struct Writing<'a> {
    shard: &'a str,
    endpoints: &'a EndpointCache,
    settle: &'a Settle,
}

/// How a committed batch's jobs are answered.
enum Settle {
    /// At once: the commit itself waited for the disk (Postgres; SQLite without a file).
    Now,
    /// After the syncer's next flush of SQLite's write-ahead log.
    AfterSync(mpsc::Sender<Committed>),
}

/// A committed batch and what to answer its jobs.
struct Committed {
    batch: Batch,
    written: Written,
    announced: usize,
}

impl Settle {
    async fn answer(&self, committed: Committed) {
        match self {
            Settle::Now => Flushed::answer(committed),
            Settle::AfterSync(syncer) => {
                if let Err(mpsc::error::SendError(committed)) = syncer.send(committed).await {
                    // The syncer is gone (the runtime is stopping): nothing can vouch for
                    // the flush.
                    committed.batch.fail(|| {
                        StoreError::Unavailable("the store's log syncer has stopped".into())
                    });
                }
            }
        }
    }
}

impl Flushed for Committed {
    fn answer(self) {
        self.batch.answer(self.written, self.announced);
    }

    fn fail(self, why: &str) {
        self.batch.fail(|| StoreError::Unavailable(why.to_owned()));
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

    /// What the writer's own connection writes (the requests without an idempotency key,
    /// the outcomes, the claims), and the rest (the requests with a key, each in a savepoint
    /// of the pool's connection).
    fn split_own(self) -> (Batch, Batch) {
        let (plain, keyed) = self
            .ingest
            .into_iter()
            .partition(|j| j.idempotency.is_none());
        let own = Batch {
            ingest: plain,
            settled: self.settled,
            claims: self.claims,
        };
        let rest = Batch {
            ingest: keyed,
            ..Batch::default()
        };
        (own, rest)
    }

    /// The outbox of the batch's transaction: the writer's stats shard, the email dimensions
    /// it keeps, the endpoints cached for the batch's projects.
    fn outbox(&self, shard: &str, endpoints: &EndpointCache, dims: Dims) -> Outbox {
        let mut outbox = Outbox::default();
        outbox.stats.use_shard_of(shard);
        outbox.stats.adopt_dims(dims);
        outbox.use_cached_endpoints(endpoints, self.projects());
        outbox
    }

    fn is_empty(&self) -> bool {
        self.ingest.is_empty() && self.settled.is_empty() && self.claims.is_empty()
    }

    /// Each worker's outcomes, as the outcome writes take them.
    fn outcome_groups(&self) -> Vec<(&str, &[Outcome])> {
        self.settled
            .iter()
            .map(|j| (j.owner.as_str(), j.outcomes.as_slice()))
            .collect()
    }

    /// [`Batch::fail`] with a database error.
    fn fail_on(self, e: &sqlx::Error) {
        let msg = e.to_string();
        self.fail(|| StoreError::from_shared(&msg, e));
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
            let _ = job.reply.send(result.map(|()| job.suppressed));
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

/// Marks the suppressed recipients of each request's emails (see [`suppressions::apply`]),
/// and writes the response each request's idempotency record keeps from them.
fn suppress(jobs: &mut [IngestJob], found: &[SuppressionRecord]) {
    for job in jobs {
        job.suppressed = job
            .emails
            .iter_mut()
            .map(|e| suppressions::apply(e, found))
            .collect();
        if let (Some(record), Some(respond)) = (job.idempotency.as_mut(), job.respond.take()) {
            record.response_body = respond(&job.suppressed);
        }
    }
}

/// What ends a batch that keeps its writes on SQLite: its commit and, in the same hand-off,
/// the next batch's `BEGIN` (a `BEGIN` takes no lock and no snapshot until a statement runs;
/// the transaction left open is rolled back if the connection goes back to the pool first).
/// Not on Postgres: its writers take turns at the one channel, and one that leaves a
/// transaction open mostly gives its connection back before its next batch, so the open
/// transaction costs a `ROLLBACK` where it meant to save a `BEGIN`.
const COMMIT_THEN_BEGIN: [&str; 2] = ["COMMIT", "BEGIN"];

/// Commits a batch of requests without idempotency keys, outcomes and claims on the writer's
/// own SQLite connection (see `store::lite`), in the order [`write`] follows, holding the
/// pool's writer connection meanwhile so that none of the store's other writes is
/// mid-transaction beside it; returns the email dimensions to keep and whether the pool's
/// connection is in good order.
async fn commit_lite(
    kept: &mut Kept,
    lite: &mut Lite,
    mut batch: Batch,
    dims: Dims,
    w: &Writing<'_>,
) -> (Dims, bool) {
    let (conn, open) = match kept.get_with_transaction().await {
        Ok(got) => got,
        Err(e) => {
            batch.fail_on(&e);
            return (dims, false);
        }
    };
    let conn: &mut AnyConnection = conn;
    let mut outbox = batch.outbox(w.shard, w.endpoints, dims);
    if batch.projects().any(|p| !outbox.has_endpoints(p)) {
        // Looked up on the pool's connection, outside any transaction: a read inside the
        // one the writer leaves open would pin a snapshot older than this batch's commit,
        // and that transaction could then not write.
        let looked_up = async {
            if *open {
                conn.execute("ROLLBACK").await?;
                *open = false;
            }
            outbox.load_endpoints(conn, batch.projects()).await
        };
        if let Err(e) = looked_up.await {
            let msg = e.to_string();
            batch.fail(|| StoreError::Unavailable(msg.clone()));
            return (outbox.stats.take_dims(), false);
        }
    }
    let written = lite.transaction(|lite| {
        if !batch.ingest.is_empty() {
            let found = find_for_lite(lite, batch.ingest.iter().flat_map(|j| &j.emails))?;
            suppress(&mut batch.ingest, &found);
            let emails = batch.ingest.iter().flat_map(|j| &j.emails);
            insert_emails_lite(lite, &mut outbox, emails)?;
        }
        let applied = match batch.outcome_groups() {
            groups if groups.is_empty() => Vec::new(),
            groups => apply_outcomes_lite(lite, &mut outbox, &groups)?,
        };
        let claimed = batch
            .claims
            .iter()
            .map(|job| claim_rows_lite(lite, &job.owner, job.now_ms, job.lease_ms, job.limit))
            .collect::<StoreResult<Vec<_>>>()?;
        outbox.stats.flush_lite(lite)?;
        Ok((applied, claimed))
    });
    match written {
        Ok((applied, claimed)) => {
            outbox.remember_endpoints(w.endpoints);
            let written = Written {
                results: batch.ingest.iter().map(|_| Ok(())).collect(),
                applied,
                claimed,
            };
            let announced = outbox.announced;
            let committed = Committed {
                batch,
                written,
                announced,
            };
            w.settle.answer(committed).await;
        }
        Err(e) => {
            let msg = e.to_string();
            batch.fail(|| StoreError::Unavailable(msg.clone()));
        }
    }
    (outbox.stats.take_dims(), true)
}

/// Commits one batch on the kept connection; returns the email dimensions the stats log knew
/// (to keep) and whether the connection ended the batch in good order (committed, or cleanly
/// rolled back).
async fn commit(kept: &mut Kept, mut batch: Batch, dims: Dims, w: &Writing<'_>) -> (Dims, bool) {
    let (conn, open) = match kept.get_with_transaction().await {
        Ok(got) => got,
        Err(e) => {
            batch.fail_on(&e);
            return (dims, false);
        }
    };
    let conn: &mut AnyConnection = conn;
    if !*open {
        if let Err(e) = conn.execute("BEGIN").await {
            batch.fail_on(&e);
            return (dims, false);
        }
        *open = true;
    }
    let mut outbox = batch.outbox(w.shard, w.endpoints, dims);
    let written = match write(conn, &mut outbox, &mut batch).await {
        Ok(written) => written,
        Err(e) => {
            // The transaction is unusable: nothing of this batch is committed (the release
            // that follows rolls it back).
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
        let rolled_back = conn.execute("ROLLBACK").await.is_ok();
        *open = !rolled_back;
        batch.answer(written, 0);
        return (outbox.stats.take_dims(), rolled_back);
    }
    outbox.remember_endpoints(w.endpoints);
    let announced = outbox.announced;
    // The rollups, the commit and (SQLite) the next batch's BEGIN: one hand-off on SQLite.
    let sqlite = is_sqlite(conn);
    let then: &[&str] = if sqlite {
        &COMMIT_THEN_BEGIN
    } else {
        &COMMIT_THEN_BEGIN[..1]
    };
    let flushed = outbox.stats.flush(conn, then).await;
    let ok = flushed.is_ok();
    if ok {
        // Else still open, or not known to be closed: the release that follows rolls back.
        *open = sqlite;
    }
    match flushed {
        Err(Partial {
            error,
            then_done: 0,
        }) => {
            let msg = error.to_string();
            batch.fail(|| StoreError::Unavailable(msg.clone()));
        }
        // Committed (then perhaps the BEGIN failed: the release that follows settles the
        // connection).
        Ok(()) | Err(_) => {
            let committed = Committed {
                batch,
                written,
                announced,
            };
            w.settle.answer(committed).await;
        }
    }
    (outbox.stats.take_dims(), ok)
}

/// The batch's writes inside `tx`. First the suppressions of every request's recipients, in
/// one query. Requests without an idempotency key cannot conflict with anything (their ids
/// are new): all their emails go in together, one statement per table.
/// Then every worker's outcomes, then the claims (they may lease what this very batch
/// accepted), then each request with a key in its own savepoint, so a key found taken rolls
/// back only that request. An error is the transaction's: nothing of the batch can commit.
async fn write(
    tx: &mut AnyConnection,
    outbox: &mut Outbox,
    batch: &mut Batch,
) -> StoreResult<Written> {
    if !batch.ingest.is_empty() {
        let found = find_for(tx, batch.ingest.iter().flat_map(|j| &j.emails)).await?;
        suppress(&mut batch.ingest, &found);
    }
    let plain: Vec<&NewEmail> = batch
        .ingest
        .iter()
        .filter(|j| j.idempotency.is_none())
        .flat_map(|j| &j.emails)
        .collect();
    if !plain.is_empty() {
        insert_emails(tx, outbox, plain.iter().copied()).await?;
    }
    let applied = match batch.outcome_groups() {
        groups if groups.is_empty() => Vec::new(),
        groups => apply_outcomes(tx, outbox, &groups).await?,
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
        sqlx::query("SAVEPOINT ingest").execute(&mut *tx).await?;
        let r = insert_request(tx, outbox, &job.emails, Some(idempotency)).await;
        if r.is_ok() {
            sqlx::query("RELEASE SAVEPOINT ingest")
                .execute(&mut *tx)
                .await?;
        } else {
            // ROLLBACK TO leaves the savepoint open; close it so the next request starts
            // from a clean slate. (The outbox's endpoint cache is read-only: still valid.)
            sqlx::query("ROLLBACK TO SAVEPOINT ingest")
                .execute(&mut *tx)
                .await?;
            sqlx::query("RELEASE SAVEPOINT ingest")
                .execute(&mut *tx)
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

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};
    use std::sync::Mutex;
    use std::sync::atomic::AtomicUsize;

    use super::*;
    use crate::store::wal_sync::sync_then_answer;

    /// A committed batch of one request, and where its answer arrives.
    fn one_request() -> (Committed, oneshot::Receiver<StoreResult<Suppressed>>) {
        let (reply, answer) = oneshot::channel();
        let batch = Batch {
            ingest: vec![IngestJob {
                emails: Vec::new(),
                idempotency: None,
                respond: None,
                suppressed: Vec::new(),
                reply,
            }],
            ..Batch::default()
        };
        let written = Written {
            results: vec![Ok(())],
            applied: Vec::new(),
            claimed: Vec::new(),
        };
        let committed = Committed {
            batch,
            written,
            announced: 0,
        };
        (committed, answer)
    }

    /// Runs the syncer over one committed request with `sync` as its flush; the answer.
    async fn settle_one<F>(
        sync: F,
        answer_seen: Arc<Mutex<Option<oneshot::Receiver<StoreResult<Suppressed>>>>>,
        committed: Committed,
    ) -> StoreResult<Suppressed>
    where
        F: Fn(&Path) -> std::io::Result<()> + Clone + Send + 'static,
    {
        let (tx, rx) = mpsc::channel(1);
        let syncer = tokio::spawn(sync_then_answer(
            PathBuf::from("herald.db-wal"),
            rx,
            sync,
            None,
        ));
        Settle::AfterSync(tx).answer(committed).await;
        syncer.await.expect("the syncer ends when the writer does");
        let mut answer = answer_seen
            .lock()
            .expect("not poisoned")
            .take()
            .expect("the answer's receiver");
        answer.try_recv().expect("answered once the syncer is done")
    }

    #[tokio::test]
    async fn a_commit_is_answered_only_after_the_log_is_flushed() {
        let (committed, answer) = one_request();
        let answer = Arc::new(Mutex::new(Some(answer)));
        let flushes = Arc::new(AtomicUsize::new(0));
        let answered_first = Arc::new(AtomicUsize::new(0));
        let (seen, counted, early) = (
            Arc::clone(&answer),
            Arc::clone(&flushes),
            Arc::clone(&answered_first),
        );
        let sync = move |_: &Path| {
            counted.fetch_add(1, Ordering::SeqCst);
            // At the flush, the request must not have been answered yet.
            let mut seen = seen.lock().expect("not poisoned");
            if !matches!(
                seen.as_mut().map(oneshot::Receiver::try_recv),
                Some(Err(oneshot::error::TryRecvError::Empty))
            ) {
                early.fetch_add(1, Ordering::SeqCst);
            }
            Ok(())
        };
        settle_one(sync, answer, committed)
            .await
            .expect("committed and flushed");
        assert_eq!(flushes.load(Ordering::SeqCst), 1, "one flush");
        assert_eq!(
            answered_first.load(Ordering::SeqCst),
            0,
            "answered before the flush"
        );
    }

    #[tokio::test]
    async fn a_failed_flush_answers_an_error_not_a_success() {
        let (committed, answer) = one_request();
        let sync = |_: &Path| Err(std::io::Error::other("EIO"));
        let got = settle_one(sync, Arc::new(Mutex::new(Some(answer))), committed).await;
        assert!(
            matches!(&got, Err(StoreError::Unavailable(msg)) if msg.contains("EIO")),
            "{got:?}"
        );
    }
}
