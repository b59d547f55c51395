//! Herald's inbound SMTP listener (RFC 5321) for bounce and complaint reports sent to the
//! return path.
//!
//! It accepts RCPT only for valid signed VERP addresses on the bounce domain and for
//! `postmaster@`/`abuse@` there (550 otherwise, so it is never an open relay nor a way to
//! probe recipients), offers STARTTLS when given a certificate, keeps every accepted message
//! raw before reading it, and answers 250 once it is kept, whatever its reading does.
//!
//! It sits on a public address, so nothing a client does holds it: every read and every write
//! has a timeout, a connection has a deadline, junk commands and refused commands are counted
//! and the connection closed past a limit, one client address has a cap on connections open
//! and opened a minute, and accept errors (file descriptors run out) back off instead of
//! spinning. Mail with no signed return path (to `postmaster@`/`abuse@`) is kept within a
//! smaller size and an hourly budget shared by all clients.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, BufReader};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use super::inbound::InboundProcessor;
use crate::config::InboundConfig;
use crate::smtp_wire::{Admission, Data, Line, Waits, read_data, read_line};

/// Longest command or data line accepted, CRLF included (RFC 5321 §4.5.3.1.6 says 1000 for
/// text lines; real bounce generators exceed it, so allow some slack).
const MAX_LINE: usize = 4096;

#[derive(Clone)]
pub struct ListenerSettings {
    pub hostname: String,
    pub limits: InboundConfig,
    pub tls: Option<TlsAcceptor>,
    /// Mail is refused with 451 while the database cannot take it.
    pub readiness: Arc<crate::readiness::Readiness>,
}

/// Accepts connections until `cancel`.
pub async fn serve(
    listener: TcpListener,
    processor: InboundProcessor,
    settings: ListenerSettings,
    cancel: CancellationToken,
) {
    let admission = Admission::new(
        settings.limits.max_connections,
        settings.limits.max_connections_per_client,
        settings.limits.connections_per_minute_per_client,
    );
    let budget = Arc::new(UnsignedBudget::new(settings.limits.unsigned_per_hour));
    while let Some((stream, peer)) = crate::accept::next(&listener, &cancel, "bounces").await {
        let Some(admitted) = admission.admit(&stream, peer.ip()) else {
            continue;
        };
        let (processor, settings, budget) =
            (processor.clone(), settings.clone(), Arc::clone(&budget));
        tokio::spawn(async move {
            let _admitted = admitted;
            let mut session = Session::new(&processor, &settings, &budget);
            let result = session.run(stream, true, false).await;
            if let Ok(Upgrade::StartTls(stream)) = result
                && let Some(tls) = &settings.tls
                && let Ok(Ok(stream)) =
                    tokio::time::timeout(settings.limits.timeout, tls.accept(stream)).await
            {
                let _ = session.run(stream, false, true).await;
            }
            tracing::debug!(%peer, "inbound SMTP session ended");
        });
    }
}

/// A token bucket for mail with no signed return path: `per_hour` messages an hour, as many
/// at once at most.
struct UnsignedBudget {
    per_hour: u32,
    state: Mutex<(f64, Instant)>,
}

impl UnsignedBudget {
    fn new(per_hour: u32) -> Self {
        Self {
            per_hour,
            state: Mutex::new((f64::from(per_hour), Instant::now())),
        }
    }

    fn refill(&self) -> std::sync::MutexGuard<'_, (f64, Instant)> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let earned = now.duration_since(s.1).as_secs_f64() * f64::from(self.per_hour) / 3600.0;
        s.0 = (s.0 + earned).min(f64::from(self.per_hour));
        s.1 = now;
        s
    }

    fn has_room(&self) -> bool {
        self.refill().0 >= 1.0
    }

    fn take(&self) -> bool {
        let mut s = self.refill();
        if s.0 >= 1.0 {
            s.0 -= 1.0;
            true
        } else {
            false
        }
    }
}

enum Upgrade<S> {
    Closed,
    StartTls(S),
}

/// Why a session ends early, with the reply it gets.
const TIMEOUT: &str = "421 4.4.2 Timeout, closing connection";
const DEADLINE: &str = "421 4.4.2 Connection open too long, closing";
const TOO_LONG: &str = "500 5.5.2 Line too long";

/// One client's conversation, across a STARTTLS upgrade.
struct Session<'a> {
    processor: &'a InboundProcessor,
    s: &'a ListenerSettings,
    budget: &'a UnsignedBudget,
    waits: Waits,
    junk: u32,
    errors: u32,
}

enum Step {
    Reply(String),
    Close(&'static str),
}

impl<'a> Session<'a> {
    fn new(
        processor: &'a InboundProcessor,
        s: &'a ListenerSettings,
        budget: &'a UnsignedBudget,
    ) -> Self {
        Self {
            processor,
            s,
            budget,
            waits: Waits::new(s.limits.timeout, s.limits.session_timeout),
            junk: 0,
            errors: 0,
        }
    }

