//! The SMTP client side: pooled, authenticated connections to one relay, one transaction per
//! recipient, with every reply kept.
//!
//! Concurrency is capped by a semaphore (lettre's pool caps only idle connections). Every
//! command has a deadline; a connection that timed out or broke is dropped, never reused. A
//! reused idle connection that turns out to be dead before anything of the transaction was
//! accepted is replaced once by a fresh one, so relay idle timeouts do not cost a retry.

use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use lettre::address::Address;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, Certificate, TlsParameters};
use lettre::transport::smtp::commands::{Data, Ehlo, Mail, Rcpt, Rset};
use lettre::transport::smtp::extension::{
    ClientId, Extension, MailBodyParameter, MailParameter, RcptParameter,
};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use crate::domain::bounce::{SmtpPhase, SmtpReply};

use super::mailer::Verdict;
use super::relay::{RelayUrl, TlsMode};

/// Timeouts and limits for one relay.
#[derive(Debug, Clone)]
pub struct SmtpSettings {
    pub concurrency: usize,
    pub connect_timeout: Duration,
    pub command_timeout: Duration,
    pub data_timeout: Duration,
    pub idle_timeout: Duration,
    pub hello_name: Option<String>,
    /// Extra trust anchors (PEM) for a relay whose certificate is private.
    pub ca_pem: Option<Vec<u8>>,
}

struct Idle {
    conn: AsyncSmtpConnection,
    since: Instant,
}

pub struct SmtpRelay {
    url: RelayUrl,
    settings: SmtpSettings,
    hello: ClientId,
    tls: Option<TlsParameters>,
    permits: Semaphore,
    idle: Mutex<Vec<Idle>>,
    /// What the relay offers beyond what lettre tracks, learned on the first connection.
    relay_ext: OnceLock<RelayExtensions>,
    /// Set once a connection went on without TLS (`tls=none`), so the warning is said once.
    warned_plaintext: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for SmtpRelay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpRelay")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// EHLO keywords Herald acts on that lettre's `ServerInfo` does not keep.
#[derive(Debug, Clone, Copy, Default)]
struct RelayExtensions {
    dsn: bool,
    pipelining: bool,
}

/// A failure that ends the transaction, with where it happened.
struct Failure {
    reply: Option<SmtpReply>,
    phase: SmtpPhase,
    detail: String,
    /// Whether the connection can carry another transaction.
    reusable: bool,
}

impl SmtpRelay {
    pub fn new(url: RelayUrl, settings: SmtpSettings) -> Result<Self, String> {
        let tls = if url.tls == TlsMode::None {
            None
        } else {
            let mut builder = TlsParameters::builder(url.host.clone());
            if let Some(pem) = &settings.ca_pem {
                let cert = Certificate::from_pem(pem)
                    .map_err(|e| format!("relay.ca_file is not a PEM certificate: {e}"))?;
                builder = builder.add_root_certificate(cert);
            }
            Some(
                builder
                    .build_rustls()
                    .map_err(|e| format!("TLS settings for the relay: {e}"))?,
            )
        };
        let hello = match &settings.hello_name {
            Some(name) => ClientId::Domain(name.clone()),
            None => ClientId::default(),
        };
        Ok(Self {
            permits: Semaphore::new(settings.concurrency.max(1)),
            idle: Mutex::new(Vec::new()),
            relay_ext: OnceLock::new(),
            warned_plaintext: std::sync::atomic::AtomicBool::new(false),
            url,
            settings,
            hello,
            tls,
        })
    }

    pub fn host(&self) -> &str {
        &self.url.host
    }

    /// One SMTP transaction: MAIL FROM `mail_from`, RCPT TO `rcpt`, DATA `message`.
    /// `envelope_id` is sent as ENVID when the relay offers DSN. `None` when `stop` came while
    /// it waited for a connection: it never started.
    pub async fn deliver(
        &self,
        mail_from: &str,
        rcpt: &str,
        message: &[u8],
        envelope_id: Option<&str>,
        stop: &tokio_util::sync::CancellationToken,
    ) -> Option<Verdict> {
        let permit = tokio::select! {
            biased;
            () = stop.cancelled() => return None,
            p = self.permits.acquire() => p,
        };
        let Ok(_permit) = permit else {
            return Some(deferred(
                None,
                SmtpPhase::Connect,
                "relay client is shutting down",
            ));
        };
        Some(self.send_one(mail_from, rcpt, message, envelope_id).await)
    }

