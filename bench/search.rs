//! Search on a large table: seeds N emails (default 1,000,000) through Herald's own ingest
//! path into a database, starts Herald on it, and times `GET /v1/emails` pages with the
//! filters operators use, over real HTTP.
//!
//! Then the same for the operator console's pages, signed in as an operator.
//!
//! `cargo bench --bench search` (SQLite in `target/bench-search.db`, kept between runs so the
//! seeding happens once); `HERALD_BENCH_EMAILS=100000` for a smaller table;
//! `HERALD_BENCH_DATABASE_URL=postgres://…` for Postgres. Prints two tables: median and p95
//! of 30 requests per query or page, interleaved round by round.

use std::sync::Arc;
use std::time::{Duration, Instant};

use herald::app::App;
use herald::clock::SystemClock;
use herald::config::Config;
use herald::domain::api_key::{ApiKeyToken, Permission};
use herald::store::{ApiKeyRecord, NewEmail, NewEvent, NewRecipient};
use tokio_util::sync::CancellationToken;

const BATCH: usize = 1_000;
const ROUNDS: usize = 30;

/// A small deterministic generator (xorshift), so every run seeds the same table.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn email(project: &str, i: u64, rng: &mut Rng, now: i64) -> NewEmail {
    let id = uuid::Uuid::now_v7().to_string();
    // Tags: receipt on half the mail, welcome on a tenth, reset on 1 %, audit on 0.01 %.
    let mut tags = Vec::new();
    let roll = rng.below(10_000);
    if roll < 5_000 {
        tags.push("receipt");
    } else if roll < 6_000 {
        tags.push("welcome");
    } else if roll < 6_100 {
        tags.push("reset");
    } else if roll == 6_100 {
        tags.push("audit");
    }
    // Outcomes: 97 % sent, 2 % bounced, 0.5 % delayed, 0.01 % failed, the rest suppressed.
    let status = match rng.below(10_000) {
        0..9_700 => "sent",
        9_700..9_900 => "bounced",
        9_900..9_950 => "delivery_delayed",
        9_950 => "failed",
        _ => "suppressed",
    };
    let rcpt = format!("user{}@example{}.com", rng.below(200_000), rng.below(50));
    let from = format!("sender{}@acme.com", rng.below(5));
    let created_at = now - i64::try_from(i).unwrap_or(0);
    NewEmail {
        id: id.clone(),
        project_id: project.to_owned(),
        api_key_id: None,
        message_id: format!("<{id}@acme.com>"),
        stream: "transactional".into(),
        from_email: from,
        from_name: None,
        reply_to: "[]".into(),
        subject: format!("Order {i}"),
        tags: serde_json::to_string(&tags).unwrap_or_default(),
        metadata: serde_json::json!({"order_id": format!("o-{i}"), "user": format!("u-{}", rng.below(50_000))})
            .to_string(),
        text_body: Some("Thanks for your order.".into()),
        html_body: None,
        mime: b"Subject: Order\r\n\r\nThanks for your order.\r\n".to_vec(),
        created_at,
        scheduled_at: None,
        expires_at: None,
        smtp_client: None,
        recipients: vec![NewRecipient {
            id: uuid::Uuid::now_v7().to_string(),
            position: 0,
            address: rcpt.clone(),
            name: None,
            kind: herald::domain::email::RecipientKind::To,
            status: herald::domain::status::RecipientStatus::parse(status).expect("a status"),
            next_attempt_at: created_at,
            deadline_at: created_at + 3 * 86_400_000,
        }],
        events: vec![NewEvent::new(
            None,
            Some(&rcpt),
            herald::domain::event::EventType::Queued,
            herald::domain::event::EventData::Empty {},
            created_at,
        )],
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // `cargo test --all-targets` runs bench binaries too, without `--bench`: nothing to do then.
    if !std::env::args().any(|a| a == "--bench") {
        return Ok(());
    }
    let n: u64 = std::env::var("HERALD_BENCH_EMAILS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let url = match std::env::var("HERALD_BENCH_DATABASE_URL") {
        Ok(url) => url,
        Err(_) => {
            let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
            std::fs::create_dir_all(&dir)?;
            format!("sqlite://{}/bench-search-{n}.db", dir.display())
        }
    };
    let mut config = Config {
        listen: "127.0.0.1:0".parse()?,
        database_url: url.clone(),
        secret_key: "bench".into(),
        outbox_dir: std::env::temp_dir().join("herald-bench-outbox"),
        ..Config::default()
    };
    config.limits.rate_per_second = 0.0;
    let app = App::build(config, Arc::new(SystemClock)).await?;
    let store = app.state.store.clone();
    let base = format!("http://{}", app.addr);
    let now = chrono::Utc::now().timestamp_millis();
    let project = store.ensure_project("bench", now).await?;
    let token = ApiKeyToken::generate();
    store
        .insert_api_key(&ApiKeyRecord {
            id: uuid::Uuid::now_v7().to_string(),
            project_id: project.id.clone(),
            name: "bench".into(),
            prefix: token.prefix(),
            secret_hash: token.secret_hash(),
            permission: Permission::FullAccess.as_str().into(),
            created_at: now,
            last_used_at: None,
            expires_at: None,
            revoked_at: None,
            allowed_domains: None,
        })
        .await?;
    let key = token.reveal();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(app.run(shutdown.clone(), 0));
    let http = reqwest::Client::new();

    let seeded = store.count_project_emails(&project.id).await?;
    if seeded < i64::try_from(n).unwrap_or(i64::MAX) {
        let started = Instant::now();
        let mut rng = Rng(0x5eed_u64 ^ u64::try_from(seeded).unwrap_or(0));
        let mut i = u64::try_from(seeded).unwrap_or(0);
        while i < n {
            let batch: Vec<NewEmail> = (i..(i + BATCH as u64).min(n))
                .map(|j| email(&project.id, j, &mut rng, now))
                .collect();
            i += batch.len() as u64;
            store.insert_emails(batch, None).await?;
            if i % 100_000 == 0 {
                eprintln!(
                    "seeded {i} emails ({:.0}/s)",
                    i as f64 / started.elapsed().as_secs_f64()
                );
            }
        }
        eprintln!(
            "seeded {n} emails in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }

    // A recipient, an order id and a user that exist, read back from the newest page.
    let newest: serde_json::Value = http
        .get(format!("{base}/v1/emails?limit=1"))
        .bearer_auth(&key)
        .send()
        .await?
        .json()
        .await?;
    let newest_id = newest["data"][0]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let order = newest["data"][0]["metadata"]["order_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let user = newest["data"][0]["metadata"]["user"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let (_, recipients) = store.get_email(&project.id, &newest_id).await?;
    let recipient = recipients
        .first()
        .map(|r| r.address.clone())
        .unwrap_or_default();
    let queries: Vec<(&str, String)> = vec![
        ("newest page (no filter)", "limit=20".into()),
        (
            "page 2 (after cursor)",
            format!("limit=20&after={newest_id}"),
        ),
        ("status=sent (97 %)", "status=sent".into()),
        ("status=bounced (2 %)", "status=bounced".into()),
        ("status=failed (0.01 %)", "status=failed".into()),
        ("tag=receipt (50 %)", "tag=receipt".into()),
        ("tag=reset (1 %)", "tag=reset".into()),
        ("tag=audit (0.01 %)", "tag=audit".into()),
        ("recipient=<one address>", format!("recipient={recipient}")),
        (
            "metadata[order_id]=<one>",
            format!("metadata[order_id]={order}"),
        ),
        (
            "metadata[user]=<~20 emails>",
            format!("metadata[user]={user}"),
        ),
        ("from=<one of 5 senders>", "from=sender3@acme.com".into()),
        (
            "tag=reset&status=bounced",
            "tag=reset&status=bounced".into(),
        ),
    ];
    let mut timings: Vec<Vec<Duration>> = vec![Vec::new(); queries.len()];
    let mut rows = vec![0usize; queries.len()];
    for _ in 0..ROUNDS {
        for (i, (_, q)) in queries.iter().enumerate() {
            let t = Instant::now();
            let resp = http
                .get(format!("{base}/v1/emails?{q}"))
                .bearer_auth(&key)
                .send()
                .await?;
            anyhow::ensure!(resp.status().is_success(), "{q}: {}", resp.status());
            let v: serde_json::Value = resp.json().await?;
            timings[i].push(t.elapsed());
            rows[i] = v["data"].as_array().map_or(0, Vec::len);
        }
    }
    let backend = if url.starts_with("postgres") {
        "Postgres"
    } else {
        "SQLite"
    };
    println!(
        "GET /v1/emails on {n} emails ({backend}), {ROUNDS} requests per query, interleaved; \
         {} cores, load {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    println!(
        "{:<32} {:>5} {:>10} {:>10}",
        "query", "rows", "median", "p95"
    );
    for (i, (name, _)) in queries.iter().enumerate() {
        let mut t = timings[i].clone();
        t.sort();
        println!(
            "{name:<32} {:>5} {:>8.2}ms {:>8.2}ms",
            rows[i],
            percentile(&t, 0.5).as_secs_f64() * 1e3,
            percentile(&t, 0.95).as_secs_f64() * 1e3
        );
    }
    console_pages(&store, &base, &project.id, &newest_id, &recipient).await?;
    shutdown.cancel();
    let _ = server.await;
    Ok(())
}

/// Times the console's pages on the same table, signed in as an admin: what an operator
/// waits for (loopback HTTP included, so an upper bound of the server's time).
async fn console_pages(
    store: &herald::store::Store,
    base: &str,
    project: &str,
    email_id: &str,
    recipient: &str,
) -> anyhow::Result<()> {
    let password = "bench password, long enough";
    let email = "bench@example.com";
    if store.find_operator(email).await?.is_none() {
        store
            .create_operator(&herald::store::OperatorRecord {
                id: uuid::Uuid::now_v7().to_string(),
                email: email.into(),
                password_hash: herald::domain::operator::hash_password(password)
                    .map_err(|e| anyhow::anyhow!("{e}"))?,
                role: herald::domain::states::OperatorRole::Admin,
                created_at: chrono::Utc::now().timestamp_millis(),
            })
            .await?;
    }
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let form = http.get(format!("{base}/sign-in")).send().await?;
    let form_cookie = form
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .unwrap_or_default()
        .to_owned();
    let page = form.text().await?;
    let at = page.find("name=\"csrf\" value=\"").unwrap_or(0) + 19;
    let token = page.get(at..at + 43).unwrap_or_default().to_owned();
    let signed_in = http
        .post(format!("{base}/sign-in"))
        .header("cookie", form_cookie)
        .form(&[("email", email), ("password", password), ("csrf", &token)])
        .send()
        .await?;
    let cookie = signed_in
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .ok_or_else(|| anyhow::anyhow!("no session cookie: {}", signed_in.status()))?
        .to_owned();
    let p = format!("/projects/{project}");
    let pages: Vec<(&str, String)> = vec![
        ("overview, 24 h", p.clone()),
        ("overview, 30 days", format!("{p}?period=30d")),
        ("emails, newest", format!("{p}/emails")),
        (
            "emails, by recipient",
            format!("{p}/emails?recipient={recipient}"),
        ),
        (
            "emails, status=bounced",
            format!("{p}/emails?status=bounced"),
        ),
        (
            "emails, subject (common)",
            format!("{p}/emails?subject=order+999"),
        ),
        (
            "emails, subject (found nowhere)",
            format!("{p}/emails?subject=refund"),
        ),
        ("email", format!("{p}/emails/{email_id}")),
        ("bounces, 7 days", format!("{p}/bounces?period=7d")),
        ("bounces, 30 days", format!("{p}/bounces?period=30d")),
        ("suppressions", format!("{p}/suppressions")),
        ("webhooks", format!("{p}/webhooks")),
        ("domains", format!("{p}/domains")),
        ("API keys", format!("{p}/keys")),
        ("audit log", format!("{p}/audit")),
    ];
    let mut timings: Vec<Vec<Duration>> = vec![Vec::new(); pages.len()];
    for _ in 0..ROUNDS {
        for (i, (_, path)) in pages.iter().enumerate() {
            let t = Instant::now();
            let resp = http
                .get(format!("{base}{path}"))
                .header("cookie", &cookie)
                .send()
                .await?;
            anyhow::ensure!(resp.status().is_success(), "{path}: {}", resp.status());
            let _ = resp.bytes().await?;
            timings[i].push(t.elapsed());
        }
    }
    println!("\nconsole pages, {ROUNDS} requests per page, interleaved");
    println!("{:<32} {:>10} {:>10}", "page", "median", "p95");
    for (i, (name, _)) in pages.iter().enumerate() {
        let mut t = timings[i].clone();
        t.sort();
        println!(
            "{name:<32} {:>8.2}ms {:>8.2}ms",
            percentile(&t, 0.5).as_secs_f64() * 1e3,
            percentile(&t, 0.95).as_secs_f64() * 1e3
        );
    }
    Ok(())
}
