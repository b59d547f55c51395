//! Projects (tenants) and their API keys.

use sqlx::Row;
use sqlx::any::AnyRow;
use uuid::Uuid;

/// The Postgres channel on which key changes (revocations, deleted projects) are announced.
const KEYS_CHANNEL: &str = "herald_keys";

use super::write::{Owned, Val};
use super::{Store, StoreError, StoreResult};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Project {
    pub id: String,
    pub name: String,
    pub created_at: i64,
}

/// One API key. `secret_hash` is the SHA-256 of the secret; the secret itself is never stored.
#[derive(Debug, Clone)]
pub struct ApiKeyRecord {
    pub id: String,
    pub project_id: String,
    pub name: String,
    pub prefix: String,
    pub secret_hash: Vec<u8>,
    pub permission: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    /// Sending domains this key may use; `None`: any.
    pub allowed_domains: Option<Vec<String>>,
}

const KEY_COLUMNS: &str = "id, project_id, name, key_prefix, secret_hash, permission, \
                           created_at, last_used_at, expires_at, revoked_at, allowed_domains";

fn key_from_row(r: &AnyRow) -> StoreResult<ApiKeyRecord> {
    Ok(ApiKeyRecord {
        id: r.try_get(0)?,
        project_id: r.try_get(1)?,
        name: r.try_get(2)?,
        prefix: r.try_get(3)?,
        secret_hash: r.try_get(4)?,
        permission: r.try_get(5)?,
        created_at: r.try_get(6)?,
        last_used_at: r.try_get(7)?,
        expires_at: r.try_get(8)?,
        revoked_at: r.try_get(9)?,
        allowed_domains: r
            .try_get::<Option<String>, _>(10)?
            .map(|j| serde_json::from_str(&j).unwrap_or_default()),
    })
}

impl Store {
    /// The project of that name, created if it does not exist yet.
    pub async fn ensure_project(&self, name: &str, now_ms: i64) -> StoreResult<Project> {
        let name = name.to_owned();
        self.writer
            .run(move |tx, _| {
                Box::pin(async move {
                    let id = Uuid::now_v7().to_string();
                    tx.execute(
                        "INSERT INTO projects (id, name, created_at) VALUES ($1, $2, $3) \
                         ON CONFLICT (name) DO NOTHING",
                        &[Val::Text(&id), Val::Text(&name), Val::Int(now_ms)],
                    )
                    .await?;
                    let rows = tx
                        .query(
                            "SELECT id, name, created_at FROM projects WHERE name = $1",
                            &[Val::Text(&name)],
                        )
                        .await?;
                    let row = rows.first().ok_or(StoreError::NotFound)?;
                    Ok(Project {
                        id: row.get(0)?,
                        name: row.get(1)?,
                        created_at: row.get(2)?,
                    })
                })
            })
            .await
    }

