//! `rill join` over files: entity rows from Parquet or CSV, feature rows
//! from a group's offline Parquet files (only the columns the join needs),
//! output to Parquet or CSV (by extension).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::{ArrowWriter, ProjectionMask};
use serde::Serialize;

use super::{load_group_files, FeatureTable, GroupSpec, JoinError, JoinOptions, Joiner, Mode};

/// What `rill join` needs.
#[derive(Debug, Clone)]
pub struct FileJoinOptions {
    pub entities: PathBuf,
    pub groups: Vec<GroupSpec>,
    pub offline: PathBuf,
    pub output: PathBuf,
    pub mode: Mode,
    pub join: JoinOptions,
    /// Memory budget in bytes (`None`: a quarter of the machine's memory).
    pub memory_limit: Option<u64>,
}

/// Per-group figures of a join.
#[derive(Debug, Clone, Serialize)]
pub struct GroupSummary {
    pub group: String,
    pub feature_rows: usize,
    pub matched_rows: u64,
    pub matched_share: f64,
}

/// What a join did.
#[derive(Debug, Clone, Serialize)]
pub struct JoinSummary {
    pub rows: u64,
    /// Key-space partitions used (1: everything in memory).
    pub partitions: usize,
    pub groups: Vec<GroupSummary>,
    pub seconds: f64,
    pub output: String,
    pub peak_memory_bytes: Option<u64>,
}

const BATCH_ROWS: usize = 64 * 1024;

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> JoinError + '_ {
    move |source| JoinError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn is_csv(p: &Path) -> bool {
    p.extension().is_some_and(|e| e.eq_ignore_ascii_case("csv"))
}

/// Reads a group's feature rows: keys, times, flags and the selected
/// features, in file order. With more than one core available to the
/// process, the files are read and decoded on that many threads (each file
/// whole, by one thread); the batches come back in the same order.
fn read_group(
    offline: &Path,
    spec: &GroupSpec,
    prune: &Prune,
) -> Result<Vec<RecordBatch>, JoinError> {
    let files = group_files(offline, spec)?;
    let wanted = columns_wanted(spec, prune);
    let read = |f: &Path| -> Result<Vec<RecordBatch>, JoinError> {
        let mut out = Vec::new();
        file_batches(f, spec, &wanted, prune, &mut |b| {
            out.push(b);
            Ok(())
        })?;
        Ok(out)
    };
    let threads = cores().min(files.len());
    if threads <= 1 {
        let mut out = Vec::new();
        for f in &files {
            out.extend(read(f)?);
        }
        return Ok(out);
    }
    // File i goes to thread i % threads; each thread's files in order.
    let per_thread: Vec<Result<Vec<Vec<RecordBatch>>, JoinError>> = std::thread::scope(|sc| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (files, read) = (&files, &read);
                sc.spawn(move || {
                    files
                        .iter()
                        .skip(t)
                        .step_by(threads)
                        .map(|f| read(f))
                        .collect()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a reading thread does not panic"))
            .collect()
    });
    let mut per_thread: Vec<std::vec::IntoIter<Vec<RecordBatch>>> = per_thread
        .into_iter()
        .map(|r| r.map(Vec::into_iter))
        .collect::<Result<_, _>>()?;
    let mut out = Vec::new();
    for i in 0..files.len() {
        out.extend(per_thread[i % threads].next().expect("one result per file"));
    }
    Ok(out)
}

/// The cores this process may use.
fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn group_files(offline: &Path, spec: &GroupSpec) -> Result<Vec<PathBuf>, JoinError> {
    let dir = offline.join(&spec.name);
    if !dir.is_dir() {
        return Err(JoinError::Input(format!(
            "feature group {:?} has no offline data: {} is not a directory",
            spec.name,
            dir.display()
        )));
    }
    load_group_files(&dir)
}

/// The columns a join reads from a group's files.
fn columns_wanted(spec: &GroupSpec, prune: &Prune) -> Vec<String> {
    let mut wanted: Vec<String> = spec.keys.clone();
    for c in ["window_end", "pane_index", "is_final", "retraction"] {
        wanted.push(c.to_string());
    }
    // The emission time only decides in as-of-emit mode.
    if prune.mode == Mode::AsOfEmit {
        wanted.push("emitted_at".to_string());
    }
    for c in spec.columns_read() {
        if !wanted.contains(&c) {
            wanted.push(c);
        }
    }
    wanted
}

/// Passes a group's feature batches, file by file and row group by row
/// group, to `sink`.
fn for_each_group_batch(
    offline: &Path,
    spec: &GroupSpec,
    prune: &Prune,
    sink: &mut dyn FnMut(RecordBatch) -> Result<(), JoinError>,
) -> Result<(), JoinError> {
    let wanted = columns_wanted(spec, prune);
    for f in group_files(offline, spec)? {
        file_batches(&f, spec, &wanted, prune, sink)?;
    }
    Ok(())
}

/// Passes one file's batches, row group by row group, to `sink`.
fn file_batches(
    f: &Path,
    spec: &GroupSpec,
    wanted: &[String],
    prune: &Prune,
    sink: &mut dyn FnMut(RecordBatch) -> Result<(), JoinError>,
) -> Result<(), JoinError> {
    let (mut rg, _) = RowGroups::open(f, &spec.keys, Some(wanted))?;
    rg.prune = Some(prune.clone());
    while let Some(batch) = rg.next_batch() {
        sink(batch?)?;
    }
    Ok(())
}

/// Bytes of memory a group's index takes per feature row (values, times,
/// positions, and what the build needs for a while).
fn bytes_per_row(spec: &GroupSpec) -> u64 {
    let n = spec
        .features
        .as_ref()
        .map_or(spec.all_features.len(), Vec::len) as u64;
    16 * n + 96
}

/// A quarter of the machine's memory.
pub fn default_memory_limit() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(2 << 30, |kb| kb * 1024 / 4)
}

