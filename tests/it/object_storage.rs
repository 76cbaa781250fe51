//! Object storage against a real S3-compatible server (SeaweedFS, see
//! `seaweed`): conditional checkpoint writes and fencing, replay into a
//! bucket equal to replay into a directory, refusals.

use std::path::Path;

use rill::checkpoint::{Checkpoint, CheckpointError, Store, CHECKPOINT_VERSION};

use crate::seaweed::{s3, SECRET_KEY};
use crate::util::*;

fn checkpoint(partition: i32, generation: u64) -> Checkpoint {
    Checkpoint {
        version: CHECKPOINT_VERSION,
        pipeline: "spend".into(),
        topic: "tx".into(),
        partition,
        generation,
        next_offset: Some(generation as i64 * 10),
        epoch: generation,
        state: None,
        pending_files: Vec::new(),
        online_image: Vec::new(),
        online_token: None,
    }
}

#[test]
fn conditional_writes_refuse_a_second_create_and_a_stale_update() {
    let url = format!("{}/object", s3().prefix("conditional"));
    let v1 = rill::storage::put_if(&url, b"one".to_vec(), None)
        .expect("store answers")
        .expect("created");
    assert_eq!(
        rill::storage::put_if(&url, b"two".to_vec(), None).expect("store answers"),
        Err(rill::storage::Conflict),
        "a second create"
    );
    let v2 = rill::storage::put_if(&url, b"two".to_vec(), Some(&v1))
        .expect("store answers")
        .expect("updated at the current version");
    assert_ne!(v1, v2);
    assert_eq!(
        rill::storage::put_if(&url, b"three".to_vec(), Some(&v1)).expect("store answers"),
        Err(rill::storage::Conflict),
        "an update at a stale version"
    );
    let (body, v) = rill::storage::get(&url).expect("read").expect("exists");
    assert_eq!(body.as_ref(), b"two");
    assert_eq!(v, v2);
}

#[test]
fn two_instances_racing_for_a_partition_fence_the_former_owner() {
    let state = s3().prefix("fencing");
    let a = Store::new(Path::new(&state), "spend", "tx");
    let b = Store::new(Path::new(&state), "spend", "tx");
    // A owns partition 0 and checkpoints it.
    assert!(a.load(0).expect("load").is_none());
    a.store(&checkpoint(0, 1)).expect("first owner claims");
    a.store(&checkpoint(0, 1)).expect("and checkpoints");
    // B takes the partition over: it loads A's checkpoint and claims it.
    let got = b.load(0).expect("load").expect("A's checkpoint");
    assert_eq!(got.generation, 1);
    b.store(&checkpoint(0, 2)).expect("the new owner claims");
    // A, a zombie now, can no longer write.
    match a.store(&checkpoint(0, 1)) {
        Err(CheckpointError::Fenced { partition: 0, .. }) => {}
        other => panic!("the zombie's write was not refused: {other:?}"),
    }
    assert_eq!(b.load(0).expect("load").expect("there").generation, 2);
    // Nor can an instance that never read the partition.
    let c = Store::new(Path::new(&state), "spend", "tx");
    assert!(matches!(
        c.store(&checkpoint(0, 9)),
        Err(CheckpointError::Fenced { .. })
    ));
    // The owner goes on; a retried write of the same checkpoint counts as stored.
    b.store(&checkpoint(0, 2)).expect("the owner checkpoints");
    // Partitions are fenced one by one: A still owns partition 1.
    assert!(a.load(1).expect("load").is_none());
    a.store(&checkpoint(1, 1)).expect("another partition");
    assert_eq!(b.load(0).expect("load").expect("there").generation, 2);
}