    pub async fn list_projects(&self) -> StoreResult<Vec<Project>> {
        let rows = sqlx::query("SELECT id, name, created_at FROM projects ORDER BY id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(Project {
                    id: r.try_get(0)?,
                    name: r.try_get(1)?,
                    created_at: r.try_get(2)?,
                })
            })
            .collect()
    }

    pub async fn get_project(&self, id: &str) -> StoreResult<Project> {
        let r = sqlx::query("SELECT id, name, created_at FROM projects WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound)?;
        Ok(Project {
            id: r.try_get(0)?,
            name: r.try_get(1)?,
            created_at: r.try_get(2)?,
        })
    }

    /// Creates a project; a name already taken is `Conflict`.
    pub async fn create_project(&self, name: &str, now_ms: i64) -> StoreResult<Project> {
        let p = Project {
            id: Uuid::now_v7().to_string(),
            name: name.to_owned(),
            created_at: now_ms,
        };
        self.execute(
            "INSERT INTO projects (id, name, created_at) VALUES ($1, $2, $3)",
            vec![p.id.as_str().into(), name.into(), now_ms.into()],
        )
        .await?;
        Ok(p)
    }

    pub async fn rename_project(&self, id: &str, name: &str) -> StoreResult<()> {
        let done = self
            .execute(
                "UPDATE projects SET name = $1 WHERE id = $2",
                vec![name.into(), id.into()],
            )
            .await?;
        if done == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    /// Deletes a project that never sent mail (its keys go with it); one with mail is
    /// `Conflict`: its history belongs to the operator.
    pub async fn delete_project(&self, id: &str) -> StoreResult<()> {
        let id = id.to_owned();
        self.writer
            .run(move |tx, _| {
                Box::pin(async move {
                    let mail = tx
                        .query(
                            "SELECT 1 FROM emails WHERE project_id = $1 LIMIT 1",
                            &[Val::Text(&id)],
                        )
                        .await?;
                    if !mail.is_empty() {
                        return Err(StoreError::Conflict);
                    }
                    tx.execute(
                        "DELETE FROM api_keys WHERE project_id = $1",
                        &[Val::Text(&id)],
                    )
                    .await?;
                    let done = tx
                        .execute("DELETE FROM projects WHERE id = $1", &[Val::Text(&id)])
                        .await?;
                    if done == 0 {
                        return Err(StoreError::NotFound);
                    }
                    Ok(())
                })
            })
            .await?;
        self.announce_key_change().await;
        Ok(())
    }

    pub async fn insert_api_key(&self, key: &ApiKeyRecord) -> StoreResult<()> {
        let domains = key.allowed_domains.as_ref().map(super::emails::json_text);
        self.execute(
            "INSERT INTO api_keys (id, project_id, name, key_prefix, secret_hash, permission, \
             created_at, last_used_at, expires_at, revoked_at, allowed_domains) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, NULL, $8, NULL, $9)",
            vec![
                key.id.as_str().into(),
                key.project_id.as_str().into(),
                key.name.as_str().into(),
                key.prefix.as_str().into(),
                Owned::Blob(key.secret_hash.clone()),
                key.permission.as_str().into(),
                key.created_at.into(),
                Owned::OptInt(key.expires_at),
                Owned::OptText(domains),
            ],
        )
        .await?;
        Ok(())
    }

    /// The key with that public prefix (`hk_<id>`), revoked or not: the caller decides.
    pub async fn find_api_key(&self, prefix: &str) -> StoreResult<Option<ApiKeyRecord>> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE key_prefix = $1"
        ));
        let row = sqlx::query(sql)
            .bind(prefix)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(key_from_row).transpose()
    }

    /// The project's keys that are not revoked, newest first.
    pub async fn list_api_keys(&self, project_id: &str) -> StoreResult<Vec<ApiKeyRecord>> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {KEY_COLUMNS} FROM api_keys \
             WHERE project_id = $1 AND revoked_at IS NULL ORDER BY id DESC"
        ));
        let rows = sqlx::query(sql)
            .bind(project_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(key_from_row).collect()
    }

    /// Revokes one of the project's keys; `NotFound` if it has no such live key.
    pub async fn revoke_api_key(&self, project_id: &str, id: &str, now_ms: i64) -> StoreResult<()> {
        let done = self
            .execute(
                "UPDATE api_keys SET revoked_at = $1 \
                 WHERE project_id = $2 AND id = $3 AND revoked_at IS NULL",
                vec![now_ms.into(), project_id.into(), id.into()],
            )
            .await?;
        if done == 0 {
            return Err(StoreError::NotFound);
        }
        self.announce_key_change().await;
        Ok(())
    }

    /// Tells every other Herald process on this Postgres that keys changed, so each drops its
    /// cached keys at once (`keys_changed`); SQLite has one process and nothing to tell.
    async fn announce_key_change(&self) {
        if self.backend() != super::Backend::Postgres {
            return;
        }
        if let Err(e) = sqlx::query("SELECT pg_notify($1, '')")
            .bind(KEYS_CHANNEL)
            .execute(&self.pool)
            .await
        {
            tracing::warn!(error = %e, "could not announce a key change; other processes see it within a second");
        }
    }

    /// Calls `changed` whenever another process announces a key change, and after every
    /// reconnection (a notice may have been missed), until the listener cannot be opened.
    /// Postgres only.
    pub async fn keys_changed(&self, url: &str, changed: impl Fn()) -> StoreResult<()> {
        let mut listener = sqlx::postgres::PgListener::connect(url).await?;
        listener.listen(KEYS_CHANNEL).await?;
        // What was cached before the listener was listening may already be stale.
        changed();
        loop {
            match listener.try_recv().await {
                Ok(Some(_)) => changed(),
                // The connection was lost and is opened again by the next call.
                Ok(None) => changed(),
                Err(e) => {
                    changed();
                    tracing::warn!(error = %e, "the key-change listener failed; retrying");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                }
            }
        }
    }

    /// Records use of a key, at most once a minute per key so that sends do not each write.
    pub async fn touch_api_key(&self, id: &str, now_ms: i64) -> StoreResult<()> {
        self.execute(
            "UPDATE api_keys SET last_used_at = $1 \
             WHERE id = $2 AND (last_used_at IS NULL OR last_used_at < $3)",
            vec![now_ms.into(), id.into(), (now_ms - 60_000).into()],
        )
        .await?;
        Ok(())
    }
}
