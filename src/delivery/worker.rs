//! The delivery worker: claim due recipients, relay each, record every outcome.
//!
//! [`Worker::run_once`] is one step (claim → send → record) so tests can drain the queue
//! deterministically; [`Worker::run`] loops over it, woken by new mail or by a poll timer.
//! No database transaction is open while SMTP traffic is in flight: the claim commits
//! first, the outcomes commit after.
//!
//! The only window for a duplicate is a crash between the relay's 250 and the commit of
//! `sent` (a few milliseconds): the lease then expires and the recipient is sent again. We
//! prefer a rare duplicate to a loss.
//!
//! A relay's answer is never forgotten while the process lives: an outcome the database does
//! not take (an outage, a full disk) is kept and written again, with back-off, until it is;
//! the sends in flight are never cut short; and the step does not end, so no new claim is
//! made, until every outcome is written.
//!
//! Leases belong to the process (all its workers share one owner), and the process knows
//! exactly which recipients it holds ([`InHand`]): a recipient claimed again after its lease
//! ran out (a database outage longer than the lease) is not sent again while another worker
//! of the process is sending it, and its kept verdict is written instead of a second send.
//! Each worker renews the leases of the recipients it is sending; when renewals have failed
//! for nearly a lease, it starts no new transaction, since another process may take those
//! recipients once their leases run out.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::clock::{Clock, format_ms};
use crate::domain::bounce::{
    BounceClass, BounceSubType, BounceType, SmtpPhase, SmtpReply, classify,
};
use crate::domain::event::{BounceData, EventData, EventType, FailureData, SmtpData};
use crate::domain::retry::RetryPolicy;
use crate::domain::status::RecipientStatus;
use crate::domain::suppression::{SuppressionReason, bounce_suppresses};
use crate::domain::verp::VerpSigner;
use crate::metrics::Metrics;
use crate::store::{ClaimedEmail, NewEvent, Outcome, Store, StoreError, SuppressionRecord};

use super::mailer::{Mailer, Verdict};

pub use crate::job_loop::RunOutcome;

/// Everything a worker needs; cheap to clone (one per worker loop, each its own lease owner).
#[derive(Clone)]
pub struct Worker {
    pub store: Store,
    pub mailer: Arc<Mailer>,
    pub clock: Arc<dyn Clock>,
    pub verp: VerpSigner,
    pub bounce_domain: String,
    pub retry: RetryPolicy,
    /// Fences this process's writes: only the lease owner may record an outcome.
    pub owner: String,
    pub batch_size: usize,
    pub lease: Duration,
    /// Told when outcomes (and so events) are committed, to wake the webhook dispatcher.
    pub events_wake: Arc<Notify>,
    pub metrics: Arc<Metrics>,
    /// The recipients this process holds, with the verdicts the database has not taken yet.
    pub in_hand: Arc<InHand>,
    /// Cancelled at shutdown: transactions not started yet are not started (their leases are
    /// given back); those under way finish and are recorded.
    pub stopping: CancellationToken,
}

/// The recipients a process's workers hold, by id: each being sent (`None`) or with a verdict
/// the database has not taken yet (`Some`).
#[derive(Debug, Default)]
pub struct InHand(std::sync::Mutex<std::collections::HashMap<String, Option<Outcome>>>);

/// What a claimed recipient is to the worker that claimed it.
enum Held {
    /// Its own now: send it.
    Mine,
    /// Sent by this process already; the verdict to write instead.
    Kept(Box<Outcome>),
    /// Another worker of this process is sending it; that worker records it.
    Elsewhere,
}

impl InHand {
    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, Option<Outcome>>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn hold(&self, recipient_id: &str) -> Held {
        let mut m = self.lock();
        match m.get_mut(recipient_id) {
            None => {
                m.insert(recipient_id.to_owned(), None);
                Held::Mine
            }
            Some(slot) => slot
                .take()
                .map_or(Held::Elsewhere, |o| Held::Kept(Box::new(o))),
        }
    }

