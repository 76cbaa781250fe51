//! The online store's compare-and-set against a model, on a real
//! redis-server: random writes of random versions, with null features, in
//! calls of several keys (a key twice in one call too), leave every hash as
//! the model says (the newest version's fields, null features absent) and
//! return how many hashes they wrote.

use std::collections::{BTreeMap, HashMap};

use rill::sink::redis::{names_digest, online_key_text, version_field, CAS_BODY};

use crate::util::RedisServer;

/// A pane as the writer sends it.
struct Write {
    key: usize,
    version: (i64, u64, u32),
    values: Vec<Option<String>>,
    emitted_at: i64,
}

fn argv(names: &[String], w: &Write) -> Vec<String> {
    let nulls: Vec<bool> = w.values.iter().map(Option::is_none).collect();
    let digest = names_digest(names);
    let mut v = String::new();
    let (end, generation, pane) = w.version;
    version_field(
        end,
        generation,
        pane,
        nulls
            .contains(&true)
            .then_some((digest.as_str(), &nulls[..])),
        &mut v,
    );
    let mut a = vec![
        v,
        (end - 10).to_string(),
        end.to_string(),
        w.emitted_at.to_string(),
        pane.to_string(),
        "0".to_string(),
    ];
    a.extend(w.values.iter().flatten().cloned());
    a
}

/// What a hash holds after `w` was written over a hash of a version not newer.
fn model_fields(names: &[String], w: &Write, argv: &[String]) -> BTreeMap<String, String> {
    let mut h = BTreeMap::new();
    for (k, f) in ["_v", "_window_start", "_window_end", "_emitted_at", "_pane"]
        .iter()
        .enumerate()
    {
        h.insert(f.to_string(), argv[k].clone());
    }
    for (n, v) in names.iter().zip(&w.values) {
        if let Some(v) = v {
            h.insert(n.clone(), v.clone());
        }
    }
    h
}

#[test]
fn compare_and_set_matches_the_model() {
    let dir = tempfile::tempdir().expect("tempdir");
    let redis = RedisServer::start(&dir.path().join("redis"));
    let client = redis::Client::open(redis.url()).expect("client");
    let mut c = client.get_connection().expect("connect");
    let names: Vec<String> = ["cnt", "sum", "top"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut rnd = |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    for round in 0..40 {
        // A round's writes, in batches of up to 5 keys per call (a key may
        // appear twice in one call).
        let writes: Vec<Write> = (0..60)
            .map(|i| Write {
                key: rnd(4) as usize,
                version: (rnd(4) as i64 * 100 - 100, rnd(3), rnd(3) as u32),
                values: (0..names.len())
                    .map(|f| (rnd(4) != 0).then(|| format!("{}.{f}", rnd(1000))))
                    .collect(),
                emitted_at: i,
            })
            .collect();
        let mut batches = Vec::new();
        let mut rest = &writes[..];
        while !rest.is_empty() {
            let take = (1 + rnd(5) as usize).min(rest.len());
            batches.push(&rest[..take]);
            rest = &rest[take..];
        }
        // Each round writes keys of its own.
        let prefix = format!("t{round}");
        let redis_key = |key: usize| online_key_text(&prefix, "g", &[key.to_string()]);
        let mut model: HashMap<usize, (String, BTreeMap<String, String>)> = HashMap::new();
        let mut written_total = 0i64;
        let mut expected_total = 0i64;
        for batch in &batches {
            let mut cmd = redis::cmd("EVAL");
            cmd.arg(CAS_BODY).arg(batch.len());
            for w in *batch {
                cmd.arg(redis_key(w.key));
            }
            cmd.arg(names.len());
            for n in &names {
                cmd.arg(n.as_str());
            }
            for w in *batch {
                let a = argv(&names, w);
                cmd.arg(&a);
                // Written when the stored version's first 40 digits are
                // not greater.
                let newer = model.get(&w.key).is_none_or(|(v, _)| v[..40] <= a[0][..40]);
                if newer {
                    expected_total += 1;
                    model.insert(w.key, (a[0].clone(), model_fields(&names, w, &a)));
                }
            }
            let written: i64 = cmd.query(&mut c).expect("compare-and-set");
            written_total += written;
        }
        assert_eq!(written_total, expected_total, "round {round}");
        for key in 0..4 {
            let got: BTreeMap<String, String> = redis::cmd("HGETALL")
                .arg(redis_key(key))
                .query(&mut c)
                .expect("hgetall");
            let want = model.get(&key).map(|(_, h)| h.clone()).unwrap_or_default();
            assert_eq!(got, want, "round {round} key {key}");
        }
    }
}
