//! Webhooks: every event, at least once, signed per Standard Webhooks v1.
//!
//! Delivery rows are the outbox: they are written in the same transaction as the event they
//! announce (see `store::webhooks`), so no event is lost between the two. A [`Dispatcher`]
//! claims due deliveries under a lease like the mail queue, POSTs them through an SSRF-safe
//! client, and records every attempt.

pub mod client;
pub mod dispatcher;
pub mod pacer;
pub mod signing;

pub use dispatcher::Dispatcher;
