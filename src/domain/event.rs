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
