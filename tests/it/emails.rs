//! `POST /v1/emails` and friends: validation answers, batch, idempotency, reading, cancel.

use herald::store::Backend;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, email_to};
use crate::{on_both_backends, on_sqlite};

on_both_backends!(
    refuses_what_a_backend_cannot_store_alone,
    search_filters_and_pages,
    accepts_and_reads_back,
    idempotency_replays_and_refuses_reuse,
    batch_strict_is_all_or_nothing
);
on_sqlite!(
    refuses_bad_input_with_pointers,
    refuses_non_json_malformed_and_oversized_bodies,
    refuses_line_breaks_in_headers_and_addresses,
    batch_permissive_queues_the_valid_ones,
    concurrent_twins_commit_once,
    scheduled_mail_waits_and_can_be_canceled,
    cancel_after_hand_off_is_a_conflict,
    builds_multipart_mime_with_attachments,
    unknown_routes_and_methods_are_problems,
);

async fn search_filters_and_pages(backend: Backend) {
    let app = TestApp::spawn(backend, None).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let mut body = email_to(&[&format!("user{i}@example.com")]);
        body["tags"] = json!([if i % 2 == 0 { "even" } else { "odd" }]);
        body["metadata"] = json!({"order_id": format!("o-{i}")});
        body["subject"] = json!(format!("Your Order_{i} is 100% ready"));
        ids.push(app.send(&body).await);
    }
    let page = |q: &str| {
        let q = q.to_owned();
        let app = &app;
        async move {
            let (s, v) = app.get(&format!("/v1/emails{q}"), &app.key).await;
            assert_eq!(s, StatusCode::OK, "{q}: {v}");
            let ids: Vec<String> = v["data"]
                .as_array()
                .expect("data")
                .iter()
                .map(|e| e["id"].as_str().unwrap_or("").to_owned())
                .collect();
            (ids, v["has_more"].as_bool().expect("has_more"))
        }
    };
    let newest_first: Vec<String> = ids.iter().rev().cloned().collect();
    assert_eq!(page("").await, (newest_first.clone(), false));
    let (first, more) = page("?limit=2").await;
    assert_eq!((first.clone(), more), (newest_first[..2].to_vec(), true));
    let (second, _) = page(&format!("?limit=2&after={}", first[1])).await;
    assert_eq!(second, newest_first[2..4].to_vec());
    let (back, _) = page(&format!("?limit=2&before={}", second[0])).await;
    assert_eq!(back, first, "before pages back");
    // A cursor is an id, in whatever case; anything else is refused, not compared as text
    // (`after=zzz` sorted after every id: the first page again, or none).
    let (upper, _) = page(&format!("?limit=2&after={}", first[1].to_uppercase())).await;
    assert_eq!(upper, second);
    for path in [
        "/v1/emails?after=zzz".to_owned(),
        "/v1/emails?before=01a2".to_owned(),
        format!("/v1/emails/{}/events?after=zzz", ids[0]),
        "/v1/events?after=zzz".to_owned(),
        "/v1/suppressions?before=zzz".to_owned(),
    ] {
        let (s, v) = app.get(&path, &app.key).await;
        assert_eq!(
            (s, v["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid_query")),
            "{path}: {v}"
        );
    }
    assert_eq!(page("?tag=even").await.0.len(), 3);
    assert_eq!(
        page("?recipient=user3@example.com").await.0,
        vec![ids[3].clone()]
    );
    assert_eq!(
        page("?metadata[order_id]=o-4").await.0,
        vec![ids[4].clone()]
    );
    assert_eq!(
        page("?status=queued&from=orders@acme.com&stream=transactional")
            .await
            .0
            .len(),
        5
    );
    assert_eq!(page("?status=sent").await.0.len(), 0);
    // Subject words: all of them, in any case; % and _ are themselves, not wildcards.
    assert_eq!(
        page("?subject=ORDER_3%20ready").await.0,
        vec![ids[3].clone()]
    );
    assert_eq!(page("?subject=100%25").await.0.len(), 5);
    assert_eq!(page("?subject=order%25").await.0.len(), 0);
    assert_eq!(page("?subject=Order_%20o-1").await.0.len(), 0);
    assert_eq!(
        page("?subject=order_2&tag=even").await.0,
        vec![ids[2].clone()]
    );
    // Filters combine whichever index the page walks.
    assert_eq!(
        page("?tag=even&recipient=user2@example.com").await.0,
        vec![ids[2].clone()]
    );
    assert_eq!(
        page("?tag=odd&recipient=user2@example.com").await.0.len(),
        0
    );
    assert_eq!(
        page("?metadata[order_id]=o-1&tag=odd&status=queued")
            .await
            .0,
        vec![ids[1].clone()]
    );
    assert_eq!(page("?metadata[order_id]=o-1&tag=even").await.0.len(), 0);
    assert_eq!(
        page(&format!("?tag=even&limit=1&after={}", ids[4])).await,
        (vec![ids[2].clone()], true),
        "pages through a tag"
    );
    assert_eq!(page("?from=someone@else.com").await.0.len(), 0);
    let (s, v) = app.get("/v1/emails?bogus=1", &app.key).await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_query"))
    );
    let (s, _) = app.get("/v1/emails?status=nope", &app.key).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let beta = crate::helpers::create_key(
        &app.store,
        "beta",
        herald::domain::api_key::Permission::FullAccess,
        0,
    )
    .await;
    let (_, v) = app.get("/v1/emails", &beta).await;
    assert_eq!(
        v["data"].as_array().expect("data").len(),
        0,
        "another project sees none"
    );
    // Two recipients in the same status: the email is listed once.
    let pair = app
        .send(&email_to(&["x@example.com", "y@example.com"]))
        .await;
    let (queued, _) = page("?status=queued&limit=100").await;
    assert_eq!(queued.len(), 6);
    assert_eq!(queued[0], pair);
    let (first, more) = page("?status=queued&limit=1").await;
    assert_eq!((first, more), (vec![pair.clone()], true));
    let (next, _) = page(&format!("?status=queued&limit=1&after={pair}")).await;
    assert_eq!(next, vec![ids[4].clone()], "pages past a grouped email");
    app.finish().await;
}

