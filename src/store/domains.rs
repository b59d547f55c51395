//! Sending domains and their DKIM keys.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::emails::{NewEvent, insert_event};
use super::webhooks::EventRow;
use super::write::{Tx, Val};
use super::{Store, StoreError, StoreResult, stored};
use crate::domain::states::{DomainStatus, KeyState};

#[derive(Debug, Clone)]
pub struct DomainRecord {
    pub id: String,
    pub project_id: String,
    pub name: String,
    pub status: DomainStatus,
    /// `herald` (Herald signs) or `upstream` (the relay signs).
    pub dkim_mode: String,
    /// The return-path host under the domain (`bounces.acme.com`), if any.
    pub return_path_name: Option<String>,
    /// JSON: the last check's result per record.
    pub records_status: String,
    pub check_attempts: i64,
    pub next_check_at: Option<i64>,
    pub last_checked_at: Option<i64>,
    pub verified_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// One DKIM key of a domain. `private_key` is sealed.
#[derive(Debug, Clone)]
pub struct DkimKeyRecord {
    pub id: String,
    pub domain_id: String,
    pub selector: String,
    pub algorithm: String,
    pub private_key: String,
    pub public_key: String,
    pub state: KeyState,
    pub created_at: i64,
    pub activated_at: Option<i64>,
    pub retired_at: Option<i64>,
}

const DOMAIN_COLUMNS: &str = "id, project_id, name, status, dkim_mode, return_path_name, \
     records_status, check_attempts, next_check_at, last_checked_at, verified_at, created_at, \
     updated_at";
const KEY_COLUMNS: &str = "id, domain_id, selector, algorithm, private_key, public_key, state, \
     created_at, activated_at, retired_at";

fn domain_from_row(r: &AnyRow) -> StoreResult<DomainRecord> {
    Ok(DomainRecord {
        id: r.try_get(0)?,
        project_id: r.try_get(1)?,
        name: r.try_get(2)?,
        status: stored(DomainStatus::parse, &r.try_get::<String, _>(3)?)?,
        dkim_mode: r.try_get(4)?,
        return_path_name: r.try_get(5)?,
        records_status: r.try_get(6)?,
        check_attempts: r.try_get(7)?,
        next_check_at: r.try_get(8)?,
        last_checked_at: r.try_get(9)?,
        verified_at: r.try_get(10)?,
        created_at: r.try_get(11)?,
        updated_at: r.try_get(12)?,
    })
}

fn key_from_row(r: &AnyRow) -> StoreResult<DkimKeyRecord> {
    Ok(DkimKeyRecord {
        id: r.try_get(0)?,
        domain_id: r.try_get(1)?,
        selector: r.try_get(2)?,
        algorithm: r.try_get(3)?,
        private_key: r.try_get(4)?,
        public_key: r.try_get(5)?,
        state: stored(KeyState::parse, &r.try_get::<String, _>(6)?)?,
        created_at: r.try_get(7)?,
        activated_at: r.try_get(8)?,
        retired_at: r.try_get(9)?,
    })
}

async fn insert_key(tx: &mut dyn Tx, k: &DkimKeyRecord) -> StoreResult<()> {
    tx.execute(
        &format!(
            "INSERT INTO dkim_keys ({KEY_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
        ),
        &[
            Val::Text(&k.id),
            Val::Text(&k.domain_id),
            Val::Text(&k.selector),
            Val::Text(&k.algorithm),
            Val::Text(&k.private_key),
            Val::Text(&k.public_key),
            Val::Text(k.state.as_str()),
            Val::Int(k.created_at),
            Val::OptInt(k.activated_at),
            Val::OptInt(k.retired_at),
        ],
    )
    .await?;
    Ok(())
}

impl Store {
    /// Adds a domain with its first key(s). A name the project already has is `Conflict`.
    pub async fn insert_domain(&self, d: &DomainRecord, keys: &[DkimKeyRecord]) -> StoreResult<()> {
        let (d, keys) = (d.clone(), keys.to_vec());
        self.writer
            .run(move |tx, _| {
                Box::pin(async move {
                    tx.execute(
                        &format!(
                            "INSERT INTO domains ({DOMAIN_COLUMNS}) \
                             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
                        ),
                        &[
                            Val::Text(&d.id),
                            Val::Text(&d.project_id),
                            Val::Text(&d.name),
                            Val::Text(d.status.as_str()),
                            Val::Text(&d.dkim_mode),
                            Val::OptText(d.return_path_name.as_deref()),
                            Val::Text(&d.records_status),
                            Val::Int(d.check_attempts),
                            Val::OptInt(d.next_check_at),
                            Val::OptInt(d.last_checked_at),
                            Val::OptInt(d.verified_at),
                            Val::Int(d.created_at),
                            Val::Int(d.updated_at),
                        ],
                    )
                    .await?;
                    for k in &keys {
                        insert_key(tx, k).await?;
                    }
                    Ok(())
                })
            })
            .await
    }

