//! The webhook dispatcher: each enabled endpoint is a lane of its own, which claims that
//! endpoint's due deliveries, POSTs them signed, and records every attempt.
//!
//! A lane keeps up to `concurrency_per_endpoint` requests in flight and a queue of claimed
//! deliveries about twice that long, claiming more while it sends and writing the finished
//! attempts in batches (one commit of the store's writer for all that finished meanwhile). So
//! one endpoint's pace is its own: a slow endpoint holds its own lane's slots and no other's,
//! and an endpoint that answers nothing pauses its lane on the retry schedule instead of being
//! sent every new event (after a failure the lane sends one request at a time until one
//! succeeds; a few failures in a row pause it, and after a pause one failed request pauses
//! it again, on the schedule's next step). An endpoint's rate cap
//! (`rate_limit`, events a second, shared among `limits.processes`) spaces the lane's
//! requests (`webhooks::pacer`); a 429 or 503 with `Retry-After` pauses it that long.
//!
//! Each request carries `webhook-id` (the event id: the same on every retry and on manual
//! redelivery, so consumers can deduplicate), `webhook-timestamp` (the attempt's time) and
//! `webhook-signature` (one `v1,` signature per live secret). 2xx is success; 410 disables the
//! endpoint; anything else, or no answer, is retried on the schedule (honouring `Retry-After`
//! on 429/502/503/504) and, once the schedule is spent, the endpoint is disabled.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;
use serde_json::Value;
use serde_json::value::RawValue;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::clock::{Clock, format_ms};
use crate::domain::sealing::Sealer;
use crate::job_loop::RunOutcome;
use crate::metrics::Metrics;
use crate::store::{AttemptRecord, DueDelivery, Store, StoreError, WebhookTarget};

use super::client::literal_ip_is_forbidden;
use super::pacer::Pacer;
use super::signing::{SigningKey, signature_header};

/// How much of a response body the attempt log keeps.
const RESPONSE_KEEP: usize = 1024;

/// The shortest time between two lookups of the endpoints.
const REFRESH: Duration = Duration::from_millis(250);

/// The largest claim a lane makes: at 8,000 events a second, an eighth of a second of them.
const MAX_CLAIM: usize = 1024;

/// Failed requests with no success between them that pause a lane: more than one, so that
/// one failure among successes does not, and few, so that an endpoint that went down is not
/// sent many requests before the lane waits.
const FAILURES_TO_PAUSE: usize = 4;

/// Opened signing secrets kept, at most (by their sealed text).
const KEPT_SECRETS: usize = 10_000;

#[derive(Clone)]
pub struct Dispatcher {
    pub store: Store,
    pub clock: Arc<dyn Clock>,
    pub client: reqwest::Client,
    pub sealer: Arc<Sealer>,
    /// Delays before the second, third, … attempt (the first is immediate).
    pub schedule: Vec<Duration>,
    pub jitter: f64,
    pub allow_private_targets: bool,
    pub owner: String,
    pub lease: Duration,
    pub per_endpoint: usize,
    /// Processes sharing the database: each sends its share of an endpoint's rate cap.
    pub processes: u32,
    pub metrics: Arc<Metrics>,
    lanes: Arc<Mutex<HashMap<String, LaneState>>>,
    secrets: Arc<Mutex<HashMap<String, Arc<SigningKey>>>>,
    records: Arc<Mutex<Records>>,
}

/// Finished attempts waiting to be written, from every lane: a lane that finds no write
/// under way writes all that wait in one job, so that a hundred lanes cost the writer one job
/// (two statements) a round, not a hundred. Those that came while it wrote are written by
/// their own lanes once it is done (each write is one round: no lane writes for others
/// without end while its own attempts wait).
#[derive(Default)]
struct Records {
    waiting: Vec<(Vec<AttemptRecord>, tokio::sync::oneshot::Sender<()>)>,
    writing: bool,
    /// A write ended: the lanes whose attempts still wait try to write them.
    free: Arc<Notify>,
}

