//! `rill._rill`: the native side of the Python package. Each function
//! takes plain values (paths, strings, Arrow C streams), does its work with
//! the GIL released on a thread of its own, and answers with plain values
//! or an Arrow C stream; `rill/__init__.py` wraps them in the typed API.
//!
//! Errors cross as one exception, `NativeError(kind, message, file, line,
//! column)`, which the Python side raises again as the class of its
//! hierarchy that fits `kind`. Messages are the command line's.
//!
//! Long calls wait for their thread in short steps and check for signals
//! in between, so Ctrl-C interrupts the call (`KeyboardInterrupt`); the
//! abandoned work ends on its own thread and its result is dropped.

use std::ffi::CStr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use arrow_array::ffi_stream::{FFI_ArrowArrayStream, RecordBatchStreamReader};
use arrow_array::{RecordBatch, RecordBatchIterator, RecordBatchReader};
use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::PyCapsule;

use rill::config::{ConfigError, Pipeline};
use rill::join::{JoinError, JoinOptions, Mode};

create_exception!(_rill, NativeError, PyException);

const STREAM: &CStr = c"arrow_array_stream";

/// A failure on its way to Python: (kind, message, file, line, column).
struct Failure {
    kind: &'static str,
    message: String,
    at: Option<(String, u64, u64)>,
}

impl Failure {
    fn new(kind: &'static str, message: impl Into<String>) -> Failure {
        Failure {
            kind,
            message: message.into(),
            at: None,
        }
    }
}

impl From<ConfigError> for Failure {
    fn from(e: ConfigError) -> Failure {
        Failure {
            kind: "validation",
            message: e.to_string(),
            at: Some((e.file.clone(), e.line, e.column)),
        }
    }
}

impl From<JoinError> for Failure {
    fn from(e: JoinError) -> Failure {
        let kind = match &e {
            JoinError::UnknownGroup { .. } => "unknown_group",
            JoinError::UnknownFeature { .. } => "unknown_feature",
            JoinError::MissingColumn { .. } => "missing_column",
            JoinError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                "not_found"
            }
            _ => "join",
        };
        Failure::new(kind, error_chain(&e))
    }
}

/// An error and its sources, as the command line prints them.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

fn raise(f: Failure) -> PyErr {
    let (file, line, column) = match f.at {
        Some((file, l, c)) => (Some(file), Some(l), Some(c)),
        None => (None, None, None),
    };
    NativeError::new_err((f.kind, f.message, file, line, column))
}

/// Runs `work` on a thread of its own with the GIL released, checking for
/// signals (Ctrl-C) every 50 ms; `tick` runs with the GIL between checks
/// (progress reports).
fn run_interruptible<T: Send + 'static>(
    py: Python<'_>,
    work: impl FnOnce() -> Result<T, Failure> + Send + 'static,
    mut tick: impl FnMut(Python<'_>) -> PyResult<()>,
) -> PyResult<T> {
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("rill-python".into())
        .spawn(move || {
            let _ = tx.send(work());
        })
        .map_err(|e| raise(Failure::new("io", format!("cannot start a thread: {e}"))))?;
    let mut rx = rx;
    loop {
        let (back, got) = py.detach(move || {
            let got = rx.recv_timeout(Duration::from_millis(50));
            (rx, got)
        });
        rx = back;
        match got {
            Ok(Ok(v)) => {
                tick(py)?;
                return Ok(v);
            }
            Ok(Err(f)) => return Err(raise(f)),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                py.check_signals()?;
                tick(py)?;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(raise(Failure::new(
                    "internal",
                    "the work's thread panicked",
                )))
            }
        }
    }
}

/// The pipelines of a directory, or of one file.
fn load_pipelines(path: &Path) -> Result<Vec<Pipeline>, Failure> {
    if !path.exists() {
        return Err(Failure::new(
            "not_found",
            format!("{}: no such file or directory", path.display()),
        ));
    }
    if path.is_dir() {
        Ok(rill::config::load_dir(path)?)
    } else {
        Ok(vec![Pipeline::from_file(path)?])
    }
}

