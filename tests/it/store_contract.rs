//! The store's contract, the same tests on SQLite and Postgres: the queue's claims and
//! leases, fenced outcome writes, idempotency records, migrations.

use std::collections::HashSet;

use herald::store::{
    Backend, IdempotencyRecord, NewEmail, NewEvent, NewRecipient, Outcome, Store, StoreError,
};

use crate::helpers::TestDb;
use crate::on_both_backends;

on_both_backends!(
    claims_only_due_recipients_in_order,
    expired_leases_are_reclaimed_and_fenced,
    concurrent_claims_never_overlap,
    idempotency_key_is_unique_with_the_email,
    migrations_are_idempotent,
    concurrent_inserts_commit_together_and_fail_alone,
    outcomes_of_many_workers_are_fenced_row_by_row,
    deliveries_to_an_endpoint_disabled_since_are_canceled_at_claim,
    outcomes_and_new_emails_committed_together_keep_every_event,
    a_claimed_scheduled_recipient_is_queued,
);

/// A writer may still hold an endpoint as enabled for up to a second after another process
/// disabled it (and canceled what was waiting): a delivery it writes then must not be sent.
async fn deliveries_to_an_endpoint_disabled_since_are_canceled_at_claim(backend: Backend) {
    let (store, db) = store(backend).await;
    let p = project(&store).await;
    let endpoint = herald::store::EndpointRecord {
        id: uuid::Uuid::now_v7().to_string(),
        project_id: p.clone(),
        url: "https://hooks.example.com/herald".into(),
        description: None,
        event_types: vec!["email.queued".into()],
        streams: vec![],
        status: herald::domain::states::EndpointStatus::Enabled,
        disabled_reason: None,
        secret: "sealed".into(),
        previous_secret: None,
        previous_secret_expires_at: None,
        created_at: NOW,
        updated_at: NOW,
        rate_limit: None,
    };
    store
        .insert_webhook_endpoint(&endpoint)
        .await
        .expect("endpoint");
    let mut e = email(&p, &[("a@x.com", NOW)]);
    let rid = e.recipients[0].id.clone();
    e.events.push(NewEvent::new(
        Some(&rid),
        Some("a@x.com"),
        herald::domain::event::EventType::Queued,
        herald::domain::event::EventData::Empty {},
        NOW,
    ));
    store.insert_emails(vec![e], None).await.expect("insert");
    assert_eq!(store.count_pending_webhooks().await.expect("count"), 1);
    // Another process disables the endpoint; this delivery was written after its cancel ran.
    sqlx::any::install_default_drivers();
    let other = sqlx::AnyPool::connect(&db.url).await.expect("connect");
    sqlx::query("UPDATE webhook_endpoints SET status = 'disabled' WHERE id = $1")
        .bind(&endpoint.id)
        .execute(&other)
        .await
        .expect("disable");
    other.close().await;
    let due = store
        .claim_webhook_deliveries("d1", &endpoint.id, NOW + 1, 60_000, 10)
        .await
        .expect("claim");
    assert!(due.is_empty(), "nothing is sent to a disabled endpoint");
    assert_eq!(
        store.count_pending_webhooks().await.expect("count"),
        0,
        "the delivery is canceled, not left pending"
    );
    store.close().await;
    db.drop_db().await;
}

