//! Configuration: built-in defaults ← a TOML file (`--config`) ← `HERALD_*` environment
//! variables (nested keys with `__`: `HERALD_RELAY__CONCURRENCY=16`). Unknown keys are an
//! error, so a typo never silently falls back to a default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

use crate::domain::email::Limits;
use crate::domain::retry::RetryPolicy;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address the HTTP API listens on.
    pub listen: SocketAddr,
    /// `sqlite://path` (the default, a file next to Herald) or `postgres://…`.
    pub database_url: String,
    /// The SMTP relay. Empty: deliver into `outbox_dir` as `.eml` files instead.
    pub relay_url: String,
    /// Where mail goes when no relay is configured.
    pub outbox_dir: PathBuf,
    /// Signs return paths. Empty: a key generated once and kept in the database.
    pub secret_key: String,
    /// Streams a send may name; the first is the default.
    pub streams: Vec<String>,
    pub relay: RelayConfig,
    pub delivery: DeliveryConfig,
    pub retry: RetryConfig,
    pub limits: LimitsConfig,
    pub http: HttpConfig,
    pub webhooks: WebhooksConfig,
    pub domains: DomainsConfig,
    pub inbound: InboundConfig,
    pub retention: RetentionConfig,
    pub console: ConsoleConfig,
    pub submission: SubmissionConfig,
    pub log: LogConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            database_url: "sqlite://herald.db".into(),
            relay_url: String::new(),
            outbox_dir: PathBuf::from("herald-outbox"),
            secret_key: String::new(),
            streams: vec!["transactional".into(), "broadcast".into()],
            relay: RelayConfig::default(),
            delivery: DeliveryConfig::default(),
            retry: RetryConfig::default(),
            limits: LimitsConfig::default(),
            http: HttpConfig::default(),
            webhooks: WebhooksConfig::default(),
            domains: DomainsConfig::default(),
            retention: RetentionConfig::default(),
            console: ConsoleConfig::default(),
            submission: SubmissionConfig::default(),
            inbound: InboundConfig::default(),
            log: LogConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RelayConfig {
    /// SMTP connections open at once to the relay (and so messages in flight).
    pub concurrency: usize,
    #[serde(with = "duration_text")]
    pub connect_timeout: Duration,
    /// Time allowed for each command's reply (RFC 5321 §4.5.3.2 suggests minutes; relays are fast).
    #[serde(with = "duration_text")]
    pub command_timeout: Duration,
    /// Time allowed for the reply after the message body.
    #[serde(with = "duration_text")]
    pub data_timeout: Duration,
    /// Idle connections are closed after this long.
    #[serde(with = "duration_text")]
    pub idle_timeout: Duration,
    /// PEM file with the CA that signed a relay's private certificate (added to the web roots).
    pub ca_file: Option<PathBuf>,
    /// The name Herald gives in EHLO. Empty: the machine's host name.
    pub hello_name: String,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            concurrency: 8,
            connect_timeout: Duration::from_secs(10),
            command_timeout: Duration::from_secs(60),
            data_timeout: Duration::from_secs(120),
            idle_timeout: Duration::from_secs(60),
            ca_file: None,
            hello_name: String::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryConfig {
    /// Delivery loops in this process (each claims its own batches).
    pub workers: usize,
    /// Recipients one claim takes.
    pub batch_size: usize,
    /// How long a claim is held before another worker may take the recipient over; a live
    /// worker renews it every third of this while it sends.
    #[serde(with = "duration_text")]
    pub lease: Duration,
    /// How often workers look for due mail when nothing woke them.
    #[serde(with = "duration_text")]
    pub poll_interval: Duration,
    /// On shutdown, how long in-flight deliveries may take to finish.
    #[serde(with = "duration_text")]
    pub shutdown_grace: Duration,
    /// The domain of VERP return paths (`bounces+<token>@<bounce_domain>`).
    pub bounce_domain: String,
    /// Names this process's leases, the same across its restarts, so a restart after a crash
    /// takes its leases back at once instead of waiting for them to run out. Empty: the host
    /// name and the API port. Give each process sharing one Postgres its own (containers
    /// whose host name changes at every start should set it).
    pub instance_id: String,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            workers: 4,
            batch_size: 64,
            lease: Duration::from_secs(15),
            poll_interval: Duration::from_secs(1),
            shutdown_grace: Duration::from_secs(30),
            bounce_domain: "bounces.herald.localhost".into(),
            instance_id: String::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    #[serde(with = "duration_text")]
    pub initial: Duration,
    #[serde(with = "duration_text")]
    pub max_interval: Duration,
    #[serde(with = "duration_text")]
    pub max_age: Duration,
    pub jitter: f64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        let p = RetryPolicy::default();
        Self {
            initial: p.initial,
            max_interval: p.max_interval,
            max_age: p.max_age,
            jitter: p.jitter,
        }
    }
}

