//! `herald operators`: the people who sign in to the console. Passwords are read from
//! standard input (never from an argument, which other users of the machine can see).

use std::io::{BufRead as _, IsTerminal as _, Write as _};

use anyhow::{Context as _, bail};
use clap::Subcommand;

use herald::clock::{Clock, SystemClock};
use herald::domain::operator::{hash_password, operator_email};
use herald::domain::states::{OperatorRole, ProjectRole};
use herald::store::{OperatorRecord, Store, StoreError};

#[derive(Subcommand)]
pub enum OperatorsCommand {
    /// Add an operator; the password is read from standard input.
    Create {
        #[arg(long)]
        email: String,
        /// admin: every project and the projects themselves; member: the projects granted.
        #[arg(long, value_parser = ["admin", "member"])]
        role: String,
    },
    /// Give a member a role in a project (owner changes things, viewer reads), or take it away.
    Grant {
        #[arg(long)]
        email: String,
        /// The project's name.
        #[arg(long)]
        project: String,
        #[arg(long, value_parser = ["owner", "viewer", "none"])]
        role: String,
    },
    /// Change an operator's role; lowered to member, its sessions end.
    Role {
        #[arg(long)]
        email: String,
        #[arg(long, value_parser = ["admin", "member"])]
        role: String,
    },
    /// Set a new password (read from standard input); every session of the operator ends.
    Password {
        #[arg(long)]
        email: String,
    },
    /// List the operators and their projects.
    List,
    /// Remove an operator; its sessions end at once.
    Remove {
        #[arg(long)]
        email: String,
    },
}

pub async fn run(store: &Store, command: OperatorsCommand) -> anyhow::Result<()> {
    let address = |e: &str| operator_email(e).with_context(|| format!("{e:?} is not an address"));
    let role = |r: &str| OperatorRole::parse(r).context("role");
    match command {
        OperatorsCommand::Create { email, role: r } => {
            let email = address(&email)?;
            let role = role(&r)?;
            let hash = read_password_hash()?;
            let o = OperatorRecord {
                id: uuid::Uuid::now_v7().to_string(),
                email: email.clone(),
                password_hash: hash,
                role,
                created_at: SystemClock.now_ms(),
            };
            match store.create_operator(&o).await {
                Err(StoreError::Conflict) => bail!("an operator {email} exists already"),
                r => r?,
            }
            println!("created {role} {email}");
        }
        OperatorsCommand::Grant {
            email,
            project,
            role: r,
        } => {
            let email = address(&email)?;
            let grant = ProjectRole::parse(&r);
            let p = store
                .list_projects()
                .await?
                .into_iter()
                .find(|p| p.name == project)
                .with_context(|| format!("no project named {project:?}"))?;
            store
                .grant_operator(&email, &p.id, grant)
                .await
                .with_context(|| format!("no operator {email}"))?;
            println!("{email} is now {r} in {project}");
        }
        OperatorsCommand::Role { email, role: r } => {
            let email = address(&email)?;
            store
                .set_operator_role(&email, role(&r)?)
                .await
                .with_context(|| format!("no operator {email}"))?;
            println!("{email} is now {r}");
        }
        OperatorsCommand::Password { email } => {
            let email = address(&email)?;
            let hash = read_password_hash()?;
            store
                .set_operator_password(&email, &hash)
                .await
                .with_context(|| format!("no operator {email}"))?;
            println!("new password set for {email}; its sessions have ended");
        }
        OperatorsCommand::List => {
            let projects = store.list_projects().await?;
            let name = |id: &str| {
                projects
                    .iter()
                    .find(|p| p.id == id)
                    .map_or(id.to_owned(), |p| p.name.clone())
            };
            for (o, grants) in store.list_operators().await? {
                let grants: Vec<String> = grants
                    .iter()
                    .map(|(p, r)| format!("{} ({r})", name(p)))
                    .collect();
                println!("{}  {:<6}  {}", o.email, o.role, grants.join(", "));
            }
        }
        OperatorsCommand::Remove { email } => {
            let email = address(&email)?;
            store
                .delete_operator(&email)
                .await
                .with_context(|| format!("no operator {email}"))?;
            println!("removed {email}");
        }
    }
    Ok(())
}

/// Reads one line from standard input (asking for it, without echo, when a person is typing)
/// and hashes it.
fn read_password_hash() -> anyhow::Result<String> {
    let stdin = std::io::stdin();
    let mut line = String::new();
    if stdin.is_terminal() {
        use rustix::termios::{LocalModes, OptionalActions, tcgetattr, tcsetattr};
        eprint!("password: ");
        std::io::stderr().flush().ok();
        let before = tcgetattr(&stdin).context("reading the terminal's settings")?;
        let mut quiet = before.clone();
        quiet.local_modes.remove(LocalModes::ECHO);
        tcsetattr(&stdin, OptionalActions::Now, &quiet).context("turning echo off")?;
        let read = stdin.lock().read_line(&mut line);
        tcsetattr(&stdin, OptionalActions::Now, &before).context("turning echo back on")?;
        eprintln!();
        read.context("reading the password")?;
    } else {
        stdin
            .lock()
            .read_line(&mut line)
            .context("reading the password from standard input")?;
    }
    let password = line.trim_end_matches(['\r', '\n']);
    if password.is_empty() {
        bail!(
            "no password on standard input (pipe it in: printf '%s' \"$PASSWORD\" | herald operators …)"
        );
    }
    hash_password(password).map_err(|e| anyhow::anyhow!("{e}"))
}
