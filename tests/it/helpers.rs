//! `TestApp`: a real Herald on port 0 with a fresh database (SQLite file or a new Postgres
//! database), a manual clock, and no background workers: tests drain the queue themselves
//! with `run_once` until idle.

use std::sync::Arc;
use std::time::Duration;

use herald::app::App;
use herald::clock::{Clock, ManualClock};
use herald::config::Config;
use herald::delivery::{RunOutcome, Worker};
use herald::domain::api_key::{ApiKeyToken, Permission};
use herald::store::{ApiKeyRecord, Backend, Store};
use herald::webhooks::Dispatcher;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::smtp_server::TestSmtp;

/// The Postgres server tests create their databases on.
pub fn postgres_admin_url() -> String {
    std::env::var("TEST_HERALD_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// Whether the Postgres server answers. Where it does not, the test is skipped, with one line
/// (once per run) saying how to run it; unless `TEST_HERALD_REQUIRE_POSTGRES` is set (CI sets
/// it), where a missing server is a failure.
pub async fn postgres_or_skip() -> bool {
    static ANSWERS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    static SAID: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    let answers = match ANSWERS.get() {
        Some(a) => *a,
        None => {
            let url = postgres_admin_url();
            let connected =
                tokio::time::timeout(Duration::from_secs(5), sqlx::PgPool::connect(&url)).await;
            let a = match connected {
                Ok(Ok(pool)) => {
                    pool.close().await;
                    true
                }
                _ => false,
            };
            *ANSWERS.get_or_init(|| a)
        }
    };
    if !answers {
        assert!(
            std::env::var_os("TEST_HERALD_REQUIRE_POSTGRES").is_none(),
            "TEST_HERALD_REQUIRE_POSTGRES is set and Postgres does not answer at {}",
            crate::helpers::postgres_admin_url()
        );
        if !SAID.swap(true, std::sync::atomic::Ordering::SeqCst) {
            // Straight to the descriptor: the test harness captures `eprintln!` of a passing test.
            use std::io::Write as _;
            let _ = writeln!(
                std::io::stderr().lock(),
                "skipped: the Postgres tests (no server at {}; start one with trust auth and a database `test`, or set TEST_HERALD_POSTGRES_URL)",
                postgres_admin_url()
            );
        }
    }
    answers
}

/// A database that exists for one test.
pub struct TestDb {
    pub url: String,
    pg_name: Option<String>,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    pub async fn new(backend: Backend) -> Self {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("tempdir");
                let url = format!("sqlite://{}", dir.path().join("herald.db").display());
                Self {
                    url,
                    pg_name: None,
                    _dir: Some(dir),
                }
            }
            Backend::Postgres => {
                let name = format!("herald_t_{}", uuid::Uuid::new_v4().simple());
                let admin = postgres_admin_url();
                sqlx::any::install_default_drivers();
                let pool = sqlx::AnyPool::connect(&admin)
                    .await
                    .expect("connect to Postgres");
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&pool)
                    .await
                    .expect("create database");
                pool.close().await;
                let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
                Self {
                    url: format!("{base}/{name}"),
                    pg_name: Some(name),
                    _dir: None,
                }
            }
        }
    }

    /// The Postgres database's name (`None` on SQLite).
    pub fn pg_name(&self) -> Option<&str> {
        self.pg_name.as_deref()
    }

    /// Drops a Postgres database (SQLite files go with their temp dir).
    pub async fn drop_db(&self) {
        if let Some(name) = &self.pg_name
            && let Ok(pool) = sqlx::AnyPool::connect(&postgres_admin_url()).await
        {
            {
                let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .execute(&pool)
                .await;
                pool.close().await;
            }
        }
    }
}

