//! A real SMTP server over TCP for tests: EHLO, STARTTLS or implicit TLS with the test
//! certificate, AUTH PLAIN/LOGIN, and replies scripted per command (250, 451, 550, a dropped
//! connection mid-DATA, a reply that never comes). It records every message it accepts.

use std::sync::{Arc, Mutex};

use base64::Engine;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Where in the transaction the script is asked for a reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Mail {
        from: String,
    },
    Rcpt {
        to: String,
    },
    /// The DATA command, for the transaction's recipients.
    Data {
        to: Vec<String>,
    },
    /// After the message's final dot.
    Message {
        to: Vec<String>,
    },
}

/// What the server does at a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Reply(u16, String),
    /// Reply after a pause (a slow relay).
    ReplyAfter(std::time::Duration, u16, String),
    /// Close the connection without a reply (at `Data`: after 354 and part of the message).
    Drop,
    /// Never answer.
    Hang,
}

pub fn ok() -> Action {
    Action::Reply(250, "2.0.0 OK".into())
}

pub fn reply(code: u16, text: &str) -> Action {
    Action::Reply(code, text.into())
}

pub type Script = Arc<dyn Fn(&Step) -> Action + Send + Sync>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tls {
    None,
    Starttls,
    Implicit,
}

#[derive(Debug, Clone)]
pub struct Received {
    /// The MAIL and RCPT command lines as sent, parameters included.
    pub commands: Vec<String>,
    pub mail_from: String,
    pub rcpt_to: Vec<String>,
    pub data: Vec<u8>,
    pub tls: bool,
    pub auth_user: Option<String>,
    /// Whether RCPT and DATA had already arrived with MAIL (PIPELINING, RFC 2920).
    pub pipelined: bool,
}

#[derive(Default)]
struct Shared {
    /// The AUTH mechanisms advertised in EHLO (empty: "PLAIN LOGIN").
    auth_mechanisms: Mutex<String>,
    received: Mutex<Vec<Received>>,
    arrived: Notify,
    connections: Mutex<usize>,
    /// AUTH commands received, whatever came of them.
    auth_attempts: Mutex<usize>,
}

pub struct TestSmtp {
    pub port: u16,
    pub tls: Tls,
    shared: Arc<Shared>,
    script: Arc<Mutex<Script>>,
    task: tokio::task::JoinHandle<()>,
}

pub const USER: &str = "relay-user";
pub const PASSWORD: &str = "relay-pass";

impl TestSmtp {
    /// Starts a server that accepts everything (after AUTH with `USER`/`PASSWORD`).
    pub async fn start(tls: Tls) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let shared = Arc::new(Shared::default());
        let script: Arc<Mutex<Script>> = Arc::new(Mutex::new(Arc::new(|_: &Step| ok())));
        let acceptor = TlsAcceptor::from(Arc::new(server_config()));
        let (sh, sc) = (Arc::clone(&shared), Arc::clone(&script));
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                *sh.connections.lock().expect("lock") += 1;
                let (sh, sc, acceptor) = (Arc::clone(&sh), Arc::clone(&sc), acceptor.clone());
                tokio::spawn(async move {
                    let _ = serve(stream, tls, acceptor, sh, sc).await;
                });
            }
        });
        Self {
            port,
            tls,
            shared,
            script,
            task,
        }
    }

    /// Replaces the reply script.
    pub fn script(&self, f: impl Fn(&Step) -> Action + Send + Sync + 'static) {
        *self.script.lock().expect("lock") = Arc::new(f);
    }

    /// Advertises only these AUTH mechanisms (such as "LOGIN").
    pub fn advertise_auth(&self, mechanisms: &str) {
        *self.shared.auth_mechanisms.lock().expect("lock") = mechanisms.to_owned();
    }

    /// The relay URL Herald should use for this server.
    pub fn url(&self) -> String {
        match self.tls {
            Tls::Implicit => format!("smtps://{USER}:{PASSWORD}@localhost:{}", self.port),
            Tls::Starttls => format!(
                "smtp://{USER}:{PASSWORD}@localhost:{}?tls=required",
                self.port
            ),
            Tls::None => format!("smtp://{USER}:{PASSWORD}@localhost:{}?tls=none", self.port),
        }
    }

    /// How many AUTH commands arrived (a password sent, whether or not it was right).
    pub fn auth_attempts(&self) -> usize {
        *self.shared.auth_attempts.lock().expect("lock")
    }

    pub fn received(&self) -> Vec<Received> {
        self.shared.received.lock().expect("lock").clone()
    }

    pub fn connections(&self) -> usize {
        *self.shared.connections.lock().expect("lock")
    }

    /// Waits until the accepted messages satisfy `done` (woken by each arrival, no polling).
    pub async fn wait_until(&self, done: impl Fn(&[Received]) -> bool) -> Vec<Received> {
        loop {
            let notified = self.shared.arrived.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let got = self.received();
            if done(&got) {
                return got;
            }
            notified.await;
        }
    }
}

