//! The webhook dispatcher: claim due deliveries, POST them signed, record every attempt.
//!
//! Each request carries `webhook-id` (the event id: the same on every retry and on manual
//! redelivery, so consumers can deduplicate), `webhook-timestamp` (the attempt's time) and
//! `webhook-signature` (one `v1,` signature per live secret). 2xx is success; 410 disables the
//! endpoint; anything else, or no answer, is retried on the schedule (honouring `Retry-After`
//! on 429/502/503/504) and, once the schedule is spent, the endpoint is disabled.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::clock::{Clock, format_ms};
use crate::domain::sealing::Sealer;
use crate::job_loop::RunOutcome;
use crate::metrics::Metrics;
use crate::store::{AttemptRecord, DueDelivery, Store, StoreError};

use super::client::literal_ip_is_forbidden;
use super::signing::signature_header;

/// How much of a response body the attempt log keeps.
const RESPONSE_KEEP: usize = 1024;

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
    pub batch_size: usize,
    pub lease: Duration,
    pub per_endpoint: usize,
    pub metrics: Arc<Metrics>,
    endpoint_permits: Arc<Mutex<HashMap<String, Arc<Semaphore>>>>,
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
            batch_size: 64,
            lease: Duration::from_secs(120),
            per_endpoint: per_endpoint.max(1),
            metrics: Arc::default(),
            endpoint_permits: Arc::default(),
        }
    }

    fn permits_for(&self, endpoint_id: &str) -> Arc<Semaphore> {
        let mut map = self
            .endpoint_permits
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        Arc::clone(
            map.entry(endpoint_id.to_owned())
                .or_insert_with(|| Arc::new(Semaphore::new(self.per_endpoint))),
        )
    }

    /// Claims one batch of due deliveries and attempts each (at most `per_endpoint` at once
    /// per endpoint); every attempt is recorded as it finishes.
    pub async fn run_once(&self) -> Result<RunOutcome, StoreError> {
        let now = self.clock.now_ms();
        let lease_ms = i64::try_from(self.lease.as_millis()).unwrap_or(i64::MAX);
        let due = self
            .store
            .claim_webhook_deliveries(&self.owner, now, lease_ms, self.batch_size)
            .await?;
        if due.is_empty() {
            return Ok(RunOutcome::Idle);
        }
        let n = due.len();
        let mut tasks = JoinSet::new();
        for d in due {
            let this = self.clone();
            tasks.spawn(async move {
                let permits = this.permits_for(&d.endpoint_id);
                let _permit = permits.acquire_owned().await;
                let record = this.attempt(&d).await;
                this.metrics.record_webhook_attempt(record.succeeded);
                // An endpoint's answer is never forgotten: kept and written again until the
                // database takes it (an outage), or the delivery would be posted twice.
                let mut pause = Duration::from_millis(100);
                loop {
                    match this.store.record_webhook_attempt(&this.owner, &record).await {
                        Ok(applied) => break applied,
                        Err(e) => {
                            tracing::error!(error = %e, "could not record a webhook attempt; it is kept and written again");
                            tokio::time::sleep(pause).await;
                            pause = (pause * 2).min(Duration::from_secs(5));
                        }
                    }
                }
            });
        }
        // Every post finishes and is recorded: none is cut short by another's failure.
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok(true) => {}
                Ok(false) => {
                    tracing::warn!("a webhook lease expired before its attempt was recorded")
                }
                Err(e) => tracing::error!(error = %e, "a webhook task failed"),
            }
        }
        Ok(RunOutcome::Worked(n))
    }

    /// Loops until `cancel`, woken by new events or the poll timer.
    pub async fn run(self, wake: Arc<Notify>, cancel: CancellationToken, poll: Duration) {
        crate::job_loop::run_until_cancelled("webhooks", wake, cancel, poll, || self.run_once())
            .await;
    }

    /// The request body: the event, with the email it is about echoed.
    pub fn payload(d: &DueDelivery) -> Value {
        let mut data = serde_json::Map::new();
        if let Some(m) = &d.email {
            let from = match &m.from_name {
                Some(name) => format!("{name} <{}>", m.from_email),
                None => m.from_email.clone(),
            };
            let parse = |s: &str| serde_json::from_str::<Value>(s).unwrap_or(Value::Null);
            data.insert("email_id".into(), json!(m.id));
            data.insert("message_id".into(), json!(m.message_id));
            data.insert("recipient".into(), json!(d.recipient));
            data.insert("stream".into(), json!(m.stream));
            data.insert("from".into(), json!(from));
            data.insert("subject".into(), json!(m.subject));
            data.insert("tags".into(), parse(&m.tags));
            data.insert("metadata".into(), parse(&m.metadata));
            data.insert("created_at".into(), json!(format_ms(m.created_at)));
        }
        if let Ok(Value::Object(extra)) = serde_json::from_str::<Value>(&d.event_data) {
            data.extend(extra);
        }
        json!({
            "type": d.event_type,
            "timestamp": format_ms(d.event_created_at),
            "data": data,
        })
    }

    async fn attempt(&self, d: &DueDelivery) -> AttemptRecord {
        let now = self.clock.now_ms();
        let attempt = d.attempts + 1;
        let mut record = AttemptRecord {
            delivery_id: d.id.clone(),
            endpoint_id: d.endpoint_id.clone(),
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
        let secrets = match self.secrets(d, now) {
            Ok(s) => s,
            Err(e) => {
                record.error = Some(e);
                return self.schedule_retry(record, None);
            }
        };
        if !self.allow_private_targets && literal_ip_is_forbidden(&d.url) {
            record.error = Some("refused: the URL points at a private or reserved address".into());
            return self.schedule_retry(record, None);
        }
        let body = serde_json::to_vec(&Self::payload(d)).unwrap_or_default();
        let timestamp = now.div_euclid(1000);
        let refs: Vec<&str> = secrets.iter().map(String::as_str).collect();
        let started = Instant::now();
        let sent = self
            .client
            .post(&d.url)
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
                    record
                } else if status.as_u16() == 410 {
                    record.disable_endpoint = Some("the endpoint answered 410 Gone".into());
                    record
                } else {
                    let throttled = matches!(status.as_u16(), 429 | 502 | 503 | 504);
                    self.schedule_retry(record, retry_after.filter(|_| throttled))
                }
            }
            Err(e) => {
                record.duration_ms =
                    i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
                record.error = Some(describe(&e));
                self.schedule_retry(record, None)
            }
        }
    }

    fn secrets(&self, d: &DueDelivery, now: i64) -> Result<Vec<String>, String> {
        let open = |s: &str| {
            self.sealer
                .open(s)
                .map_err(|e| format!("endpoint secret: {e}"))
        };
        let mut out = vec![open(&d.secret)?];
        if let (Some(prev), Some(until)) = (&d.previous_secret, d.previous_secret_expires_at)
            && until > now
        {
            out.push(open(prev)?);
        }
        Ok(out)
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