/// What every request to one endpoint shares, made ready once per claim (all of a claim's
/// deliveries are one endpoint's), not once per request.
struct Prepared {
    /// The URL, or why nothing is sent to it.
    url: Result<reqwest::Url, String>,
    /// The signing key, or why there is none.
    current: Result<Arc<SigningKey>, String>,
    /// The previous key during a rotation, until when it also signs.
    previous: Option<(Result<Arc<SigningKey>, String>, i64)>,
}

/// What a lane remembers between its batches (and across `run_once` calls).
#[derive(Debug, Default)]
struct LaneState {
    /// Requests failed in a row.
    failed_in_a_row: usize,
    /// Pauses in a row (a success ends the run): which step of the schedule the next takes.
    pauses: usize,
    /// When the last pause began (clock ms): the requests started before it were of the round
    /// that paused the lane, and their failures are not counted again.
    paused_at: i64,
    /// No request starts before this (clock ms): the endpoint is down, or asked to wait.
    paused_until: i64,
    /// The endpoint's cap (this process's share of it, events a second) and its schedule.
    pacer: Option<Pacer>,
}

impl Prepared {
    /// The keys that sign a request made at `now`: the current one, and the previous one
    /// until its grace period ends.
    fn keys(&self, now: i64) -> Result<Vec<Arc<SigningKey>>, String> {
        let mut keys = vec![self.current.clone()?];
        if let Some((previous, until)) = &self.previous
            && *until > now
        {
            keys.push(previous.clone()?);
        }
        Ok(keys)
    }
}

/// How long a lane runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Until {
    /// Until nothing of its endpoint is due (or it is paused), everything recorded.
    Idle,
    /// Until cancelled, waiting for new events when idle.
    Cancelled,
}

impl Dispatcher {
    #[expect(clippy::too_many_arguments, reason = "plain wiring from configuration")]
    pub fn new(
        store: Store,
        clock: Arc<dyn Clock>,
        client: reqwest::Client,
        sealer: Arc<Sealer>,
        schedule: Vec<Duration>,
        jitter: f64,
        allow_private_targets: bool,
        per_endpoint: usize,
    ) -> Self {
        Self {
            store,
            clock,
            client,
            sealer,
            schedule,
            jitter,
            allow_private_targets,
            owner: format!("herald-webhooks-{}", uuid::Uuid::now_v7()),
            lease: Duration::from_secs(120),
            per_endpoint: per_endpoint.max(1),
            processes: 1,
            metrics: Arc::default(),
            lanes: Arc::default(),
            secrets: Arc::default(),
            records: Arc::default(),
        }
    }

    /// Runs every enabled endpoint's lane until nothing of it is due, all of them at once;
    /// returns how many attempts were made (tests step the dispatcher with this).
    pub async fn run_once(&self) -> Result<RunOutcome, StoreError> {
        let lanes = self.refresh_lanes().await?;
        let mut runs = JoinSet::new();
        for endpoint in lanes {
            let this = self.clone();
            runs.spawn(async move {
                this.lane(&endpoint, Until::Idle, None, CancellationToken::new())
                    .await
            });
        }
        let mut total = 0;
        while let Some(joined) = runs.join_next().await {
            match joined {
                Ok(Ok(n)) => total += n,
                Ok(Err(e)) => return Err(e),
                Err(e) => tracing::error!(error = %e, "a webhook lane failed"),
            }
        }
        Ok(if total == 0 {
            RunOutcome::Idle
        } else {
            RunOutcome::Worked(total)
        })
    }