impl Drop for TestSmtp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn server_config() -> ServerConfig {
    let certs: Vec<CertificateDer<'static>> =
        rustls_pemfile::certs(&mut include_bytes!("../fixtures/server.pem").as_slice())
            .collect::<Result<_, _>>()
            .expect("certificate");
    let key: PrivateKeyDer<'static> =
        rustls_pemfile::private_key(&mut include_bytes!("../fixtures/server.key").as_slice())
            .expect("key file")
            .expect("a key");
    ServerConfig::builder_with_provider(Arc::new(
        tokio_rustls::rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocols")
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .expect("server config")
}

enum SessionEnd {
    Closed,
    StartTls,
}

async fn serve(
    stream: TcpStream,
    tls: Tls,
    acceptor: TlsAcceptor,
    shared: Arc<Shared>,
    script: Arc<Mutex<Script>>,
) -> std::io::Result<()> {
    match tls {
        Tls::Implicit => {
            let stream = acceptor.accept(stream).await?;
            session(stream, true, true, false, &shared, &script).await?;
        }
        Tls::None => {
            session(stream, true, false, false, &shared, &script).await?;
        }
        Tls::Starttls => {
            let mut stream = stream;
            if let SessionEnd::StartTls =
                session(&mut stream, true, false, true, &shared, &script).await?
            {
                let stream = acceptor.accept(stream).await?;
                session(stream, false, true, false, &shared, &script).await?;
            }
        }
    }
    Ok(())
}

/// One SMTP session on `stream`. `greet`: send the 220 banner (not after STARTTLS, where the
/// client speaks first).
async fn session<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    greet: bool,
    tls: bool,
    offer_starttls: bool,
    shared: &Shared,
    script: &Mutex<Script>,
) -> std::io::Result<SessionEnd> {
    let mut io = BufReader::new(stream);
    if greet {
        io.write_all(b"220 test.smtp ESMTP ready\r\n").await?;
    }
    let mut auth_user: Option<String> = None;
    let mut from: Option<String> = None;
    let mut rcpts: Vec<String> = Vec::new();
    let mut commands: Vec<String> = Vec::new();
    let mut pipelined = false;
    let mut line = String::new();
    loop {
        line.clear();
        if io.read_line(&mut line).await? == 0 {
            return Ok(SessionEnd::Closed);
        }
        let cmd = line.trim_end().to_owned();
        let upper = cmd.to_ascii_uppercase();
        if upper.starts_with("AUTH") {
            *shared.auth_attempts.lock().expect("lock") += 1;
        }
        let current = script.lock().expect("lock").clone();
        if upper.starts_with("EHLO") || upper.starts_with("HELO") {
            let mut ext = vec![
                "250-test.smtp".to_owned(),
                "250-8BITMIME".into(),
                "250-SIZE 52428800".into(),
                "250-DSN".into(),
                "250-PIPELINING".into(),
            ];
            if offer_starttls {
                ext.push("250-STARTTLS".into());
            }
            if tls || !offer_starttls {
                let mechanisms = shared.auth_mechanisms.lock().expect("lock").clone();
                let mechanisms = if mechanisms.is_empty() {
                    "PLAIN LOGIN".to_owned()
                } else {
                    mechanisms
                };
                ext.push(format!("250-AUTH {mechanisms}"));
            }
            ext.push("250 ENHANCEDSTATUSCODES".into());
            io.write_all(format!("{}\r\n", ext.join("\r\n")).as_bytes())
                .await?;
        } else if upper == "STARTTLS" && offer_starttls {
            io.write_all(b"220 2.0.0 Ready to start TLS\r\n").await?;
            return Ok(SessionEnd::StartTls);
        } else if let Some(rest) = upper.strip_prefix("AUTH PLAIN") {
            let arg = cmd[cmd.len() - rest.len()..].trim().to_owned();
            let arg = if arg.is_empty() {
                io.write_all(b"334 \r\n").await?;
                let mut l = String::new();
                io.read_line(&mut l).await?;
                l.trim().to_owned()
            } else {
                arg
            };
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(arg)
                .unwrap_or_default();
            let parts: Vec<&[u8]> = decoded.split(|b| *b == 0).collect();
            if parts.len() == 3 && parts[1] == USER.as_bytes() && parts[2] == PASSWORD.as_bytes() {
                auth_user = Some(USER.into());
                io.write_all(b"235 2.7.0 Authentication successful\r\n")
                    .await?;
            } else {
                io.write_all(b"535 5.7.8 Authentication credentials invalid\r\n")
                    .await?;
            }
        } else if upper.starts_with("AUTH LOGIN") {
            let b64 = base64::engine::general_purpose::STANDARD;
            io.write_all(format!("334 {}\r\n", b64.encode("Username:")).as_bytes())
                .await?;
            let mut u = String::new();
            io.read_line(&mut u).await?;
            io.write_all(format!("334 {}\r\n", b64.encode("Password:")).as_bytes())
                .await?;
            let mut p = String::new();
            io.read_line(&mut p).await?;
            let user = b64.decode(u.trim()).unwrap_or_default();
            let pass = b64.decode(p.trim()).unwrap_or_default();
            if user == USER.as_bytes() && pass == PASSWORD.as_bytes() {
                auth_user = Some(USER.into());
                io.write_all(b"235 2.7.0 Authentication successful\r\n")
                    .await?;
            } else {
                io.write_all(b"535 5.7.8 Authentication credentials invalid\r\n")
                    .await?;
            }
        } else if upper.starts_with("MAIL FROM:") {
            if auth_user.is_none() {
                io.write_all(b"530 5.7.0 Authentication required\r\n")
                    .await?;
                continue;
            }
            let addr = angle(&cmd);
            commands = vec![cmd.clone()];
            let ahead = String::from_utf8_lossy(io.buffer()).to_ascii_uppercase();
            pipelined = ahead.contains("RCPT TO:") && ahead.contains("DATA\r\n");
            match act(&mut io, current(&Step::Mail { from: addr.clone() })).await? {
                Some(code) if code < 300 => from = Some(addr),
                Some(_) => {}
                None => return Ok(SessionEnd::Closed),
            }
            rcpts.clear();
        } else if upper.starts_with("RCPT TO:") {
            let addr = angle(&cmd);
            commands.push(cmd.clone());
            match act(&mut io, current(&Step::Rcpt { to: addr.clone() })).await? {
                Some(code) if code < 300 => rcpts.push(addr),
                Some(_) => {}
                None => return Ok(SessionEnd::Closed),
            }
        } else if upper == "DATA" {
            if from.is_none() || rcpts.is_empty() {
                io.write_all(b"503 5.5.1 Bad sequence of commands\r\n")
                    .await?;
                continue;
            }
            match current(&Step::Data { to: rcpts.clone() }) {
                Action::Drop => {
                    // Take the start of the message, then hang up mid-DATA.
                    io.write_all(b"354 Go ahead\r\n").await?;
                    let mut l = String::new();
                    io.read_line(&mut l).await?;
                    return Ok(SessionEnd::Closed);
                }
                Action::Hang => {
                    std::future::pending::<()>().await;
                }
                Action::Reply(code, text) if code >= 400 => {
                    io.write_all(format!("{code} {text}\r\n").as_bytes())
                        .await?;
                    continue;
                }
                Action::Reply(..) | Action::ReplyAfter(..) => {}
            }
            io.write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                .await?;
            let mut data = Vec::new();
            loop {
                let mut l = Vec::new();
                if io.read_until(b'\n', &mut l).await? == 0 {
                    return Ok(SessionEnd::Closed);
                }
                if l == b".\r\n" {
                    break;
                }
                // Undo dot-stuffing (RFC 5321 §4.5.2).
                if l.starts_with(b"..") {
                    l.remove(0);
                }
                data.extend_from_slice(&l);
            }
            let to = rcpts.clone();
            match act(&mut io, current(&Step::Message { to: to.clone() })).await? {
                Some(code) if code < 300 => {
                    shared.received.lock().expect("lock").push(Received {
                        commands: commands.clone(),
                        mail_from: from.clone().unwrap_or_default(),
                        rcpt_to: to,
                        data,
                        tls,
                        auth_user: auth_user.clone(),
                        pipelined,
                    });
                    shared.arrived.notify_waiters();
                }
                Some(_) => {}
                None => return Ok(SessionEnd::Closed),
            }
            from = None;
            rcpts.clear();
        } else if upper == "RSET" {
            from = None;
            rcpts.clear();
            io.write_all(b"250 2.0.0 Reset\r\n").await?;
        } else if upper == "NOOP" {
            io.write_all(b"250 2.0.0 OK\r\n").await?;
        } else if upper == "QUIT" {
            io.write_all(b"221 2.0.0 Bye\r\n").await?;
            return Ok(SessionEnd::Closed);
        } else {
            io.write_all(b"502 5.5.2 Command not recognized\r\n")
                .await?;
        }
    }
}

/// Carries out an action: `Some(code)` after a reply, `None` when the connection is dropped.
async fn act<S: AsyncWrite + Unpin>(io: &mut S, action: Action) -> std::io::Result<Option<u16>> {
    match action {
        Action::Reply(code, text) => {
            io.write_all(format!("{code} {text}\r\n").as_bytes())
                .await?;
            Ok(Some(code))
        }
        Action::ReplyAfter(pause, code, text) => {
            tokio::time::sleep(pause).await;
            io.write_all(format!("{code} {text}\r\n").as_bytes())
                .await?;
            Ok(Some(code))
        }
        Action::Drop => Ok(None),
        Action::Hang => std::future::pending().await,
    }
}

fn angle(cmd: &str) -> String {
    let start = cmd.find('<').map_or(0, |i| i + 1);
    let end = cmd[start..].find('>').map_or(cmd.len(), |i| start + i);
    cmd[start..end].to_owned()
}

/// Messages that reached a scripted relay before it answered them: a script calls
/// [`Arrivals::note`] on `Step::Message`, and a test waits for the count (`received` only has
/// a message once it is answered).
#[derive(Debug, Default)]
pub struct Arrivals {
    count: std::sync::atomic::AtomicUsize,
    wake: tokio::sync::Notify,
}

impl Arrivals {
    pub fn note(&self) {
        self.count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.wake.notify_waiters();
    }

