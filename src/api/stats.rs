//! `GET /v1/stats` and `GET /v1/stats/bounces`: delivery figures from the hourly rollups.
//!
//! Counts are per recipient. The rollups are hourly in UTC, so a period in another time zone
//! is the set of hours whose start falls in it (exact for every zone with whole-hour offsets;
//! in a half-hour zone each hour counts in the period its start falls in).

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;

use crate::store::{METRICS, StatsDimension, StatsQuery, StatsRow};

use super::AppState;
use super::auth::FullAccess;
use super::error::{ApiError, ApiResult};
use super::responses::{
    BounceCountResponse, BounceStatsResponse, StatsMetrics, StatsPeriod, StatsResponse,
};

const HOUR_MS: i64 = 3_600_000;
/// The most periods one answer may hold (a year of days, three months of hours).
const MAX_PERIODS: usize = 2_200;
/// Metrics other gateways count that Herald has no way to know (it tracks no opens or
/// clicks): refused by name, with why, rather than answered as 0.
const TRACKING_METRICS: [&str; 4] = ["opened", "unique_opened", "clicked", "unique_clicked"];
const RATES: [&str; 3] = ["delivery_rate", "bounce_rate", "complaint_rate"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Granularity {
    Hour,
    Day,
    Week,
    Month,
}

impl Granularity {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "hour" => Self::Hour,
            "day" => Self::Day,
            "week" => Self::Week,
            "month" => Self::Month,
            _ => return None,
        })
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Hour => "hour",
            Self::Day => "day",
            Self::Week => "week",
            Self::Month => "month",
        }
    }

    /// The local date that starts the period holding `date`.
    fn period_date(self, date: NaiveDate) -> NaiveDate {
        match self {
            Self::Hour | Self::Day => date,
            Self::Week => date - Duration::days(i64::from(date.weekday().num_days_from_monday())),
            Self::Month => date.with_day(1).unwrap_or(date),
        }
    }

    /// The period label of the hour starting at `hour_ms`.
    fn label(self, tz: Tz, hour_ms: i64) -> String {
        let local = tz.from_utc_datetime(&utc(hour_ms).naive_utc());
        match self {
            Self::Hour => local.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            Self::Day | Self::Week => self.period_date(local.date_naive()).to_string(),
            Self::Month => format!("{:04}-{:02}", local.year(), local.month()),
        }
    }

    /// The first instant of the period holding `t` (for hours: the UTC hour).
    fn floor(self, tz: Tz, t: DateTime<Utc>) -> DateTime<Utc> {
        if self == Self::Hour {
            return utc(t.timestamp_millis().div_euclid(HOUR_MS) * HOUR_MS);
        }
        let date = self.period_date(tz.from_utc_datetime(&t.naive_utc()).date_naive());
        local_midnight(tz, date)
    }

    /// The first instant after the period that starts at `start`.
    fn next(self, tz: Tz, start: DateTime<Utc>) -> DateTime<Utc> {
        let date = tz.from_utc_datetime(&start.naive_utc()).date_naive();
        let next = match self {
            Self::Hour => return start + Duration::hours(1),
            Self::Day => date + Duration::days(1),
            Self::Week => date + Duration::days(7),
            Self::Month => date
                .checked_add_months(chrono::Months::new(1))
                .unwrap_or(date),
        };
        local_midnight(tz, next)
    }
}

fn utc(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

/// Local midnight of `date` in `tz` (the first valid instant that day, if DST skips it).
fn local_midnight(tz: Tz, date: NaiveDate) -> DateTime<Utc> {
    let mut t = date.and_hms_opt(0, 0, 0).unwrap_or_default();
    for _ in 0..4 {
        if let Some(local) = tz.from_local_datetime(&t).earliest() {
            return local.with_timezone(&Utc);
        }
        t += Duration::minutes(30);
    }
    Utc.from_utc_datetime(&t)
}

/// The first whole UTC hour at or after `t`.
fn ceil_hour(t: DateTime<Utc>) -> i64 {
    let ms = t.timestamp_millis();
    ms.div_euclid(HOUR_MS) * HOUR_MS
        + if ms.rem_euclid(HOUR_MS) == 0 {
            0
        } else {
            HOUR_MS
        }
}

/// The parts of the query both endpoints share.
struct Window {
    start: DateTime<Utc>,
    end: DateTime<Utc>,
}

fn bad(detail: impl Into<String>) -> ApiError {
    ApiError::bad_request("invalid_query", detail)
}

fn parse_time(name: &str, v: &str) -> ApiResult<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(v)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| {
            bad(format!(
                "{name}: '{v}' is not an RFC 3339 time with an offset"
            ))
        })
}