    /// Runs a lane for every enabled endpoint until `cancel`: the lanes are looked up again
    /// every `poll` and whenever new events are announced on `wake`, which also wakes every
    /// idle lane.
    pub async fn run(self, wake: Arc<Notify>, cancel: CancellationToken, poll: Duration) {
        let (woken, wakes) = watch::channel(());
        let mut running: HashMap<String, (CancellationToken, tokio::task::JoinHandle<()>)> =
            HashMap::new();
        'refresh: loop {
            let refreshed = tokio::time::Instant::now();
            match self.refresh_lanes().await {
                Ok(lanes) => {
                    running.retain(|id, (stop, task)| {
                        let keep = lanes.contains(id) && !task.is_finished();
                        if !keep {
                            stop.cancel();
                        }
                        keep
                    });
                    for endpoint in lanes {
                        if running.contains_key(&endpoint) {
                            continue;
                        }
                        let stop = cancel.child_token();
                        let (this, lane_stop, lane_wakes) =
                            (self.clone(), stop.clone(), wakes.clone());
                        let id = endpoint.clone();
                        let task = tokio::spawn(async move {
                            if let Err(e) = this
                                .lane(&id, Until::Cancelled, Some(lane_wakes), lane_stop)
                                .await
                            {
                                tracing::error!(error = %e, endpoint = %id, "a webhook lane stopped");
                            }
                        });
                        running.insert(endpoint, (stop, task));
                    }
                }
                Err(e) => tracing::warn!(error = %e, "could not look up the webhook endpoints"),
            }
            // Announcements wake the idle lanes at once; the endpoints are looked up again
            // after one, but at most every `REFRESH` (under load every commit announces).
            let mut announced = false;
            loop {
                tokio::select! {
                    () = cancel.cancelled() => break 'refresh,
                    () = wake.notified() => {
                        woken.send_replace(());
                        announced = true;
                    }
                    () = tokio::time::sleep_until(refreshed + REFRESH), if announced => break,
                    () = tokio::time::sleep_until(refreshed + poll.max(REFRESH)) => break,
                }
            }
        }
        // Each lane finishes what it started and records it before the process stops.
        for (_, (_, task)) in running {
            let _ = task.await;
        }
    }

    /// The enabled endpoints, their rate caps noted in their lanes' state.
    async fn refresh_lanes(&self) -> Result<Vec<String>, StoreError> {
        let lanes = self.store.webhook_lanes().await?;
        let mut state = self.lanes.lock().unwrap_or_else(|e| e.into_inner());
        state.retain(|id, _| lanes.iter().any(|(l, _)| l == id));
        let processes = f64::from(self.processes.max(1));
        for (id, rate) in &lanes {
            let lane = state.entry(id.clone()).or_default();
            let rate = rate.map(|r| r as f64 / processes);
            if lane.pacer.as_ref().map(Pacer::rate) != rate {
                lane.pacer = rate.map(Pacer::new);
            }
        }
        Ok(lanes.into_iter().map(|(id, _)| id).collect())
    }

    fn with_lane<T>(&self, endpoint: &str, f: impl FnOnce(&mut LaneState) -> T) -> T {
        let mut lanes = self.lanes.lock().unwrap_or_else(|e| e.into_inner());
        // Looked up before `entry`, which would copy the id on every call (several a request).
        if let Some(lane) = lanes.get_mut(endpoint) {
            return f(lane);
        }
        f(lanes.entry(endpoint.to_owned()).or_default())
    }

    /// One endpoint's lane (see the module's doc); returns how many attempts it made.
    async fn lane(
        &self,
        endpoint: &str,
        until: Until,
        mut wakes: Option<watch::Receiver<()>>,
        cancel: CancellationToken,
    ) -> Result<usize, StoreError> {
        let lease_ms = i64::try_from(self.lease.as_millis()).unwrap_or(i64::MAX);
        let mut queue: VecDeque<DueDelivery> = VecDeque::new();
        // The requests in flight, polled by the lane itself (a task each would cost a spawn
        // and a wake more per request).
        let mut sending: FuturesUnordered<BoxFuture<'_, (AttemptRecord, Option<Duration>)>> =
            FuturesUnordered::new();
        let mut prepared: Option<(Arc<WebhookTarget>, Arc<Prepared>)> = None;
        let mut finished: Vec<AttemptRecord> = Vec::new();
        let mut recording: Option<tokio::task::JoinHandle<()>> = None;
        let mut claiming: Option<Claiming> = None;
        // Claims start at four rounds of the lane's concurrency, and double (up to
        // `MAX_CLAIM`) whenever the lane ran out of deliveries to send before the next claim
        // came back: a fast endpoint is then claimed for in bigger batches, a slow one keeps
        // small ones (what it holds must be sent well within the lease).
        let mut claim_size = 4 * self.per_endpoint;
        // Whether the last claim found nothing: no more are asked for until woken.
        let mut drained = false;
        let mut failed: Option<StoreError> = None;
        let mut attempts = 0;
        loop {
            let now = self.clock.now_ms();
            let (paused_until, rate, failing) = self.with_lane(endpoint, |l| {
                (
                    l.paused_until,
                    l.pacer.as_ref().map(Pacer::rate),
                    l.failed_in_a_row > 0 || l.pauses > 0,
                )
            });
            let paused = paused_until > now;
            // Stopping: what is in flight is finished and recorded; what was not sent yet is
            // given back, due at once (for this process after a restart, or another).
            if cancel.is_cancelled() && !queue.is_empty() {
                let ids: Vec<String> = queue.drain(..).map(|d| d.id).collect();
                if let Err(e) = self
                    .store
                    .release_webhook_deliveries(&self.owner, &ids, now)
                    .await
                {
                    tracing::warn!(error = %e, "could not give back webhook deliveries");
                }
            }
            if paused && !queue.is_empty() {
                // Not sent while the endpoint is paused: given back, due when the pause ends.
                // (If the database cannot take that, their leases run out instead: nothing of
                // them was sent.)
                let ids: Vec<String> = queue.drain(..).map(|d| d.id).collect();
                if let Err(e) = self
                    .store
                    .release_webhook_deliveries(&self.owner, &ids, paused_until)
                    .await
                {
                    tracing::warn!(error = %e, "could not give back webhook deliveries");
                }
            }
            // Claim more when half a claim is left to send (at most two seconds of a rate
            // cap). The claim runs beside the sends: the lane does not stop sending while it
            // waits for the writer (a claim is answered once the commit holding it is on the
            // disk).
            if !paused
                && !drained
                && claiming.is_none()
                && queue.len() < claim_size / 2
                && !cancel.is_cancelled()
            {
                let limit = match rate {
                    Some(r) => ((2.0 * r).ceil() as usize).clamp(1, claim_size),
                    None => claim_size,
                };
                let (this, id) = (self.clone(), endpoint.to_owned());
                claiming = Some(tokio::spawn(async move {
                    let due = this
                        .store
                        .claim_webhook_deliveries(&this.owner, &id, now, lease_ms, limit)
                        .await;
                    (due, limit)
                }));
            }
            // Start what the concurrency and the rate cap allow: one at a time once a request
            // has failed, until one succeeds (an endpoint that went down is not sent a round
            // for every failure, nor after every pause: one request probes it).
            let mut pacing = None;
            let slots = if failing { 1 } else { self.per_endpoint };
            while sending.len() < slots && !paused {
                if queue.is_empty() {
                    break;
                }
                if rate.is_some() {
                    let started = self.with_lane(endpoint, |l| match &mut l.pacer {
                        Some(pacer) => pacer.try_start(tokio::time::Instant::now()),
                        None => Ok(()),
                    });
                    if let Err(at) = started {
                        pacing = Some(at);
                        break;
                    }
                }
                let Some(d) = queue.pop_front() else {
                    break;
                };
                let ready = match &prepared {
                    Some((target, ready)) if Arc::ptr_eq(target, &d.target) => Arc::clone(ready),
                    _ => {
                        let ready = Arc::new(self.prepare(&d.target));
                        prepared = Some((Arc::clone(&d.target), Arc::clone(&ready)));
                        ready
                    }
                };
                sending.push(Box::pin(async move { self.attempt(&d, &ready).await }));
            }
            // Write what finished, one batch at a time.
            if recording
                .as_ref()
                .is_none_or(tokio::task::JoinHandle::is_finished)
                && !finished.is_empty()
            {
                if let Some(done) = recording.take() {
                    let _ = done.await;
                }
                let batch = std::mem::take(&mut finished);
                attempts += batch.len();
                let this = self.clone();
                let write = tokio::spawn(async move { this.record(batch).await });
                if until == Until::Idle {
                    let _ = write.await;
                } else {
                    recording = Some(write);
                }
            }
            let idle =
                sending.is_empty() && finished.is_empty() && queue.is_empty() && claiming.is_none();
            if idle && (cancel.is_cancelled() || (until == Until::Idle && (drained || paused))) {
                break;
            }
            // Wait for the next thing that can move the lane on.
            let pause_left = (paused_until - now).max(0);
            let idle_wait = if paused {
                Duration::from_millis(u64::try_from(pause_left).unwrap_or(u64::MAX))
            } else {
                Duration::from_secs(1)
            };
            tokio::select! {
                claimed = join(&mut claiming), if claiming.is_some() => match claimed {
                    Some((Ok(due), limit)) => {
                        drained = due.len() < limit;
                        let starved = queue.is_empty() && sending.len() < self.per_endpoint;
                        if !drained && starved {
                            claim_size = (claim_size * 2).min(MAX_CLAIM);
                        }
                        queue.extend(due);
                    }
                    // What the lane holds is still sent and recorded; the claim is tried
                    // again after the idle wait (or, stepping, reported once all is written).
                    Some((Err(e), _)) => {
                        tracing::warn!(error = %e, endpoint, "could not claim webhook deliveries");
                        drained = true;
                        failed = Some(e);
                    }
                    None => drained = true,
                },
                Some((record, wait)) = sending.next(), if !sending.is_empty() => {
                    self.metrics.record_webhook_attempt(record.succeeded);
                    self.note(endpoint, &record, wait);
                    finished.push(record);
                }
                () = sleep_until(pacing), if pacing.is_some() => {}
                _ = wait(&mut recording), if recording.is_some() && sending.is_empty() => {}
                _ = changed(&mut wakes), if idle && drained => { drained = false; }
                () = tokio::time::sleep(idle_wait), if idle && (drained || paused) => {
                    drained = false;
                }
                () = cancel.cancelled(), if idle => {}
                else => {}
            }
        }
        if let Some(done) = recording.take() {
            let _ = done.await;
        }
        match failed {
            Some(e) if until == Until::Idle => Err(e),
            _ => Ok(attempts),
        }
    }

    /// Writes finished attempts, with those other lanes finished meanwhile (see
    /// [`Records`]); returns once they are written.
    async fn record(&self, batch: Vec<AttemptRecord>) {
        let (written, mut done) = tokio::sync::oneshot::channel();
        let free = {
            let mut records = self.records.lock().unwrap_or_else(|e| e.into_inner());
            records.waiting.push((batch, written));
            Arc::clone(&records.free)
        };
        loop {
            // Listening before looking: a write that ends in between still wakes this one.
            let ended = free.notified();
            tokio::pin!(ended);
            ended.as_mut().enable();
            let waiting = {
                let mut records = self.records.lock().unwrap_or_else(|e| e.into_inner());
                if records.writing || records.waiting.is_empty() {
                    None
                } else {
                    records.writing = true;
                    Some(std::mem::take(&mut records.waiting))
                }
            };
            if let Some(waiting) = waiting {
                let (batches, acks): (Vec<_>, Vec<_>) = waiting.into_iter().unzip();
                self.write_records(batches.into_iter().flatten().collect())
                    .await;
                for ack in acks {
                    let _ = ack.send(());
                }
                self.records
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .writing = false;
                free.notify_waiters();
            }
            tokio::select! {
                _ = &mut done => return,
                () = &mut ended => {}
            }
        }
    }

    /// Writes finished attempts in one commit. An endpoint's answer is never forgotten: kept
    /// and written again until the database takes it (an outage), or the delivery would be
    /// posted twice.
    async fn write_records(&self, batch: Vec<AttemptRecord>) {
        let n = batch.len();
        let batch: Arc<[AttemptRecord]> = batch.into();
        let mut pause = Duration::from_millis(100);
        loop {
            match self
                .store
                .record_webhook_attempts(&self.owner, Arc::clone(&batch))
                .await
            {
                Ok(applied) => {
                    if applied < n {
                        tracing::warn!(
                            lost = n - applied,
                            "webhook leases expired before their attempts were recorded"
                        );
                    }
                    return;
                }
                Err(e) => {
                    tracing::error!(error = %e, "could not record webhook attempts; they are kept and written again");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// Updates the lane after one request: a success ends a run of failures;
    /// [`FAILURES_TO_PAUSE`] failures with no success between them, or after a pause the one
    /// request that probes the endpoint, pause it on the retry schedule's next step (the
    /// requests still in flight when it paused are not counted again); `Retry-After` on
    /// 429/503 pauses it that long.
    fn note(&self, endpoint: &str, r: &AttemptRecord, retry_after: Option<Duration>) {
        let schedule = &self.schedule;
        let now = self.clock.now_ms();
        self.with_lane(endpoint, |l| {
            if r.succeeded {
                l.failed_in_a_row = 0;
                l.pauses = 0;
                return;
            }
            if let (Some(429 | 503), Some(wait)) = (r.status_code, retry_after) {
                let ms = i64::try_from(wait.as_millis()).unwrap_or(i64::MAX);
                l.paused_until = l.paused_until.max(r.attempted_at.saturating_add(ms));
                return;
            }
            if r.attempted_at < l.paused_at {
                // Of the round that paused the lane: its failure is counted already.
                return;
            }
            l.failed_in_a_row += 1;
            if l.failed_in_a_row >= FAILURES_TO_PAUSE || l.pauses > 0 {
                l.failed_in_a_row = 0;
                l.paused_at = now.saturating_add(1);
                let step = schedule
                    .get(l.pauses.min(schedule.len().saturating_sub(1)))
                    .copied()
                    .unwrap_or(Duration::from_secs(5));
                l.pauses += 1;
                let ms = i64::try_from(step.as_millis()).unwrap_or(i64::MAX);
                l.paused_until = l.paused_until.max(r.attempted_at.saturating_add(ms));
            }
        });
    }

    /// The request body: the event, with the email it is about echoed.
    pub fn payload(d: &DueDelivery) -> Payload<'_> {
        // Tags and metadata are echoed as stored (JSON Herald wrote), checked, not rebuilt.
        let parse = |s| serde_json::from_str::<&RawValue>(s).unwrap_or(RawValue::NULL);
        let email = d.email.as_ref().map(|m| EmailEcho {
            email_id: &m.id,
            message_id: &m.message_id,
            recipient: d.recipient.as_deref(),
            stream: &m.stream,
            from: match &m.from_name {
                Some(name) => format!("{name} <{}>", m.from_email),
                None => m.from_email.clone(),
            },
            subject: &m.subject,
            tags: parse(&m.tags),
            metadata: parse(&m.metadata),
            created_at: format_ms(m.created_at),
        });
        let event = match serde_json::from_str::<Value>(&d.event_data) {
            Ok(Value::Object(fields)) => fields,
            _ => serde_json::Map::new(),
        };
        Payload {
            event_type: d.event_type,
            timestamp: format_ms(d.event_created_at),
            data: PayloadData { email, event },
        }
    }

    /// Posts one delivery; the attempt, and the `Retry-After` a 429 or 503 asked for.
    async fn attempt(
        &self,
        d: &DueDelivery,
        ready: &Prepared,
    ) -> (AttemptRecord, Option<Duration>) {
        let now = self.clock.now_ms();
        let attempt = d.attempts + 1;
        let mut record = AttemptRecord {
            delivery_id: d.id.clone(),
            endpoint_id: d.target.endpoint_id.clone(),
            event_id: d.event_id.clone(),
            attempt,
            succeeded: false,
            status_code: None,
            response_body: None,
            error: None,
            duration_ms: 0,
            attempted_at: now,
            next_attempt_at: None,
            disable_endpoint: None,
        };
        let keys = match ready.keys(now) {
            Ok(k) => k,
            Err(e) => {
                record.error = Some(e);
                return (self.schedule_retry(record, None), None);
            }
        };
        let url = match &ready.url {
            Ok(url) => url.clone(),
            Err(e) => {
                record.error = Some(e.clone());
                return (self.schedule_retry(record, None), None);
            }
        };
        let body = serde_json::to_vec(&Self::payload(d)).unwrap_or_default();
        let timestamp = now.div_euclid(1000);
        let refs: Vec<&SigningKey> = keys.iter().map(|k| &**k).collect();
        let started = Instant::now();
        let sent = self
            .client
            .post(url)
            .header("content-type", "application/json")
            .header("webhook-id", &d.event_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header(
                "webhook-signature",
                signature_header(&refs, &d.event_id, timestamp, &body),
            )
            .body(body)
            .send()
            .await;
        match sent {
            Ok(mut resp) => {
                let status = resp.status();
                let retry_after = resp
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(|s| Duration::from_secs(s.min(86_400)));
                let mut kept = Vec::new();
                while kept.len() < RESPONSE_KEEP {
                    match resp.chunk().await {
                        Ok(Some(chunk)) => kept.extend_from_slice(&chunk),
                        _ => break,
                    }
                }
                kept.truncate(RESPONSE_KEEP);
                record.duration_ms =
                    i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
                record.status_code = Some(i64::from(status.as_u16()));
                record.response_body = Some(String::from_utf8_lossy(&kept).into_owned());
                if status.is_success() {
                    record.succeeded = true;
                    (record, None)
                } else if status.as_u16() == 410 {
                    record.disable_endpoint = Some("the endpoint answered 410 Gone".into());
                    (record, None)
                } else {
                    let throttled = matches!(status.as_u16(), 429 | 502 | 503 | 504);
                    let wait = retry_after.filter(|_| throttled);
                    (self.schedule_retry(record, wait), wait)
                }
            }
            Err(e) => {
                record.duration_ms =
                    i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
                record.error = Some(describe(&e));
                (self.schedule_retry(record, None), None)
            }
        }
    }

    /// Makes an endpoint's requests ready: its URL checked and parsed, its secrets opened
    /// (each sealed secret once, kept).
    fn prepare(&self, t: &WebhookTarget) -> Prepared {
        let url = if !self.allow_private_targets && literal_ip_is_forbidden(&t.url) {
            Err("refused: the URL points at a private or reserved address".to_owned())
        } else {
            reqwest::Url::parse(&t.url).map_err(|e| format!("the URL is not valid: {e}"))
        };
        Prepared {
            url,
            current: self.open(&t.secret),
            previous: match (&t.previous_secret, t.previous_secret_expires_at) {
                (Some(sealed), Some(until)) => Some((self.open(sealed), until)),
                _ => None,
            },
        }
    }

    /// The signing key of a sealed secret, opened once and kept.
    fn open(&self, sealed: &str) -> Result<Arc<SigningKey>, String> {
        let mut kept = self.secrets.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(k) = kept.get(sealed) {
            return Ok(Arc::clone(k));
        }
        let secret = self
            .sealer
            .open(sealed)
            .map_err(|e| format!("endpoint secret: {e}"))?;
        let key = SigningKey::new(&secret)
            .ok_or_else(|| "endpoint secret: not a whsec_ secret".to_owned())?;
        let key = Arc::new(key);
        if kept.len() >= KEPT_SECRETS {
            kept.clear();
        }
        kept.insert(sealed.to_owned(), Arc::clone(&key));
        Ok(key)
    }

    /// Sets the next attempt from the schedule (or `Retry-After`, if later), or gives up and
    /// disables the endpoint when the schedule is spent.
    fn schedule_retry(
        &self,
        mut record: AttemptRecord,
        retry_after: Option<Duration>,
    ) -> AttemptRecord {
        let index = usize::try_from(record.attempt - 1).unwrap_or(usize::MAX);
        match self.schedule.get(index) {
            Some(base) => {
                let unit: f64 = rand::random();
                let spread = base.as_secs_f64() * self.jitter.clamp(0.0, 1.0) * (unit * 2.0 - 1.0);
                let delay = Duration::from_secs_f64((base.as_secs_f64() + spread).max(0.0));
                let delay = retry_after.map_or(delay, |r| r.max(delay));
                let ms = i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
                record.next_attempt_at = Some(record.attempted_at.saturating_add(ms));
            }
            None => {
                record.disable_endpoint = Some(format!(
                    "a delivery failed {} times, past the retry schedule",
                    record.attempt
                ));
            }
        }
        record
    }
}

fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "request failed"
    };
    let mut msg = kind.to_owned();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}

/// A webhook's body: Standard Webhooks' `type`, `timestamp` and `data`.
#[derive(Debug, serde::Serialize)]
pub struct Payload<'a> {
    #[serde(rename = "type")]
    pub event_type: crate::domain::event::EventType,
    pub timestamp: String,
    pub data: PayloadData<'a>,
}

