//! Sending domains and DKIM against a real DNS server on loopback: records, verification
//! (with failure reasons, backoff and events), signing verified by mail-auth and by dkimpy,
//! tampering detected, rotation, policy.

use std::time::Duration;

use herald::domain::api_key::Permission;
use herald::store::Backend;
use mail_auth::{AuthenticatedMessage, DkimResult, MessageAuthenticator};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::dns_server::TestDns;
use crate::helpers::{TestApp, create_key, email_to};
use crate::smtp_server::{TestSmtp, Tls};
use crate::{on_both_backends, on_sqlite};

on_both_backends!(verification_reports_each_failure_then_verifies);
on_sqlite!(
    signed_messages_verify_and_tampering_fails,
    gives_up_after_the_window_and_can_be_asked_again,
    rotation_switches_keys_when_the_record_is_live,
    policy_refuses_unverified_and_disallowed_domains,
    upstream_mode_does_not_sign,
);

async fn app_with_dns(backend: Backend, dns: &TestDns, smtp: Option<&TestSmtp>) -> TestApp {
    let server = dns.server();
    TestApp::spawn_with(backend, smtp, move |c| c.domains.dns_servers = vec![server]).await
}

async fn add_domain(app: &TestApp, body: Value) -> Value {
    let (s, v, _) = app.post("/v1/domains", &app.key, &body).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    v
}

fn record<'a>(domain: &'a Value, kind: &str) -> &'a Value {
    domain["records"]
        .as_array()
        .expect("records")
        .iter()
        .find(|r| r["record"] == kind)
        .expect(kind)
}

/// Publishes every DKIM record of the domain response in the test DNS.
fn publish_dkim(dns: &TestDns, domain: &Value) {
    for r in domain["records"]
        .as_array()
        .expect("records")
        .iter()
        .filter(|r| r["record"] == "DKIM")
    {
        dns.set_txt(
            r["name"].as_str().expect("name"),
            r["value"].as_str().expect("value"),
        );
    }
}

/// Runs the verifier and reads the domain back.
async fn check(app: &TestApp, id: &str) -> Value {
    app.verify_domains().await;
    app.get(&format!("/v1/domains/{id}"), &app.key).await.1
}

