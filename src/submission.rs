//! SMTP submission: the listener where apps that speak SMTP send through Herald with an API
//! key as the password (RFC 6409 on `submission.listen`, STARTTLS; RFC 8314 implicit TLS on
//! `submission.tls_listen`).
//!
//! A 250 after DATA means committed, by the same group commit as the API's 202: the message
//! goes through `api::emails::accept_submitted`, which applies the API's rules, sender policy
//! and DKIM signing to the client's own MIME. AUTH is offered only over TLS unless the
//! operator allows it in the clear. Every wait has a timeout, every line and message a limit,
//! and each refusal an enhanced status code: 4xx where trying again can work (rate limits, an
//! unavailable database), 5xx where it cannot.

use std::net::{IpAddr, SocketAddr};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use tokio::io::{AsyncRead, AsyncWrite, BufReader};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::api::AppState;
use crate::api::auth::{Principal, principal_for};
use crate::api::error::ApiError;
use crate::config::SubmissionConfig;
use crate::smtp_wire::{Admission, Data, Line, Waits, read_data, read_line};

/// Longest command line (RFC 5321 §4.5.3.1.4 says 512; AUTH PLAIN's line may be longer).
const MAX_COMMAND: usize = 2048;
/// Commands refused (a 5xx) in one connection before it is closed: a client that keeps
/// getting them wrong is not going to get them right.
const MAX_ERRORS: usize = 20;
/// Commands in a row that move no mail (NOOP, RSET, EHLO…) before the connection is closed:
/// a client may keep a connection open to send on, not to hold a place.
const MAX_IDLE_COMMANDS: usize = 100;

const TIMEOUT: &str = "421 4.4.2 Timeout, closing connection\r\n";
const DEADLINE: &str = "421 4.4.2 Connection open too long, closing\r\n";

/// What every connection of a listener shares.
#[derive(Clone)]
pub struct Settings {
    pub hostname: String,
    pub limits: SubmissionConfig,
    /// For STARTTLS on the submission port, and for the implicit-TLS port.
    pub tls: Option<TlsAcceptor>,
}

/// Accepts connections until `cancel`: `implicit_tls` for the port 465 kind.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    settings: Settings,
    implicit_tls: bool,
    cancel: CancellationToken,
) {
    // Apps that send a lot open many connections at once, and open them often: only the
    // number open is capped per address.
    let admission = Admission::new(
        settings.limits.max_connections,
        settings.limits.max_connections_per_client,
        u32::MAX,
    );
    while let Some((stream, peer)) = crate::accept::next(&listener, &cancel, "submission").await {
        let Some(admitted) = admission.admit(&stream, peer.ip()) else {
            continue;
        };
        let (state, settings) = (state.clone(), settings.clone());
        tokio::spawn(async move {
            let _admitted = admitted;
            let limits = &settings.limits;
            let mut session = Session::new(&state, &settings, peer, implicit_tls);
            if implicit_tls {
                let Some(tls) = &settings.tls else { return };
                if let Ok(Ok(s)) = tokio::time::timeout(limits.timeout, tls.accept(stream)).await {
                    let _ = session.run(s, true).await;
                }
            } else if let Ok(Some(plain)) = session.run(stream, true).await
                && let Some(tls) = &settings.tls
                && let Ok(Ok(s)) = tokio::time::timeout(limits.timeout, tls.accept(plain)).await
            {
                session.tls = true;
                session.reset_all();
                let _ = session.run(s, false).await;
            }
        });
    }
}

/// One client's conversation, across a STARTTLS upgrade.
struct Session<'a> {
    state: &'a AppState,
    s: &'a Settings,
    peer: SocketAddr,
    tls: bool,
    helo: bool,
    principal: Option<Principal>,
    mail_from: Option<String>,
    rcpts: Vec<String>,
    /// Commands refused so far.
    errors: usize,
    /// Commands in a row that moved no mail.
    idle: usize,
    waits: Waits,
    /// Replies to pipelined commands (RFC 2920), sent together once the client's pipelined
    /// commands are all read: one write, not one a reply.
    pending: Vec<u8>,
}

/// A reply line, its code and enhanced code first.
type Reply = String;

fn reply(code: u16, enhanced: &str, text: &str) -> Reply {
    format!("{code} {enhanced} {text}\r\n")
}