impl RetryConfig {
    pub fn policy(&self) -> RetryPolicy {
        RetryPolicy {
            initial: self.initial,
            max_interval: self.max_interval,
            max_age: self.max_age,
            jitter: self.jitter,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    pub max_recipients: usize,
    pub max_message_bytes: usize,
    pub max_batch_size: usize,
    pub max_batch_body_bytes: usize,
    #[serde(with = "duration_text")]
    pub max_schedule_horizon: Duration,
    /// Requests per second each API key may make (refill rate); 0: no limit.
    pub rate_per_second: f64,
    /// How many requests a key may make at once before the rate applies.
    pub rate_burst: u32,
    /// How many Herald processes serve the API behind one load balancer. Each enforces its
    /// share of the rate and the burst (`rate_per_second / processes`), so a key gets the
    /// configured rate in all. A counter shared in the database would cost a write on every
    /// request, the very thing the limit protects; a balancer spreads a key's requests evenly.
    pub processes: u32,
    /// Free bytes to keep on the disk of the SQLite database (and of `outbox_dir` when there
    /// is no relay): below it Herald answers writes 503 and `/readyz` says not ready, before
    /// the disk is full and a write fails half-way.
    pub min_free_disk: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        let l = Limits::default();
        Self {
            max_recipients: l.max_recipients,
            max_message_bytes: l.max_message_bytes,
            max_batch_size: 100,
            max_batch_body_bytes: 50 * 1024 * 1024,
            max_schedule_horizon: Duration::from_millis(l.max_schedule_horizon_ms.unsigned_abs()),
            rate_per_second: 1000.0,
            rate_burst: 2000,
            processes: 1,
            min_free_disk: 100 * 1024 * 1024,
        }
    }
}

impl LimitsConfig {
    /// This process's share of a key's rate and burst.
    pub fn rate_share(&self) -> (f64, u32) {
        let n = self.processes.max(1);
        (
            self.rate_per_second / f64::from(n),
            self.rate_burst.div_ceil(n).max(1),
        )
    }

    pub fn email_limits(&self) -> Limits {
        Limits {
            max_recipients: self.max_recipients,
            max_message_bytes: self.max_message_bytes,
            max_schedule_horizon_ms: i64::try_from(self.max_schedule_horizon.as_millis())
                .unwrap_or(i64::MAX),
            ..Limits::default()
        }
    }

