//! The store's writer: every write Herald makes, in group commits.
//!
//! Jobs come on one channel: requests to accept emails, delivery workers' outcomes and
//! claims, and any other write of the store ([`Writer::run`]: a closure over the
//! transaction). A writer takes whatever is waiting (up to `MAX_BATCH`) and writes it all in
//! one transaction:
//!
//! 1. the suppression list for every new recipient (a request learns from its commit which
//!    of its recipients were suppressed);
//! 2. the emails of every request without an idempotency key, together (one multi-row
//!    statement per table: their ids are new, they cannot conflict);
//! 3. the outcomes of every worker together (one `UPDATE`, fenced by each lease);
//! 4. the claims (they may lease what this very batch accepted);
//! 5. each request with a key, then each other write, in a savepoint of its own, so that a
//!    key found taken, or a write that fails, rolls back only itself;
//! 6. the stats rollups the batch owes, then the commit; and only then is every job answered.
//!
//! While one commit is in flight the next jobs gather, so the batch size follows the load:
//! one at a time when idle, hundreds under pressure.
//!
//! How each database writes is its own ([`Connection`]): SQLite has one writer, on a thread
//! of its own, whose commits are answered after the syncer has flushed the log
//! (`store::sqlite`); Postgres has a few, each on a connection it keeps from the pool, whose
//! commits are answered at once.

use std::any::Any;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use tokio::sync::{mpsc, oneshot};

use super::emails::{
    IdempotencyRecord, NewEmail, Respond, Suppressed, insert_emails, insert_request,
};
use super::kept::Kept;
use super::queue::{ClaimRow, Outcome, Recorded, apply_outcomes, claim_rows};
use super::sqlite::checkpoint::Figures as CheckpointFigures;
use super::sqlite::wal_sync::{Flushed, Syncer, Wal};
use super::suppressions::{self, SuppressionRecord, find_for};
use super::webhooks::{EndpointCache, Outbox};
use super::write::Tx;
use super::{Home, StoreError, StoreResult, sqlite};
use crate::metrics::WriterFigures;

const MAX_BATCH: usize = 256;

/// A write handed to the writer: runs inside its transaction, with the batch's outbox (for
/// the events it writes); returns what the caller gets once the commit is durable.
type Work = Box<
    dyn for<'t> FnOnce(
            &'t mut dyn Tx,
            &'t mut Outbox,
        ) -> BoxFuture<'t, StoreResult<Box<dyn Any + Send>>>
        + Send,
>;

