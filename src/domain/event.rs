//! Events: their types, one per state change, named as webhooks and the events API show them,
//! and their payloads ([`EventData`]), each written in one place and read back typed.

use serde::Serialize;

use crate::domain::bounce::{BounceClass, BounceSubType, BounceType, SmtpPhase};
use crate::domain::status::RecipientStatus;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    Scheduled,
    Queued,
    Sent,
    Delivered,
    DeliveryDelayed,
    Bounced,
    Complained,
    Failed,
    Suppressed,
    Canceled,
    DomainVerified,
    DomainVerificationFailed,
    WebhookTest,
}

impl EventType {
    pub const ALL: [EventType; 13] = [
        Self::Scheduled,
        Self::Queued,
        Self::Sent,
        Self::Delivered,
        Self::DeliveryDelayed,
        Self::Bounced,
        Self::Complained,
        Self::Failed,
        Self::Suppressed,
        Self::Canceled,
        Self::DomainVerified,
        Self::DomainVerificationFailed,
        Self::WebhookTest,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Scheduled => "email.scheduled",
            Self::Queued => "email.queued",
            Self::Sent => "email.sent",
            Self::Delivered => "email.delivered",
            Self::DeliveryDelayed => "email.delivery_delayed",
            Self::Bounced => "email.bounced",
            Self::Complained => "email.complained",
            Self::Failed => "email.failed",
            Self::Suppressed => "email.suppressed",
            Self::Canceled => "email.canceled",
            Self::DomainVerified => "domain.verified",
            Self::DomainVerificationFailed => "domain.verification_failed",
            Self::WebhookTest => "webhook.test",
        }
    }

    /// The type of that name, if Herald records one.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// Whether an endpoint may subscribe to it by name (domain events are for the event feed).
    pub fn subscribable(self) -> bool {
        !matches!(self, Self::DomainVerified | Self::DomainVerificationFailed)
    }

    /// The event that announces a recipient entering `status`.
    pub fn for_status(status: RecipientStatus) -> Self {
        match status {
            RecipientStatus::Scheduled => Self::Scheduled,
            RecipientStatus::Queued => Self::Queued,
            RecipientStatus::DeliveryDelayed => Self::DeliveryDelayed,
            RecipientStatus::Sent => Self::Sent,
            RecipientStatus::Delivered => Self::Delivered,
            RecipientStatus::Bounced => Self::Bounced,
            RecipientStatus::Complained => Self::Complained,
            RecipientStatus::Failed => Self::Failed,
            RecipientStatus::Suppressed => Self::Suppressed,
            RecipientStatus::Canceled => Self::Canceled,
        }
    }
}

impl Serialize for EventType {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl std::fmt::Display for EventType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An event's payload, as its `data` holds it (the event's type is stored beside it). Each
/// kind is built here, from typed parts, and written as JSON once; the stats read the typed
/// value, never the JSON.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum EventData {
    /// Queued, scheduled, canceled: nothing to add.
    Empty {},
    /// The relay took the message, or (from a delivery report) the receiver did.
    Reply {
        smtp: SmtpData,
        #[serde(skip_serializing_if = "Option::is_none")]
        reporting_mta: Option<String>,
    },
    /// Not yet: tried again later (`next_attempt_at`), or a delivery report said so.
    Delayed {
        smtp: Option<SmtpData>,
        phase: SmtpPhase,
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        attempt: Option<i64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        next_attempt_at: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        reporting_mta: Option<String>,
    },
    Bounced {
        bounce: BounceData,
        #[serde(skip_serializing_if = "Option::is_none")]
        attempt: Option<i64>,
    },
    Complained {
        complaint: ComplaintData,
    },
    Failed {
        failure: FailureData,
        attempt: i64,
    },
    Suppressed {
        suppression: SuppressionData,
    },
    Domain {
        domain: DomainData,
    },
    WebhookTest {
        webhook_id: String,
    },
}

impl EventData {
    /// The bounce class a bounce's data names (what the stats count it under).
    pub fn bounce_class(&self) -> Option<BounceClass> {
        match self {
            Self::Bounced { bounce, .. } => Some(BounceClass {
                kind: bounce.kind,
                sub_type: bounce.sub_type,
            }),
            _ => None,
        }
    }

    /// The JSON text stored in the event's `data`.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{}".to_owned())
    }
}

