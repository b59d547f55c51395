//! Operators of the console, what each may do in which project, their sessions, and the audit
//! log of the changes they make.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::write::{Owned, Val};
use super::{Store, StoreError, StoreResult, stored};
use crate::domain::states::{OperatorRole, ProjectRole};

#[derive(Debug, Clone)]
pub struct OperatorRecord {
    pub id: String,
    pub email: String,
    /// Argon2id, as a PHC string.
    pub password_hash: String,
    pub role: OperatorRole,
    pub created_at: i64,
}

/// A signed-in operator as one request sees it: what it is now (its role and grants read with
/// the session, so a lowered role counts at once) and the session's CSRF token.
#[derive(Debug, Clone)]
pub struct SessionRecord {
    pub operator: OperatorRecord,
    /// Project id and role, for a member; empty for an admin (who may do everything).
    pub grants: Vec<(String, ProjectRole)>,
    pub csrf_token: String,
    pub expires_at: i64,
}

/// One change made from the console.
#[derive(Debug, Clone)]
pub struct AuditEntry {
    pub id: String,
    pub at: i64,
    pub operator_id: String,
    pub operator_email: String,
    pub project_id: Option<String>,
    pub action: String,
    pub target: String,
    pub detail: String,
}

const OPERATOR_COLUMNS: &str = "o.id, o.email, o.password_hash, o.role, o.created_at";

fn operator_from_row(r: &AnyRow) -> StoreResult<OperatorRecord> {
    Ok(OperatorRecord {
        id: r.try_get(0)?,
        email: r.try_get(1)?,
        password_hash: r.try_get(2)?,
        role: stored(OperatorRole::parse, &r.try_get::<String, _>(3)?)?,
        created_at: r.try_get(4)?,
    })
}

impl Store {
    /// Adds an operator; an address already taken is `Conflict`.
    pub async fn create_operator(&self, o: &OperatorRecord) -> StoreResult<()> {
        self.execute(
            "INSERT INTO operators (id, email, password_hash, role, created_at) \
             VALUES ($1, $2, $3, $4, $5)",
            vec![
                o.id.as_str().into(),
                o.email.as_str().into(),
                o.password_hash.as_str().into(),
                o.role.as_str().into(),
                o.created_at.into(),
            ],
        )
        .await?;
        Ok(())
    }

    /// The operator with this address (compared as stored: addresses are kept lowercase).
    pub async fn find_operator(&self, email: &str) -> StoreResult<Option<OperatorRecord>> {
        let sql = format!("SELECT {OPERATOR_COLUMNS} FROM operators o WHERE o.email = $1");
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(email)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(operator_from_row)
            .transpose()
    }

