//! The join past the memory budget: partitions of the key space on disk.
//!
//! When a group's feature rows would not fit in the budget, every row is
//! assigned to one of P partitions by a hash of its key. One pass spills
//! the feature rows per partition and the entity rows (row number, keys,
//! time) per partition, as Arrow IPC files in a temporary directory. Each
//! partition is then joined in memory (one P-th of the features) and its
//! results (row number, features) spilled in input order. A last pass
//! reads the entity file again and, for each row, takes the next result of
//! its partition, so the output keeps the input's order. Memory holds one
//! partition's index and a few batches, whatever the input sizes.

use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::UInt64Type;
use arrow_array::{Array, ArrayRef, RecordBatch, UInt32Array, UInt64Array};
use arrow_ipc::reader::FileReader;
use arrow_ipc::writer::FileWriter;
use arrow_schema::{DataType, Field, Schema};

use super::{column, key_class, FeatureTable, GroupSpec, JoinError, KeyCols, KeyIndex, Mode};

type IpcWriter = FileWriter<BufWriter<File>>;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> JoinError + '_ {
    move |source| JoinError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Partition of each row of `batch` by its key (rows with a null key part
/// go to partition 0: they match nothing anyway).
pub(super) fn partitions(
    batch: &RecordBatch,
    keys: &[String],
    parts: usize,
) -> Result<Vec<u32>, JoinError> {
    let kc = KeyCols::new(batch, keys)?;
    let mut buf = Vec::with_capacity(32);
    Ok((0..batch.num_rows())
        .map(|i| {
            if kc.encode(i, &mut buf) {
                ((KeyIndex::hash(&buf) >> 32) % parts as u64) as u32
            } else {
                0
            }
        })
        .collect())
}

/// String dictionaries become plain strings (IPC files cannot replace a
/// dictionary between batches).
fn plain(batch: &RecordBatch) -> Result<RecordBatch, JoinError> {
    let mut fields = Vec::new();
    let mut cols = Vec::new();
    for (f, c) in batch.schema().fields().iter().zip(batch.columns()) {
        match c.data_type() {
            DataType::Dictionary(_, v) if key_class(v).is_some() => {
                let c = arrow_cast::cast(c, v)?;
                fields.push(Field::new(f.name(), v.as_ref().clone(), f.is_nullable()));
                cols.push(c);
            }
            _ => {
                fields.push(f.as_ref().clone());
                cols.push(c.clone());
            }
        }
    }
    Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), cols)?)
}

/// Spill files of one kind, one per partition, opened on first write.
struct Spill {
    dir: PathBuf,
    name: String,
    writers: Vec<Option<(IpcWriter, PathBuf)>>,
    paths: Vec<Option<PathBuf>>,
}

impl Spill {
    fn new(dir: &Path, name: &str, parts: usize) -> Spill {
        Spill {
            dir: dir.to_path_buf(),
            name: name.to_string(),
            writers: (0..parts).map(|_| None).collect(),
            paths: vec![None; parts],
        }
    }

    /// Writes the rows of `batch` whose partition is `p`, for every p.
    fn scatter(&mut self, batch: &RecordBatch, part: &[u32]) -> Result<(), JoinError> {
        let batch = plain(batch)?;
        let mut by: Vec<Vec<u32>> = vec![Vec::new(); self.writers.len()];
        for (i, &p) in part.iter().enumerate() {
            by[p as usize].push(i as u32);
        }
        for (p, rows) in by.into_iter().enumerate() {
            if rows.is_empty() {
                continue;
            }
            let taken = arrow_select::take::take_record_batch(&batch, &UInt32Array::from(rows))?;
            if self.writers[p].is_none() {
                let path = self.dir.join(format!("{}-{p}.arrow", self.name));
                let f = File::create(&path).map_err(io(&path))?;
                let w = FileWriter::try_new(BufWriter::with_capacity(1 << 20, f), &taken.schema())?;
                self.writers[p] = Some((w, path));
            }
            self.writers[p]
                .as_mut()
                .expect("opened above")
                .0
                .write(&taken)?;
        }
        Ok(())
    }

    fn finish(mut self) -> Result<Vec<Option<PathBuf>>, JoinError> {
        for (p, w) in self.writers.iter_mut().enumerate() {
            if let Some((mut w, path)) = w.take() {
                w.finish()?;
                self.paths[p] = Some(path);
            }
        }
        Ok(self.paths)
    }
}

fn read_all(path: &Option<PathBuf>) -> Result<Vec<RecordBatch>, JoinError> {
    let Some(path) = path else {
        return Ok(Vec::new());
    };
    let f = File::open(path).map_err(io(path))?;
    let r = FileReader::try_new(BufReader::new(f), None)?;
    r.map(|b| b.map_err(JoinError::from)).collect()
}