async fn accepts_and_reads_back(backend: Backend) {
    let app = TestApp::spawn(backend, None).await;
    let body = json!({
        "from": {"email": "orders@acme.com", "name": "Acme"},
        "to": ["ada@example.com", {"email": "bob@example.org", "name": "Bob"}],
        "bcc": "audit@acme.com",
        "reply_to": "support@acme.com",
        "subject": "Your order #1042",
        "text": "Thanks.",
        "html": "<p>Thanks.</p>",
        "headers": {"X-Entity-Ref-ID": "1042"},
        "tags": ["order-confirmation"],
        "metadata": {"order_id": "1042"},
        "stream": "transactional",
    });
    let (status, v, headers) = app.post("/v1/emails", &app.key, &body).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{v}");
    let id = v["id"].as_str().expect("id");
    assert_eq!(v["object"], "email");
    assert_eq!(v["status"], "queued");
    assert_eq!(v["message_id"], format!("<{id}@acme.com>"));
    assert_eq!(headers["location"], format!("/v1/emails/{id}").as_str());
    assert!(headers.contains_key("x-request-id"));
    assert!(uuid::Uuid::parse_str(id).is_ok_and(|u| u.get_version_num() == 7));

    let email = app.email(id).await;
    assert_eq!(
        email["from"],
        json!({"email": "orders@acme.com", "name": "Acme"})
    );
    assert_eq!(email["tags"], json!(["order-confirmation"]));
    assert_eq!(email["metadata"], json!({"order_id": "1042"}));
    assert_eq!(email["status"], "queued");
    let kinds: Vec<(&str, &str)> = email["recipients"]
        .as_array()
        .expect("recipients")
        .iter()
        .map(|r| {
            (
                r["email"].as_str().unwrap_or(""),
                r["type"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("ada@example.com", "to"),
            ("bob@example.org", "to"),
            ("audit@acme.com", "bcc")
        ]
    );
    assert!(email["created_at"].as_str().expect("time").ends_with('Z'));
    app.finish().await;
}

/// Posts `body` and returns the problem (asserting its status and content type).
async fn problem(app: &TestApp, body: &Value, status: StatusCode) -> Value {
    let (s, v, headers) = app.post("/v1/emails", &app.key, body).await;
    assert_eq!(s, status, "{v}");
    assert_eq!(headers["content-type"], "application/problem+json");
    assert_eq!(v["status"], status.as_u16());
    assert!(v["request_id"].as_str().is_some_and(|r| !r.is_empty()));
    v
}

fn pointers(v: &Value) -> Vec<(String, String)> {
    v["errors"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| {
                    (
                        e["pointer"].as_str().unwrap_or("").to_owned(),
                        e["code"].as_str().unwrap_or("").to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

async fn refuses_bad_input_with_pointers(backend: Backend) {
    let app = TestApp::spawn(backend, None).await;
    let unprocessable = StatusCode::UNPROCESSABLE_ENTITY;

    let v = problem(
        &app,
        &json!({"to": ["ada@example.com", "bob@"], "subject": "x", "text": "y",
        "attachments": [{"filename": "a.pdf", "content": "not base64!"}]}),
        unprocessable,
    )
    .await;
    assert_eq!(v["code"], "validation_error");
    assert_eq!(
        pointers(&v),
        [
            ("/from".into(), "missing_required_field".into()),
            ("/to/1".into(), "invalid_email".into()),
            ("/attachments/0/content".into(), "invalid_base64".into()),
        ]
    );

    let mut typo = email_to(&["ada@example.com"]);
    typo["htmlbody"] = json!("<p>hi</p>");
    let v = problem(&app, &typo, unprocessable).await;
    assert_eq!(v["code"], "unknown_field");
    assert_eq!(pointers(&v), [("/htmlbody".into(), "unknown_field".into())]);

    // Serde would read a struct from an array; the API wants an object.
    for not_object in [json!([null, null]), json!(["orders@acme.com"]), json!("hi")] {
        let v = problem(&app, &not_object, unprocessable).await;
        assert_eq!(
            pointers(&v),
            [("".into(), "validation_error".into())],
            "{not_object}"
        );
    }

    let mut nested = email_to(&["ada@example.com"]);
    nested["attachments"] = json!([{"filename": "a.txt", "content": "aGk=", "path": "http://x"}]);
    assert_eq!(
        pointers(&problem(&app, &nested, unprocessable).await),
        [("/attachments/0/path".into(), "unknown_field".into())]
    );

    let mut wrong_type = email_to(&["ada@example.com"]);
    wrong_type["subject"] = json!(42);
    assert_eq!(
        pointers(&problem(&app, &wrong_type, unprocessable).await),
        [("/subject".into(), "validation_error".into())]
    );

    let mut reserved = email_to(&["ada@example.com"]);
    reserved["headers"] = json!({"Bcc": "spy@evil.example"});
    let v = problem(&app, &reserved, unprocessable).await;
    assert_eq!(v["code"], "reserved_header");
    assert_eq!(
        pointers(&v),
        [("/headers/Bcc".into(), "reserved_header".into())]
    );

    let many: Vec<String> = (0..51).map(|i| format!("u{i}@example.com")).collect();
    let v = problem(
        &app,
        &json!({"from": "a@acme.com", "to": many, "subject": "s", "text": "t"}),
        unprocessable,
    )
    .await;
    assert_eq!(v["code"], "too_many_recipients");

    let mut naive = email_to(&["ada@example.com"]);
    naive["scheduled_at"] = json!("2026-08-22T09:00:00");
    assert_eq!(
        problem(&app, &naive, unprocessable).await["code"],
        "invalid_datetime"
    );

    let mut far = email_to(&["ada@example.com"]);
    far["scheduled_at"] = json!((chrono::Utc::now() + chrono::Duration::days(4)).to_rfc3339());
    assert_eq!(
        problem(&app, &far, unprocessable).await["code"],
        "schedule_out_of_range"
    );

    let mut stream = email_to(&["ada@example.com"]);
    stream["stream"] = json!("nope");
    assert_eq!(
        problem(&app, &stream, unprocessable).await["code"],
        "invalid_stream"
    );

    let v = problem(
        &app,
        &json!({"from": "a@acme.com", "subject": "s"}),
        unprocessable,
    )
    .await;
    assert_eq!(v["code"], "missing_required_field");
    assert_eq!(
        pointers(&v),
        [
            ("/to".into(), "missing_required_field".into()),
            ("/text".into(), "missing_required_field".into())
        ]
    );

    let mut tags = email_to(&["ada@example.com"]);
    tags["tags"] = json!(["ok", "not ok"]);
    tags["metadata"] = json!({"bad key": "v"});
    assert_eq!(
        pointers(&problem(&app, &tags, unprocessable).await),
        [
            ("/tags/1".into(), "invalid_tag".into()),
            ("/metadata/bad key".into(), "invalid_metadata".into()),
        ]
    );
    app.finish().await;
}

async fn refuses_non_json_malformed_and_oversized_bodies(backend: Backend) {
    let app = TestApp::spawn_with(backend, None, |c| c.limits.max_message_bytes = 64 * 1024).await;
    let url = format!("{}/v1/emails", app.base);
    // A connection of its own per request: a body refused before it is read leaves the server
    // closing that connection, and a pooled client could send the next request on it.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("client");
    let send = |body: Vec<u8>, ct: Option<&'static str>| {
        let mut req = http.post(&url).bearer_auth(&app.key).body(body);
        if let Some(ct) = ct {
            req = req.header("content-type", ct);
        }
        async move {
            let r = req.send().await.expect("send");
            let s = r.status();
            let v: Value = r.json().await.unwrap_or(Value::Null);
            (s, v)
        }
    };
    let (s, v) = send(b"{}".to_vec(), Some("text/plain")).await;
    assert_eq!(
        (s, v["code"].as_str()),
        (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Some("unsupported_media_type")
        )
    );
    let (s, v) = send(b"{\"from\": ".to_vec(), Some("application/json")).await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_json"))
    );
    let (s, v) = send(b"{} trailing".to_vec(), Some("application/json")).await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_json"))
    );
    let (s, v) = send(b"[1,2]".to_vec(), Some("application/json")).await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("validation_error"))
    );
    // Larger than the body cap: refused before it is parsed.
    let huge = vec![b' '; 2 * 1024 * 1024];
    let (s, v) = send(huge, Some("application/json")).await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("payload_too_large"))
    );
    // Within the body cap but the built message is over the message limit.
    let mut big = email_to(&["ada@example.com"]);
    big["text"] = json!("x".repeat(70 * 1024));
    let (s, v, _) = app.post("/v1/emails", &app.key, &big).await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("payload_too_large"))
    );
    app.finish().await;
}