    /// Every operator, with its grants, by address.
    pub async fn list_operators(
        &self,
    ) -> StoreResult<Vec<(OperatorRecord, Vec<(String, ProjectRole)>)>> {
        let sql = format!("SELECT {OPERATOR_COLUMNS} FROM operators o ORDER BY o.email");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(&self.pool)
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let o = operator_from_row(r)?;
            let grants = self.operator_grants(&o.id).await?;
            out.push((o, grants));
        }
        Ok(out)
    }

    async fn operator_grants(&self, operator_id: &str) -> StoreResult<Vec<(String, ProjectRole)>> {
        let rows = sqlx::query(
            "SELECT project_id, role FROM operator_grants WHERE operator_id = $1 ORDER BY project_id",
        )
        .bind(operator_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get(0)?,
                    stored(ProjectRole::parse, &r.try_get::<String, _>(1)?)?,
                ))
            })
            .collect()
    }

    /// Changes an operator's role; lowered to member, its sessions end.
    pub async fn set_operator_role(&self, email: &str, role: OperatorRole) -> StoreResult<()> {
        let (email, role) = (email.to_owned(), role.as_str());
        self.writer
            .run(move |tx, _| {
                Box::pin(async move {
                    let done = tx
                        .execute(
                            "UPDATE operators SET role = $1 WHERE email = $2",
                            &[Val::Text(role), Val::Text(&email)],
                        )
                        .await?;
                    if done == 0 {
                        return Err(StoreError::NotFound);
                    }
                    if role != OperatorRole::Admin.as_str() {
                        end_sessions(tx, &email).await?;
                    }
                    Ok(())
                })
            })
            .await
    }

    /// Sets a new password hash; every session of the operator ends.
    pub async fn set_operator_password(&self, email: &str, password_hash: &str) -> StoreResult<()> {
        let (email, hash) = (email.to_owned(), password_hash.to_owned());
        self.writer
            .run(move |tx, _| {
                Box::pin(async move {
                    let done = tx
                        .execute(
                            "UPDATE operators SET password_hash = $1 WHERE email = $2",
                            &[Val::Text(&hash), Val::Text(&email)],
                        )
                        .await?;
                    if done == 0 {
                        return Err(StoreError::NotFound);
                    }
                    end_sessions(tx, &email).await
                })
            })
            .await
    }

    /// Grants a member a role in a project (replacing the one it had); `None` takes the
    /// project away. Lowered or taken away, its sessions end.
    pub async fn grant_operator(
        &self,
        email: &str,
        project_id: &str,
        role: Option<ProjectRole>,
    ) -> StoreResult<()> {
        let (email, project_id) = (email.to_owned(), project_id.to_owned());
        self.writer
            .run(move |tx, _| {
                Box::pin(async move {
                    let rows = tx
                        .query(
                            "SELECT id FROM operators WHERE email = $1",
                            &[Val::Text(&email)],
                        )
                        .await?;
                    let id: String = rows.first().ok_or(StoreError::NotFound)?.get(0)?;
                    match role {
                        Some(role) => {
                            tx.execute(
                                "INSERT INTO operator_grants (operator_id, project_id, role) \
                                 VALUES ($1, $2, $3) \
                                 ON CONFLICT (operator_id, project_id) DO UPDATE SET role = excluded.role",
                                &[Val::Text(&id), Val::Text(&project_id), Val::Text(role.as_str())],
                            )
                            .await?;
                            if role == ProjectRole::Viewer {
                                end_sessions(tx, &email).await?;
                            }
                        }
                        None => {
                            tx.execute(
                                "DELETE FROM operator_grants WHERE operator_id = $1 AND project_id = $2",
                                &[Val::Text(&id), Val::Text(&project_id)],
                            )
                            .await?;
                            end_sessions(tx, &email).await?;
                        }
                    }
                    Ok(())
                })
            })
            .await
    }

    /// Removes an operator, its grants and its sessions.
    pub async fn delete_operator(&self, email: &str) -> StoreResult<()> {
        let email = email.to_owned();
        self.writer
            .run(move |tx, _| {
                Box::pin(async move {
                    end_sessions(tx, &email).await?;
                    tx.execute(
                        "DELETE FROM operator_grants WHERE operator_id IN \
                         (SELECT id FROM operators WHERE email = $1)",
                        &[Val::Text(&email)],
                    )
                    .await?;
                    let done = tx
                        .execute(
                            "DELETE FROM operators WHERE email = $1",
                            &[Val::Text(&email)],
                        )
                        .await?;
                    if done == 0 {
                        return Err(StoreError::NotFound);
                    }
                    Ok(())
                })
            })
            .await
    }

    /// Opens a session (and drops the operator's expired ones).
    pub async fn create_session(
        &self,
        token_hash: Vec<u8>,
        operator_id: &str,
        csrf_token: &str,
        now_ms: i64,
        expires_at: i64,
    ) -> StoreResult<()> {
        let (operator_id, csrf) = (operator_id.to_owned(), csrf_token.to_owned());
        self.writer
            .run(move |tx, _| {
                Box::pin(async move {
                    tx.execute(
                        "DELETE FROM console_sessions WHERE operator_id = $1 AND expires_at <= $2",
                        &[Val::Text(&operator_id), Val::Int(now_ms)],
                    )
                    .await?;
                    tx.execute(
                        "INSERT INTO console_sessions \
                         (token_hash, operator_id, csrf_token, created_at, expires_at) \
                         VALUES ($1, $2, $3, $4, $5)",
                        &[
                            Val::Blob(&token_hash),
                            Val::Text(&operator_id),
                            Val::Text(&csrf),
                            Val::Int(now_ms),
                            Val::Int(expires_at),
                        ],
                    )
                    .await?;
                    Ok(())
                })
            })
            .await
    }

    /// The live session with this token hash, with its operator as it is now.
    pub async fn find_session(
        &self,
        token_hash: &[u8],
        now_ms: i64,
    ) -> StoreResult<Option<SessionRecord>> {
        let sql = format!(
            "SELECT {OPERATOR_COLUMNS}, s.csrf_token, s.expires_at \
             FROM console_sessions s JOIN operators o ON o.id = s.operator_id \
             WHERE s.token_hash = $1 AND s.expires_at > $2"
        );
        let Some(r) = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(token_hash.to_vec())
            .bind(now_ms)
            .fetch_optional(&self.pool)
            .await?
        else {
            return Ok(None);
        };
        let operator = operator_from_row(&r)?;
        let grants = if operator.role == OperatorRole::Admin {
            Vec::new()
        } else {
            self.operator_grants(&operator.id).await?
        };
        Ok(Some(SessionRecord {
            operator,
            grants,
            csrf_token: r.try_get(5)?,
            expires_at: r.try_get(6)?,
        }))
    }

    /// Ends one session (signing out).
    pub async fn delete_session(&self, token_hash: Vec<u8>) -> StoreResult<()> {
        self.execute(
            "DELETE FROM console_sessions WHERE token_hash = $1",
            vec![token_hash.into()],
        )
        .await?;
        Ok(())
    }

    /// Records a change made from the console.
    pub async fn record_audit(&self, e: &AuditEntry) -> StoreResult<()> {
        self.execute(
            "INSERT INTO audit_log \
             (id, at, operator_id, operator_email, project_id, action, target, detail) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            vec![
                e.id.as_str().into(),
                e.at.into(),
                e.operator_id.as_str().into(),
                e.operator_email.as_str().into(),
                Owned::from(e.project_id.clone()),
                e.action.as_str().into(),
                e.target.as_str().into(),
                e.detail.as_str().into(),
            ],
        )
        .await?;
        Ok(())
    }

    /// The newest changes first, `limit` of them from before the id `before`: in one project,
    /// or (`None`) outside any project.
    pub async fn list_audit(
        &self,
        project_id: Option<&str>,
        before: Option<&str>,
        limit: i64,
    ) -> StoreResult<Vec<AuditEntry>> {
        let scope = if project_id.is_some() {
            "project_id = $1"
        } else {
            "project_id IS NULL AND $1 IS NULL"
        };
        let sql = format!(
            "SELECT id, at, operator_id, operator_email, project_id, action, target, detail \
             FROM audit_log WHERE {scope} AND ($2 IS NULL OR id < $2) ORDER BY id DESC LIMIT $3"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(project_id.map(str::to_owned))
            .bind(before.map(str::to_owned))
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(AuditEntry {
                    id: r.try_get(0)?,
                    at: r.try_get(1)?,
                    operator_id: r.try_get(2)?,
                    operator_email: r.try_get(3)?,
                    project_id: r.try_get(4)?,
                    action: r.try_get(5)?,
                    target: r.try_get(6)?,
                    detail: r.try_get(7)?,
                })
            })
            .collect()
    }
}

/// Ends every session of the operator with this address.
async fn end_sessions(tx: &mut dyn super::write::Tx, email: &str) -> StoreResult<()> {
    tx.execute(
        "DELETE FROM console_sessions WHERE operator_id IN \
         (SELECT id FROM operators WHERE email = $1)",
        &[Val::Text(email)],
    )
    .await?;
    Ok(())
}
