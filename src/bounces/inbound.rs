//! Processing an inbound report: keep it, parse it, correlate it with Herald's recipients (by
//! the signed VERP token, else by the returned Message-ID) and record what it says.
//!
//! - failed → `bounced` (phase `async_dsn`), and a hard bounce adds a global suppression;
//! - delayed → a `delivery_delayed` event, the status unchanged (the relay still tries);
//! - delivered/relayed → `delivered`;
//! - an ARF complaint → `complained`, and a suppression for the email's stream.
//!
//! Mail that cannot be understood or matched is kept and counted, never dropped.

use std::sync::Arc;

use serde_json::json;
use tokio::sync::Notify;

use crate::clock::Clock;
use crate::domain::bounce::{BounceClass, BounceType};
use crate::domain::suppression::{SuppressionReason, bounce_suppresses};
use crate::domain::verp::VerpSigner;
use crate::store::{NewEvent, RecipientRef, ReportEffect, Store, StoreError, SuppressionRecord};

use super::report::{Action, Report, ReportKind, ReportRecipient, first_reply_code, parse_report};

#[derive(Clone)]
pub struct InboundProcessor {
    pub store: Store,
    pub clock: Arc<dyn Clock>,
    pub verp: VerpSigner,
    pub bounce_domain: String,
    pub events_wake: Arc<Notify>,
}

/// What became of one inbound message.
#[derive(Debug, Clone)]
pub struct InboundOutcome {
    pub id: String,
    pub report: Report,
    /// Recipients whose state the report changed or annotated.
    pub matched: Vec<String>,
}

impl InboundProcessor {
    /// Recipient ids named by valid VERP tokens in the envelope recipients or anywhere in the
    /// message (the return path is often quoted in the report or the returned headers).
    fn verp_recipients(&self, raw: &[u8], envelope: &[String]) -> Vec<String> {
        let text = String::from_utf8_lossy(raw).to_ascii_lowercase();
        let mut ids = Vec::new();
        let mut push = |id: uuid::Uuid| {
            let id = id.to_string();
            if !ids.contains(&id) {
                ids.push(id);
            }
        };
        for rcpt in envelope {
            if let Some(id) = self.verp.verify_address(rcpt, &self.bounce_domain) {
                push(id);
            }
        }
        for (i, _) in text.match_indices("bounces+") {
            let token: String = text[i + 8..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric())
                .collect();
            if let Some(id) = self.verp.verify(&token) {
                push(id);
            }
        }
        ids
    }

    /// Keeps, parses, correlates and applies one message. `project` limits correlation to one
    /// project (`POST /v1/inbound` with a project's key).
    pub async fn process(
        &self,
        raw: &[u8],
        envelope: &[String],
        source: &str,
        project: Option<&str>,
    ) -> Result<InboundOutcome, StoreError> {
        let now = self.clock.now_ms();
        let id = self.store.insert_inbound(project, source, raw, now).await?;
        let report = parse_report(raw);
        let mut candidates: Vec<RecipientRef> = Vec::new();
        for rid in self.verp_recipients(raw, envelope) {
            if let Some(r) = self.store.find_recipient(&rid).await?
                && project.is_none_or(|p| p == r.project_id)
            {
                candidates.push(r);
            }
        }
        if candidates.is_empty()
            && let Some(mid) = &report.original_message_id
        {
            candidates = self.store.recipients_by_message_id(mid, project).await?;
        }
        let mut matched = Vec::new();
        for rr in &report.recipients {
            // With a VERP token there is one recipient; a report line about another address
            // (an alias expansion, a forward) still belongs to it.
            let target = candidates
                .iter()
                .find(|c| c.address.eq_ignore_ascii_case(&rr.address))
                .or_else(|| (candidates.len() == 1).then(|| &candidates[0]));
            let Some(target) = target else { continue };
            if let Some(effect) = self.effect(&report, rr, target, now) {
                self.store.apply_report_effect(&effect).await?;
                matched.push(target.id.clone());
            }
        }
        let kind = serde_json::to_value(report.kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        let status = match (report.kind, matched.is_empty()) {
            (ReportKind::Unknown, _) => "unknown",
            (_, true) => "unmatched",
            (_, false) => "processed",
        };
        let details = serde_json::to_string(&report).unwrap_or_default();
        self.store
            .finish_inbound(
                &id,
                &kind,
                status,
                i64::try_from(matched.len()).unwrap_or(0),
                &details,
            )
            .await?;
        if !matched.is_empty() {
            self.events_wake.notify_waiters();
        }
        tracing::info!(inbound_id = %id, kind = %kind, status, matched = matched.len(), "inbound report");
        Ok(InboundOutcome {
            id,
            report,
            matched,
        })
    }

    fn effect(
        &self,
        report: &Report,
        rr: &ReportRecipient,
        r: &RecipientRef,
        now: i64,
    ) -> Option<ReportEffect> {
        let event = |event_type: &str, data: serde_json::Value| {
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
            return Some(ReportEffect {
                recipient: r.clone(),
                new_status: Some("complained"),
                from_statuses: &["sent", "delivered"],
                bounce: None,
                event: event(
                    "email.complained",
                    json!({"complaint": {
                        "feedback_type": c.feedback_type, "user_agent": c.user_agent,
                        "arrival_date": c.arrival_date.map(|t| crate::clock::format_ms(t * 1000)),
                    }}),
                ),
                suppression: Some(s),
            });
        }
        let smtp = json!({
            "code": rr.diagnostic.as_deref().and_then(|d| first_reply_code(d, 200)),
            "enhanced_status": rr.status,
            "response": rr.diagnostic,
            "remote_mta": rr.remote_mta,
        });
        match rr.action {
            Action::Delivered => Some(ReportEffect {
                recipient: r.clone(),
                new_status: Some("delivered"),
                from_statuses: &["sent"],
                bounce: None,
                event: event(
                    "email.delivered",
                    json!({"smtp": smtp, "reporting_mta": report.reporting_mta}),
                ),
                suppression: None,
            }),
            Action::Delayed => Some(ReportEffect {
                recipient: r.clone(),
                new_status: None,
                from_statuses: &[],
                bounce: None,
                event: event(
                    "email.delivery_delayed",
                    json!({"smtp": smtp, "phase": "async_dsn", "reporting_mta": report.reporting_mta}),
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
                Some(ReportEffect {
                    recipient: r.clone(),
                    new_status: Some("bounced"),
                    from_statuses: &["sent", "delivered"],
                    bounce: Some((kind.as_str().to_owned(), rr.sub_type.as_str().to_owned())),
                    event: event(
                        "email.bounced",
                        json!({"bounce": {
                            "type": kind, "sub_type": rr.sub_type, "phase": "async_dsn",
                            "smtp_code": rr.diagnostic.as_deref().and_then(|d| first_reply_code(d, 200)),
                            "enhanced_status": rr.status, "diagnostic": rr.diagnostic,
                            "remote_mta": rr.remote_mta, "reporting_mta": report.reporting_mta,
                            "suppressed": suppress.is_some(),
                        }}),
                    ),
                    suppression: suppress,
                })
            }
        }
    }
}
