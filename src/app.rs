//! Builds Herald from its configuration and runs it: the HTTP server and the delivery
//! workers, until shutdown.
//!
//! Shutdown (SIGTERM/SIGINT, or the token): stop accepting requests and claiming mail; let
//! in-flight deliveries finish within `delivery.shutdown_grace`; give back the leases of any
//! that did not, so another process (or the next start) sends them at once; exit.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::api::{self, AppState};
use crate::bounces::listener::ListenerSettings;
use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::delivery::mailer::DirectoryMailer;
use crate::delivery::relay::RelayUrl;
use crate::delivery::smtp::{SmtpRelay, SmtpSettings};
use crate::delivery::{Mailer, Worker};
use crate::domain::sealing::Sealer;
use crate::domain::verp::VerpSigner;
use crate::domains::DomainVerifier;
use crate::store::Store;
use crate::webhooks::Dispatcher;

/// A built, not yet running Herald.
pub struct App {
    pub state: AppState,
    /// A worker configured like the running ones; tests call `run_once` on it.
    pub worker: Worker,
    /// The webhook dispatcher (tests call `run_once` on it).
    pub dispatcher: Dispatcher,
    /// The domain verifier (tests call `run_once` on it).
    pub verifier: DomainVerifier,
    /// The retention purge (tests call `run_once` on it).
    pub retention: crate::retention::RetentionJob,
    pub listener: TcpListener,
    pub addr: SocketAddr,
    /// The bounce listener (SMTP), if `inbound.listen` is set.
    pub inbound: Option<(TcpListener, ListenerSettings)>,
    pub inbound_addr: Option<SocketAddr>,
    /// The SMTP submission listeners (STARTTLS, implicit TLS), if configured.
    pub submission: Vec<(TcpListener, crate::submission::Settings, bool)>,
    /// Their addresses, in the same order.
    pub submission_addrs: Vec<SocketAddr>,
}

/// The mailer the configuration asks for.
pub fn mailer(config: &Config) -> anyhow::Result<Mailer> {
    if config.relay_url.is_empty() {
        return Ok(Mailer::Directory(DirectoryMailer::new(
            config.outbox_dir.clone(),
        )));
    }
    let url = RelayUrl::parse(&config.relay_url).map_err(|e| anyhow::anyhow!("relay_url: {e}"))?;
    let ca_pem = match &config.relay.ca_file {
        Some(path) => Some(
            std::fs::read(path)
                .with_context(|| format!("reading relay.ca_file {}", path.display()))?,
        ),
        None => None,
    };
    let r = &config.relay;
    let settings = SmtpSettings {
        concurrency: r.concurrency,
        connect_timeout: r.connect_timeout,
        command_timeout: r.command_timeout,
        data_timeout: r.data_timeout,
        idle_timeout: r.idle_timeout,
        hello_name: (!r.hello_name.is_empty()).then(|| r.hello_name.clone()),
        ca_pem,
    };
    Ok(Mailer::Smtp(Box::new(
        SmtpRelay::new(url, settings).map_err(|e| anyhow::anyhow!(e))?,
    )))
}

/// The key that signs return paths, webhooks' secrets at rest and admin tokens: the configured
/// `secret_key`, else one generated once and kept in the database.
pub async fn master_key(store: &Store, config: &Config) -> anyhow::Result<String> {
    if !config.secret_key.is_empty() {
        return Ok(config.secret_key.clone());
    }
    Ok(store
        .setting_or_insert("master_key", || {
            let bytes: [u8; 32] = rand::random();
            bytes.iter().map(|b| format!("{b:02x}")).collect()
        })
        .await?)
}

/// This process's stable name (see `delivery.instance_id`).
fn instance_id(config: &Config, port: u16) -> String {
    if !config.delivery.instance_id.is_empty() {
        return config.delivery.instance_id.clone();
    }
    let host = hostname::get()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".into());
    format!("{host}:{port}")
}