async fn verification_reports_each_failure_then_verifies(backend: Backend) {
    let dns = TestDns::start().await;
    let app = app_with_dns(backend, &dns, None).await;
    let receiver = crate::receiver::Receiver::start().await;
    let (s, _, _) = app
        .post(
            "/v1/webhooks",
            &app.key,
            &json!({"url": receiver.url(), "events": ["*"]}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let d = add_domain(&app, json!({"name": "Acme.com", "dkim_selector": "s1"})).await;
    let id = d["id"].as_str().expect("id").to_owned();
    assert_eq!(d["name"], "acme.com");
    assert_eq!(d["status"], "pending");
    let dkim = record(&d, "DKIM");
    assert_eq!(dkim["type"], "TXT");
    assert_eq!(dkim["name"], "s1._domainkey.acme.com");
    assert!(
        dkim["value"]
            .as_str()
            .expect("value")
            .starts_with("v=DKIM1; k=rsa; p=MIIBIjANBgkq")
    );
    assert_eq!(dkim["required"], true);
    let rp = record(&d, "RETURN_PATH");
    assert_eq!(
        (
            rp["type"].as_str(),
            rp["name"].as_str(),
            rp["priority"].as_i64()
        ),
        (Some("MX"), Some("bounces.acme.com"), Some(10))
    );
    assert_eq!(record(&d, "DMARC")["required"], false);
    // The private key, sealed or open, appears in no response.
    let sealed: String = sqlx::query_scalar("SELECT private_key FROM dkim_keys")
        .fetch_one(&sqlx::AnyPool::connect(&app.db.url).await.expect("pool"))
        .await
        .expect("key");
    let open = app.dispatcher.sealer.open(&sealed).expect("opens");
    assert!(open.len() > 1000, "an RSA-2048 PKCS#8 key in base64");
    for body in [
        d.to_string(),
        app.get("/v1/domains", &app.key).await.1.to_string(),
    ] {
        assert!(
            !body.contains(&open[40..80]) && !body.contains(&sealed[10..50]),
            "key material in a response"
        );
    }

    // Nothing published: the name does not exist.
    let v = check(&app, &id).await;
    assert_eq!(
        (
            record(&v, "DKIM")["status"].as_str(),
            record(&v, "DKIM")["failure_reason"].as_str()
        ),
        (Some("failed"), Some("HOST_NOT_FOUND"))
    );
    assert_eq!(record(&v, "DMARC")["status"], "not_found");
    assert_eq!(v["status"], "pending");
    // The name exists, but with no TXT record.
    dns.set_mx("s1._domainkey.acme.com", "mx.example.net");
    let (s, _, _) = app
        .post(&format!("/v1/domains/{id}/verify"), &app.key, &json!({}))
        .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let v = check(&app, &id).await;
    assert_eq!(record(&v, "DKIM")["failure_reason"], "TYPE_NOT_FOUND");
    // A TXT record with another key.
    dns.set_txt("s1._domainkey.acme.com", "v=DKIM1; k=rsa; p=MIIBnotthekey");
    app.post(&format!("/v1/domains/{id}/verify"), &app.key, &json!({}))
        .await;
    let v = check(&app, &id).await;
    assert_eq!(record(&v, "DKIM")["failure_reason"], "INVALID_VALUE");
    // The DNS server fails.
    dns.servfail(true);
    app.post(&format!("/v1/domains/{id}/verify"), &app.key, &json!({}))
        .await;
    let v = check(&app, &id).await;
    assert_eq!(
        (
            record(&v, "DKIM")["status"].as_str(),
            record(&v, "DKIM")["failure_reason"].as_str()
        ),
        (Some("temporary_failure"), Some("DNS_SERVER_ERROR"))
    );
    dns.servfail(false);
    // Published correctly, with the return path and DMARC.
    publish_dkim(&dns, &d);
    dns.set_mx("bounces.acme.com", "bounces.herald.localhost");
    dns.set_txt("_dmarc.acme.com", "v=DMARC1; p=quarantine");
    app.post(&format!("/v1/domains/{id}/verify"), &app.key, &json!({}))
        .await;
    let v = check(&app, &id).await;
    assert_eq!(v["status"], "verified", "{v}");
    assert_eq!(record(&v, "DKIM")["status"], "verified");
    assert_eq!(record(&v, "RETURN_PATH")["status"], "verified");
    assert_eq!(record(&v, "DMARC")["status"], "verified");
    assert!(v["next_check_at"].is_null(), "no more checks once verified");
    // domain.verified is an event, and so a webhook.
    let (_, feed) = app.get("/v1/events?type=domain.verified", &app.key).await;
    assert_eq!(feed["data"].as_array().expect("data").len(), 1);
    assert_eq!(feed["data"][0]["domain"]["name"], "acme.com");
    app.dispatch().await;
    assert!(
        receiver
            .hits()
            .iter()
            .any(|h| h.body.contains("domain.verified"))
    );
    // Listing, duplicates, deletion.
    let (_, list) = app.get("/v1/domains", &app.key).await;
    assert_eq!(list["data"].as_array().expect("data").len(), 1);
    let (s, v, _) = app
        .post("/v1/domains", &app.key, &json!({"name": "acme.com"}))
        .await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::CONFLICT, Some("domain_exists"))
    );
    let (s, v, _) = app
        .post("/v1/domains", &app.key, &json!({"name": "not a domain"}))
        .await;
    assert_eq!(
        (s, v["errors"][0]["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_domain"))
    );
    let beta = create_key(&app.store, "beta", Permission::FullAccess, 0).await;
    let (s, _) = app.get(&format!("/v1/domains/{id}"), &beta).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    app.finish().await;
}

