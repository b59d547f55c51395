#![cfg_attr(not(test), warn(clippy::string_slice, clippy::indexing_slicing))]
//! Bounces and complaints: reports that come back after the relay said 250.
//!
//! [`report::parse_report`] reads one message (RFC 3464 DSN, RFC 5965 ARF, or one of the
//! plain-text bounce formats real MTAs still send) into recipients with an action, a status
//! and a classification; [`inbound`] correlates a report with the recipient it is about (by
//! the signed VERP token, else by the returned Message-ID) and records the consequences.

pub mod inbound;
pub mod listener;
pub mod report;