/// An SMTP reply, as events show it.
#[derive(Debug, Clone, Serialize)]
pub struct SmtpData {
    pub code: Option<u16>,
    pub enhanced_status: Option<String>,
    pub response: Option<String>,
    pub remote_mta: Option<String>,
    /// Whether the relay's connection was encrypted (Herald's own attempts).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<bool>,
    /// The attempt that got the reply (Herald's own attempts).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempt: Option<i64>,
}

/// A bounce: the relay's refusal, or a delivery report's failure.
#[derive(Debug, Clone, Serialize)]
pub struct BounceData {
    #[serde(rename = "type")]
    pub kind: BounceType,
    pub sub_type: BounceSubType,
    pub phase: SmtpPhase,
    pub smtp_code: Option<u16>,
    pub enhanced_status: Option<String>,
    pub diagnostic: Option<String>,
    pub remote_mta: Option<String>,
    /// The host that sent the delivery report (reports only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reporting_mta: Option<String>,
    /// Whether the bounce put the address on the suppression list.
    pub suppressed: bool,
}

/// A complaint (an ARF report).
#[derive(Debug, Clone, Serialize)]
pub struct ComplaintData {
    pub feedback_type: String,
    pub user_agent: Option<String>,
    /// RFC 3339.
    pub arrival_date: Option<String>,
}

/// Herald's own failure to deliver.
#[derive(Debug, Clone, Serialize)]
pub struct FailureData {
    pub reason: &'static str,
    pub detail: String,
}

/// The suppression that kept a recipient from being sent.
#[derive(Debug, Clone, Serialize)]
pub struct SuppressionData {
    pub reason: String,
    /// `None`: every stream.
    pub stream: Option<String>,
    /// RFC 3339.
    pub created_at: String,
}

/// A domain whose verification changed.
#[derive(Debug, Clone, Serialize)]
pub struct DomainData {
    pub id: String,
    pub name: String,
    /// The last check's result per record.
    pub records: serde_json::Value,
}

/// Whether an endpoint's event filter takes `event_type`: exact names, `email.*`-style
/// prefixes, and `*` for everything except `email.queued`, which is noisy and only sent to
/// endpoints that name it.
pub fn filter_matches(filter: &[String], event_type: EventType) -> bool {
    let name = event_type.as_str();
    let noisy = event_type == EventType::Queued;
    filter.iter().any(|f| {
        f == name
            || (f == "*" && !noisy)
            || f.strip_suffix('*')
                .is_some_and(|prefix| prefix.ends_with('.') && name.starts_with(prefix) && !noisy)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_match_names_prefixes_and_star() {
        let f = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        use EventType::*;
        assert!(filter_matches(&f(&["email.bounced"]), Bounced));
        assert!(!filter_matches(&f(&["email.bounced"]), Sent));
        assert!(filter_matches(&f(&["*"]), Sent));
        assert!(!filter_matches(&f(&["*"]), Queued));
        assert!(filter_matches(&f(&["email.queued"]), Queued));
        assert!(filter_matches(&f(&["email.*"]), Failed));
        assert!(!filter_matches(&f(&["email.*"]), WebhookTest));
    }

    #[test]
    fn every_type_parses_back_from_its_name() {
        for t in EventType::ALL {
            assert_eq!(EventType::parse(t.as_str()), Some(t));
        }
        assert_eq!(EventType::parse("email.opened"), None);
    }

    /// The payloads keep the keys webhook consumers read.
    #[test]
    fn a_bounce_is_written_with_its_class_under_bounce() {
        let data = EventData::Bounced {
            bounce: BounceData {
                kind: BounceType::Permanent,
                sub_type: BounceSubType::NoEmail,
                phase: SmtpPhase::Rcpt,
                smtp_code: Some(550),
                enhanced_status: Some("5.1.1".into()),
                diagnostic: Some("no such user".into()),
                remote_mta: None,
                reporting_mta: None,
                suppressed: true,
            },
            attempt: Some(1),
        };
        let v: serde_json::Value = serde_json::from_str(&data.to_json()).expect("json");
        assert_eq!(v["bounce"]["type"], "permanent");
        assert_eq!(v["bounce"]["sub_type"], "no_email");
        assert_eq!(v["bounce"]["phase"], "rcpt");
        assert_eq!(v["attempt"], 1);
        assert!(v["bounce"].get("reporting_mta").is_none());
        assert_eq!(EventData::Empty {}.to_json(), "{}");
    }
}