/// How an API refusal is said over SMTP: 4xx where trying again can work.
fn smtp_refusal(e: &ApiError) -> Reply {
    let detail = e
        .errors
        .first()
        .map_or(e.detail.as_str(), |f| f.detail.as_str())
        .replace(['\r', '\n'], " ");
    match e.status.as_u16() {
        429 if e.code == "too_many_failed_authentications" => reply(
            454,
            "4.7.0",
            &format!(
                "Too many failed authentications; try again in {} seconds",
                e.retry_after.unwrap_or(1)
            ),
        ),
        429 => reply(
            451,
            "4.7.1",
            &format!("Rate limit: {detail}; try again later"),
        ),
        500..=599 => reply(
            451,
            "4.3.0",
            "Herald cannot take mail right now; try again later",
        ),
        401 => reply(
            535,
            "5.7.8",
            "Authentication credentials invalid: the password is an API key (hk_…)",
        ),
        // The same Idempotency-Key is being submitted on another connection right now.
        409 => reply(451, "4.3.0", &format!("{detail}; try again later")),
        403 => reply(550, "5.7.1", &detail),
        413 => reply(552, "5.3.4", &detail),
        _ => reply(550, "5.6.0", &format!("The message was refused: {detail}")),
    }
}

/// `<addr>` from `FROM:<addr> PARAMS` or `TO:<addr>`, and the parameters after it.
fn path_of(arg: &str) -> Option<(String, &str)> {
    let arg = arg.trim_start();
    let rest = arg.strip_prefix('<')?;
    let end = rest.find('>')?;
    let addr = rest.get(..end)?.trim().to_owned();
    Some((addr, rest.get(end + 1..).unwrap_or("").trim()))
}

impl<'a> Session<'a> {
    fn new(state: &'a AppState, s: &'a Settings, peer: SocketAddr, tls: bool) -> Self {
        Self {
            state,
            s,
            peer,
            tls,
            helo: false,
            principal: None,
            mail_from: None,
            rcpts: Vec::new(),
            errors: 0,
            idle: 0,
            pending: Vec::new(),
            waits: Waits::new(s.limits.timeout, s.limits.session_timeout),
        }
    }

    fn reset(&mut self) {
        self.mail_from = None;
        self.rcpts.clear();
    }

    /// After STARTTLS the client starts over (RFC 3207 §4.2).
    fn reset_all(&mut self) {
        self.reset();
        self.helo = false;
        self.principal = None;
    }

    fn ip(&self) -> IpAddr {
        self.peer.ip()
    }