    /// The transaction itself, with a connection permit held.
    async fn send_one(
        &self,
        mail_from: &str,
        rcpt: &str,
        message: &[u8],
        envelope_id: Option<&str>,
    ) -> Verdict {
        let (from, to) = match (mail_from.parse::<Address>(), rcpt.parse::<Address>()) {
            (Ok(f), Ok(t)) => (f, t),
            _ => {
                return Verdict::Rejected {
                    reply: SmtpReply::new(
                        553,
                        "5.1.3 address not accepted by Herald's SMTP client",
                    ),
                    phase: SmtpPhase::Rcpt,
                };
            }
        };
        let mut fresh = false;
        loop {
            let (mut conn, reused) = match self.take_idle() {
                Some(conn) => (conn, true),
                // Boxed: connecting (TLS included) is the largest state of this future, and
                // rare; inline, every delivery task carried and copied it (tens of KB).
                None => match Box::pin(self.connect()).await {
                    Ok(conn) => (conn, false),
                    Err(f) => return deferred(f.reply, f.phase, &f.detail),
                },
            };
            let tls = conn.is_encrypted();
            match self
                .transaction(&mut conn, &from, &to, message, envelope_id)
                .await
            {
                Ok(reply) => {
                    self.put_idle(conn);
                    return Verdict::Accepted { reply, tls };
                }
                // A pooled connection the relay had already closed: nothing was accepted yet,
                // so try once more on a new connection.
                // A broken connection is dropped, not QUIT: the peer may never answer.
                Err(f) if reused && !fresh && f.phase == SmtpPhase::Mail && f.reply.is_none() => {
                    fresh = true;
                }
                Err(f) => {
                    if f.reusable {
                        self.put_idle(conn);
                    }
                    return match f.reply {
                        Some(reply) if reply.is_permanent() => Verdict::Rejected {
                            reply,
                            phase: f.phase,
                        },
                        reply => deferred(reply, f.phase, &f.detail),
                    };
                }
            }
        }
    }

    async fn transaction(
        &self,
        conn: &mut AsyncSmtpConnection,
        from: &Address,
        to: &Address,
        message: &[u8],
        envelope_id: Option<&str>,
    ) -> Result<SmtpReply, Failure> {
        let cmd = self.settings.command_timeout;
        let mut params = Vec::new();
        if !message.is_ascii() && conn.server_info().supports_feature(Extension::EightBitMime) {
            params.push(MailParameter::Body(MailBodyParameter::EightBitMime));
        }
        let mut rcpt_params = Vec::new();
        let ext = self.relay_ext.get().copied().unwrap_or_default();
        if ext.dsn {
            // Ask for reports of success too, so `sent` can become `delivered` (RFC 3461).
            params.push(MailParameter::Other {
                keyword: "RET".into(),
                value: Some("HDRS".into()),
            });
            // lettre writes these values as xtext (RFC 3461 §4: '+', '=' and what is below
            // '!' as "+XX"), so they go as they are. Not a value outside ASCII, which xtext
            // cannot carry and lettre would write raw: such an ORCPT (optional) is left out.
            if let Some(envid) = envelope_id.filter(|e| e.is_ascii()) {
                params.push(MailParameter::Other {
                    keyword: "ENVID".into(),
                    value: Some(envid.to_owned()),
                });
            }
            rcpt_params.push(RcptParameter::Other {
                keyword: "NOTIFY".into(),
                value: Some("SUCCESS,FAILURE,DELAY".into()),
            });
            if AsRef::<str>::as_ref(to).is_ascii() {
                rcpt_params.push(RcptParameter::Other {
                    keyword: "ORCPT".into(),
                    value: Some(format!("rfc822;{to}")),
                });
            }
        }
        let mail = Mail::new(Some(from.clone()), params);
        let rcpt = Rcpt::new(to.clone(), rcpt_params);
        if ext.pipelining {
            self.pipelined(conn, &mail, &rcpt).await?;
        } else {
            self.step(conn, SmtpPhase::Mail, cmd, mail).await?;
            self.step(conn, SmtpPhase::Rcpt, cmd, rcpt).await?;
            self.step(conn, SmtpPhase::Data, cmd, Data).await?;
        }
        let sent = match std::str::from_utf8(message) {
            // The message and its end in one write (lettre's `message` writes them apart and
            // makes a state machine step for every byte to dot-stuff, a visible cost per
            // delivered email).
            Ok(text) => {
                let data = conn.command(DataContent(text));
                tokio::time::timeout(self.settings.data_timeout, data).await
            }
            Err(_) => tokio::time::timeout(self.settings.data_timeout, conn.message(message)).await,
        };
        match sent {
            Ok(Ok(resp)) => Ok(reply_of(&resp)),
            // After the final dot the transaction is over either way: no RSET needed.
            Ok(Err(e)) => Err(failure(SmtpPhase::Data, &e, e.status().is_some())),
            Err(_) => Err(timeout(SmtpPhase::Data, self.settings.data_timeout)),
        }
    }

