//! The bounce listener end to end: the relay accepts a message, a DSN for it arrives over
//! SMTP (STARTTLS) at Herald's listener, the recipient becomes bounced, the address is
//! suppressed, and the next send to it is suppressed. Forged tokens, oversized and malformed
//! mail each get their answer.

use std::time::Duration;

use herald::store::Backend;
use lettre::transport::smtp::client::{AsyncSmtpConnection, Certificate, TlsParameters};
use lettre::transport::smtp::commands::{Data, Mail, Rcpt};
use lettre::transport::smtp::extension::ClientId;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::helpers::{TestApp, email_to, statuses};
use crate::inbound::dsn;
use crate::on_both_backends;
use crate::smtp_server::{TestSmtp, Tls};

on_both_backends!(dsn_over_smtp_bounces_suppresses_and_blocks_the_next_send);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_forgeries_oversize_and_overlong_lines() {
    let app = listener_app(Backend::Sqlite, None).await;
    let addr = app.inbound_addr.expect("listener");
    let mut s = Client::connect(addr).await;
    assert!(s.expect("220").await.contains("ESMTP"));
    s.send("EHLO tester").await;
    let ehlo = s.expect("250").await;
    assert!(
        ehlo.contains("STARTTLS") && ehlo.contains("SIZE 65536"),
        "{ehlo}"
    );
    s.send("MAIL FROM:<> SIZE=999999").await;
    s.expect("552").await;
    s.send("MAIL FROM:<>").await;
    s.expect("250").await;
    // A token that is not signed by Herald, another domain, an unknown local part.
    s.send("RCPT TO:<bounces+aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa@bounces.herald.localhost>")
        .await;
    s.expect("550").await;
    s.send("RCPT TO:<postmaster@example.com>").await;
    s.expect("550").await;
    s.send("RCPT TO:<someone@bounces.herald.localhost>").await;
    s.expect("550").await;
    // postmaster@ the bounce domain is accepted; garbage mail is kept, not dropped.
    s.send("RCPT TO:<postmaster@bounces.herald.localhost>")
        .await;
    s.expect("250").await;
    s.send("DATA").await;
    s.expect("354").await;
    s.send("this is not an email at all\r\n.").await;
    s.expect("250").await;
    assert_eq!(app.store.count_inbound("unknown").await.expect("count"), 1);
    // Too much data: the whole message is read, then refused.
    s.send("MAIL FROM:<>").await;
    s.expect("250").await;
    s.send("RCPT TO:<abuse@bounces.herald.localhost>").await;
    s.expect("250").await;
    s.send("DATA").await;
    s.expect("354").await;
    let line = "x".repeat(1000);
    for _ in 0..70 {
        s.send(&line).await;
    }
    s.send(".").await;
    s.expect("552").await;
    // A line longer than the limit ends the session.
    s.send(&"y".repeat(5000)).await;
    s.expect("500").await;
    assert_eq!(
        app.store.count_inbound("unknown").await.expect("count"),
        1,
        "the oversized message was not kept"
    );
    app.finish().await;
}

/// A message's bytes are kept as they came: an 8-bit line in another charset than UTF-8 (the
/// listener offers 8BITMIME) is not "repaired", and only the dot-stuffing is undone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keeps_an_8bit_message_byte_for_byte() {
    let app = listener_app(Backend::Sqlite, None).await;
    let mut s = Client::connect(app.inbound_addr.expect("listener")).await;
    s.expect("220").await;
    s.send("EHLO tester").await;
    assert!(s.expect("250").await.contains("8BITMIME"));
    s.send("MAIL FROM:<> BODY=8BITMIME").await;
    s.expect("250").await;
    s.send("RCPT TO:<postmaster@bounces.herald.localhost>")
        .await;
    s.expect("250").await;
    s.send("DATA").await;
    s.expect("354").await;
    // "é" in ISO-8859-1 is the lone byte 0xE9, which is not UTF-8.
    s.write(b"Subject: r\xe9sum\xe9\r\nContent-Type: text/plain; charset=iso-8859-1\r\n\r\nCaf\xe9\r\n..dot\r\n.\r\n")
        .await;
    let reply = s.expect("250").await;
    let id = reply
        .split_whitespace()
        .last()
        .expect("the kept message's id");
    let raw: Vec<u8> = sqlx::query_scalar("SELECT raw FROM inbound_messages WHERE id = $1")
        .bind(id)
        .fetch_one(&sqlx::AnyPool::connect(&app.db.url).await.expect("pool"))
        .await
        .expect("kept");
    assert_eq!(
        raw,
        b"Subject: r\xe9sum\xe9\r\nContent-Type: text/plain; charset=iso-8859-1\r\n\r\nCaf\xe9\r\n.dot\r\n"
    );
    app.finish().await;
}

async fn listener_app(backend: Backend, relay: Option<&TestSmtp>) -> TestApp {
    listener_app_with(backend, relay, |_| {}).await
}

