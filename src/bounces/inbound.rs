//! Processing an inbound report: keep it, read it, correlate it with the recipient its signed
//! VERP token names, and record what it says.
//!
//! - failed → `bounced` (phase `async_dsn`), and a permanent "no such mailbox" adds a global
//!   suppression;
//! - delayed → a `delivery_delayed` event, the status unchanged (the relay still tries);
//! - delivered/relayed → `delivered`;
//! - an ARF complaint → `complained`, and a suppression for the email's stream.
//!
//! Only evidence Herald signed changes state: a report must carry a valid VERP token, in its
//! envelope recipient or anywhere in its text (the return path quoted in a DSN, the
//! `Return-Path` of the original an ARF report returns). A report that names an email only by
//! its `Message-ID` is kept as `unmatched` and changes nothing: every recipient of an email can
//! read its `Message-ID`, so it would let one recipient bounce or suppress another; the token
//! is per recipient and signed.
//!
//! Reading a message is isolated: whatever fails in it, a panic included, the message stays
//! kept with status `parse_error` and the reason (or `received`, to be read again, when the
//! database failed), and the sender still gets its answer. Every effect is recorded against the
//! message that caused it, so reading a message again changes nothing twice.

use std::sync::Arc;

use serde::Serialize;
use serde_json::json;
use tokio::sync::Notify;
use uuid::Uuid;

use crate::clock::Clock;
use crate::domain::bounce::{BounceClass, BounceType, SmtpPhase};
use crate::domain::event::{BounceData, ComplaintData, EventData, EventType, SmtpData};
use crate::domain::status::RecipientStatus;
use crate::domain::suppression::{SuppressionReason, bounce_suppresses};
use crate::domain::verp::VerpSigner;
use crate::metrics::Metrics;
use crate::store::{
    KeptInbound, NewEvent, RecipientRef, ReportEffect, Store, StoreError, SuppressionRecord,
};

use super::report::{Action, Report, ReportKind, ReportRecipient, first_reply_code, parse_report};

/// How many distinct signed tokens one message may name (a real report names one).
const MAX_TOKENS: usize = 8;

#[derive(Clone)]
pub struct InboundProcessor {
    pub store: Store,
    pub clock: Arc<dyn Clock>,
    pub verp: VerpSigner,
    pub bounce_domain: String,
    pub events_wake: Arc<Notify>,
    pub metrics: Arc<Metrics>,
}

/// Where a kept message stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum InboundStatus {
    /// Kept, not read yet (or its reading could not be recorded: it will be read again).
    Received,
    /// Read, and it changed or annotated a recipient.
    Processed,
    /// A report, but no signed token named a recipient of Herald's.
    Unmatched,
    /// Not a report Herald understands.
    Unknown,
    /// Reading it failed; the reason is kept with it.
    ParseError,
}

impl InboundStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Received => "received",
            Self::Processed => "processed",
            Self::Unmatched => "unmatched",
            Self::Unknown => "unknown",
            Self::ParseError => "parse_error",
        }
    }

    /// The statuses a `--status`/`status` word stands for: one status, or `all` (every one but
    /// `processed`).
    pub fn selection(word: &str) -> Option<Vec<Self>> {
        if word == "all" {
            return Some(vec![
                Self::Received,
                Self::Unknown,
                Self::Unmatched,
                Self::ParseError,
            ]);
        }
        Self::parse(word).map(|s| vec![s])
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Received,
            Self::Processed,
            Self::Unmatched,
            Self::Unknown,
            Self::ParseError,
        ]
        .into_iter()
        .find(|v| v.as_str() == s)
    }
}

/// What became of one inbound message.
#[derive(Debug, Clone)]
pub struct InboundOutcome {
    pub id: String,
    pub status: InboundStatus,
    /// The report as read (none when reading failed).
    pub report: Option<Report>,
    /// Recipients the report is about (named by its signed tokens).
    pub matched: Vec<String>,
    /// Effects (events, status changes, suppressions) made by this reading; a message read
    /// again makes none it made before.
    pub applied: usize,
}

impl InboundOutcome {
    fn new(id: String, status: InboundStatus) -> Self {
        Self {
            id,
            status,
            report: None,
            matched: Vec::new(),
            applied: 0,
        }
    }
}

