//! Postfix as a null client that relays through Herald's submission port with SASL, as a
//! server's cron jobs and system mail do (`relayhost`, `smtp_sasl_auth_enable`): a private
//! Postfix instance of its own (its own config, queue and log in a temporary directory, no
//! listener of its own), fed by Postfix's `sendmail`, speaking STARTTLS with the certificate
//! verified. Each step is told apart by its envelope sender, which also picks the key
//! (`smtp_sender_dependent_authentication`); what Postfix did is read from its log.

use std::path::Path;
use std::time::Duration;

use crate::smtp_server::{TestSmtp, Tls};
use crate::submission::{FIXTURES, Step, check_client, check_delivered, submission_app};

/// The services a null client needs, none listening on the network, none chrooted (the CA
/// file stays where it is).
const MASTER_CF: &str = "\
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
";

/// The null client's own host name: the envelope senders are here, so what Postfix would
/// send back to them (bounce notices) stays here and is dropped.
const HOST: &str = "nullclient.herald.test";

struct NullClient {
    dir: tempfile::TempDir,
    master: tokio::process::Child,
}

impl NullClient {
    /// A Postfix instance relaying to `localhost:port`, with `relay_key` as the password and
    /// `by_sender` keys for some envelope senders.
    async fn start(port: u16, relay_key: &str, by_sender: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        // Postfix's daemons run as `postfix`: they must reach the queue.
        set_mode(root, 0o755);
        std::fs::create_dir(root.join("queue")).expect("queue");
        std::fs::create_dir(root.join("data")).expect("data");
        let chown = std::process::Command::new("chown")
            .arg("postfix")
            .arg(root.join("data"))
            .status()
            .expect("chown");
        assert!(chown.success());
        let relayhost = format!("[localhost]:{port}");
        let mut passwords = format!("{relayhost} app:{relay_key}\n");
        for (sender, key) in by_sender {
            passwords.push_str(&format!("{sender} app:{key}\n"));
        }
        std::fs::write(root.join("sasl_passwd"), passwords).expect("write");
        let r = root.display();
        let main_cf = format!(
            "compatibility_level = 3.6
queue_directory = {r}/queue
data_directory = {r}/data
mail_owner = postfix
setgid_group = postdrop
myhostname = {HOST}
mydestination = $myhostname
local_recipient_maps =
local_transport = discard:local mail is dropped here
alias_maps =
alias_database =
inet_interfaces = loopback-only
inet_protocols = ipv4
maillog_file = /dev/stdout
relayhost = {relayhost}
smtp_host_lookup = native
smtp_sasl_auth_enable = yes
smtp_sasl_password_maps = texthash:{r}/sasl_passwd
smtp_sender_dependent_authentication = yes
smtp_sasl_security_options = noanonymous
smtp_tls_security_level = verify
smtp_tls_verify_cert_match = hostname
smtp_tls_CAfile = {FIXTURES}/ca.pem
smtp_tls_loglevel = 1
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 2s
biff = no
"
        );
        std::fs::write(root.join("main.cf"), main_cf).expect("write");
        std::fs::write(root.join("master.cf"), MASTER_CF).expect("write");
        // Creates the queue's directories, so that `sendmail` can drop mail into it from now
        // on: pickup takes it once the master runs, with nothing to wait for here.
        let check = std::process::Command::new("postfix")
            .arg("-c")
            .arg(root)
            .arg("check")
            .output()
            .expect("postfix check");
        assert!(check.status.success(), "{check:?}");
        let log = std::fs::File::create(root.join("maillog")).expect("log");
        let master = tokio::process::Command::new("postfix")
            .arg("-c")
            .arg(root)
            .arg("start-fg")
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("start Postfix");
        Self { dir, master }
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    /// Hands a message to Postfix's `sendmail`, from `sender` (its local part) to `rcpts`.
    async fn sendmail(&self, sender: &str, rcpts: &[&str], message: &[u8]) {
        use tokio::io::AsyncWriteExt as _;
        let mut child = tokio::process::Command::new("sendmail")
            .arg("-C")
            .arg(self.root())
            .args(["-f", &format!("{sender}@{HOST}"), "--"])
            .args(rcpts)
            .stdin(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("run sendmail");
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(message).await.expect("write");
        drop(stdin);
        assert!(child.wait().await.expect("sendmail").success());
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.root().join("maillog")).unwrap_or_default()
    }

    /// The log, once `done` holds for it (within a minute: Postfix retries each second).
    async fn log_until(&self, done: impl Fn(&str) -> bool) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let log = self.log();
            if done(&log) {
                return log;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "Postfix did not get there:\n{log}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Postfix's verdict on the first message from `sender`: the `status=` of its delivery,
    /// and the server's reply in it.
    fn verdict(log: &str, sender: &str) -> Option<(String, String)> {
        let from = format!("from=<{sender}@{HOST}>");
        let queue_id = log
            .lines()
            .find(|l| l.contains(&from))?
            .split(": ")
            .nth(1)?
            .to_owned();
        let line = log
            .lines()
            .find(|l| l.contains(&format!("{queue_id}: to=<")) && l.contains("status="))?;
        let status = line.split("status=").nth(1)?;
        let (verdict, why) = status.split_once(' ')?;
        Some((verdict.to_owned(), why.to_owned()))
    }
}

impl Drop for NullClient {
    fn drop(&mut self) {
        // Stops the daemons the master started; the master itself is killed on drop.
        let _ = std::process::Command::new("postfix")
            .arg("-c")
            .arg(self.dir.path())
            .arg("stop")
            .output();
        let _ = self.master.start_kill();
    }
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// Postfix is installed and this runs as root (a private instance's master must).
fn postfix_usable() -> bool {
    let installed =
        Path::new("/usr/sbin/postfix").exists() && Path::new("/usr/sbin/sendmail").exists();
    let root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    if !(installed && root) {
        assert!(
            std::env::var_os("TEST_HERALD_REQUIRE_INTEROP").is_none(),
            "Postfix (apt-get install postfix libsasl2-modules) and root are required here"
        );
        eprintln!("skipped: the Postfix null client test (needs Postfix and root)");
    }
    installed && root
}

fn message(subject: &str, body: &str) -> Vec<u8> {
    format!("From: orders@acme.com\nTo: ada@example.com\nSubject: {subject}\n\n{body}\n")
        .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postfix_relays_through_herald_with_sasl() {
    if !postfix_usable() {
        return;
    }
    let relay = TestSmtp::start(Tls::Starttls).await;
    let (app, rate_key) = submission_app(&relay).await;
    let port = app.submission_addrs[0].port();
    let wrong = "hk_wrongwrong_00000000000000000000000000000000";
    let postfix = NullClient::start(
        port,
        &app.key,
        &[
            (&format!("wrong@{HOST}"), wrong),
            (&format!("rate@{HOST}"), &rate_key),
        ],
    )
    .await;
    postfix
        .sendmail(
            "plain",
            &["ada@example.com"],
            &message(
                "Plain from postfix",
                "Your order has shipped.\n.a line that starts with a dot",
            ),
        )
        .await;
    let rich = crate::submission::rich_message("postfix");
    postfix
        .sendmail(
            "rich",
            &["ada@example.com", "bob@example.org", "audit@example.net"],
            rich.as_bytes(),
        )
        .await;
    let big = "x".repeat(900).repeat(100);
    postfix
        .sendmail("big", &["ada@example.com"], &message("big", &big))
        .await;
    postfix
        .sendmail("wrong", &["ada@example.com"], &message("never", "never"))
        .await;
    postfix
        .sendmail("rate", &["ada@example.com"], &message("later", "later"))
        .await;
    let senders = ["plain", "rich", "big", "wrong", "rate"];
    let log = postfix
        .log_until(|log| {
            senders
                .iter()
                .all(|s| NullClient::verdict(log, s).is_some())
        })
        .await;
    let verdict = |s: &str| NullClient::verdict(&log, s).expect("a verdict");
    let step = |s: &str| {
        let (status, why) = verdict(s);
        // "(host localhost[127.0.0.1] said: 451 4.7.1 … (in reply to MAIL FROM command))"
        let reply = why
            .split("said: ")
            .nth(1)
            .unwrap_or(&why)
            .trim_start_matches('(')
            .trim_end_matches(')')
            .to_owned();
        let code = reply
            .split_whitespace()
            .next()
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        println!("postfix {s}: status={status} {why}");
        (
            status,
            Step {
                code: if code == 0 && why.contains("exceeds size limit") {
                    // Postfix read Herald's SIZE and did not try: the protocol's way.
                    552
                } else {
                    code
                },
                text: if why.contains("exceeds size limit") {
                    format!("5.3.4 {why}")
                } else {
                    reply
                },
            },
        )
    };
    let mut steps = Vec::new();
    for (name, sender, want) in [
        ("plain", "plain", "sent"),
        ("rich", "rich", "sent"),
        ("too_big", "big", "bounced"),
        ("wrong_key", "wrong", "deferred"),
        ("rate", "rate", "deferred"),
    ] {
        let (status, s) = step(sender);
        assert_eq!(status, want, "{name}: {s:?}\n{log}");
        steps.push((name.to_owned(), s));
    }
    check_client(&app, &steps, "postfix").await;
    check_delivered(&app, &relay, "postfix", 1).await;
    // The key travelled only inside TLS, to the certificate's name.
    assert!(
        log.contains("Verified TLS connection established to localhost"),
        "{log}"
    );
    drop(postfix);
    app.finish().await;
}