    /// Until `n` messages have arrived (at most 30 s).
    pub async fn wait_for(&self, n: usize) {
        let arrived = || self.count.load(std::sync::atomic::Ordering::SeqCst) >= n;
        while !arrived() {
            let notified = self.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if arrived() {
                break;
            }
            tokio::time::timeout(std::time::Duration::from_secs(30), notified)
                .await
                .expect("messages at the relay");
        }
    }
}

impl TestSmtp {
    /// Answers every message 250 after `pause` (a relay that takes its time).
    pub fn accept_after(&self, pause: std::time::Duration) {
        self.script(move |step| match step {
            Step::Message { .. } => Action::ReplyAfter(pause, 250, "2.0.0 OK queued".into()),
            _ => ok(),
        });
    }

    /// [`TestSmtp::accept_after`], telling the test of each message as it arrives, before
    /// its answer.
    pub fn accept_after_noting(&self, pause: std::time::Duration) -> Arc<Arrivals> {
        let arrivals = Arc::new(Arrivals::default());
        let a = Arc::clone(&arrivals);
        self.script(move |step| match step {
            Step::Message { .. } => {
                a.note();
                Action::ReplyAfter(pause, 250, "2.0.0 OK queued".into())
            }
            _ => ok(),
        });
        arrivals
    }

    /// How many messages to `to` the relay has answered.
    pub fn times_received(&self, to: &str) -> usize {
        self.received()
            .iter()
            .filter(|m| m.rcpt_to.iter().any(|r| r == to))
            .count()
    }
}