/// Validates a pipeline file or a directory of them; returns the names of
/// the pipelines.
#[pyfunction]
fn validate(_py: Python<'_>, path: PathBuf) -> PyResult<Vec<String>> {
    load_pipelines(&path)
        .map(|ps| ps.into_iter().map(|p| p.name).collect())
        .map_err(raise)
}

/// Reads every batch of an Arrow C stream capsule.
fn read_stream(
    py: Python<'_>,
    capsule: &Bound<'_, PyCapsule>,
) -> PyResult<(arrow_schema::SchemaRef, Vec<RecordBatch>)> {
    let ptr = capsule.pointer_checked(Some(STREAM))?;
    // SAFETY: the capsule is an Arrow C stream (its name says so, as the
    // Arrow PyCapsule interface requires); `from_raw` moves the stream out
    // and leaves a released one behind, which the capsule's destructor
    // then ignores.
    let reader = unsafe { RecordBatchStreamReader::from_raw(ptr.as_ptr().cast()) }
        .map_err(|e| raise(Failure::new("join", e.to_string())))?;
    let schema = reader.schema();
    let batches = py
        .detach(|| reader.collect::<Result<Vec<_>, _>>())
        .map_err(|e| raise(Failure::new("join", e.to_string())))?;
    Ok((schema, batches))
}

/// The point-in-time join of `rill join` over entity rows given as an
/// Arrow C stream; answers an Arrow C stream of the joined rows.
#[pyfunction]
#[pyo3(signature = (entities, groups, offline, mode, timestamp_column, full_names, pipelines, keys, ttl))]
#[allow(clippy::too_many_arguments)]
fn join<'py>(
    py: Python<'py>,
    entities: &Bound<'py, PyCapsule>,
    groups: Vec<String>,
    offline: PathBuf,
    mode: &str,
    timestamp_column: String,
    full_names: bool,
    pipelines: PathBuf,
    keys: Vec<String>,
    ttl: Vec<String>,
) -> PyResult<Bound<'py, PyCapsule>> {
    let mode = match mode {
        "final" => Mode::Final,
        "as_of_emit" => Mode::AsOfEmit,
        other => {
            return Err(raise(Failure::new(
                "value",
                format!("mode {other:?}: expected \"final\" or \"as_of_emit\""),
            )))
        }
    };
    let (schema, batches) = read_stream(py, entities)?;
    let (out_schema, out) = run_interruptible(
        py,
        move || {
            // An offline store in object storage is copied to a local
            // directory of this call's own first (removed at the end).
            let staged = rill::join::stage_offline(&offline, &groups)?;
            let offline = staged.as_ref().map_or(offline, |s| s.dir.clone());
            let ps = load_pipelines(&pipelines)?;
            let specs =
                rill::join::resolve_groups(&groups, &ps, &pipelines, &offline, &keys, &ttl)?;
            let opts = JoinOptions {
                timestamp_column,
                full_names,
            };
            Ok(rill::join::join_batches(
                &specs, &offline, mode, &opts, &batches, schema,
            )?)
        },
        |_| Ok(()),
    )?;
    let reader: Box<dyn RecordBatchReader + Send> = Box::new(RecordBatchIterator::new(
        out.into_iter().map(Ok),
        out_schema,
    ));
    PyCapsule::new_with_value(py, FFI_ArrowArrayStream::new(reader), STREAM)
}