    fn keep(&self, outcomes: &[Outcome]) {
        let mut m = self.lock();
        for o in outcomes {
            m.insert(o.recipient_id.clone(), Some(o.clone()));
        }
    }

    fn release<'a>(&self, ids: impl IntoIterator<Item = &'a str>) {
        let mut m = self.lock();
        for id in ids {
            m.remove(id);
        }
    }

    /// Verdicts the database has not taken yet.
    pub fn unrecorded(&self) -> usize {
        self.lock().values().filter(|v| v.is_some()).count()
    }
}

impl Worker {
    /// Claims one batch of due recipients, relays them concurrently (the mailer caps how
    /// many at once), and records the outcomes in one transaction.
    pub async fn run_once(&self) -> Result<RunOutcome, StoreError> {
        let now = self.clock.now_ms();
        let lease_ms = i64::try_from(self.lease.as_millis()).unwrap_or(i64::MAX);
        let claimed = self
            .store
            .claim_due_recipients(&self.owner, now, lease_ms, self.batch_size)
            .await?;
        if claimed.is_empty() {
            return Ok(RunOutcome::Idle);
        }
        let mut tasks = JoinSet::new();
        let mut outcomes = Vec::new();
        // The recipients being sent (their leases renewed), and a stop for new transactions
        // once the leases may have run out.
        let mut sending = Sending::default();
        let halt = self.stopping.child_token();
        for email in claimed {
            let message: Arc<[u8]> = Arc::from(email.mime.as_slice());
            for r in &email.recipients {
                match self.in_hand.hold(&r.id) {
                    Held::Mine => {}
                    // A verdict this process saw and could not write yet: written now, not sent.
                    Held::Kept(kept) => {
                        outcomes.push(*kept);
                        continue;
                    }
                    Held::Elsewhere => continue,
                }
                let deadline = email
                    .expires_at
                    .map_or(r.deadline_at, |e| e.min(r.deadline_at));
                if now > deadline {
                    outcomes.push(self.expired_before_attempt(
                        &email,
                        r.id.clone(),
                        &r.address,
                        r.attempts,
                    ));
                    continue;
                }
                let Ok(rid) = Uuid::parse_str(&r.id) else {
                    tracing::error!(recipient_id = %r.id, "recipient id is not a UUID; skipping");
                    self.in_hand.release([r.id.as_str()]);
                    continue;
                };
                let mail_from = self.verp.return_path(rid, &self.bounce_domain);
                let mailer = Arc::clone(&self.mailer);
                let message = Arc::clone(&message);
                let name = format!("{}-{}", email.id, r.id);
                let ctx = Attempt {
                    email_id: email.id.clone(),
                    project_id: email.project_id.clone(),
                    stream: email.stream.clone(),
                    recipient_id: r.id.clone(),
                    address: r.address.clone(),
                    attempt: r.attempts + 1,
                    deadline,
                };
                let metrics = Arc::clone(&self.metrics);
                let stopping = halt.clone();
                let recipient_id = r.id.clone();
                let task = tasks.spawn(async move {
                    let started = std::time::Instant::now();
                    let verdict = mailer
                        .deliver(&mail_from, &ctx.address, &message, &name, &stopping)
                        .await;
                    let Some(verdict) = verdict else {
                        return (ctx, None);
                    };
                    metrics.observe_smtp(started.elapsed());
                    if matches!(
                        verdict,
                        Verdict::Deferred {
                            phase: SmtpPhase::Connect,
                            ..
                        }
                    ) {
                        metrics
                            .relay_connection_errors
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    (ctx, Some(verdict))
                });
                sending.insert(task.id(), recipient_id);
            }
        }
        let attempted = tasks.len() + outcomes.len();
        // Outcomes are committed as soon as they are known, in groups of whatever finished
        // together, so the window between a relay's 250 and the commit of `sent` (the only
        // place a crash can cause a duplicate) stays a few milliseconds wide.
        self.record(&mut outcomes).await;
        // While deliveries are in flight their leases are renewed, so a slow relay never
        // makes a live worker lose its recipients, and a dead process's leases run out quickly.
        let every = (self.lease / 3).max(Duration::from_millis(100));
        let every_ms = i64::try_from(every.as_millis()).unwrap_or(i64::MAX);
        let mut renew = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        // A renewal that waited on a dead database is not made up for by a burst of them: each
        // would hold the loop again while finished sends wait to be recorded.
        renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut leased_until = now + lease_ms;
        loop {
            tokio::select! {
                joined = tasks.join_next_with_id() => {
                    let Some(joined) = joined else { break };
                    self.collect(joined, &mut outcomes, &mut sending);
                    while let Some(more) = tasks.try_join_next_with_id() {
                        self.collect(more, &mut outcomes, &mut sending);
                    }
                    self.record(&mut outcomes).await;
                }
                _ = renew.tick() => {
                    let now = self.clock.now_ms();
                    let ids: Vec<&str> = sending.values().map(String::as_str).collect();
                    // Bounded, like every wait here: a database that does not answer fails the
                    // renewal, it does not hold the sends' results.
                    let renewal = self.store.renew_leases(&self.owner, &ids, now + lease_ms);
                    match tokio::time::timeout(every, renewal).await {
                        Ok(Ok(_)) => leased_until = now + lease_ms,
                        Ok(Err(e)) => {
                            tracing::warn!(error = %e, "could not renew leases; the sends in flight go on");
                        }
                        Err(_) => {
                            tracing::warn!("lease renewal timed out; the sends in flight go on");
                        }
                    }
                    // The leases run out before the next renewal: another process may take
                    // these recipients then, so none of them starts here any more.
                    if now + every_ms >= leased_until && !halt.is_cancelled() {
                        tracing::warn!("leases not renewed for most of their length; starting no new sends in this step");
                        halt.cancel();
                    }
                }
            }
        }
        // Every send has answered; what the database has not taken yet is written before
        // anything new is claimed.
        let mut pause = Duration::from_millis(100);
        while !outcomes.is_empty() {
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(5));
            self.record(&mut outcomes).await;
        }
        Ok(RunOutcome::Worked(attempted))
    }

