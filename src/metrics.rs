//! Process metrics for `/metrics` (Prometheus text format 0.0.4), kept as atomics by the
//! parts that produce them; queue gauges are read from the database at scrape time.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (seconds) of the SMTP send latency histogram.
const BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Debug, Default)]
pub struct Metrics {
    pub emails_accepted: AtomicU64,
    pub relay_connection_errors: AtomicU64,
    outcomes: Mutex<BTreeMap<String, u64>>,
    webhook_attempts: Mutex<BTreeMap<String, u64>>,
    inbound: Mutex<BTreeMap<String, u64>>,
    smtp_buckets: [AtomicU64; BUCKETS.len()],
    smtp_count: AtomicU64,
    smtp_sum_micros: AtomicU64,
}

/// Figures read from the database when scraped.
#[derive(Debug, Default)]
pub struct QueueSnapshot {
    pub queue_depth: Vec<(String, i64)>,
    pub oldest_due_seconds: f64,
    pub webhook_backlog: i64,
    /// What this process's group-commit writer has done.
    pub writer: WriterFigures,
}

/// Counters of the store's group-commit writer (see `store::group_commit`).
#[derive(Debug, Clone, Copy, Default)]
pub struct WriterFigures {
    pub commits: u64,
    /// Requests, outcome groups and claims those commits carried.
    pub jobs: u64,
    /// Time spent from taking a batch to answering it.
    pub busy_seconds: f64,
    /// Checkpoints of SQLite's write-ahead log run beside the writer (0 on Postgres).
    pub checkpoints: u64,
    /// Frames in SQLite's write-ahead log at the last of them.
    pub wal_frames: u64,
}

fn bump(map: &Mutex<BTreeMap<String, u64>>, key: &str) {
    let mut m = map.lock().unwrap_or_else(|e| e.into_inner());
    *m.entry(key.to_owned()).or_default() += 1;
}

impl Metrics {
    pub fn record_outcome(&self, status: &str) {
        bump(&self.outcomes, status);
    }

    pub fn record_webhook_attempt(&self, succeeded: bool) {
        bump(
            &self.webhook_attempts,
            if succeeded { "succeeded" } else { "failed" },
        );
    }

    /// One inbound message read, by report kind and the status it ended in.
    pub fn record_inbound(&self, kind: &str, status: &str) {
        bump(
            &self.inbound,
            &format!("{{kind=\"{kind}\",status=\"{status}\"}}"),
        );
    }