    /// Runs the conversation on `io`; `Some(io)` back when the client asked for STARTTLS
    /// (whatever it sent after the command is dropped with the buffer, RFC 3207 §5).
    async fn run<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        io: S,
        greet: bool,
    ) -> std::io::Result<Option<S>> {
        let mut io = BufReader::new(io);
        if greet {
            let hello = format!("220 {} ESMTP Herald submission\r\n", self.s.hostname);
            self.say(&mut io, &hello).await?;
        }
        loop {
            let line = match self.next_line(&mut io).await? {
                Ok(line) => line,
                Err(last) => {
                    if let Some(last) = last {
                        self.say(&mut io, last).await?;
                    }
                    return Ok(None);
                }
            };
            let line = String::from_utf8_lossy(&line).trim_end().to_owned();
            let (verb, arg) = line.split_once(' ').unwrap_or((&line, ""));
            let verb = verb.to_ascii_uppercase();
            let moves_mail = matches!(verb.as_str(), "AUTH" | "MAIL" | "RCPT" | "DATA");
            let answer = match verb.as_str() {
                "EHLO" | "HELO" => {
                    self.reset();
                    self.helo = true;
                    if verb == "HELO" {
                        format!("250 {}\r\n", self.s.hostname)
                    } else {
                        self.capabilities()
                    }
                }
                "STARTTLS" if !self.tls && self.s.tls.is_some() => {
                    self.say(&mut io, "220 2.0.0 Ready to start TLS\r\n")
                        .await?;
                    return Ok(Some(io.into_inner()));
                }
                "AUTH" => self.auth(&mut io, arg).await?,
                "MAIL" => self.mail(arg),
                "RCPT" => self.rcpt(arg),
                "DATA" => self.data(&mut io).await?,
                "RSET" => {
                    self.reset();
                    reply(250, "2.0.0", "OK")
                }
                "NOOP" => reply(250, "2.0.0", "OK"),
                "QUIT" => {
                    self.say(&mut io, "221 2.0.0 Bye\r\n").await?;
                    return Ok(None);
                }
                _ => reply(502, "5.5.1", "Command not recognized"),
            };
            if answer.starts_with("421") || io.buffer().is_empty() {
                self.say(&mut io, &answer).await?;
            } else {
                self.pending.extend_from_slice(answer.as_bytes());
            }
            if answer.starts_with("421") {
                return Ok(None);
            }
            self.idle = if moves_mail { 0 } else { self.idle + 1 };
            if answer.starts_with('5') {
                self.errors += 1;
            }
            let last = if self.errors >= MAX_ERRORS {
                "421 4.7.0 Too many errors, closing connection\r\n"
            } else if self.idle >= MAX_IDLE_COMMANDS {
                "421 4.7.0 Too many commands that send nothing, closing connection\r\n"
            } else {
                continue;
            };
            self.say(&mut io, last).await?;
            return Ok(None);
        }
    }

    /// The client's next line, or why the conversation ends (with its last reply, if any).
    async fn next_line<S: AsyncRead + Unpin>(
        &self,
        io: &mut BufReader<S>,
    ) -> std::io::Result<Result<Vec<u8>, Option<&'static str>>> {
        Ok(match read_line(io, MAX_COMMAND, &self.waits).await? {
            Line::Text(line) => Ok(line),
            Line::Eof => Err(None),
            Line::TooLong => Err(Some("500 5.5.2 Line too long, closing connection\r\n")),
            Line::TimedOut if self.waits.past_deadline() => Err(Some(DEADLINE)),
            Line::TimedOut => Err(Some(TIMEOUT)),
        })
    }

    /// Writes `text` after the replies still pending.
    async fn say<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        io: &mut BufReader<S>,
        text: &str,
    ) -> std::io::Result<()> {
        self.pending.extend_from_slice(text.as_bytes());
        let sent = crate::smtp_wire::write(io, &self.pending, self.s.limits.timeout).await;
        self.pending.clear();
        sent
    }

    fn auth_offered(&self) -> bool {
        self.tls || self.s.limits.allow_insecure_auth
    }

    fn capabilities(&self) -> Reply {
        let mut lines = vec![
            self.s.hostname.clone(),
            format!("SIZE {}", self.s.limits.max_message_bytes),
            "PIPELINING".to_owned(),
            "8BITMIME".to_owned(),
            "ENHANCEDSTATUSCODES".to_owned(),
        ];
        if !self.tls && self.s.tls.is_some() {
            lines.push("STARTTLS".to_owned());
        }
        if self.auth_offered() {
            lines.push("AUTH PLAIN LOGIN".to_owned());
        }
        let last = lines.len() - 1;
        lines
            .iter()
            .enumerate()
            .map(|(i, l)| format!("250{}{l}\r\n", if i == last { " " } else { "-" }))
            .collect()
    }

    async fn auth<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        io: &mut BufReader<S>,
        arg: &str,
    ) -> std::io::Result<Reply> {
        if !self.helo {
            return Ok(reply(503, "5.5.1", "Say EHLO first"));
        }
        if self.principal.is_some() {
            return Ok(reply(503, "5.5.1", "Already authenticated"));
        }
        if !self.auth_offered() {
            return Ok(reply(530, "5.7.0", "Must issue a STARTTLS command first"));
        }
        if let Err(e) = self.state.auth_failures.check(self.ip()) {
            return Ok(smtp_refusal(&e));
        }
        let (mechanism, initial) = arg.split_once(' ').unwrap_or((arg, ""));
        let decode = |s: &str| STANDARD.decode(s.trim()).ok();
        let password = match mechanism.to_ascii_uppercase().as_str() {
            "PLAIN" => {
                let response = if initial.is_empty() {
                    self.say(io, "334 \r\n").await?;
                    match self.next_line(io).await? {
                        Ok(l) => String::from_utf8_lossy(&l).trim().to_owned(),
                        Err(last) => return Ok(last.unwrap_or(TIMEOUT).to_owned()),
                    }
                } else {
                    initial.to_owned()
                };
                // authzid NUL authcid NUL password
                decode(&response).and_then(|b| {
                    let mut parts = b.split(|c| *c == 0);
                    let _ = parts.next()?;
                    let _ = parts.next()?;
                    parts
                        .next()
                        .map(|p| String::from_utf8_lossy(p).into_owned())
                })
            }
            "LOGIN" => {
                // The username is asked for and read, and not used: the key says who.
                if initial.is_empty() {
                    self.say(io, "334 VXNlcm5hbWU6\r\n").await?;
                    if let Err(last) = self.next_line(io).await? {
                        return Ok(last.unwrap_or(TIMEOUT).to_owned());
                    }
                }
                self.say(io, "334 UGFzc3dvcmQ6\r\n").await?;
                match self.next_line(io).await? {
                    Ok(l) => decode(&String::from_utf8_lossy(&l))
                        .map(|b| String::from_utf8_lossy(&b).into_owned()),
                    Err(last) => return Ok(last.unwrap_or(TIMEOUT).to_owned()),
                }
            }
            _ => {
                return Ok(reply(
                    504,
                    "5.5.4",
                    "Unrecognized authentication type; use PLAIN or LOGIN",
                ));
            }
        };
        let Some(password) = password else {
            return Ok(reply(501, "5.5.2", "Cannot decode the response (base64)"));
        };
        if let Some(e) = crate::api::health::unavailable(self.state, false) {
            return Ok(smtp_refusal(&e));
        }
        match principal_for(self.state, &password, Some(self.ip())).await {
            Ok(p) => {
                self.principal = Some(p);
                Ok(reply(235, "2.7.0", "Authentication successful"))
            }
            Err(e) => Ok(smtp_refusal(&e)),
        }
    }

    fn mail(&mut self, arg: &str) -> Reply {
        let Some(principal) = &self.principal else {
            return reply(530, "5.7.0", "Authentication required");
        };
        if self.mail_from.is_some() {
            return reply(503, "5.5.1", "Sender already given");
        }
        let Some((addr, params)) = arg
            .get(..5)
            .filter(|p| p.eq_ignore_ascii_case("FROM:"))
            .and_then(|_| path_of(arg.get(5..).unwrap_or("")))
        else {
            return reply(501, "5.5.4", "Syntax: MAIL FROM:<address>");
        };
        for p in params.split_whitespace() {
            if let Some(size) = p
                .strip_prefix("SIZE=")
                .and_then(|n| n.parse::<usize>().ok())
                && size > self.s.limits.max_message_bytes
            {
                return self.too_big();
            }
        }
        // Each message counts against the key's rate, as each request does over HTTP.
        if let Err(e) = crate::api::auth::within_rate(self.state, principal) {
            return smtp_refusal(&e);
        }
        self.mail_from = Some(addr);
        reply(250, "2.1.0", "Sender OK")
    }

    fn too_big(&self) -> Reply {
        let max = self.s.limits.max_message_bytes;
        reply(
            552,
            "5.3.4",
            &format!("Message too big: the limit is {max} bytes"),
        )
    }

    fn rcpt(&mut self, arg: &str) -> Reply {
        if self.mail_from.is_none() {
            return reply(503, "5.5.1", "Need MAIL before RCPT");
        }
        let Some((addr, _)) = arg
            .get(..3)
            .filter(|p| p.eq_ignore_ascii_case("TO:"))
            .and_then(|_| path_of(arg.get(3..).unwrap_or("")))
        else {
            return reply(501, "5.5.4", "Syntax: RCPT TO:<address>");
        };
        let Ok(address) = crate::domain::address::EmailAddress::parse(&addr) else {
            return reply(553, "5.1.3", &format!("'{addr}' is not a valid address"));
        };
        if self.rcpts.len() >= self.s.limits.max_recipients {
            return reply(
                452,
                "4.5.3",
                &format!(
                    "Too many recipients: at most {} per message; send the rest in another",
                    self.s.limits.max_recipients
                ),
            );
        }
        let address = address.to_string();
        if !self.rcpts.contains(&address) {
            self.rcpts.push(address);
        }
        reply(250, "2.1.5", "Recipient OK")
    }

    async fn data<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        io: &mut BufReader<S>,
    ) -> std::io::Result<Reply> {
        if self.rcpts.is_empty() {
            return Ok(reply(503, "5.5.1", "Need RCPT before DATA"));
        }
        self.say(io, "354 Start mail input; end with <CRLF>.<CRLF>\r\n")
            .await?;
        let max = self.s.limits.max_message_bytes;
        let data = read_data(io, max, &self.waits).await?;
        let envelope = std::mem::take(&mut self.rcpts);
        self.mail_from = None;
        let message = match data {
            Data::Message(m) => m,
            Data::TooBig => {
                return Ok(self.too_big());
            }
            // The message is dropped: nothing was promised for it.
            Data::Eof => return Ok(TIMEOUT.to_owned()),
            Data::TimedOut if self.waits.past_deadline() => return Ok(DEADLINE.to_owned()),
            Data::TimedOut => return Ok(TIMEOUT.to_owned()),
        };
        let Some(principal) = &self.principal else {
            return Ok(reply(530, "5.7.0", "Authentication required"));
        };
        Ok(
            match crate::api::emails::accept_submitted(
                self.state,
                principal,
                self.ip(),
                &envelope,
                &message,
            )
            .await
            {
                Ok(e) if e.replayed => reply(
                    250,
                    "2.0.0",
                    &format!("queued as {} (already, under this Idempotency-Key)", e.id),
                ),
                Ok(e) => reply(250, "2.0.0", &format!("queued as {}", e.id)),
                Err(e) => {
                    if e.status.is_server_error() {
                        // As the API's gate does: the database is checked again now.
                        self.state.readiness.recheck();
                    }
                    smtp_refusal(&e)
                }
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::path_of;

    #[test]
    fn paths_and_parameters() {
        assert_eq!(
            path_of("<a@b.c> SIZE=10"),
            Some(("a@b.c".to_owned(), "SIZE=10"))
        );
        assert_eq!(path_of(" <>"), Some((String::new(), "")));
        assert_eq!(path_of("a@b.c"), None);
        assert_eq!(path_of("<a@b.c"), None);
    }
}
