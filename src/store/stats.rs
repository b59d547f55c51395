//! Hourly statistics: counted as events are written, read by `GET /v1/stats`.
//!
//! Every transaction that inserts events carries a [`StatsLog`]; each recipient event it
//! inserts notes one increment there, and just before the commit [`StatsLog::flush`] folds
//! them into per-key deltas and upserts them into `stats_hourly` (and `stats_bounces`) in
//! key order. Sorting keeps two transactions from taking the same rollup rows in opposite
//! orders (a deadlock on Postgres), and folding makes a batch of a thousand accepts one
//! upsert per key, not a thousand.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::LazyLock;

use sqlx::Row as _;

use crate::domain::bounce::BounceType;
use crate::domain::event::{EventData, EventType};

use super::write::{TableRows, Tx, Val, padded, padded_placeholders, texts};
use super::{Store, StoreResult};

/// The counters of one rollup row, in column order.
pub const METRICS: [&str; 11] = [
    "accepted",
    "sent",
    "delivered",
    "delivery_delayed",
    "bounced_permanent",
    "bounced_transient",
    "bounced_undetermined",
    "complained",
    "failed",
    "suppressed",
    "canceled",
];

/// A rollup row's counter by name (0 for a name that is not one of [`METRICS`]).
pub fn count_of(counts: &[i64; METRICS.len()], name: &str) -> i64 {
    METRICS
        .iter()
        .position(|m| *m == name)
        .and_then(|i| counts.get(i))
        .copied()
        .unwrap_or(0)
}

/// The three bounce counters of a rollup row together.
pub fn bounced_of(counts: &[i64; METRICS.len()]) -> i64 {
    [
        "bounced_permanent",
        "bounced_transient",
        "bounced_undetermined",
    ]
    .iter()
    .map(|m| count_of(counts, m))
    .sum()
}

/// The `tag` value of the rows that count every recipient once.
pub const ALL_TAGS: &str = "*";

const HOUR_MS: i64 = 3_600_000;

/// Which counter an event moves, if any.
fn metric_of(event_type: EventType, data: &EventData) -> Option<usize> {
    let name = match event_type {
        EventType::Sent => "sent",
        EventType::Delivered => "delivered",
        EventType::DeliveryDelayed => "delivery_delayed",
        EventType::Complained => "complained",
        EventType::Failed => "failed",
        EventType::Suppressed => "suppressed",
        EventType::Canceled => "canceled",
        EventType::Bounced => match data.bounce_class().map(|c| c.kind) {
            Some(BounceType::Permanent) => "bounced_permanent",
            Some(BounceType::Transient) => "bounced_transient",
            _ => "bounced_undetermined",
        },
        _ => return None,
    };
    METRICS.iter().position(|m| *m == name)
}

/// The `(type, sub_type)` a bounce event's data names.
fn bounce_of(data: &EventData) -> (String, String) {
    data.bounce_class().map_or_else(
        || ("undetermined".to_owned(), "undetermined".to_owned()),
        |c| (c.kind.as_str().to_owned(), c.sub_type.as_str().to_owned()),
    )
}

/// The stats dimensions an email carries.
#[derive(Debug, Clone)]
pub(super) struct EmailDims {
    stream: String,
    tags: Vec<String>,
    domain: String,
}

impl EmailDims {
    fn new(stream: &str, tags: Vec<String>, from_email: &str) -> Self {
        Self {
            stream: stream.to_owned(),
            tags,
            domain: domain_of(from_email),
        }
    }
}

fn domain_of(address: &str) -> String {
    address
        .rsplit_once('@')
        .map_or("", |(_, d)| d)
        .to_ascii_lowercase()
}

/// One counted event, waiting for its email's dimensions.
#[derive(Debug, Clone)]
struct Pending {
    project_id: String,
    email_id: String,
    recipient_domain: String,
    hour: i64,
    metric: usize,
    bounce: Option<(String, String)>,
}

/// The increments a transaction owes the rollups.
#[derive(Debug, Default)]
pub(super) struct StatsLog {
    pending: Vec<Pending>,
    dims: HashMap<String, EmailDims>,
    /// Which of a key's rows this writer adds to (0 unless told).
    shard: i64,
}

/// How many rows one rollup key may be spread over.
const SHARDS: u64 = 16;

/// A log's increments folded per key, in key order (two writers on Postgres lock rows in the
/// same order): one upsert per key.
struct Folded {
    hourly: BTreeMap<HourKey, [i64; METRICS.len()]>,
    bounces: BTreeMap<BounceKey, i64>,
    shard: i64,
}