    /// Sends one command of the transaction; on a negative reply resets the transaction so the
    /// connection can be reused.
    async fn step(
        &self,
        conn: &mut AsyncSmtpConnection,
        phase: SmtpPhase,
        limit: Duration,
        command: impl std::fmt::Display,
    ) -> Result<(), Failure> {
        match tokio::time::timeout(limit, conn.command(command)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => {
                let answered = e.status().is_some();
                let reset = answered
                    && matches!(
                        tokio::time::timeout(limit, conn.command(Rset)).await,
                        Ok(Ok(_))
                    );
                Err(failure(phase, &e, reset))
            }
            Err(_) => Err(timeout(phase, limit)),
        }
    }

    /// MAIL, RCPT and DATA in one write (RFC 2920), then their three replies: one round trip
    /// where there were three. The first refusal decides the phase; a DATA the relay accepted
    /// all the same (354 after a refused RCPT) is closed with an empty message, and the
    /// transaction is reset so the connection can be reused.
    async fn pipelined(
        &self,
        conn: &mut AsyncSmtpConnection,
        mail: &Mail,
        rcpt: &Rcpt,
    ) -> Result<(), Failure> {
        let limit = self.settings.command_timeout;
        let mut refused: Option<Failure> = None;
        let mut data_accepted = false;
        for phase in [SmtpPhase::Mail, SmtpPhase::Rcpt, SmtpPhase::Data] {
            let reply = if phase == SmtpPhase::Mail {
                tokio::time::timeout(limit, conn.command(Pipeline(mail, rcpt))).await
            } else {
                tokio::time::timeout(limit, conn.read_response()).await
            };
            match reply {
                Ok(Ok(_)) => data_accepted = phase == SmtpPhase::Data,
                Ok(Err(e)) if e.status().is_some() => {
                    refused.get_or_insert_with(|| failure(phase, &e, false));
                }
                // No reply (a broken connection): the stream is out of step, drop it.
                Ok(Err(e)) => return Err(failure(phase, &e, false)),
                Err(_) => return Err(timeout(phase, limit)),
            }
        }
        let Some(mut refused) = refused else {
            return Ok(());
        };
        if data_accepted {
            // DATA was accepted although MAIL or RCPT was not: end it without a message.
            let ended = tokio::time::timeout(limit, conn.message(b"")).await;
            let answered = match &ended {
                Ok(Ok(_)) => true,
                Ok(Err(e)) => e.status().is_some(),
                Err(_) => false,
            };
            if !answered {
                return Err(refused);
            }
        }
        refused.reusable = matches!(
            tokio::time::timeout(limit, conn.command(Rset)).await,
            Ok(Ok(_))
        );
        Err(refused)
    }

