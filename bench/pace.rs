//! An open-loop load generator: POSTs one email body at a fixed rate, whatever the server's
//! answers take, and reports the latency of each request from the moment it was due.
//!
//! wrk keeps each connection busy (closed loop): it finds the peak rate, but cannot hold a
//! rate below it, and a request it could not send while the server was slow is never counted
//! as late (coordinated omission). Here request i is due at start + i / rate; it waits for a
//! free connection if every one is busy, and its latency runs from when it was due to its
//! answer, so a stall shows in the percentiles of every request it held up.
//!
//! `bench/throughput.sh` runs it for the `half` workload (half the plain workload's peak).
//! Alone: `cargo build --release --example pace`, then
//! `PACE_URL=http://127.0.0.1:8080/v1/emails PACE_KEY=… PACE_BODY=email.json PACE_RATE=2000
//! PACE_REQUESTS=40000 [PACE_CONNECTIONS=64] target/release/examples/pace`.
//! Prints one line: `BENCH requests=… non202=… duration_us=… p50_us=… p90_us=… p99_us=…
//! p999_us=… max_us=… service_p99_us=… rate=… cpu_ms=…` (service: from send to answer; cpu_ms:
//! the generator's own CPU time). With `PACE_TRACE=file` it also writes one line per request,
//! `<ms since start it was due> <latency µs> <service µs>`, in the order they were due: when
//! the stalls came, to set beside the server's own log.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

fn var(name: &str) -> anyhow::Result<String> {
    std::env::var(name).with_context(|| format!("{name} is not set"))
}

fn number<T: std::str::FromStr>(name: &str, default: Option<T>) -> anyhow::Result<T> {
    match (std::env::var(name), default) {
        (Ok(v), _) => v
            .parse()
            .ok()
            .with_context(|| format!("{name}: not a number")),
        (Err(_), Some(d)) => Ok(d),
        (Err(_), None) => anyhow::bail!("{name} is not set"),
    }
}

/// This process's CPU time so far, in milliseconds (user + system, from `/proc/self/stat`, in
/// Linux's fixed 100 ticks a second); 0 where that cannot be read.
fn cpu_ms() -> u64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0;
    };
    // The fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect());
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (ticks(11) + ticks(12)) * 10
}

/// One request's outcome: latency from when it was due, from when it was sent, and whether
/// the answer was a 202.
struct Timing {
    index: usize,
    due: Duration,
    service: Duration,
    accepted: bool,
}

fn percentile(sorted: &[Duration], p: f64) -> u128 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1].as_micros()
}

// One runtime thread: the generator shares the machine with what it measures.
#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let url = var("PACE_URL")?;
    let auth = format!("Bearer {}", var("PACE_KEY")?);
    // Read once, for the whole run: every request sends the same bytes without a copy.
    let body: &'static [u8] = std::fs::read(var("PACE_BODY")?)
        .context("PACE_BODY")?
        .leak();
    let rate: f64 = number("PACE_RATE", None)?;
    let requests: usize = number("PACE_REQUESTS", None)?;
    let connections: usize = number("PACE_CONNECTIONS", Some(64))?;
    anyhow::ensure!(
        rate > 0.0 && connections > 0,
        "PACE_RATE and PACE_CONNECTIONS > 0"
    );

    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(connections)
        .timeout(Duration::from_secs(30))
        .build()?;
    let free = Arc::new(Semaphore::new(connections));
    let start = Instant::now() + Duration::from_millis(50);
    let mut inflight = JoinSet::new();
    let mut timings = Vec::with_capacity(requests);
    for i in 0..requests {
        let due = start + Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(due.into()).await;
        while let Some(done) = inflight.try_join_next() {
            timings.push(done?);
        }
        // Every connection busy: this request waits, and its wait counts.
        let permit = Arc::clone(&free).acquire_owned().await?;
        let request = client
            .post(&url)
            .header("authorization", &auth)
            .header("content-type", "application/json")
            .body(body);
        inflight.spawn(async move {
            let sent = Instant::now();
            let accepted = match request.send().await {
                Ok(response) => {
                    let status = response.status();
                    response.bytes().await.is_ok() && status == reqwest::StatusCode::ACCEPTED
                }
                Err(_) => false,
            };
            let answered = Instant::now();
            drop(permit);
            Timing {
                index: i,
                due: answered - due,
                service: answered - sent,
                accepted,
            }
        });
    }
    while let Some(done) = inflight.join_next().await {
        timings.push(done?);
    }
    let duration = start.elapsed();
    if let Ok(path) = std::env::var("PACE_TRACE") {
        timings.sort_unstable_by_key(|t| t.index);
        let lines: String = timings
            .iter()
            .map(|t| {
                let at = t.index as f64 * 1000.0 / rate;
                let (due, service) = (t.due.as_micros(), t.service.as_micros());
                format!("{at:.1} {due} {service}\n")
            })
            .collect();
        std::fs::write(&path, lines).with_context(|| format!("PACE_TRACE: {path}"))?;
    }

    let non202 = timings.iter().filter(|t| !t.accepted).count();
    let mut due: Vec<Duration> = timings.iter().map(|t| t.due).collect();
    let mut service: Vec<Duration> = timings.iter().map(|t| t.service).collect();
    due.sort_unstable();
    service.sort_unstable();
    println!(
        "BENCH requests={} non202={non202} duration_us={} p50_us={} p90_us={} p99_us={} \
         p999_us={} max_us={} service_p99_us={} rate={} cpu_ms={}",
        timings.len(),
        duration.as_micros(),
        percentile(&due, 50.0),
        percentile(&due, 90.0),
        percentile(&due, 99.0),
        percentile(&due, 99.9),
        due.last().map_or(0, Duration::as_micros),
        percentile(&service, 99.0),
        rate.round(),
        cpu_ms(),
    );
    Ok(())
}
