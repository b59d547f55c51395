//! What Herald's two SMTP listeners share (the inbound one for bounce reports and the one
//! apps submit mail to): reading a line or a message's DATA within a size and a time,
//! writing a reply within a time, the TLS acceptor, and the cap on one client address's
//! connections.
//!
//! Both sit where anyone can connect, so nothing here waits on a client without a timeout,
//! and nothing grows past the limit it is given: bytes past a limit are read and dropped,
//! never kept.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio_rustls::TlsAcceptor;

/// How long a read may wait: `timeout` for each, and none past the connection's `deadline`.
#[derive(Clone, Copy, Debug)]
pub struct Waits {
    pub timeout: Duration,
    pub deadline: Instant,
}

impl Waits {
    pub fn new(timeout: Duration, session: Duration) -> Self {
        Self {
            timeout,
            deadline: Instant::now() + session,
        }
    }

    fn next(&self) -> Duration {
        self.timeout
            .min(self.deadline.saturating_duration_since(Instant::now()))
    }

    /// The connection has been open as long as it may be.
    pub fn past_deadline(&self) -> bool {
        Instant::now() >= self.deadline
    }
}

/// A line as received, its line end included: bytes, not text, since a message's lines may
/// be 8-bit in any charset and are kept exactly as sent.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    Text(Vec<u8>),
    TooLong,
    Eof,
    TimedOut,
}

/// One line of at most `max` bytes.
pub async fn read_line<S: AsyncRead + Unpin>(
    io: &mut BufReader<S>,
    max: usize,
    waits: &Waits,
) -> std::io::Result<Line> {
    let mut buf = Vec::new();
    let read = tokio::time::timeout(waits.next(), async {
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
            buf.extend_from_slice(available.get(..take).unwrap_or(available));
            io.consume(take);
            if buf.len() > max {
                return Ok(Line::TooLong);
            }
            if buf.ends_with(b"\n") {
                return Ok(Line::Text(std::mem::take(&mut buf)));
            }
        }
    })
    .await;
    read.unwrap_or(Ok(Line::TimedOut))
}

/// What the client sent after `354`.
#[derive(Debug, PartialEq, Eq)]
pub enum Data {
    /// The message, dot-stuffing undone (RFC 5321 §4.5.2), its lines as sent.
    Message(Vec<u8>),
    /// It ended, but past the limit: what was over it was read and dropped.
    TooBig,
    /// The client went away before the final `.`.
    Eof,
    TimedOut,
}

/// A piece of a line this long without its end cannot be the final `.`: it is kept and the
/// rest of the line read on, so a line's length is bounded only by the message's.
const PIECE: usize = 4096;

/// Reads DATA up to its final `.`, keeping at most `limit` bytes. Each wait is one
/// [`Waits`]'s timeout (a slow sender that keeps sending is bounded by the deadline).
pub async fn read_data<S: AsyncRead + Unpin>(
    io: &mut BufReader<S>,
    limit: usize,
    waits: &Waits,
) -> std::io::Result<Data> {
    let mut message = Vec::new();
    let mut too_big = false;
    let mut keep = |piece: &[u8], line_start: bool| {
        let piece = if line_start {
            piece.strip_prefix(b".").unwrap_or(piece)
        } else {
            piece
        };
        if too_big || message.len() + piece.len() > limit {
            too_big = true;
        } else {
            message.extend_from_slice(piece);
        }
    };
    // The current line's bytes not yet kept, and whether they start it.
    let mut line = Vec::with_capacity(256);
    let mut line_start = true;
    loop {
        let Ok(filled) = tokio::time::timeout(waits.next(), io.fill_buf()).await else {
            return Ok(Data::TimedOut);
        };
        let available = filled?;
        if available.is_empty() {
            return Ok(Data::Eof);
        }
        let take = available
            .iter()
            .position(|b| *b == b'\n')
            .map_or(available.len(), |p| p + 1);
        line.extend_from_slice(available.get(..take).unwrap_or(available));
        io.consume(take);
        if line.ends_with(b"\n") {
            if line_start && (line == b".\r\n" || line == b".\n") {
                break;
            }
            keep(&line, line_start);
            line.clear();
            line_start = true;
        } else if line.len() >= PIECE {
            keep(&line, line_start);
            line.clear();
            line_start = false;
        }
    }
    Ok(if too_big {
        Data::TooBig
    } else {
        Data::Message(message)
    })
}

/// Writes `bytes` within `timeout`: a client that does not read is not waited for.
pub async fn write<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut BufReader<S>,
    bytes: &[u8],
    timeout: Duration,
) -> std::io::Result<()> {
    let w = async {
        io.get_mut().write_all(bytes).await?;
        io.get_mut().flush().await
    };
    tokio::time::timeout(timeout, w)
        .await
        .unwrap_or_else(|_| Err(std::io::Error::other("write timed out")))
}

/// Loads a PEM certificate chain and key for STARTTLS and implicit TLS.
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

/// Who may connect: at most `max_connections` at once, and what [`Clients`] allows one
/// address. A refused client is told why with a 421, never waited on.
pub struct Admission {
    permits: Arc<tokio::sync::Semaphore>,
    clients: Arc<Clients>,
}