    fn collect(
        &self,
        joined: Result<(tokio::task::Id, (Attempt, Option<Verdict>)), tokio::task::JoinError>,
        outcomes: &mut Vec<Outcome>,
        sending: &mut Sending,
    ) {
        match joined {
            Ok((task, (ctx, verdict))) => {
                sending.remove(&task);
                match verdict {
                    // Not started (shutting down, or the lease may have run out): no longer
                    // held; its lease, no longer renewed, runs out (or is given back at
                    // shutdown).
                    None => self.in_hand.release([ctx.recipient_id.as_str()]),
                    Some(verdict) => {
                        let o = self.outcome(&ctx, verdict);
                        self.metrics.record_outcome(o.status.as_str());
                        outcomes.push(o);
                    }
                }
            }
            // A panicking send: its recipient is let go, and comes due again when its lease
            // (no longer renewed) runs out.
            Err(e) => {
                tracing::error!(error = %e, "a delivery task failed");
                if let Some(id) = sending.remove(&e.id()) {
                    self.in_hand.release([id.as_str()]);
                }
            }
        }
    }

    /// Writes the outcomes; on success `outcomes` is emptied, on failure they stay (and are
    /// kept in the process's registry) to be written again.
    async fn record(&self, outcomes: &mut Vec<Outcome>) {
        if outcomes.is_empty() {
            return;
        }
        let written = outcomes.len();
        // A copy goes to the writer: the originals are what is kept if it fails.
        match self
            .store
            .record_outcomes(&self.owner, outcomes.clone())
            .await
        {
            Ok(recorded) => {
                self.in_hand
                    .release(outcomes.iter().map(|o| o.recipient_id.as_str()));
                outcomes.clear();
                if recorded.announced > 0 {
                    self.events_wake.notify_waiters();
                }
                if recorded.applied < written {
                    tracing::warn!(
                        lost = written - recorded.applied,
                        "leases expired before outcomes were recorded; those recipients were retried elsewhere"
                    );
                }
            }
            Err(e) => {
                self.in_hand.keep(outcomes);
                tracing::error!(error = %e, pending = written, "could not record delivery outcomes; they are kept and written again");
            }
        }
    }