async fn refuses_line_breaks_in_headers_and_addresses(backend: Backend) {
    let app = TestApp::spawn(backend, None).await;
    let unprocessable = StatusCode::UNPROCESSABLE_ENTITY;
    let cases = [
        (
            json!({"subject": "Hi\r\nBcc: spy@evil.example"}),
            "/subject",
            "invalid_header",
        ),
        (
            json!({"headers": {"X-Ref": "1\r\nBcc: spy@evil.example"}}),
            "/headers/X-Ref",
            "invalid_header",
        ),
        (
            json!({"headers": {"X-Ref\r\nBcc": "x"}}),
            "/headers/X-Ref\r\nBcc",
            "invalid_header",
        ),
        (
            json!({"from": "Eve\r\nBcc: spy@evil.example <eve@acme.com>"}),
            "/from",
            "invalid_email",
        ),
        (
            json!({"to": ["ada@example.com\nBcc: spy@evil.example"]}),
            "/to/0",
            "invalid_email",
        ),
        (
            json!({"to": [{"email": "ada@example.com", "name": "Ada\r\nBcc: x@y.z"}]}),
            "/to/0",
            "invalid_email",
        ),
        (
            json!({"attachments": [{"filename": "a\r\n.txt", "content": "aGk="}]}),
            "/attachments/0/filename",
            "invalid_attachment",
        ),
        (
            json!({"attachments": [{"filename": "a.txt", "content": "aGk=", "content_type": "text/plain\r\nX: y"}]}),
            "/attachments/0/content_type",
            "invalid_attachment",
        ),
    ];
    for (patch, pointer, code) in cases {
        let mut body = email_to(&["ada@example.com"]);
        for (k, v) in patch.as_object().expect("object") {
            body[k] = v.clone();
        }
        let v = problem(&app, &body, unprocessable).await;
        assert_eq!(
            pointers(&v),
            [(pointer.to_owned(), code.to_owned())],
            "{body}"
        );
    }
    assert_eq!(
        app.store.count_pending().await.expect("count"),
        0,
        "nothing was accepted"
    );
    app.finish().await;
}