    /// The request body cap for one email: base64 inflates attachments by 4/3, plus headroom.
    pub fn max_email_body_bytes(&self) -> usize {
        self.max_message_bytes / 3 * 4 + 1024 * 1024
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhooksConfig {
    /// Allow endpoints on loopback, private and link-local addresses (receivers on the LAN).
    pub allow_private_targets: bool,
    /// Delays before the second, third, … attempt; the first is immediate.
    #[serde(with = "duration_list")]
    pub retry_schedule: Vec<Duration>,
    /// Each delay is moved randomly by up to this fraction.
    pub jitter: f64,
    /// Time allowed for one request.
    #[serde(with = "duration_text")]
    pub timeout: Duration,
    /// Requests in flight at once to one endpoint. An endpoint is sent at most this many
    /// divided by its answer time a second, and answers slow down when the machine is busy:
    /// 64 keeps pace with a busy Herald when answers take a few milliseconds (16 did not, in
    /// `bench/throughput.sh webhooks-half`); an endpoint that needs fewer sets its own
    /// `rate_limit`.
    pub concurrency_per_endpoint: usize,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        let s = |secs| Duration::from_secs(secs);
        Self {
            allow_private_targets: false,
            retry_schedule: vec![
                s(5),
                s(300),
                s(1800),
                s(7200),
                s(18_000),
                s(36_000),
                s(36_000),
            ],
            jitter: 0.1,
            timeout: s(15),
            concurrency_per_endpoint: 64,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DomainsConfig {
    /// Refuse sends whose From domain is not a verified domain of the project.
    pub require_verified: bool,
    /// DNS servers (`ip:port`) for verification; empty: the system's resolver.
    pub dns_servers: Vec<String>,
    /// The SPF `include:` to advise (the relay's); empty: no SPF advice.
    pub spf_include: String,
    /// The return-path host under each domain (`bounces` → `bounces.acme.com`); empty: none.
    pub return_path_subdomain: String,
}

impl Default for DomainsConfig {
    fn default() -> Self {
        Self {
            require_verified: false,
            dns_servers: Vec::new(),
            spf_include: String::new(),
            return_path_subdomain: "bounces".into(),
        }
    }
}

/// How long Herald keeps what it stores. The stats rollups are kept indefinitely.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Days after which message bodies and the built MIME are purged (0: kept forever).
    pub content_retention_days: u32,
    /// Days after which emails, their recipients and events are deleted (0: kept forever).
    pub event_retention_days: u32,
    /// Rows per purge transaction: small, so ingest and delivery commit in between.
    pub batch_size: u32,
    /// How often the purge job looks for work.
    #[serde(with = "duration_text")]
    pub interval: Duration,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            content_retention_days: 7,
            event_retention_days: 30,
            batch_size: 500,
            interval: Duration::from_secs(600),
        }
    }
}

/// SMTP submission: apps send through Herald over SMTP, an API key as the password.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SubmissionConfig {
    /// `ip:port` of the STARTTLS listener (port 587's kind); empty: off.
    pub listen: String,
    /// `ip:port` of the implicit-TLS listener (port 465's kind); empty: off.
    pub tls_listen: String,
    /// PEM files for STARTTLS and implicit TLS.
    pub tls_cert_file: String,
    pub tls_key_file: String,
    /// AUTH before TLS (for loopback in development only; start-up warns).
    pub allow_insecure_auth: bool,
    pub max_message_bytes: usize,
    pub max_recipients: usize,
    pub max_connections: usize,
    /// Connections open at once from one client address.
    pub max_connections_per_client: usize,
    /// Every read and write.
    #[serde(with = "duration_text")]
    pub timeout: Duration,
    /// A whole connection.
    #[serde(with = "duration_text")]
    pub session_timeout: Duration,
}

impl Default for SubmissionConfig {
    fn default() -> Self {
        Self {
            listen: String::new(),
            tls_listen: String::new(),
            tls_cert_file: String::new(),
            tls_key_file: String::new(),
            allow_insecure_auth: false,
            max_message_bytes: 10 * 1024 * 1024,
            max_recipients: 50,
            max_connections: 1000,
            max_connections_per_client: 100,
            timeout: Duration::from_secs(60),
            session_timeout: Duration::from_secs(600),
        }
    }
}

/// The operator console, served at `/` beside the API.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleConfig {
    /// Whether `herald serve` serves the console at all.
    pub enabled: bool,
    /// How long a sign-in lasts.
    #[serde(with = "duration_text")]
    pub session_ttl: Duration,
    /// Mark the session cookie `Secure` on every answer. Without it, the cookie is `Secure`
    /// only on requests a TLS proxy forwarded with `X-Forwarded-Proto: https`.
    pub secure_cookie: bool,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            session_ttl: Duration::from_secs(12 * 3600),
            secure_cookie: false,
        }
    }
}

/// Herald's own SMTP listener for bounce and complaint reports.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InboundConfig {
    /// `ip:port` to listen on (the MX of the bounce domain points here); empty: no listener.
    pub listen: String,
    pub max_message_bytes: usize,
    pub max_connections: usize,
    pub max_recipients: usize,
    /// Time allowed for each command, line of data or reply written.
    #[serde(with = "duration_text")]
    pub timeout: Duration,
    /// The longest one connection may last, whatever it does.
    #[serde(with = "duration_text")]
    pub session_timeout: Duration,
    /// Connections open at once from one client address.
    pub max_connections_per_client: usize,
    /// Connections one client address may open in a minute.
    pub connections_per_minute_per_client: u32,
    /// Commands that move no mail (NOOP, RSET, HELP, VRFY, unknown ones) one connection may send.
    pub max_junk_commands: u32,
    /// Refused commands one connection may send before it is closed.
    pub max_errors: u32,
    /// The largest message kept for `postmaster@`/`abuse@` (mail with no signed return path).
    pub unsigned_max_bytes: usize,
    /// How many such messages are kept an hour, from everyone together.
    pub unsigned_per_hour: u32,
    /// PEM certificate chain and key for STARTTLS; empty: no STARTTLS.
    pub tls_cert_file: String,
    pub tls_key_file: String,
}

impl Default for InboundConfig {
    fn default() -> Self {
        Self {
            listen: String::new(),
            max_message_bytes: 10 * 1024 * 1024,
            max_connections: 100,
            max_recipients: 50,
            timeout: Duration::from_secs(60),
            session_timeout: Duration::from_secs(600),
            max_connections_per_client: 10,
            connections_per_minute_per_client: 60,
            max_junk_commands: 20,
            max_errors: 10,
            unsigned_max_bytes: 256 * 1024,
            unsigned_per_hour: 100,
            tls_cert_file: String::new(),
            tls_key_file: String::new(),
        }
    }
}

