//! `rill replay` end to end: formats, determinism, bad input, ranges.

use std::io::Write;
use std::path::Path;
use std::process::Stdio;

use serde_json::Value;

use crate::util::*;

fn gen(dir: &Path, name: &str, n: u64) -> std::path::PathBuf {
    let p = dir.join(name);
    run_ok(
        rill()
            .args([
                "gen",
                "--events",
                &n.to_string(),
                "--users",
                "500",
                "--output",
            ])
            .arg(&p),
    );
    p
}

fn replay_json(pipeline: &Path, input: &Path, out: &Path) -> Value {
    replay_cli(pipeline, input, out, &[])
}

/// `rill replay --input -` over `input`; its JSON summary.
fn replay_stdin(pipeline: &Path, input: &[u8], out: &Path) -> Value {
    let mut child = rill()
        .args(["replay", "--json"])
        .arg(pipeline)
        .args(["--input", "-", "--output"])
        .arg(out)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input)
        .expect("write");
    let o = child.wait_with_output().expect("wait");
    assert!(o.status.success());
    serde_json::from_slice(&o.stdout).expect("summary")
}

/// Final rows as (user, window_start) -> (count, sum), from any set of files.
fn finals(dir: &Path) -> std::collections::BTreeMap<(String, String), (i64, f64)> {
    read_rows(dir)
        .into_iter()
        .filter(|r| r["is_final"] == Value::Bool(true) && r["retraction"] == Value::Bool(false))
        .map(|r| {
            (
                (
                    r["user_id"].as_str().expect("user").to_string(),
                    r["window_start"].as_str().expect("ts").to_string(),
                ),
                (
                    r["tx_count"].as_i64().expect("count"),
                    r["amount_sum"].as_f64().unwrap_or(0.0),
                ),
            )
        })
        .collect()
}

#[test]
fn same_input_same_rows_and_no_duplicates_on_rerun() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let input = gen(tmp.path(), "ev.jsonl", 20_000);
    let out = tmp.path().join("out");
    let p = repo("pipelines/user_spend_5m.yaml");
    let s1 = replay_json(&p, &input, &out);
    let rows1 = read_rows(&out);
    let files1 = parquet_files(&out);
    let s2 = replay_json(&p, &input, &out);
    let rows2 = read_rows(&out);
    assert_eq!(rows1.len() as u64, s1["rows"].as_u64().expect("rows"));
    assert_eq!(
        rows1, rows2,
        "a second replay of the same input replaces, never adds"
    );
    assert_eq!(files1, parquet_files(&out));
    assert_eq!(s1["panes"], s2["panes"]);
    // Early panes exist (trigger every 1m) and every window has exactly one final pane.
    assert!(rows1.iter().any(|r| r["timing"] == "EARLY"));
    let mut finals = std::collections::BTreeMap::new();
    for r in rows1.iter().filter(|r| r["is_final"] == Value::Bool(true)) {
        *finals
            .entry((r["user_id"].to_string(), r["window_start"].to_string()))
            .or_insert(0) += 1;
    }
    assert!(finals.values().all(|&n| n == 1));
    assert_eq!(
        finals.len() as u64,
        s1["windows"].as_u64().expect("windows")
    );
}

#[test]
fn finals_match_a_group_by_of_the_input() {
    // Allowed lateness covers every delay of the data set: finals are the group-by.
    let tmp = tempfile::tempdir().expect("tempdir");
    let input = gen(tmp.path(), "ev.jsonl", 30_000);
    let out = tmp.path().join("out");
    let s = replay_json(&repo("pipelines/user_spend_5m.yaml"), &input, &out);
    assert_eq!(s["dead_letters_total"], 0);
    let mut want: std::collections::BTreeMap<(String, String), (i64, f64)> = Default::default();
    for line in std::fs::read_to_string(&input).expect("input").lines() {
        let v: Value = serde_json::from_str(line).expect("json");
        let t = rill::time::parse_rfc3339(v["event_time"].as_str().expect("time")).expect("time");
        let start = t - t.rem_euclid(300_000_000);
        let e = want
            .entry((
                v["user_id"].as_str().expect("user").to_string(),
                rill::time::format_rfc3339(start),
            ))
            .or_insert((0, 0.0));
        e.0 += 1;
        e.1 += v["amount"].as_f64().expect("amount");
    }
    let got = finals(&out);
    assert_eq!(got.len(), want.len());
    for (k, (n, sum)) in &want {
        let (gn, gs) = got[k];
        assert_eq!(gn, *n, "{k:?}");
        assert!(
            (gs - sum).abs() <= 1e-9 * sum.abs().max(1.0),
            "{k:?}: {gs} vs {sum}"
        );
    }
}