async fn listener_app_with(
    backend: Backend,
    relay: Option<&TestSmtp>,
    tweak: impl FnOnce(&mut herald::config::InboundConfig),
) -> TestApp {
    TestApp::spawn_with(backend, relay, |c| {
        let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
        c.inbound.listen = "127.0.0.1:0".into();
        c.inbound.max_message_bytes = 64 * 1024;
        c.inbound.timeout = Duration::from_secs(5);
        c.inbound.tls_cert_file = format!("{fixtures}/server.pem");
        c.inbound.tls_key_file = format!("{fixtures}/server.key");
        tweak(&mut c.inbound);
    })
    .await
}

/// Junk commands and errors end a session; one address cannot hold more than its share of
/// connections; a slot a client held comes back when it is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn junk_errors_and_one_address_cannot_hold_the_listener() {
    let app = listener_app_with(Backend::Sqlite, None, |i| {
        i.max_junk_commands = 5;
        i.max_errors = 3;
        i.max_connections_per_client = 2;
    })
    .await;
    let addr = app.inbound_addr.expect("listener");
    let mut s = Client::connect(addr).await;
    s.expect("220").await;
    for _ in 0..5 {
        s.send("NOOP").await;
        s.expect("250").await;
    }
    s.send("NOOP").await;
    assert!(s.expect("421").await.contains("move no mail"));
    assert!(s.closed().await, "closed after the junk limit");

    let mut s = Client::connect(addr).await;
    s.expect("220").await;
    for _ in 0..3 {
        s.send("RCPT TO:<nobody@bounces.herald.localhost>").await;
        s.expect("503").await;
    }
    s.send("RCPT TO:<nobody@bounces.herald.localhost>").await;
    assert!(s.expect("421").await.contains("Too many errors"));
    assert!(s.closed().await);

    // Two connections from 127.0.0.1 are held open; a third is turned away at once.
    let mut a = Client::connect(addr).await;
    a.expect("220").await;
    let mut b = Client::connect(addr).await;
    b.expect("220").await;
    let mut c = Client::connect(addr).await;
    assert!(c.expect("421").await.contains("from your address"));
    drop(a);
    // Once one closes, its place is free again (the listener sees the close at its next read).
    let mut again = None;
    for _ in 0..100 {
        let mut d = Client::connect(addr).await;
        if d.reply().await.starts_with("220") {
            again = Some(d);
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(again.is_some(), "a freed place is given to the next client");
    b.send("QUIT").await;
    b.expect("221").await;
    app.finish().await;
}

/// A client that writes and never reads its replies, and one that keeps a connection alive
/// with a NOOP now and then, are both cut off: by the write timeout and by the session's
/// deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_or_never_leaves_is_cut_off() {
    let app = listener_app_with(Backend::Sqlite, None, |i| {
        i.timeout = Duration::from_secs(1);
        i.session_timeout = Duration::from_secs(3);
        i.max_junk_commands = u32::MAX;
    })
    .await;
    let addr = app.inbound_addr.expect("listener");
    let started = std::time::Instant::now();
    let mut pipeliner = TcpStream::connect(addr).await.expect("connect");
    let noops = "NOOP\r\n".repeat(64 * 1024);
    let cut = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            if pipeliner.write_all(noops.as_bytes()).await.is_err() {
                return;
            }
        }
    })
    .await;
    assert!(
        cut.is_ok(),
        "the listener closed a connection whose client does not read"
    );
    assert!(started.elapsed() < Duration::from_secs(30));

    let mut lingerer = Client::connect(addr).await;
    lingerer.expect("220").await;
    let started = std::time::Instant::now();
    let last = loop {
        // A NOOP every half second: within the per-command timeout each time.
        tokio::time::sleep(Duration::from_millis(500)).await;
        lingerer.send("NOOP").await;
        let reply = lingerer.reply().await;
        if !reply.starts_with("250") {
            break reply;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "never cut off");
    };
    assert!(
        last.starts_with("421") && last.contains("too long"),
        "{last}"
    );
    assert!(started.elapsed() >= Duration::from_secs(2));
    app.finish().await;
}

/// Mail with no signed return path (to postmaster@/abuse@) is kept within a smaller size and
/// an hourly budget; mail to a signed return path is not held to either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsigned_mail_is_kept_within_a_size_and_an_hourly_budget() {
    let app = listener_app_with(Backend::Sqlite, None, |i| {
        i.unsigned_max_bytes = 2048;
        i.unsigned_per_hour = 2;
    })
    .await;
    let addr = app.inbound_addr.expect("listener");
    let mut s = Client::connect(addr).await;
    s.expect("220").await;
    let send = async |s: &mut Client, rcpt: &str, body: &str| {
        s.send("MAIL FROM:<>").await;
        s.expect("250").await;
        s.send(&format!("RCPT TO:<{rcpt}>")).await;
        let r = s.reply().await;
        if !r.starts_with("250") {
            return r;
        }
        s.send("DATA").await;
        s.expect("354").await;
        s.send(body).await;
        s.send(".").await;
        s.reply().await
    };
    let big = "x".repeat(3000);
    let r = send(&mut s, "postmaster@bounces.herald.localhost", &big).await;
    assert!(r.starts_with("552"), "{r}");
    for _ in 0..2 {
        let r = send(
            &mut s,
            "abuse@bounces.herald.localhost",
            "Subject: hi\r\n\r\nhello",
        )
        .await;
        assert!(r.starts_with("250"), "{r}");
    }
    let r = send(
        &mut s,
        "postmaster@bounces.herald.localhost",
        "Subject: hi\r\n\r\nhello",
    )
    .await;
    assert!(r.starts_with("450"), "the hourly budget is spent: {r}");
    assert_eq!(app.store.count_inbound("unknown").await.expect("count"), 2);
    app.finish().await;
}