/// What a reprocessing run did (the CLI prints it, the API answers it).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ReprocessSummary {
    /// Messages read.
    pub examined: u64,
    pub processed: u64,
    pub unmatched: u64,
    pub unknown: u64,
    pub parse_error: u64,
    /// Left `received`: the database failed while they were read.
    pub received: u64,
    /// Effects (events, status changes, suppressions) made by this run; a message read again
    /// makes none it made before.
    pub applied: u64,
}

impl ReprocessSummary {
    fn count(&mut self, o: &InboundOutcome) {
        self.examined += 1;
        self.applied += o.applied as u64;
        match o.status {
            InboundStatus::Processed => self.processed += 1,
            InboundStatus::Unmatched => self.unmatched += 1,
            InboundStatus::Unknown => self.unknown += 1,
            InboundStatus::ParseError => self.parse_error += 1,
            InboundStatus::Received => self.received += 1,
        }
    }
}

/// The recipient ids named by valid VERP tokens in the envelope recipients or anywhere in the
/// message (the return path is often quoted in the report or the returned headers).
pub fn signed_recipients(
    verp: &VerpSigner,
    bounce_domain: &str,
    raw: &[u8],
    envelope: &[String],
) -> Vec<Uuid> {
    let mut ids = Vec::new();
    let mut push = |id: Uuid| {
        if !ids.contains(&id) && ids.len() < MAX_TOKENS {
            ids.push(id);
        }
    };
    for rcpt in envelope {
        if let Some(id) = verp.verify_address(rcpt, bounce_domain) {
            push(id);
        }
    }
    let finder = memchr::memmem::Finder::new(b"bounces+");
    let mut tried = 0;
    for at in finder.find_iter(&raw.to_ascii_lowercase()) {
        let token: String = raw
            .get(at + 8..)
            .unwrap_or(&[])
            .iter()
            .take(64)
            .take_while(|b| b.is_ascii_alphanumeric())
            .map(|&b| char::from(b))
            .collect();
        if let Some(id) = verp.verify(&token) {
            push(id);
        }
        // Each try is an HMAC: bounded, whatever the message repeats.
        tried += 1;
        if tried >= 64 {
            break;
        }
    }
    ids
}

impl InboundProcessor {
    /// Keeps a message, then reads it. Fails only when the message could not be kept; once it
    /// is, the caller may answer that it was accepted, whatever its reading does.
    pub async fn receive(
        &self,
        raw: Vec<u8>,
        envelope: Vec<String>,
        source: &str,
        project: Option<&str>,
    ) -> Result<InboundOutcome, StoreError> {
        let now = self.clock.now_ms();
        let id = self
            .store
            .insert_inbound(project, source, &raw, &envelope, now)
            .await?;
        Ok(self
            .read_kept(KeptInbound {
                id,
                project_id: project.map(str::to_owned),
                raw,
                envelope,
            })
            .await)
    }

    /// Reads a kept message and records the result on it. Never fails: a panic anywhere in
    /// the reading leaves the message `parse_error` with its reason; a database failure leaves
    /// it `received`, to be read again.
    pub async fn read_kept(&self, kept: KeptInbound) -> InboundOutcome {
        self.read_kept_with(kept, parse_report).await
    }

    /// [`Self::read_kept`] with the parser given: what the tests use to make one fail.
    async fn read_kept_with(
        &self,
        kept: KeptInbound,
        parse: fn(&[u8]) -> Report,
    ) -> InboundOutcome {
        let id = kept.id.clone();
        let this = self.clone();
        match tokio::spawn(async move { this.read(kept, parse).await }).await {
            Ok(outcome) => outcome,
            Err(e) => self.failed(id, e).await,
        }
    }

    /// Records that reading a message failed (a panic, or a task stopped): `parse_error`, with
    /// the reason.
    async fn failed(&self, id: String, e: tokio::task::JoinError) -> InboundOutcome {
        let reason = panic_reason(e);
        tracing::error!(inbound_id = %id, %reason, "reading an inbound message failed");
        let outcome = InboundOutcome::new(id, InboundStatus::ParseError);
        self.finish(&outcome, None, &json!({ "error": reason }))
            .await
    }