    async fn keys_of(&self, domain_id: &str) -> StoreResult<Vec<DkimKeyRecord>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {KEY_COLUMNS} FROM dkim_keys WHERE domain_id = $1 ORDER BY id"
        )))
        .bind(domain_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(key_from_row).collect()
    }

    /// One of the project's domains with its keys, oldest key first.
    pub async fn get_domain(
        &self,
        project_id: &str,
        id: &str,
    ) -> StoreResult<(DomainRecord, Vec<DkimKeyRecord>)> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {DOMAIN_COLUMNS} FROM domains WHERE project_id = $1 AND id = $2"
        )))
        .bind(project_id)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound)?;
        let d = domain_from_row(&row)?;
        let keys = self.keys_of(&d.id).await?;
        Ok((d, keys))
    }

    /// The project's domain of that name (lower-case), with its keys.
    pub async fn find_domain(
        &self,
        project_id: &str,
        name: &str,
    ) -> StoreResult<Option<(DomainRecord, Vec<DkimKeyRecord>)>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {DOMAIN_COLUMNS} FROM domains WHERE project_id = $1 AND name = $2"
        )))
        .bind(project_id)
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some(r) => {
                let d = domain_from_row(&r)?;
                let keys = self.keys_of(&d.id).await?;
                Ok(Some((d, keys)))
            }
            None => Ok(None),
        }
    }

    pub async fn list_domains(&self, project_id: &str) -> StoreResult<Vec<DomainRecord>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {DOMAIN_COLUMNS} FROM domains WHERE project_id = $1 ORDER BY id"
        )))
        .bind(project_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(domain_from_row).collect()
    }

    /// Saves a domain's mutable fields and, if given, the event its check produced (with its
    /// webhook deliveries), in one transaction.
    pub async fn update_domain(
        &self,
        d: &DomainRecord,
        event: Option<&NewEvent>,
    ) -> StoreResult<()> {
        let (d, event) = (d.clone(), event.cloned());
        self.writer
            .run(move |tx, outbox| {
                Box::pin(async move {
                    let done = tx
                        .execute(
                            "UPDATE domains SET status = $1, dkim_mode = $2, records_status = $3, \
                             check_attempts = $4, next_check_at = $5, last_checked_at = $6, \
                             verified_at = $7, updated_at = $8 WHERE id = $9 AND project_id = $10",
                            &[
                                Val::Text(d.status.as_str()),
                                Val::Text(&d.dkim_mode),
                                Val::Text(&d.records_status),
                                Val::Int(d.check_attempts),
                                Val::OptInt(d.next_check_at),
                                Val::OptInt(d.last_checked_at),
                                Val::OptInt(d.verified_at),
                                Val::Int(d.updated_at),
                                Val::Text(&d.id),
                                Val::Text(&d.project_id),
                            ],
                        )
                        .await?;
                    if done == 0 {
                        return Err(StoreError::NotFound);
                    }
                    if let Some(e) = &event {
                        let row = EventRow {
                            project_id: &d.project_id,
                            email_id: None,
                            stream: None,
                            event: e,
                        };
                        insert_event(tx, outbox, row, false).await?;
                    }
                    Ok(())
                })
            })
            .await
    }

    pub async fn delete_domain(&self, project_id: &str, id: &str) -> StoreResult<()> {
        let (project_id, id) = (project_id.to_owned(), id.to_owned());
        self.writer
            .run(move |tx, _| {
                Box::pin(async move {
                    let done = tx
                        .execute(
                            "DELETE FROM domains WHERE project_id = $1 AND id = $2",
                            &[Val::Text(&project_id), Val::Text(&id)],
                        )
                        .await?;
                    if done == 0 {
                        return Err(StoreError::NotFound);
                    }
                    tx.execute(
                        "DELETE FROM dkim_keys WHERE domain_id = $1",
                        &[Val::Text(&id)],
                    )
                    .await?;
                    Ok(())
                })
            })
            .await
    }

    /// Adds a key (a rotation's pending key).
    pub async fn insert_dkim_key(&self, k: &DkimKeyRecord) -> StoreResult<()> {
        let k = k.clone();
        self.writer
            .run(move |tx, _| Box::pin(async move { insert_key(tx, &k).await }))
            .await
    }

    /// Makes a pending key the signing key and retires the one it replaces.
    pub async fn activate_dkim_key(
        &self,
        domain_id: &str,
        key_id: &str,
        now: i64,
    ) -> StoreResult<()> {
        let (domain_id, key_id) = (domain_id.to_owned(), key_id.to_owned());
        self.writer
            .run(move |tx, _| {
                Box::pin(async move {
                    tx.execute(
                        "UPDATE dkim_keys SET state = 'retired', retired_at = $1 \
                         WHERE domain_id = $2 AND state = 'active' AND id <> $3",
                        &[Val::Int(now), Val::Text(&domain_id), Val::Text(&key_id)],
                    )
                    .await?;
                    tx.execute(
                        "UPDATE dkim_keys SET state = 'active', activated_at = $1 \
                         WHERE id = $2 AND domain_id = $3",
                        &[Val::Int(now), Val::Text(&key_id), Val::Text(&domain_id)],
                    )
                    .await?;
                    Ok(())
                })
            })
            .await
    }

    /// Domains whose DNS check is due: `(project_id, domain_id)`.
    pub async fn due_domain_checks(
        &self,
        now: i64,
        limit: i64,
    ) -> StoreResult<Vec<(String, String)>> {
        let rows = sqlx::query(
            "SELECT project_id, id FROM domains WHERE next_check_at IS NOT NULL \
             AND next_check_at <= $1 ORDER BY next_check_at LIMIT $2",
        )
        .bind(now)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }
}