async fn gives_up_after_the_window_and_can_be_asked_again(backend: Backend) {
    let dns = TestDns::start().await;
    let app = app_with_dns(backend, &dns, None).await;
    let d = add_domain(&app, json!({"name": "slow.example"})).await;
    let id = d["id"].as_str().expect("id");
    let mut checks = 0;
    let mut delays = Vec::new();
    let mut last_next: Option<i64> = None;
    for _ in 0..200 {
        checks += app.verify_domains().await;
        let (_, v) = app.get(&format!("/v1/domains/{id}"), &app.key).await;
        if v["status"] == "failed" {
            break;
        }
        let next = chrono::DateTime::parse_from_rfc3339(v["next_check_at"].as_str().expect("next"))
            .expect("time")
            .timestamp_millis();
        if let Some(prev) = last_next {
            delays.push(next - prev);
        }
        last_next = Some(next);
        use herald::clock::Clock;
        app.advance(Duration::from_millis(
            u64::try_from(next - app.clock.now_ms()).unwrap_or(0),
        ));
    }
    let (_, v) = app.get(&format!("/v1/domains/{id}"), &app.key).await;
    assert_eq!(v["status"], "failed");
    assert!(v["next_check_at"].is_null());
    // Backoff: 2, 4, 8… minutes, capped at 6 hours, over 72 hours.
    assert_eq!(delays[0], 4 * 60_000, "{delays:?}");
    assert!(delays.windows(2).all(|w| w[1] >= w[0]), "{delays:?}");
    assert_eq!(*delays.iter().max().expect("max"), 6 * 3_600_000);
    assert!(checks > 10 && checks < 40, "{checks} checks");
    let (_, feed) = app
        .get("/v1/events?type=domain.verification_failed", &app.key)
        .await;
    assert_eq!(feed["data"].as_array().expect("data").len(), 1);
    // Asked again after publishing: a new window, and it verifies.
    publish_dkim(&dns, &d);
    let (s, v, _) = app
        .post(&format!("/v1/domains/{id}/verify"), &app.key, &json!({}))
        .await;
    assert_eq!(
        (s, v["status"].as_str()),
        (StatusCode::ACCEPTED, Some("pending"))
    );
    app.verify_domains().await;
    let (_, v) = app.get(&format!("/v1/domains/{id}"), &app.key).await;
    assert_eq!(v["status"], "verified");
    app.finish().await;
}

/// mail-auth's verdict on a message, looking keys up in the test DNS server.
async fn mail_auth_verdict(dns: &TestDns, raw: &[u8]) -> bool {
    let resolver = herald::domains::verifier::resolver(&[dns.server()]).expect("resolver");
    let auth = MessageAuthenticator(resolver);
    let msg = AuthenticatedMessage::parse(raw).expect("parse");
    let out = auth.verify_dkim(&msg).await;
    !out.is_empty() && out.iter().all(|o| *o.result() == DkimResult::Pass)
}

/// dkimpy's verdicts, or None when dkimpy is not installed (CI installs it).
fn dkimpy_verdicts(
    records: &[(String, String)],
    messages: &[(String, Vec<u8>, bool)],
) -> Option<String> {
    let available = std::process::Command::new("python3")
        .args(["-c", "import dkim"])
        .status()
        .is_ok_and(|s| s.success());
    if !available {
        assert!(
            std::env::var("TEST_HERALD_REQUIRE_INTEROP").is_err(),
            "dkimpy is not installed"
        );
        return None;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("dkim.json");
    let records: serde_json::Map<String, Value> =
        records.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
    let messages: Vec<Value> = messages
        .iter()
        .map(|(name, raw, expect)| json!({"name": name, "raw": String::from_utf8_lossy(raw), "expect": expect}))
        .collect();
    std::fs::write(
        &file,
        serde_json::to_vec(&json!({"records": records, "messages": messages})).expect("json"),
    )
    .expect("write");
    let out = std::process::Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/interop/verify_dkim.py"
        ))
        .arg(&file)
        .output()
        .expect("python");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(text)
}

fn tamper(raw: &[u8], from: &str, to: &str) -> Vec<u8> {
    let text = String::from_utf8_lossy(raw);
    assert!(text.contains(from), "{from} not in message");
    text.replacen(from, to, 1).into_bytes()
}