pub struct TestApp {
    pub base: String,
    /// The bounce listener's address, when the test configured one.
    pub inbound_addr: Option<std::net::SocketAddr>,
    /// The SMTP submission listeners' addresses, when the test configured them.
    pub submission_addrs: Vec<std::net::SocketAddr>,
    pub http: reqwest::Client,
    /// A full_access key of project "alpha".
    pub key: String,
    pub worker: Worker,
    pub dispatcher: Dispatcher,
    pub verifier: herald::domains::DomainVerifier,
    pub retention: herald::retention::RetentionJob,
    pub clock: ManualClock,
    pub store: Store,
    pub outbox: tempfile::TempDir,
    pub db: TestDb,
    shutdown: CancellationToken,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

/// Settings tests usually want: short SMTP timeouts, no jitter, one relay connection per test.
pub fn test_config(db_url: &str, relay: Option<&TestSmtp>, outbox: &std::path::Path) -> Config {
    let mut c = Config {
        listen: "127.0.0.1:0".parse().expect("addr"),
        database_url: db_url.to_owned(),
        relay_url: relay.map(TestSmtp::url).unwrap_or_default(),
        outbox_dir: outbox.to_path_buf(),
        secret_key: "test-secret".into(),
        ..Config::default()
    };
    c.relay.ca_file = Some(std::path::PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/ca.pem"
    )));
    c.relay.command_timeout = Duration::from_secs(2);
    c.relay.data_timeout = Duration::from_secs(2);
    c.relay.connect_timeout = Duration::from_secs(2);
    c.retry.jitter = 0.0;
    c.webhooks.allow_private_targets = true;
    c.webhooks.jitter = 0.0;
    c.webhooks.timeout = Duration::from_secs(1);
    // Domain checks go to a test's own DNS server, never to the machine's resolver.
    c.domains.dns_servers = vec!["127.0.0.1:9".into()];
    c
}

impl TestApp {
    pub async fn spawn(backend: Backend, relay: Option<&TestSmtp>) -> Self {
        Self::spawn_with(backend, relay, |_| {}).await
    }

    pub async fn spawn_with(
        backend: Backend,
        relay: Option<&TestSmtp>,
        tweak: impl FnOnce(&mut Config),
    ) -> Self {
        let db = TestDb::new(backend).await;
        let outbox = tempfile::tempdir().expect("tempdir");
        let mut config = test_config(&db.url, relay, outbox.path());
        tweak(&mut config);
        let clock = ManualClock::new(chrono::Utc::now().timestamp_millis());
        let app = App::build(config, Arc::new(clock.clone()))
            .await
            .expect("build app");
        let base = format!("http://{}", app.addr);
        let inbound_addr = app.inbound_addr;
        let submission_addrs = app.submission_addrs.clone();
        let store = app.state.store.clone();
        let worker = app.worker.clone();
        let dispatcher = app.dispatcher.clone();
        let verifier = app.verifier.clone();
        let retention = app.retention.clone();
        let key = create_key(&store, "alpha", Permission::FullAccess, clock.now_ms()).await;
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(app.run(shutdown.clone(), 0));
        Self {
            base,
            inbound_addr,
            submission_addrs,
            http: reqwest::Client::new(),
            key,
            worker,
            dispatcher,
            verifier,
            retention,
            clock,
            store,
            outbox,
            db,
            shutdown,
            server: Some(server),
        }
    }

    /// Runs delivery steps until nothing is due; returns how many recipients were attempted.
    pub async fn drain(&self) -> usize {
        let mut total = 0;
        loop {
            match self.worker.run_once().await.expect("delivery step") {
                RunOutcome::Worked(n) => total += n,
                RunOutcome::Idle => return total,
            }
        }
    }

    /// Runs webhook dispatch steps until nothing is due; returns how many attempts were made.
    pub async fn dispatch(&self) -> usize {
        let mut total = 0;
        loop {
            match self.dispatcher.run_once().await.expect("dispatch step") {
                RunOutcome::Worked(n) => total += n,
                RunOutcome::Idle => return total,
            }
        }
    }

    /// Runs domain checks until none is due; returns how many domains were checked.
    pub async fn verify_domains(&self) -> usize {
        let mut total = 0;
        loop {
            match self.verifier.run_once().await.expect("verification step") {
                RunOutcome::Worked(n) => total += n,
                RunOutcome::Idle => return total,
            }
        }
    }