    async fn next_line<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        io: &mut BufReader<S>,
    ) -> std::io::Result<Result<Vec<u8>, Option<&'static str>>> {
        Ok(match read_line(io, MAX_LINE, &self.waits).await? {
            Line::Text(t) => Ok(t),
            Line::Eof => Err(None),
            Line::TooLong => Err(Some(TOO_LONG)),
            Line::TimedOut if self.waits.past_deadline() => Err(Some(DEADLINE)),
            Line::TimedOut => Err(Some(TIMEOUT)),
        })
    }

    async fn run<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        stream: S,
        greet: bool,
        tls: bool,
    ) -> std::io::Result<Upgrade<S>> {
        let mut io = BufReader::new(stream);
        let s = self.s;
        if greet {
            let banner = format!("220 {} ESMTP Herald bounce receiver", s.hostname);
            write_reply(&mut io, &banner, s.limits.timeout).await?;
        }
        let mut from: Option<String> = None;
        let mut rcpts: Vec<String> = Vec::new();
        loop {
            let line = match self.next_line(&mut io).await? {
                Ok(t) => String::from_utf8_lossy(&t).into_owned(),
                Err(None) => return Ok(Upgrade::Closed),
                Err(Some(reply)) => {
                    write_reply(&mut io, reply, s.limits.timeout).await?;
                    return Ok(Upgrade::Closed);
                }
            };
            let cmd = line.trim_end_matches(['\r', '\n']);
            let upper = cmd.to_ascii_uppercase();
            let verb = upper.split([' ', ':']).next().unwrap_or("");
            let step = match verb {
                "EHLO" => {
                    let mut ext = vec![
                        format!("250-{}", s.hostname),
                        format!("250-SIZE {}", s.limits.max_message_bytes),
                        "250-8BITMIME".into(),
                    ];
                    if s.tls.is_some() && !tls {
                        ext.push("250-STARTTLS".into());
                    }
                    ext.push("250 ENHANCEDSTATUSCODES".into());
                    Step::Reply(ext.join("\r\n"))
                }
                "HELO" => Step::Reply(format!("250 {}", s.hostname)),
                "STARTTLS" if s.tls.is_some() && !tls && upper == "STARTTLS" => {
                    write_reply(&mut io, "220 2.0.0 Ready to start TLS", s.limits.timeout).await?;
                    return Ok(Upgrade::StartTls(io.into_inner()));
                }
                "MAIL" if upper.starts_with("MAIL FROM:") => {
                    let rest = upper.get("MAIL FROM:".len()..).unwrap_or("");
                    let declared = rest
                        .split_whitespace()
                        .find_map(|p| p.strip_prefix("SIZE="))
                        .and_then(|n| n.parse::<usize>().ok());
                    if declared.is_some_and(|n| n > s.limits.max_message_bytes) {
                        Step::Reply(
                            "552 5.3.4 Message size exceeds fixed maximum message size".into(),
                        )
                    } else if s.readiness.state() != crate::readiness::State::Ready {
                        Step::Reply(
                            "451 4.3.0 Herald cannot store mail right now, try again later".into(),
                        )
                    } else {
                        from = Some(angle(cmd.get("MAIL FROM:".len()..).unwrap_or("")));
                        rcpts.clear();
                        Step::Reply("250 2.1.0 OK".into())
                    }
                }
                "RCPT" if upper.starts_with("RCPT TO:") => {
                    let addr = angle(cmd.get("RCPT TO:".len()..).unwrap_or(""));
                    Step::Reply(self.rcpt(from.is_some(), &mut rcpts, addr))
                }
                "DATA" if upper == "DATA" => {
                    if rcpts.is_empty() {
                        Step::Reply("503 5.5.1 RCPT first".into())
                    } else {
                        write_reply(
                            &mut io,
                            "354 End data with <CR><LF>.<CR><LF>",
                            s.limits.timeout,
                        )
                        .await?;
                        let rcpt_list = std::mem::take(&mut rcpts);
                        from = None;
                        match self.data(&mut io, rcpt_list).await? {
                            Ok(reply) => Step::Reply(reply),
                            Err(close) => Step::Close(close),
                        }
                    }
                }
                "RSET" => {
                    from = None;
                    rcpts.clear();
                    self.junk += 1;
                    Step::Reply("250 2.0.0 OK".into())
                }
                "NOOP" => {
                    self.junk += 1;
                    Step::Reply("250 2.0.0 OK".into())
                }
                "QUIT" => {
                    write_reply(&mut io, "221 2.0.0 Bye", s.limits.timeout).await?;
                    return Ok(Upgrade::Closed);
                }
                _ => {
                    self.junk += 1;
                    Step::Reply("502 5.5.2 Command not recognized".into())
                }
            };
            let reply = match step {
                Step::Close(reply) => {
                    write_reply(&mut io, reply, s.limits.timeout).await?;
                    return Ok(Upgrade::Closed);
                }
                Step::Reply(r) => r,
            };
            if reply.starts_with(['4', '5']) {
                self.errors += 1;
            }
            if self.errors > s.limits.max_errors {
                write_reply(
                    &mut io,
                    "421 4.7.0 Too many errors, closing connection",
                    s.limits.timeout,
                )
                .await?;
                return Ok(Upgrade::Closed);
            }
            if self.junk > s.limits.max_junk_commands {
                write_reply(
                    &mut io,
                    "421 4.7.0 Too many commands that move no mail, closing connection",
                    s.limits.timeout,
                )
                .await?;
                return Ok(Upgrade::Closed);
            }
            write_reply(&mut io, &reply, s.limits.timeout).await?;
        }
    }

    fn rcpt(&self, has_from: bool, rcpts: &mut Vec<String>, addr: String) -> String {
        let s = self.s;
        if !has_from {
            return "503 5.5.1 MAIL first".into();
        }
        if rcpts.len() >= s.limits.max_recipients {
            return "452 4.5.3 Too many recipients".into();
        }
        match accepts(self.processor, &addr) {
            Accept::Signed => {
                rcpts.push(addr);
                "250 2.1.5 OK".into()
            }
            Accept::Unsigned if self.budget.has_room() => {
                rcpts.push(addr);
                "250 2.1.5 OK".into()
            }
            Accept::Unsigned => {
                "450 4.7.1 Too much mail for this mailbox this hour, try again later".into()
            }
            Accept::No => "550 5.1.1 No such recipient here".into(),
        }
    }

    /// Reads a message and keeps it. `Err` with a reply that ends the session.
    async fn data<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        io: &mut BufReader<S>,
        rcpts: Vec<String>,
    ) -> std::io::Result<Result<String, &'static str>> {
        let s = self.s;
        let signed = rcpts
            .iter()
            .any(|r| accepts(self.processor, r) == Accept::Signed);
        let limit = if signed {
            s.limits.max_message_bytes
        } else {
            s.limits.unsigned_max_bytes.min(s.limits.max_message_bytes)
        };
        let data = match read_data(io, limit, &self.waits).await? {
            Data::Message(m) => m,
            Data::TooBig => {
                return Ok(Ok(
                    "552 5.3.4 Message size exceeds fixed maximum message size".into(),
                ));
            }
            Data::Eof => return Ok(Err("421 4.4.2 Connection closed during data")),
            Data::TimedOut if self.waits.past_deadline() => return Ok(Err(DEADLINE)),
            Data::TimedOut => return Ok(Err(TIMEOUT)),
        };
        if !signed && !self.budget.take() {
            return Ok(Ok(
                "450 4.7.1 Too much mail for this mailbox this hour, try again later".into(),
            ));
        }
        Ok(Ok(
            match self.processor.receive(data, rcpts, "smtp", None).await {
                Ok(outcome) => format!("250 2.0.0 OK {}", outcome.id),
                Err(e) => {
                    tracing::error!(error = %e, "could not keep an inbound message");
                    "451 4.3.0 Temporary failure, try again later".into()
                }
            },
        ))
    }
}