async fn dsn_over_smtp_bounces_suppresses_and_blocks_the_next_send(backend: Backend) {
    let relay = TestSmtp::start(Tls::Starttls).await;
    let app = listener_app(backend, Some(&relay)).await;
    let id = app.send(&email_to(&["zed@example.net"])).await;
    app.drain().await;
    let return_path = relay.received()[0].mail_from.clone();
    let message_id = app.email(&id).await["message_id"]
        .as_str()
        .expect("mid")
        .to_owned();

    // The remote MTA sends the bounce to the return path, over STARTTLS.
    let addr = app.inbound_addr.expect("listener");
    let hello = ClientId::Domain("mx.example.net".into());
    let mut conn = AsyncSmtpConnection::connect_tokio1(
        ("localhost", addr.port()),
        Some(Duration::from_secs(5)),
        &hello,
        None,
        None,
    )
    .await
    .expect("connect");
    let ca = Certificate::from_pem(include_bytes!("../fixtures/ca.pem")).expect("ca");
    let tls = TlsParameters::builder("localhost".into())
        .add_root_certificate(ca)
        .build_rustls()
        .expect("tls");
    conn.starttls(tls, &hello).await.expect("starttls");
    assert!(conn.is_encrypted());
    conn.command(Mail::new(None, vec![])).await.expect("mail");
    conn.command(Rcpt::new(return_path.parse().expect("address"), vec![]))
        .await
        .expect("rcpt");
    conn.command(Data).await.expect("data");
    let report = dsn(
        &return_path,
        "zed@example.net",
        "failed",
        "5.1.1",
        "550 5.1.1 <zed@example.net>: User unknown",
        &message_id,
    );
    let reply = conn.message(report.as_bytes()).await.expect("accepted");
    assert_eq!(u16::from(reply.code()), 250);
    let _ = conn.quit().await;

    let email = app.email(&id).await;
    assert_eq!(
        statuses(&email),
        [("zed@example.net".into(), "bounced".into())]
    );
    let (_, sup) = app.get("/v1/suppressions/zed@example.net", &app.key).await;
    assert_eq!(sup["reason"], "hard_bounce");
    let (_, v, _) = app
        .post("/v1/emails", &app.key, &email_to(&["zed@example.net"]))
        .await;
    assert_eq!(
        (v["status"].as_str(), v["suppressed"][0].as_str()),
        (Some("suppressed"), Some("zed@example.net"))
    );
    assert_eq!(app.drain().await, 0, "not attempted");
    assert_eq!(
        app.store.count_inbound("processed").await.expect("count"),
        1
    );
    app.finish().await;
}

/// A line-oriented SMTP client for saying things a well-behaved client would not.
struct Client {
    io: BufReader<TcpStream>,
}

impl Client {
    async fn connect(addr: std::net::SocketAddr) -> Self {
        Self {
            io: BufReader::new(TcpStream::connect(addr).await.expect("connect")),
        }
    }

    async fn send(&mut self, line: &str) {
        self.write(format!("{line}\r\n").as_bytes()).await;
    }

    async fn write(&mut self, bytes: &[u8]) {
        self.io.get_mut().write_all(bytes).await.expect("write");
    }

    /// Reads one (possibly multi-line) reply, whatever its code ("" when the connection closed).
    async fn reply(&mut self) -> String {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            if self.io.read_line(&mut line).await.unwrap_or(0) == 0 {
                return all;
            }
            all.push_str(&line);
            if line.as_bytes().get(3) != Some(&b'-') {
                return all;
            }
        }
    }

    /// Whether the server has closed the connection (what is left to read ends at once).
    async fn closed(&mut self) -> bool {
        let mut rest = String::new();
        matches!(
            tokio::time::timeout(Duration::from_secs(10), self.io.read_line(&mut rest)).await,
            Ok(Ok(0) | Err(_))
        )
    }

    /// Reads one (possibly multi-line) reply and checks its code.
    async fn expect(&mut self, code: &str) -> String {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            self.io.read_line(&mut line).await.expect("read");
            assert!(
                line.starts_with(code),
                "expected {code}, got {line:?} (after {all:?})"
            );
            all.push_str(&line);
            if line.as_bytes().get(3) != Some(&b'-') {
                return all;
            }
        }
    }
}
