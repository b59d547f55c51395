//! The console in a real browser: Debian's chromium through chromium-driver, driven by
//! tests/browser/journeys.py (selenium). Herald here gets real mail first: a relay that
//! refuses one recipient with 550, and a DSN that bounces another later. `.ci/run` installs
//! chromium, chromium-driver and selenium and sets `TEST_HERALD_REQUIRE_INTEROP=1`: there a
//! missing browser is a failure, not a skip. The screenshots of every page, at 1280 and 390
//! px wide, are left in `target/console-screenshots`.

use herald::domain::states::{OperatorRole, ProjectRole};
use herald::store::Backend;

use crate::console::{PASSWORD, alpha, operator};
use crate::helpers::{TestApp, email_to};
use crate::inbound::{dsn, post_inbound};
use crate::smtp_server::{Step, TestSmtp, Tls, ok, reply};

fn browser_present() -> bool {
    let has = |cmd: &str, args: &[&str]| {
        std::process::Command::new(cmd)
            .args(args)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let present = has("chromium", &["--version"])
        && has("chromedriver", &["--version"])
        && has("python3", &["-c", "import selenium"]);
    if !present {
        assert!(
            std::env::var_os("TEST_HERALD_REQUIRE_INTEROP").is_none(),
            "chromium, chromium-driver and selenium are required here (apt-get install chromium chromium-driver; pip install selenium)"
        );
        eprintln!("skipped: the browser journeys (no chromium, chromium-driver or selenium)");
    }
    present
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_journeys_in_a_real_browser() {
    if !browser_present() {
        return;
    }
    let smtp = TestSmtp::start(Tls::Starttls).await;
    smtp.script(|step| match step {
        Step::Rcpt { to } if to == "zed@example.net" => reply(
            550,
            "5.1.1 <zed@example.net>: Recipient address rejected: User unknown",
        ),
        _ => ok(),
    });
    let dns = crate::dns_server::TestDns::start().await;
    let app = TestApp::spawn_with(Backend::Sqlite, Some(&smtp), |c| {
        c.domains.dns_servers = vec![dns.server()];
    })
    .await;
    // A sending domain whose DKIM record was published with another key.
    let (s, domain, _) = app
        .post(
            "/v1/domains",
            &app.key,
            &serde_json::json!({"name": "acme.com"}),
        )
        .await;
    assert_eq!(s, reqwest::StatusCode::CREATED, "{domain}");
    let dkim = domain["records"]
        .as_array()
        .expect("records")
        .iter()
        .find(|r| r["record"] == "DKIM")
        .expect("a DKIM record");
    dns.set_txt(
        dkim["name"].as_str().expect("name"),
        "v=DKIM1; k=rsa; p=MIIBnotthekey",
    );
    app.verify_domains().await;
    for i in 0..5 {
        let mut body = email_to(&[&format!("reader{i}@example.com")]);
        body["subject"] = format!("Your receipt {i}").into();
        app.send(&body).await;
    }
    let mut body = email_to(&["zed@example.net"]);
    body["subject"] = "Welcome, Zed".into();
    let bounced = app.send(&body).await;
    let mut body = email_to(&["full@example.org"]);
    body["subject"] = "Password reset".into();
    body["html"] = "<h1>Reset</h1><p>Click <a href=\"https://example.com/r\">here</a>.</p>".into();
    let reported = app.send(&body).await;
    // Another host, which no page of the console may make the browser ask anything of.
    let elsewhere = crate::receiver::Receiver::start().await;
    let mut body = email_to(&["ada@example.com"]);
    body["subject"] = "<script>alert('subject')</script>".into();
    body["html"] = format!(
        "<p>Hello</p><script>document.title='pwned';fetch('{0}')</script>\
         <img src=\"{0}/pixel.png\"><form action=\"{0}\"><input name=q></form>",
        elsewhere.url()
    )
    .into();
    let hostile = app.send(&body).await;
    app.drain().await;
    let return_path = smtp
        .received()
        .iter()
        .find(|m| m.rcpt_to.iter().any(|r| r == "full@example.org"))
        .expect("sent to full@")
        .mail_from
        .clone();
    let message_id = app.email(&reported).await["message_id"]
        .as_str()
        .expect("message id")
        .to_owned();
    post_inbound(
        &app,
        &dsn(
            &return_path,
            "full@example.org",
            "failed",
            "5.2.2",
            "552 5.2.2 mailbox full",
            &message_id,
        ),
    )
    .await;
    operator(&app, "admin@example.com", OperatorRole::Admin, None).await;
    operator(
        &app,
        "viewer@example.com",
        OperatorRole::Member,
        Some(ProjectRole::Viewer),
    )
    .await;
    // Webhooks go to a real receiver, sent by the dispatcher running as `herald serve` runs it.
    let receiver = crate::receiver::Receiver::start().await;
    let stop = tokio_util::sync::CancellationToken::new();
    let dispatcher = tokio::spawn(app.dispatcher.clone().run(
        std::sync::Arc::new(tokio::sync::Notify::new()),
        stop.clone(),
        std::time::Duration::from_millis(100),
    ));
    let shots = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/console-screenshots");
    // This run's screenshots only.
    let _ = std::fs::remove_dir_all(&shots);
    let out = tokio::process::Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/browser/journeys.py"
        ))
        .env("HERALD_BASE", &app.base)
        .env("HERALD_PROJECT", alpha(&app).await)
        .env("HERALD_PASSWORD", PASSWORD)
        .env("HERALD_ADMIN", "admin@example.com")
        .env("HERALD_VIEWER", "viewer@example.com")
        .env("HERALD_BOUNCED", &bounced)
        .env("HERALD_REPORTED", &reported)
        .env("HERALD_SHOTS", &shots)
        .env("HERALD_RECEIVER", receiver.url())
        .env("HERALD_DOMAIN", "acme.com")
        .env("HERALD_HOSTILE", &hostile)
        .env("HERALD_ELSEWHERE", elsewhere.url())
        .kill_on_drop(true)
        .output()
        .await
        .expect("run the journeys");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "journeys failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.lines().filter(|l| l.starts_with("ok ")).count(), 14);
    assert!(
        elsewhere.hits().is_empty(),
        "another host was asked something"
    );
    assert!(
        receiver
            .hits()
            .iter()
            .any(|h| h.body.contains("webhook.test")),
        "the receiver got the test event"
    );
    stop.cancel();
    dispatcher.await.expect("dispatcher");
    app.finish().await;
}