/// Results of one partition, read in order.
struct Results {
    reader: Option<FileReader<BufReader<File>>>,
    cur: Option<RecordBatch>,
    pos: usize,
    /// Number of the current batch.
    seq: u64,
}

impl Results {
    fn open(path: &Option<PathBuf>) -> Result<Results, JoinError> {
        let reader = match path {
            Some(p) => Some(FileReader::try_new(
                BufReader::new(File::open(p).map_err(io(p))?),
                None,
            )?),
            None => None,
        };
        Ok(Results {
            reader,
            cur: None,
            pos: 0,
            seq: 0,
        })
    }

    /// The number of the batch holding the next result and its row in it.
    fn next(&mut self) -> Result<Option<(u64, usize)>, JoinError> {
        loop {
            if let Some(b) = &self.cur {
                if self.pos < b.num_rows() {
                    self.pos += 1;
                    return Ok(Some((self.seq, self.pos - 1)));
                }
            }
            match self.reader.as_mut().and_then(|r| r.next()) {
                Some(b) => {
                    self.cur = Some(b?);
                    self.pos = 0;
                    self.seq += 1;
                }
                None => return Ok(None),
            }
        }
    }
}

/// One group joined by partitions: returns, per partition, the results
/// file, plus the matched rows and the feature rows seen.
pub(super) struct GroupResults {
    pub files: Vec<Option<PathBuf>>,
    pub matched: u64,
    pub feature_rows: usize,
    pub fields: Vec<Field>,
}

/// Spills a group's feature batches (already read one by one by `feed`)
/// and the entity spill `entities`, then joins partition by partition.
#[allow(clippy::type_complexity)]
pub(super) fn join_group(
    spec: &GroupSpec,
    mode: Mode,
    parts: usize,
    tmp: &Path,
    feature_batches: &mut dyn FnMut(
        &mut dyn FnMut(RecordBatch) -> Result<(), JoinError>,
    ) -> Result<(), JoinError>,
    entities: &[Option<PathBuf>],
    timestamp_column: &str,
) -> Result<GroupResults, JoinError> {
    let mut fs = Spill::new(tmp, &format!("features-{}", spec.name), parts);
    feature_batches(&mut |b: RecordBatch| {
        let part = partitions(&b, &spec.keys, parts)?;
        fs.scatter(&b, &part)
    })?;
    let fpaths = fs.finish()?;
    let mut out = GroupResults {
        files: vec![None; parts],
        matched: 0,
        feature_rows: 0,
        fields: Vec::new(),
    };
    // One type per feature for every partition: the first spill that has it decides.
    let selected: Vec<String> = spec.selected();
    let mut types: Vec<Option<DataType>> = vec![None; selected.len()];
    for path in fpaths.iter().flatten() {
        let r = FileReader::try_new(BufReader::new(File::open(path).map_err(io(path))?), None)?;
        let schema = r.schema();
        for (i, f) in selected.iter().enumerate() {
            if let (None, Ok(field)) = (&types[i], schema.field_with_name(f)) {
                types[i] = Some(field.data_type().clone());
            }
        }
    }
    let types: Vec<DataType> = types
        .into_iter()
        .map(|t| t.unwrap_or(DataType::Float64))
        .collect();
    for p in 0..parts {
        let batches = read_all(&fpaths[p])?;
        let table = FeatureTable::from_batches_typed(spec.clone(), mode, &batches, Some(&types))?;
        drop(batches);
        if let Some(f) = &fpaths[p] {
            let _ = std::fs::remove_file(f);
        }
        out.feature_rows += table.rows;
        if out.fields.is_empty() {
            out.fields = table.fields.clone();
        }
        let Some(epath) = &entities[p] else {
            continue;
        };
        let reader =
            FileReader::try_new(BufReader::new(File::open(epath).map_err(io(epath))?), None)?;
        let rpath = tmp.join(format!("results-{}-{p}.arrow", spec.name));
        let mut writer: Option<IpcWriter> = None;
        let mut cache = None;
        for b in reader {
            let b = b?;
            let ts = super::micros_col(&b, timestamp_column)?;
            let (cols, matched) = table.features_for(&b, &ts, &mut cache)?;
            out.matched += matched;
            let mut fields = vec![Field::new("__rid", DataType::UInt64, false)];
            fields.extend(table.fields.iter().cloned());
            let mut all: Vec<ArrayRef> = vec![column(&b, "__rid")?];
            all.extend(cols);
            let rb = RecordBatch::try_new(Arc::new(Schema::new(fields)), all)?;
            if writer.is_none() {
                let f = File::create(&rpath).map_err(io(&rpath))?;
                writer = Some(FileWriter::try_new(
                    BufWriter::with_capacity(1 << 20, f),
                    &rb.schema(),
                )?);
            }
            writer.as_mut().expect("opened above").write(&rb)?;
        }
        if let Some(mut w) = writer {
            w.finish()?;
            out.files[p] = Some(rpath);
        }
        let _ = std::fs::remove_file(epath);
    }
    Ok(out)
}

