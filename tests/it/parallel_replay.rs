//! Parallel and sharded replay (`--threads`, `--shard`): the same rows,
//! `emitted_at`, watermarks, late decisions and dead letters as one thread.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use proptest::prelude::*;

use crate::util::*;

fn replay(
    pipeline: &Path,
    input: &Path,
    out: &Path,
    threads: usize,
    shard: Option<(u32, u32)>,
    chunk: Option<usize>,
) -> rill::replay::ReplaySummary {
    let p = rill::config::Pipeline::from_file(pipeline).expect("pipeline");
    let mut o = rill::replay::ReplayOptions::new(p, input.to_path_buf(), out.to_path_buf());
    o.threads = threads;
    o.shard = shard.map(|(index, count)| rill::replay::Shard { index, count });
    o.chunk_bytes = chunk;
    rill::replay::run(o).expect("replay")
}

/// The counts of a summary that every split of the work must add up to.
fn counts(s: &rill::replay::ReplaySummary) -> Vec<u64> {
    vec![
        s.events,
        s.late_events_kept,
        s.late_events_dropped,
        s.windows,
        s.panes,
        s.retractions,
        s.rows,
        s.dead_letters_total,
    ]
}

fn add(a: &mut [u64], b: &[u64]) {
    for (x, y) in a.iter_mut().zip(b) {
        *x += y;
    }
}

const PIPELINES: [(&str, &str); 3] = [
    (
        "tumbling",
        "window:\n  tumbling: { size: 5m }\n  allowed_lateness: 2m\ntrigger:\n  early: { every: 1m }\n  late: every_event\naccumulation: accumulating\n",
    ),
    (
        "session",
        "window:\n  session: { gap: 3m }\n  allowed_lateness: 1m\ntrigger:\n  early: { every: 1m }\n  late: { every: 30s }\naccumulation: accumulating_and_retracting\n",
    ),
    (
        "hopping",
        "window:\n  hopping: { size: 10m, slide: 2m }\n  allowed_lateness: 1m\ntrigger:\n  late: every_event\naccumulation: discarding\n",
    ),
];

fn write_pipeline(dir: &Path, kind: &str, window: &str) -> PathBuf {
    let text = format!(
        "version: 1\nname: par_{kind}\nsource:\n  kafka: {{ brokers: \"localhost:9092\", topic: t, group_id: g }}\n  format: json\n  key: [user_id]\n  event_time: {{ field: event_time, format: epoch_millis }}\nwatermark: {{ max_out_of_orderness: 20s }}\n{window}features:\n  - {{ name: n, agg: count }}\n  - {{ name: total, agg: sum, field: amount }}\n  - {{ name: top, agg: max, field: amount }}\n  - {{ name: last_kind, agg: last, field: kind, type: string }}\n  - {{ name: clicks, agg: count, where: 'kind == \"click\"' }}\nsinks:\n  offline: {{ parquet: {{ path: ./features }} }}\n"
    );
    let p = dir.join(format!("{kind}.yaml"));
    std::fs::write(&p, text).expect("pipeline");
    p
}

/// One input record: a key, a time step (seconds, some going backwards),
/// an amount, and what kind of line it is.
fn record() -> impl Strategy<Value = (u8, i16, u16, u8)> {
    (0u8..9, -400i16..120, 0u16..1000, 0u8..40)
}

