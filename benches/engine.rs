//! Criterion benches of the core: decoding, and decode + assign + aggregate + fire.
//!
//! Run: `cargo bench --bench engine`. Input: 200,000 events of the standard
//! data set held in memory, so that no file I/O is measured.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use rill::config::Pipeline;
use rill::engine::{Engine, ProcessingTime};
use rill::event::{DecodePlan, Decoder};
use rill::gen::{write_json, GenOptions, Generator};

const N: u64 = 200_000;

fn lines() -> Vec<String> {
    let opts = GenOptions {
        events: N,
        users: 100_000,
        ..Default::default()
    };
    Generator::new(opts)
        .map(|e| {
            let mut s = String::new();
            write_json(&e, &mut s);
            s.pop();
            s
        })
        .collect()
}

fn pipeline(name: &str) -> Pipeline {
    let path = format!("{}/{name}", env!("CARGO_MANIFEST_DIR"));
    Pipeline::from_file(std::path::Path::new(&path)).expect("bench pipeline is valid")
}

fn bench(c: &mut Criterion) {
    let lines = lines();
    let mut g = c.benchmark_group("core");
    g.throughput(Throughput::Elements(N));
    g.sample_size(20);

    let p = pipeline("benches/pipelines/bench_tumbling_5m.yaml");
    g.bench_function("decode_json", |b| {
        let mut dec = Decoder::new(DecodePlan::new(&p));
        b.iter(|| {
            let mut t = 0i64;
            for l in &lines {
                t = t.wrapping_add(dec.decode_json(l.as_bytes()).map(|e| e.time).unwrap_or(0));
            }
            t
        })
    });

    for (name, file) in [
        (
            "tumbling_5m_on_time",
            "benches/pipelines/bench_tumbling_5m.yaml",
        ),
        ("user_spend_5m_early_late", "pipelines/user_spend_5m.yaml"),
    ] {
        let p = pipeline(file);
        g.bench_function(format!("decode_assign_aggregate_fire/{name}"), |b| {
            b.iter_batched(
                || {
                    let plan = rill::plan::Plan::new(&p);
                    let dec = Decoder::new(plan.decode.clone());
                    let engine = Engine::new(&plan, ProcessingTime::StreamTime);
                    (dec, engine, rill::engine::PaneBuf::new(p.features.len()))
                },
                |(mut dec, mut engine, mut out)| {
                    let mut panes = 0usize;
                    for l in &lines {
                        if let Ok(ev) = dec.decode_json(l.as_bytes()) {
                            let _ = engine.process(&ev, &mut out);
                        }
                        panes += out.len();
                        out.clear();
                    }
                    engine.finish(&mut out);
                    panes + out.len()
                },
                BatchSize::LargeInput,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
