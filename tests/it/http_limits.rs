//! HTTP clients cannot hold Herald: a connection that sends nothing, trickles its body or idles
//! on keep-alive is closed; past the connection cap a new one is closed at once; and a stalled
//! client does not hold the shutdown past its deadline.

use std::time::{Duration, Instant};

use herald::store::Backend;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::TestApp;

async fn app() -> TestApp {
    TestApp::spawn_with(Backend::Sqlite, None, |c| {
        c.http.header_timeout = Duration::from_secs(1);
        c.http.request_timeout = Duration::from_secs(1);
        c.http.max_connections = 4;
        c.http.shutdown_timeout = Duration::from_secs(1);
    })
    .await
}

fn addr(app: &TestApp) -> String {
    app.base.trim_start_matches("http://").to_owned()
}

/// Reads until the server closes the connection; what it said, or `None` if it kept it open
/// for 20 s.
async fn until_closed(s: &mut TcpStream) -> Option<String> {
    let mut all = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut all)).await;
    match read {
        Ok(_) => Some(String::from_utf8_lossy(&all).into_owned()),
        Err(_) => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_slow_and_idle_clients_are_closed() {
    let app = app().await;
    // Sends nothing.
    let mut silent = TcpStream::connect(addr(&app)).await.expect("connect");
    assert!(
        until_closed(&mut silent).await.is_some(),
        "a silent client is closed"
    );
    // Sends its headers, then one byte of a ten-byte body.
    let mut slow = TcpStream::connect(addr(&app)).await.expect("connect");
    slow.write_all(
        format!(
            "POST /v1/emails HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: 10\r\n\r\n{{",
            app.key
        )
        .as_bytes(),
    )
    .await
    .expect("write");
    let answer = until_closed(&mut slow).await.expect("closed");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request_timeout"), "{answer}");
    // One request answered, then idle on keep-alive.
    let mut idle = TcpStream::connect(addr(&app)).await.expect("connect");
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let answer = until_closed(&mut idle).await.expect("closed when idle");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_cap_a_connection_is_closed_at_once() {
    let app = app().await;
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut s = TcpStream::connect(addr(&app)).await.expect("connect");
        // A byte of a request, so each is taken (and held until its header timeout).
        s.write_all(b"G").await.expect("write");
        held.push(s);
    }
    // Accepted, then closed without an answer.
    let mut fifth = TcpStream::connect(addr(&app)).await.expect("connect");
    let started = Instant::now();
    let said = until_closed(&mut fifth).await.expect("closed");
    assert!(said.is_empty(), "{said}");
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "closed before any timeout"
    );
    drop(held);
    // The places come back: a request goes through again.
    let mut ok = false;
    for _ in 0..50 {
        if let Ok(r) = app.http.get(format!("{}/healthz", app.base)).send().await
            && r.status() == 200
        {
            ok = true;
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(ok, "served again once the held connections closed");
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_client_does_not_hold_the_shutdown() {
    let app = app().await;
    let mut stalled = TcpStream::connect(addr(&app)).await.expect("connect");
    stalled
        .write_all(b"POST /v1/emails HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
        .await
        .expect("write");
    let started = Instant::now();
    app.finish().await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "stopped in {:?}",
        started.elapsed()
    );
}

/// Every answer forbids MIME sniffing and framing; the API's content policy allows nothing to
/// run, the docs' only their own files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_carry_the_browser_security_headers() {
    let app = app().await;
    for (path, policy) in [
        ("/healthz", "default-src 'none'"),
        ("/v1/emails", "default-src 'none'"),
        ("/docs/", "default-src 'self'"),
    ] {
        let r = app
            .http
            .get(format!("{}{path}", app.base))
            .send()
            .await
            .expect("get");
        let h = r.headers();
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(h["x-frame-options"], "DENY", "{path}");
        let csp = h["content-security-policy"].to_str().expect("ascii");
        assert!(
            csp.starts_with(policy) && csp.contains("frame-ancestors 'none'"),
            "{path}: {csp}"
        );
    }
    app.finish().await;
}

/// Keys that are not valid, from one address: 401 for a burst, then 429 before any lookup,
/// so guessing keys cannot make every request a database read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guessing_keys_is_cut_off_per_address() {
    let app = app().await;
    let mut codes = Vec::new();
    for _ in 0..40 {
        let guess = herald::domain::api_key::ApiKeyToken::generate();
        let r = app
            .http
            .get(format!("{}/v1/emails", app.base))
            .bearer_auth(guess.reveal())
            .send()
            .await
            .expect("get");
        codes.push(r.status().as_u16());
        if r.status() == 429 {
            assert!(r.headers().contains_key("retry-after"));
            let v: serde_json::Value = r.json().await.expect("json");
            assert_eq!(v["code"], "too_many_failed_authentications");
        }
    }
    assert_eq!(codes.first(), Some(&401));
    assert!(
        codes.iter().filter(|c| **c == 401).count() >= 20,
        "{codes:?}"
    );
    assert_eq!(codes.last(), Some(&429), "{codes:?}");
    app.finish().await;
}

/// What axum's own extractors refuse (a path that is not UTF-8) is answered as problem+json
/// too, with a stable code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_is_a_problem() {
    let app = app().await;
    let r = app
        .http
        .get(format!("{}/v1/emails/%FF%FE", app.base))
        .bearer_auth(&app.key)
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 400);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let v: serde_json::Value = r.json().await.expect("json");
    assert_eq!(v["code"], "bad_request", "{v}");
    assert!(v["request_id"].is_string(), "{v}");

    // What hyper refuses before any handler runs: not HTTP, a request line too long, too many
    // headers. Each answered as a problem, then the connection closed.
    let many_headers: String = (0..200).map(|i| format!("x-{i}: y\r\n")).collect();
    let cases = [
        ("GARBAGE\r\n\r\n".to_owned(), "400", "bad_request"),
        (
            format!("GET /{} HTTP/1.1\r\nhost: x\r\n\r\n", "a".repeat(70_000)),
            "414",
            "uri_too_long",
        ),
        (
            format!("GET /healthz HTTP/1.1\r\nhost: x\r\n{many_headers}\r\n"),
            "431",
            "headers_too_large",
        ),
    ];
    for (request, status, code) in cases {
        let mut s = TcpStream::connect(addr(&app)).await.expect("connect");
        s.write_all(request.as_bytes()).await.expect("write");
        let answer = until_closed(&mut s).await.expect("closed");
        let (head, body) = answer.split_once("\r\n\r\n").expect("a head and a body");
        assert!(head.starts_with(&format!("HTTP/1.1 {status} ")), "{answer}");
        assert!(
            head.contains("content-type: application/problem+json"),
            "{answer}"
        );
        let v: serde_json::Value = serde_json::from_str(body).expect("a problem document");
        assert_eq!(v["code"], code, "{v}");
        assert_eq!(v["status"].to_string(), status, "{v}");
    }
    app.finish().await;
}
