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
    BooleanBuilder, Float64Builder, Int64Builder, ListBuilder, StringBuilder,
    TimestampMicrosecondBuilder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use crate::aggregate::Value;
use crate::config::{KeyType, ParquetCompression, ValueType};
use crate::engine::{PaneBuf, PaneMeta};
use crate::event::KeyPart;
use crate::plan::Plan;
use crate::time::{utc_date, Micros, MICROS_PER_DAY};

/// Errors of the offline sink.
#[derive(Debug, thiserror::Error)]
pub enum ParquetSinkError {
    #[error("failed to write {path}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("failed to encode parquet file {path}")]
    Parquet {
        path: PathBuf,
        source: parquet::errors::ParquetError,
    },
    #[error("failed to build a record batch")]
    Arrow(#[from] arrow_schema::ArrowError),
}

/// Column type of a feature before any data is seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ColKind {
    Int,
    Float,
    Bool,
    Str,
    /// first/last without a declared type: decided by the values of a file.
    Infer,
    /// collect_set: a list of strings.
    StrList,
}

/// Rows kept before they are encoded as a row group.
const ROW_GROUP_ROWS: usize = 128 * 1024;

/// Rows per data page (32 KiB of an 8-byte column).
const PAGE_ROWS: usize = 4096;

/// A key column, of the group's declared key type.
enum KeyCol {
    Int(Vec<i64>),
    Str(StringBuilder),
}

/// A feature column being filled.
enum FeatCol {
    Int(Int64Builder),
    Float(Float64Builder),
    Bool(BooleanBuilder),
    Str(StringBuilder),
    Infer(Vec<Value>),
    StrList(ListBuilder<StringBuilder>),
}

/// The rows of one date being collected, column by column.
struct DayCols {
    keys: Vec<KeyCol>,
    start: TimestampMicrosecondBuilder,
    end: TimestampMicrosecondBuilder,
    feats: Vec<FeatCol>,
    pane_index: Int64Builder,
    timing: StringBuilder,
    is_final: BooleanBuilder,
    retraction: BooleanBuilder,
    emitted: TimestampMicrosecondBuilder,
    watermark: TimestampMicrosecondBuilder,
    rows: usize,
}

impl DayCols {
    /// Columns with room for `cap` rows (a row group): no regrowth while filling.
    fn new(key_types: &[KeyType], kinds: &[ColKind], cap: usize) -> DayCols {
        let ts = || TimestampMicrosecondBuilder::with_capacity(cap).with_timezone("UTC");
        DayCols {
            keys: key_types
                .iter()
                .map(|t| match t {
                    KeyType::Int => KeyCol::Int(Vec::with_capacity(cap)),
                    KeyType::String => KeyCol::Str(StringBuilder::with_capacity(cap, cap * 8)),
                })
                .collect(),
            start: ts(),
            end: ts(),
            feats: kinds
                .iter()
                .map(|k| match k {
                    ColKind::Int => FeatCol::Int(Int64Builder::with_capacity(cap)),
                    ColKind::Float => FeatCol::Float(Float64Builder::with_capacity(cap)),
                    ColKind::Bool => FeatCol::Bool(BooleanBuilder::with_capacity(cap)),
                    ColKind::Str => FeatCol::Str(StringBuilder::new()),
                    ColKind::Infer => FeatCol::Infer(Vec::new()),
                    ColKind::StrList => FeatCol::StrList(ListBuilder::new(StringBuilder::new())),
                })
                .collect(),
            pane_index: Int64Builder::with_capacity(cap),
            timing: StringBuilder::with_capacity(cap, cap * 7),
            is_final: BooleanBuilder::with_capacity(cap),
            retraction: BooleanBuilder::with_capacity(cap),
            emitted: ts(),
            watermark: ts(),
            rows: 0,
        }
    }