/// A Parquet file read one row group at a time, each as whole batches, with
/// string key columns as dictionaries (as Parquet stores them): a batch
/// then holds one dictionary, so the reader keeps it instead of re-encoding
/// the values, and a join resolves each distinct key once per row group.
struct RowGroups {
    file: File,
    meta: parquet::arrow::arrow_reader::ArrowReaderMetadata,
    mask: Option<ProjectionMask>,
    next: usize,
    cur: Option<parquet::arrow::arrow_reader::ParquetRecordBatchReader>,
    /// Row groups whose statistics say no row can match are not read.
    prune: Option<Prune>,
}

/// What row-group statistics can rule out.
#[derive(Debug, Clone)]
pub(super) struct Prune {
    pub mode: Mode,
    /// The latest entity time (µs), when the entity file's statistics tell.
    pub max_ts: Option<i64>,
}

impl Prune {
    fn skips(&self, rg: &parquet::file::metadata::RowGroupMetaData) -> bool {
        use parquet::file::statistics::Statistics;
        let stats = |name: &str| {
            rg.columns()
                .iter()
                .find(|c| c.column_path().string() == name)
                .and_then(|c| c.statistics())
        };
        let all = |name: &str, v: bool| match stats(name) {
            Some(Statistics::Boolean(b)) => b.min_opt() == Some(&v) && b.max_opt() == Some(&v),
            _ => false,
        };
        if all("retraction", true) || (self.mode == Mode::Final && all("is_final", false)) {
            return true;
        }
        let elig = match self.mode {
            Mode::Final => "window_end",
            Mode::AsOfEmit => "emitted_at",
        };
        match (self.max_ts, stats(elig)) {
            (Some(max), Some(Statistics::Int64(v))) => v.min_opt().is_some_and(|&m| m > max),
            _ => false,
        }
    }
}

/// The latest value of the entity file's timestamp column, from Parquet
/// statistics (microsecond timestamps only); `None` when unknown.
pub(super) fn entity_max_ts(path: &Path, column: &str) -> Option<i64> {
    use parquet::file::statistics::Statistics;
    if is_csv(path) {
        return None;
    }
    let file = File::open(path).ok()?;
    let meta = parquet::arrow::arrow_reader::ArrowReaderMetadata::load(
        &file,
        parquet::arrow::arrow_reader::ArrowReaderOptions::new(),
    )
    .ok()?;
    let field = meta.schema().field_with_name(column).ok()?;
    if !matches!(
        field.data_type(),
        arrow_schema::DataType::Timestamp(arrow_schema::TimeUnit::Microsecond, _)
    ) {
        return None;
    }
    let mut max = None;
    for rg in meta.metadata().row_groups() {
        let c = rg
            .columns()
            .iter()
            .find(|c| c.column_path().string() == column)?;
        match c.statistics()? {
            Statistics::Int64(v) => max = max.max(Some(*v.max_opt()?)),
            _ => return None,
        }
    }
    max
}

