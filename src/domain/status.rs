//! Recipient statuses and the rule that derives an email's status from its recipients.

use serde::Serialize;

/// Where one recipient stands. The recipient is the unit of state (DESIGN.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RecipientStatus {
    Scheduled,
    Queued,
    DeliveryDelayed,
    Sent,
    Delivered,
    Bounced,
    Complained,
    Failed,
    Suppressed,
    Canceled,
}

impl RecipientStatus {
    pub const ALL: [Self; 10] = [
        Self::Scheduled,
        Self::Queued,
        Self::DeliveryDelayed,
        Self::Sent,
        Self::Delivered,
        Self::Bounced,
        Self::Complained,
        Self::Failed,
        Self::Suppressed,
        Self::Canceled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Scheduled => "scheduled",
            Self::Queued => "queued",
            Self::DeliveryDelayed => "delivery_delayed",
            Self::Sent => "sent",
            Self::Delivered => "delivered",
            Self::Bounced => "bounced",
            Self::Complained => "complained",
            Self::Failed => "failed",
            Self::Suppressed => "suppressed",
            Self::Canceled => "canceled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// The statuses a report after the send (a delivery report, a late bounce, a complaint)
    /// may move a recipient to `self` from: none for a status no report sets. A report that
    /// finds the recipient elsewhere (already bounced, say) is kept in its timeline but
    /// changes nothing.
    pub fn reported_from(self) -> &'static [Self] {
        match self {
            Self::Delivered => &[Self::Sent],
            Self::Bounced | Self::Complained => &[Self::Sent, Self::Delivered],
            _ => &[],
        }
    }

    /// Still waiting for a delivery attempt (these are the rows the queue claims).
    pub fn is_pending(self) -> bool {
        matches!(self, Self::Scheduled | Self::Queued | Self::DeliveryDelayed)
    }

    /// Order among statuses that are not final: the least advanced wins.
    fn progress(self) -> u8 {
        match self {
            Self::Scheduled => 0,
            Self::Queued => 1,
            Self::DeliveryDelayed => 2,
            Self::Sent => 3,
            _ => 4,
        }
    }

    /// Order among final statuses: the worst wins
    /// (`failed > bounced > complained > suppressed > canceled > delivered`).
    fn severity(self) -> u8 {
        match self {
            Self::Failed => 5,
            Self::Bounced => 4,
            Self::Complained => 3,
            Self::Suppressed => 2,
            Self::Canceled => 1,
            _ => 0,
        }
    }
}

/// An email's status: the least advanced status among recipients that are not final
/// (`sent` counts as not final: a DSN may still come), or else the worst final one.
pub fn aggregate_status(statuses: impl IntoIterator<Item = RecipientStatus>) -> RecipientStatus {
    let statuses: Vec<RecipientStatus> = statuses.into_iter().collect();
    let open = statuses
        .iter()
        .copied()
        .filter(|s| s.is_pending() || *s == RecipientStatus::Sent)
        .min_by_key(|s| s.progress());
    open.or_else(|| statuses.iter().copied().max_by_key(|s| s.severity()))
        .unwrap_or(RecipientStatus::Queued)
}

#[cfg(test)]
mod tests {
    use super::RecipientStatus::*;
    use super::*;

    #[test]
    fn aggregate_prefers_least_advanced_open_status() {
        assert_eq!(aggregate_status([Sent, Queued, Bounced]), Queued);
        assert_eq!(aggregate_status([Sent, DeliveryDelayed]), DeliveryDelayed);
        assert_eq!(aggregate_status([Sent, Delivered]), Sent);
    }

    #[test]
    fn aggregate_of_final_statuses_is_the_worst() {
        assert_eq!(aggregate_status([Delivered, Bounced, Suppressed]), Bounced);
        assert_eq!(aggregate_status([Delivered, Failed, Bounced]), Failed);
        assert_eq!(aggregate_status([Canceled, Delivered]), Canceled);
        assert_eq!(aggregate_status([Suppressed]), Suppressed);
    }

    #[test]
    fn names_round_trip() {
        for s in RecipientStatus::ALL {
            assert_eq!(RecipientStatus::parse(s.as_str()), Some(s));
        }
    }
}
