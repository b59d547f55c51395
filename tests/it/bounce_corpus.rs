//! The bounce corpus (`tests/bounces/`, sources in `SOURCES.md`): every message parsed through
//! `herald bounce parse`. The messages written here (`herald/`) must read exactly as
//! `expected.json` says; the real-world sources are scored (recipients exact, verdict right,
//! `sub_type` right) and each score must stay at or above its floor, so a change that reads
//! real bounces worse fails.

use std::collections::BTreeMap;

use serde_json::Value;

const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/bounces");

/// Parses every `.eml` of a source directory; the expected answers and Herald's, by file name.
fn parse_source(dir: &str) -> Vec<(String, Value, Value)> {
    let expected: BTreeMap<String, Value> = serde_json::from_str(
        &std::fs::read_to_string(format!("{dir}/expected.json")).expect("expected.json"),
    )
    .expect("json");
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .expect("dir")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".eml"))
        .collect();
    files.sort();
    assert_eq!(
        files.len(),
        expected.len(),
        "{dir}: every message has an expectation"
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .arg("bounce")
        .arg("parse")
        .args(files.iter().map(|f| format!("{dir}/{f}")))
        .env_clear()
        .output()
        .expect("run herald");
    assert!(
        out.status.success(),
        "{dir}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = String::from_utf8(out.stdout)
        .expect("utf8")
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per file"))
        .collect();
    assert_eq!(
        lines.len(),
        files.len(),
        "{dir}: an answer for every message"
    );
    lines
        .into_iter()
        .map(|got| {
            let name = got["file"]
                .as_str()
                .and_then(|f| f.rsplit('/').next())
                .expect("name")
                .to_owned();
            let want = expected[&name].clone();
            (name, want, got)
        })
        .collect()
}

#[test]
fn the_messages_written_here_parse_exactly() {
    for (name, want, got) in parse_source(&format!("{CORPUS}/herald")) {
        assert_eq!(got["kind"], want["kind"], "{name}");
        assert_eq!(
            got["original_message_id"], want["original_message_id"],
            "{name}"
        );
        let recipients: Vec<Value> = got["recipients"]
            .as_array()
            .expect("recipients")
            .iter()
            .map(|r| serde_json::json!({"address": r["address"], "action": r["action"], "status": r["status"], "type": r["type"], "sub_type": r["sub_type"]}))
            .collect();
        assert_eq!(Value::Array(recipients), want["recipients"], "{name}");
        assert_eq!(
            got["complaint"]["feedback_type"].as_str(),
            want["complaint"].as_str(),
            "{name}"
        );
    }
}

/// One source's score.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, PartialOrd)]
struct Score {
    messages: usize,
    /// Messages whose failed and delayed recipients are exactly the expected ones.
    recipients_exact: usize,
    /// Expected recipients, and how many of them Herald read with the right action and sub_type.
    recipients: usize,
    verdict_right: usize,
    sub_type_right: usize,
}

/// The failed and delayed recipients of an answer (complaints have none), by address.
fn verdicts(v: &Value) -> BTreeMap<String, (String, String)> {
    if v["kind"] == "arf" {
        return BTreeMap::new();
    }
    v["recipients"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["action"] == "failed" || r["action"] == "delayed")
        .map(|r| {
            (
                r["address"].as_str().unwrap_or("").to_ascii_lowercase(),
                (
                    r["action"].as_str().unwrap_or("").to_owned(),
                    r["sub_type"].as_str().unwrap_or("").to_owned(),
                ),
            )
        })
        .collect()
}

fn score(dir: &str) -> Score {
    let mut s = Score::default();
    for (name, want, got) in parse_source(dir) {
        s.messages += 1;
        let (want, got) = (verdicts(&want), verdicts(&got));
        if want.keys().eq(got.keys()) {
            s.recipients_exact += 1;
        } else {
            println!(
                "  {name}: expected {:?}, read {:?}",
                want.keys().collect::<Vec<_>>(),
                got.keys().collect::<Vec<_>>()
            );
        }
        for (address, (action, sub_type)) in &want {
            s.recipients += 1;
            if let Some((a, st)) = got.get(address) {
                s.verdict_right += usize::from(a == action);
                s.sub_type_right += usize::from(st == sub_type);
            }
        }
    }
    s
}

/// What each real-world source scored when its expected answers were written: messages,
/// recipients exact, expected recipients, verdicts right, sub_types right.
const FLOORS: &[(&str, [usize; 5])] = &[
    ("bounce_email", [41, 40, 37, 37, 37]),
    ("bounceparser", [128, 127, 121, 120, 119]),
    ("exim", [63, 63, 78, 78, 78]),
    ("mail-auth-arf", [5, 5, 0, 0, 0]),
    ("mail_manager", [12, 12, 8, 8, 8]),
    ("php-bounce-handler", [90, 90, 76, 76, 76]),
];

#[test]
fn real_world_bounces_read_at_least_as_well_as_recorded() {
    let mut total = 0;
    println!("source | messages | recipients exact | verdict right | sub_type right");
    for (source, floor) in FLOORS {
        let s = score(&format!("{CORPUS}/{source}"));
        println!(
            "{source} | {} | {} | {} of {} | {} of {}",
            s.messages,
            s.recipients_exact,
            s.verdict_right,
            s.recipients,
            s.sub_type_right,
            s.recipients
        );
        let got = [
            s.messages,
            s.recipients_exact,
            s.recipients,
            s.verdict_right,
            s.sub_type_right,
        ];
        assert!(got[0] == floor[0], "{source}: the number of messages");
        for (i, what) in [
            (1, "recipients exact"),
            (3, "verdicts right"),
            (4, "sub_types right"),
        ] {
            assert!(
                got[i] >= floor[i],
                "{source}: {what} fell to {} from {}",
                got[i],
                floor[i]
            );
        }
        total += s.messages;
    }
    assert!(total >= 300, "the real-world corpus has {total} messages");
}
