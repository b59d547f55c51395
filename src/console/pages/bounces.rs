//! Bounces over a period: by day or hour and type (a chart), by type and reason, and by
//! recipient domain with its bounce rate (tables); and the inbound messages Herald could not
//! read or match, each to download, with "read them again" for admins.

use askama::Template;
use axum::extract::{Form, Path, Query, State};
use serde::Deserialize;

use crate::api::AppState;
use crate::bounces::inbound::InboundStatus;
use crate::console::chart::{Series, lines};
use crate::console::session::{Chrome, CsrfForm, Session};
use crate::console::{PageError, PageResult, query_escape, redirect, render, when};
use crate::store::{StatsDimension, StatsQuery, bounced_of, count_of};

pub struct DomainRow {
    pub domain: String,
    pub sent: i64,
    pub bounced: i64,
    pub rate: String,
}

pub struct UnreadRow {
    pub id: String,
    pub at: String,
    pub source: String,
    pub size: i64,
    pub status: String,
    pub why: String,
}

#[derive(Template)]
#[template(path = "bounces.html")]
struct BouncesPage {
    chrome: Chrome,
    period: &'static str,
    periods: Vec<&'static str>,
    chart: String,
    by_reason: Vec<(String, String, i64)>,
    by_domain: Vec<DomainRow>,
    unread: Vec<UnreadRow>,
    notice: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct BouncesQuery {
    period: Option<String>,
    notice: Option<String>,
}

/// `GET /projects/{project}/bounces`.
pub async fn page(
    State(state): State<AppState>,
    session: Session,
    Path(project): Path<String>,
    Query(q): Query<BouncesQuery>,
) -> PageResult {
    let chrome = session.project(&state, &project, "bounces").await?;
    let period = super::Period::named(q.period.as_deref(), state.clock.now_ms());
    let query = |group_by: Vec<StatsDimension>| StatsQuery {
        from_hour: period.from_hour,
        to_hour: period.to_hour,
        group_by,
        tag: None,
        stream: None,
        domain: None,
        recipient_domain: None,
    };
    let kinds = [
        "bounced_permanent",
        "bounced_transient",
        "bounced_undetermined",
    ];
    let mut series = vec![vec![0i64; period.buckets()]; 3];
    for r in state.store.stats(&project, &query(Vec::new())).await? {
        if let Some(i) = period.bucket_of(r.hour) {
            for (s, k) in series.iter_mut().zip(kinds) {
                if let Some(v) = s.get_mut(i) {
                    *v += count_of(&r.counts, k);
                }
            }
        }
    }
    let labels: Vec<String> = (0..period.buckets()).map(|i| period.label(i)).collect();
    let [permanent, transient, undetermined]: [Vec<i64>; 3] = series.try_into().unwrap_or_default();
    let chart = lines(
        "Bounces per period, by type",
        &labels,
        &[
            Series {
                name: "permanent",
                values: permanent,
            },
            Series {
                name: "transient",
                values: transient,
            },
            Series {
                name: "undetermined",
                values: undetermined,
            },
        ],
    );
    let by_reason = state
        .store
        .bounce_breakdown(&project, period.from_hour, period.to_hour, None, None)
        .await?
        .into_iter()
        .map(|b| (b.bounce_type, b.sub_type, b.count))
        .collect();
    let mut domains: std::collections::BTreeMap<String, (i64, i64)> = Default::default();
    for r in state
        .store
        .stats(&project, &query(vec![StatsDimension::RecipientDomain]))
        .await?
    {
        let e = domains
            .entry(r.group.first().cloned().unwrap_or_default())
            .or_default();
        e.0 += count_of(&r.counts, "sent");
        e.1 += bounced_of(&r.counts);
    }
    let mut by_domain: Vec<DomainRow> = domains
        .into_iter()
        .filter(|(_, (_, b))| *b > 0)
        .map(|(domain, (sent, bounced))| DomainRow {
            rate: if sent > 0 {
                format!("{:.2} %", bounced as f64 * 100.0 / sent as f64)
            } else {
                "–".to_owned()
            },
            domain,
            sent,
            bounced,
        })
        .collect();
    by_domain.sort_by(|a, b| b.bounced.cmp(&a.bounced).then(a.domain.cmp(&b.domain)));
    by_domain.truncate(50);
    let unread = state
        .store
        .unread_inbound(&project, session.is_admin(), 50)
        .await?
        .into_iter()
        .map(|m| UnreadRow {
            id: m.id,
            at: when(m.received_at),
            source: m.source,
            size: m.size,
            status: m.status,
            why: m.details.unwrap_or_default(),
        })
        .collect();
    Ok(render(&BouncesPage {
        chrome,
        period: period.name,
        periods: super::Period::names(),
        chart,
        by_reason,
        by_domain,
        unread,
        notice: q.notice,
    }))
}

/// `POST /projects/{project}/bounces/reprocess`: reads every kept message Herald could not use
/// again with today's reader (admins: the messages are not one project's). What a message
/// already did is not done twice.
pub async fn reprocess(
    State(state): State<AppState>,
    session: Session,
    Path(project): Path<String>,
    Form(form): Form<CsrfForm>,
) -> PageResult {
    session
        .change(&state, &project, &form.csrf, "bounces")
        .await?;
    if !session.is_admin() {
        return Err(PageError::Forbidden(
            "Reading the kept messages again is for admins: they are not one project's.",
        ));
    }
    let statuses = InboundStatus::selection("all").unwrap_or_default();
    let s = state
        .inbound
        .reprocess(&statuses, 0, state.clock.now_ms())
        .await?;
    let notice = format!(
        "Read {} again: {} matched, {} unmatched, {} not reports, {} unreadable.",
        s.examined, s.processed, s.unmatched, s.unknown, s.parse_error
    );
    session
        .audit(&state, None, "inbound.reprocess", "all", &notice)
        .await;
    Ok(redirect(&format!(
        "/projects/{project}/bounces?notice={}",
        query_escape(&notice)
    )))
}