/// Writes one reply, within `timeout`: a client that does not read is not waited for.
async fn write_reply<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut BufReader<S>,
    reply: &str,
    timeout: Duration,
) -> std::io::Result<()> {
    let mut bytes = Vec::with_capacity(reply.len() + 2);
    bytes.extend_from_slice(reply.as_bytes());
    bytes.extend_from_slice(b"\r\n");
    crate::smtp_wire::write(io, &bytes, timeout).await
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Accept {
    /// A VERP address with a valid signature.
    Signed,
    /// `postmaster@`/`abuse@` the bounce domain.
    Unsigned,
    No,
}

fn accepts(p: &InboundProcessor, addr: &str) -> Accept {
    let Some((local, domain)) = addr.rsplit_once('@') else {
        return Accept::No;
    };
    if !domain.eq_ignore_ascii_case(&p.bounce_domain) {
        return Accept::No;
    }
    if p.verp.verify_address(addr, &p.bounce_domain).is_some() {
        return Accept::Signed;
    }
    let local = local.to_ascii_lowercase();
    if local == "postmaster" || local == "abuse" {
        Accept::Unsigned
    } else {
        Accept::No
    }
}

/// The address inside `<…>`, or the first word.
fn angle(arg: &str) -> String {
    let arg = arg.trim();
    let inner = match arg.split_once('<') {
        Some((_, rest)) => rest.split_once('>').map_or(rest, |(a, _)| a),
        None => arg.split_whitespace().next().unwrap_or(""),
    };
    inner.trim().to_owned()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::angle;

    #[test]
    fn takes_the_address_inside_angle_brackets() {
        assert_eq!(angle(" <a@b.example> SIZE=10"), "a@b.example");
        assert_eq!(angle("a@b.example"), "a@b.example");
        assert_eq!(angle("<>"), "");
        assert_eq!(angle("<é@x"), "é@x");
    }

    proptest! {
        #[test]
        fn any_argument_is_read(arg in "\\PC{0,200}") {
            let a = angle(&arg);
            prop_assert!(a.len() <= arg.len());
        }
    }
}
