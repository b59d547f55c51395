//! The bounce corpus: every message in `tests/bounces/` (DSNs, plain-text bounces of qmail,
//! Exim, Sendmail, Exchange, Yahoo, Lotus Notes, GroupWise and generic MTAs, an ARF complaint,
//! a non-bounce) parsed through `herald bounce parse`, compared with `expected.json`.

use std::collections::BTreeMap;

use serde_json::Value;

#[test]
fn every_corpus_message_parses_as_expected() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/bounces");
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
        "every message has an expectation"
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
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut by_kind: BTreeMap<String, usize> = BTreeMap::new();
    for line in String::from_utf8(out.stdout).expect("utf8").lines() {
        let got: Value = serde_json::from_str(line).expect("one JSON object per file");
        let name = got["file"]
            .as_str()
            .expect("file")
            .rsplit('/')
            .next()
            .expect("name")
            .to_owned();
        let want = &expected[&name];
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
        *by_kind
            .entry(got["kind"].as_str().unwrap_or("").to_owned())
            .or_default() += 1;
    }
    println!("bounce corpus: {by_kind:?}");
}
