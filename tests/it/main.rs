//! Herald's integration tests: one binary, real HTTP, real SMTP over TCP, real SQLite and
//! Postgres.

mod dns_server;
mod helpers;
mod process;
mod smtp_server;

mod api_keys;
mod bounce_corpus;
mod bounce_mutations;
mod checkpoints;
mod cli;
mod console;
mod console_browser;
mod crash;
mod delivery;
mod domains;
mod emails;
mod faults;
mod http_limits;
mod inbound;
mod interop;
mod listener;
mod outage;
mod projects;
mod receiver;
mod retention;
mod stats;
mod store_contract;
mod submission;
mod submission_postfix;
mod suppressions;
mod webhook_lanes;
mod webhooks;

/// Runs an `async fn(Backend)` test once on SQLite and once on Postgres.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name(herald::store::Backend::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if $crate::helpers::postgres_or_skip().await {
                    super::$name(herald::store::Backend::Postgres).await
                }
            }
        }
    )*};
}

/// Runs an `async fn(Backend)` test on SQLite only.
#[macro_export]
macro_rules! on_sqlite {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name(herald::store::Backend::Sqlite).await
            }
        }
    )*};
}