/// The event's data, after the email it is about (for an event about an email).
#[derive(Debug, serde::Serialize)]
pub struct PayloadData<'a> {
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub email: Option<EmailEcho<'a>>,
    /// The event's own data, as stored (`domain::event::EventData`).
    #[serde(flatten)]
    pub event: serde_json::Map<String, Value>,
}

/// The email an event is about, as webhooks echo it.
#[derive(Debug, serde::Serialize)]
pub struct EmailEcho<'a> {
    pub email_id: &'a str,
    pub message_id: &'a str,
    pub recipient: Option<&'a str>,
    pub stream: &'a str,
    pub from: String,
    pub subject: &'a str,
    pub tags: &'a RawValue,
    pub metadata: &'a RawValue,
    pub created_at: String,
}

/// A lane's claim under way: the deliveries (or why not), and how many it asked for.
type Claiming = tokio::task::JoinHandle<(Result<Vec<DueDelivery>, StoreError>, usize)>;

/// The lane's claim under way, once it ends (`None`: its task failed).
async fn join(
    claiming: &mut Option<Claiming>,
) -> Option<(Result<Vec<DueDelivery>, StoreError>, usize)> {
    let done = match claiming.as_mut() {
        Some(task) => task.await.ok(),
        None => std::future::pending().await,
    };
    *claiming = None;
    done
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Waits for the lane's batch being written (if any) to be written.
async fn wait(recording: &mut Option<tokio::task::JoinHandle<()>>) {
    if let Some(task) = recording.as_mut() {
        let _ = task.await;
    }
    *recording = None;
}

/// Waits for new events to be announced (never, for a lane without announcements).
async fn changed(wakes: &mut Option<watch::Receiver<()>>) {
    match wakes.as_mut() {
        Some(w) => {
            if w.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending().await,
    }
}