/// A list of durations written as text (`["5s", "5m"]`).
mod duration_list {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(list: &[Duration], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(list.iter().map(super::duration_text::format))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Duration>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|t| super::duration_text::parse(t).map_err(serde::de::Error::custom))
            .collect()
    }
}

/// How long HTTP clients may take, and how many may be connected: a client that sends nothing,
/// trickles its headers or idles on keep-alive is closed, whatever it does.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Time to send a request's headers, counted from its first byte or, on a kept-alive
    /// connection, from the end of the previous answer (so also the idle timeout).
    #[serde(with = "duration_text")]
    pub header_timeout: Duration,
    /// Time for a whole request, body included, from its headers to its answer (408 after).
    #[serde(with = "duration_text")]
    pub request_timeout: Duration,
    /// Connections open at once; past it a new connection is closed at once.
    pub max_connections: usize,
    /// At shutdown, how long requests in flight may take to finish.
    #[serde(with = "duration_text")]
    pub shutdown_timeout: Duration,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(60),
            max_connections: 4096,
            shutdown_timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `pretty` or `json`.
    pub format: String,
    /// A tracing filter, such as `info` or `herald=debug,sqlx=warn`.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: "pretty".into(),
            level: "info".into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Load(#[from] Box<figment::Error>),
    #[error("configuration: {0}")]
    Invalid(String),
}

impl Config {
    /// Defaults ← `file` (if given) ← `HERALD_*` variables.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError::Invalid(format!(
                    "file {} does not exist",
                    path.display()
                )));
            }
            figment = figment.merge(Toml::file(path));
        }
        // HERALD_CONFIG names the file; HERALD_URL and HERALD_API_KEY are the shell client's.
        figment = figment.merge(
            Env::prefixed("HERALD_")
                .ignore(&["config", "url", "api_key"])
                .split("__"),
        );
        let config: Config = figment.extract().map_err(Box::new)?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: &str| Err(ConfigError::Invalid(m.to_owned()));
        if self.relay.concurrency == 0 {
            return bad("relay.concurrency must be at least 1");
        }
        if self.delivery.batch_size == 0 {
            return bad("delivery.batch_size must be at least 1");
        }
        if self.retention.batch_size == 0 {
            return bad("retention.batch_size must be at least 1");
        }
        if self.streams.is_empty() {
            return bad("streams must name at least one stream");
        }
        if !(0.0..=1.0).contains(&self.retry.jitter) {
            return bad("retry.jitter must be between 0 and 1");
        }
        if !self.relay_url.is_empty() {
            crate::delivery::relay::RelayUrl::parse(&self.relay_url)
                .map_err(|e| ConfigError::Invalid(format!("relay_url: {e}")))?;
        }
        Ok(())
    }

    /// The configuration as TOML, with every secret replaced by `"<redacted>"`.
    pub fn redacted_toml(&self) -> String {
        let mut c = self.clone();
        if !c.secret_key.is_empty() {
            c.secret_key = "<redacted>".into();
        }
        c.relay_url = redact_url_password(&c.relay_url);
        c.database_url = redact_url_password(&c.database_url);
        toml_string(&c)
    }
}

fn toml_string(c: &Config) -> String {
    // Plain data structs always serialise; fall back to Debug to stay total.
    toml::to_string_pretty(c).unwrap_or_else(|_| format!("{c:?}"))
}

/// `scheme://user:secret@host` → `scheme://user:<redacted>@host`; anything else unchanged.
pub fn redact_url_password(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("<redacted>"));
            u.to_string().replace("%3Credacted%3E", "<redacted>")
        }
        _ => raw.to_owned(),
    }
}