/// The rollups' columns: the key's, then one per metric.
static HOURLY_COLUMNS: LazyLock<Vec<&'static str>> = LazyLock::new(|| {
    let mut cols = vec![
        "project_id",
        "tag",
        "hour",
        "stream",
        "domain",
        "recipient_domain",
        "shard",
    ];
    cols.extend(METRICS);
    cols
});

static HOURLY_CONFLICT: LazyLock<String> = LazyLock::new(|| {
    let updates = METRICS
        .iter()
        .map(|m| format!("{m} = stats_hourly.{m} + excluded.{m}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "ON CONFLICT (project_id, tag, hour, stream, domain, recipient_domain, shard) \
         DO UPDATE SET {updates}"
    )
});

const BOUNCE_COLUMNS: [&str; 8] = [
    "project_id",
    "hour",
    "stream",
    "domain",
    "bounce_type",
    "sub_type",
    "shard",
    "count",
];

const BOUNCE_CONFLICT: &str = "ON CONFLICT (project_id, hour, stream, domain, bounce_type, \
     sub_type, shard) DO UPDATE SET count = stats_bounces.count + excluded.count";

type Rows<'a> = Vec<Vec<Val<'a>>>;

impl Folded {
    /// The upserts' values: `stats_hourly`'s, then `stats_bounces`'.
    fn rows(&self) -> (Rows<'_>, Rows<'_>) {
        let shard = self.shard;
        let hourly = self
            .hourly
            .iter()
            .map(|(k, counts)| {
                let mut row = vec![
                    Val::Text(&k.0),
                    Val::Text(&k.1),
                    Val::Int(k.2),
                    Val::Text(&k.3),
                    Val::Text(&k.4),
                    Val::Text(&k.5),
                    Val::Int(shard),
                ];
                row.extend(counts.iter().map(|c| Val::Int(*c)));
                row
            })
            .collect();
        let bounces = self
            .bounces
            .iter()
            .map(|(k, n)| {
                vec![
                    Val::Text(&k.0),
                    Val::Int(k.1),
                    Val::Text(&k.2),
                    Val::Text(&k.3),
                    Val::Text(&k.4),
                    Val::Text(&k.5),
                    Val::Int(shard),
                    Val::Int(*n),
                ]
            })
            .collect();
        (hourly, bounces)
    }

    /// The two upserts, each with its conflict clause.
    fn tables<'r, 'v>(
        hourly: &'r [Vec<Val<'v>>],
        bounces: &'r [Vec<Val<'v>>],
    ) -> [TableRows<'r, 'v>; 2] {
        [
            TableRows {
                table: "stats_hourly",
                cols: &HOURLY_COLUMNS,
                rows: hourly,
                on_conflict: HOURLY_CONFLICT.as_str(),
            },
            TableRows {
                table: "stats_bounces",
                cols: &BOUNCE_COLUMNS,
                rows: bounces,
                on_conflict: BOUNCE_CONFLICT,
            },
        ]
    }
}

type HourKey = (String, String, i64, String, String, String);
type BounceKey = (String, i64, String, String, String, String);

impl StatsLog {
    /// Writes this log's increments to the shard of `writer` (a group-commit writer's id, or
    /// the id a one-off transaction is about), so concurrent writers do not add to one row.
    pub(super) fn use_shard_of(&mut self, writer: &str) {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        writer.hash(&mut h);
        self.shard = i64::try_from(1 + h.finish() % (SHARDS - 1)).unwrap_or(1);
    }

    /// A point to roll back to when a savepoint is rolled back.
    pub(super) fn mark(&self) -> usize {
        self.pending.len()
    }

    pub(super) fn rollback_to(&mut self, mark: usize) {
        self.pending.truncate(mark);
    }

    /// Tells the log an email's dimensions, so flushing needs no lookup for it.
    pub(super) fn note_email(&mut self, id: &str, stream: &str, tags: Vec<String>, from: &str) {
        self.dims
            .insert(id.to_owned(), EmailDims::new(stream, tags, from));
    }

    /// Counts a recipient the API accepted.
    pub(super) fn accepted(&mut self, project_id: &str, email_id: &str, address: &str, at: i64) {
        self.push(project_id, email_id, address, at, 0, None);
    }

    /// Counts an event, if it is one the rollups count.
    pub(super) fn event(
        &mut self,
        project_id: &str,
        email_id: &str,
        address: &str,
        event_type: EventType,
        data: &EventData,
        at: i64,
    ) {
        if let Some(metric) = metric_of(event_type, data) {
            let bounce = (event_type == EventType::Bounced).then(|| bounce_of(data));
            self.push(project_id, email_id, address, at, metric, bounce);
        }
    }