    /// Loops until `cancel`: runs steps while there is work, then sleeps until new mail is
    /// announced on `wake` or `poll` passes.
    pub async fn run(self, wake: Arc<Notify>, cancel: CancellationToken, poll: Duration) {
        crate::job_loop::run_until_cancelled("delivery", wake, cancel, poll, || self.run_once())
            .await;
    }

    fn outcome(&self, ctx: &Attempt, verdict: Verdict) -> Outcome {
        let now = self.clock.now_ms();
        let remote_mta = self.mailer.remote_mta();
        let smtp = |reply: &SmtpReply, tls: Option<bool>| SmtpData {
            code: Some(reply.code),
            enhanced_status: reply.enhanced_status.clone(),
            response: Some(reply.response.clone()),
            remote_mta: Some(remote_mta.clone()),
            tls,
            attempt: Some(ctx.attempt),
        };
        let bounced = |reply: SmtpReply, phase: SmtpPhase, class: BounceClass| {
            let suppress = bounce_suppresses(&class).then(|| {
                let mut s = SuppressionRecord::new(
                    &ctx.project_id,
                    &ctx.address,
                    "",
                    SuppressionReason::HardBounce.as_str(),
                    now,
                );
                s.source_email_id = Some(ctx.email_id.clone());
                s.details = Some(reply.response.clone());
                s
            });
            let data = EventData::Bounced {
                bounce: BounceData {
                    kind: class.kind,
                    sub_type: class.sub_type,
                    phase,
                    smtp_code: Some(reply.code),
                    enhanced_status: reply.enhanced_status.clone(),
                    diagnostic: Some(reply.response.clone()),
                    remote_mta: Some(remote_mta.clone()),
                    reporting_mta: None,
                    suppressed: suppress.is_some(),
                },
                attempt: Some(ctx.attempt),
            };
            let mut o = ctx
                .outcome(RecipientStatus::Bounced, now)
                .reply(&reply, phase)
                .bounce(class)
                .event(data);
            o.suppress = suppress;
            o
        };
        match verdict {
            Verdict::Accepted { reply, tls } => {
                let data = EventData::Reply {
                    smtp: smtp(&reply, Some(tls)),
                    reporting_mta: None,
                };
                let mut o = ctx
                    .outcome(RecipientStatus::Sent, now)
                    .reply(&reply, SmtpPhase::Data);
                o.sent_at = Some(now);
                o.event(data)
            }
            Verdict::Rejected { reply, phase } => {
                let class = classify(&reply);
                bounced(reply, phase, class)
            }
            Verdict::Deferred {
                reply,
                phase,
                detail,
            } => {
                let attempt = u32::try_from(ctx.attempt).unwrap_or(u32::MAX);
                let unit: f64 = rand::random();
                match (
                    self.retry.next_attempt_at(now, attempt, unit, ctx.deadline),
                    reply,
                ) {
                    (Some(next), reply) => {
                        let data = EventData::Delayed {
                            smtp: reply.as_ref().map(|r| smtp(r, None)),
                            phase,
                            reason: Some(detail),
                            attempt: Some(ctx.attempt),
                            next_attempt_at: Some(format_ms(next)),
                            reporting_mta: None,
                        };
                        let mut o = ctx.outcome(RecipientStatus::DeliveryDelayed, now);
                        o = match &reply {
                            Some(r) => o.reply(r, phase),
                            None => o.phase(phase),
                        };
                        o.next_attempt_at = next;
                        o.event(data)
                    }
                    // Out of time. A relay that kept answering 4xx is a (transient) bounce;
                    // a relay that never answered is Herald's failure to deliver.
                    (None, Some(reply)) => {
                        let class = BounceClass {
                            kind: BounceType::Transient,
                            sub_type: BounceSubType::Expired,
                        };
                        bounced(reply, phase, class)
                    }
                    (None, None) => {
                        let data = EventData::Failed {
                            failure: FailureData {
                                reason: "expired",
                                detail,
                            },
                            attempt: ctx.attempt,
                        };
                        ctx.outcome(RecipientStatus::Failed, now)
                            .phase(phase)
                            .event(data)
                    }
                }
            }
        }
    }