    /// Runs retention steps until nothing is left to purge; returns how many rows went.
    pub async fn purge(&self) -> usize {
        let mut total = 0;
        loop {
            match self.retention.run_once().await.expect("retention step") {
                RunOutcome::Worked(n) => total += n,
                RunOutcome::Idle => return total,
            }
        }
    }

    pub fn advance(&self, d: Duration) {
        self.clock
            .advance_ms(i64::try_from(d.as_millis()).expect("fits"));
    }

    pub async fn post(
        &self,
        path: &str,
        key: &str,
        body: &Value,
    ) -> (StatusCode, Value, reqwest::header::HeaderMap) {
        self.request(reqwest::Method::POST, path, key, Some(body), &[])
            .await
    }

    pub async fn get(&self, path: &str, key: &str) -> (StatusCode, Value) {
        let (s, v, _) = self
            .request(reqwest::Method::GET, path, key, None, &[])
            .await;
        (s, v)
    }

    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        key: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> (StatusCode, Value, reqwest::header::HeaderMap) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(key);
        if let Some(b) = body {
            req = req.json(b);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.expect("body");
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, value, headers)
    }

    /// Asks `/readyz` until it answers `want`, within `within`; returns how long that took.
    pub async fn readyz_until(&self, want: StatusCode, within: Duration) -> Duration {
        readyz_until(&self.http, &self.base, want, within).await
    }

    /// Sends an email and returns its id, asserting 202.
    pub async fn send(&self, body: &Value) -> String {
        let (status, v, _) = self.post("/v1/emails", &self.key, body).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{v}");
        v["id"].as_str().expect("id").to_owned()
    }

    pub async fn email(&self, id: &str) -> Value {
        let (status, v) = self.get(&format!("/v1/emails/{id}"), &self.key).await;
        assert_eq!(status, StatusCode::OK, "{v}");
        v
    }

    pub async fn events(&self, id: &str) -> Vec<Value> {
        let (status, v) = self
            .get(&format!("/v1/emails/{id}/events"), &self.key)
            .await;
        assert_eq!(status, StatusCode::OK, "{v}");
        v["data"].as_array().expect("data").clone()
    }

    /// Stops the server and drops the database.
    pub async fn finish(mut self) {
        self.shutdown.cancel();
        if let Some(s) = self.server.take() {
            let _ = s.await;
        }
        self.db.drop_db().await;
    }
}

/// Creates a project (if new) and a key in it; returns the token.
pub async fn create_key(store: &Store, project: &str, permission: Permission, now: i64) -> String {
    let p = store.ensure_project(project, now).await.expect("project");
    let token = ApiKeyToken::generate();
    store
        .insert_api_key(&ApiKeyRecord {
            id: uuid::Uuid::now_v7().to_string(),
            project_id: p.id,
            name: "test".into(),
            prefix: token.prefix(),
            secret_hash: token.secret_hash(),
            permission: permission.as_str().into(),
            created_at: now,
            last_used_at: None,
            expires_at: None,
            revoked_at: None,
            allowed_domains: None,
        })
        .await
        .expect("key");
    token.reveal()
}

/// A minimal valid email to `to`.
pub fn email_to(to: &[&str]) -> Value {
    json!({
        "from": "Acme <orders@acme.com>",
        "to": to,
        "subject": "Your order",
        "text": "Thanks for your order.",
    })
}

/// Recipient statuses by address.
pub fn statuses(email: &Value) -> Vec<(String, String)> {
    email["recipients"]
        .as_array()
        .expect("recipients")
        .iter()
        .map(|r| {
            (
                r["email"].as_str().unwrap_or_default().to_owned(),
                r["status"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// Asks `{base}/readyz` until it answers `want`, within `within`; returns how long that took.
pub async fn readyz_until(
    http: &reqwest::Client,
    base: &str,
    want: StatusCode,
    within: Duration,
) -> Duration {
    let started = std::time::Instant::now();
    loop {
        let got = http
            .get(format!("{base}/readyz"))
            .send()
            .await
            .map(|r| r.status());
        if matches!(got, Ok(s) if s == want) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "/readyz still answers {got:?} after {within:?}, not {want}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