    fn push(
        &mut self,
        project_id: &str,
        email_id: &str,
        address: &str,
        at: i64,
        metric: usize,
        bounce: Option<(String, String)>,
    ) {
        self.pending.push(Pending {
            project_id: project_id.to_owned(),
            email_id: email_id.to_owned(),
            recipient_domain: domain_of(address),
            hour: at.div_euclid(HOUR_MS) * HOUR_MS,
            metric,
            bounce,
        });
    }

    /// Writes the owed increments inside `tx`, in key order, and empties the log.
    pub(super) async fn flush(&mut self, tx: &mut dyn Tx) -> StoreResult<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        self.load_missing_dims(tx).await?;
        let folded = self.fold();
        let (hourly, bounces) = folded.rows();
        let tables = Folded::tables(&hourly, &bounces);
        tx.write_tables(&tables).await
    }

    /// Folds the owed increments per key and empties the log.
    fn fold(&mut self) -> Folded {
        let mut hourly: BTreeMap<HourKey, [i64; METRICS.len()]> = BTreeMap::new();
        let mut bounces: BTreeMap<BounceKey, i64> = BTreeMap::new();
        for p in self.pending.drain(..) {
            let Some(d) = self.dims.get(&p.email_id) else {
                continue;
            };
            for tag in std::iter::once(ALL_TAGS).chain(d.tags.iter().map(String::as_str)) {
                let key = (
                    p.project_id.clone(),
                    tag.to_owned(),
                    p.hour,
                    d.stream.clone(),
                    d.domain.clone(),
                    p.recipient_domain.clone(),
                );
                hourly.entry(key).or_default()[p.metric] += 1;
            }
            if let Some((kind, sub)) = p.bounce {
                let key = (
                    p.project_id,
                    p.hour,
                    d.stream.clone(),
                    d.domain.clone(),
                    kind,
                    sub,
                );
                *bounces.entry(key).or_default() += 1;
            }
        }
        Folded {
            hourly,
            bounces,
            shard: self.shard,
        }
    }

    /// Hands over the dimensions of the emails this log has seen (to keep for later logs).
    pub(super) fn take_dims(&mut self) -> HashMap<String, EmailDims> {
        std::mem::take(&mut self.dims)
    }

    /// Starts from dimensions kept from earlier logs (emails never change them).
    pub(super) fn adopt_dims(&mut self, dims: HashMap<String, EmailDims>) {
        self.dims = dims;
    }

    /// The emails counted whose dimensions the log does not know (it did not insert them).
    fn missing_dims(&self) -> Vec<String> {
        self.pending
            .iter()
            .filter(|p| !self.dims.contains_key(&p.email_id))
            .map(|p| p.email_id.clone())
            .collect::<HashSet<_>>()
            .into_iter()
            .collect()
    }

    /// Keeps an email's dimensions as its row holds them.
    fn keep_dims(&mut self, id: String, stream: &str, tags: &str, from: &str) {
        let tags = serde_json::from_str(tags).unwrap_or_default();
        self.dims.insert(id, EmailDims::new(stream, tags, from));
    }

    /// Reads the dimensions of the emails this transaction did not insert, in one query.
    async fn load_missing_dims(&mut self, tx: &mut dyn Tx) -> StoreResult<()> {
        let missing = self.missing_dims();
        let missing: Vec<&str> = missing.iter().map(String::as_str).collect();
        for chunk in missing.chunks(512) {
            let sql = format!(
                "SELECT id, stream, tags, from_email FROM emails WHERE id IN ({})",
                padded_placeholders(1, chunk.len())
            );
            let params = texts(&[], padded(chunk));
            for r in tx.query(&sql, &params).await? {
                let (stream, tags, from): (String, String, String) =
                    (r.get(1)?, r.get(2)?, r.get(3)?);
                self.keep_dims(r.get(0)?, &stream, &tags, &from);
            }
        }
        Ok(())
    }
}

/// A dimension `GET /v1/stats` can group or filter by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatsDimension {
    Tag,
    Stream,
    Domain,
    RecipientDomain,
}

impl StatsDimension {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "tag" => Self::Tag,
            "stream" => Self::Stream,
            "domain" => Self::Domain,
            "recipient_domain" => Self::RecipientDomain,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tag => "tag",
            Self::Stream => "stream",
            Self::Domain => "domain",
            Self::RecipientDomain => "recipient_domain",
        }
    }
}

