#![cfg_attr(not(test), warn(clippy::string_slice, clippy::indexing_slicing))]
//! Pure types and rules: no I/O, nothing of Herald's imported from above.
//!
//! Everything that reaches the store or the wire has been parsed into one of these
//! types first, so the rest of the code never re-checks an address or a key.

pub mod address;
pub mod admin_token;
pub mod api_key;
pub mod bounce;
pub mod dkim;
pub mod email;
pub mod event;
pub mod mime;
pub mod operator;
pub mod retry;
pub mod sealing;
pub mod states;
pub mod status;
pub mod suppression;
pub mod verp;
