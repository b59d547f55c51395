//! A real webhook receiver: an axum server on loopback that records every request and answers
//! as the test says (a status, a `Retry-After`, a reply slower than Herald's timeout). It can
//! be stopped and started again on the same port to play an endpoint that is down.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::sync::Notify;

#[derive(Debug, Clone)]
pub struct Hit {
    pub id: String,
    pub timestamp: String,
    pub signature: String,
    pub body: String,
    /// The status the receiver answered with.
    pub answered: u16,
    /// When it arrived.
    pub at: std::time::Instant,
}

/// How the receiver answers.
#[derive(Debug, Clone)]
pub enum Mode {
    Status(u16),
    StatusRetryAfter(u16, u64),
    /// Answer 200, but only after this long (longer than Herald waits).
    Slow(Duration),
    /// Answer 307 pointing elsewhere.
    Redirect(String),
}

#[derive(Clone)]
struct Shared {
    /// Requests being answered now, and the most there ever were at once.
    in_flight: Arc<Mutex<(usize, usize)>>,
    hits: Arc<Mutex<Vec<Hit>>>,
    mode: Arc<Mutex<Mode>>,
    arrived: Arc<Notify>,
}

pub struct Receiver {
    pub addr: SocketAddr,
    shared: Shared,
    server: Option<tokio::task::JoinHandle<()>>,
}

impl Receiver {
    pub async fn start() -> Self {
        let shared = Shared {
            in_flight: Arc::default(),
            hits: Arc::default(),
            mode: Arc::new(Mutex::new(Mode::Status(200))),
            arrived: Arc::new(Notify::new()),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut r = Self {
            addr,
            shared,
            server: None,
        };
        r.serve(listener);
        r
    }

    fn serve(&mut self, listener: tokio::net::TcpListener) {
        let app = Router::new().fallback(hook).with_state(self.shared.clone());
        self.server = Some(tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        }));
    }

    pub fn url(&self) -> String {
        format!("http://{}/hooks", self.addr)
    }

    /// Stops listening: connections are refused until `restart`.
    pub fn stop(&mut self) {
        if let Some(s) = self.server.take() {
            s.abort();
        }
    }

    pub async fn restart(&mut self) {
        let listener = tokio::net::TcpListener::bind(self.addr)
            .await
            .expect("rebind");
        self.serve(listener);
    }

    pub fn set(&self, mode: Mode) {
        *self.shared.mode.lock().expect("lock") = mode;
    }

    /// The most requests this receiver was answering at one time.
    pub fn max_concurrent(&self) -> usize {
        self.shared.in_flight.lock().expect("lock").1
    }

    pub fn hits(&self) -> Vec<Hit> {
        self.shared.hits.lock().expect("lock").clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn hook(State(s): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let mode = s.mode.lock().expect("lock").clone();
    let h = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let answered = match &mode {
        Mode::Status(c) | Mode::StatusRetryAfter(c, _) => *c,
        Mode::Slow(_) => 200,
        Mode::Redirect(_) => 307,
    };
    s.hits.lock().expect("lock").push(Hit {
        id: h("webhook-id"),
        timestamp: h("webhook-timestamp"),
        signature: h("webhook-signature"),
        body: String::from_utf8_lossy(&body).into_owned(),
        answered,
        at: std::time::Instant::now(),
    });
    s.arrived.notify_waiters();
    {
        let mut f = s.in_flight.lock().expect("lock");
        f.0 += 1;
        f.1 = f.1.max(f.0);
    }
    let response = answer(mode).await;
    s.in_flight.lock().expect("lock").0 -= 1;
    response
}

async fn answer(mode: Mode) -> Response {
    match mode {
        Mode::Status(c) => (StatusCode::from_u16(c).expect("status"), "ok").into_response(),
        Mode::StatusRetryAfter(c, secs) => (
            StatusCode::from_u16(c).expect("status"),
            [("retry-after", secs.to_string())],
            "busy",
        )
            .into_response(),
        Mode::Redirect(to) => {
            (StatusCode::TEMPORARY_REDIRECT, [("location", to)], "moved").into_response()
        }
        Mode::Slow(d) => {
            tokio::time::sleep(d).await;
            (StatusCode::OK, "late").into_response()
        }
    }
}
