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

/// Reads a group's feature rows: keys, times, flags and the selected features.
fn read_group(offline: &Path, spec: &GroupSpec) -> Result<Vec<RecordBatch>, JoinError> {
    let dir = offline.join(&spec.name);
    if !dir.is_dir() {
        return Err(JoinError::Input(format!(
            "feature group {:?} has no offline data: {} is not a directory",
            spec.name,
            dir.display()
        )));
    }
    let mut wanted: Vec<String> = spec.keys.clone();
    for c in [
        "window_end",
        "emitted_at",
        "pane_index",
        "is_final",
        "retraction",
    ] {
        wanted.push(c.to_string());
    }
    match &spec.features {
        Some(f) => wanted.extend(f.iter().cloned()),
        None => wanted.extend(spec.all_features.iter().cloned()),
    }
    let mut out = Vec::new();
    for f in load_group_files(&dir)? {
        let (mut rg, _) = RowGroups::open(&f, &spec.keys, Some(&wanted))?;
        while let Some(batch) = rg.next_batch() {
            out.push(batch?);
        }
    }
    Ok(out)
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
    let started = Instant::now();
    let mut tables = Vec::new();
    for g in &o.groups {
        let t = Instant::now();
        let batches = read_group(&o.offline, g)?;
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
    let tmp = o.output.with_file_name(format!(
        ".{}.tmp",
        o.output
            .file_name()
            .and_then(|s| s.to_str())
            .unwrap_or("join")
    ));
    let file = File::create(&tmp).map_err(io_err(&tmp))?;
    let mut out = if is_csv(&o.output) {
        Output::Csv(
            arrow_csv::WriterBuilder::new()
                .with_header(true)
                .build(std::io::BufWriter::new(file)),
        )
    } else {
        let mut props = parquet::file::properties::WriterProperties::builder()
            .set_compression(parquet::basic::Compression::SNAPPY);
        // Measured values repeat little: dictionaries cost time for nothing.
        for f in out_schema.fields() {
            if matches!(f.data_type(), arrow_schema::DataType::Float64) {
                let col = parquet::schema::types::ColumnPath::from(f.name().as_str());
                props = props
                    .set_column_dictionary_enabled(col.clone(), false)
                    // Measured values barely compress; skip the codec.
                    .set_column_compression(col, parquet::basic::Compression::UNCOMPRESSED);
            }
        }
        let props = props.build();
        Output::Parquet(ArrowWriter::try_new(file, out_schema.clone(), Some(props))?)
    };
    let result = (|| -> Result<(), JoinError> {
        let mut wrote_any = false;
        while let Some(batch) = reader.next() {
            let joined = joiner.join_batch(&batch?)?;
            let joined = restore_types(joined, &out_schema)?;
            match &mut out {
                Output::Parquet(w) => w.write(&joined)?,
                Output::Csv(w) => w.write(&joined)?,
            }
            wrote_any = true;
        }
        if !wrote_any {
            if let Output::Parquet(w) = &mut out {
                w.write(&RecordBatch::new_empty(out_schema.clone()))?;
            }
        }
        Ok(())
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    match out {
        Output::Parquet(w) => {
            w.close()?;
        }
        Output::Csv(w) => {
            use std::io::Write;
            w.into_inner().flush().map_err(io_err(&tmp))?;
        }
    }
    std::fs::rename(&tmp, &o.output).map_err(io_err(&o.output))?;
    let rows = joiner.rows;
    Ok(JoinSummary {
        rows,
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