/// Outcomes of several workers, recorded concurrently (so the writer folds many of them into
/// one statement): each row is fenced by its own lease owner, so a worker's write for a
/// recipient another worker holds is refused while the rest of the statement applies.
async fn outcomes_of_many_workers_are_fenced_row_by_row(backend: Backend) {
    let (store, db) = store(backend).await;
    let p = project(&store).await;
    let emails: Vec<NewEmail> = (0..40)
        .map(|i| email(&p, &[(&format!("u{i}@x.com"), NOW)]))
        .collect();
    store.insert_emails(emails, None).await.expect("insert");
    let held = |claimed: Vec<herald::store::ClaimedEmail>| -> Vec<(String, String)> {
        claimed
            .into_iter()
            .flat_map(|e| e.recipients.into_iter().map(move |r| (e.id.clone(), r.id)))
            .collect()
    };
    let w1 = held(
        store
            .claim_due_recipients("w1", NOW, 60_000, 20)
            .await
            .expect("claim"),
    );
    let w2 = held(
        store
            .claim_due_recipients("w2", NOW, 60_000, 20)
            .await
            .expect("claim"),
    );
    assert_eq!((w1.len(), w2.len()), (20, 20));
    let mut tasks = Vec::new();
    // w1 records its recipients one by one, each call also claiming one of w2's.
    for (mine, theirs) in w1.iter().zip(&w2) {
        let store = store.clone();
        let outcomes = vec![
            sent(&mine.0, &p, &mine.1, NOW + 1),
            sent(&theirs.0, &p, &theirs.1, NOW + 1),
        ];
        tasks.push(tokio::spawn(async move {
            store
                .record_outcomes("w1", outcomes)
                .await
                .expect("record")
                .applied
        }));
    }
    // w2 records all of its own at once.
    let outcomes: Vec<Outcome> = w2.iter().map(|(e, r)| sent(e, &p, r, NOW + 2)).collect();
    let w2_applied = {
        let store = store.clone();
        tokio::spawn(async move { store.record_outcomes("w2", outcomes).await.expect("record") })
    };
    let mut w1_applied = Vec::new();
    for t in tasks {
        w1_applied.push(t.await.expect("task"));
    }
    assert_eq!(
        w1_applied,
        vec![1; 20],
        "only w1's own recipient applies in each call"
    );
    assert_eq!(w2_applied.await.expect("task").applied, 20);
    assert_eq!(store.count_with_status("sent").await.expect("count"), 40);
    for (email_id, _) in w1.iter().chain(&w2) {
        let events = store
            .list_email_events(&p, email_id, None, 10)
            .await
            .expect("events");
        assert_eq!(events.len(), 1, "one sent event per recipient: {events:?}");
    }
    store.close().await;
    db.drop_db().await;
}

/// New emails and delivery outcomes submitted at the same moment share the writer's round (on
/// Postgres one commit; on SQLite the new emails commit on the writer's own connection and the
/// outcomes right after on the pool's, see `store::lite`), and the outcomes' events go in
/// beside the new emails' own: each keeps exactly its events.
async fn outcomes_and_new_emails_committed_together_keep_every_event(backend: Backend) {
    let (store, db) = store(backend).await;
    let p = project(&store).await;
    let queued = |address: &str| {
        let mut e = email(&p, &[(address, NOW)]);
        let rid = e.recipients[0].id.clone();
        e.events.push(NewEvent::new(
            Some(&rid),
            Some(address),
            herald::domain::event::EventType::Queued,
            herald::domain::event::EventData::Empty {},
            NOW,
        ));
        e
    };
    store
        .insert_emails(
            (0..30).map(|i| queued(&format!("old{i}@x.com"))).collect(),
            None,
        )
        .await
        .expect("insert");
    let claimed = store
        .claim_due_recipients("w", NOW, 60_000, 30)
        .await
        .expect("claim");
    let before = store.queue_snapshot(NOW).await.expect("figures").writer;
    let mut fresh = Vec::new();
    for (i, e) in claimed.iter().enumerate() {
        let new = queued(&format!("new{i}@x.com"));
        fresh.push(new.id.clone());
        let outcomes = vec![sent(&e.id, &p, &e.recipients[0].id, NOW + 1)];
        let (inserted, recorded) = tokio::join!(
            store.insert_emails(vec![new], None),
            store.record_outcomes("w", outcomes)
        );
        inserted.expect("insert");
        assert_eq!(recorded.expect("record").applied, 1);
    }
    let after = store.queue_snapshot(NOW).await.expect("figures").writer;
    // On SQLite a round that carries both commits twice (one transaction a kind), which the
    // counters cannot tell from two rounds, so only Postgres's sharing is checked; every email
    // keeping exactly its events (below) holds on both.
    if backend == Backend::Postgres {
        assert!(
            after.jobs - before.jobs > after.commits - before.commits,
            "some commit carried both: {before:?} {after:?}"
        );
    }
    let types = |events: Vec<herald::store::EventRecord>| -> Vec<String> {
        events
            .into_iter()
            .map(|e| e.event_type.as_str().to_owned())
            .collect()
    };
    for e in &claimed {
        let events = store
            .list_email_events(&p, &e.id, None, 10)
            .await
            .expect("events");
        assert_eq!(types(events), ["email.queued", "email.sent"], "{}", e.id);
    }
    for id in &fresh {
        let events = store
            .list_email_events(&p, id, None, 10)
            .await
            .expect("events");
        assert_eq!(types(events), ["email.queued"], "{id}");
    }
    store.close().await;
    db.drop_db().await;
}