async fn idempotency_replays_and_refuses_reuse(backend: Backend) {
    let app = TestApp::spawn(backend, None).await;
    let body = email_to(&["ada@example.com"]);
    let key = [("idempotency-key", "order-1042/confirmation")];
    let (s1, v1, h1) = app
        .request(
            reqwest::Method::POST,
            "/v1/emails",
            &app.key,
            Some(&body),
            &key,
        )
        .await;
    assert_eq!(s1, StatusCode::ACCEPTED);
    assert!(!h1.contains_key("idempotent-replayed"));
    let (s2, v2, h2) = app
        .request(
            reqwest::Method::POST,
            "/v1/emails",
            &app.key,
            Some(&body),
            &key,
        )
        .await;
    assert_eq!(s2, StatusCode::ACCEPTED);
    assert_eq!(v1, v2, "a replay answers exactly as the first time");
    assert_eq!(h2["idempotent-replayed"], "true");
    assert_eq!(
        app.store.count_pending().await.expect("count"),
        1,
        "one email, not two"
    );

    let mut other = body.clone();
    other["subject"] = json!("Different");
    let (s3, v3, _) = app
        .request(
            reqwest::Method::POST,
            "/v1/emails",
            &app.key,
            Some(&other),
            &key,
        )
        .await;
    assert_eq!(
        (s3, v3["code"].as_str()),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("idempotency_key_reused")
        )
    );

    // A failed request does not poison its key.
    let bad = json!({"from": "x"});
    let k2 = [("idempotency-key", "second")];
    let (s4, _, _) = app
        .request(
            reqwest::Method::POST,
            "/v1/emails",
            &app.key,
            Some(&bad),
            &k2,
        )
        .await;
    assert_eq!(s4, StatusCode::UNPROCESSABLE_ENTITY);
    let (s5, _, _) = app
        .request(
            reqwest::Method::POST,
            "/v1/emails",
            &app.key,
            Some(&body),
            &k2,
        )
        .await;
    assert_eq!(s5, StatusCode::ACCEPTED);

    // Keys are per project: another project may use the same key.
    let other_key = crate::helpers::create_key(
        &app.store,
        "beta",
        herald::domain::api_key::Permission::FullAccess,
        0,
    )
    .await;
    let (s6, v6, _) = app
        .request(
            reqwest::Method::POST,
            "/v1/emails",
            &other_key,
            Some(&body),
            &key,
        )
        .await;
    assert_eq!(s6, StatusCode::ACCEPTED);
    assert_ne!(v6["id"], v1["id"]);

    let bad_key = [("idempotency-key", "")];
    let (s7, v7, _) = app
        .request(
            reqwest::Method::POST,
            "/v1/emails",
            &app.key,
            Some(&body),
            &bad_key,
        )
        .await;
    assert_eq!(
        (s7, v7["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_idempotency_key"))
    );
    app.finish().await;
}

