//! Delivery: workers claim due recipients from the store and relay each one over SMTP
//! (or into a directory of `.eml` files when no relay is configured), then record the
//! outcome with its event.
//!
//! Each recipient is its own SMTP transaction, because its envelope sender is its own signed
//! VERP address (see [`crate::domain::verp`]); this also means one rejected recipient never
//! sinks the others. Transactions share pooled, authenticated connections.

pub mod mailer;
pub mod relay;
pub mod smtp;
pub mod worker;

pub use mailer::{Mailer, Verdict};
pub use worker::{RunOutcome, Worker};