/// Group commit: 200 concurrent requests, 10 of which reuse one idempotency key. Every other
/// request commits; exactly one of the ten does; the failures roll back only themselves.
async fn concurrent_inserts_commit_together_and_fail_alone(backend: Backend) {
    let (store, db) = store(backend).await;
    let p = project(&store).await;
    let mut tasks = Vec::new();
    for i in 0..200 {
        let store = store.clone();
        let e = email(&p, &[(&format!("u{i}@x.com"), NOW)]);
        let idem = (i % 20 == 0).then(|| IdempotencyRecord {
            project_id: p.clone(),
            method: "POST".into(),
            path: "/v1/emails".into(),
            key: "shared".into(),
            fingerprint: vec![1],
            response_status: 202,
            response_body: "{}".into(),
            created_at: NOW,
            expires_at: NOW + 1000,
        });
        tasks.push(tokio::spawn(async move {
            store.insert_emails(vec![e], idem).await
        }));
    }
    let mut ok = 0;
    let mut conflicts = 0;
    for t in tasks {
        match t.await.expect("task") {
            Ok(_) => ok += 1,
            Err(StoreError::Conflict) => conflicts += 1,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!((ok, conflicts), (191, 9));
    assert_eq!(
        store.count_pending().await.expect("count"),
        191,
        "only committed requests left rows"
    );
    store.close().await;
    db.drop_db().await;
}

pub(crate) const NOW: i64 = 1_800_000_000_000;

async fn store(backend: Backend) -> (Store, TestDb) {
    let db = TestDb::new(backend).await;
    let store = Store::open(&db.url, 8).await.expect("open");
    (store, db)
}

pub(crate) async fn project(store: &Store) -> String {
    store.ensure_project("p", NOW).await.expect("project").id
}

pub(crate) fn email(project_id: &str, recipients: &[(&str, i64)]) -> NewEmail {
    let id = uuid::Uuid::now_v7().to_string();
    NewEmail {
        id: id.clone(),
        project_id: project_id.to_owned(),
        api_key_id: None,
        message_id: format!("<{id}@example.com>"),
        stream: "transactional".into(),
        from_email: "a@example.com".into(),
        from_name: None,
        reply_to: "[]".into(),
        subject: "s".into(),
        tags: "[]".into(),
        metadata: "{}".into(),
        text_body: Some("t".into()),
        html_body: None,
        mime: b"Subject: s\r\n\r\nt\r\n".to_vec(),
        created_at: NOW,
        scheduled_at: None,
        expires_at: None,
        smtp_client: None,
        recipients: recipients
            .iter()
            .enumerate()
            .map(|(i, (addr, due))| NewRecipient {
                id: uuid::Uuid::now_v7().to_string(),
                position: i64::try_from(i).expect("small"),
                address: (*addr).to_owned(),
                name: None,
                kind: herald::domain::email::RecipientKind::To,
                status: herald::domain::status::RecipientStatus::Queued,
                next_attempt_at: *due,
                deadline_at: NOW + 86_400_000,
            })
            .collect(),
        events: vec![],
    }
}

fn sent(email_id: &str, project_id: &str, recipient_id: &str, at: i64) -> Outcome {
    Outcome {
        recipient_id: recipient_id.to_owned(),
        email_id: email_id.to_owned(),
        project_id: project_id.to_owned(),
        stream: "transactional".into(),
        status: herald::domain::status::RecipientStatus::Sent,
        next_attempt_at: at,
        attempts_delta: 1,
        smtp_code: Some(250),
        smtp_enhanced: Some("2.0.0".into()),
        smtp_response: Some("250 2.0.0 OK".into()),
        smtp_phase: None,
        bounce_type: None,
        bounce_sub_type: None,
        sent_at: Some(at),
        suppress: None,
        event: NewEvent::new(
            Some(recipient_id),
            None,
            herald::domain::event::EventType::Sent,
            herald::domain::event::EventData::Empty {},
            at,
        ),
    }
}

async fn claims_only_due_recipients_in_order(backend: Backend) {
    let (store, db) = store(backend).await;
    let p = project(&store).await;
    let e = email(
        &p,
        &[
            ("late@x.com", NOW + 60_000),
            ("second@x.com", NOW - 1),
            ("first@x.com", NOW - 10),
        ],
    );
    store.insert_emails(vec![e], None).await.expect("insert");
    let claimed = store
        .claim_due_recipients("w1", NOW, 1000, 1)
        .await
        .expect("claim");
    assert_eq!(
        claimed[0].recipients[0].address, "first@x.com",
        "oldest due first"
    );
    let claimed = store
        .claim_due_recipients("w1", NOW, 1000, 10)
        .await
        .expect("claim");
    let addrs: Vec<_> = claimed
        .iter()
        .flat_map(|e| e.recipients.iter().map(|r| r.address.clone()))
        .collect();
    assert_eq!(
        addrs,
        ["second@x.com"],
        "leased and future recipients are not due"
    );
    assert_eq!(claimed[0].mime, b"Subject: s\r\n\r\nt\r\n");
    store.close().await;
    db.drop_db().await;
}

/// A scheduled recipient the claim leases is queued from then on (SQLite's claim leaves the
/// status alone and promotes those it returns as scheduled); a scheduled one not yet due and
/// a queued one keep theirs.
async fn a_claimed_scheduled_recipient_is_queued(backend: Backend) {
    let (store, db) = store(backend).await;
    let p = project(&store).await;
    let mut e = email(
        &p,
        &[
            ("due@x.com", NOW - 10),
            ("later@x.com", NOW + 60_000),
            ("queued@x.com", NOW - 5),
        ],
    );
    e.recipients[0].status = herald::domain::status::RecipientStatus::Scheduled;
    e.recipients[1].status = herald::domain::status::RecipientStatus::Scheduled;
    let id = e.id.clone();
    store.insert_emails(vec![e], None).await.expect("insert");
    let claimed = store
        .claim_due_recipients("w1", NOW, 1000, 10)
        .await
        .expect("claim");
    assert_eq!(claimed[0].recipients.len(), 2, "the two due");
    let (_, recipients) = store.get_email(&p, &id).await.expect("email");
    let statuses: Vec<(&str, &str)> = recipients
        .iter()
        .map(|r| (r.address.as_str(), r.status.as_str()))
        .collect();
    assert_eq!(
        statuses,
        [
            ("due@x.com", "queued"),
            ("later@x.com", "scheduled"),
            ("queued@x.com", "queued")
        ]
    );
    store.close().await;
    db.drop_db().await;
}

async fn expired_leases_are_reclaimed_and_fenced(backend: Backend) {
    let (store, db) = store(backend).await;
    let p = project(&store).await;
    let e = email(&p, &[("a@x.com", NOW)]);
    let email_id = e.id.clone();
    store.insert_emails(vec![e], None).await.expect("insert");
    let first = store
        .claim_due_recipients("dead-worker", NOW, 1000, 10)
        .await
        .expect("claim");
    let rid = first[0].recipients[0].id.clone();
    assert!(
        store
            .claim_due_recipients("w2", NOW + 999, 1000, 10)
            .await
            .expect("claim")
            .is_empty()
    );
    // The lease runs out: another worker takes the recipient over.
    let again = store
        .claim_due_recipients("w2", NOW + 1000, 1000, 10)
        .await
        .expect("claim");
    assert_eq!(again[0].recipients[0].id, rid);
    // The first worker comes back to life: its write is refused.
    let applied = store
        .record_outcomes("dead-worker", vec![sent(&email_id, &p, &rid, NOW + 1001)])
        .await
        .expect("record")
        .applied;
    assert_eq!(applied, 0);
    let applied = store
        .record_outcomes("w2", vec![sent(&email_id, &p, &rid, NOW + 1002)])
        .await
        .expect("record")
        .applied;
    assert_eq!(applied, 1);
    // Final: never claimed again, and a second write is refused.
    assert!(
        store
            .claim_due_recipients("w3", NOW + 10_000_000, 1000, 10)
            .await
            .expect("claim")
            .is_empty()
    );
    assert_eq!(
        store
            .record_outcomes("w2", vec![sent(&email_id, &p, &rid, NOW + 1003)])
            .await
            .expect("record")
            .applied,
        0
    );
    let events = store
        .list_email_events(&p, &email_id, None, 10)
        .await
        .expect("events");
    assert_eq!(events.len(), 1, "exactly one sent event: {events:?}");
    store.close().await;
    db.drop_db().await;
}

async fn concurrent_claims_never_overlap(backend: Backend) {
    let (store, db) = store(backend).await;
    let p = project(&store).await;
    let emails: Vec<NewEmail> = (0..200)
        .map(|i| email(&p, &[(&format!("u{i}@x.com"), NOW)]))
        .collect();
    store.insert_emails(emails, None).await.expect("insert");
    let mut tasks = Vec::new();
    for w in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let got = store
                    .claim_due_recipients(&format!("w{w}"), NOW, 60_000, 7)
                    .await
                    .expect("claim");
                if got.is_empty() {
                    return mine;
                }
                mine.extend(
                    got.into_iter()
                        .flat_map(|e| e.recipients.into_iter().map(|r| r.id)),
                );
            }
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("task"));
    }
    let unique: HashSet<_> = all.iter().collect();
    assert_eq!(all.len(), 200, "every recipient claimed");
    assert_eq!(unique.len(), 200, "and none twice");
    store.close().await;
    db.drop_db().await;
}