    async fn read(&self, kept: KeptInbound, parse: fn(&[u8]) -> Report) -> InboundOutcome {
        let KeptInbound {
            id,
            project_id,
            raw,
            envelope,
        } = kept;
        let (verp, domain) = (self.verp.clone(), self.bounce_domain.clone());
        let parsed = tokio::task::spawn_blocking(move || {
            let tokens = signed_recipients(&verp, &domain, &raw, &envelope);
            (parse(&raw), tokens)
        })
        .await;
        let (report, tokens) = match parsed {
            Ok(p) => p,
            Err(e) => return self.failed(id, e).await,
        };
        let mut outcome = InboundOutcome::new(id, InboundStatus::Received);
        match self
            .apply(&outcome.id, &report, &tokens, project_id.as_deref())
            .await
        {
            Ok((matched, applied)) => {
                outcome.status = match (report.kind, matched.is_empty()) {
                    (ReportKind::Unknown, true) => InboundStatus::Unknown,
                    (_, true) => InboundStatus::Unmatched,
                    (_, false) => InboundStatus::Processed,
                };
                outcome.matched = matched;
                outcome.applied = applied;
            }
            Err(e) => {
                tracing::warn!(inbound_id = %outcome.id, error = %e, "could not apply an inbound report; it will be read again");
            }
        }
        let details = serde_json::to_value(&report).unwrap_or_default();
        outcome.report = Some(report);
        let kind = outcome.report.as_ref().map(|r| r.kind);
        if outcome.status == InboundStatus::Received {
            return outcome;
        }
        self.finish(&outcome, kind, &details).await
    }

    /// Correlates a report with the recipients its tokens name, and applies its effects.
    async fn apply(
        &self,
        inbound_id: &str,
        report: &Report,
        tokens: &[Uuid],
        project: Option<&str>,
    ) -> Result<(Vec<String>, usize), StoreError> {
        let now = self.clock.now_ms();
        let mut matched = Vec::new();
        let mut applied = 0;
        for token in tokens {
            let Some(target) = self.store.find_recipient(&token.to_string()).await? else {
                continue;
            };
            if project.is_some_and(|p| p != target.project_id) {
                continue;
            }
            let Some(rr) = about(report, &target) else {
                continue;
            };
            if let Some(effect) = self.effect(report, rr, &target, now) {
                if self
                    .store
                    .apply_report_effect(inbound_id, &effect)
                    .await?
                    .is_some()
                {
                    applied += 1;
                }
                matched.push(target.id.clone());
            }
        }
        if applied > 0 {
            self.events_wake.notify_waiters();
        }
        Ok((matched, applied))
    }

    /// Records how a message was read; a failure to record leaves it `received`.
    async fn finish(
        &self,
        outcome: &InboundOutcome,
        kind: Option<ReportKind>,
        details: &serde_json::Value,
    ) -> InboundOutcome {
        let kind = kind.map_or("none", ReportKind::as_str);
        let status = outcome.status.as_str();
        let details = details.to_string();
        let matched = i64::try_from(outcome.matched.len()).unwrap_or(0);
        match self
            .store
            .finish_inbound(&outcome.id, kind, status, matched, &details)
            .await
        {
            Ok(()) => {
                self.metrics.record_inbound(kind, status);
                tracing::info!(inbound_id = %outcome.id, kind, status, matched, "inbound report");
                outcome.clone()
            }
            Err(e) => {
                tracing::warn!(inbound_id = %outcome.id, error = %e, "could not record an inbound message's reading; it will be read again");
                InboundOutcome {
                    status: InboundStatus::Received,
                    ..outcome.clone()
                }
            }
        }
    }

    /// Reads again the kept messages in `statuses` received from `since` to `until`, a page at
    /// a time, and says what became of them.
    pub async fn reprocess(
        &self,
        statuses: &[InboundStatus],
        since: i64,
        until: i64,
    ) -> Result<ReprocessSummary, StoreError> {
        let names: Vec<&str> = statuses.iter().map(|s| s.as_str()).collect();
        let mut summary = ReprocessSummary::default();
        let mut after = String::new();
        loop {
            let page = self
                .store
                .kept_inbound(&names, since, until, &after, 100)
                .await?;
            let Some(last) = page.last() else {
                return Ok(summary);
            };
            after.clone_from(&last.id);
            for kept in page {
                let outcome = self.read_kept(kept).await;
                summary.count(&outcome);
            }
        }
    }