/// The reader of inbound reports over a store, for the command line (no server).
pub async fn inbound_processor(
    store: &Store,
    config: &Config,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<crate::bounces::inbound::InboundProcessor> {
    let key = master_key(store, config).await?;
    Ok(crate::bounces::inbound::InboundProcessor {
        store: store.clone(),
        clock,
        verp: VerpSigner::new(key.as_bytes()),
        bounce_domain: config.delivery.bounce_domain.clone(),
        events_wake: Arc::default(),
        metrics: Arc::default(),
    })
}

impl App {
    /// Opens the store (migrating it), binds the listener, and prepares the workers.
    pub async fn build(config: Config, clock: Arc<dyn Clock>) -> anyhow::Result<Self> {
        let store = Store::open(&config.database_url, 16)
            .await
            .context("opening the database")?;
        let mailer = Arc::new(mailer(&config)?);
        let key = master_key(&store, &config).await?;
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("binding {}", config.listen))?;
        let addr = listener.local_addr()?;
        let config = Arc::new(config);
        let sealer = Arc::new(Sealer::new(key.as_bytes()));
        let state = AppState::new(
            store.clone(),
            Arc::clone(&config),
            Arc::clone(&clock),
            Arc::clone(&sealer),
            VerpSigner::new(key.as_bytes()),
            crate::domain::admin_token::AdminTokens::new(key.as_bytes()),
        );
        let w = &config.webhooks;
        let client = crate::webhooks::client::build_client(w.timeout, w.allow_private_targets)
            .context("building the webhook client")?;
        let dispatcher = Dispatcher::new(
            store.clone(),
            Arc::clone(&clock),
            client,
            sealer,
            w.retry_schedule.clone(),
            w.jitter,
            w.allow_private_targets,
            w.concurrency_per_endpoint,
        );
        let resolver = crate::domains::verifier::resolver(&config.domains.dns_servers)
            .map_err(|e| anyhow::anyhow!(e))?;
        let senders = Arc::clone(&state.senders);
        let verifier = DomainVerifier {
            on_change: Arc::new(move || senders.clear()),
            store: store.clone(),
            clock: Arc::clone(&clock),
            resolver: Arc::new(resolver),
            bounce_domain: config.delivery.bounce_domain.clone(),
            spf_include: (!config.domains.spf_include.is_empty())
                .then(|| config.domains.spf_include.clone()),
        };
        let mut dispatcher = dispatcher;
        dispatcher.metrics = Arc::clone(&state.metrics);
        dispatcher.processes = config.limits.processes;
        let worker = Worker {
            store: store.clone(),
            mailer,
            clock: Arc::clone(&clock),
            verp: VerpSigner::new(key.as_bytes()),
            bounce_domain: config.delivery.bounce_domain.clone(),
            retry: config.retry.policy(),
            owner: format!("herald-{}", instance_id(&config, addr.port())),
            batch_size: config.delivery.batch_size,
            lease: config.delivery.lease,
            events_wake: Arc::clone(&state.events_wake),
            metrics: Arc::clone(&state.metrics),
            in_hand: Arc::default(),
            stopping: CancellationToken::new(),
        };
        let inbound = if config.inbound.listen.is_empty() {
            None
        } else {
            let i = &config.inbound;
            let tls = if i.tls_cert_file.is_empty() {
                None
            } else {
                Some(
                    crate::smtp_wire::tls_acceptor(&i.tls_cert_file, &i.tls_key_file)
                        .map_err(|e| anyhow::anyhow!("inbound TLS: {e}"))?,
                )
            };
            let l = TcpListener::bind(&i.listen)
                .await
                .with_context(|| format!("binding the inbound SMTP listener on {}", i.listen))?;
            let settings = ListenerSettings {
                hostname: config.delivery.bounce_domain.clone(),
                limits: i.clone(),
                tls,
                readiness: Arc::clone(&state.readiness),
            };
            Some((l, settings))
        };
        let inbound_addr = inbound.as_ref().and_then(|(l, _)| l.local_addr().ok());
        let mut submission = Vec::new();
        {
            let c = &config.submission;
            let tls = if c.tls_cert_file.is_empty() {
                None
            } else {
                Some(
                    crate::smtp_wire::tls_acceptor(&c.tls_cert_file, &c.tls_key_file)
                        .map_err(|e| anyhow::anyhow!("submission TLS: {e}"))?,
                )
            };
            if !c.tls_listen.is_empty() && tls.is_none() {
                anyhow::bail!(
                    "submission.tls_listen needs submission.tls_cert_file and tls_key_file"
                );
            }
            if !c.listen.is_empty() && tls.is_none() && !c.allow_insecure_auth {
                anyhow::bail!(
                    "submission.listen needs a certificate (submission.tls_cert_file) so that \
                     passwords travel encrypted, or submission.allow_insecure_auth for development"
                );
            }
            if c.allow_insecure_auth && !c.listen.is_empty() {
                tracing::warn!(
                    "submission.allow_insecure_auth is set: API keys may be sent in the clear on {}; use it on loopback only",
                    c.listen
                );
            }
            let settings = crate::submission::Settings {
                hostname: hostname::get()
                    .map(|h| h.to_string_lossy().into_owned())
                    .unwrap_or_else(|_| "herald".to_owned()),
                limits: c.clone(),
                tls,
            };
            for (addr, implicit) in [(&c.listen, false), (&c.tls_listen, true)] {
                if addr.is_empty() {
                    continue;
                }
                let l = TcpListener::bind(addr.as_str())
                    .await
                    .with_context(|| format!("binding the submission listener on {addr}"))?;
                submission.push((l, settings.clone(), implicit));
            }
        }
        let submission_addrs = submission
            .iter()
            .filter_map(|(l, _, _)| l.local_addr().ok())
            .collect();
        let retention = crate::retention::RetentionJob {
            store: store.clone(),
            clock: Arc::clone(&clock),
            config: config.retention.clone(),
        };
        Ok(Self {
            state,
            worker,
            dispatcher,
            verifier,
            retention,
            listener,
            addr,
            inbound,
            inbound_addr,
            submission,
            submission_addrs,
        })
    }

    /// Builds with the system clock.
    pub async fn from_config(config: Config) -> anyhow::Result<Self> {
        Self::build(config, Arc::new(SystemClock)).await
    }

    /// Serves HTTP and, if `workers` is set, runs that many delivery loops and the webhook
    /// dispatcher, until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken, workers: usize) -> anyhow::Result<()> {
        let config = Arc::clone(&self.state.config);
        let tracker = tokio_util::task::TaskTracker::new();
        // Leases this instance held when it last stopped without giving them back (a crash):
        // taken back at once, not after they run out. The workers share the one owner.
        let owner = self.worker.owner.clone();
        if workers > 0 {
            match self
                .state
                .store
                .release_leases(&owner, self.state.clock.now_ms())
                .await
            {
                Ok(0) => {}
                Ok(n) => tracing::info!(recipients = n, "took back the leases of a previous run"),
                Err(e) => {
                    tracing::warn!(error = %e, "could not take back earlier leases; they expire on their own")
                }
            }
        }
        for _ in 0..workers {
            let mut w = self.worker.clone();
            w.stopping = shutdown.clone();
            tracker.spawn(w.run(
                Arc::clone(&self.state.wake),
                shutdown.clone(),
                config.delivery.poll_interval,
            ));
        }
        if workers > 0 {
            tracker.spawn(self.dispatcher.clone().run(
                Arc::clone(&self.state.events_wake),
                shutdown.clone(),
                config.delivery.poll_interval,
            ));
            tracker.spawn(self.verifier.clone().run(
                Arc::clone(&self.state.domains_wake),
                shutdown.clone(),
                config.delivery.poll_interval,
            ));
            tracker.spawn(self.retention.clone().run(shutdown.clone()));
            tracker.spawn(
                self.state
                    .inbound
                    .clone()
                    .run_recovery(std::time::Duration::from_secs(60), shutdown.clone()),
            );
        }
        for (listener, settings, implicit) in self.submission {
            tracker.spawn(crate::submission::serve(
                listener,
                self.state.clone(),
                settings,
                implicit,
                shutdown.clone(),
            ));
        }
        if let Some((listener, settings)) = self.inbound {
            tracker.spawn(crate::bounces::listener::serve(
                listener,
                self.state.inbound.clone(),
                settings,
                shutdown.clone(),
            ));
        }
        if self.state.store.backend() == crate::store::Backend::Postgres {
            // A key revoked through another process stops working here as soon as Postgres
            // delivers the notice (milliseconds), not when the one-second cache runs out.
            let (store, state, url) = (
                self.state.store.clone(),
                self.state.clone(),
                config.database_url.clone(),
            );
            let stop = shutdown.clone();
            tracker.spawn(async move {
                tokio::select! {
                    () = stop.cancelled() => {}
                    r = store.keys_changed(&url, || state.api_keys.clear()) => {
                        if let Err(e) = r {
                            tracing::warn!(error = %e, "no key-change listener; revocations reach this process within a second");
                        }
                    }
                }
            });
        }
        {
            let probe = crate::store::Probe::new(
                &config.database_url,
                &self.worker.owner,
                crate::readiness::LIMIT,
            )?;
            let dirs = if config.relay_url.is_empty() {
                vec![config.outbox_dir.clone()]
            } else {
                Vec::new()
            };
            let watch = crate::readiness::Watch {
                probe,
                dirs,
                min_free: config.limits.min_free_disk,
            };
            tracker.spawn(crate::readiness::watch(
                Arc::clone(&self.state.readiness),
                watch,
                shutdown.clone(),
            ));
        }
        tracker.close();
        let store = self.state.store.clone();
        let clock = Arc::clone(&self.state.clock);
        let mailer = Arc::clone(&self.worker.mailer);
        let pages = if config.console.enabled {
            crate::console::router()
        } else {
            axum::Router::new()
        };
        let router = api::router(self.state, pages);
        api::server::serve(self.listener, router, config.http.clone(), shutdown.clone()).await;

        // HTTP has stopped; the workers saw the same token and stop claiming.
        if tokio::time::timeout(config.delivery.shutdown_grace, tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                grace = ?config.delivery.shutdown_grace,
                "deliveries still in flight after the grace period; releasing their leases"
            );
        }
        if workers > 0 {
            match store.release_leases(&owner, clock.now_ms()).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(released = n, "released leases for the next start"),
                Err(e) => {
                    tracing::warn!(error = %e, "could not release leases; they expire on their own")
                }
            }
        }
        mailer.close().await;
        store.close().await;
        Ok(())
    }
}

/// Cancels `token` on SIGTERM or SIGINT.
pub fn cancel_on_signals(token: CancellationToken) {
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let term = std::future::pending::<()>();
        tokio::select! {
            _ = ctrl_c => {}
            () = term => {}
        }
        tracing::info!("shutdown requested");
        token.cancel();
    });
}