impl RowGroups {
    /// Opens `path`; returns the reader and the file's own Arrow schema.
    fn open(
        path: &Path,
        keys: &[String],
        wanted: Option<&[String]>,
    ) -> Result<(RowGroups, SchemaRef), JoinError> {
        use arrow_schema::{DataType, Field, Schema};
        use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions};
        let bad = |e: parquet::errors::ParquetError| {
            JoinError::Input(format!(
                "{}: not a readable Parquet file: {e}",
                path.display()
            ))
        };
        let file = File::open(path).map_err(io_err(path))?;
        let plain = ArrowReaderMetadata::load(&file, ArrowReaderOptions::new()).map_err(bad)?;
        let schema = plain.schema().clone();
        let dict = |f: &Field| keys.contains(f.name()) && f.data_type() == &DataType::Utf8;
        let meta = if schema.fields().iter().any(|f| dict(f)) {
            let fields: Vec<Field> = schema
                .fields()
                .iter()
                .map(|f| {
                    let f = f.as_ref().clone();
                    if dict(&f) {
                        f.with_data_type(DataType::Dictionary(
                            Box::new(DataType::Int32),
                            Box::new(DataType::Utf8),
                        ))
                    } else {
                        f
                    }
                })
                .collect();
            let hinted = Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()));
            // A file whose columns cannot be read that way is read as it is.
            ArrowReaderMetadata::load(&file, ArrowReaderOptions::new().with_schema(hinted))
                .unwrap_or(plain)
        } else {
            plain
        };
        let mask = wanted.map(|w| {
            let pq = meta.parquet_schema();
            let idx: Vec<usize> = pq
                .columns()
                .iter()
                .enumerate()
                .filter(|(_, c)| w.iter().any(|x| x == c.name()))
                .map(|(i, _)| i)
                .collect();
            ProjectionMask::leaves(pq, idx)
        });
        Ok((
            RowGroups {
                file,
                meta,
                mask,
                next: 0,
                cur: None,
                prune: None,
            },
            schema,
        ))
    }

    fn next_batch(&mut self) -> Option<Result<RecordBatch, JoinError>> {
        loop {
            if let Some(r) = &mut self.cur {
                if let Some(b) = r.next() {
                    return Some(b.map_err(JoinError::from));
                }
                self.cur = None;
            }
            let md = self.meta.metadata();
            if self.next >= md.num_row_groups() {
                return None;
            }
            let rg = self.next;
            self.next += 1;
            if self
                .prune
                .as_ref()
                .is_some_and(|p| p.skips(md.row_group(rg)))
            {
                continue;
            }
            let rows = md.row_group(rg).num_rows().clamp(1, 1 << 20) as usize;
            let file = match self.file.try_clone() {
                Ok(f) => f,
                Err(e) => {
                    return Some(Err(JoinError::Input(format!(
                        "cannot reopen a Parquet file: {e}"
                    ))))
                }
            };
            let mut b = ParquetRecordBatchReaderBuilder::new_with_metadata(file, self.meta.clone())
                .with_row_groups(vec![rg])
                .with_batch_size(rows);
            if let Some(m) = &self.mask {
                b = b.with_projection(m.clone());
            }
            match b.build() {
                Ok(r) => self.cur = Some(r),
                Err(e) => return Some(Err(e.into())),
            }
        }
    }
}

enum EntityReader {
    Parquet(Box<RowGroups>),
    Csv(Box<arrow_csv::reader::BufReader<std::io::BufReader<File>>>),
}