/// `rill replay`: returns the summary as JSON text. `progress`, if given,
/// is called with (bytes read, input size or None, records) as it goes.
#[pyfunction]
#[pyo3(signature = (pipeline, input, output, threads, progress=None))]
fn replay(
    py: Python<'_>,
    pipeline: PathBuf,
    input: PathBuf,
    output: PathBuf,
    threads: usize,
    progress: Option<Py<PyAny>>,
) -> PyResult<String> {
    let bytes = Arc::new(AtomicU64::new(0));
    let size = Arc::new(AtomicU64::new(u64::MAX));
    let records = Arc::new(AtomicU64::new(0));
    let (b, s, r) = (bytes.clone(), size.clone(), records.clone());
    let work = move || {
        if !input.exists() {
            return Err(Failure::new(
                "not_found",
                format!("{}: no such file", input.display()),
            ));
        }
        let p = match load_pipelines(&pipeline)?.into_iter().next() {
            Some(p) => p,
            None => return Err(Failure::new("validation", "no pipeline")),
        };
        let mut o = rill::replay::ReplayOptions::new(p, input, output);
        o.threads = threads;
        o.progress = Some(Box::new(move |bytes_read, total, recs| {
            b.store(bytes_read, Ordering::Relaxed);
            s.store(total.unwrap_or(u64::MAX), Ordering::Relaxed);
            r.store(recs, Ordering::Relaxed);
        }));
        let summary = rill::replay::run(o).map_err(|e| Failure::new("replay", error_chain(&e)))?;
        serde_json::to_string(&summary).map_err(|e| Failure::new("internal", e.to_string()))
    };
    run_interruptible(py, work, |py| match &progress {
        Some(cb) => {
            let total = size.load(Ordering::Relaxed);
            cb.call1(
                py,
                (
                    bytes.load(Ordering::Relaxed),
                    (total != u64::MAX).then_some(total),
                    records.load(Ordering::Relaxed),
                ),
            )
            .map(|_| ())
        }
        None => Ok(()),
    })
}

/// The registry of a deployment's pipelines (`rill features`): `op` is
/// `list`, `search` (of `arg`), `describe` or `lineage` (of `arg`, a group
/// or `group:feature`); answers JSON text.
#[pyfunction]
#[pyo3(signature = (pipelines, op, arg=None))]
fn registry(pipelines: PathBuf, op: &str, arg: Option<String>) -> PyResult<String> {
    use rill::serve::registry::{LookupError, Registry};
    let ps = load_pipelines(&pipelines).map_err(raise)?;
    let reg = Registry::new(ps).map_err(|e| raise(Failure::new("validation", e)))?;
    let arg = arg.unwrap_or_default();
    let lookup = |e: LookupError| {
        let kind = match e {
            LookupError::Group(..) => "unknown_group",
            LookupError::Feature(..) => "unknown_feature",
        };
        raise(Failure::new(kind, e.to_string()))
    };
    let v = match op {
        "list" => serde_json::to_value(reg.list()),
        "search" => serde_json::to_value(reg.search(&arg)),
        "describe" => {
            let (g, f) = reg.describe(&arg).map_err(lookup)?;
            let mut v = serde_json::json!({ "group": g });
            if let Some(f) = f {
                v["feature"] = serde_json::to_value(f).unwrap_or_default();
            }
            Ok(v)
        }
        "lineage" => serde_json::to_value(reg.lineage(&arg).map_err(lookup)?),
        other => {
            return Err(raise(Failure::new(
                "value",
                format!("unknown registry call {other:?}"),
            )))
        }
    };
    v.map(|v| v.to_string())
        .map_err(|e| raise(Failure::new("internal", e.to_string())))
}

/// The version of the rill library inside.
#[pyfunction]
fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

#[pymodule]
fn _rill(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("NativeError", m.py().get_type::<NativeError>())?;
    m.add_function(wrap_pyfunction!(validate, m)?)?;
    m.add_function(wrap_pyfunction!(join, m)?)?;
    m.add_function(wrap_pyfunction!(replay, m)?)?;
    m.add_function(wrap_pyfunction!(registry, m)?)?;
    m.add_function(wrap_pyfunction!(version, m)?)?;
    Ok(())
}
