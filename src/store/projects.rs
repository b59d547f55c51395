//! Projects (tenants) and their API keys.

use sqlx::Row;
use sqlx::any::AnyRow;
use uuid::Uuid;

/// The Postgres channel on which key changes (revocations, deleted projects) are announced.
const KEYS_CHANNEL: &str = "herald_keys";

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
        let inserted = sqlx::query(
            "INSERT INTO projects (id, name, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(Uuid::now_v7().to_string())
        .bind(name)
        .bind(now_ms)
        .execute(&self.write)
        .await;
        inserted?;
        let row = sqlx::query("SELECT id, name, created_at FROM projects WHERE name = $1")
            .bind(name)
            .fetch_one(&self.write)
            .await?;
        Ok(Project {
            id: row.try_get(0)?,
            name: row.try_get(1)?,
            created_at: row.try_get(2)?,
        })
    }

    pub async fn list_projects(&self) -> StoreResult<Vec<Project>> {
        let rows = sqlx::query("SELECT id, name, created_at FROM projects ORDER BY id")
            .fetch_all(&self.read)
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
            .fetch_optional(&self.read)
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
        sqlx::query("INSERT INTO projects (id, name, created_at) VALUES ($1, $2, $3)")
            .bind(&p.id)
            .bind(&p.name)
            .bind(p.created_at)
            .execute(&self.write)
            .await?;
        Ok(p)
    }

    pub async fn rename_project(&self, id: &str, name: &str) -> StoreResult<()> {
        let done = sqlx::query("UPDATE projects SET name = $1 WHERE id = $2")
            .bind(name)
            .bind(id)
            .execute(&self.write)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    /// Deletes a project that never sent mail (its keys go with it); one with mail is
    /// `Conflict`: its history belongs to the operator.
    pub async fn delete_project(&self, id: &str) -> StoreResult<()> {
        let mut tx = self.write.begin().await?;
        let has_mail = sqlx::query("SELECT 1 FROM emails WHERE project_id = $1 LIMIT 1")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        if has_mail.is_some() {
            return Err(StoreError::Conflict);
        }
        sqlx::query("DELETE FROM api_keys WHERE project_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let done = sqlx::query("DELETE FROM projects WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        tx.commit().await?;
        self.announce_key_change().await;
        Ok(())
    }

    pub async fn insert_api_key(&self, key: &ApiKeyRecord) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO api_keys (id, project_id, name, key_prefix, secret_hash, permission, \
             created_at, last_used_at, expires_at, revoked_at, allowed_domains) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, NULL, $8, NULL, $9)",
        )
        .bind(&key.id)
        .bind(&key.project_id)
        .bind(&key.name)
        .bind(&key.prefix)
        .bind(&key.secret_hash)
        .bind(&key.permission)
        .bind(key.created_at)
        .bind(key.expires_at)
        .bind(
            key.allowed_domains
                .as_ref()
                .map(|d| serde_json::json!(d).to_string()),
        )
        .execute(&self.write)
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
            .fetch_optional(&self.read)
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
            .fetch_all(&self.read)
            .await?;
        rows.iter().map(key_from_row).collect()
    }

    /// Revokes one of the project's keys; `NotFound` if it has no such live key.
    pub async fn revoke_api_key(&self, project_id: &str, id: &str, now_ms: i64) -> StoreResult<()> {
        let done = sqlx::query(
            "UPDATE api_keys SET revoked_at = $1 \
             WHERE project_id = $2 AND id = $3 AND revoked_at IS NULL",
        )
        .bind(now_ms)
        .bind(project_id)
        .bind(id)
        .execute(&self.write)
        .await?;
        if done.rows_affected() == 0 {
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
            .execute(&self.write)
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
        sqlx::query(
            "UPDATE api_keys SET last_used_at = $1 \
             WHERE id = $2 AND (last_used_at IS NULL OR last_used_at < $3)",
        )
        .bind(now_ms)
        .bind(id)
        .bind(now_ms - 60_000)
        .execute(&self.write)
        .await?;
        Ok(())
    }
}