    async fn connect(&self) -> Result<AsyncSmtpConnection, Failure> {
        let s = &self.settings;
        let addr = (self.url.host.as_str(), self.url.port);
        let implicit = (self.url.tls == TlsMode::Implicit)
            .then(|| self.tls.clone())
            .flatten();
        let mut conn = if implicit.is_some() {
            let connecting = AsyncSmtpConnection::connect_tokio1(
                addr,
                Some(s.connect_timeout),
                &self.hello,
                implicit,
                None,
            );
            match tokio::time::timeout(s.connect_timeout, connecting).await {
                Ok(Ok(conn)) => conn,
                Ok(Err(e)) => return Err(failure(SmtpPhase::Connect, &e, false)),
                Err(_) => return Err(timeout(SmtpPhase::Connect, s.connect_timeout)),
            }
        } else {
            // Our own socket, to turn Nagle's algorithm off: lettre writes the message and
            // its final dot separately, and the dot would wait for the relay's delayed ACK of
            // the message (40 ms on Linux) before it leaves.
            let stream =
                match tokio::time::timeout(s.connect_timeout, TcpStream::connect(addr)).await {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(e)) => {
                        return Err(Failure {
                            reply: None,
                            phase: SmtpPhase::Connect,
                            detail: format!("connection failed: {e}"),
                            reusable: false,
                        });
                    }
                    Err(_) => return Err(timeout(SmtpPhase::Connect, s.connect_timeout)),
                };
            let _ = stream.set_nodelay(true);
            let greeting =
                AsyncSmtpConnection::connect_with_transport(Box::new(stream), &self.hello);
            match tokio::time::timeout(s.command_timeout, greeting).await {
                Ok(Ok(conn)) => conn,
                Ok(Err(e)) => return Err(failure(SmtpPhase::Connect, &e, false)),
                Err(_) => return Err(timeout(SmtpPhase::Connect, s.command_timeout)),
            }
        };
        if matches!(self.url.tls, TlsMode::Required | TlsMode::Opportunistic) {
            match (&self.tls, conn.can_starttls()) {
                (Some(tls), true) => {
                    let upgrade = conn.starttls(tls.clone(), &self.hello);
                    match tokio::time::timeout(s.command_timeout, upgrade).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => return Err(failure(SmtpPhase::Helo, &e, false)),
                        Err(_) => return Err(timeout(SmtpPhase::Helo, s.command_timeout)),
                    }
                }
                _ if self.url.tls == TlsMode::Required => {
                    return Err(Failure {
                        reply: None,
                        phase: SmtpPhase::Helo,
                        detail: "the relay does not offer STARTTLS and tls=required".into(),
                        reusable: false,
                    });
                }
                _ => {}
            }
        }
        let has_credentials = self.url.username.is_some() && self.url.password.is_some();
        if !conn.is_encrypted() {
            // TLS means TLS: the password goes in the clear only when the URL says tls=none.
            if has_credentials && self.url.tls != TlsMode::None {
                return Err(Failure {
                    reply: None,
                    phase: SmtpPhase::Auth,
                    detail: "the relay offers no STARTTLS: Herald does not send the password \
                             without TLS (set tls=none in the relay URL to allow it)"
                        .into(),
                    reusable: false,
                });
            }
            if !self
                .warned_plaintext
                .swap(true, std::sync::atomic::Ordering::Relaxed)
            {
                tracing::warn!(
                    relay = %self.url.host,
                    "the relay is reached without TLS (tls=none): mail{} crosses the network in the clear",
                    if has_credentials { " and the relay password" } else { "" }
                );
            }
        }
        if let (Some(user), Some(pass)) = (&self.url.username, &self.url.password) {
            let creds = Credentials::new(user.clone(), pass.clone());
            let auth = conn.auth(&[Mechanism::Plain, Mechanism::Login], &creds);
            match tokio::time::timeout(s.command_timeout, auth).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(failure(SmtpPhase::Auth, &e, false)),
                Err(_) => return Err(timeout(SmtpPhase::Auth, s.command_timeout)),
            }
        }
        if self.relay_ext.get().is_none() {
            // lettre does not keep unknown EHLO keywords: ask once per relay whether it offers
            // DSN (RFC 3461), so positive delivery reports can be requested, and PIPELINING
            // (RFC 2920), so a transaction's commands go in one write.
            let ehlo = tokio::time::timeout(
                s.command_timeout,
                conn.command(Ehlo::new(self.hello.clone())),
            )
            .await;
            if let Ok(Ok(resp)) = ehlo {
                let offers = |keyword: &str| {
                    resp.message().any(|l| {
                        l.split_whitespace()
                            .next()
                            .is_some_and(|k| k.eq_ignore_ascii_case(keyword))
                    })
                };
                let _ = self.relay_ext.set(RelayExtensions {
                    dsn: offers("DSN"),
                    pipelining: offers("PIPELINING"),
                });
            }
        }
        Ok(conn)
    }

    fn take_idle(&self) -> Option<AsyncSmtpConnection> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(entry) = idle.pop() {
            if entry.since.elapsed() < self.settings.idle_timeout && !entry.conn.has_broken() {
                return Some(entry.conn);
            }
        }
        None
    }

    fn put_idle(&self, conn: AsyncSmtpConnection) {
        if conn.has_broken() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.push(Idle {
            conn,
            since: Instant::now(),
        });
    }

    /// Says QUIT on every idle connection.
    pub async fn close_idle(&self) {
        let drained: Vec<Idle> = {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            idle.drain(..).collect()
        };
        for mut entry in drained {
            let _ = tokio::time::timeout(Duration::from_secs(2), entry.conn.quit()).await;
        }
    }
}