#[test]
fn gzip_zstd_parquet_and_stdin_give_the_same_finals() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let p = repo("benches/pipelines/bench_tumbling_5m.yaml");
    let plain = gen(tmp.path(), "ev.jsonl", 8_000);
    let gz = gen(tmp.path(), "ev.jsonl.gz", 8_000);
    let zst = gen(tmp.path(), "ev.jsonl.zst", 8_000);
    let pq = gen(tmp.path(), "ev.parquet", 8_000);
    let base = tmp.path().join("o-plain");
    replay_json(&p, &plain, &base);
    let want = finals_bench(&base);
    assert!(!want.is_empty());
    for (name, input) in [("gz", &gz), ("zst", &zst), ("pq", &pq)] {
        let out = tmp.path().join(format!("o-{name}"));
        let s = replay_json(&p, input, &out);
        assert_eq!(s["records"], 8_000, "{name}");
        assert_eq!(finals_bench(&out), want, "{name}");
    }
    // Standard input.
    let out = tmp.path().join("o-stdin");
    replay_stdin(&p, &std::fs::read(&plain).expect("input"), &out);
    assert_eq!(finals_bench(&out), want);
}

fn finals_bench(dir: &Path) -> std::collections::BTreeMap<(String, String), (i64, String)> {
    read_rows(dir)
        .into_iter()
        .filter(|r| r["is_final"] == Value::Bool(true))
        .map(|r| {
            (
                (
                    r["user_id"].as_str().expect("user").to_string(),
                    r["window_start"].as_str().expect("ts").to_string(),
                ),
                (
                    r["tx_count"].as_i64().expect("n"),
                    format!("{:.6}", r["amount_sum"].as_f64().unwrap_or(0.0)),
                ),
            )
        })
        .collect()
}

#[test]
fn bad_input_goes_to_dead_letters_and_never_stops_the_run() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let input = tmp.path().join("bad.jsonl");
    let mut f = std::fs::File::create(&input).expect("create");
    let good = |t: &str| {
        format!(r#"{{"user_id":"u1","event_type":"click","amount":1.5,"event_time":"{t}"}}"#)
    };
    writeln!(f, "{}", good("2026-01-05T00:00:01Z")).expect("write");
    writeln!(f, "{{\"user_id\":\"u1\",").expect("write"); // malformed
    writeln!(
        f,
        r#"{{"event_type":"click","amount":1,"event_time":"2026-01-05T00:00:02Z"}}"#
    )
    .expect("write"); // no key
    writeln!(f, r#"{{"user_id":"u1","amount":1}}"#).expect("write"); // no time
    writeln!(
        f,
        r#"{{"user_id":"u1","amount":1,"event_time":"yesterday"}}"#
    )
    .expect("write"); // bad time
    writeln!(
        f,
        r#"{{"user_id":"u1","amount":"12.5","event_time":"2026-01-05T00:00:03Z"}}"#
    )
    .expect("write"); // string for number
    writeln!(
        f,
        r#"{{"user_id":"u1","amount":1,"event_time":"2999-01-01T00:00:00Z"}}"#
    )
    .expect("write"); // future
    f.write_all(&[0xde, 0xad, 0xbe, 0xef, 0x00, 0xff, b'\n'])
        .expect("write"); // binary
    writeln!(f).expect("write"); // blank line
    write!(f, "{}", &good("2026-01-05T00:00:04Z")[..30]).expect("write"); // truncated last line, no newline
    drop(f);
    let out = tmp.path().join("out");
    let s = replay_json(&repo("pipelines/user_spend_5m.yaml"), &input, &out);
    assert_eq!(s["records"], 9);
    assert_eq!(s["events"], 1);
    assert_eq!(s["dead_letters_total"], 8);
    let dl = &s["dead_letters"];
    assert_eq!(dl["invalid_json"], 3);
    assert_eq!(dl["missing_key"], 1);
    assert_eq!(dl["missing_event_time"], 1);
    assert_eq!(dl["bad_event_time"], 1);
    assert_eq!(dl["bad_value"], 1);
    assert_eq!(dl["future_timestamp"], 1);
    // Each letter names its line and keeps the raw bytes.
    let text =
        std::fs::read_to_string(s["dead_letter_file"].as_str().expect("path")).expect("letters");
    let letters: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    let lines: Vec<u64> = letters
        .iter()
        .map(|l| l["source"]["line"].as_u64().expect("line"))
        .collect();
    assert_eq!(lines, vec![2, 3, 4, 5, 6, 7, 8, 10]);
    assert!(
        letters[6].get("raw_base64").is_some(),
        "binary bytes are kept as base64"
    );
    assert_eq!(
        letters[1]["raw"],
        r#"{"event_type":"click","amount":1,"event_time":"2026-01-05T00:00:02Z"}"#
    );
    // The good event still produced its window.
    assert_eq!(
        read_rows(&out)
            .iter()
            .filter(|r| r["is_final"] == Value::Bool(true))
            .count(),
        1
    );
}

/// Refusals of the decoder and of the engine, spread over many blocks of
/// lines, come out in line order with their line numbers, from a file and
/// from standard input alike.
#[test]
fn dead_letters_keep_line_order_across_blocks() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let input = tmp.path().join("mixed.jsonl");
    let mut text = String::new();
    let mut want = Vec::new();
    let mut good = 0u64;
    for i in 1..=500u64 {
        let t = format!("2026-01-05T00:{:02}:{:02}Z", i / 60 % 60, i % 60);
        if i % 11 == 0 {
            text.push_str("  \n");
        } else if i % 7 == 0 {
            text.push_str("{\"user_id\":\"u1\",\n");
            want.push((i, "invalid_json"));
        } else if i % 13 == 0 {
            text.push_str(&format!(
                "{{\"user_id\":\"u{}\",\"amount\":1,\"event_time\":\"2999-01-01T00:00:00Z\"}}\n",
                i % 5
            ));
            want.push((i, "future_timestamp"));
        } else {
            text.push_str(&format!(
                "{{\"user_id\":\"u{}\",\"event_type\":\"click\",\"amount\":{i},\"event_time\":\"{t}\"}}\r\n",
                i % 5
            ));
            good += 1;
        }
    }
    std::fs::write(&input, &text).expect("write");
    let pipeline = repo("pipelines/user_spend_5m.yaml");
    let check = |s: &Value, what: &str| {
        assert_eq!(s["events"], good, "{what}");
        assert_eq!(s["blank_lines"], 45, "{what}");
        assert_eq!(s["records"], 455, "{what}");
        let letters: Vec<(u64, String)> =
            std::fs::read_to_string(s["dead_letter_file"].as_str().expect("path"))
                .expect("letters")
                .lines()
                .map(|l| {
                    let v: Value = serde_json::from_str(l).expect("json");
                    (
                        v["source"]["line"].as_u64().expect("line"),
                        v["reason"].as_str().expect("reason").to_string(),
                    )
                })
                .collect();
        let want: Vec<(u64, String)> = want.iter().map(|(l, r)| (*l, r.to_string())).collect();
        assert_eq!(letters, want, "{what}");
    };
    check(
        &replay_json(&pipeline, &input, &tmp.path().join("o-file")),
        "file",
    );
    check(
        &replay_stdin(&pipeline, text.as_bytes(), &tmp.path().join("o-stdin")),
        "stdin",
    );
}