async fn concurrent_twins_commit_once(backend: Backend) {
    let app = TestApp::spawn(backend, None).await;
    let body = email_to(&["ada@example.com"]);
    let key = [("idempotency-key", "twin")];
    let mut handles = Vec::new();
    for _ in 0..8 {
        handles.push(app.request(
            reqwest::Method::POST,
            "/v1/emails",
            &app.key,
            Some(&body),
            &key,
        ));
    }
    let results = futures::future::join_all(handles).await;
    let mut ids = std::collections::HashSet::new();
    for (s, v, h) in &results {
        match *s {
            StatusCode::ACCEPTED => {
                ids.insert(v["id"].as_str().expect("id").to_owned());
            }
            StatusCode::CONFLICT => {
                assert_eq!(v["code"], "idempotency_request_in_progress");
                assert_eq!(h["retry-after"], "1");
            }
            other => panic!("unexpected {other}: {v}"),
        }
    }
    assert_eq!(ids.len(), 1, "every 2xx names the same email");
    assert_eq!(app.store.count_pending().await.expect("count"), 1);
    app.finish().await;
}

async fn batch_strict_is_all_or_nothing(backend: Backend) {
    let app = TestApp::spawn(backend, None).await;
    let good = email_to(&["ada@example.com"]);
    let bad = json!({"from": "orders@acme.com", "to": ["bob@"], "subject": "s", "text": "t"});
    let (s, v, _) = app
        .post("/v1/emails/batch", &app.key, &json!([good, bad, good]))
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(pointers(&v), [("/1/to/0".into(), "invalid_email".into())]);
    assert_eq!(
        app.store.count_pending().await.expect("count"),
        0,
        "nothing queued"
    );

    let (s, v, _) = app
        .post("/v1/emails/batch", &app.key, &json!([good, good]))
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    let data = v["data"].as_array().expect("data");
    assert_eq!(data.len(), 2);
    assert_eq!(data[1]["index"], 1);
    assert_ne!(data[0]["id"], data[1]["id"]);
    assert_eq!(app.store.count_pending().await.expect("count"), 2);

    let too_many: Vec<Value> = (0..101).map(|_| good.clone()).collect();
    let (s, v, _) = app
        .post("/v1/emails/batch", &app.key, &json!(too_many))
        .await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("batch_too_large"))
    );
    app.finish().await;
}