/// MAIL, RCPT and DATA as one pipelined group (each renders with its CRLF).
struct Pipeline<'a>(&'a Mail, &'a Rcpt);

impl std::fmt::Display for Pipeline<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{}{}", self.0, self.1, Data)
    }
}

/// A message as the content of DATA, with its end: a line that begins with a dot gets one
/// more (RFC 5321 §4.5.2, the first line included), then CRLF `.` CRLF. The same bytes as
/// lettre's `message` writes: its codec counts a line as begun after CRLF.
struct DataContent<'a>(&'a str);

impl std::fmt::Display for DataContent<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = self.0;
        if text.starts_with('.') {
            f.write_str(".")?;
        }
        let mut start = 0;
        for i in memchr::memmem::find_iter(text.as_bytes(), b"\r\n.") {
            // The line break and the dot, then the dot again from the next segment on.
            f.write_str(&text[start..i + 3])?;
            start = i + 2;
        }
        f.write_str(&text[start..])?;
        f.write_str("\r\n.\r\n")
    }
}

fn reply_of(resp: &lettre::transport::smtp::response::Response) -> SmtpReply {
    let text: Vec<&str> = resp.message().collect();
    SmtpReply::new(u16::from(resp.code()), &text.join(" "))
}

fn failure(phase: SmtpPhase, e: &lettre::transport::smtp::Error, reusable: bool) -> Failure {
    let reply = e.status().map(|code| {
        let text = std::error::Error::source(e)
            .map(|s| s.to_string())
            .unwrap_or_default();
        SmtpReply::new(u16::from(code), &text.replace('\n', " "))
    });
    let detail = match &reply {
        Some(r) => r.response.clone(),
        None if phase == SmtpPhase::Auth => format!("relay authentication failed: {e}"),
        None => e.to_string(),
    };
    Failure {
        reply,
        phase,
        detail,
        reusable,
    }
}

fn timeout(phase: SmtpPhase, after: Duration) -> Failure {
    Failure {
        reply: None,
        phase,
        detail: format!("no reply from the relay within {}s", after.as_secs_f64()),
        reusable: false,
    }
}

fn deferred(reply: Option<SmtpReply>, phase: SmtpPhase, detail: &str) -> Verdict {
    Verdict::Deferred {
        reply,
        phase,
        detail: detail.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::DataContent;

    /// lettre's client codec, as a reference: a dot at the start of a line (the first, or
    /// after CR LF) is doubled; then the end of data.
    fn lettre_codec(message: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let (mut after_cr, mut line_start) = (false, true);
        for &b in message {
            out.push(b);
            if b == b'.' && line_start {
                out.push(b'.');
            }
            line_start = after_cr && b == b'\n';
            after_cr = b == b'\r';
        }
        out.extend_from_slice(b"\r\n.\r\n");
        out
    }

    #[test]
    fn data_content_is_dot_stuffed_as_lettre_would() {
        let mut texts: Vec<String> = [
            "",
            ".",
            "..",
            ".leading\r\n.\r\n..two\r\nend",
            "a\r\n.\r\nb",
            "\r\n.",
            "x\r\r\n.y",
            "bare LF\n.not a line start",
            "trailing\r\n",
            "no dots at all",
        ]
        .map(str::to_owned)
        .to_vec();
        let alphabet = ['.', '\r', '\n', 'a'];
        let mut seed: u64 = 7;
        for _ in 0..500 {
            let t: String = (0..(seed % 40))
                .map(|_| {
                    seed = seed
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    alphabet[(seed >> 33) as usize % alphabet.len()]
                })
                .collect();
            texts.push(t);
        }
        for text in texts {
            assert_eq!(
                DataContent(&text).to_string().into_bytes(),
                lettre_codec(text.as_bytes()),
                "{text:?}"
            );
        }
    }
}