enum Job {
    Ingest(IngestJob),
    Outcomes(OutcomeJob),
    Claim(ClaimJob),
    Run(RunJob),
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

struct RunJob {
    work: Option<Work>,
    reply: oneshot::Sender<StoreResult<Box<dyn Any + Send>>>,
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

/// Where a backend's writers write.
pub(super) enum Connections {
    /// SQLite's one writer: its connection and the log it flushes.
    Sqlite(sqlite::Connection, Wal),
    /// Postgres: `writers` writers, each keeping a connection of the pool.
    Postgres(sqlx::AnyPool, usize),
}

impl Writer {
    /// Starts the writers taking batches from the one channel (SQLite: one, on a thread of
    /// its own; Postgres: a few, so that one batch's commit does not wait for another's).
    /// Each writer's rollup increments go to a shard of its own, so writers (and processes
    /// sharing a Postgres database) do not queue on one hot row.
    pub(super) fn start(
        connections: Connections,
        endpoints: Arc<EndpointCache>,
    ) -> StoreResult<Self> {
        let (tx, rx) = mpsc::channel(4 * MAX_BATCH);
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        let counters = Arc::new(Counters::default());
        let checkpoints;
        let writer = |conn: Connection, kept_dims: usize| {
            run(
                conn,
                Arc::clone(&rx),
                uuid::Uuid::new_v4().to_string(),
                Arc::clone(&endpoints),
                Arc::clone(&counters),
                kept_dims,
            )
        };
        match connections {
            Connections::Sqlite(conn, wal) => {
                checkpoints = Some(wal.checkpointer.figures());
                let syncer = Syncer::start(wal)?;
                Home::OwnThread.spawn(
                    "herald-writer",
                    writer(Connection::Sqlite(conn, syncer), KEPT_DIMS),
                )?;
            }
            Connections::Postgres(pool, writers) => {
                checkpoints = None;
                let writers = writers.max(1);
                for _ in 0..writers {
                    let conn = Connection::Postgres(Kept::new(pool.clone()));
                    Home::Runtime.spawn("herald-writer", writer(conn, KEPT_DIMS / writers))?;
                }
            }
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

    /// Runs `work` in the writer's next transaction, in a savepoint of its own (its error
    /// undoes its writes alone); returns what it returned once the commit that holds it is
    /// durable.
    pub(super) async fn run<T, F>(&self, work: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: for<'t> FnOnce(&'t mut dyn Tx, &'t mut Outbox) -> BoxFuture<'t, StoreResult<T>>
            + Send
            + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job = Job::Run(RunJob {
            work: Some(boxed(work)),
            reply,
        });
        let done = self.submit(job, answer).await?;
        done.downcast::<T>()
            .map(|t| *t)
            .map_err(|_| StoreError::Failed("a write answered with another type".into()))
    }
}

/// `work` with its answer boxed, as the writer's jobs carry it.
fn boxed<T, F>(work: F) -> Work
where
    T: Send + 'static,
    F: for<'t> FnOnce(&'t mut dyn Tx, &'t mut Outbox) -> BoxFuture<'t, StoreResult<T>>
        + Send
        + 'static,
{
    Box::new(move |tx, outbox| {
        let done = work(tx, outbox);
        Box::pin(async move { done.await.map(|t| Box::new(t) as Box<dyn Any + Send>) })
    })
}

/// How long a writer with nothing to do keeps its connection before giving it back (a pool's:
/// Postgres).
const LINGER: Duration = Duration::from_millis(5);

/// Email dimensions the writers keep between batches (most outcomes are of emails just
/// written), at most this many in all (each writer its share).
const KEPT_DIMS: usize = 50_000;

/// A writer's connection, and how its commits are answered.
enum Connection {
    /// After the syncer's next flush of the write-ahead log.
    Sqlite(sqlite::Connection, Syncer<Committed>),
    /// At once: the commit itself waited for the disk.
    Postgres(Kept),
}

impl Connection {
    /// Begins the batch's transaction.
    async fn begin(&mut self) -> StoreResult<&mut dyn Tx> {
        match self {
            Connection::Sqlite(conn, _) => {
                conn.begin()?;
                Ok(conn)
            }
            Connection::Postgres(kept) => {
                // Taken (or taken afresh, if kept too long) before the transaction begins,
                // never while it is open.
                let conn = kept.get().await?;
                sqlx::Executor::execute(&mut **conn, "BEGIN").await?;
                Ok(&mut **conn)
            }
        }
    }

    async fn commit(&mut self) -> StoreResult<()> {
        match self {
            Connection::Sqlite(conn, _) => conn.commit(),
            Connection::Postgres(kept) => {
                let Some(conn) = kept.held() else {
                    return Err(StoreError::Unavailable(
                        "the writer lost its connection".into(),
                    ));
                };
                let committed = sqlx::Executor::execute(&mut **conn, "COMMIT").await;
                if committed.is_err() {
                    // In an unknown state: the pool checks it before anyone takes it again.
                    kept.release().await;
                }
                committed.map(drop).map_err(StoreError::from)
            }
        }
    }

    async fn rollback(&mut self) {
        match self {
            Connection::Sqlite(conn, _) => conn.rollback(),
            Connection::Postgres(kept) => kept.rollback().await,
        }
    }

    /// About to wait for jobs: a pool's connection goes back to the pool.
    async fn idle(&mut self) {
        if let Connection::Postgres(kept) = self {
            kept.release().await;
        }
    }

    /// Answers a committed batch's jobs.
    async fn settle(&mut self, committed: Committed) {
        match self {
            Connection::Postgres(_) => Flushed::answer(committed),
            Connection::Sqlite(_, syncer) => {
                if let Err(mpsc::error::SendError(committed)) = syncer.commits.send(committed).await
                {
                    // The syncer is gone (the runtime is stopping): nothing can vouch for the
                    // flush.
                    committed.fail("the store's log syncer has stopped");
                }
            }
        }
    }

    /// The writer is ending: the syncer answers the commits it still holds, then ends.
    async fn close(self) {
        if let Connection::Sqlite(mut conn, Syncer { commits, done }) = self {
            conn.rollback();
            drop(commits);
            let _ = done.await;
        }
    }
}

async fn run(
    mut conn: Connection,
    rx: Arc<tokio::sync::Mutex<mpsc::Receiver<Job>>>,
    shard: String,
    endpoints: Arc<EndpointCache>,
    counters: Arc<Counters>,
    kept_dims: usize,
) {
    let mut dims = HashMap::new();
    loop {
        // Whatever is waiting, up to MAX_BATCH, once at least one job is.
        let mut jobs = Vec::new();
        {
            // A writer about to wait (for jobs, or for another writer that is waiting for
            // them) gives its connection back to the pool first.
            let mut rx = match rx.try_lock() {
                Ok(rx) => rx,
                Err(_) => {
                    conn.idle().await;
                    rx.lock().await
                }
            };
            // Nothing waiting: under a steady trickle the next job is a moment away, so the
            // connection is kept a little longer before it goes back.
            let received = if !rx.is_empty() {
                rx.recv_many(&mut jobs, MAX_BATCH).await
            } else {
                let next = tokio::time::timeout(LINGER, rx.recv_many(&mut jobs, MAX_BATCH));
                match next.await {
                    Ok(n) => n,
                    Err(_) => {
                        conn.idle().await;
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
        let mut outbox = Outbox::default();
        outbox.stats.use_shard_of(&shard);
        outbox.stats.adopt_dims(dims);
        commit(&mut conn, Batch::of(jobs), &mut outbox, &endpoints).await;
        dims = outbox.stats.take_dims();
        counters.commits.fetch_add(1, Ordering::Relaxed);
        counters.jobs.fetch_add(n, Ordering::Relaxed);
        let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        counters.busy_micros.fetch_add(micros, Ordering::Relaxed);
        if dims.len() > kept_dims {
            dims = HashMap::new();
        }
    }
    // Every sender is gone: the connection goes back (what was left open rolled back), and
    // on SQLite the syncer answers the commits it still holds, then ends, and only then does
    // the writer (its own runtime stops when this task returns).
    conn.idle().await;
    conn.close().await;
}

/// A committed batch and what to answer its jobs.
pub(super) struct Committed {
    batch: Batch,
    written: Written,
    announced: usize,
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
    runs: Vec<RunJob>,
}

/// What a batch's writes gave each job: a result per request, a count per outcome group,
/// the leased rows per claim, a result per other write.
#[derive(Default)]
struct Written {
    results: Vec<StoreResult<()>>,
    applied: Vec<usize>,
    claimed: Vec<Vec<ClaimRow>>,
    ran: Vec<StoreResult<Box<dyn Any + Send>>>,
}

impl Batch {
    fn of(jobs: Vec<Job>) -> Self {
        let mut batch = Batch::default();
        for job in jobs {
            match job {
                Job::Ingest(j) => batch.ingest.push(j),
                Job::Outcomes(j) => batch.settled.push(j),
                Job::Claim(j) => batch.claims.push(j),
                Job::Run(j) => batch.runs.push(j),
            }
        }
        batch
    }

    /// Each worker's outcomes, as the outcome writes take them.
    fn outcome_groups(&self) -> Vec<(&str, &[Outcome])> {
        self.settled
            .iter()
            .map(|j| (j.owner.as_str(), j.outcomes.as_slice()))
            .collect()
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
        for job in self.runs {
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
        for (job, result) in self.runs.into_iter().zip(written.ran) {
            let _ = job.reply.send(result);
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

    /// Whether the batch wrote nothing worth a commit (every job it has failed alone).
    fn wrote_nothing(&self, written: &Written) -> bool {
        self.settled.is_empty()
            && self.claims.is_empty()
            && written.results.iter().all(Result::is_err)
            && written.ran.iter().all(Result::is_err)
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

/// Writes and commits one batch, then has its jobs answered (on SQLite, after the flush).
async fn commit(
    conn: &mut Connection,
    mut batch: Batch,
    outbox: &mut Outbox,
    endpoints: &EndpointCache,
) {
    outbox.use_cached_endpoints(endpoints, batch.projects());
    let written = match conn.begin().await {
        Ok(tx) => write(tx, outbox, &mut batch).await,
        Err(e) => Err(e),
    };
    let written = match written {
        Ok(written) => written,
        Err(e) => {
            // The transaction is unusable: nothing of this batch is committed.
            conn.rollback().await;
            let msg = e.to_string();
            batch.fail(|| StoreError::Unavailable(msg.clone()));
            return;
        }
    };
    if batch.wrote_nothing(&written) {
        conn.rollback().await;
        batch.answer(written, 0);
        return;
    }
    if let Err(e) = conn.commit().await {
        let msg = e.to_string();
        batch.fail(|| StoreError::Unavailable(msg.clone()));
        return;
    }
    outbox.remember_endpoints(endpoints);
    let announced = std::mem::take(&mut outbox.announced);
    let committed = Committed {
        batch,
        written,
        announced,
    };
    conn.settle(committed).await;
}

/// The batch's writes inside `tx`, in the order the module's doc gives. An error is the
/// transaction's: nothing of the batch can commit.
async fn write(tx: &mut dyn Tx, outbox: &mut Outbox, batch: &mut Batch) -> StoreResult<Written> {
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
    let mut results = Vec::with_capacity(batch.ingest.len());
    for job in &batch.ingest {
        let Some(idempotency) = &job.idempotency else {
            results.push(Ok(()));
            continue;
        };
        let mark = savepoint(tx, outbox).await?;
        let r = insert_request(tx, outbox, &job.emails, Some(idempotency)).await;
        release(tx, outbox, mark, r.is_ok()).await?;
        results.push(r);
    }
    let mut ran = Vec::with_capacity(batch.runs.len());
    for job in &mut batch.runs {
        let Some(work) = job.work.take() else {
            ran.push(Err(StoreError::Failed("a write ran twice".into())));
            continue;
        };
        let mark = savepoint(tx, outbox).await?;
        let r = work(&mut *tx, &mut *outbox).await;
        release(tx, outbox, mark, r.is_ok()).await?;
        ran.push(r);
    }
    outbox.stats.flush(tx).await?;
    Ok(Written {
        results,
        applied,
        claimed,
        ran,
    })
}

/// Opens the savepoint a job that must fail alone runs in; returns the stats log's mark.
async fn savepoint(tx: &mut dyn Tx, outbox: &Outbox) -> StoreResult<usize> {
    tx.execute("SAVEPOINT job", &[]).await?;
    Ok(outbox.stats.mark())
}

/// Closes a job's savepoint: kept if the job succeeded, else its writes (and the stats it
/// noted) undone. An error is the transaction's.
async fn release(tx: &mut dyn Tx, outbox: &mut Outbox, mark: usize, ok: bool) -> StoreResult<()> {
    if !ok {
        // ROLLBACK TO leaves the savepoint open; the RELEASE closes it, so the next job
        // starts from a clean slate. The endpoints the outbox looked up are still valid.
        tx.execute("ROLLBACK TO SAVEPOINT job", &[]).await?;
        outbox.stats.rollback_to(mark);
    }
    tx.execute("RELEASE SAVEPOINT job", &[]).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};
    use std::sync::Mutex;
    use std::sync::atomic::AtomicUsize;

    use super::*;
    use crate::store::sqlite::wal_sync::sync_then_answer;

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
            ..Written::default()
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
        tx.send(committed)
            .await
            .map_err(|_| ())
            .expect("the syncer takes it");
        drop(tx);
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
