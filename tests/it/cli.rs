//! The `herald` command line, run as a real process.

use std::process::Command;

fn herald(dir: &std::path::Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_herald"));
    cmd.env_clear()
        .env(
            "HERALD_DATABASE_URL",
            format!("sqlite://{}", dir.join("h.db").display()),
        )
        .current_dir(dir);
    cmd
}

fn run(cmd: &mut Command) -> (bool, String, String) {
    let out = cmd.output().expect("run herald");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn migrate_keys_and_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ok, out, _) = run(herald(dir.path()).arg("migrate"));
    assert!(ok);
    assert_eq!(
        out.trim(),
        "applied 0001_core\napplied 0002_webhooks\napplied 0003_domains\napplied 0004_suppressions\napplied 0005_inbound\napplied 0006_search\napplied 0007_stats\napplied 0008_search_retention\napplied 0009_body_compression\napplied 0010_deferred_keys\napplied 0011_fewer_btrees\napplied 0012_due_index_predicate\napplied 0013_inbound_effects\napplied 0014_webhook_lanes\napplied 0015_console\napplied 0016_submission"
    );
    let (ok, out, _) = run(herald(dir.path()).arg("migrate"));
    assert!(ok);
    assert_eq!(out.trim(), "database is up to date");

    let (ok, token, err) = run(herald(dir.path()).args([
        "keys",
        "create",
        "--project",
        "shop",
        "--permission",
        "sending_access",
    ]));
    assert!(ok, "{err}");
    let token = token.trim();
    assert!(token.starts_with("hk_") && token.len() == 44, "{token}");
    assert!(err.contains("sending_access"), "{err}");
    let (ok, list, _) = run(herald(dir.path()).args(["keys", "list", "--project", "shop"]));
    assert!(ok);
    assert!(list.contains(&token[..11]), "the prefix is listed: {list}");
    assert!(!list.contains(&token[12..]), "the secret is not: {list}");
    let id = list.split_whitespace().next().expect("id").to_owned();
    let (ok, _, _) = run(herald(dir.path()).args(["keys", "revoke", &id, "--project", "shop"]));
    assert!(ok);
    let (_, list, _) = run(herald(dir.path()).args(["keys", "list", "--project", "shop"]));
    assert!(list.trim().is_empty(), "{list}");
    let (ok, _, err) = run(herald(dir.path()).args(["keys", "revoke", &id, "--project", "shop"]));
    assert!(!ok && err.contains("no live key"), "{err}");
    // A key limited to domains keeps them as `From` addresses carry them (lower-case, ASCII):
    // typed as `Acme.COM` it could never have sent.
    let (ok, _, err) = run(herald(dir.path()).args([
        "keys",
        "create",
        "--project",
        "shop",
        "--allowed-domain",
        "Acme.COM",
        "--allowed-domain",
        "Bücher.de.",
    ]));
    assert!(ok, "{err}");
    let (_, list, _) = run(herald(dir.path()).args(["keys", "list", "--project", "shop"]));
    assert!(
        list.trim_end()
            .ends_with("sends from acme.com, xn--bcher-kva.de"),
        "{list}"
    );
    let (ok, _, err) = run(herald(dir.path()).args([
        "keys",
        "create",
        "--project",
        "other",
        "--allowed-domain",
        "bü_cher.de",
    ]));
    assert!(!ok && err.contains("is not a domain name"), "{err}");

    let (ok, config, _) = run(herald(dir.path())
        .arg("config")
        .env("HERALD_RELAY_URL", "smtps://me:hunter2@relay.example.com")
        .env("HERALD_SECRET_KEY", "sekrit"));
    assert!(ok);
    assert!(
        config.contains("relay_url = \"smtps://me:<redacted>@relay.example.com\""),
        "{config}"
    );
    assert!(
        !config.contains("hunter2") && !config.contains("sekrit"),
        "{config}"
    );

    let (ok, _, err) = run(herald(dir.path())
        .arg("config")
        .env("HERALD_RELAY__CONCURENCY", "3"));
    assert!(!ok, "a misspelt key is an error");
    assert!(err.contains("concurency"), "{err}");
    let (ok, _, err) = run(herald(dir.path())
        .arg("config")
        .env("HERALD_RELAY_URL", "http://nope"));
    assert!(!ok && err.contains("relay_url"), "{err}");
}