#[test]
fn empty_and_binary_files() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let empty = tmp.path().join("empty.jsonl");
    std::fs::write(&empty, b"").expect("write");
    let s = replay_json(
        &repo("pipelines/user_spend_5m.yaml"),
        &empty,
        &tmp.path().join("o1"),
    );
    assert_eq!(
        (s["records"].as_u64(), s["rows"].as_u64()),
        (Some(0), Some(0))
    );
    let bin = tmp.path().join("random.bin");
    let bytes: Vec<u8> = (0..200_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&bin, &bytes).expect("write");
    let s = replay_json(
        &repo("pipelines/user_spend_5m.yaml"),
        &bin,
        &tmp.path().join("o2"),
    );
    assert_eq!(s["events"], 0);
    assert_eq!(s["dead_letters_total"], s["records"]);
    assert!(s["records"].as_u64().expect("n") > 0);
}

#[test]
fn from_and_to_bound_the_replay() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let input = gen(tmp.path(), "ev.jsonl", 20_000);
    let out = tmp.path().join("out");
    let o = run_ok(
        rill()
            .args(["replay", "--json"])
            .arg(repo("benches/pipelines/bench_tumbling_5m.yaml"))
            .arg("--input")
            .arg(&input)
            .args([
                "--from",
                "2026-01-06",
                "--to",
                "2026-01-07T00:00:00Z",
                "--output",
            ])
            .arg(&out),
    );
    let s: Value = serde_json::from_slice(&o.stdout).expect("json");
    assert!(s["out_of_range"].as_u64().expect("n") > 0);
    for r in read_rows(&out) {
        let start = r["window_start"].as_str().expect("ts");
        assert!(("2026-01-06".."2026-01-07").contains(&start), "{start}");
    }
}

#[test]
fn gen_is_deterministic() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let a = gen(tmp.path(), "a.jsonl", 5_000);
    let b = gen(tmp.path(), "b.jsonl", 5_000);
    assert_eq!(std::fs::read(a).expect("a"), std::fs::read(b).expect("b"));
}

/// Output piped into a reader that stops early (`rill gen ... | head -1`)
/// ends the command quietly, as other command-line tools do: killed by
/// SIGPIPE, never a panic or an error message.
#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    use std::io::{BufRead, BufReader};
    use std::os::unix::process::ExitStatusExt;
    let mut child = rill()
        .args(["gen", "--events", "200000", "--output", "/dev/stdout"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("rill starts");
    let mut first = String::new();
    BufReader::new(child.stdout.take().expect("piped"))
        .read_line(&mut first)
        .expect("one line");
    // The reader is gone: 200,000 events are far more than a pipe holds.
    assert!(first.contains("user_id"), "{first}");
    let out = child.wait_with_output().expect("rill ends");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGPIPE),
        "{:?} {err}",
        out.status
    );
    assert!(!err.contains("panicked"), "{err}");
}