fn input_text(recs: &[(u8, i16, u16, u8)]) -> String {
    let mut t: i64 = 1_767_571_200_000; // 2026-01-05
    let mut max = t;
    let mut s = String::new();
    for &(k, step, amount, kind) in recs {
        if step >= 0 {
            t = max + step as i64 * 1000;
            max = t;
        } else {
            // Late and very late events: behind the greatest time so far.
            t = max + step as i64 * 3000;
        }
        let line = match kind {
            0 => "{\"user_id\":\"u1\",\"amount\":".to_string(),
            1 => format!("{{\"user_id\":\"u{k}\",\"amount\":\"many\",\"event_time\":{t}}}"),
            2 => format!("{{\"user_id\":\"u{k}\",\"amount\":1,\"event_time\":32503680000000}}"),
            3 => "   ".to_string(),
            4 => format!("{{\"amount\":3,\"event_time\":{t}}}"),
            _ => format!(
                "{{\"user_id\":\"u{k}\",\"amount\":{amount},\"kind\":\"{}\",\"event_time\":{t}}}",
                if kind % 3 == 0 { "click" } else { "view" }
            ),
        };
        s.push_str(&line);
        s.push('\n');
    }
    s
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// On random inputs (out of order, late, too late, bad lines), every
    /// split of the work gives the rows and dead letters of one thread:
    /// 2 and 3 threads on small chunks, a gzip stream, and shards.
    #[test]
    fn parallel_and_sharded_replay_equal_one_thread(
        recs in prop::collection::vec(record(), 1..400),
        which in 0usize..3,
    ) {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (kind, window) = PIPELINES[which];
        let pipeline = write_pipeline(tmp.path(), kind, window);
        let text = input_text(&recs);
        let input = tmp.path().join("in.jsonl");
        std::fs::write(&input, &text).expect("input");
        let gz = tmp.path().join("in.jsonl.gz");
        let mut enc = flate2::write::GzEncoder::new(
            std::fs::File::create(&gz).expect("gz"),
            flate2::Compression::fast(),
        );
        enc.write_all(text.as_bytes()).expect("gz");
        enc.finish().expect("gz");

        let one_dir = tmp.path().join("one");
        let one = replay(&pipeline, &input, &one_dir, 1, None, None);
        prop_assert_eq!(one.threads, 1);
        let want_rows = rows(&one_dir);
        let want_letters = letters(&one_dir);

        for (name, inp, threads, chunk) in [
            ("two", &input, 2, Some(97)),
            ("three", &input, 3, Some(300)),
            ("gzip", &gz, 2, Some(150)),
        ] {
            let dir = tmp.path().join(name);
            let s = replay(&pipeline, inp, &dir, threads, None, chunk);
            prop_assert_eq!(s.threads, threads as u32);
            prop_assert_eq!(&rows(&dir), &want_rows, "{}", name);
            prop_assert_eq!(&letters(&dir), &want_letters, "{}", name);
            prop_assert_eq!(counts(&s), counts(&one), "{}", name);
            prop_assert_eq!(
                (s.records, s.blank_lines, &s.dead_letters),
                (one.records, one.blank_lines, &one.dead_letters),
                "{}", name
            );
        }

        // Shards into one store: together they are one run.
        let shards = tmp.path().join("shards");
        let mut total = vec![0; 8];
        for i in 0..3 {
            let s = replay(&pipeline, &input, &shards, 1 + i as usize % 2, Some((i, 3)), Some(200));
            add(&mut total, &counts(&s));
        }
        prop_assert_eq!(&rows(&shards), &want_rows);
        prop_assert_eq!(&letters(&shards), &want_letters);
        prop_assert_eq!(total, counts(&one));
    }
}

/// The standard data set (a slice of it) from JSON lines and from Parquet:
/// `--threads 2` equals `--threads 1`, shards equal one run, and re-runs
/// with another split leave no doubled rows.
#[test]
fn parallel_replay_of_the_standard_data_set_equals_one_thread() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let jsonl = tmp.path().join("events.jsonl");
    let parquet = tmp.path().join("events.parquet");
    for p in [&jsonl, &parquet] {
        run_ok(
            rill()
                .args(["gen", "--events", "120000", "--users", "3000", "--output"])
                .arg(p),
        );
    }
    for pipeline in [
        repo("benches/pipelines/bench_tumbling_5m.yaml"),
        repo("pipelines/click_sessions.yaml"),
        repo("benches/pipelines/bench_hopping_30d_1h.yaml"),
    ] {
        for input in [&jsonl, &parquet] {
            let what = format!("{} from {}", pipeline.display(), input.display());
            let one = tmp.path().join("one");
            let s1 = replay_cli(&pipeline, input, &one, &["--threads", "1"]);
            let want = rows(&one);
            assert!(!want.is_empty(), "{what}");
            // Into the same store: the two-thread run replaces the first.
            let s2 = replay_cli(
                &pipeline,
                input,
                &one,
                &["--threads", "2", "--chunk-bytes", "65536"],
            );
            assert_eq!(s2["threads"], 2, "{what}");
            assert_eq!(rows(&one), want, "{what}: --threads 2");
            for k in [
                "events",
                "panes",
                "rows",
                "late_events_kept",
                "dead_letters_total",
            ] {
                assert_eq!(s1[k], s2[k], "{what}: {k}");
            }
            // Two shards into another store, then a re-run of one of them.
            let sh = tmp.path().join("shards");
            let _ = std::fs::remove_dir_all(&sh);
            let mut rows_sum = 0;
            for i in 0..2 {
                let s = replay_cli(&pipeline, input, &sh, &["--shard", &format!("{i}/2")]);
                assert_eq!(s["shard"], format!("s{i}of2"), "{what}");
                rows_sum += s["rows"].as_u64().expect("rows");
            }
            replay_cli(&pipeline, input, &sh, &["--shard", "1/2", "--threads", "1"]);
            assert_eq!(rows_sum, s1["rows"].as_u64().expect("rows"), "{what}");
            assert_eq!(rows(&sh), want, "{what}: shards");
            // One thread again replaces every shard's files.
            replay_cli(&pipeline, input, &sh, &["--threads", "1"]);
            assert_eq!(rows(&sh), want, "{what}: after shards");
            let _ = std::fs::remove_dir_all(&one);
        }
    }
}