/// `herald send` and `herald status` against a running Herald.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shell_client_sends_and_reads_status() {
    let app = crate::helpers::TestApp::spawn(herald::store::Backend::Sqlite, None).await;
    let run = |args: Vec<String>| {
        let (base, key) = (app.base.clone(), app.key.clone());
        async move {
            let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_herald"))
                .args(args)
                .env_clear()
                .env("HERALD_URL", base)
                .env("HERALD_API_KEY", key)
                .output()
                .await
                .expect("run");
            (
                out.status.success(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        }
    };
    let args = |a: &[&str]| a.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let (ok, out, err) = run(args(&[
        "send",
        "--from",
        "Acme <orders@acme.com>",
        "--to",
        "ada@example.com",
        "--subject",
        "Hi",
        "--text",
        "Hello",
    ]))
    .await;
    assert!(ok, "{err}");
    let sent: serde_json::Value = serde_json::from_str(&out).expect("json");
    let id = sent["id"].as_str().expect("id").to_owned();
    let (ok, out, _) = run(args(&["status", &id])).await;
    assert!(ok);
    let email: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(email["recipients"][0]["email"], "ada@example.com");
    let (ok, _, err) = run(args(&[
        "send",
        "--from",
        "x",
        "--to",
        "bob@",
        "--subject",
        "Hi",
        "--text",
        "t",
    ]))
    .await;
    assert!(!ok && err.contains("invalid_email"), "{err}");
    app.finish().await;
}

/// `admin-token` mints within its cap and refuses lifetimes past it or that overflow, with
/// what to change.
#[test]
fn admin_tokens_are_short_lived() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ok, out, _) = run(herald(dir.path()).args(["admin-token", "--ttl", "1h"]));
    assert!(ok && out.trim().split('.').count() == 3, "{out}");
    for ttl in [
        "100000d",
        "99999999999999999999d",
        "18446744073709551615d",
        "0s",
    ] {
        let (ok, _, err) = run(herald(dir.path()).args(["admin-token", "--ttl", ttl]));
        assert!(!ok, "{ttl}");
        assert!(err.contains("--ttl"), "{ttl}: {err}");
    }
}

/// Runs `herald` with `input` on standard input.
fn run_with_input(cmd: &mut Command, input: &str) -> (bool, String, String) {
    use std::io::Write as _;
    let mut child = cmd
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run herald");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write the password");
    let out = child.wait_with_output().expect("wait");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn operators_are_managed_with_passwords_from_standard_input() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ok, _, err) = run(herald(dir.path()).args(["keys", "create", "--project", "shop"]));
    assert!(ok, "{err}");
    // The password is read from standard input; there is no argument for it.
    let (ok, _, err) = run(herald(dir.path()).args([
        "operators",
        "create",
        "--email",
        "ada@example.com",
        "--role",
        "admin",
        "--password",
        "x",
    ]));
    assert!(!ok && err.contains("--password"), "{err}");
    let (ok, _, err) = run_with_input(
        herald(dir.path()).args([
            "operators",
            "create",
            "--email",
            "Ada@Example.com",
            "--role",
            "admin",
        ]),
        "too short\n",
    );
    assert!(!ok && err.contains("at least 12 characters"), "{err}");
    let (ok, out, err) = run_with_input(
        herald(dir.path()).args([
            "operators",
            "create",
            "--email",
            "Ada@Example.com",
            "--role",
            "admin",
        ]),
        "correct horse battery\n",
    );
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "created admin ada@example.com");
    let (ok, _, err) = run_with_input(
        herald(dir.path()).args([
            "operators",
            "create",
            "--email",
            "ada@example.com",
            "--role",
            "member",
        ]),
        "correct horse battery\n",
    );
    assert!(!ok && err.contains("exists already"), "{err}");
    let (ok, _, err) = run_with_input(
        herald(dir.path()).args([
            "operators",
            "create",
            "--email",
            "bob@example.com",
            "--role",
            "member",
        ]),
        "another long password\n",
    );
    assert!(ok, "{err}");
    let (ok, _, err) = run(herald(dir.path()).args([
        "operators",
        "grant",
        "--email",
        "bob@example.com",
        "--project",
        "shop",
        "--role",
        "viewer",
    ]));
    assert!(ok, "{err}");
    let (ok, _, err) = run(herald(dir.path()).args([
        "operators",
        "grant",
        "--email",
        "bob@example.com",
        "--project",
        "nope",
        "--role",
        "owner",
    ]));
    assert!(!ok && err.contains("no project named"), "{err}");
    let (ok, list, _) = run(herald(dir.path()).args(["operators", "list"]));
    assert!(ok);
    assert!(list.contains("ada@example.com  admin"), "{list}");
    assert!(
        list.contains("bob@example.com  member  shop (viewer)"),
        "{list}"
    );
    // Nothing of a password is stored or printed as given.
    let mut db = std::fs::read(dir.path().join("h.db")).expect("db");
    db.extend(std::fs::read(dir.path().join("h.db-wal")).unwrap_or_default());
    let stored = String::from_utf8_lossy(&db);
    assert!(!stored.contains("correct horse battery"));
    assert!(stored.contains("$argon2id$"));
    let (ok, _, _) =
        run(herald(dir.path()).args(["operators", "remove", "--email", "bob@example.com"]));
    assert!(ok);
    let (_, list, _) = run(herald(dir.path()).args(["operators", "list"]));
    assert!(!list.contains("bob@"), "{list}");
}
