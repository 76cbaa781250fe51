//! Helpers shared by the integration tests.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type, TimestampMicrosecondType};
use arrow_array::{Array, RecordBatch};
use arrow_schema::DataType;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::{Map, Value};

pub fn rill() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rill"))
}

pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("rill runs");
    assert!(
        out.status.success(),
        "rill failed: {:?}\nstdout: {}\nstderr: {}",
        cmd,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn repo(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

/// Every `*.parquet` file under `dir`, sorted by path.
pub fn parquet_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "parquet") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

fn ts_text(us: i64) -> String {
    rill::time::format_rfc3339(us)
}

/// Rows of a record batch as JSON objects (timestamps as RFC 3339 text).
pub fn batch_rows(b: &RecordBatch) -> Vec<Map<String, Value>> {
    let mut rows = vec![Map::new(); b.num_rows()];
    for (ci, field) in b.schema().fields().iter().enumerate() {
        let col = match field.data_type() {
            DataType::Timestamp(_, _) => arrow_cast::cast(
                b.column(ci),
                &DataType::Timestamp(arrow_schema::TimeUnit::Microsecond, None),
            )
            .expect("timestamps cast to microseconds"),
            _ => b.column(ci).clone(),
        };
        for (i, row) in rows.iter_mut().enumerate() {
            let v = if col.is_null(i) {
                Value::Null
            } else {
                match field.data_type() {
                    DataType::Utf8 => Value::String(col.as_string::<i32>().value(i).to_string()),
                    DataType::Int64 => Value::from(col.as_primitive::<Int64Type>().value(i)),
                    DataType::Float64 => Value::from(col.as_primitive::<Float64Type>().value(i)),
                    DataType::Boolean => Value::Bool(col.as_boolean().value(i)),
                    DataType::Timestamp(_, _) => Value::String(ts_text(
                        col.as_primitive::<TimestampMicrosecondType>().value(i),
                    )),
                    other => panic!("unexpected column type {other}"),
                }
            };
            row.insert(field.name().clone(), v);
        }
    }
    rows
}

/// All rows of all Parquet files under `dir`, each with a `_file` entry.
pub fn read_rows(dir: &Path) -> Vec<Map<String, Value>> {
    let mut all = Vec::new();
    for f in parquet_files(dir) {
        let file = std::fs::File::open(&f).expect("open parquet");
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .expect("parquet")
            .build()
            .expect("reader");
        for b in reader {
            for mut r in batch_rows(&b.expect("batch")) {
                r.insert("_file".into(), Value::String(f.display().to_string()));
                all.push(r);
            }
        }
    }
    all
}

/// Values equal, floats within 1e-9 relative.
pub fn close(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (
                x.as_f64().unwrap_or(f64::NAN),
                y.as_f64().unwrap_or(f64::NAN),
            );
            x == y || (x - y).abs() <= 1e-9 * x.abs().max(y.abs())
        }
        _ => a == b,
    }
}

/// A canonical order for pane rows: keys, window, pane index, retraction.
pub fn sort_key(r: &Map<String, Value>, keys: &[&str]) -> String {
    let mut s = String::new();
    for k in keys {
        s.push_str(&format!(
            "{:>24}|",
            r.get(*k).map(|v| v.to_string()).unwrap_or_default()
        ));
    }
    s.push_str(&format!(
        "{}|{}|{:>6}|{}",
        r["window_start"], r["window_end"], r["pane_index"], r["retraction"]
    ));
    s
}
