//! Event types: one per recipient state change, named as webhooks and the events API show them.

use crate::domain::status::RecipientStatus;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
}

impl EventType {
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
        }
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

/// Whether an endpoint's event filter takes `event_type`: exact names, `email.*`-style
/// prefixes, and `*` for everything except `email.queued`, which is noisy and only sent to
/// endpoints that name it.
pub fn filter_matches(filter: &[String], event_type: &str) -> bool {
    filter.iter().any(|f| {
        f == event_type
            || (f == "*" && event_type != "email.queued")
            || f.strip_suffix('*').is_some_and(|prefix| {
                prefix.ends_with('.')
                    && event_type.starts_with(prefix)
                    && event_type != "email.queued"
            })
    })
}

/// The event types an endpoint may subscribe to (besides `*` and `email.*`).
pub const SUBSCRIBABLE: &[&str] = &[
    "email.scheduled",
    "email.queued",
    "email.sent",
    "email.delivered",
    "email.delivery_delayed",
    "email.bounced",
    "email.complained",
    "email.failed",
    "email.suppressed",
    "email.canceled",
    "webhook.test",
];

/// Whether `t` is a type of event Herald records (what the event feed may be filtered by).
pub fn is_event_type(t: &str) -> bool {
    SUBSCRIBABLE.contains(&t) || matches!(t, "domain.verified" | "domain.verification_failed")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_match_names_prefixes_and_star() {
        let f = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert!(filter_matches(&f(&["email.bounced"]), "email.bounced"));
        assert!(!filter_matches(&f(&["email.bounced"]), "email.sent"));
        assert!(filter_matches(&f(&["*"]), "email.sent"));
        assert!(!filter_matches(&f(&["*"]), "email.queued"));
        assert!(filter_matches(&f(&["email.queued"]), "email.queued"));
        assert!(filter_matches(&f(&["email.*"]), "email.failed"));
        assert!(!filter_matches(&f(&["email.*"]), "webhook.test"));
    }
}