/// What to read from the rollups.
#[derive(Debug, Clone, Default)]
pub struct StatsQuery {
    /// Hours `[from, to)`, epoch milliseconds, whole hours.
    pub from_hour: i64,
    pub to_hour: i64,
    pub group_by: Vec<StatsDimension>,
    pub tag: Option<String>,
    pub stream: Option<String>,
    pub domain: Option<String>,
    pub recipient_domain: Option<String>,
}

/// One hour of one group: the group's dimension values (in `group_by` order) and counters.
#[derive(Debug, Clone)]
pub struct StatsRow {
    pub hour: i64,
    pub group: Vec<String>,
    pub counts: [i64; METRICS.len()],
}

/// One bounce class's count.
#[derive(Debug, Clone)]
pub struct BounceCount {
    pub bounce_type: String,
    pub sub_type: String,
    pub count: i64,
}

impl Store {
    /// The rollups of `q`, summed per hour and group.
    pub async fn stats(&self, project_id: &str, q: &StatsQuery) -> StoreResult<Vec<StatsRow>> {
        let group_cols: Vec<&str> = q.group_by.iter().map(|d| d.as_str()).collect();
        let sums = METRICS
            .iter()
            .map(|m| format!("CAST(SUM({m}) AS BIGINT)"))
            .collect::<Vec<_>>()
            .join(", ");
        let mut select = vec!["hour".to_owned()];
        select.extend(group_cols.iter().map(|c| (*c).to_owned()));
        let mut args: Vec<String> = vec![project_id.to_owned()];
        let mut filters = String::new();
        // Tag rows: a tag filter reads that tag's rows, grouping by tag reads every tag row,
        // anything else reads the rows that count each recipient once.
        match (&q.tag, q.group_by.contains(&StatsDimension::Tag)) {
            (Some(t), _) => {
                args.push(t.clone());
                filters.push_str(&format!(" AND tag = ${}", args.len()));
            }
            (None, true) => filters.push_str(&format!(" AND tag <> '{ALL_TAGS}'")),
            (None, false) => filters.push_str(&format!(" AND tag = '{ALL_TAGS}'")),
        }
        for (col, v) in [
            ("stream", &q.stream),
            ("domain", &q.domain),
            ("recipient_domain", &q.recipient_domain),
        ] {
            if let Some(v) = v {
                args.push(v.clone());
                filters.push_str(&format!(" AND {col} = ${}", args.len()));
            }
        }
        let n = args.len();
        let sql = format!(
            "SELECT {}, {sums} FROM stats_hourly WHERE project_id = $1{filters} \
             AND hour >= ${} AND hour < ${} GROUP BY {} ORDER BY {}",
            select.join(", "),
            n + 1,
            n + 2,
            select.join(", "),
            select.join(", "),
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for a in &args {
            query = query.bind(a.as_str());
        }
        let rows = query
            .bind(q.from_hour)
            .bind(q.to_hour)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                let hour: i64 = r.try_get(0)?;
                let group = (0..group_cols.len())
                    .map(|i| r.try_get::<String, _>(1 + i))
                    .collect::<Result<Vec<_>, _>>()?;
                let mut counts = [0i64; METRICS.len()];
                for (i, c) in counts.iter_mut().enumerate() {
                    *c = r.try_get(1 + group_cols.len() + i)?;
                }
                Ok(StatsRow {
                    hour,
                    group,
                    counts,
                })
            })
            .collect()
    }

    /// Bounces by type and sub-type over hours `[from, to)`, most frequent first.
    pub async fn bounce_breakdown(
        &self,
        project_id: &str,
        from_hour: i64,
        to_hour: i64,
        stream: Option<&str>,
        domain: Option<&str>,
    ) -> StoreResult<Vec<BounceCount>> {
        let mut filters = String::new();
        let mut args = Vec::new();
        for (col, v) in [("stream", stream), ("domain", domain)] {
            if let Some(v) = v {
                args.push(v);
                filters.push_str(&format!(" AND {col} = ${}", 3 + args.len()));
            }
        }
        let sql = format!(
            "SELECT bounce_type, sub_type, CAST(SUM(count) AS BIGINT) FROM stats_bounces \
             WHERE project_id = $1 AND hour >= $2 AND hour < $3{filters} \
             GROUP BY bounce_type, sub_type ORDER BY 3 DESC, 1, 2"
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(project_id)
            .bind(from_hour)
            .bind(to_hour);
        for a in args {
            q = q.bind(a);
        }
        let rows = q.fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| {
                Ok(BounceCount {
                    bounce_type: r.try_get(0)?,
                    sub_type: r.try_get(1)?,
                    count: r.try_get(2)?,
                })
            })
            .collect()
    }
}