#[test]
fn replay_into_a_bucket_equals_replay_into_a_directory() {
    let server = s3();
    let tmp = tempfile::tempdir().expect("tempdir");
    let input = tmp.path().join("events.jsonl");
    run_ok(
        rill()
            .args(["gen", "--events", "20000", "--users", "300", "--output"])
            .arg(&input),
    );
    // Bad lines: the dead letters go to the bucket too.
    let mut text = std::fs::read_to_string(&input).expect("input");
    text.push_str("not json\n{\"user_id\":\"u1\"}\n");
    std::fs::write(&input, text).expect("input");
    let pipeline = repo("pipelines/user_spend_5m.yaml");
    let local = tmp.path().join("local");
    let s_local = replay_cli(&pipeline, &input, &local, &["--threads", "1"]);
    let want_rows = rows(&local);
    let want_letters = letters(&local);
    assert!(!want_rows.is_empty() && want_letters.len() == 2);

    let run_into = |bucket: &str, extra: &[&str]| {
        let out = rill()
            .args(["replay", "--json"])
            .arg(&pipeline)
            .arg("--input")
            .arg(&input)
            .args(["--output", bucket])
            .args(extra)
            .envs(server.env())
            .output()
            .expect("rill runs");
        for text in [&out.stdout, &out.stderr] {
            assert!(
                !String::from_utf8_lossy(text).contains(SECRET_KEY),
                "the secret key in rill's output"
            );
        }
        out
    };
    let bucket = server.prefix("replay");
    let run = |extra: &[&str]| {
        let out = run_into(&bucket, extra);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("summary")
    };
    let fetch = |url: &str, name: &str| {
        let dir = tmp.path().join(name);
        server.download(url, &dir);
        dir
    };
    let s1 = run(&["--threads", "1"]);
    assert_eq!(s1["rows"], s_local["rows"]);
    let files = s1["files"].as_array().expect("files");
    assert!(
        files
            .iter()
            .all(|f| f.as_str().is_some_and(|f| f.starts_with(&bucket))),
        "the summary names the objects: {files:?}"
    );
    let got = fetch(&bucket, "one");
    assert_eq!(rows(&got), want_rows, "one thread");
    assert_eq!(letters(&got), want_letters, "one thread");

    // A rerun with two threads replaces the first run's objects.
    run(&["--threads", "2", "--chunk-bytes", "65536"]);
    let got = fetch(&bucket, "two");
    assert_eq!(rows(&got), want_rows, "two threads over one");
    assert_eq!(letters(&got), want_letters, "two threads over one");
    let names = |dir: &Path| {
        let mut n: Vec<String> = files_with(dir, "parquet")
            .into_iter()
            .chain(files_with(dir, "jsonl"))
            .map(|p| p.file_name().expect("name").to_string_lossy().into_owned())
            .collect();
        n.sort();
        n
    };
    run(&["--threads", "1"]);
    let got = fetch(&bucket, "three");
    assert_eq!(names(&got), names(&local), "no stale object is left");

    // A shard is refused over the unsharded run's objects (it would double
    // rows), and names the bucket.
    let out = run_into(&bucket, &["--shard", "0/2"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains(&bucket), "{err}");

    // Two shards into another prefix equal one run; a shard's rerun
    // replaces only its own objects.
    let sharded = server.prefix("shards");
    for i in [0, 1, 1] {
        let out = run_into(&sharded, &["--shard", &format!("{i}/2")]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let got = fetch(&sharded, "shards");
    assert_eq!(rows(&got), want_rows, "shards");
    assert_eq!(letters(&got), want_letters, "shards");
    // The join over the bucket equals the join over the directory.
    let mut csv = String::from("user_id,event_timestamp,label\n");
    let text = std::fs::read_to_string(&input).expect("input");
    for (i, line) in text.lines().take(400).enumerate() {
        let v: serde_json::Value = serde_json::from_str(line).expect("event");
        csv.push_str(&format!(
            "{},{},{i}\n",
            v["user_id"].as_str().expect("user"),
            v["event_time"].as_str().expect("time")
        ));
    }
    let ent = tmp.path().join("entities.csv");
    std::fs::write(&ent, &csv).expect("csv");
    let join = |offline: &str, out: &Path| {
        std::fs::create_dir_all(out).expect("dir");
        run_ok(
            rill()
                .args(["join", "--entities"])
                .arg(&ent)
                .args(["--offline", offline, "--pipelines"])
                .arg(repo("pipelines"))
                .args(["--group", "user_spend_5m", "--output"])
                .arg(out.join("train.parquet"))
                .envs(server.env()),
        );
        read_rows(out)
            .into_iter()
            .map(|mut r| {
                r.remove("_file");
                serde_json::to_string(&r).expect("json")
            })
            .collect::<Vec<_>>()
    };
    let from_dir = join(&local.to_string_lossy(), &tmp.path().join("train-local"));
    let from_bucket = join(&bucket, &tmp.path().join("train-bucket"));
    assert_eq!(from_dir.len(), 400);
    assert_eq!(from_bucket, from_dir, "the same rows in the same order");

    for url in [&bucket, &sharded] {
        let listed = rill::storage::list(url).expect("list");
        assert!(
            listed.iter().all(|n| !n.ends_with(".tmp")),
            "temporary objects left: {listed:?}"
        );
    }
}

#[test]
fn an_unknown_object_store_is_refused_with_its_position() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let text = std::fs::read_to_string(repo("pipelines/user_spend_5m.yaml"))
        .expect("pipeline")
        .replace("path: ./features", "path: ftp://host/features");
    assert!(
        text.contains("ftp://"),
        "the example pipeline's parquet path moved"
    );
    let p = tmp.path().join("p.yaml");
    std::fs::write(&p, &text).expect("write");
    let line = text
        .lines()
        .position(|l| l.contains("ftp://"))
        .expect("line")
        + 1;
    let out = rill().arg("validate").arg(&p).output().expect("runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("p.yaml:{line}:")) && err.contains("unknown object store \"ftp\""),
        "{err}"
    );
}