/// `start`/`end` (default: the last 7 days), checked.
fn window(start: Option<&str>, end: Option<&str>, now_ms: i64) -> ApiResult<Window> {
    let end = match end {
        Some(v) => parse_time("end", v)?,
        None => utc(now_ms),
    };
    let start = match start {
        Some(v) => parse_time("start", v)?,
        None => end - Duration::days(7),
    };
    if start >= end {
        return Err(bad("start must be before end"));
    }
    if end - start > Duration::days(3660) {
        return Err(bad("the window may span at most ten years"));
    }
    Ok(Window { start, end })
}

fn split_list(v: &str) -> impl Iterator<Item = &str> {
    v.split(',').map(str::trim).filter(|s| !s.is_empty())
}

/// Every metric name an answer can hold, in answer order.
fn all_metric_names() -> Vec<&'static str> {
    let mut names = vec![
        "accepted",
        "sent",
        "delivered",
        "delivery_delayed",
        "bounced",
    ];
    names.extend(METRICS.iter().filter(|m| m.starts_with("bounced_")));
    names.extend(["complained", "failed", "suppressed", "canceled"]);
    names.extend(RATES);
    names
}

/// The named counters and rates of a sum of rows, limited to `wanted`. `delivered` is known
/// only when a delivery report ever said so in the answer's window (`delivered_known`): a
/// relay that sends none leaves it, and the delivery rate, null rather than 0.
fn metrics_of(
    counts: &[i64; METRICS.len()],
    wanted: &[&'static str],
    delivered_known: bool,
) -> StatsMetrics {
    let get = |name: &str| crate::store::count_of(counts, name);
    let bounced = crate::store::bounced_of(counts);
    let rate = |num: i64, den: i64| {
        (den != 0).then(|| ((num as f64 / den as f64) * 10_000.0).round() / 10_000.0)
    };
    let mut m = StatsMetrics::default();
    for &name in wanted {
        let n = |v: i64| Some(v);
        match name {
            "accepted" => m.accepted = n(get(name)),
            "sent" => m.sent = n(get(name)),
            "delivered" => m.delivered = Some(delivered_known.then(|| get(name))),
            "delivery_delayed" => m.delivery_delayed = n(get(name)),
            "bounced" => m.bounced = n(bounced),
            "bounced_permanent" => m.bounced_permanent = n(get(name)),
            "bounced_transient" => m.bounced_transient = n(get(name)),
            "bounced_undetermined" => m.bounced_undetermined = n(get(name)),
            "complained" => m.complained = n(get(name)),
            "failed" => m.failed = n(get(name)),
            "suppressed" => m.suppressed = n(get(name)),
            "canceled" => m.canceled = n(get(name)),
            "delivery_rate" => {
                m.delivery_rate = Some(
                    delivered_known
                        .then(|| rate(get("delivered"), get("sent")))
                        .flatten(),
                );
            }
            "bounce_rate" => m.bounce_rate = Some(rate(bounced, get("sent"))),
            "complaint_rate" => m.complaint_rate = Some(rate(get("complained"), get("sent"))),
            _ => {}
        }
    }
    m
}

/// Whether these counts can say how much was delivered: a delivery report came, or nothing
/// was sent. The one rule of "delivered is known", for the API and the console.
pub fn delivery_reported(counts: &[i64; METRICS.len()]) -> bool {
    let get = |name: &str| crate::store::count_of(counts, name);
    get("delivered") > 0 || get("sent") == 0
}

fn add(into: &mut [i64; METRICS.len()], from: &[i64; METRICS.len()]) {
    for (a, b) in into.iter_mut().zip(from) {
        *a += b;
    }
}

/// `GET /v1/stats`.
#[utoipa::path(get, path = "/v1/stats", tag = "stats", params(("start" = Option<String>, Query, description = "RFC 3339 (default: 7 days before end)"), ("end" = Option<String>, Query, description = "RFC 3339 (default: now)"), ("granularity" = Option<String>, Query, description = "hour, day (default), week or month"), ("timezone" = Option<String>, Query, description = "IANA time zone for the periods (default UTC)"), ("group_by" = Option<String>, Query, description = "Up to two of tag, stream, domain, recipient_domain, comma-separated"), ("tag" = Option<String>, Query, description = "Only this tag"), ("stream" = Option<String>, Query, description = "Only this stream"), ("domain" = Option<String>, Query, description = "Only this sending domain"), ("recipient_domain" = Option<String>, Query, description = "Only this recipient domain"), ("metrics" = Option<String>, Query, description = "A comma-separated subset of the metrics")), responses((status = 200, description = "Per-recipient counts from the hourly rollups", body = StatsResponse), crate::api::openapi::Problems), security(("api_key" = [])))]
pub async fn get_stats(
    State(state): State<AppState>,
    FullAccess(principal): FullAccess,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> ApiResult<Json<StatsResponse>> {
    let Query(pairs) = query.map_err(|e| bad(e.body_text()))?;
    let (mut start, mut end, mut granularity, mut tz) = (None, None, Granularity::Day, Tz::UTC);
    let mut q = StatsQuery::default();
    let mut wanted: Option<Vec<&'static str>> = None;
    let names = all_metric_names();
    for (k, v) in &pairs {
        match k.as_str() {
            "start" => start = Some(v.as_str()),
            "end" => end = Some(v.as_str()),
            "granularity" => {
                granularity = Granularity::parse(v).ok_or_else(|| {
                    bad(format!(
                        "granularity: '{v}' is not hour, day, week or month"
                    ))
                })?
            }
            "timezone" => {
                tz = v
                    .parse()
                    .map_err(|_| bad(format!("timezone: '{v}' is not an IANA time zone")))?
            }
            "group_by" => {
                for d in split_list(v) {
                    let dim = StatsDimension::parse(d).ok_or_else(|| {
                        bad(format!(
                            "group_by: '{d}' is not one of tag, stream, domain, recipient_domain"
                        ))
                    })?;
                    if !q.group_by.contains(&dim) {
                        q.group_by.push(dim);
                    }
                }
            }
            "tag" => q.tag = Some(v.clone()),
            "stream" => q.stream = Some(v.clone()),
            "domain" => q.domain = Some(v.to_ascii_lowercase()),
            "recipient_domain" => q.recipient_domain = Some(v.to_ascii_lowercase()),
            "metrics" => {
                let list = wanted.get_or_insert_with(Vec::new);
                for m in split_list(v) {
                    if TRACKING_METRICS.contains(&m) {
                        return Err(bad(format!(
                            "metrics: Herald does not track opens or clicks, so it has no '{m}'"
                        )));
                    }
                    let name = names
                        .iter()
                        .find(|n| **n == m)
                        .ok_or_else(|| bad(format!("metrics: '{m}' is not a metric")))?;
                    if !list.contains(name) {
                        list.push(name);
                    }
                }
            }
            other => return Err(bad(format!("unknown query parameter '{other}'"))),
        }
    }
    if q.group_by.len() > 2 {
        return Err(bad("group_by takes at most two dimensions"));
    }
    let wanted = wanted.unwrap_or(names);
    let w = window(start, end, state.clock.now_ms())?;

    // Whole periods: from the one holding `start` to the one holding the last instant.
    let mut periods = Vec::new();
    let mut p = granularity.floor(tz, w.start);
    let first = p;
    while p < w.end {
        periods.push(granularity.label(tz, ceil_hour(p)));
        if periods.len() > MAX_PERIODS {
            return Err(bad(format!(
                "the window holds more than {MAX_PERIODS} periods: use a coarser granularity"
            )));
        }
        p = granularity.next(tz, p);
    }
    let last = p;
    q.from_hour = ceil_hour(first);
    q.to_hour = ceil_hour(last);
    let rows = state.store.stats(&principal.project_id, &q).await?;

    let mut totals = [0i64; METRICS.len()];
    // (period, group) → counts, in period order then group order.
    let mut series: std::collections::BTreeMap<(usize, Vec<String>), [i64; METRICS.len()]> =
        std::collections::BTreeMap::new();
    let index: std::collections::HashMap<&str, usize> = periods
        .iter()
        .enumerate()
        .map(|(i, p)| (p.as_str(), i))
        .collect();
    for StatsRow {
        hour,
        group,
        counts,
    } in &rows
    {
        let label = granularity.label(tz, *hour);
        let Some(&i) = index.get(label.as_str()) else {
            continue;
        };
        if !q.group_by.contains(&StatsDimension::Tag) {
            add(&mut totals, counts);
        }
        add(series.entry((i, group.clone())).or_default(), counts);
    }
    if q.group_by.is_empty() {
        for i in 0..periods.len() {
            series.entry((i, Vec::new())).or_default();
        }
    }
    if q.group_by.contains(&StatsDimension::Tag) {
        // Tag rows count an email once per tag: read the totals from the all-tags rows.
        let mut all = q.clone();
        all.group_by.clear();
        for r in state.store.stats(&principal.project_id, &all).await? {
            if index.contains_key(granularity.label(tz, r.hour).as_str()) {
                add(&mut totals, &r.counts);
            }
        }
    }
    let delivered_known = delivery_reported(&totals);
    let data = series
        .iter()
        .map(|((i, group), counts)| {
            let mut period = StatsPeriod {
                period: periods[*i].clone(),
                tag: None,
                stream: None,
                domain: None,
                recipient_domain: None,
                metrics: metrics_of(counts, &wanted, delivered_known),
            };
            for (dim, v) in q.group_by.iter().zip(group) {
                let slot = match dim {
                    StatsDimension::Tag => &mut period.tag,
                    StatsDimension::Stream => &mut period.stream,
                    StatsDimension::Domain => &mut period.domain,
                    StatsDimension::RecipientDomain => &mut period.recipient_domain,
                };
                *slot = Some(v.clone());
            }
            period
        })
        .collect();
    Ok(Json(StatsResponse {
        object: "stats",
        start: first.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        end: last.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        granularity: granularity.as_str(),
        timezone: tz.name().to_owned(),
        group_by: q.group_by.iter().map(|d| d.as_str()).collect(),
        totals: metrics_of(&totals, &wanted, delivered_known),
        data,
    }))
}

/// `GET /v1/stats/bounces`: bounces by type and sub-type, and the active suppressions.
#[utoipa::path(get, path = "/v1/stats/bounces", tag = "stats", params(("start" = Option<String>, Query, description = "RFC 3339"), ("end" = Option<String>, Query, description = "RFC 3339"), ("stream" = Option<String>, Query, description = "Only this stream"), ("domain" = Option<String>, Query, description = "Only this sending domain")), responses((status = 200, description = "Bounces by type and sub-type", body = BounceStatsResponse), crate::api::openapi::Problems), security(("api_key" = [])))]
pub async fn get_bounce_stats(
    State(state): State<AppState>,
    FullAccess(principal): FullAccess,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> ApiResult<Json<BounceStatsResponse>> {
    let Query(pairs) = query.map_err(|e| bad(e.body_text()))?;
    let (mut start, mut end, mut stream, mut domain) = (None, None, None, None);
    for (k, v) in &pairs {
        match k.as_str() {
            "start" => start = Some(v.as_str()),
            "end" => end = Some(v.as_str()),
            "stream" => stream = Some(v.clone()),
            "domain" => domain = Some(v.to_ascii_lowercase()),
            other => return Err(bad(format!("unknown query parameter '{other}'"))),
        }
    }
    let w = window(start, end, state.clock.now_ms())?;
    let from_hour = w.start.timestamp_millis().div_euclid(HOUR_MS) * HOUR_MS;
    let to_hour = ceil_hour(w.end);
    let counts = state
        .store
        .bounce_breakdown(
            &principal.project_id,
            from_hour,
            to_hour,
            stream.as_deref(),
            domain.as_deref(),
        )
        .await?;
    let active = state
        .store
        .count_suppressions(&principal.project_id)
        .await?;
    let bounces = counts
        .into_iter()
        .map(|b| BounceCountResponse {
            kind: b.bounce_type,
            sub_type: b.sub_type,
            count: b.count,
        })
        .collect();
    Ok(Json(BounceStatsResponse {
        object: "stats",
        start: utc(from_hour).to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        end: utc(to_hour).to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        bounces,
        active_suppressions: active,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default()
    }

    #[test]
    fn periods_follow_the_local_calendar() {
        let paris: Tz = "Europe/Paris".parse().unwrap_or(Tz::UTC);
        // 23:30 UTC on Aug 14 is already Aug 15 in Paris (UTC+2).
        let h = t("2026-08-14T23:00:00Z").timestamp_millis();
        assert_eq!(Granularity::Day.label(paris, h), "2026-08-15");
        assert_eq!(Granularity::Day.label(Tz::UTC, h), "2026-08-14");
        // 2026-08-14 is a Friday: its week starts on Monday the 10th.
        assert_eq!(Granularity::Week.label(Tz::UTC, h), "2026-08-10");
        assert_eq!(Granularity::Month.label(Tz::UTC, h), "2026-08");
        assert_eq!(
            Granularity::Hour.label(paris, h),
            "2026-08-15T01:00:00+02:00"
        );
        assert_eq!(
            Granularity::Day.floor(paris, t("2026-08-14T23:30:00Z")),
            t("2026-08-14T22:00:00Z")
        );
        assert_eq!(
            Granularity::Month.next(Tz::UTC, t("2026-01-01T00:00:00Z")),
            t("2026-02-01T00:00:00Z")
        );
    }

    #[test]
    fn days_across_a_dst_change_have_23_and_25_hours() {
        let paris: Tz = "Europe/Paris".parse().unwrap_or(Tz::UTC);
        let spring = Granularity::Day.floor(paris, t("2026-03-29T12:00:00Z"));
        assert_eq!(
            Granularity::Day.next(paris, spring) - spring,
            Duration::hours(23)
        );
        let autumn = Granularity::Day.floor(paris, t("2026-10-25T12:00:00Z"));
        assert_eq!(
            Granularity::Day.next(paris, autumn) - autumn,
            Duration::hours(25)
        );
    }

    #[test]
    fn rates_use_the_defined_denominators() {
        let mut c = [0i64; METRICS.len()];
        let set = |c: &mut [i64; METRICS.len()], name: &str, v: i64| {
            if let Some(i) = METRICS.iter().position(|m| *m == name) {
                c[i] = v;
            }
        };
        set(&mut c, "sent", 200);
        set(&mut c, "delivered", 100);
        set(&mut c, "bounced_permanent", 3);
        set(&mut c, "bounced_transient", 1);
        set(&mut c, "complained", 1);
        let m = metrics_of(&c, &all_metric_names(), delivery_reported(&c));
        assert_eq!(m.bounced, Some(4));
        assert_eq!(m.delivered, Some(Some(100)));
        assert_eq!(m.delivery_rate, Some(Some(0.5)));
        assert_eq!(m.bounce_rate, Some(Some(0.02)));
        assert_eq!(m.complaint_rate, Some(Some(0.005)));
        // No delivery report at all: delivered is not known, not 0 %.
        set(&mut c, "delivered", 0);
        assert!(!delivery_reported(&c));
        let m = metrics_of(&c, &all_metric_names(), delivery_reported(&c));
        assert_eq!((m.delivered, m.delivery_rate), (Some(None), Some(None)));
        let empty = metrics_of(&[0; METRICS.len()], &["bounce_rate"], true);
        let json = serde_json::to_value(&empty).expect("json");
        assert_eq!(
            json,
            serde_json::json!({"bounce_rate": null}),
            "asked for, and unknown"
        );
    }
}