async fn signed_messages_verify_and_tampering_fails(backend: Backend) {
    let dns = TestDns::start().await;
    let smtp = TestSmtp::start(Tls::Starttls).await;
    let app = app_with_dns(backend, &dns, Some(&smtp)).await;
    let rsa = add_domain(&app, json!({"name": "acme.com", "dkim_selector": "rsa1"})).await;
    let ed = add_domain(
        &app,
        json!({"name": "ed.example", "dkim_selector": "ed1", "dkim_algorithm": "ed25519"}),
    )
    .await;
    publish_dkim(&dns, &rsa);
    publish_dkim(&dns, &ed);
    let samples = [
        (
            "plain",
            json!({"from": "orders@acme.com", "to": "ada@example.com", "subject": "Plain", "text": "Hello.\nSecond line."}),
        ),
        (
            "html",
            json!({"from": "orders@acme.com", "to": ["ada@example.com"], "cc": "bob@example.org", "subject": "HTML", "text": "Hi", "html": "<p>Hi <b>there</b></p>"}),
        ),
        (
            "attachments",
            json!({"from": "orders@acme.com", "to": "ada@example.com", "subject": "Invoice", "html": "<p><img src=\"cid:logo\"></p>",
            "attachments": [{"filename": "INV.pdf", "content": "JVBERi0xLjQKJcOkw7zDtsOf"}, {"filename": "logo.png", "content": "iVBORw0KGgo=", "content_id": "logo"}]}),
        ),
        (
            "non_ascii",
            json!({"from": "Café Ünïcode <orders@acme.com>", "to": "Zoë <ada@example.com>", "subject": "Grüße aus Köln — ✓", "text": "Grüße"}),
        ),
        (
            "ed25519",
            json!({"from": "news@ed.example", "to": "ada@example.com", "subject": "Ed25519", "text": "Signed with Ed25519."}),
        ),
    ];
    for (name, body) in &samples {
        let mut body = body.clone();
        body["headers"] = json!({"X-Sample": name});
        app.send(&body).await;
    }
    app.drain().await;
    let received = smtp.received();
    assert_eq!(
        received.len(),
        samples.len() + 1,
        "the html sample has a cc"
    );
    let mut messages = Vec::new();
    let mut summary = Vec::new();
    for (name, body) in &samples {
        let _ = body;
        let raw = received
            .iter()
            .map(|m| m.data.clone())
            .find(|d| String::from_utf8_lossy(d).contains(&format!("X-Sample: {name}\r\n")))
            .expect("received");
        let text = String::from_utf8_lossy(&raw).into_owned();
        assert!(text.starts_with("DKIM-Signature: "), "{name}: {text}");
        assert!(text.contains("c=relaxed/relaxed"), "{name}");
        let pass = mail_auth_verdict(&dns, &raw).await;
        assert!(pass, "mail-auth refused the {name} sample:\n{text}");
        // Tampering with the body or a signed header breaks the signature.
        let body_tampered = tamper(&raw, "\r\n\r\n", "\r\n\r\nX");
        let subject_tampered = tamper(&raw, "Subject: ", "Subject: Re: ");
        assert!(
            !mail_auth_verdict(&dns, &body_tampered).await,
            "{name}: tampered body verified"
        );
        assert!(
            !mail_auth_verdict(&dns, &subject_tampered).await,
            "{name}: tampered subject verified"
        );
        summary.push(format!(
            "mail-auth {name}: pass; tampered body: fail; tampered subject: fail"
        ));
        messages.push((name.to_string(), raw.clone(), true));
        messages.push((format!("{name}_tampered_body"), body_tampered, false));
        messages.push((format!("{name}_tampered_subject"), subject_tampered, false));
    }
    let records: Vec<(String, String)> = [&rsa, &ed]
        .iter()
        .map(|d| {
            let r = record(d, "DKIM");
            (
                r["name"].as_str().expect("name").to_owned(),
                r["value"].as_str().expect("value").to_owned(),
            )
        })
        .collect();
    if let Some(verdicts) = dkimpy_verdicts(&records, &messages) {
        for (name, _, expect) in &messages {
            let want = if *expect { "pass" } else { "FAIL" };
            assert!(
                verdicts.contains(&format!("dkimpy {name}: {want}")),
                "{name}: {verdicts}"
            );
        }
        summary.push(verdicts);
    }
    println!("{}", summary.join("\n"));
    app.finish().await;
}

