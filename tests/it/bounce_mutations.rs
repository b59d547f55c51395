//! Every corpus message, mutated as the internet would (byte flips, truncations, wrong
//! charsets and encodings, giant and duplicated headers, deep multiparts, megabyte lines,
//! thousands of addresses), read by the report parser: no panic, and every reading within a
//! time and a size bound. The bounds are loose (a debug build on a shared machine); what they
//! catch is work that grows with the square of the input, which took seconds and gigabytes.

use std::time::{Duration, Instant};

use herald::bounces::report::{MAX_DIAGNOSTIC, MAX_RECIPIENTS, parse_report};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/bounces");
/// Per reading: far above a linear parser's time on the largest input, far below a quadratic one's.
const TIME_BOUND: Duration = Duration::from_secs(5);

fn corpus() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for dir in std::fs::read_dir(CORPUS)
        .expect("corpus")
        .filter_map(Result::ok)
    {
        if !dir.path().is_dir() {
            continue;
        }
        for f in std::fs::read_dir(dir.path())
            .expect("dir")
            .filter_map(Result::ok)
        {
            let p = f.path();
            if p.extension().is_some_and(|e| e == "eml") {
                out.push((p.display().to_string(), std::fs::read(&p).expect("read")));
            }
        }
    }
    out.sort();
    out
}

/// The mutations, each from a message and a random source.
fn mutate(kind: usize, m: &[u8], rng: &mut StdRng) -> Vec<u8> {
    let mut v = m.to_vec();
    let at = |rng: &mut StdRng, len: usize| {
        if len == 0 {
            0
        } else {
            rng.random_range(0..len)
        }
    };
    match kind {
        // Flip bytes, anywhere.
        0 => {
            for _ in 0..1 + v.len() / 200 {
                let i = at(rng, v.len());
                if let Some(b) = v.get_mut(i) {
                    *b ^= 1 << rng.random_range(0..8);
                }
            }
        }
        // Cut at a random place (inside a header, a boundary, a UTF-8 character).
        1 => v.truncate(at(rng, v.len())),
        // Random bytes over a stretch.
        2 => {
            let i = at(rng, v.len());
            for b in v.iter_mut().skip(i).take(64) {
                *b = rng.random();
            }
        }
        // Wrong charsets and transfer encodings.
        3 => {
            let text = String::from_utf8_lossy(&v)
                .replace("us-ascii", "x-unknown-charset")
                .replace("charset=\"", "charset=\"iso-2022-jp")
                .replace("7bit", "base64")
                .replace("quoted-printable", "base64");
            v = text.into_bytes();
        }
        // A giant header and many duplicated ones in front.
        4 => {
            let mut head = b"Subject: ".to_vec();
            head.extend(std::iter::repeat_n(b'x', 300_000));
            head.extend_from_slice(b"\r\n");
            for _ in 0..5_000 {
                head.extend_from_slice(
                    b"X-Failed-Recipients: a@b.example\r\nReceived: from x by y\r\n",
                );
            }
            head.extend(v);
            v = head;
        }
        // Deep multiparts.
        5 => {
            let mut s = String::from(
                "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b0\"\r\n\r\n",
            );
            for i in 0..2_000 {
                s.push_str(&format!(
                    "--b{i}\r\nContent-Type: multipart/mixed; boundary=\"b{}\"\r\n\r\n",
                    i + 1
                ));
            }
            s.push_str("--b2000\r\nContent-Type: message/delivery-status\r\n\r\n");
            let mut out = s.into_bytes();
            out.extend(v);
            v = out;
        }
        // A megabyte line in the body.
        6 => {
            let i = v.len() / 2;
            let line: Vec<u8> = std::iter::repeat_n(b"ab@cd.ef ".as_slice(), 120_000)
                .flatten()
                .copied()
                .collect();
            v.splice(i..i, line);
        }
        // Thousands of addresses, each on a line that reads like a failure.
        7 => {
            let mut body = String::from(
                "From: MAILER-DAEMON@x.example\r\nSubject: Undelivered Mail Returned to Sender\r\n\r\n\
                 The following addresses had permanent fatal errors:\r\n",
            );
            for i in 0..20_000 {
                body.push_str(&format!(
                    "<user{i}@example{}.com>: 550 5.1.1 User unknown\r\n",
                    i % 7
                ));
            }
            let mut out = body.into_bytes();
            out.extend(v);
            v = out;
        }
        // A status part with thousands of recipient groups.
        _ => {
            let mut s = String::from(
                "Content-Type: multipart/report; report-type=delivery-status; boundary=\"R\"\r\n\r\n\
                 --R\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; x\r\n\r\n",
            );
            for i in 0..10_000 {
                s.push_str(&format!(
                    "Final-Recipient: rfc822; u{i}@x.example\r\nAction: failed\r\nStatus: 5.1.1\r\nDiagnostic-Code: smtp; 550 {}\r\n\r\n",
                    "y".repeat(i % 3000)
                ));
            }
            s.push_str("--R--\r\n");
            let mut out = s.into_bytes();
            out.extend(v);
            v = out;
        }
    }
    v
}

#[test]
fn mutated_bounces_never_crash_stall_or_blow_up_the_parser() {
    let messages = corpus();
    assert!(messages.len() >= 300, "{} messages", messages.len());
    let mut rng = StdRng::seed_from_u64(0x4845_5241_4c44);
    let (mut cases, mut slowest, mut largest) = (0usize, Duration::ZERO, 0usize);
    let started = Instant::now();
    for (n, (name, raw)) in messages.iter().enumerate() {
        // The cheap mutations for every message; the heavy ones (megabytes each) for some.
        let kinds: Vec<usize> = if n % 10 == 0 {
            (0..9).collect()
        } else {
            vec![0, 0, 0, 1, 1, 1, 2, 2, 3]
        };
        for kind in kinds {
            let input = mutate(kind, raw, &mut rng);
            let t = Instant::now();
            let report = std::panic::catch_unwind(|| parse_report(&input))
                .unwrap_or_else(|_| panic!("{name}: mutation {kind} panicked the parser"));
            let took = t.elapsed();
            cases += 1;
            slowest = slowest.max(took);
            assert!(took < TIME_BOUND, "{name}: mutation {kind} took {took:?}");
            assert!(
                report.recipients.len() <= MAX_RECIPIENTS,
                "{name}: mutation {kind}"
            );
            for r in &report.recipients {
                assert!(
                    r.diagnostic
                        .as_ref()
                        .is_none_or(|d| d.len() <= MAX_DIAGNOSTIC)
                        && r.address.len() <= 512,
                    "{name}: mutation {kind}"
                );
            }
            let size = serde_json::to_vec(&report).expect("json").len();
            largest = largest.max(size);
            assert!(
                size <= 256 * 1024,
                "{name}: mutation {kind}: {size} bytes read"
            );
        }
    }
    println!(
        "{cases} mutated messages in {:?}; the slowest {slowest:?}, the largest reading {largest} bytes",
        started.elapsed()
    );
}