    /// Reads the messages a crash or a database outage left `received` (older than a minute,
    /// so not one being read right now), at start and then every `interval`, until `cancel`.
    pub async fn run_recovery(
        self,
        interval: std::time::Duration,
        cancel: tokio_util::sync::CancellationToken,
    ) {
        let mut first = true;
        loop {
            // At start nothing of this process's is being read: take everything.
            let until = self.clock.now_ms() - if first { 0 } else { 60_000 };
            first = false;
            match self.reprocess(&[InboundStatus::Received], 0, until).await {
                Ok(s) if s.examined > 0 => {
                    tracing::info!(
                        examined = s.examined,
                        left = s.received,
                        "read inbound messages left unread"
                    );
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "could not look for unread inbound messages"),
            }
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(interval) => {}
            }
        }
    }

    fn effect(
        &self,
        report: &Report,
        rr: &ReportRecipient,
        r: &RecipientRef,
        now: i64,
    ) -> Option<ReportEffect> {
        let event = |event_type: EventType, data: EventData| {
            NewEvent::new(Some(&r.id), Some(&r.address), event_type, data, now)
        };
        if report.kind == ReportKind::Arf {
            let c = report.complaint.as_ref()?;
            let mut s = SuppressionRecord::new(
                &r.project_id,
                &r.address,
                &r.stream,
                SuppressionReason::Complaint.as_str(),
                now,
            );
            s.source_email_id = Some(r.email_id.clone());
            s.details = Some(format!("feedback-type: {}", c.feedback_type));
            let complaint = ComplaintData {
                feedback_type: c.feedback_type.clone(),
                user_agent: c.user_agent.clone(),
                arrival_date: c.arrival_date.map(|t| crate::clock::format_ms(t * 1000)),
            };
            return Some(ReportEffect {
                recipient: r.clone(),
                new_status: Some(RecipientStatus::Complained),
                bounce: None,
                event: event(EventType::Complained, EventData::Complained { complaint }),
                suppression: Some(s),
            });
        }
        let code = rr
            .diagnostic
            .as_deref()
            .and_then(|d| first_reply_code(d, 200));
        let smtp = SmtpData {
            code,
            enhanced_status: rr.status.clone(),
            response: rr.diagnostic.clone(),
            remote_mta: rr.remote_mta.clone(),
            tls: None,
            attempt: None,
        };
        match rr.action {
            Action::Delivered => Some(ReportEffect {
                recipient: r.clone(),
                new_status: Some(RecipientStatus::Delivered),
                bounce: None,
                event: event(
                    EventType::Delivered,
                    EventData::Reply {
                        smtp,
                        reporting_mta: report.reporting_mta.clone(),
                    },
                ),
                suppression: None,
            }),
            Action::Delayed => Some(ReportEffect {
                recipient: r.clone(),
                new_status: None,
                bounce: None,
                event: event(
                    EventType::DeliveryDelayed,
                    EventData::Delayed {
                        smtp: Some(smtp),
                        phase: SmtpPhase::AsyncDsn,
                        reason: None,
                        attempt: None,
                        next_attempt_at: None,
                        reporting_mta: report.reporting_mta.clone(),
                    },
                ),
                suppression: None,
            }),
            Action::Failed => {
                let class = BounceClass {
                    kind: rr.kind,
                    sub_type: rr.sub_type,
                };
                let suppress = (bounce_suppresses(&class)).then(|| {
                    let mut s = SuppressionRecord::new(
                        &r.project_id,
                        &r.address,
                        "",
                        SuppressionReason::HardBounce.as_str(),
                        now,
                    );
                    s.source_email_id = Some(r.email_id.clone());
                    s.details = rr.diagnostic.clone();
                    s
                });
                let kind = if rr.kind == BounceType::Undetermined {
                    BounceType::Permanent
                } else {
                    rr.kind
                };
                let bounce = BounceData {
                    kind,
                    sub_type: rr.sub_type,
                    phase: SmtpPhase::AsyncDsn,
                    smtp_code: code,
                    enhanced_status: rr.status.clone(),
                    diagnostic: rr.diagnostic.clone(),
                    remote_mta: rr.remote_mta.clone(),
                    reporting_mta: report.reporting_mta.clone(),
                    suppressed: suppress.is_some(),
                };
                Some(ReportEffect {
                    recipient: r.clone(),
                    new_status: Some(RecipientStatus::Bounced),
                    bounce: Some((kind.as_str().to_owned(), rr.sub_type.as_str().to_owned())),
                    event: event(
                        EventType::Bounced,
                        EventData::Bounced {
                            bounce,
                            attempt: None,
                        },
                    ),
                    suppression: suppress,
                })
            }
        }
    }
}