    fn expired_before_attempt(
        &self,
        email: &ClaimedEmail,
        recipient_id: String,
        address: &str,
        attempts: i64,
    ) -> Outcome {
        let now = self.clock.now_ms();
        let ctx = Attempt {
            email_id: email.id.clone(),
            project_id: email.project_id.clone(),
            stream: email.stream.clone(),
            recipient_id,
            address: address.to_owned(),
            attempt: attempts,
            deadline: now,
        };
        let data = EventData::Failed {
            failure: FailureData {
                reason: "expired",
                detail: "the email expired before it could be delivered".to_owned(),
            },
            attempt: attempts,
        };
        let mut o = ctx.outcome(RecipientStatus::Failed, now);
        // Not an attempt: the attempt count stays as it was.
        o.attempts_delta = 0;
        o.event(data)
    }
}

/// The sends of one step still under way: their recipients, by task.
type Sending = std::collections::HashMap<tokio::task::Id, String>;

/// One recipient's attempt, carried from the claim to its outcome.
struct Attempt {
    email_id: String,
    project_id: String,
    stream: String,
    recipient_id: String,
    address: String,
    /// 1-based number of this attempt.
    attempt: i64,
    deadline: i64,
}

impl Attempt {
    /// An outcome moving this recipient to `status` at `now`; the builder methods below add
    /// the reply, the bounce class and, last, the event's data.
    fn outcome(&self, status: RecipientStatus, now: i64) -> Outcome {
        Outcome {
            recipient_id: self.recipient_id.clone(),
            email_id: self.email_id.clone(),
            project_id: self.project_id.clone(),
            stream: self.stream.clone(),
            status,
            next_attempt_at: now,
            attempts_delta: 1,
            smtp_code: None,
            smtp_enhanced: None,
            smtp_response: None,
            smtp_phase: None,
            bounce_type: None,
            bounce_sub_type: None,
            sent_at: None,
            suppress: None,
            event: NewEvent::new(
                Some(&self.recipient_id),
                Some(&self.address),
                EventType::for_status(status),
                EventData::Empty {},
                now,
            ),
        }
    }
}

/// Builder steps for the outcome of an attempt.
trait OutcomeExt {
    fn reply(self, reply: &SmtpReply, phase: SmtpPhase) -> Self;
    fn phase(self, phase: SmtpPhase) -> Self;
    fn bounce(self, class: BounceClass) -> Self;
    fn event(self, data: EventData) -> Self;
}

impl OutcomeExt for Outcome {
    fn reply(mut self, reply: &SmtpReply, phase: SmtpPhase) -> Self {
        self.smtp_code = Some(i64::from(reply.code));
        self.smtp_enhanced.clone_from(&reply.enhanced_status);
        self.smtp_response = Some(reply.response.clone());
        self.phase(phase)
    }

    fn phase(mut self, phase: SmtpPhase) -> Self {
        self.smtp_phase = Some(phase.as_str().to_owned());
        self
    }

    fn bounce(mut self, class: BounceClass) -> Self {
        self.bounce_type = Some(class.kind.as_str().to_owned());
        self.bounce_sub_type = Some(class.sub_type.as_str().to_owned());
        self
    }

    fn event(mut self, data: EventData) -> Self {
        let event_type = self.event.event_type;
        self.event.become_(event_type, data);
        self
    }
}
