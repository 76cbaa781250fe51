//! The offline sink: panes as Parquet rows, partitioned by the UTC date of
//! `window_end` (SPEC 6).
//!
//! Rows are buffered per date and written as row groups into one open file
//! per date. A file is written under a hidden temporary name and renamed into
//! place when it closes, so readers never see a partial file. File names
//! carry a run identifier chosen by the caller: a replay of the same input
//! produces the same names and so replaces its earlier files instead of
//! adding rows beside them.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::builder::{
    BooleanBuilder, Float64Builder, Int64Builder, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

use crate::aggregate::Value;
use crate::config::{AggKind, FeatureKind, Pipeline, ValueType};
use crate::engine::Pane;
use crate::event::KeyPart;
use crate::time::{utc_date, Micros, MICROS_PER_DAY};

/// Errors of the offline sink.
#[derive(Debug, thiserror::Error)]
pub enum ParquetSinkError {
    #[error("failed to write {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("failed to encode parquet file {path}: {source}")]
    Parquet {
        path: PathBuf,
        source: parquet::errors::ParquetError,
    },
    #[error("failed to build a record batch: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
}

/// Column type of a feature before any data is seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ColKind {
    Int,
    Float,
    Bool,
    Str,
    /// first/last without a declared type: decided by the first batch of a file.
    Infer,
}

/// Rows kept before they are encoded as a row group.
const ROW_GROUP_ROWS: usize = 128 * 1024;

struct DayFile {
    writer: ArrowWriter<File>,
    tmp: PathBuf,
    dest: PathBuf,
    schema: SchemaRef,
}

/// Writes panes of one feature group to `<root>/<group>/date=YYYY-MM-DD/`.
pub struct ParquetSink {
    dir: PathBuf,
    run_id: String,
    key_names: Vec<String>,
    feature_names: Vec<String>,
    feature_kinds: Vec<ColKind>,
    allowed_lateness: Micros,
    buffers: BTreeMap<i64, Vec<Pane>>,
    open: BTreeMap<i64, DayFile>,
    seq: u64,
    written: Vec<PathBuf>,
    rows: u64,
}

impl ParquetSink {
    /// A sink under `root` for pipeline `p`; `run_id` names its files.
    pub fn new(root: &Path, p: &Pipeline, run_id: &str) -> ParquetSink {
        let feature_kinds = p
            .features
            .iter()
            .map(|f| match &f.kind {
                FeatureKind::Derived(_) => ColKind::Float,
                FeatureKind::Agg {
                    agg: AggKind::Count,
                    ..
                } => ColKind::Int,
                FeatureKind::Agg {
                    agg: AggKind::First | AggKind::Last,
                    ..
                } => match f.value_type {
                    ValueType::Int => ColKind::Int,
                    ValueType::Float => ColKind::Float,
                    ValueType::Bool => ColKind::Bool,
                    ValueType::String => ColKind::Str,
                    ValueType::Inferred => ColKind::Infer,
                },
                FeatureKind::Agg { .. } => ColKind::Float,
            })
            .collect();
        ParquetSink {
            dir: root.join(&p.name),
            run_id: run_id.to_string(),
            key_names: p.key_fields.clone(),
            feature_names: p.features.iter().map(|f| f.name.clone()).collect(),
            feature_kinds,
            allowed_lateness: p.allowed_lateness,
            buffers: BTreeMap::new(),
            open: BTreeMap::new(),
            seq: 0,
            written: Vec::new(),
            rows: 0,
        }
    }

    /// The group's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Rows accepted so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Files renamed into place so far.
    pub fn files(&self) -> &[PathBuf] {
        &self.written
    }

    /// Takes panes (and drains the vector).
    pub fn write(&mut self, panes: &mut Vec<Pane>) -> Result<(), ParquetSinkError> {
        for pane in panes.drain(..) {
            let day = pane.window_end.div_euclid(MICROS_PER_DAY);
            self.rows += 1;
            let buf = self.buffers.entry(day).or_default();
            buf.push(pane);
            if buf.len() >= ROW_GROUP_ROWS {
                let rows = std::mem::take(buf);
                self.flush_day(day, rows)?;
            }
        }
        Ok(())
    }

    /// Closes the files of dates no pane can reach any more: every window
    /// ending on that date has expired once `W >= day end + allowed lateness`.
    pub fn on_watermark(&mut self, w: Micros) -> Result<(), ParquetSinkError> {
        let closable: Vec<i64> = self
            .open
            .keys()
            .chain(self.buffers.keys())
            .copied()
            .filter(|d| {
                (d + 1)
                    .saturating_mul(MICROS_PER_DAY)
                    .saturating_add(self.allowed_lateness)
                    <= w
            })
            .collect();
        for d in closable {
            self.close_day(d)?;
        }
        Ok(())
    }

