//! Herald's inbound SMTP listener (RFC 5321) for bounce and complaint reports sent to the
//! return path.
//!
//! It accepts RCPT only for valid signed VERP addresses on the bounce domain and for
//! `postmaster@`/`abuse@` there (550 otherwise, so it is never an open relay nor a way to
//! probe recipients), enforces SIZE, a line-length limit, a per-command timeout and a cap on
//! connections, offers STARTTLS when given a certificate, keeps every accepted message raw
//! before processing it, and answers 250 only after that.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use super::inbound::InboundProcessor;

/// Longest command or data line accepted, CRLF included (RFC 5321 §4.5.3.1.6 says 1000 for
/// text lines; real bounce generators exceed it, so allow some slack).
const MAX_LINE: usize = 4096;

#[derive(Clone)]
pub struct ListenerSettings {
    pub hostname: String,
    pub max_message_bytes: usize,
    pub max_recipients: usize,
    pub timeout: Duration,
    pub tls: Option<TlsAcceptor>,
}

/// Loads a PEM certificate chain and key for STARTTLS.
pub fn tls_acceptor(cert_file: &str, key_file: &str) -> Result<TlsAcceptor, String> {
    let certs = rustls_pemfile::certs(&mut std::io::BufReader::new(
        std::fs::File::open(cert_file).map_err(|e| format!("{cert_file}: {e}"))?,
    ))
    .collect::<Result<Vec<_>, _>>()
    .map_err(|e| format!("{cert_file}: {e}"))?;
    let key = rustls_pemfile::private_key(&mut std::io::BufReader::new(
        std::fs::File::open(key_file).map_err(|e| format!("{key_file}: {e}"))?,
    ))
    .map_err(|e| format!("{key_file}: {e}"))?
    .ok_or_else(|| format!("{key_file}: no private key"))?;
    let config = tokio_rustls::rustls::ServerConfig::builder_with_provider(Arc::new(
        tokio_rustls::rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| e.to_string())?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Accepts connections until `cancel`.
pub async fn serve(
    listener: TcpListener,
    processor: InboundProcessor,
    settings: ListenerSettings,
    max_connections: usize,
    cancel: CancellationToken,
) {
    let permits = Arc::new(Semaphore::new(max_connections.max(1)));
    loop {
        let accepted = tokio::select! {
            () = cancel.cancelled() => return,
            a = listener.accept() => a,
        };
        let Ok((mut stream, peer)) = accepted else {
            continue;
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            let _ = stream
                .write_all(b"421 4.7.0 Too many connections, try again later\r\n")
                .await;
            continue;
        };
        let (processor, settings) = (processor.clone(), settings.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let result = session(stream, true, false, &processor, &settings).await;
            if let Ok(Upgrade::StartTls(stream)) = result
                && let Some(tls) = &settings.tls
                && let Ok(Ok(stream)) =
                    tokio::time::timeout(settings.timeout, tls.accept(stream)).await
            {
                let _ = session(stream, false, true, &processor, &settings).await;
            }
            tracing::debug!(%peer, "inbound SMTP session ended");
        });
    }
}

enum Upgrade<S> {
    Closed,
    StartTls(S),
}

/// A line as received, its CRLF included: bytes, not text, since a message's lines may be
/// 8-bit in any charset (the listener offers 8BITMIME) and are kept exactly as sent.
enum Line {
    Text(Vec<u8>),
    TooLong,
    Eof,
}

async fn read_line<S: AsyncRead + Unpin>(
    io: &mut BufReader<S>,
    timeout: Duration,
) -> std::io::Result<Option<Line>> {
    let mut buf = Vec::new();
    let read = tokio::time::timeout(timeout, async {
        loop {
            let available = io.fill_buf().await?;
            if available.is_empty() {
                return Ok::<_, std::io::Error>(if buf.is_empty() {
                    Line::Eof
                } else {
                    Line::TooLong
                });
            }
            let take = available
                .iter()
                .position(|b| *b == b'\n')
                .map_or(available.len(), |p| p + 1);
            buf.extend_from_slice(&available[..take]);
            io.consume(take);
            if buf.len() > MAX_LINE {
                return Ok(Line::TooLong);
            }
            if buf.ends_with(b"\n") {
                return Ok(Line::Text(std::mem::take(&mut buf)));
            }
        }
    })
    .await;
    match read {
        Ok(r) => r.map(Some),
        Err(_) => Ok(None),
    }
}

async fn session<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    greet: bool,
    tls: bool,
    processor: &InboundProcessor,
    s: &ListenerSettings,
) -> std::io::Result<Upgrade<S>> {
    let mut io = BufReader::new(stream);
    if greet {
        io.write_all(format!("220 {} ESMTP Herald bounce receiver\r\n", s.hostname).as_bytes())
            .await?;
    }
    let mut from: Option<String> = None;
    let mut rcpts: Vec<String> = Vec::new();
    loop {
        let line = match read_line(&mut io, s.timeout).await? {
            None => {
                io.write_all(b"421 4.4.2 Timeout, closing connection\r\n")
                    .await?;
                return Ok(Upgrade::Closed);
            }
            Some(Line::Eof) => return Ok(Upgrade::Closed),
            Some(Line::TooLong) => {
                io.write_all(b"500 5.5.2 Line too long\r\n").await?;
                return Ok(Upgrade::Closed);
            }
            Some(Line::Text(t)) => String::from_utf8_lossy(&t).into_owned(),
        };
        let cmd = line.trim_end_matches(['\r', '\n']);
        let upper = cmd.to_ascii_uppercase();
        let reply: String = if upper.starts_with("EHLO") {
            let mut ext = vec![
                format!("250-{}", s.hostname),
                format!("250-SIZE {}", s.max_message_bytes),
                "250-8BITMIME".into(),
            ];
            if s.tls.is_some() && !tls {
                ext.push("250-STARTTLS".into());
            }
            ext.push("250 ENHANCEDSTATUSCODES".into());
            ext.join("\r\n")
        } else if upper.starts_with("HELO") {
            format!("250 {}", s.hostname)
        } else if upper == "STARTTLS" && s.tls.is_some() && !tls {
            io.write_all(b"220 2.0.0 Ready to start TLS\r\n").await?;
            return Ok(Upgrade::StartTls(io.into_inner()));
        } else if let Some(rest) = upper.strip_prefix("MAIL FROM:") {
            let declared = rest
                .split_whitespace()
                .find_map(|p| p.strip_prefix("SIZE="))
                .and_then(|n| n.parse::<usize>().ok());
            if declared.is_some_and(|n| n > s.max_message_bytes) {
                "552 5.3.4 Message size exceeds fixed maximum message size".into()
            } else {
                from = Some(angle(&cmd["MAIL FROM:".len()..]));
                rcpts.clear();
                "250 2.1.0 OK".into()
            }
        } else if upper.starts_with("RCPT TO:") {
            let addr = angle(&cmd["RCPT TO:".len()..]);
            if from.is_none() {
                "503 5.5.1 MAIL first".into()
            } else if rcpts.len() >= s.max_recipients {
                "452 4.5.3 Too many recipients".into()
            } else if accepts(processor, &addr) {
                rcpts.push(addr);
                "250 2.1.5 OK".into()
            } else {
                "550 5.1.1 No such recipient here".into()
            }
        } else if upper == "DATA" {
            if rcpts.is_empty() {
                "503 5.5.1 RCPT first".into()
            } else {
                io.write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                    .await?;
                let mut data = Vec::new();
                let mut too_big = false;
                loop {
                    match read_line(&mut io, s.timeout).await? {
                        None => {
                            io.write_all(b"421 4.4.2 Timeout, closing connection\r\n")
                                .await?;
                            return Ok(Upgrade::Closed);
                        }
                        Some(Line::Eof) => return Ok(Upgrade::Closed),
                        Some(Line::TooLong) => {
                            io.write_all(b"500 5.5.2 Line too long\r\n").await?;
                            return Ok(Upgrade::Closed);
                        }
                        Some(Line::Text(l)) => {
                            if l == b".\r\n" || l == b".\n" {
                                break;
                            }
                            // Undo dot-stuffing (RFC 5321 §4.5.2).
                            let l = l.strip_prefix(b".").unwrap_or(&l);
                            if data.len() + l.len() > s.max_message_bytes {
                                too_big = true;
                            } else {
                                data.extend_from_slice(l);
                            }
                        }
                    }
                }
                let rcpt_list = std::mem::take(&mut rcpts);
                from = None;
                if too_big {
                    "552 5.3.4 Message size exceeds fixed maximum message size".into()
                } else {
                    match processor.process(&data, &rcpt_list, "smtp", None).await {
                        Ok(outcome) => format!("250 2.0.0 OK {}", outcome.id),
                        Err(e) => {
                            tracing::error!(error = %e, "could not keep an inbound message");
                            "451 4.3.0 Temporary failure, try again later".into()
                        }
                    }
                }
            }
        } else if upper == "RSET" {
            from = None;
            rcpts.clear();
            "250 2.0.0 OK".into()
        } else if upper == "NOOP" {
            "250 2.0.0 OK".into()
        } else if upper == "QUIT" {
            io.write_all(b"221 2.0.0 Bye\r\n").await?;
            return Ok(Upgrade::Closed);
        } else {
            "502 5.5.2 Command not recognized".into()
        };
        io.write_all(format!("{reply}\r\n").as_bytes()).await?;
    }
}

/// VERP addresses with a valid signature, and postmaster@/abuse@ the bounce domain.
fn accepts(p: &InboundProcessor, addr: &str) -> bool {
    let Some((local, domain)) = addr.rsplit_once('@') else {
        return false;
    };
    if !domain.eq_ignore_ascii_case(&p.bounce_domain) {
        return false;
    }
    let local = local.to_ascii_lowercase();
    local == "postmaster"
        || local == "abuse"
        || p.verp.verify_address(addr, &p.bounce_domain).is_some()
}

fn angle(arg: &str) -> String {
    let arg = arg.trim();
    let start = arg.find('<').map_or(0, |i| i + 1);
    let end = arg[start..].find('>').map_or(arg.len(), |i| start + i);
    arg[start..end].trim().to_owned()
}