/// The line of a report about the recipient a token names: the one with its address, else the
/// first failure (an alias or a forward reports the address it expanded to), else the first.
fn about<'r>(report: &'r Report, target: &RecipientRef) -> Option<&'r ReportRecipient> {
    report
        .recipients
        .iter()
        .find(|r| r.address.eq_ignore_ascii_case(&target.address))
        .or_else(|| {
            report
                .recipients
                .iter()
                .find(|r| r.action == Action::Failed)
        })
        .or_else(|| report.recipients.first())
}

/// What a failed task said, for the message it failed on.
fn panic_reason(e: tokio::task::JoinError) -> String {
    match e.try_into_panic() {
        Ok(p) => p
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .map_or_else(
                || "the parser panicked".to_owned(),
                |m| format!("the parser panicked: {m}"),
            ),
        Err(e) => format!("the reading was stopped: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// A parser that panics on a message leaves it kept as `parse_error` with the panic's
    /// words, and the next message is read as usual.
    #[tokio::test]
    async fn a_panicking_parser_fails_its_message_alone() {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("herald.db").display());
        let store = Store::open(&url, 2).await.expect("store");
        let p = InboundProcessor {
            store: store.clone(),
            clock: Arc::new(crate::clock::SystemClock),
            verp: VerpSigner::new(b"k"),
            bounce_domain: "b.example".into(),
            events_wake: Arc::default(),
            metrics: Arc::default(),
        };
        let keep = |raw: &[u8]| {
            let (store, raw) = (store.clone(), raw.to_vec());
            async move {
                let id = store
                    .insert_inbound(None, "smtp", &raw, &[], 0)
                    .await
                    .expect("keep");
                KeptInbound {
                    id,
                    project_id: None,
                    raw,
                    envelope: Vec::new(),
                }
            }
        };
        let kept = keep(b"Subject: x\r\n\r\nboom").await;
        let outcome = p.read_kept_with(kept, |_| panic!("a parser bug")).await;
        assert_eq!(outcome.status, InboundStatus::ParseError);
        let details = store
            .kept_inbound(&["parse_error"], 0, i64::MAX, "", 10)
            .await
            .expect("kept");
        assert_eq!(details.len(), 1, "kept as parse_error");
        let details: String =
            sqlx::query_scalar("SELECT details FROM inbound_messages WHERE id = $1")
                .bind(&outcome.id)
                .fetch_one(&sqlx::AnyPool::connect(&url).await.expect("pool"))
                .await
                .expect("details");
        assert!(details.contains("a parser bug"), "{details}");
        let outcome = p.read_kept(keep(b"Subject: hello\r\n\r\nhi").await).await;
        assert_eq!(outcome.status, InboundStatus::Unknown);
        assert_eq!(store.count_inbound("parse_error").await.expect("count"), 1);
    }

    proptest! {
        #[test]
        fn tokens_are_read_from_any_bytes(
            raw in prop::collection::vec(prop_oneof![Just(b"bounces+".to_vec()), prop::collection::vec(any::<u8>(), 0..40)], 0..50),
            envelope in prop::collection::vec("\\PC{0,80}", 0..4),
        ) {
            let verp = VerpSigner::new(b"k");
            let id = Uuid::now_v7();
            let mut raw = raw.concat();
            raw.extend_from_slice(verp.return_path(id, "b.example").as_bytes());
            let found = signed_recipients(&verp, "b.example", &raw, &envelope);
            prop_assert!(found.len() <= MAX_TOKENS);
            prop_assert!(found.contains(&id) || found.len() == MAX_TOKENS);
        }
    }
}