/// Durations written as `30s`, `5m`, `4h`, `3d`, `250ms` (or a bare number of seconds).
pub mod duration_text {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn parse(s: &str) -> Result<Duration, String> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let n: u64 = num
            .parse()
            .map_err(|_| format!("{s:?} is not a duration"))?;
        let secs = |k: u64| Ok(Duration::from_secs(n.saturating_mul(k)));
        match unit.trim() {
            "ms" => Ok(Duration::from_millis(n)),
            "" | "s" => secs(1),
            "m" => secs(60),
            "h" => secs(3600),
            "d" => secs(86_400),
            other => Err(format!(
                "unknown duration unit {other:?} (use ms, s, m, h or d)"
            )),
        }
    }

    pub fn format(d: &Duration) -> String {
        let ms = d.as_millis();
        match ms {
            0 => "0s".into(),
            ms if ms % 86_400_000 == 0 => format!("{}d", ms / 86_400_000),
            ms if ms % 3_600_000 == 0 => format!("{}h", ms / 3_600_000),
            ms if ms % 60_000 == 0 => format!("{}m", ms / 60_000),
            ms if ms % 1000 == 0 => format!("{}s", ms / 1000),
            ms => format!("{ms}ms"),
        }
    }

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Seconds(u64),
        }
        match Raw::deserialize(d)? {
            Raw::Text(t) => parse(&t).map_err(serde::de::Error::custom),
            Raw::Seconds(n) => Ok(Duration::from_secs(n)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_process_enforces_its_share_of_a_keys_rate() {
        let mut l = LimitsConfig::default();
        assert_eq!(l.rate_share(), (1000.0, 2000));
        l.processes = 3;
        assert_eq!(l.rate_share(), (1000.0 / 3.0, 667));
        l.processes = 0;
        assert_eq!(l.rate_share(), (1000.0, 2000));
    }

    #[test]
    fn durations_parse_and_format() {
        assert_eq!(duration_text::parse("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(
            duration_text::parse("250ms"),
            Ok(Duration::from_millis(250))
        );
        assert_eq!(duration_text::parse("3d"), Ok(Duration::from_secs(259_200)));
        assert!(duration_text::parse("5 weeks").is_err());
        assert_eq!(duration_text::format(&Duration::from_secs(14_400)), "4h");
    }

    fn from_toml(text: &str) -> Result<Config, Box<figment::Error>> {
        Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::string(text))
            .extract()
            .map_err(Box::new)
    }

    #[test]
    fn unknown_keys_are_errors() {
        let err = from_toml("relay_ulr = \"smtp://x\"").expect_err("typo refused");
        assert!(err.to_string().contains("relay_ulr"), "{err}");
        let err = from_toml("[relay]\nconcurency = 3").expect_err("nested typo refused");
        assert!(err.to_string().contains("concurency"), "{err}");
        let ok = from_toml("[relay]\nconcurrency = 3\n[retry]\ninitial = \"30s\"").expect("valid");
        assert_eq!(ok.relay.concurrency, 3);
        assert_eq!(ok.retry.initial, Duration::from_secs(30));
    }

    #[test]
    #[expect(clippy::result_large_err, reason = "figment::Jail's closure type")]
    fn environment_overrides_the_file() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "herald.toml",
                "listen = \"127.0.0.1:9000\"\n[relay]\nconcurrency = 3",
            )?;
            jail.set_env("HERALD_RELAY__CONCURRENCY", "12");
            jail.set_env("HERALD_DATABASE_URL", "postgres://h@db/herald");
            let c = Config::load(Some(Path::new("herald.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(c.listen.port(), 9000);
            assert_eq!(c.relay.concurrency, 12);
            assert_eq!(c.database_url, "postgres://h@db/herald");
            // The client's and the CLI's own variables are not configuration keys.
            jail.set_env("HERALD_CONFIG", "herald.toml");
            jail.set_env("HERALD_API_KEY", "hk_x");
            jail.set_env("HERALD_URL", "http://h");
            assert!(Config::load(None).is_ok());
            jail.set_env("HERALD_NOT_A_KEY", "1");
            assert!(
                Config::load(None).is_err(),
                "an unknown variable is an error too"
            );
            Ok(())
        });
    }

    #[test]
    #[expect(clippy::result_large_err, reason = "figment::Jail's closure type")]
    fn the_example_file_is_valid() {
        figment::Jail::expect_with(|_| {
            let example = Path::new(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/config/herald.example.toml"
            ));
            let c = Config::load(Some(example)).map_err(|e| e.to_string())?;
            assert_eq!(c.retention.event_retention_days, 30);
            Ok(())
        });
    }

    #[test]
    fn passwords_are_redacted() {
        let r = redact_url_password("smtps://user:s3cret@relay.example.com:465");
        assert_eq!(r, "smtps://user:<redacted>@relay.example.com:465");
        let mut c = Config {
            relay_url: "smtp://u:topsecret@h:587".into(),
            secret_key: "verysecret".into(),
            ..Config::default()
        };
        c.database_url = "postgres://pg:dbpass@localhost/test".into();
        let shown = c.redacted_toml();
        for secret in ["topsecret", "verysecret", "dbpass"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(shown.contains("[relay]"), "{shown}");
    }
}
