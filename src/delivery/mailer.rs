//! Where mail goes: the SMTP relay, or a directory of `.eml` files when none is configured.

use std::path::PathBuf;

use tokio::io::AsyncWriteExt;

use crate::domain::bounce::{SmtpPhase, SmtpReply};

use super::smtp::SmtpRelay;

/// What became of one SMTP transaction (one recipient).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The relay answered 2xx to the message: it has taken responsibility for it.
    Accepted { reply: SmtpReply, tls: bool },
    /// A 5xx: the relay will never take it as it is.
    Rejected { reply: SmtpReply, phase: SmtpPhase },
    /// A 4xx, a timeout, a dropped or refused connection: try again later.
    Deferred {
        reply: Option<SmtpReply>,
        phase: SmtpPhase,
        detail: String,
    },
}

/// The mailer behind the workers.
#[derive(Debug)]
pub enum Mailer {
    Smtp(Box<SmtpRelay>),
    Directory(DirectoryMailer),
}

impl Mailer {
    /// Sends `message` to `rcpt` with envelope sender `mail_from`; `None` when `stop` came
    /// before the transaction could start (it waited for a relay connection): a transaction
    /// that has started always finishes, one that has not never starts after `stop`.
    pub async fn deliver(
        &self,
        mail_from: &str,
        rcpt: &str,
        message: &[u8],
        name: &str,
        stop: &tokio_util::sync::CancellationToken,
    ) -> Option<Verdict> {
        match self {
            Self::Smtp(relay) => {
                relay
                    .deliver(mail_from, rcpt, message, Some(name), stop)
                    .await
            }
            Self::Directory(_) if stop.is_cancelled() => None,
            Self::Directory(dir) => Some(dir.deliver(mail_from, rcpt, message, name).await),
        }
    }

    /// The host named as `remote_mta` in events.
    pub fn remote_mta(&self) -> String {
        match self {
            Self::Smtp(relay) => relay.host().to_owned(),
            Self::Directory(_) => "localhost".into(),
        }
    }

    /// Closes idle connections.
    pub async fn close(&self) {
        if let Self::Smtp(relay) = self {
            relay.close_idle().await;
        }
    }
}

/// Writes each message as `<dir>/<name>.eml`, with `Return-Path` and `Delivered-To` on top as
/// a local delivery agent would, so a newcomer can read what Herald would have sent.
#[derive(Debug)]
pub struct DirectoryMailer {
    dir: PathBuf,
}

impl DirectoryMailer {
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    async fn deliver(&self, mail_from: &str, rcpt: &str, message: &[u8], name: &str) -> Verdict {
        let path = self.dir.join(format!("{name}.eml"));
        let tmp = self.dir.join(format!(".{name}.tmp"));
        let write = async {
            tokio::fs::create_dir_all(&self.dir).await?;
            let mut f = tokio::fs::File::create(&tmp).await?;
            f.write_all(
                format!("Return-Path: <{mail_from}>\r\nDelivered-To: {rcpt}\r\n").as_bytes(),
            )
            .await?;
            f.write_all(message).await?;
            f.sync_all().await?;
            tokio::fs::rename(&tmp, &path).await
        };
        match write.await {
            Ok(()) => Verdict::Accepted {
                reply: SmtpReply::new(250, &format!("2.0.0 written to {}", path.display())),
                tls: false,
            },
            Err(e) => Verdict::Deferred {
                reply: None,
                phase: SmtpPhase::Data,
                detail: format!("cannot write {}: {e}", path.display()),
            },
        }
    }
}