    pub fn observe_smtp(&self, took: Duration) {
        let secs = took.as_secs_f64();
        for (i, bound) in BUCKETS.iter().enumerate() {
            if secs <= *bound {
                self.smtp_buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.smtp_count.fetch_add(1, Ordering::Relaxed);
        self.smtp_sum_micros.fetch_add(
            u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// The whole exposition.
    pub fn render(&self, q: &QueueSnapshot) -> String {
        let mut out = String::new();
        let mut counter = |name: &str, help: &str, rows: Vec<(String, u64)>| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (labels, v) in rows {
                let _ = writeln!(out, "{name}{labels} {v}");
            }
        };
        counter(
            "herald_emails_accepted_total",
            "Emails accepted (committed) by this process.",
            vec![(String::new(), self.emails_accepted.load(Ordering::Relaxed))],
        );
        let outcomes = self
            .outcomes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        counter(
            "herald_recipients_total",
            "Recipient outcomes recorded by this process's workers.",
            outcomes
                .into_iter()
                .map(|(k, v)| (format!("{{outcome=\"{k}\"}}"), v))
                .collect(),
        );
        counter(
            "herald_relay_connection_errors_total",
            "Failed connections to the SMTP relay.",
            vec![(
                String::new(),
                self.relay_connection_errors.load(Ordering::Relaxed),
            )],
        );
        let attempts = self
            .webhook_attempts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        counter(
            "herald_webhook_attempts_total",
            "Webhook delivery attempts by result.",
            attempts
                .into_iter()
                .map(|(k, v)| (format!("{{result=\"{k}\"}}"), v))
                .collect(),
        );
        let _ = writeln!(
            out,
            "# HELP herald_smtp_send_seconds Time to hand one message to the relay (waiting for a free relay connection included).\n# TYPE herald_smtp_send_seconds histogram"
        );
        for (i, bound) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "herald_smtp_send_seconds_bucket{{le=\"{bound}\"}} {}",
                self.smtp_buckets[i].load(Ordering::Relaxed)
            );
        }
        let count = self.smtp_count.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "herald_smtp_send_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(
            out,
            "herald_smtp_send_seconds_sum {}",
            self.smtp_sum_micros.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "herald_smtp_send_seconds_count {count}");
        let _ = writeln!(
            out,
            "# HELP herald_queue_depth Recipients waiting, by status.\n# TYPE herald_queue_depth gauge"
        );
        for status in ["scheduled", "queued", "delivery_delayed"] {
            let n = q
                .queue_depth
                .iter()
                .find(|(s, _)| s == status)
                .map_or(0, |(_, n)| *n);
            let _ = writeln!(out, "herald_queue_depth{{status=\"{status}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "# HELP herald_queue_oldest_due_seconds Age of the oldest recipient that is due now.\n# TYPE herald_queue_oldest_due_seconds gauge\nherald_queue_oldest_due_seconds {}",
            q.oldest_due_seconds
        );
        let _ = writeln!(
            out,
            "# HELP herald_webhook_backlog Webhook deliveries waiting.\n# TYPE herald_webhook_backlog gauge\nherald_webhook_backlog {}",
            q.webhook_backlog
        );
        let w = &q.writer;
        let _ = writeln!(
            out,
            "# HELP herald_store_commits_total Transactions of the group-commit writer.\n# TYPE herald_store_commits_total counter\nherald_store_commits_total {}\n\
             # HELP herald_store_committed_jobs_total Requests, outcome groups and claims those transactions carried.\n# TYPE herald_store_committed_jobs_total counter\nherald_store_committed_jobs_total {}\n\
             # HELP herald_store_writer_busy_seconds_total Time the writer spent on batches (its rate is the writer's utilization).\n# TYPE herald_store_writer_busy_seconds_total counter\nherald_store_writer_busy_seconds_total {}\n\
             # HELP herald_store_wal_checkpoints_total Checkpoints of SQLite's write-ahead log run beside the writer.\n# TYPE herald_store_wal_checkpoints_total counter\nherald_store_wal_checkpoints_total {}\n\
             # HELP herald_store_wal_frames Pages in SQLite's write-ahead log at the last checkpoint.\n# TYPE herald_store_wal_frames gauge\nherald_store_wal_frames {}",
            w.commits, w.jobs, w.busy_seconds, w.checkpoints, w.wal_frames
        );
        let inbound = self
            .inbound
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let _ = writeln!(
            out,
            "# HELP herald_inbound_messages_total Inbound report mail read by this process, by kind and outcome.\n# TYPE herald_inbound_messages_total counter"
        );
        for (labels, n) in inbound {
            let _ = writeln!(out, "herald_inbound_messages_total{labels} {n}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        m.emails_accepted.fetch_add(3, Ordering::Relaxed);
        m.record_outcome("sent");
        m.record_outcome("sent");
        m.observe_smtp(Duration::from_millis(30));
        m.record_inbound("arf", "processed");
        m.record_inbound("arf", "processed");
        let text = m.render(&QueueSnapshot {
            queue_depth: vec![("queued".into(), 7)],
            oldest_due_seconds: 1.5,
            webhook_backlog: 2,
            writer: WriterFigures {
                commits: 4,
                jobs: 9,
                busy_seconds: 0.25,
                checkpoints: 5,
                wal_frames: 1200,
            },
        });
        assert!(text.contains("herald_store_commits_total 4\n"));
        assert!(text.contains("herald_store_committed_jobs_total 9\n"));
        assert!(text.contains("herald_store_writer_busy_seconds_total 0.25\n"));
        assert!(text.contains("herald_store_wal_checkpoints_total 5\n"));
        assert!(text.contains("herald_store_wal_frames 1200\n"));
        assert!(text.contains("herald_emails_accepted_total 3\n"));
        assert!(text.contains("herald_recipients_total{outcome=\"sent\"} 2\n"));
        assert!(text.contains("herald_smtp_send_seconds_bucket{le=\"0.025\"} 0\n"));
        assert!(text.contains("herald_smtp_send_seconds_bucket{le=\"0.05\"} 1\n"));
        assert!(text.contains("herald_queue_depth{status=\"queued\"} 7\n"));
        assert!(text.contains("herald_queue_depth{status=\"scheduled\"} 0\n"));
        assert!(text.contains("herald_queue_oldest_due_seconds 1.5\n"));
        assert!(
            text.contains("herald_inbound_messages_total{kind=\"arf\",status=\"processed\"} 2\n")
        );
    }
}