    fn append(&mut self, m: &PaneMeta, values: &[Value]) {
        for (i, col) in self.keys.iter_mut().enumerate() {
            // The decoder refused keys of another type than the declared one.
            match (col, m.key.part(i)) {
                (KeyCol::Int(v), Some(KeyPart::Int(x))) => v.push(x),
                (KeyCol::Int(v), _) => v.push(0),
                (KeyCol::Str(b), p) => append_key_text(b, p),
            }
        }
        self.start.append_value(m.window_start);
        self.end.append_value(m.window_end);
        for (col, v) in self.feats.iter_mut().zip(values) {
            match col {
                FeatCol::Int(b) => b.append_option(match v {
                    Value::Int(i) => Some(*i),
                    Value::Float(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Some(*f as i64),
                    _ => None,
                }),
                FeatCol::Float(b) => b.append_option(v.as_f64()),
                FeatCol::Bool(b) => b.append_option(match v {
                    Value::Bool(x) => Some(*x),
                    _ => None,
                }),
                FeatCol::Str(b) => b.append_option(value_text(v)),
                FeatCol::Infer(vals) => vals.push(v.clone()),
                FeatCol::StrList(b) => match v {
                    Value::List(items) => {
                        for x in items {
                            b.values().append_value(x);
                        }
                        b.append(true);
                    }
                    _ => b.append(false),
                },
            }
        }
        self.pane_index.append_value(m.pane_index as i64);
        self.timing.append_value(m.timing.as_str());
        self.is_final.append_value(m.is_final);
        self.retraction.append_value(m.retraction);
        self.emitted.append_value(m.emitted_at);
        self.watermark.append_option(m.watermark);
        self.rows += 1;
    }

    /// The schema these columns would have on their own.
    fn schema(&self, key_names: &[String], feature_names: &[String]) -> SchemaRef {
        let ts = || DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
        let mut fields = Vec::new();
        for (k, col) in key_names.iter().zip(&self.keys) {
            let dt = match col {
                KeyCol::Int(_) => DataType::Int64,
                KeyCol::Str(_) => DataType::Utf8,
            };
            fields.push(Field::new(k, dt, false));
        }
        fields.push(Field::new("window_start", ts(), false));
        fields.push(Field::new("window_end", ts(), false));
        for (name, col) in feature_names.iter().zip(&self.feats) {
            let dt = match col {
                FeatCol::Int(_) => DataType::Int64,
                FeatCol::Float(_) => DataType::Float64,
                FeatCol::Bool(_) => DataType::Boolean,
                FeatCol::Str(_) => DataType::Utf8,
                FeatCol::Infer(vals) => infer(vals.iter()),
                FeatCol::StrList(_) => string_list(),
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

    /// Finishes the columns into a batch of `schema` (the file's schema).
    fn finish(mut self, schema: &SchemaRef) -> Result<RecordBatch, arrow_schema::ArrowError> {
        let mut cols: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
        for (i, col) in self.keys.into_iter().enumerate() {
            let want = schema.field(i).data_type();
            let arr: ArrayRef = match col {
                KeyCol::Int(v) => Arc::new(arrow_array::Int64Array::from(v)),
                KeyCol::Str(mut b) => Arc::new(b.finish()),
            };
            cols.push(if arr.data_type() == want {
                arr
            } else {
                arrow_cast::cast(&arr, want)?
            });
        }
        cols.push(Arc::new(self.start.finish()));
        cols.push(Arc::new(self.end.finish()));
        let base = cols.len();
        for (j, col) in self.feats.iter_mut().enumerate() {
            let want = schema.field(base + j).data_type();
            let arr: ArrayRef = match col {
                FeatCol::Int(b) => Arc::new(b.finish()),
                FeatCol::Float(b) => Arc::new(b.finish()),
                FeatCol::Bool(b) => Arc::new(b.finish()),
                FeatCol::Str(b) => Arc::new(b.finish()),
                FeatCol::Infer(vals) => typed_array(vals, want),
                FeatCol::StrList(b) => Arc::new(b.finish()),
            };
            cols.push(if arr.data_type() == want {
                arr
            } else {
                arrow_cast::cast(&arr, want)?
            });
        }
        cols.push(Arc::new(self.pane_index.finish()));
        cols.push(Arc::new(self.timing.finish()));
        cols.push(Arc::new(self.is_final.finish()));
        cols.push(Arc::new(self.retraction.finish()));
        cols.push(Arc::new(self.emitted.finish()));
        cols.push(Arc::new(self.watermark.finish()));
        RecordBatch::try_new(schema.clone(), cols)
    }
}

fn append_key_text(b: &mut StringBuilder, p: Option<KeyPart<'_>>) {
    match p {
        Some(KeyPart::Int(v)) => b.append_value(v.to_string()),
        Some(KeyPart::Str(s)) => b.append_value(s),
        None => b.append_value(""),
    }
}

fn typed_array(vals: &[Value], dt: &DataType) -> ArrayRef {
    match dt {
        DataType::Float64 => Arc::new(
            vals.iter()
                .map(Value::as_f64)
                .collect::<arrow_array::Float64Array>(),
        ),
        DataType::Boolean => Arc::new(
            vals.iter()
                .map(|v| match v {
                    Value::Bool(b) => Some(*b),
                    _ => None,
                })
                .collect::<arrow_array::BooleanArray>(),
        ),
        _ => Arc::new(
            vals.iter()
                .map(value_text)
                .collect::<arrow_array::StringArray>(),
        ),
    }
}

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
    key_types: Vec<KeyType>,
    feature_names: Vec<String>,
    feature_kinds: Vec<ColKind>,
    allowed_lateness: Micros,
    buffers: BTreeMap<i64, DayCols>,
    open: BTreeMap<i64, DayFile>,
    seq: u64,
    written: Vec<PathBuf>,
    rows: u64,
    /// Closed files wait under their temporary names for [`ParquetSink::take_pending`]
    /// (the daemon publishes them with a checkpoint) instead of being renamed.
    deferred: bool,
    pending: Vec<(PathBuf, PathBuf)>,
    /// Rows per file before it is closed (rolled).
    max_file_rows: usize,
    compression: Compression,
    file_rows: BTreeMap<i64, usize>,
}

impl ParquetSink {
    /// A sink under `root` for a pipeline's plan; `run_id` names its files.
    pub fn new(root: &Path, plan: &Plan, run_id: &str) -> ParquetSink {
        let p = &plan.pipeline;
        let feature_kinds = plan
            .types
            .iter()
            .map(|t| match t {
                ValueType::Int => ColKind::Int,
                ValueType::Float => ColKind::Float,
                ValueType::Bool => ColKind::Bool,
                ValueType::String => ColKind::Str,
                ValueType::Inferred => ColKind::Infer,
                ValueType::StringList => ColKind::StrList,
            })
            .collect();
        ParquetSink {
            dir: root.join(&p.name),
            run_id: run_id.to_string(),
            key_names: p.key_fields.clone(),
            key_types: plan.key_types.clone(),
            feature_names: p.features.iter().map(|f| f.name.clone()).collect(),
            feature_kinds,
            allowed_lateness: p.allowed_lateness,
            buffers: BTreeMap::new(),
            open: BTreeMap::new(),
            seq: 0,
            written: Vec::new(),
            rows: 0,
            deferred: false,
            pending: Vec::new(),
            max_file_rows: usize::MAX,
            file_rows: BTreeMap::new(),
            compression: match p.parquet_compression {
                ParquetCompression::Lz4 => Compression::LZ4_RAW,
                ParquetCompression::Snappy => Compression::SNAPPY,
                ParquetCompression::Zstd => {
                    Compression::ZSTD(parquet::basic::ZstdLevel::try_new(1).expect("valid level"))
                }
                ParquetCompression::None => Compression::UNCOMPRESSED,
            },
        }
    }

    /// Defers publication: closed files stay under temporary names until
    /// the caller takes them with [`ParquetSink::take_pending`], and a file
    /// is closed after `max_file_rows` rows.
    pub fn deferred(mut self, max_file_rows: usize) -> ParquetSink {
        self.deferred = true;
        self.max_file_rows = max_file_rows.max(1);
        self
    }

    /// Starts a new run of file names (the daemon: one per checkpoint epoch).
    pub fn set_run_id(&mut self, run_id: &str) {
        self.run_id = run_id.to_string();
        self.seq = 0;
    }

    /// Closes every open file and returns the (temporary, final) paths of
    /// the files closed since the last call (deferred mode).
    pub fn take_pending(&mut self) -> Result<Vec<(PathBuf, PathBuf)>, ParquetSinkError> {
        self.finish()?;
        Ok(std::mem::take(&mut self.pending))
    }

    /// Every file of the group's date directories, with its name.
    fn day_files(&self) -> Vec<(PathBuf, String)> {
        let mut out = Vec::new();
        let Ok(days) = std::fs::read_dir(&self.dir) else {
            return out;
        };
        for day in days.flatten() {
            let Ok(files) = std::fs::read_dir(day.path()) else {
                continue;
            };
            for f in files.flatten() {
                out.push((f.path(), f.file_name().to_string_lossy().into_owned()));
            }
        }
        out
    }

    /// Removes temporary files whose names start with `.part-{prefix}` and
    /// that are not in `keep` (left by a crashed run).
    pub fn remove_unpublished(&self, prefix: &str, keep: &[(PathBuf, PathBuf)]) -> usize {
        let mut removed = 0;
        for (path, name) in self.day_files() {
            if super::is_unpublished(&name, prefix)
                && !keep.iter().any(|(t, _)| *t == path)
                && std::fs::remove_file(&path).is_ok()
            {
                removed += 1;
            }
        }
        removed
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

    /// Takes every pane of `panes` (and clears it).
    pub fn write(&mut self, panes: &mut PaneBuf) -> Result<(), ParquetSinkError> {
        for (m, values) in panes.iter() {
            self.write_row(m, values)?;
        }
        panes.clear();
        Ok(())
    }

    /// Takes one pane.
    pub fn write_row(&mut self, m: &PaneMeta, values: &[Value]) -> Result<(), ParquetSinkError> {
        let day = m.window_end.div_euclid(MICROS_PER_DAY);
        self.rows += 1;
        let (key_types, kinds) = (&self.key_types, &self.feature_kinds);
        let cap = ROW_GROUP_ROWS.min(self.max_file_rows);
        let cols = self
            .buffers
            .entry(day)
            .or_insert_with(|| DayCols::new(key_types, kinds, cap));
        cols.append(m, values);
        if cols.rows >= ROW_GROUP_ROWS.min(self.max_file_rows) {
            let full = self.buffers.remove(&day).expect("just filled");
            let n = full.rows;
            self.flush_day(day, full)?;
            let in_file = self.file_rows.entry(day).or_insert(0);
            *in_file += n;
            if *in_file >= self.max_file_rows {
                self.close_day(day)?;
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
        self.remove_stale_except(&format!("{}-", self.run_id), &self.written)
    }

    /// The names of the published files `part-<prefix>*.parquet` of this
    /// sink's group.
    pub fn published(&self, prefix: &str) -> Vec<String> {
        let prefix = format!("part-{prefix}");
        let mut out: Vec<String> = self
            .day_files()
            .into_iter()
            .map(|(_, name)| name)
            .filter(|name| name.starts_with(&prefix) && name.ends_with(".parquet"))
            .collect();
        out.sort();
        out
    }

    /// Removes the files `part-<prefix>*.parquet` of this sink's group not
    /// in `keep` (a parallel replay: what its threads wrote together).
    pub fn remove_stale_except(
        &self,
        prefix: &str,
        keep: &[PathBuf],
    ) -> Result<usize, ParquetSinkError> {
        let prefix = format!("part-{prefix}");
        let mut removed = 0;
        for (path, name) in self.day_files() {
            if name.starts_with(&prefix) && name.ends_with(".parquet") && !keep.contains(&path) {
                std::fs::remove_file(&path).map_err(|source| ParquetSinkError::Io {
                    path: path.clone(),
                    source,
                })?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    fn close_day(&mut self, day: i64) -> Result<(), ParquetSinkError> {
        if let Some(cols) = self.buffers.remove(&day) {
            if cols.rows > 0 {
                self.flush_day(day, cols)?;
            }
        }
        if let Some(f) = self.open.remove(&day) {
            self.file_rows.remove(&day);
            let file = f
                .writer
                .into_inner()
                .map_err(|source| ParquetSinkError::Parquet {
                    path: f.tmp.clone(),
                    source,
                })?;
            if self.deferred {
                // Published with a checkpoint: it must survive a machine crash.
                file.sync_all().map_err(|source| ParquetSinkError::Io {
                    path: f.tmp.clone(),
                    source,
                })?;
                self.pending.push((f.tmp, f.dest));
                return Ok(());
            }
            drop(file);
            std::fs::rename(&f.tmp, &f.dest).map_err(|source| ParquetSinkError::Io {
                path: f.dest.clone(),
                source,
            })?;
            self.written.push(f.dest);
        }
        Ok(())
    }

    fn flush_day(&mut self, day: i64, cols: DayCols) -> Result<(), ParquetSinkError> {
        if !self.open.contains_key(&day) {
            let schema = cols.schema(&self.key_names, &self.feature_names);
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
            let mut props = WriterProperties::builder()
                .set_compression(self.compression)
                // Row-group statistics (what readers use to skip data);
                // per-page statistics cost string compares on every row.
                .set_statistics_enabled(EnabledStatistics::Chunk)
                .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
                // Room for a whole row group's keys: no fall back to plain pages,
                // so readers keep the dictionary (the join resolves each key once).
                .set_dictionary_page_size_limit(8 << 20)
                .set_data_page_row_count_limit(PAGE_ROWS);
            // Dictionaries pay off for keys and text columns. Measured values
            // do not repeat; integers and times (window bounds, pane indexes,
            // counts, emission times) come in runs, which LZ4 compresses in
            // plain pages without a hash of every value.
            for (i, f) in schema.fields().iter().enumerate() {
                let is_key = i < self.key_names.len();
                let plain = match f.data_type() {
                    DataType::Float64 => true,
                    DataType::Int64 | DataType::Timestamp(..) => !is_key,
                    _ => false,
                };
                if plain {
                    props = props
                        .set_column_dictionary_enabled(ColumnPath::from(f.name().as_str()), false);
                }
            }
            // Pane indexes are nearly all 0: LZ4 squeezes a page of zeros to
            // nothing but gives it back a byte at a time (a match one byte
            // behind), five times slower to read than any other column.
            // Delta-encoded, a run of equal values is a header and no bits.
            props = props.set_column_encoding(
                ColumnPath::from("pane_index"),
                parquet::basic::Encoding::DELTA_BINARY_PACKED,
            );
            let writer = ArrowWriter::try_new(file, schema.clone(), Some(props.build())).map_err(
                |source| ParquetSinkError::Parquet {
                    path: tmp.clone(),
                    source,
                },
            )?;
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
        let batch = cols.finish(&f.schema)?;
        f.writer
            .write(&batch)
            .map_err(|source| ParquetSinkError::Parquet {
                path: f.tmp.clone(),
                source,
            })?;
        Ok(())
    }
}

/// The Arrow type of a `collect_set` column.
pub fn string_list() -> DataType {
    DataType::List(Arc::new(Field::new("item", DataType::Utf8, true)))
}

fn infer<'a>(vals: impl Iterator<Item = &'a Value>) -> DataType {
    let (mut nums, mut bools, mut other) = (0, 0, 0);
    for v in vals {
        match v {
            Value::Null => {}
            Value::Float(_) | Value::Int(_) => nums += 1,
            Value::Bool(_) => bools += 1,
            Value::Str(_) | Value::List(_) => other += 1,
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
    crate::sink::value_text(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Timing;
    use crate::event::EncodedKey;
    use parquet::file::reader::{FileReader, SerializedFileReader};

    fn pipeline() -> crate::plan::PlanRef {
        Plan::new(&crate::config::test_pipeline(
            "[user_id]",
            "  - { name: n, agg: count }\n  - { name: s, agg: sum, field: x }\n",
        ))
    }

    fn rows_of(path: &Path) -> (i64, Vec<i64>) {
        let r = SerializedFileReader::new(File::open(path).expect("open")).expect("parquet");
        let groups: Vec<i64> = r
            .metadata()
            .row_groups()
            .iter()
            .map(|g| g.num_rows())
            .collect();
        (groups.iter().sum(), groups)
    }

    /// A final on-time pane of key `u{i % 97}`.
    fn pane(i: usize, window_start: Micros, window_end: Micros) -> PaneMeta {
        PaneMeta {
            key: EncodedKey::from_values(&[crate::event::KeyValue::Str(format!("u{}", i % 97))]),
            window_start,
            window_end,
            pane_index: 0,
            timing: Timing::OnTime,
            is_final: true,
            retraction: false,
            partition: 0,
            emitted_at: window_start,
            watermark: None,
        }
    }

    /// A rolled file holds exactly its row limit (one smaller than a row
    /// group and no round number), and row groups keep their size.
    #[test]
    fn files_roll_at_their_row_limit_and_row_groups_keep_their_size() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let limit = 8 * 1024 * 2 + 1234;
        let mut sink = ParquetSink::new(tmp.path(), &pipeline(), "r1").deferred(limit);
        let total = limit * 2 + 77;
        let day_start = 20_000 * MICROS_PER_DAY;
        for i in 0..total {
            let meta = pane(
                i,
                day_start + (i as i64) * 60_000_000,
                day_start + (i as i64 + 1) * 60_000_000 % MICROS_PER_DAY,
            );
            sink.write_row(&meta, &[Value::Int(1), Value::Float(i as f64)])
                .expect("write");
        }
        let mut counts: Vec<i64> = sink
            .take_pending()
            .expect("finish")
            .iter()
            .map(|(tmp, _)| rows_of(tmp).0)
            .collect();
        counts.sort_unstable();
        assert_eq!(counts, vec![77, limit as i64, limit as i64]);

        // Without a limit: one file, row groups of ROW_GROUP_ROWS rows.
        let mut sink = ParquetSink::new(&tmp.path().join("b"), &pipeline(), "r2");
        let n = ROW_GROUP_ROWS + 5000;
        for i in 0..n {
            let meta = pane(i, day_start, day_start + 60_000_000);
            sink.write_row(&meta, &[Value::Int(1), Value::Float(i as f64)])
                .expect("write");
        }
        sink.finish().expect("finish");
        assert_eq!(sink.written.len(), 1);
        assert_eq!(
            rows_of(&sink.written[0]),
            (n as i64, vec![ROW_GROUP_ROWS as i64, 5000])
        );
    }
}
