//! The suppression list's rules: why an address is suppressed, where, and which bounces put
//! it there by themselves.

use crate::domain::bounce::{BounceClass, BounceSubType, BounceType};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SuppressionReason {
    HardBounce,
    Complaint,
    Manual,
    Unsubscribe,
}

impl SuppressionReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::HardBounce => "hard_bounce",
            Self::Complaint => "complaint",
            Self::Manual => "manual",
            Self::Unsubscribe => "unsubscribe",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "hard_bounce" => Some(Self::HardBounce),
            "complaint" => Some(Self::Complaint),
            "manual" => Some(Self::Manual),
            "unsubscribe" => Some(Self::Unsubscribe),
            _ => None,
        }
    }

    /// A hard bounce holds for every stream (the mailbox does not exist for anyone); the other
    /// reasons hold for the stream they came from (a complaint about a newsletter must not
    /// block password resets).
    pub fn is_global(self) -> bool {
        self == Self::HardBounce
    }
}

/// Whether a bounce adds its address to the suppression list: only permanent evidence that the
/// mailbox is gone or disabled. Not a permanent refusal that says nothing more (`general`: a
/// "554 transaction failed" may be about the message, the sender or the hour), and never policy,
/// reputation or content refusals: those are the sender's problem, not the address's.
pub fn bounce_suppresses(class: &BounceClass) -> bool {
    class.kind == BounceType::Permanent
        && matches!(
            class.sub_type,
            BounceSubType::NoEmail | BounceSubType::MailboxDisabled
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_permanent_mailbox_failures_suppress() {
        let c = |kind, sub_type| BounceClass { kind, sub_type };
        assert!(bounce_suppresses(&c(
            BounceType::Permanent,
            BounceSubType::NoEmail
        )));
        assert!(bounce_suppresses(&c(
            BounceType::Permanent,
            BounceSubType::MailboxDisabled
        )));
        assert!(!bounce_suppresses(&c(
            BounceType::Permanent,
            BounceSubType::General
        )));
        assert!(!bounce_suppresses(&c(
            BounceType::Permanent,
            BounceSubType::ReputationBlocked
        )));
        assert!(!bounce_suppresses(&c(
            BounceType::Permanent,
            BounceSubType::PolicyBlocked
        )));
        assert!(!bounce_suppresses(&c(
            BounceType::Permanent,
            BounceSubType::ContentRejected
        )));
        assert!(!bounce_suppresses(&c(
            BounceType::Permanent,
            BounceSubType::MailboxFull
        )));
        assert!(!bounce_suppresses(&c(
            BounceType::Transient,
            BounceSubType::NoEmail
        )));
        assert!(!bounce_suppresses(&c(
            BounceType::Transient,
            BounceSubType::Expired
        )));
    }

    #[test]
    fn reasons_round_trip_and_scope() {
        for r in [
            SuppressionReason::HardBounce,
            SuppressionReason::Complaint,
            SuppressionReason::Manual,
            SuppressionReason::Unsubscribe,
        ] {
            assert_eq!(SuppressionReason::parse(r.as_str()), Some(r));
        }
        assert!(SuppressionReason::HardBounce.is_global());
        assert!(!SuppressionReason::Complaint.is_global());
    }
}