async fn batch_permissive_queues_the_valid_ones(backend: Backend) {
    let app = TestApp::spawn(backend, None).await;
    let good = email_to(&["ada@example.com"]);
    let bad = json!({"from": "orders@acme.com", "to": ["bob@"], "subject": "s", "text": "t"});
    let h = [("batch-validation", "permissive")];
    let body = json!([good, bad, good]);
    let (s, v, _) = app
        .request(
            reqwest::Method::POST,
            "/v1/emails/batch",
            &app.key,
            Some(&body),
            &h,
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    let indexes: Vec<i64> = v["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|d| d["index"].as_i64().unwrap_or(-1))
        .collect();
    assert_eq!(indexes, [0, 2]);
    assert_eq!(v["errors"][0]["index"], 1);
    assert_eq!(v["errors"][0]["pointer"], "/1/to/0");
    assert_eq!(app.store.count_pending().await.expect("count"), 2);
    let all_bad = json!([bad, bad]);
    let (s, _, _) = app
        .request(
            reqwest::Method::POST,
            "/v1/emails/batch",
            &app.key,
            Some(&all_bad),
            &h,
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    app.finish().await;
}

async fn scheduled_mail_waits_and_can_be_canceled(backend: Backend) {
    let app = TestApp::spawn(backend, None).await;
    let at = chrono::Utc::now() + chrono::Duration::hours(2);
    let mut body = email_to(&["ada@example.com"]);
    body["scheduled_at"] = json!(at.to_rfc3339());
    let (s, v, _) = app.post("/v1/emails", &app.key, &body).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    assert_eq!(v["status"], "scheduled");
    let id = v["id"].as_str().expect("id");
    assert_eq!(app.drain().await, 0, "not due before scheduled_at");
    let (s, v, _) = app
        .post(&format!("/v1/emails/{id}/cancel"), &app.key, &json!({}))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "canceled");
    app.advance(std::time::Duration::from_secs(3 * 3600));
    assert_eq!(app.drain().await, 0, "canceled mail is never sent");
    let types: Vec<_> = app
        .events(id)
        .await
        .iter()
        .map(|e| e["type"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(types, ["email.scheduled", "email.canceled"]);
    app.finish().await;
}

async fn cancel_after_hand_off_is_a_conflict(backend: Backend) {
    let app = TestApp::spawn(backend, None).await;
    let id = app.send(&email_to(&["ada@example.com"])).await;
    app.drain().await;
    let (s, v, _) = app
        .post(&format!("/v1/emails/{id}/cancel"), &app.key, &json!({}))
        .await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::CONFLICT, Some("invalid_state"))
    );
    let (s, _, _) = app
        .post(
            "/v1/emails/0190f3c2-7a1e-7c44-9b1d-3f5a2e6c8d10/cancel",
            &app.key,
            &json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    app.finish().await;
}

async fn builds_multipart_mime_with_attachments(backend: Backend) {
    let smtp = crate::smtp_server::TestSmtp::start(crate::smtp_server::Tls::Starttls).await;
    let app = TestApp::spawn(backend, Some(&smtp)).await;
    let body = json!({
        "from": "Café Acme <orders@acme.com>",
        "to": "ada@example.com",
        "subject": "Ihre Rechnung ✓",
        "text": "Grüße",
        "html": "<p>Grüße <img src=\"cid:logo\"></p>",
        "attachments": [
            {"filename": "INV-1042.pdf", "content": "JVBERi0xLjQK"},
            {"filename": "logo.png", "content": "iVBORw0KGgo=", "content_id": "logo"},
        ],
    });
    app.send(&body).await;
    app.drain().await;
    let data = String::from_utf8(smtp.received()[0].data.clone()).expect("7-bit clean");
    for needle in [
        "multipart/mixed",
        "multipart/alternative",
        "multipart/related",
        "Content-ID: <logo>",
        "application/pdf",
        "filename=\"INV-1042.pdf\"",
        "%PDF-1.4",
        "Subject: Ihre Rechnung =?utf-8?",
    ] {
        assert!(data.contains(needle), "{needle} missing from\n{data}");
    }
    assert!(
        !data.contains("Grüße"),
        "non-ASCII bodies are transfer-encoded"
    );
    app.finish().await;
}

async fn unknown_routes_and_methods_are_problems(backend: Backend) {
    let app = TestApp::spawn(backend, None).await;
    let (s, v) = app.get("/v1/nope", &app.key).await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
    let (s, v, _) = app
        .request(reqwest::Method::DELETE, "/v1/emails", &app.key, None, &[])
        .await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::METHOD_NOT_ALLOWED, Some("method_not_allowed"))
    );
    let (s, v) = app.get("/readyz", "").await;
    assert_eq!((s, v["status"].as_str()), (StatusCode::OK, Some("ready")));
    let (s, _) = app.get("/healthz", "").await;
    assert_eq!(s, StatusCode::OK);
    app.finish().await;
}

/// A NUL character (which Postgres cannot store in text) is refused with a pointer on both
/// backends, a send and a batch alike; a tenant's clean request beside it is accepted. A list of
/// 200,000 addresses gets its 422 without each address being parsed.
async fn refuses_what_a_backend_cannot_store_alone(backend: Backend) {
    let app = TestApp::spawn(backend, None).await;
    let mut poisoned = email_to(&["ada@example.com"]);
    poisoned["text"] = json!("a\u{0}b");
    let (s, v, _) = app.post("/v1/emails", &app.key, &poisoned).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(
        (
            v["errors"][0]["pointer"].as_str(),
            v["errors"][0]["code"].as_str()
        ),
        (Some("/text"), Some("invalid_character")),
        "{v}"
    );
    let mut in_metadata = email_to(&["ada@example.com"]);
    in_metadata["metadata"] = json!({"k\u{0}": "v"});
    let (s, v, _) = app
        .post(
            "/v1/emails/batch",
            &app.key,
            &json!([email_to(&["bob@example.org"]), in_metadata]),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["errors"][0]["pointer"], "/1/metadata/k\u{0}", "{v}");
    // An escaped backslash before "u0000" is text, not a NUL.
    let mut literal = email_to(&["ada@example.com"]);
    literal["text"] = json!("see \\u0000 in the docs");
    let (s, v, _) = app.post("/v1/emails", &app.key, &literal).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");

    let many: Vec<String> = (0..200_000).map(|i| format!("u{i}@example.com")).collect();
    let mut huge = email_to(&["ada@example.com"]);
    huge["to"] = json!(many);
    let (s, v, _) = app.post("/v1/emails", &app.key, &huge).await;
    assert_eq!(
        (s, v["errors"][0]["code"].as_str()),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("too_many_recipients")
        ),
        "{v}"
    );
    app.finish().await;
}

