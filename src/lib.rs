//! Herald: a self-hosted HTTP-to-SMTP transactional email gateway.
//!
//! A tour, from the bottom up:
//! - [`domain`]: pure types and rules (addresses, the email, statuses, retry policy, bounce
//!   classes, signed return paths, MIME building). No I/O.
//! - [`store`]: the database (SQLite or Postgres) — emails, recipients (the queue), events.
//! - [`delivery`]: workers that claim due recipients and relay them over SMTP.
//! - [`api`]: the HTTP API (axum).
//! - [`app`]: wires it all together and runs it until shutdown.

pub mod accept;
pub mod api;
pub mod app;
pub mod bounces;
pub mod cache;
pub mod clock;
pub mod config;
pub mod console;
pub mod delivery;
pub mod domain;
pub mod domains;
pub mod job_loop;
pub mod metrics;
pub mod readiness;
pub mod retention;
pub mod smtp_wire;
pub mod store;
pub mod submission;
pub mod telemetry;
pub mod webhooks;
