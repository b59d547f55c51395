//! Accepting connections on a socket that faces the internet: an accept error (file
//! descriptors or memory run out) backs off, from 10 ms doubling to 1 s, instead of trying
//! again at once and spinning a core while nothing can be accepted.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// The next connection, or `None` once `cancel` is cancelled. `what` names the listener in the
/// warning an accept error gets.
pub async fn next(
    listener: &TcpListener,
    cancel: &CancellationToken,
    what: &str,
) -> Option<(TcpStream, SocketAddr)> {
    let mut backoff = Duration::ZERO;
    loop {
        let accepted = tokio::select! {
            () = cancel.cancelled() => return None,
            a = listener.accept() => a,
        };
        match accepted {
            Ok(connection) => return Some(connection),
            Err(e) => {
                backoff = (backoff * 2).clamp(Duration::from_millis(10), Duration::from_secs(1));
                tracing::warn!(error = %e, pause_ms = backoff.as_millis(), listener = what, "could not accept a connection");
                tokio::select! {
                    () = cancel.cancelled() => return None,
                    () = tokio::time::sleep(backoff) => {}
                }
            }
        }
    }
}