/// One tenant posting NUL-poisoned emails beside another posting clean ones, at once, on
/// Postgres (which cannot store a NUL): every poisoned request is refused alone with 422, every
/// clean one is accepted; none of the clean tenant's requests fails with the other's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poisoned_tenant_fails_alone() {
    if !crate::helpers::postgres_or_skip().await {
        return;
    }
    let app = TestApp::spawn(Backend::Postgres, None).await;
    let other = crate::helpers::create_key(
        &app.store,
        "beta",
        herald::domain::api_key::Permission::FullAccess,
        chrono::Utc::now().timestamp_millis(),
    )
    .await;
    let mut poisoned = email_to(&["ada@example.com"]);
    poisoned["subject"] = json!("bad\u{0}subject");
    let clean = email_to(&["bob@example.org"]);
    let (bad, good) = futures::future::join(
        futures::future::join_all((0..100).map(|_| app.post("/v1/emails", &other, &poisoned))),
        futures::future::join_all((0..100).map(|_| app.post("/v1/emails", &app.key, &clean))),
    )
    .await;
    assert!(
        bad.iter()
            .all(|(s, _, _)| *s == StatusCode::UNPROCESSABLE_ENTITY)
    );
    assert!(
        good.iter().all(|(s, _, _)| *s == StatusCode::ACCEPTED),
        "{:?}",
        good.iter().map(|(s, _, _)| *s).collect::<Vec<_>>()
    );
    app.finish().await;
}