async fn idempotency_key_is_unique_with_the_email(backend: Backend) {
    let (store, db) = store(backend).await;
    let p = project(&store).await;
    let record = IdempotencyRecord {
        project_id: p.clone(),
        method: "POST".into(),
        path: "/v1/emails".into(),
        key: "k".into(),
        fingerprint: vec![1, 2, 3],
        response_status: 202,
        response_body: "{\"id\":\"x\"}".into(),
        created_at: NOW,
        expires_at: NOW + 1000,
    };
    store
        .insert_emails(vec![email(&p, &[("a@x.com", NOW)])], Some(record.clone()))
        .await
        .expect("first");
    let second = store
        .insert_emails(vec![email(&p, &[("b@x.com", NOW)])], Some(record.clone()))
        .await;
    assert!(matches!(second, Err(StoreError::Conflict)), "{second:?}");
    assert_eq!(
        store.count_pending().await.expect("count"),
        1,
        "the second email was rolled back with its key"
    );
    let found = store
        .find_idempotent_response(&p, "POST", "/v1/emails", "k", NOW)
        .await
        .expect("find")
        .expect("some");
    assert_eq!((found.status, found.fingerprint), (202, vec![1, 2, 3]));
    // Expired keys are free again.
    assert!(
        store
            .find_idempotent_response(&p, "POST", "/v1/emails", "k", NOW + 1000)
            .await
            .expect("find")
            .is_none()
    );
    let mut later = record.clone();
    later.created_at = NOW + 2000;
    later.expires_at = NOW + 3000;
    store
        .insert_emails(vec![email(&p, &[("c@x.com", NOW)])], Some(later))
        .await
        .expect("reuse after expiry");
    store.close().await;
    db.drop_db().await;
}

