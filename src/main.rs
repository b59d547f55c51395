//! The `herald` command: parses the command line and calls into the library.

/// glibc's allocator spends a fifth of the ingest path's CPU in malloc and free under many
/// threads; mimalloc's per-thread heaps do not.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

#[path = "cli/operators.rs"]
mod operators;
use tokio_util::sync::CancellationToken;

use herald::app::{App, cancel_on_signals};
use herald::clock::{Clock, SystemClock, format_ms};
use herald::config::Config;
use herald::domain::address::domain_name;
use herald::domain::api_key::{ApiKeyToken, Permission};
use herald::store::{ApiKeyRecord, Store};

#[derive(Parser)]
#[command(
    name = "herald",
    version,
    about = "A self-hosted HTTP-to-SMTP transactional email gateway"
)]
struct Cli {
    /// A TOML configuration file (HERALD_* environment variables override it).
    #[arg(long, global = true, env = "HERALD_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP API and the delivery workers.
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Print the effective configuration, secrets redacted.
    Config,
    /// Print the OpenAPI document (as committed in `openapi/openapi.json`).
    Openapi,
    /// Manage API keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Manage the operators who sign in to the console.
    Operators {
        #[command(subcommand)]
        command: operators::OperatorsCommand,
    },
    /// Mint an admin token (a JWT) for project administration over the API.
    AdminToken {
        /// How long the token is valid (such as 30m, 1h, 1d).
        #[arg(long, default_value = "1h")]
        ttl: String,
        /// Who the token is for (logged with every change made with it).
        #[arg(long, default_value = "admin")]
        subject: String,
    },
    /// Send an email through a running Herald (a small client for trying it from a shell).
    Send {
        #[command(flatten)]
        client: ClientArgs,
        #[arg(long)]
        from: String,
        #[arg(long, required = true)]
        to: Vec<String>,
        #[arg(long)]
        subject: String,
        #[arg(long)]
        text: Option<String>,
        #[arg(long)]
        html: Option<String>,
    },
    /// Show where an email is: its status and each recipient's.
    Status {
        #[command(flatten)]
        client: ClientArgs,
        id: String,
    },
    /// Bounce and complaint reports.
    Bounce {
        #[command(subcommand)]
        command: BounceCommand,
    },
}

#[derive(clap::Args)]
struct ClientArgs {
    /// Herald's base URL.
    #[arg(long, env = "HERALD_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// An API key (hk_…).
    #[arg(long, env = "HERALD_API_KEY", hide_env_values = true)]
    key: String,
}