/// Spills entity rows (row number, the group's keys, the time) per partition.
pub(super) struct EntitySpill {
    spill: Spill,
    keys: Vec<String>,
    timestamp_column: String,
    parts: usize,
}

impl EntitySpill {
    pub fn new(
        tmp: &Path,
        group: &str,
        keys: &[String],
        timestamp_column: &str,
        parts: usize,
    ) -> EntitySpill {
        EntitySpill {
            spill: Spill::new(tmp, &format!("entities-{group}"), parts),
            keys: keys.to_vec(),
            timestamp_column: timestamp_column.to_string(),
            parts,
        }
    }

    pub fn add(&mut self, batch: &RecordBatch, first_row: u64) -> Result<(), JoinError> {
        let rid = UInt64Array::from_iter_values(first_row..first_row + batch.num_rows() as u64);
        let mut fields = vec![Field::new("__rid", DataType::UInt64, false)];
        let mut cols: Vec<ArrayRef> = vec![Arc::new(rid)];
        for k in self
            .keys
            .iter()
            .chain(std::iter::once(&self.timestamp_column))
        {
            let c = column(batch, k)?;
            fields.push(Field::new(k, c.data_type().clone(), true));
            cols.push(c);
        }
        let b = RecordBatch::try_new(Arc::new(Schema::new(fields)), cols)?;
        let part = partitions(&b, &self.keys, self.parts)?;
        self.spill.scatter(&b, &part)
    }

    pub fn finish(self) -> Result<Vec<Option<PathBuf>>, JoinError> {
        self.spill.finish()
    }
}

/// Reads a group's results back in input order.
pub(super) struct Merge {
    streams: Vec<Results>,
    keys: Vec<String>,
    parts: usize,
    pub fields: Vec<Field>,
}

impl Merge {
    pub fn new(r: &GroupResults, keys: &[String]) -> Result<Merge, JoinError> {
        Ok(Merge {
            streams: r
                .files
                .iter()
                .map(Results::open)
                .collect::<Result<_, _>>()?,
            keys: keys.to_vec(),
            parts: r.files.len(),
            fields: r.fields.clone(),
        })
    }

    /// The feature columns for the entity rows of `batch` (numbered from `first_row`).
    pub fn columns(
        &mut self,
        batch: &RecordBatch,
        first_row: u64,
    ) -> Result<Vec<ArrayRef>, JoinError> {
        let part = partitions(batch, &self.keys, self.parts)?;
        let mut sources: Vec<((u32, u64), RecordBatch)> = Vec::new();
        let mut idx: Vec<(usize, usize)> = Vec::with_capacity(batch.num_rows());
        for (i, &p) in part.iter().enumerate() {
            let stream = &mut self.streams[p as usize];
            let (seq, row) = stream.next()?.ok_or_else(|| {
                JoinError::Input("internal: a partition ran out of join results".into())
            })?;
            let s = match sources.iter().rposition(|(id, _)| *id == (p, seq)) {
                Some(s) => s,
                None => {
                    let b = stream.cur.clone().expect("a result was just read from it");
                    sources.push(((p, seq), b));
                    sources.len() - 1
                }
            };
            let rid = sources[s]
                .1
                .column(0)
                .as_primitive::<UInt64Type>()
                .value(row);
            if rid != first_row + i as u64 {
                return Err(JoinError::Input(format!(
                    "internal: join results out of order (row {} got {rid})",
                    first_row + i as u64
                )));
            }
            idx.push((s, row));
        }
        let mut cols = Vec::with_capacity(self.fields.len());
        for f in 0..self.fields.len() {
            let arrays: Vec<&dyn Array> = sources
                .iter()
                .map(|(_, b)| b.column(f + 1).as_ref())
                .collect();
            if arrays.is_empty() {
                cols.push(arrow_array::new_null_array(self.fields[f].data_type(), 0));
            } else {
                cols.push(arrow_select::interleave::interleave(&arrays, &idx)?);
            }
        }
        Ok(cols)
    }
}
