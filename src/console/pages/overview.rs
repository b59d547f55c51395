//! The overview: what a project's mail did over a period, as a chart and as figures, its
//! queue and webhook backlog now, and the domains that need attention.

use askama::Template;
use axum::extract::{Path, Query, State};
use serde::Deserialize;

use crate::api::AppState;
use crate::console::chart::{Series, lines};
use crate::console::session::{Chrome, Session};
use crate::console::{PageResult, render};
use crate::domain::states::DomainStatus;
use crate::store::{METRICS, StatsQuery, bounced_of, count_of};

#[derive(Debug, Deserialize)]
pub struct OverviewQuery {
    period: Option<String>,
}

/// One figure of the period: its name and value, or why it is not known.
pub struct Figure {
    pub name: &'static str,
    pub value: String,
    pub note: &'static str,
}

#[derive(Template)]
#[template(path = "overview.html")]
struct OverviewPage {
    chrome: Chrome,
    period: &'static str,
    periods: Vec<&'static str>,
    figures: Vec<Figure>,
    chart: String,
    /// Per bucket: its label, then sent, delivered, bounced, complained.
    table: Vec<(String, [i64; 4])>,
    waiting: i64,
    oldest_due: String,
    webhook_backlog: i64,
    attention: Vec<(String, String, String)>,
}

/// A share as people read it: `1.25 %`, or `–` with nothing to divide by.
fn rate(part: i64, whole: i64) -> String {
    if whole == 0 {
        "–".to_owned()
    } else {
        format!("{:.2} %", part as f64 * 100.0 / whole as f64)
    }
}

/// `GET /projects/{project}`.
pub async fn page(
    State(state): State<AppState>,
    session: Session,
    Path(project): Path<String>,
    Query(q): Query<OverviewQuery>,
) -> PageResult {
    let chrome = session.project(&state, &project, "overview").await?;
    let now = state.clock.now_ms();
    let period = super::Period::named(q.period.as_deref(), now);
    let rows = state
        .store
        .stats(
            &project,
            &StatsQuery {
                from_hour: period.from_hour,
                to_hour: period.to_hour,
                group_by: Vec::new(),
                tag: None,
                stream: None,
                domain: None,
                recipient_domain: None,
            },
        )
        .await?;
    let buckets = period.buckets();
    let mut counts = vec![[0i64; METRICS.len()]; buckets];
    for r in &rows {
        if let Some(b) = period.bucket_of(r.hour).and_then(|i| counts.get_mut(i)) {
            for (sum, c) in b.iter_mut().zip(r.counts) {
                *sum += c;
            }
        }
    }
    let label = |i: usize| period.label(i);
    let labels: Vec<String> = (0..buckets).map(label).collect();
    let bounced = bounced_of;
    let series_of = |f: &dyn Fn(&[i64; METRICS.len()]) -> i64| counts.iter().map(f).collect();
    let chart = lines(
        "Sent, bounced and complained per period",
        &labels,
        &[
            Series {
                name: "sent",
                values: series_of(&|c| count_of(c, "sent")),
            },
            Series {
                name: "bounced",
                values: series_of(&|c| bounced(c)),
            },
            Series {
                name: "complained",
                values: series_of(&|c| count_of(c, "complained")),
            },
        ],
    );
    let mut total = [0i64; METRICS.len()];
    for b in &counts {
        for (t, c) in total.iter_mut().zip(b) {
            *t += c;
        }
    }
    // A relay that sends no delivery reports never tells Herald an email was delivered: with
    // mail sent and no delivery reported, "delivered" is not known, and not 0 %.
    let delivered_known = crate::api::stats::delivery_reported(&total);
    let figures = vec![
        Figure {
            name: "Accepted",
            value: count_of(&total, "accepted").to_string(),
            note: "",
        },
        Figure {
            name: "Sent",
            value: count_of(&total, "sent").to_string(),
            note: "handed to the relay",
        },
        Figure {
            name: "Delivered",
            value: if delivered_known {
                count_of(&total, "delivered").to_string()
            } else {
                "unknown".to_owned()
            },
            note: if delivered_known {
                "reported by delivery reports"
            } else {
                "the relay sends no delivery reports"
            },
        },
        Figure {
            name: "Bounced",
            value: bounced(&total).to_string(),
            note: "",
        },
        Figure {
            name: "Complained",
            value: count_of(&total, "complained").to_string(),
            note: "",
        },
        Figure {
            name: "Bounce rate",
            value: rate(bounced(&total), count_of(&total, "sent")),
            note: "of sent",
        },
        Figure {
            name: "Complaint rate",
            value: rate(count_of(&total, "complained"), count_of(&total, "sent")),
            note: "of sent",
        },
    ];
    let table = counts
        .iter()
        .enumerate()
        .map(|(i, c)| {
            (
                label(i),
                [
                    count_of(c, "sent"),
                    count_of(c, "delivered"),
                    bounced(c),
                    count_of(c, "complained"),
                ],
            )
        })
        .collect();
    let queue = state.store.project_queue(&project, now).await?;
    let attention = state
        .store
        .list_domains(&project)
        .await?
        .into_iter()
        .filter(|d| d.status != DomainStatus::Verified)
        .map(|d| (d.id, d.name, d.status.to_string()))
        .collect();
    Ok(render(&OverviewPage {
        chrome,
        period: period.name,
        periods: super::Period::names(),
        figures,
        chart,
        table,
        waiting: queue.waiting,
        oldest_due: queue
            .oldest_due_ms
            .map_or_else(|| "nothing due".to_owned(), |ms| format!("{} s", ms / 1000)),
        webhook_backlog: queue.webhook_backlog,
        attention,
    }))
}