    /// Writes and closes everything.
    pub fn finish(&mut self) -> Result<(), ParquetSinkError> {
        let days: Vec<i64> = self
            .open
            .keys()
            .chain(self.buffers.keys())
            .copied()
            .collect();
        for d in days {
            self.close_day(d)?;
        }
        Ok(())
    }

    /// Removes files of this run's identifier that this run did not write
    /// (left by an earlier, longer run over the same input).
    pub fn remove_stale(&self) -> Result<usize, ParquetSinkError> {
        let prefix = format!("part-{}-", self.run_id);
        let mut removed = 0;
        let Ok(days) = std::fs::read_dir(&self.dir) else {
            return Ok(0);
        };
        for day in days.flatten() {
            let Ok(files) = std::fs::read_dir(day.path()) else {
                continue;
            };
            for f in files.flatten() {
                let path = f.path();
                let name = f.file_name().to_string_lossy().into_owned();
                if name.starts_with(&prefix)
                    && name.ends_with(".parquet")
                    && !self.written.contains(&path)
                {
                    std::fs::remove_file(&path).map_err(|source| ParquetSinkError::Io {
                        path: path.clone(),
                        source,
                    })?;
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }

    fn close_day(&mut self, day: i64) -> Result<(), ParquetSinkError> {
        if let Some(rows) = self.buffers.remove(&day) {
            if !rows.is_empty() {
                self.flush_day(day, rows)?;
            }
        }
        if let Some(f) = self.open.remove(&day) {
            f.writer
                .close()
                .map_err(|source| ParquetSinkError::Parquet {
                    path: f.tmp.clone(),
                    source,
                })?;
            std::fs::rename(&f.tmp, &f.dest).map_err(|source| ParquetSinkError::Io {
                path: f.dest.clone(),
                source,
            })?;
            self.written.push(f.dest);
        }
        Ok(())
    }

    fn flush_day(&mut self, day: i64, rows: Vec<Pane>) -> Result<(), ParquetSinkError> {
        if !self.open.contains_key(&day) {
            let schema = self.schema_for(&rows);
            let date_dir = self
                .dir
                .join(format!("date={}", utc_date(day * MICROS_PER_DAY)));
            std::fs::create_dir_all(&date_dir).map_err(|source| ParquetSinkError::Io {
                path: date_dir.clone(),
                source,
            })?;
            let name = format!("part-{}-{:05}.parquet", self.run_id, self.seq);
            self.seq += 1;
            let dest = date_dir.join(&name);
            let tmp = date_dir.join(format!(".{name}.tmp"));
            let file = File::create(&tmp).map_err(|source| ParquetSinkError::Io {
                path: tmp.clone(),
                source,
            })?;
            let props = WriterProperties::builder()
                .set_compression(Compression::SNAPPY)
                .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
                .build();
            let writer =
                ArrowWriter::try_new(file, schema.clone(), Some(props)).map_err(|source| {
                    ParquetSinkError::Parquet {
                        path: tmp.clone(),
                        source,
                    }
                })?;
            self.open.insert(
                day,
                DayFile {
                    writer,
                    tmp,
                    dest,
                    schema,
                },
            );
        }
        let f = self.open.get_mut(&day).expect("opened above");
        let batch = build_batch(&f.schema, &self.key_names, &self.feature_names, &rows)?;
        f.writer
            .write(&batch)
            .map_err(|source| ParquetSinkError::Parquet {
                path: f.tmp.clone(),
                source,
            })?;
        Ok(())
    }

    fn schema_for(&self, rows: &[Pane]) -> SchemaRef {
        let ts = || DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
        let mut fields = Vec::new();
        for (i, k) in self.key_names.iter().enumerate() {
            let all_int = rows
                .iter()
                .all(|p| matches!(p.key.part(i), Some(KeyPart::Int(_))));
            fields.push(Field::new(
                k,
                if all_int {
                    DataType::Int64
                } else {
                    DataType::Utf8
                },
                false,
            ));
        }
        fields.push(Field::new("window_start", ts(), false));
        fields.push(Field::new("window_end", ts(), false));
        for (i, (name, kind)) in self
            .feature_names
            .iter()
            .zip(&self.feature_kinds)
            .enumerate()
        {
            let dt = match kind {
                ColKind::Int => DataType::Int64,
                ColKind::Float => DataType::Float64,
                ColKind::Bool => DataType::Boolean,
                ColKind::Str => DataType::Utf8,
                ColKind::Infer => infer(rows.iter().map(|p| &p.values[i])),
            };
            fields.push(Field::new(name, dt, true));
        }
        fields.push(Field::new("pane_index", DataType::Int64, false));
        fields.push(Field::new("timing", DataType::Utf8, false));
        fields.push(Field::new("is_final", DataType::Boolean, false));
        fields.push(Field::new("retraction", DataType::Boolean, false));
        fields.push(Field::new("emitted_at", ts(), false));
        fields.push(Field::new("watermark", ts(), true));
        Arc::new(Schema::new(fields))
    }
}

fn infer<'a>(vals: impl Iterator<Item = &'a Value>) -> DataType {
    let (mut nums, mut bools, mut other) = (0, 0, 0);
    for v in vals {
        match v {
            Value::Null => {}
            Value::Float(_) | Value::Int(_) => nums += 1,
            Value::Bool(_) => bools += 1,
            Value::Str(_) => other += 1,
        }
    }
    if other == 0 && bools == 0 {
        DataType::Float64
    } else if other == 0 && nums == 0 {
        DataType::Boolean
    } else {
        DataType::Utf8
    }
}

fn value_text(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::Int(i) => Some(i.to_string()),
        Value::Float(f) => Some(crate::sink::format_f64(*f)),
        Value::Bool(b) => Some(b.to_string()),
        Value::Str(s) => Some(s.clone()),
    }
}

/// Builds one record batch of `rows` in `schema`'s layout.
pub fn build_batch(
    schema: &SchemaRef,
    key_names: &[String],
    feature_names: &[String],
    rows: &[Pane],
) -> Result<RecordBatch, arrow_schema::ArrowError> {
    let n = rows.len();
    let mut cols: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    let ts_col = |f: &dyn Fn(&Pane) -> Option<Micros>| -> ArrayRef {
        let mut b = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
        for p in rows {
            b.append_option(f(p));
        }
        Arc::new(b.finish())
    };
    for i in 0..key_names.len() {
        match schema.field(i).data_type() {
            DataType::Int64 => {
                let mut b = Int64Builder::with_capacity(n);
                for p in rows {
                    match p.key.part(i) {
                        Some(KeyPart::Int(v)) => b.append_value(v),
                        _ => b.append_null(),
                    }
                }
                cols.push(Arc::new(b.finish()));
            }
            _ => {
                let mut b = StringBuilder::with_capacity(n, n * 8);
                for p in rows {
                    match p.key.part(i) {
                        Some(KeyPart::Int(v)) => b.append_value(v.to_string()),
                        Some(KeyPart::Str(s)) => b.append_value(s),
                        None => b.append_null(),
                    }
                }
                cols.push(Arc::new(b.finish()));
            }
        }
    }
    cols.push(ts_col(&|p| Some(p.window_start)));
    cols.push(ts_col(&|p| Some(p.window_end)));
    let base = key_names.len() + 2;
    for j in 0..feature_names.len() {
        match schema.field(base + j).data_type() {
            DataType::Int64 => {
                let mut b = Int64Builder::with_capacity(n);
                for p in rows {
                    b.append_option(match &p.values[j] {
                        Value::Int(i) => Some(*i),
                        Value::Float(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Some(*f as i64),
                        _ => None,
                    });
                }
                cols.push(Arc::new(b.finish()));
            }
            DataType::Float64 => {
                let mut b = Float64Builder::with_capacity(n);
                for p in rows {
                    b.append_option(p.values[j].as_f64());
                }
                cols.push(Arc::new(b.finish()));
            }
            DataType::Boolean => {
                let mut b = BooleanBuilder::with_capacity(n);
                for p in rows {
                    b.append_option(match &p.values[j] {
                        Value::Bool(x) => Some(*x),
                        _ => None,
                    });
                }
                cols.push(Arc::new(b.finish()));
            }
            _ => {
                let mut b = StringBuilder::with_capacity(n, n * 8);
                for p in rows {
                    b.append_option(value_text(&p.values[j]));
                }
                cols.push(Arc::new(b.finish()));
            }
        }
    }
    let mut pane_index = Int64Builder::with_capacity(n);
    let mut timing = StringBuilder::with_capacity(n, n * 7);
    let mut is_final = BooleanBuilder::with_capacity(n);
    let mut retraction = BooleanBuilder::with_capacity(n);
    for p in rows {
        pane_index.append_value(p.pane_index as i64);
        timing.append_value(p.timing.as_str());
        is_final.append_value(p.is_final);
        retraction.append_value(p.retraction);
    }
    cols.push(Arc::new(pane_index.finish()));
    cols.push(Arc::new(timing.finish()));
    cols.push(Arc::new(is_final.finish()));
    cols.push(Arc::new(retraction.finish()));
    cols.push(ts_col(&|p| Some(p.emitted_at)));
    cols.push(ts_col(&|p| p.watermark));
    RecordBatch::try_new(schema.clone(), cols)
}