/// An admitted connection's places; dropping it gives them back.
pub struct Admitted {
    _permit: tokio::sync::OwnedSemaphorePermit,
    _slot: ClientSlot,
}

impl Admission {
    pub fn new(max_connections: usize, max_per_client: usize, per_minute_per_client: u32) -> Self {
        Self {
            permits: Arc::new(tokio::sync::Semaphore::new(max_connections.max(1))),
            clients: Clients::new(max_per_client, per_minute_per_client),
        }
    }

    /// A place for this connection from `ip`, or `None` once the client has been told (if
    /// its socket takes the reply at once) why not. Admitted sockets have Nagle off: each
    /// reply goes out as written, not behind the client's delayed ACK of the one before.
    pub fn admit(&self, stream: &tokio::net::TcpStream, ip: IpAddr) -> Option<Admitted> {
        let Ok(permit) = Arc::clone(&self.permits).try_acquire_owned() else {
            let _ = stream.try_write(b"421 4.7.0 Too many connections, try again later\r\n");
            return None;
        };
        let Some(slot) = Clients::admit(&self.clients, ip) else {
            let _ = stream.try_write(
                b"421 4.7.0 Too many connections from your address, try again later\r\n",
            );
            return None;
        };
        let _ = stream.set_nodelay(true);
        Some(Admitted {
            _permit: permit,
            _slot: slot,
        })
    }
}

/// Connections open and recently opened, per client address: one address cannot take every
/// connection a listener has.
pub struct Clients {
    by_ip: Mutex<HashMap<IpAddr, ClientCount>>,
    max_open: usize,
    per_minute: u32,
}

struct ClientCount {
    open: usize,
    window_start: Instant,
    opened_in_window: u32,
}

/// One admitted connection; dropping it releases its place.
pub struct ClientSlot {
    clients: Arc<Clients>,
    ip: IpAddr,
}

impl Clients {
    /// At most `max_open` connections open from one address, and `per_minute` opened.
    pub fn new(max_open: usize, per_minute: u32) -> Arc<Self> {
        Arc::new(Self {
            by_ip: Mutex::default(),
            max_open: max_open.max(1),
            per_minute: per_minute.max(1),
        })
    }

    /// A place for one more connection from `ip`, or `None` past its caps.
    pub fn admit(this: &Arc<Self>, ip: IpAddr) -> Option<ClientSlot> {
        let mut map = this.by_ip.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let minute = Duration::from_secs(60);
        if map.len() > 10_000 {
            map.retain(|_, c| c.open > 0 || now.duration_since(c.window_start) < minute);
        }
        let c = map.entry(ip).or_insert(ClientCount {
            open: 0,
            window_start: now,
            opened_in_window: 0,
        });
        if now.duration_since(c.window_start) >= minute {
            c.window_start = now;
            c.opened_in_window = 0;
        }
        if c.open >= this.max_open || c.opened_in_window >= this.per_minute {
            return None;
        }
        c.open += 1;
        c.opened_in_window += 1;
        Some(ClientSlot {
            clients: Arc::clone(this),
            ip,
        })
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut map = self.clients.by_ip.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = map.get_mut(&self.ip) {
            c.open = c.open.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn data_of(input: &[u8], limit: usize) -> Data {
        let mut io = BufReader::with_capacity(64, input);
        let waits = Waits::new(Duration::from_secs(5), Duration::from_secs(5));
        read_data(&mut io, limit, &waits).await.expect("read")
    }

    #[tokio::test]
    async fn data_ends_at_the_dot_and_undoes_dot_stuffing() {
        let got = data_of(b"a\r\n..b\r\n.\r\nNEXT\r\n", 100).await;
        assert_eq!(got, Data::Message(b"a\r\n.b\r\n".to_vec()));
        assert_eq!(
            data_of(b"a\r\n.\n", 100).await,
            Data::Message(b"a\r\n".to_vec())
        );
    }

    #[tokio::test]
    async fn a_line_longer_than_a_piece_is_kept_whole_and_its_middle_not_unstuffed() {
        let mut long = vec![b'x'; PIECE * 2 + 7];
        long.push(b'.');
        let mut input = long.clone();
        input.extend_from_slice(b"\r\n.\r\n");
        let mut want = long;
        want.extend_from_slice(b"\r\n");
        assert_eq!(data_of(&input, 1 << 20).await, Data::Message(want));
    }

    #[tokio::test]
    async fn past_the_limit_is_too_big_and_cut_off_is_eof() {
        assert_eq!(data_of(b"0123456789\r\n.\r\n", 5).await, Data::TooBig);
        assert_eq!(data_of(b"abc\r\n", 100).await, Data::Eof);
    }

    #[test]
    fn one_address_is_capped() {
        let clients = Clients::new(2, 100);
        let ip: IpAddr = "192.0.2.1".parse().expect("ip");
        let a = Clients::admit(&clients, ip);
        let b = Clients::admit(&clients, ip);
        assert!(a.is_some() && b.is_some());
        assert!(Clients::admit(&clients, ip).is_none());
        assert!(Clients::admit(&clients, "192.0.2.2".parse().expect("ip")).is_some());
        drop(a);
        assert!(Clients::admit(&clients, ip).is_some());
    }
}