/// Postgres compresses email bodies with LZ4 (pglz cost a tenth of its CPU at the peak), and
/// a body written so reads back whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_compresses_bodies_with_lz4() {
    if !crate::helpers::postgres_or_skip().await {
        return;
    }
    let (store, db) = store(Backend::Postgres).await;
    let pool = sqlx::AnyPool::connect(&db.url).await.expect("connect");
    let methods: Vec<String> = sqlx::query_scalar(
        "SELECT attname || '=' || attcompression::text FROM pg_attribute \
         WHERE attrelid = 'emails'::regclass AND attname IN ('text_body', 'html_body', 'mime') \
         ORDER BY attname",
    )
    .fetch_all(&pool)
    .await
    .expect("columns");
    assert_eq!(methods, ["html_body=l", "mime=l", "text_body=l"]);
    let p = project(&store).await;
    let mut e = email(&p, &[("a@x.com", NOW)]);
    let body = "Thanks for your order. ".repeat(500);
    e.text_body = Some(body.clone());
    let id = e.id.clone();
    store.insert_emails(vec![e], None).await.expect("insert");
    let (stored, method): (String, String) = sqlx::query_as(
        "SELECT text_body, pg_column_compression(text_body)::text FROM emails WHERE id = $1",
    )
    .bind(&id)
    .fetch_one(&pool)
    .await
    .expect("row");
    assert_eq!((stored == body, method.as_str()), (true, "lz4"));
    pool.close().await;
    store.close().await;
    db.drop_db().await;
}

async fn migrations_are_idempotent(backend: Backend) {
    let (store, db) = store(backend).await;
    assert!(store.migrate().await.expect("again").is_empty());
    store.ping().await.expect("ping");
    store.close().await;
    db.drop_db().await;
}