impl EntityReader {
    fn open(path: &Path, keys: &[String]) -> Result<(EntityReader, SchemaRef), JoinError> {
        let file = File::open(path).map_err(io_err(path))?;
        if is_csv(path) {
            let mut probe = File::open(path).map_err(io_err(path))?;
            let format = arrow_csv::reader::Format::default().with_header(true);
            let (schema, _) = format.infer_schema(&mut probe, Some(10_000)).map_err(|e| {
                JoinError::Input(format!("{}: not a readable CSV file: {e}", path.display()))
            })?;
            let schema = Arc::new(schema);
            let r = arrow_csv::ReaderBuilder::new(schema.clone())
                .with_format(format)
                .with_batch_size(BATCH_ROWS)
                .build_buffered(std::io::BufReader::new(file))?;
            Ok((EntityReader::Csv(Box::new(r)), schema))
        } else {
            drop(file);
            // The caller sees the file's own types (keys are read as dictionaries).
            let (r, schema) = RowGroups::open(path, keys, None)?;
            Ok((EntityReader::Parquet(Box::new(r)), schema))
        }
    }

    fn next(&mut self) -> Option<Result<RecordBatch, JoinError>> {
        match self {
            EntityReader::Parquet(r) => r.next_batch(),
            EntityReader::Csv(r) => r.next().map(|b| b.map_err(JoinError::from)),
        }
    }
}

enum Output {
    Parquet(ArrowWriter<File>),
    Csv(arrow_csv::Writer<std::io::BufWriter<File>>),
}

impl Output {
    fn write(&mut self, b: &RecordBatch) -> Result<(), JoinError> {
        match self {
            Output::Parquet(w) => w.write(b)?,
            Output::Csv(w) => {
                if b.num_rows() > 0 {
                    w.write(b)?
                }
            }
        }
        Ok(())
    }

    fn close(self, tmp: &Path) -> Result<(), JoinError> {
        match self {
            Output::Parquet(w) => {
                w.close()?;
            }
            Output::Csv(w) => {
                use std::io::Write;
                w.into_inner().flush().map_err(io_err(tmp))?;
            }
        }
        Ok(())
    }
}

/// Where the output is written before it is renamed into place.
/// Where the output is written before it is moved into place: beside it,
/// or the output itself when that is a device, a FIFO or what a symlink
/// such as /dev/stdout points at (moving a file over it would replace it).
fn aside(output: &Path) -> PathBuf {
    if std::fs::metadata(output).is_ok_and(|m| !m.file_type().is_file()) {
        return output.to_path_buf();
    }
    output.with_file_name(format!(
        ".{}.tmp",
        output
            .file_name()
            .and_then(|s| s.to_str())
            .unwrap_or("join")
    ))
}

/// The output file (Parquet, or CSV by extension), written at `tmp`.
fn open_output(output: &Path, tmp: &Path, schema: &SchemaRef) -> Result<Output, JoinError> {
    let file = File::create(tmp).map_err(io_err(tmp))?;
    if is_csv(output) {
        return Ok(Output::Csv(
            arrow_csv::WriterBuilder::new()
                .with_header(true)
                .build(std::io::BufWriter::new(file)),
        ));
    }
    let mut props = parquet::file::properties::WriterProperties::builder()
        .set_compression(parquet::basic::Compression::SNAPPY);
    // Measured values repeat little: dictionaries cost time for nothing.
    for f in schema.fields() {
        if matches!(f.data_type(), arrow_schema::DataType::Float64) {
            let col = parquet::schema::types::ColumnPath::from(f.name().as_str());
            props = props
                .set_column_dictionary_enabled(col.clone(), false)
                // Measured values barely compress; skip the codec.
                .set_column_compression(col, parquet::basic::Compression::UNCOMPRESSED);
        }
    }
    Ok(Output::Parquet(ArrowWriter::try_new(
        file,
        schema.clone(),
        Some(props.build()),
    )?))
}

