//! A closed-loop SMTP submission load client: many connections, each authenticated once
//! (AUTH PLAIN with an API key), each sending message after message as an app's mailer
//! does, MAIL, RCPT and DATA pipelined (RFC 2920), the message after the 354. Postfix's
//! `smtp-source` cannot authenticate, so this is the Herald side of `bench/throughput.sh`'s
//! `submission` workload; Postfix's side is `smtp-source` into its own `smtpd`.
//!
//! `cargo build --release --example submit`, then
//! `SUBMIT_ADDR=127.0.0.1:2587 SUBMIT_KEY=hk_… SUBMIT_MESSAGES=100000 [SUBMIT_CONNECTIONS=64]
//! target/release/examples/submit`. Plain SMTP (the server must allow AUTH in the clear:
//! `submission.allow_insecure_auth`, loopback only), as `smtp-source` is.
//! Prints one line: `BENCH requests=… non202=… duration_us=… p50_us=… p99_us=… p999_us=…
//! max_us=…`, the names `bench/throughput.sh` reads for every workload (non202: messages not
//! answered 250; latency: from the MAIL command to the 250 after the message).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::{Context, bail};
use base64::Engine as _;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

fn var(name: &str) -> anyhow::Result<String> {
    std::env::var(name).with_context(|| format!("{name} is not set"))
}

/// The plain 2 KB message of the other workloads, as an app's mailer writes it.
fn message() -> Vec<u8> {
    let text: String = "Thank you for your order. "
        .repeat(80)
        .chars()
        .take(2000)
        .collect();
    let mut body = String::new();
    for chunk in text.as_bytes().chunks(76) {
        body.push_str(&String::from_utf8_lossy(chunk));
        body.push_str("\r\n");
    }
    format!(
        "From: Acme <orders@acme.com>\r\nTo: ada@example.com\r\nSubject: Your order\r\n\
         X-Herald-Tags: bench\r\nX-Herald-Metadata-Order-Id: 1042\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\r\n{body}.\r\n"
    )
    .into_bytes()
}

/// Reads one reply (all its lines); its code.
async fn reply(io: &mut BufReader<TcpStream>, line: &mut String) -> anyhow::Result<u16> {
    loop {
        line.clear();
        if io.read_line(line).await? == 0 {
            bail!("the server closed the connection");
        }
        let code = line
            .get(..3)
            .and_then(|c| c.parse().ok())
            .context("a reply")?;
        if line.as_bytes().get(3) != Some(&b'-') {
            return Ok(code);
        }
    }
}

async fn connection(
    addr: String,
    key: String,
    next: Arc<AtomicUsize>,
    total: usize,
    message: Arc<Vec<u8>>,
) -> anyhow::Result<(Vec<u32>, usize)> {
    let mut io = BufReader::new(TcpStream::connect(&addr).await?);
    io.get_mut().set_nodelay(true)?;
    let mut line = String::new();
    let mut latencies = Vec::new();
    let mut refused = 0;
    anyhow::ensure!(reply(&mut io, &mut line).await? == 220, "greeting: {line}");
    io.get_mut().write_all(b"EHLO bench.example\r\n").await?;
    anyhow::ensure!(reply(&mut io, &mut line).await? == 250, "EHLO: {line}");
    let plain = base64::engine::general_purpose::STANDARD.encode(format!("\0bench\0{key}"));
    io.get_mut()
        .write_all(format!("AUTH PLAIN {plain}\r\n").as_bytes())
        .await?;
    anyhow::ensure!(reply(&mut io, &mut line).await? == 235, "AUTH: {line}");
    let envelope = b"MAIL FROM:<orders@acme.com>\r\nRCPT TO:<ada@example.com>\r\nDATA\r\n";
    while next.fetch_add(1, Ordering::Relaxed) < total {
        let start = Instant::now();
        io.get_mut().write_all(envelope).await?;
        let (mail, rcpt, data) = (
            reply(&mut io, &mut line).await?,
            reply(&mut io, &mut line).await?,
            reply(&mut io, &mut line).await?,
        );
        if (mail, rcpt, data) != (250, 250, 354) {
            refused += 1;
            if data == 354 {
                io.get_mut().write_all(b".\r\n").await?;
                reply(&mut io, &mut line).await?;
            }
            io.get_mut().write_all(b"RSET\r\n").await?;
            reply(&mut io, &mut line).await?;
            continue;
        }
        io.get_mut().write_all(&message).await?;
        if reply(&mut io, &mut line).await? == 250 {
            latencies.push(u32::try_from(start.elapsed().as_micros()).unwrap_or(u32::MAX));
        } else {
            refused += 1;
        }
    }
    io.get_mut().write_all(b"QUIT\r\n").await?;
    Ok((latencies, refused))
}

/// This process's CPU time so far (user + system), from /proc: it shares the machine.
fn own_cpu_ms() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<u64> = after
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    // utime and stime, in clock ticks of 10 ms.
    (fields.get(11).copied().unwrap_or(0) + fields.get(12).copied().unwrap_or(0)) * 10
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let addr = var("SUBMIT_ADDR")?;
    let key = var("SUBMIT_KEY")?;
    let total: usize = var("SUBMIT_MESSAGES")?.parse().context("SUBMIT_MESSAGES")?;
    let connections: usize = std::env::var("SUBMIT_CONNECTIONS")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(64);
    let next = Arc::new(AtomicUsize::new(0));
    let message = Arc::new(message());
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..connections {
        tasks.spawn(connection(
            addr.clone(),
            key.clone(),
            Arc::clone(&next),
            total,
            Arc::clone(&message),
        ));
    }
    let (mut latencies, mut refused) = (Vec::with_capacity(total), 0);
    while let Some(done) = tasks.join_next().await {
        let (l, r) = done??;
        latencies.extend(l);
        refused += r;
    }
    let duration = start.elapsed();
    latencies.sort_unstable();
    let at = |q: f64| {
        let i = ((latencies.len() as f64) * q) as usize;
        latencies
            .get(i.min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    println!(
        "BENCH requests={} non202={refused} duration_us={} p50_us={} p99_us={} p999_us={} \
         max_us={} cpu_ms={}",
        latencies.len(),
        duration.as_micros(),
        at(0.5),
        at(0.99),
        at(0.999),
        latencies.last().copied().unwrap_or(0),
        own_cpu_ms(),
    );
    Ok(())
}