async fn rotation_switches_keys_when_the_record_is_live(backend: Backend) {
    let dns = TestDns::start().await;
    let smtp = TestSmtp::start(Tls::Starttls).await;
    let app = app_with_dns(backend, &dns, Some(&smtp)).await;
    let d = add_domain(&app, json!({"name": "acme.com", "dkim_selector": "old"})).await;
    let id = d["id"].as_str().expect("id");
    publish_dkim(&dns, &d);
    app.verify_domains().await;
    let (s, rotated, _) = app
        .post(
            &format!("/v1/domains/{id}/dkim/rotate"),
            &app.key,
            &json!({"dkim_selector": "new"}),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{rotated}");
    let dkims: Vec<(&str, &str)> = rotated["records"]
        .as_array()
        .expect("records")
        .iter()
        .filter(|r| r["record"] == "DKIM")
        .map(|r| {
            (
                r["selector"].as_str().unwrap_or(""),
                r["key_state"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(dkims, [("old", "active"), ("new", "pending")]);
    let (s, v, _) = app
        .post(
            &format!("/v1/domains/{id}/dkim/rotate"),
            &app.key,
            &json!({}),
        )
        .await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::CONFLICT, Some("invalid_state"))
    );

    // Until the new record is published, the old key signs.
    app.send(&email_to(&["a@example.com"])).await;
    app.drain().await;
    assert!(String::from_utf8_lossy(&smtp.received()[0].data).contains("s=old;"));
    app.verify_domains().await;
    publish_dkim(&dns, &rotated);
    use herald::clock::Clock;
    let (_, v) = app.get(&format!("/v1/domains/{id}"), &app.key).await;
    let next =
        chrono::DateTime::parse_from_rfc3339(v["next_check_at"].as_str().expect("still checking"))
            .expect("t")
            .timestamp_millis();
    app.advance(Duration::from_millis(
        u64::try_from(next - app.clock.now_ms()).unwrap_or(0),
    ));
    app.verify_domains().await;
    let (_, v) = app.get(&format!("/v1/domains/{id}"), &app.key).await;
    let states: Vec<(&str, &str, bool)> = v["records"]
        .as_array()
        .expect("records")
        .iter()
        .filter(|r| r["record"] == "DKIM")
        .map(|r| {
            (
                r["selector"].as_str().unwrap_or(""),
                r["key_state"].as_str().unwrap_or(""),
                r["safe_to_remove"].as_bool().unwrap_or(false),
            )
        })
        .collect();
    assert_eq!(
        states,
        [("old", "retired", false), ("new", "active", false)]
    );
    app.send(&email_to(&["b@example.com"])).await;
    app.drain().await;
    let raw = smtp.received()[1].data.clone();
    assert!(String::from_utf8_lossy(&raw).contains("s=new;"));
    assert!(mail_auth_verdict(&dns, &raw).await);
    // A week later the old record may go.
    app.advance(Duration::from_secs(7 * 86_400));
    let (_, v) = app.get(&format!("/v1/domains/{id}"), &app.key).await;
    let old = v["records"]
        .as_array()
        .expect("records")
        .iter()
        .find(|r| r["selector"] == "old")
        .expect("old");
    assert_eq!(old["safe_to_remove"], true);
    app.finish().await;
}

async fn policy_refuses_unverified_and_disallowed_domains(backend: Backend) {
    let dns = TestDns::start().await;
    let server = dns.server();
    let app = TestApp::spawn_with(backend, None, move |c| {
        c.domains.dns_servers = vec![server];
        c.domains.require_verified = true;
    })
    .await;
    let body = email_to(&["a@example.com"]);
    let (s, v, _) = app.post("/v1/emails", &app.key, &body).await;
    assert_eq!(
        (s, v["code"].as_str(), v["errors"][0]["pointer"].as_str()),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("domain_not_verified"),
            Some("/from")
        )
    );
    let d = add_domain(&app, json!({"name": "acme.com"})).await;
    let (s, _, _) = app.post("/v1/emails", &app.key, &body).await;
    assert_eq!(
        s,
        StatusCode::UNPROCESSABLE_ENTITY,
        "pending is not verified"
    );
    publish_dkim(&dns, &d);
    app.verify_domains().await;
    let (s, v, _) = app.post("/v1/emails", &app.key, &body).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    // A key limited to another domain.
    let (s, limited, _) = app.post("/v1/api-keys", &app.key, &json!({"name": "shop", "permission": "sending_access", "allowed_domains": ["shop.example"]})).await;
    assert_eq!(s, StatusCode::CREATED, "{limited}");
    let token = limited["token"].as_str().expect("token");
    let (s, v, _) = app.post("/v1/emails", token, &body).await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("domain_not_allowed"))
    );
    app.finish().await;
}

async fn upstream_mode_does_not_sign(backend: Backend) {
    let dns = TestDns::start().await;
    let smtp = TestSmtp::start(Tls::Starttls).await;
    let app = app_with_dns(backend, &dns, Some(&smtp)).await;
    let d = add_domain(&app, json!({"name": "acme.com"})).await;
    let id = d["id"].as_str().expect("id");
    let (s, v, _) = app
        .request(
            reqwest::Method::PATCH,
            &format!("/v1/domains/{id}"),
            &app.key,
            Some(&json!({"dkim": "upstream"})),
            &[],
        )
        .await;
    assert_eq!((s, v["dkim"].as_str()), (StatusCode::OK, Some("upstream")));
    assert!(
        v["records"]
            .as_array()
            .expect("records")
            .iter()
            .all(|r| r["record"] != "DKIM"),
        "no DKIM record to publish"
    );
    app.send(&email_to(&["a@example.com"])).await;
    app.drain().await;
    assert!(!String::from_utf8_lossy(&smtp.received()[0].data).contains("DKIM-Signature"));
    app.finish().await;
}