#[test]
fn a_bad_shard_is_refused() {
    for bad in ["2/2", "1", "a/3", "0/0"] {
        let o = rill()
            .args([
                "replay",
                "pipelines/user_spend_5m.yaml",
                "--input",
                "x.jsonl",
                "--shard",
                bad,
            ])
            .current_dir(repo(""))
            .output()
            .expect("runs");
        assert!(!o.status.success(), "{bad}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("--shard"), "{bad}: {err}");
    }
}

#[test]
fn keys_split_by_the_documented_hash() {
    // fmix64 of the 64-bit FNV-1a of the encoded key and a 0xff byte: fixed for good.
    assert_eq!(rill::replay::split_hash(b""), 0x1bbd_5c81_3c69_a8d7);
    // Shards own contiguous parts of the hash range, whatever the threads.
    let mut seen = BTreeMap::new();
    for i in 0..2000u32 {
        let h = rill::replay::split_hash(format!("k{i}").as_bytes());
        let (s1, _) = rill::replay::owner(h, 4, 1);
        let (s3, t3) = rill::replay::owner(h, 4, 3);
        assert_eq!(s1, s3);
        assert!(t3 < 3);
        *seen.entry(s1).or_insert(0) += 1;
    }
    assert_eq!(seen.len(), 4);
    assert!(seen.values().all(|&n| n > 350), "{seen:?}");
}

/// A shard refuses output that another split of the same run wrote (its
/// rows would stay beside the shard's and be doubled), and leaves it as it was.
#[test]
fn a_shard_refuses_output_of_another_split() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let input = tmp.path().join("events.jsonl");
    run_ok(
        rill()
            .args(["gen", "--events", "3000", "--users", "200", "--output"])
            .arg(&input),
    );
    let pipeline = repo("benches/pipelines/bench_tumbling_5m.yaml");
    let out = tmp.path().join("out");
    let refused = |extra: &[&str]| {
        let o = rill()
            .args(["replay", "--json"])
            .arg(&pipeline)
            .arg("--input")
            .arg(&input)
            .arg("--output")
            .arg(&out)
            .args(extra)
            .output()
            .expect("runs");
        assert!(!o.status.success(), "{extra:?}");
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    replay_cli(&pipeline, &input, &out, &["--threads", "2"]);
    let want = rows(&out);
    assert!(!want.is_empty());
    let err = refused(&["--shard", "0/2"]);
    assert!(
        err.contains("--shard 0/2") && err.contains("double"),
        "{err}"
    );
    assert_eq!(rows(&out), want);
    // Shards of one count go together; another count is refused.
    std::fs::remove_dir_all(&out).expect("clean");
    replay_cli(&pipeline, &input, &out, &["--shard", "0/2"]);
    replay_cli(&pipeline, &input, &out, &["--shard", "1/2"]);
    assert_eq!(rows(&out), want);
    let err = refused(&["--shard", "2/3"]);
    assert!(err.contains("another shard count"), "{err}");
    assert_eq!(rows(&out), want);
}