#[derive(Subcommand)]
enum BounceCommand {
    /// Parse report files (DSN, plain-text bounces, ARF) and print one JSON object per file.
    Parse {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Read kept inbound messages again with today's parser. Effects a message already made
    /// are not made again (no duplicate events, webhooks or suppressions).
    Reprocess {
        /// Which messages: received, unknown, unmatched, parse_error, processed, or all (all
        /// but processed).
        #[arg(long, default_value = "all")]
        status: String,
        /// Only messages received at or after this time (RFC 3339).
        #[arg(long)]
        since: Option<String>,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Create a key (and its project, if new) and print the token once.
    Create {
        #[arg(long, default_value = "default")]
        project: String,
        #[arg(long, default_value = "full_access", value_parser = ["full_access", "sending_access"])]
        permission: String,
        #[arg(long, default_value = "cli")]
        name: String,
        /// Limit the key to sending from this domain (repeat for several).
        #[arg(long)]
        allowed_domain: Vec<String>,
    },
    /// List a project's live keys.
    List {
        #[arg(long, default_value = "default")]
        project: String,
    },
    /// Revoke a key by id.
    Revoke {
        id: String,
        #[arg(long, default_value = "default")]
        project: String,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Command::Bounce {
        command: BounceCommand::Parse { files },
    } = &cli.command
    {
        // Needs no configuration and no database.
        return parse_bounces(files);
    }
    if let Command::Openapi = &cli.command {
        println!("{}", herald::api::openapi::document_json());
        return Ok(());
    }
    match &cli.command {
        Command::Send {
            client,
            from,
            to,
            subject,
            text,
            html,
        } => {
            let body = serde_json::json!({"from": from, "to": to, "subject": subject, "text": text, "html": html});
            return client_call(client, reqwest::Method::POST, "/v1/emails", Some(body)).await;
        }
        Command::Status { client, id } => {
            return client_call(
                client,
                reqwest::Method::GET,
                &format!("/v1/emails/{id}"),
                None,
            )
            .await;
        }
        _ => {}
    }
    let config = Config::load(cli.config.as_deref())?;
    herald::telemetry::init(&config.log.format, &config.log.level);
    match cli.command {
        Command::Serve => serve(config).await,
        Command::Migrate => {
            let store = Store::connect(&config.database_url, 2).await?;
            let applied = store.migrate().await?;
            if applied.is_empty() {
                println!("database is up to date");
            }
            for m in applied {
                println!("applied {m}");
            }
            Ok(())
        }
        Command::Config => {
            print!("{}", config.redacted_toml());
            Ok(())
        }
        Command::Keys { command } => keys(config, command).await,
        Command::Operators { command } => {
            let store = Store::open(&config.database_url, 2)
                .await
                .context("opening the database")?;
            let done = operators::run(&store, command).await;
            store.close().await;
            done
        }
        Command::AdminToken { ttl, subject } => {
            let ttl = herald::config::duration_text::parse(&ttl)
                .map_err(|e| anyhow::anyhow!("--ttl: {e}"))?;
            let key = if config.secret_key.is_empty() {
                let store = Store::open(&config.database_url, 2)
                    .await
                    .context("opening the database")?;
                let k = herald::app::master_key(&store, &config).await?;
                store.close().await;
                k
            } else {
                config.secret_key.clone()
            };
            let tokens = herald::domain::admin_token::AdminTokens::new(key.as_bytes());
            let now = SystemClock.now_ms() / 1000;
            let ttl = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX);
            let token = tokens
                .mint(&subject, now, ttl)
                .map_err(|e| anyhow::anyhow!("--ttl: {e}"))?;
            eprintln!(
                "admin token for {subject}, valid until {}:",
                format_ms((now + ttl) * 1000)
            );
            println!("{token}");
            Ok(())
        }
        Command::Bounce {
            command: BounceCommand::Reprocess { status, since },
        } => reprocess_bounces(config, &status, since.as_deref()).await,
        Command::Bounce { .. }
        | Command::Send { .. }
        | Command::Status { .. }
        | Command::Openapi => Ok(()),
    }
}

/// Calls the API and prints the answer: the JSON body on success, the problem on failure
/// (exit status 1).
async fn client_call(
    c: &ClientArgs,
    method: reqwest::Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> anyhow::Result<()> {
    let mut req = reqwest::Client::new()
        .request(method, format!("{}{path}", c.url.trim_end_matches('/')))
        .bearer_auth(&c.key);
    if let Some(b) = body {
        let b = serde_json::to_vec(&strip_nulls(b))?;
        req = req.header("content-type", "application/json").body(b);
    }
    let resp = req
        .send()
        .await
        .with_context(|| format!("calling {}", c.url))?;
    let status = resp.status();
    let text = resp.text().await?;
    let pretty = serde_json::from_str::<serde_json::Value>(&text)
        .and_then(|v| serde_json::to_string_pretty(&v))
        .unwrap_or(text);
    if status.is_success() {
        println!("{pretty}");
        Ok(())
    } else {
        eprintln!("{pretty}");
        anyhow::bail!("Herald answered {status}")
    }
}

fn strip_nulls(v: serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Object(m) => m.into_iter().filter(|(_, v)| !v.is_null()).collect(),
        other => other,
    }
}

fn parse_bounces(files: &[PathBuf]) -> anyhow::Result<()> {
    for file in files {
        let raw = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
        let report = herald::bounces::report::parse_report(&raw);
        let mut v = serde_json::to_value(&report)?;
        v["file"] = serde_json::Value::String(file.display().to_string());
        println!("{}", serde_json::to_string(&v)?);
    }
    Ok(())
}

async fn reprocess_bounces(
    config: Config,
    status: &str,
    since: Option<&str>,
) -> anyhow::Result<()> {
    let statuses = herald::bounces::inbound::InboundStatus::selection(status).ok_or_else(|| {
        anyhow::anyhow!(
            "--status must be received, unknown, unmatched, parse_error, processed or all"
        )
    })?;
    let since = match since {
        None => 0,
        Some(t) => chrono::DateTime::parse_from_rfc3339(t)
            .map_err(|e| anyhow::anyhow!("--since: {e}"))?
            .timestamp_millis(),
    };
    let store = Store::open(&config.database_url, 4)
        .await
        .context("opening the database")?;
    let processor =
        herald::app::inbound_processor(&store, &config, std::sync::Arc::new(SystemClock)).await?;
    let summary = processor
        .reprocess(&statuses, since, SystemClock.now_ms())
        .await?;
    println!("{}", serde_json::to_string(&summary)?);
    store.close().await;
    Ok(())
}

async fn serve(config: Config) -> anyhow::Result<()> {
    if config.relay_url.is_empty() {
        let dir = std::fs::canonicalize(".")
            .map(|d| d.join(&config.outbox_dir))
            .unwrap_or_else(|_| config.outbox_dir.clone());
        tracing::warn!("************************************************************");
        tracing::warn!("* NO SMTP RELAY CONFIGURED: mail is written to files, NOT sent *");
        tracing::warn!("* set HERALD_RELAY_URL=smtps://user:pass@host:465 to send     *");
        tracing::warn!("************************************************************");
        tracing::warn!(outbox = %dir.display(), "delivering into this directory as .eml files");
    }
    let workers = config.delivery.workers;
    let app = App::from_config(config).await?;
    tracing::info!(addr = %app.addr, "Herald is listening");
    let shutdown = CancellationToken::new();
    cancel_on_signals(shutdown.clone());
    app.run(shutdown, workers).await?;
    tracing::info!("Herald stopped");
    Ok(())
}

async fn keys(config: Config, command: KeysCommand) -> anyhow::Result<()> {
    let store = Store::open(&config.database_url, 2)
        .await
        .context("opening the database")?;
    let now = SystemClock.now_ms();
    match command {
        KeysCommand::Create {
            project,
            permission,
            name,
            allowed_domain,
        } => {
            // Checked before the project is made: a refused command leaves nothing behind.
            let permission = Permission::parse(&permission).context("permission")?;
            let allowed_domain = allowed_domain
                .iter()
                .map(|d| {
                    domain_name(d)
                        .with_context(|| format!("--allowed-domain {d:?} is not a domain name"))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let project = store.ensure_project(&project, now).await?;
            let token = ApiKeyToken::generate();
            let record = ApiKeyRecord {
                id: uuid::Uuid::now_v7().to_string(),
                project_id: project.id.clone(),
                name,
                prefix: token.prefix(),
                secret_hash: token.secret_hash(),
                permission: permission.as_str().to_owned(),
                created_at: now,
                last_used_at: None,
                expires_at: None,
                revoked_at: None,
                allowed_domains: (!allowed_domain.is_empty()).then_some(allowed_domain),
            };
            store.insert_api_key(&record).await?;
            eprintln!(
                "created {} key {} in project {} (shown once; Herald keeps only its hash):",
                record.permission, record.id, project.name
            );
            println!("{}", token.reveal());
        }
        KeysCommand::List { project } => {
            let project = store.ensure_project(&project, now).await?;
            for k in store.list_api_keys(&project.id).await? {
                println!(
                    "{}  {}  {:<15} {}  last used {}{}",
                    k.id,
                    k.prefix,
                    k.permission,
                    k.name,
                    k.last_used_at.map_or_else(|| "never".into(), format_ms),
                    k.allowed_domains
                        .map(|d| format!("  sends from {}", d.join(", ")))
                        .unwrap_or_default()
                );
            }
        }
        KeysCommand::Revoke { id, project } => {
            let project = store.ensure_project(&project, now).await?;
            store
                .revoke_api_key(&project.id, &id, now)
                .await
                .with_context(|| format!("no live key {id} in project {}", project.name))?;
            println!("revoked {id}");
        }
    }
    store.close().await;
    Ok(())
}
