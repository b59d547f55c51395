//! The console's pages, one module per section.

pub mod audit;
pub mod bounces;
pub mod domains;
pub mod emails;
pub mod keys;
pub mod overview;
pub mod projects;
pub mod suppressions;
pub mod webhooks;

use askama::Template;
use axum::extract::State;

use super::session::Session;
use super::{PageResult, redirect, render};
use crate::api::AppState;

#[derive(Template)]
#[template(path = "no_projects.html")]
struct NoProjects<'a> {
    operator: &'a str,
    is_admin: bool,
}

/// `GET /`: the first project's overview (by name), or a page that says there is none yet.
pub async fn home(State(state): State<AppState>, session: Session) -> PageResult {
    let projects = session.projects(&state).await?;
    match projects.first() {
        Some(p) => Ok(redirect(&format!("/projects/{}", p.id))),
        None => Ok(render(&NoProjects {
            operator: session.email(),
            is_admin: session.is_admin(),
        })),
    }
}

#[derive(Debug, serde::Deserialize)]
pub struct SwitchQuery {
    project: String,
}

/// `GET /switch?project=…`: the project switcher's form (it works without JavaScript).
pub async fn switch(
    State(state): State<AppState>,
    session: Session,
    axum::extract::Query(q): axum::extract::Query<SwitchQuery>,
) -> PageResult {
    session.project(&state, &q.project, "overview").await?;
    Ok(redirect(&format!(
        "/projects/{}",
        super::query_escape(&q.project)
    )))
}

const HOUR_MS: i64 = 3_600_000;

/// A period the charts show: its name, its hours `[from, to)` and its buckets.
pub struct Period {
    pub name: &'static str,
    pub from_hour: i64,
    pub to_hour: i64,
    /// Hours per bucket.
    pub per_bucket: i64,
}

impl Period {
    /// The periods offered: name, hours, hours per bucket.
    pub const CHOICES: [(&'static str, i64, i64); 3] =
        [("24h", 24, 1), ("7d", 24 * 7, 24), ("30d", 24 * 30, 24)];

    /// The named period (else the first) ending with the hour now is in.
    pub fn named(name: Option<&str>, now_ms: i64) -> Self {
        let (name, hours, per_bucket) = Self::CHOICES
            .iter()
            .copied()
            .find(|(n, _, _)| Some(*n) == name)
            .unwrap_or(Self::CHOICES[0]);
        let to_hour = (now_ms / HOUR_MS + 1) * HOUR_MS;
        Self {
            name,
            from_hour: to_hour - hours * HOUR_MS,
            to_hour,
            per_bucket,
        }
    }

    pub fn buckets(&self) -> usize {
        usize::try_from((self.to_hour - self.from_hour) / (self.per_bucket * HOUR_MS)).unwrap_or(1)
    }

    /// The bucket an hour falls in.
    pub fn bucket_of(&self, hour: i64) -> Option<usize> {
        usize::try_from((hour - self.from_hour) / (self.per_bucket * HOUR_MS)).ok()
    }

    /// A bucket's label: its hour, or its day.
    pub fn label(&self, i: usize) -> String {
        let t = self.from_hour + i64::try_from(i).unwrap_or(0) * self.per_bucket * HOUR_MS;
        let d = chrono::DateTime::from_timestamp_millis(t).unwrap_or_default();
        if self.per_bucket == 1 {
            d.format("%H:00").to_string()
        } else {
            d.format("%b %d").to_string()
        }
    }

    pub fn names() -> Vec<&'static str> {
        Self::CHOICES.iter().map(|c| c.0).collect()
    }
}
