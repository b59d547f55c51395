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
        "applied 0001_core\napplied 0002_webhooks\napplied 0003_domains\napplied 0004_suppressions\napplied 0005_inbound"
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