/// Casts columns read in another type (dictionary keys) back to `schema`'s.
fn restore_types(b: RecordBatch, schema: &SchemaRef) -> Result<RecordBatch, JoinError> {
    if b.schema().fields() == schema.fields() {
        return Ok(b);
    }
    let cols = b
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(c, f)| {
            if c.data_type() == f.data_type() {
                Ok(c.clone())
            } else {
                arrow_cast::cast(c, f.data_type())
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(RecordBatch::try_new(schema.clone(), cols)?)
}

/// Runs a join of files; the output appears atomically (written aside, renamed).
pub fn join_files(o: &FileJoinOptions) -> Result<JoinSummary, JoinError> {
    let limit = o.memory_limit.unwrap_or_else(default_memory_limit).max(1);
    let mut largest = 0u64;
    for g in &o.groups {
        let mut rows = 0u64;
        for f in group_files(&o.offline, g)? {
            let file = File::open(&f).map_err(io_err(&f))?;
            let meta = parquet::file::metadata::ParquetMetaDataReader::new()
                .parse_and_finish(&file)
                .map_err(|e| {
                    JoinError::Input(format!("{}: not a readable Parquet file: {e}", f.display()))
                })?;
            rows += meta.file_metadata().num_rows().max(0) as u64;
        }
        largest = largest.max(rows * bytes_per_row(g));
    }
    if largest > limit / 2 {
        // At most 128 partitions: each holds open spill files per group.
        let parts = largest.div_ceil((limit / 3).max(1)).clamp(2, 128) as usize;
        return join_partitioned(o, parts);
    }
    let started = Instant::now();
    let prune = Prune {
        mode: o.mode,
        max_ts: entity_max_ts(&o.entities, &o.join.timestamp_column),
    };
    let mut tables = Vec::new();
    for g in &o.groups {
        let t = Instant::now();
        let batches = read_group(&o.offline, g, &prune)?;
        let read = t.elapsed();
        tables.push(FeatureTable::from_batches(g.clone(), o.mode, &batches)?);
        tracing::debug!(group = %g.name, read_ms = read.as_millis() as u64, index_ms = (t.elapsed() - read).as_millis() as u64, "feature group indexed");
    }
    let mut joiner = Joiner::new(tables, o.join.clone());
    let keys: Vec<String> = o
        .groups
        .iter()
        .flat_map(|g| g.keys.iter().cloned())
        .collect();
    let (mut reader, schema) = EntityReader::open(&o.entities, &keys)?;
    joiner.check(&schema)?;
    let out_schema = joiner.output_schema(&schema)?;
    let tmp = aside(&o.output);
    let mut out = open_output(&o.output, &tmp, &out_schema)?;
    let result = (|| -> Result<(), JoinError> {
        let mut wrote_any = false;
        // Entity batches joined a few at a time on every core (read and
        // written on this one, in order).
        let threads = cores();
        let mut pending: Vec<RecordBatch> = Vec::with_capacity(threads);
        let mut more = true;
        while more {
            match reader.next() {
                Some(batch) => pending.push(batch?),
                None => more = false,
            }
            if pending.len() == 4 * threads || (!more && !pending.is_empty()) {
                for joined in joiner.join_all(&pending, threads)? {
                    out.write(&restore_types(joined, &out_schema)?)?;
                    wrote_any = true;
                }
                pending.clear();
            }
        }
        if !wrote_any {
            out.write(&RecordBatch::new_empty(out_schema.clone()))?;
        }
        Ok(())
    })();
    if let Err(e) = result {
        if tmp != o.output {
            let _ = std::fs::remove_file(&tmp);
        }
        return Err(e);
    }
    out.close(&tmp)?;
    std::fs::rename(&tmp, &o.output).map_err(io_err(&o.output))?;
    let rows = joiner.rows;
    Ok(JoinSummary {
        rows,
        partitions: 1,
        groups: joiner
            .tables
            .iter()
            .zip(&joiner.matched)
            .map(|(t, &m)| GroupSummary {
                group: t.spec.name.clone(),
                feature_rows: t.rows,
                matched_rows: m,
                matched_share: if rows == 0 {
                    0.0
                } else {
                    m as f64 / rows as f64
                },
            })
            .collect(),
        seconds: started.elapsed().as_secs_f64(),
        output: o.output.display().to_string(),
        peak_memory_bytes: crate::replay::peak_memory_bytes(),
    })
}

/// The join in memory over entity batches already in memory (the Python
/// package's `rill.join`): the same rows, in the same order and with the
/// same output schema as [`join_files`] writes.
pub fn join_batches(
    groups: &[GroupSpec],
    offline: &Path,
    mode: Mode,
    join: &JoinOptions,
    entities: &[RecordBatch],
    input: SchemaRef,
) -> Result<(SchemaRef, Vec<RecordBatch>), JoinError> {
    let prune = Prune { mode, max_ts: None };
    let mut tables = Vec::new();
    for g in groups {
        let batches = read_group(offline, g, &prune)?;
        tables.push(FeatureTable::from_batches(g.clone(), mode, &batches)?);
    }
    let mut joiner = Joiner::new(tables, join.clone());
    joiner.check(&input)?;
    let out_schema = joiner.output_schema(&input)?;
    let out = joiner
        .join_all(entities, cores())?
        .into_iter()
        .map(|b| restore_types(b, &out_schema))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((out_schema, out))
}

/// The join past the memory budget (see `spill`).
fn join_partitioned(o: &FileJoinOptions, parts: usize) -> Result<JoinSummary, JoinError> {
    use super::spill::{join_group, EntitySpill, Merge};
    let started = Instant::now();
    let parent = o
        .output
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = parent.join(format!(".rill-join-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).map_err(io_err(&tmp))?;
    let r = (|| {
        tracing::info!(
            partitions = parts,
            "feature rows exceed the memory budget: joining by key-space partitions on disk"
        );
        let keys: Vec<String> = o
            .groups
            .iter()
            .flat_map(|g| g.keys.iter().cloned())
            .collect();
        let ts_col = o.join.timestamp_column.clone();
        // Pass 1: entity rows to per-partition spills, per group.
        let (mut reader, schema) = EntityReader::open(&o.entities, &keys)?;
        // Key types against each group's first file.
        let mut classes = Vec::new();
        for g in &o.groups {
            let fschema = match group_files(&o.offline, g)?.first() {
                Some(f) => Some(RowGroups::open(f, &g.keys, None)?.1),
                None => None,
            };
            classes.push(
                g.keys
                    .iter()
                    .map(|k| {
                        fschema
                            .as_ref()
                            .and_then(|s| s.field_with_name(k).ok())
                            .and_then(|f| super::key_class(f.data_type()))
                    })
                    .collect::<Vec<_>>(),
            );
        }
        super::check_entities(&schema, &ts_col, o.groups.iter().zip(classes))?;
        let mut spills: Vec<EntitySpill> = o
            .groups
            .iter()
            .map(|g| EntitySpill::new(&tmp, &g.name, &g.keys, &ts_col, parts))
            .collect();
        let (mut rows, mut nulls, mut first_null) = (0u64, 0usize, None);
        while let Some(b) = reader.next() {
            let b = b?;
            let t = b.column_by_name(&ts_col).expect("checked above");
            if t.null_count() > 0 {
                nulls += t.null_count();
                if first_null.is_none() {
                    first_null = (0..t.len())
                        .find(|&i| t.is_null(i))
                        .map(|i| rows as usize + i);
                }
            }
            for s in spills.iter_mut() {
                s.add(&b, rows)?;
            }
            rows += b.num_rows() as u64;
        }
        if let Some(first) = first_null {
            return Err(JoinError::NullTimestamps {
                column: ts_col,
                count: nulls,
                first,
            });
        }
        // Pass 2: each group, partition by partition.
        let mut results = Vec::new();
        for (g, s) in o.groups.iter().zip(spills) {
            let entity_files = s.finish()?;
            let prune = Prune {
                mode: o.mode,
                max_ts: entity_max_ts(&o.entities, &ts_col),
            };
            let mut feed = |sink: &mut dyn FnMut(RecordBatch) -> Result<(), JoinError>| {
                for_each_group_batch(&o.offline, g, &prune, sink)
            };
            results.push(join_group(
                g,
                o.mode,
                parts,
                &tmp,
                &mut feed,
                &entity_files,
                &ts_col,
            )?);
        }
        // Pass 3: the entity rows again, in order, with their results.
        let out_schema = super::output_schema(
            &schema,
            o.groups
                .iter()
                .zip(&results)
                .map(|(g, r)| (g.name.as_str(), r.fields.as_slice())),
            o.join.full_names,
        )?;
        let mut merges: Vec<Merge> = o
            .groups
            .iter()
            .zip(&results)
            .map(|(g, r)| Merge::new(r, &g.keys))
            .collect::<Result<_, _>>()?;
        let (mut reader, _) = EntityReader::open(&o.entities, &keys)?;
        let out_tmp = aside(&o.output);
        let mut out = open_output(&o.output, &out_tmp, &out_schema)?;
        let mut base = 0u64;
        let mut wrote = false;
        while let Some(b) = reader.next() {
            let b = b?;
            let mut cols: Vec<arrow_array::ArrayRef> = Vec::new();
            for (c, f) in b.columns().iter().zip(schema.fields()) {
                cols.push(if c.data_type() == f.data_type() {
                    c.clone()
                } else {
                    arrow_cast::cast(c, f.data_type())?
                });
            }
            for m in merges.iter_mut() {
                cols.extend(m.columns(&b, base)?);
            }
            base += b.num_rows() as u64;
            out.write(&RecordBatch::try_new(out_schema.clone(), cols)?)?;
            wrote = true;
        }
        if !wrote {
            out.write(&RecordBatch::new_empty(out_schema.clone()))?;
        }
        out.close(&out_tmp)?;
        std::fs::rename(&out_tmp, &o.output).map_err(io_err(&o.output))?;
        Ok(JoinSummary {
            rows,
            partitions: parts,
            groups: o
                .groups
                .iter()
                .zip(&results)
                .map(|(g, r)| GroupSummary {
                    group: g.name.clone(),
                    feature_rows: r.feature_rows,
                    matched_rows: r.matched,
                    matched_share: if rows == 0 {
                        0.0
                    } else {
                        r.matched as f64 / rows as f64
                    },
                })
                .collect(),
            seconds: started.elapsed().as_secs_f64(),
            output: o.output.display().to_string(),
            peak_memory_bytes: crate::replay::peak_memory_bytes(),
        })
    })();
    let _ = std::fs::remove_dir_all(&tmp);
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{BooleanArray, Int64Array, TimestampMicrosecondArray};
    use arrow_schema::{DataType, Field, Schema, TimeUnit};

    /// Row groups that statistics rule out are skipped; the others are read.
    #[test]
    fn row_group_statistics_skip_what_cannot_match() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("f.parquet");
        let ts = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, false),
            Field::new("window_end", ts.clone(), false),
            Field::new("emitted_at", ts, false),
            Field::new("is_final", DataType::Boolean, false),
            Field::new("retraction", DataType::Boolean, false),
        ]));
        // Row groups of two rows: [final, ends 10..20], [not final], [retractions], [final, ends 100..110].
        let b = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from(vec![1; 8])),
                Arc::new(
                    TimestampMicrosecondArray::from(vec![10, 20, 30, 40, 50, 60, 100, 110])
                        .with_timezone("UTC"),
                ),
                Arc::new(
                    TimestampMicrosecondArray::from(vec![11, 21, 31, 41, 51, 61, 101, 111])
                        .with_timezone("UTC"),
                ),
                Arc::new(BooleanArray::from(vec![
                    true, true, false, false, true, true, true, true,
                ])),
                Arc::new(BooleanArray::from(vec![
                    false, false, false, false, true, true, false, false,
                ])),
            ],
        )
        .expect("batch");
        let props = parquet::file::properties::WriterProperties::builder()
            .set_max_row_group_row_count(Some(2))
            .build();
        let mut w = ArrowWriter::try_new(File::create(&path).expect("file"), schema, Some(props))
            .expect("writer");
        w.write(&b).expect("write");
        w.close().expect("close");
        let read = |prune: Prune| {
            let (mut rg, _) = RowGroups::open(&path, &["k".to_string()], None).expect("open");
            rg.prune = Some(prune);
            let mut ends = Vec::new();
            while let Some(b) = rg.next_batch() {
                let b = b.expect("batch");
                let c = b.column_by_name("window_end").expect("col");
                ends.extend(
                    c.as_any()
                        .downcast_ref::<TimestampMicrosecondArray>()
                        .expect("ts")
                        .values()
                        .iter()
                        .copied(),
                );
            }
            ends
        };
        assert_eq!(
            read(Prune {
                mode: Mode::Final,
                max_ts: None
            }),
            [10, 20, 100, 110]
        );
        assert_eq!(
            read(Prune {
                mode: Mode::Final,
                max_ts: Some(99)
            }),
            [10, 20]
        );
        assert_eq!(
            read(Prune {
                mode: Mode::AsOfEmit,
                max_ts: None
            }),
            [10, 20, 30, 40, 100, 110]
        );
        assert_eq!(
            read(Prune {
                mode: Mode::AsOfEmit,
                max_ts: Some(100)
            }),
            [10, 20, 30, 40]
        );
    }
}
