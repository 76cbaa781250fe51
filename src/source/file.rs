//! Bounded inputs for replay: JSON lines (plain, gzip, zstd; a file or
//! standard input) and Parquet files with the event fields as columns.
//!
//! The format is recognised by its first bytes, not by the file name. Lines
//! are read into one reused buffer; a line longer than the limit is cut,
//! flagged and skipped to its end, so a binary file without newlines cannot
//! exhaust memory.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type, TimestampMicrosecondType};
use arrow_array::{Array, RecordBatch};
use arrow_schema::{DataType, TimeUnit};
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use parquet::arrow::ProjectionMask;

use crate::event::{Decoder, EventRef, Refusal, Slot};

/// Longest record accepted; longer ones become `oversized` dead letters.
pub const MAX_LINE_BYTES: usize = 16 * 1024 * 1024;

/// Errors opening or reading an input.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("failed to open {path}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("failed to read {path}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("failed to read parquet {path}")]
    Parquet {
        path: PathBuf,
        source: parquet::errors::ParquetError,
    },
    #[error("failed to read parquet {path}")]
    Arrow {
        path: PathBuf,
        source: arrow_schema::ArrowError,
    },
}

/// Counts bytes pulled from the underlying file (for progress).
struct Counting<R> {
    inner: R,
    count: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// A line of input.
pub struct Line<'a> {
    pub bytes: &'a [u8],
    /// 1-based line number.
    pub number: u64,
    /// The line was longer than [`MAX_LINE_BYTES`]; `bytes` is its start.
    pub oversized: bool,
    /// Full length of the line in bytes.
    pub len: usize,
}

/// Reads lines: slices of a memory-mapped file, or copies into a reused
/// buffer for streams (compressed files, standard input).
pub struct LineReader {
    inner: Box<dyn BufRead + Send>,
    buf: Vec<u8>,
    spans: Vec<LineSpan>,
    number: u64,
    path: PathBuf,
    mapped: Option<Mapped>,
}

/// The pages of a memory-mapped input ([`LineReader::pages`]), shared by
/// the threads that read it.
#[derive(Clone, Copy)]
pub struct MappedPages<'a>(&'a memmap2::Mmap);

impl MappedPages<'_> {
    /// Hands the whole pages within `from..to` back to the kernel: for
    /// readers that are done with that range. They are read back from the
    /// file if touched again.
    pub fn release(&self, from: usize, to: usize) {
        let a = (from + 4095) & !4095;
        let b = to.min(self.0.len()) & !4095;
        if a < b {
            // SAFETY: a read-only mapping of a file: pages dropped from it
            // are read back from the file if touched, so a slice into the
            // range that is still alive sees the same bytes.
            let _ = unsafe {
                self.0
                    .unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, a, b - a)
            };
        }
    }
}

struct Mapped {
    map: memmap2::Mmap,
    pos: usize,
    /// Where the current block of lines starts.
    base: usize,
    /// Bytes below this were handed back to the kernel.
    released: usize,
    progress: Arc<AtomicU64>,
}

/// Consumed parts of a mapped file are released in steps of this size, so
/// the process's resident memory does not grow with the file.
const RELEASE_STEP: usize = 64 << 20;

impl LineReader {
    fn buffered(inner: Box<dyn BufRead + Send>, path: &Path) -> LineReader {
        LineReader {
            inner,
            buf: Vec::with_capacity(4096),
            spans: Vec::new(),
            number: 0,
            path: path.to_path_buf(),
            mapped: None,
        }
    }

    /// The next line, without its `\n` (and `\r\n`); `None` at the end.
    pub fn next_line(&mut self) -> Result<Option<Line<'_>>, InputError> {
        let batch = self.next_batch(1)?;
        Ok((!batch.is_empty()).then(|| batch.line(0)))
    }

    /// The next lines, up to `max` of them (none at the end). A mapped file
    /// hands out one slice of the map; a stream copies the lines into the
    /// reader's buffer.
    pub fn next_batch(&mut self, max: usize) -> Result<LineBatch<'_>, InputError> {
        self.begin_batch();
        for _ in 0..max {
            if !self.read_line()? {
                break;
            }
        }
        Ok(self.batch())
    }

    /// Starts a new block of lines ([`LineReader::batch`]); the lines of the
    /// previous block are gone.
    pub fn begin_batch(&mut self) {
        self.spans.clear();
        self.buf.clear();
        if let Some(m) = &mut self.mapped {
            if m.pos - m.released >= RELEASE_STEP {
                let upto = m.pos & !(4096 - 1);
                // SAFETY: the range lies before every line of the new
                // block; no slice of it is alive (blocks borrow the reader),
                // and the pages of a read-only file mapping are read back
                // from the file if touched.
                let _ = unsafe {
                    m.map.unchecked_advise_range(
                        memmap2::UncheckedAdvice::DontNeed,
                        m.released,
                        upto - m.released,
                    )
                };
                m.released = upto;
            }
            m.base = m.pos;
            m.progress.store(m.pos as u64, Ordering::Relaxed);
        }
    }

    /// A handle that hands pages of a memory-mapped file back to the
    /// kernel; `None` for a stream.
    pub fn pages(&self) -> Option<MappedPages<'_>> {
        self.mapped.as_ref().map(|m| MappedPages(&m.map))
    }

    /// The whole of a memory-mapped file; `None` for a stream.
    pub fn mapped_all(&self) -> Option<&[u8]> {
        self.mapped.as_ref().map(|m| &m.map[..])
    }

    /// The unread rest of a memory-mapped file; `None` for a stream.
    #[inline]
    pub fn mapped_rest(&self) -> Option<&[u8]> {
        self.mapped.as_ref().map(|m| &m.map[m.pos..])
    }

    /// Adds the first `advance` bytes of [`LineReader::mapped_rest`] to the
    /// block as one line, whose content is their first `len` bytes: for a
    /// caller that found where the line ends. `len` is at most
    /// [`MAX_LINE_BYTES`] and `advance` at least `len` and at most what is
    /// left.
    #[inline]
    pub fn take_mapped_line(&mut self, len: usize, advance: usize) {
        let m = self.mapped.as_mut().expect("a mapped file");
        debug_assert!(len <= MAX_LINE_BYTES && len <= advance && m.pos + advance <= m.map.len());
        let start = m.pos - m.base;
        m.pos += advance;
        self.number += 1;
        self.spans.push(LineSpan {
            start,
            end: start + len,
            number: self.number,
            len,
        });
    }

    /// Reads the next line into the block; `false` at the end.
    pub fn read_line(&mut self) -> Result<bool, InputError> {
        if let Some(m) = &mut self.mapped {
            if m.pos >= m.map.len() {
                return Ok(false);
            }
            let rest = &m.map[m.pos..];
            let (len, advance) = match memchr::memchr(b'\n', rest) {
                Some(i) => (i, i + 1),
                None => (rest.len(), rest.len()),
            };
            let start = m.pos - m.base;
            m.pos += advance;
            self.number += 1;
            let full = if rest[..len].last() == Some(&b'\r') {
                len - 1
            } else {
                len
            };
            self.spans.push(LineSpan {
                start,
                end: start + full.min(MAX_LINE_BYTES),
                number: self.number,
                len: full,
            });
            return Ok(true);
        }
        let start = self.buf.len();
        let mut len = 0usize;
        let mut any = false;
        loop {
            let chunk = self.inner.fill_buf().map_err(|source| InputError::Read {
                path: self.path.clone(),
                source,
            })?;
            if chunk.is_empty() {
                break;
            }
            any = true;
            let (take, done) = match memchr::memchr(b'\n', chunk) {
                Some(i) => (i, true),
                None => (chunk.len(), false),
            };
            let room = MAX_LINE_BYTES.saturating_sub(len);
            self.buf.extend_from_slice(&chunk[..take.min(room)]);
            len += take;
            self.inner.consume(if done { take + 1 } else { take });
            if done {
                break;
            }
        }
        if !any {
            return Ok(false);
        }
        self.number += 1;
        if len <= MAX_LINE_BYTES && self.buf.last() == Some(&b'\r') && len > 0 {
            self.buf.pop();
            len -= 1;
        }
        self.spans.push(LineSpan {
            start,
            end: self.buf.len(),
            number: self.number,
            len,
        });
        Ok(true)
    }

    /// The lines of the current block.
    pub fn batch(&self) -> LineBatch<'_> {
        match &self.mapped {
            Some(m) => LineBatch {
                data: &m.map[m.base..m.pos],
                spans: &self.spans,
            },
            None => LineBatch {
                data: &self.buf,
                spans: &self.spans,
            },
        }
    }
}

/// Where a line lies in its batch's bytes.
#[derive(Debug, Clone, Copy)]
struct LineSpan {
    start: usize,
    /// End of the bytes handed out (at most [`MAX_LINE_BYTES`] after `start`).
    end: usize,
    number: u64,
    /// Full length of the line.
    len: usize,
}

/// Consecutive lines of input ([`LineReader::next_batch`]).
pub struct LineBatch<'a> {
    data: &'a [u8],
    spans: &'a [LineSpan],
}

impl<'a> LineBatch<'a> {
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Line `i` of the batch.
    #[inline]
    pub fn line(&self, i: usize) -> Line<'a> {
        let s = self.spans[i];
        Line {
            bytes: &self.data[s.start..s.end],
            number: s.number,
            oversized: s.len > MAX_LINE_BYTES,
            len: s.len,
        }
    }
}

/// An opened replay input.
pub enum Input {
    Lines(LineReader),
    Parquet(ParquetRows),
}

/// What an input is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputKind {
    Json,
    JsonGzip,
    JsonZstd,
    Parquet,
}

/// An input, its kind, its size in bytes (when known) and a byte counter.
pub struct Opened {
    pub input: Input,
    pub kind: InputKind,
    pub size: Option<u64>,
    pub progress: Arc<AtomicU64>,
    pub name: String,
}

fn sniff(head: &[u8]) -> InputKind {
    if head.starts_with(b"PAR1") {
        InputKind::Parquet
    } else if head.starts_with(&[0x1f, 0x8b]) {
        InputKind::JsonGzip
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        InputKind::JsonZstd
    } else {
        InputKind::Json
    }
}

/// Opens `path` (`-` is standard input) for `decoder`'s pipeline.
pub fn open(path: &Path, batch_rows: usize, columns: &[String]) -> Result<Opened, InputError> {
    let progress = Arc::new(AtomicU64::new(0));
    let open_err = |source| InputError::Open {
        path: path.to_path_buf(),
        source,
    };
    let (reader, size, name): (Box<dyn Read + Send>, Option<u64>, String) =
        if path == Path::new("-") {
            (Box::new(std::io::stdin()), None, "-".to_string())
        } else {
            let f = File::open(path).map_err(open_err)?;
            let size = f.metadata().ok().map(|m| m.len());
            (Box::new(f), size, path.display().to_string())
        };
    let mut buffered = BufReader::with_capacity(
        1 << 20,
        Counting {
            inner: reader,
            count: progress.clone(),
        },
    );
    let head = buffered
        .fill_buf()
        .map_err(|source| InputError::Read {
            path: path.to_path_buf(),
            source,
        })?
        .to_vec();
    let kind = sniff(&head);
    let input = match kind {
        InputKind::Parquet => {
            // Parquet needs random access: a file is read in place, standard input in memory.
            let bytes = if path == Path::new("-") {
                let mut v = Vec::new();
                buffered
                    .read_to_end(&mut v)
                    .map_err(|source| InputError::Read {
                        path: path.to_path_buf(),
                        source,
                    })?;
                Some(bytes::Bytes::from(v))
            } else {
                None
            };
            Input::Parquet(ParquetRows::open(
                path,
                bytes,
                batch_rows,
                progress.clone(),
                columns,
            )?)
        }
        InputKind::JsonGzip => Input::Lines(LineReader::buffered(
            Box::new(BufReader::with_capacity(
                1 << 20,
                flate2::bufread::MultiGzDecoder::new(buffered),
            )),
            path,
        )),
        InputKind::JsonZstd => {
            let dec = zstd::stream::read::Decoder::with_buffer(buffered).map_err(open_err)?;
            Input::Lines(LineReader::buffered(
                Box::new(BufReader::with_capacity(1 << 20, dec)),
                path,
            ))
        }
        InputKind::Json => {
            let mut reader = LineReader::buffered(Box::new(buffered), path);
            // A regular file is read through a memory map: no copies.
            if path != Path::new("-") {
                let file = File::open(path).map_err(open_err)?;
                // SAFETY: the map is only read; a file truncated by another
                // process while mapped is outside what replay supports.
                if let Ok(map) = unsafe { memmap2::Mmap::map(&file) } {
                    let _ = map.advise(memmap2::Advice::Sequential);
                    progress.store(0, Ordering::Relaxed);
                    reader.mapped = Some(Mapped {
                        map,
                        pos: 0,
                        base: 0,
                        released: 0,
                        progress: progress.clone(),
                    });
                }
            }
            Input::Lines(reader)
        }
    };
    Ok(Opened {
        input,
        kind,
        size,
        progress,
        name,
    })
}

/// Rows `rows` (counted within the group) of row group `group` of a
/// Parquet file; `first_row` is the 1-based number of its first row in the file.
#[derive(Debug, Clone)]
pub struct ParquetPart {
    pub group: usize,
    pub rows: std::ops::Range<usize>,
    pub first_row: u64,
}

/// The number of rows of each row group of a Parquet file (of `bytes` when
/// given: standard input read into memory).
pub fn parquet_row_groups(
    path: &Path,
    bytes: Option<&bytes::Bytes>,
) -> Result<Vec<u64>, InputError> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let perr = |source| InputError::Parquet {
        path: path.to_path_buf(),
        source,
    };
    let meta = match bytes {
        Some(b) => SerializedFileReader::new(b.clone())
            .map_err(perr)?
            .metadata()
            .clone(),
        None => {
            let f = File::open(path).map_err(|source| InputError::Open {
                path: path.to_path_buf(),
                source,
            })?;
            SerializedFileReader::new(f)
                .map_err(perr)?
                .metadata()
                .clone()
        }
    };
    Ok(meta
        .row_groups()
        .iter()
        .map(|g| g.num_rows() as u64)
        .collect())
}

/// One needed column of the current batch, cast to a canonical type.
enum Col {
    Str(arrow_array::StringArray),
    /// Dictionary-encoded text: per row an index into the values.
    Dict(arrow_array::Int32Array, arrow_array::StringArray),
    Int(arrow_array::Int64Array),
    Float(arrow_array::Float64Array),
    Bool(arrow_array::BooleanArray),
    Time(arrow_array::TimestampMicrosecondArray),
    Absent,
    Unsupported(String),
}

/// A row number (1-based) and the row decoded, or why it was refused.
pub type DecodedRow<'d> = (u64, Result<EventRef<'d>, Refusal>);

/// Rows of a Parquet file, decoded through a [`Decoder`].
pub struct ParquetRows {
    reader: ParquetRecordBatchReader,
    path: PathBuf,
    /// The file's bytes when read from standard input.
    bytes: Option<bytes::Bytes>,
    batch: Option<RecordBatch>,
    cols: Vec<Col>,
    /// The column of a one-column key.
    key_col: Option<usize>,
    /// The key hash ([`crate::engine::key_hash`]) of every value of the
    /// dictionary `hashed_dict` of a dictionary-encoded key column: the
    /// reader hands the same dictionary to every batch of a row group, so
    /// each distinct key is encoded and hashed once, not once per row.
    /// Holding the dictionary keeps its buffers from being reused for
    /// another one while their addresses identify it.
    dict_hashes: Vec<u64>,
    hashed_dict: Option<arrow_array::StringArray>,
    /// A second hash of each encoded key, asked for by a caller
    /// ([`ParquetRows::also_hash_keys`]): then both hashes of each
    /// dictionary value are kept side by side here instead (one cache line
    /// read per row, not two), and `dict_hashes` stays empty.
    extra_hash: Option<fn(&[u8]) -> u64>,
    dict_pairs: Vec<(u64, u64)>,
    row_in_batch: usize,
    row: u64,
    file_size: u64,
    total_rows: u64,
    progress: Arc<AtomicU64>,
}

impl ParquetRows {
    fn open(
        path: &Path,
        bytes: Option<bytes::Bytes>,
        batch_rows: usize,
        progress: Arc<AtomicU64>,
        columns: &[String],
    ) -> Result<ParquetRows, InputError> {
        Self::open_part(path, bytes, batch_rows, progress, columns, None)
    }

    /// The rows of one part of a file ([`ParquetPart`]), or of the whole file.
    pub fn open_part(
        path: &Path,
        bytes: Option<bytes::Bytes>,
        batch_rows: usize,
        progress: Arc<AtomicU64>,
        columns: &[String],
        part: Option<&ParquetPart>,
    ) -> Result<ParquetRows, InputError> {
        let first_row = part.map_or(1, |p| p.first_row);
        let groups = part.cloned();
        let perr = |source| InputError::Parquet {
            path: path.to_path_buf(),
            source,
        };
        // Only the columns the pipeline reads are decoded. String columns
        // stored with a dictionary are read as dictionary arrays: a row then
        // refers to its value in the dictionary instead of the reader copying
        // the text of every row.
        fn build<T: parquet::file::reader::ChunkReader + 'static>(
            input: T,
            columns: &[String],
            batch_rows: usize,
            groups: Option<ParquetPart>,
        ) -> Result<(ParquetRecordBatchReader, u64), parquet::errors::ParquetError> {
            use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions};
            use parquet::file::metadata::PageIndexPolicy;
            // A part of a row group is read through the offset index when
            // the file has one, so that the rows before the part are skipped
            // a page at a time instead of decompressed and decoded.
            let index = if groups.is_some() {
                PageIndexPolicy::Optional
            } else {
                PageIndexPolicy::Skip
            };
            let options = ArrowReaderOptions::new().with_offset_index_policy(index);
            let meta = ArrowReaderMetadata::load(&input, options)?;
            let rows = match &groups {
                None => meta.metadata().file_metadata().num_rows() as u64,
                Some(p) => p.rows.len() as u64,
            };
            let schema = meta.schema().clone();
            let parquet_schema = meta.metadata().file_metadata().schema_descr();
            let first_group = meta.metadata().row_groups().first();
            let mut fields: Vec<arrow_schema::FieldRef> = Vec::new();
            let mut roots = Vec::new();
            let mut changed = false;
            for (i, f) in schema.fields().iter().enumerate() {
                let used = columns.iter().any(|c| c == f.name());
                if used {
                    roots.push(i);
                }
                let leaf = (0..parquet_schema.num_columns())
                    .find(|&l| parquet_schema.get_column_root_idx(l) == i);
                let dict_stored = leaf
                    .zip(first_group)
                    .is_some_and(|(l, g)| g.column(l).dictionary_page_offset().is_some());
                if used && dict_stored && f.data_type() == &DataType::Utf8 {
                    changed = true;
                    fields.push(Arc::new(f.as_ref().clone().with_data_type(
                        DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
                    )));
                } else {
                    fields.push(f.clone());
                }
            }
            let meta = if changed {
                let hinted = Arc::new(arrow_schema::Schema::new_with_metadata(
                    fields,
                    schema.metadata().clone(),
                ));
                ArrowReaderMetadata::try_new(
                    meta.metadata().clone(),
                    ArrowReaderOptions::new()
                        .with_offset_index_policy(index)
                        .with_schema(hinted),
                )?
            } else {
                meta
            };
            let builder = ParquetRecordBatchReaderBuilder::new_with_metadata(input, meta);
            let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
            let builder = match groups {
                Some(p) => {
                    use parquet::arrow::arrow_reader::{RowSelection, RowSelector};
                    let sel = RowSelection::from(vec![
                        RowSelector::skip(p.rows.start),
                        RowSelector::select(p.rows.len()),
                    ]);
                    builder
                        .with_row_groups(vec![p.group])
                        .with_row_selection(sel)
                }
                None => builder,
            };
            Ok((
                builder
                    .with_projection(mask)
                    .with_batch_size(batch_rows)
                    .build()?,
                rows,
            ))
        }
        let kept = bytes.clone();
        let (reader, file_size, total_rows) = match bytes {
            Some(b) => {
                let size = b.len() as u64;
                let (r, rows) = build(b, columns, batch_rows, groups).map_err(perr)?;
                (r, size, rows)
            }
            None => {
                let f = File::open(path).map_err(|source| InputError::Open {
                    path: path.to_path_buf(),
                    source,
                })?;
                let size = f.metadata().map(|m| m.len()).unwrap_or(0);
                let (r, rows) = build(f, columns, batch_rows, groups).map_err(perr)?;
                (r, size, rows)
            }
        };
        Ok(ParquetRows {
            reader,
            path: path.to_path_buf(),
            bytes: kept,
            batch: None,
            cols: Vec::new(),
            key_col: None,
            dict_hashes: Vec::new(),
            hashed_dict: None,
            extra_hash: None,
            dict_pairs: Vec::new(),
            row_in_batch: 0,
            row: first_row - 1,
            file_size,
            total_rows,
            progress,
        })
    }

    /// The next row's index in the current batch.
    #[inline]
    /// Where the rows come from: the file, and its bytes when it was read
    /// from standard input.
    pub fn source(&self) -> (&Path, Option<&bytes::Bytes>) {
        (&self.path, self.bytes.as_ref())
    }

    pub fn row_in_batch(&self) -> usize {
        self.row_in_batch
    }

    /// With a key of one text column: asks the CPU to fetch the key text of
    /// the rows `at..at + n` after the next one (look-ahead for the key
    /// index). Does nothing for other keys or past the current batch.
    pub fn prefetch_key_text(&self, at: usize, n: usize) {
        let (Some(b), Some(c)) = (&self.batch, self.key_col) else {
            return;
        };
        if let Col::Dict(ks, vs) = &self.cols[c] {
            let rows = b.num_rows();
            let offsets = vs.value_offsets();
            let bytes = vs.values().as_ptr();
            let from = self.row_in_batch + at;
            for i in from..(from + n).min(rows) {
                if let Some(&o) = offsets.get(ks.values()[i] as usize) {
                    crate::mem::prefetch(bytes.wrapping_add(o as usize));
                }
            }
        }
    }

    /// With a key of one text column: calls `f` with the index in the batch
    /// and the key hash ([`crate::engine::key_hash`] of the encoded key) of
    /// each of the rows `at..at + n` after the next one. Does nothing for
    /// other keys or past the current batch.
    pub fn upcoming_key_hashes(
        &self,
        at: usize,
        n: usize,
        buf: &mut Vec<u8>,
        mut f: impl FnMut(usize, u64),
    ) {
        let (Some(b), Some(c)) = (&self.batch, self.key_col) else {
            return;
        };
        let from = self.row_in_batch + at;
        let to = (from + n).min(b.num_rows());
        match &self.cols[c] {
            Col::Dict(..) => {
                for i in from..to {
                    if let Some(h) = self.dict_hash_at(i) {
                        f(i, h);
                    }
                }
            }
            Col::Str(a) => {
                for i in from..to {
                    if a.is_valid(i) {
                        crate::event::encode_str_key(a.value(i), buf);
                        f(i, crate::engine::key_hash(buf));
                    }
                }
            }
            _ => {}
        }
    }

    /// Decodes the next row; `None` at the end. The row number is 1-based.
    pub fn next_row<'d>(
        &mut self,
        dec: &'d mut Decoder,
    ) -> Result<Option<DecodedRow<'d>>, InputError> {
        loop {
            if let Some(b) = &self.batch {
                if self.row_in_batch < b.num_rows() {
                    break;
                }
            }
            match self.reader.next() {
                None => return Ok(None),
                Some(Err(source)) => {
                    return Err(InputError::Arrow {
                        path: self.path.clone(),
                        source,
                    })
                }
                Some(Ok(batch)) => {
                    self.prepare(&batch, dec);
                    self.batch = Some(batch);
                    self.row_in_batch = 0;
                }
            }
        }
        let i = self.row_in_batch;
        self.row_in_batch += 1;
        self.row += 1;
        if self.total_rows > 0 && self.row % 4096 == 0 {
            self.progress.store(
                self.file_size * self.row / self.total_rows,
                Ordering::Relaxed,
            );
        }
        dec.begin();
        let mut key_text = "";
        for fi in 0..self.cols.len() {
            let usage = dec.plan.fields[fi].1;
            let col = &self.cols[fi];
            let null = match col {
                Col::Absent => true,
                Col::Unsupported(_) => false,
                Col::Str(a) => a.is_null(i),
                Col::Dict(k, _) => k.is_null(i),
                Col::Int(a) => a.is_null(i),
                Col::Float(a) => a.is_null(i),
                Col::Bool(a) => a.is_null(i),
                Col::Time(a) => a.is_null(i),
            };
            if null {
                if let Some(k) = usage.key_pos {
                    if matches!(
                        col,
                        Col::Str(_)
                            | Col::Dict(..)
                            | Col::Int(_)
                            | Col::Float(_)
                            | Col::Bool(_)
                            | Col::Time(_)
                    ) {
                        dec.key_null(k);
                    }
                }
                if let Some(s) = usage.slot {
                    if !matches!(col, Col::Absent) {
                        dec.slot(s, Slot::Null);
                    }
                }
                continue;
            }
            if let Some(k) = usage.key_pos {
                match col {
                    // A one-column key is read where it lies, without a copy.
                    Col::Str(a) if self.key_col == Some(fi) => {
                        key_text = a.value(i);
                        dec.key_text(k, 0, key_text.len() as u32);
                    }
                    Col::Dict(ks, vs) if self.key_col == Some(fi) => {
                        key_text = vs.value(ks.value(i) as usize);
                        dec.key_text(k, 0, key_text.len() as u32);
                    }
                    Col::Str(a) => dec.key_str(k, a.value(i)),
                    Col::Dict(ks, vs) => dec.key_str(k, vs.value(ks.value(i) as usize)),
                    Col::Int(a) => dec.key_int(k, a.value(i)),
                    Col::Bool(a) => dec.key_other(k, if a.value(i) { "true" } else { "false" }),
                    Col::Float(a) => dec.key_other(k, &crate::sink::format_f64(a.value(i))),
                    _ => dec.key_bad(k),
                }
            }
            if usage.is_time {
                match col {
                    Col::Time(a) => dec.time(Ok(a.value(i))),
                    Col::Str(a) => dec.time_text(a.value(i)),
                    Col::Dict(ks, vs) => dec.time_text(vs.value(ks.value(i) as usize)),
                    Col::Int(a) => {
                        let fmt = dec.plan.time_format();
                        dec.time(
                            crate::time::epoch_int_to_micros(a.value(i), fmt)
                                .map_err(|e| e.to_string()),
                        );
                    }
                    Col::Unsupported(t) => {
                        let msg = format!(
                            "event-time column {:?} has unsupported type {t}",
                            dec.plan.fields[fi].0
                        );
                        dec.time(Err(msg));
                    }
                    _ => {
                        let msg = format!(
                            "event-time column {:?} is not a timestamp, string or integer",
                            dec.plan.fields[fi].0
                        );
                        dec.time(Err(msg));
                    }
                }
            }
            if let Some(s) = usage.slot {
                match col {
                    Col::Str(a) => dec.slot_str(s, a.value(i)),
                    Col::Dict(ks, vs) => dec.slot_str(s, vs.value(ks.value(i) as usize)),
                    Col::Int(a) => dec.slot(s, Slot::Num(a.value(i) as f64)),
                    Col::Float(a) => {
                        let v = a.value(i);
                        dec.slot(
                            s,
                            if v.is_finite() {
                                Slot::Num(v)
                            } else {
                                Slot::Nested
                            },
                        );
                    }
                    Col::Bool(a) => dec.slot(s, Slot::Bool(a.value(i))),
                    Col::Time(a) => dec.slot(s, Slot::Num(a.value(i) as f64)),
                    _ => dec.slot(s, Slot::Nested),
                }
            }
        }
        Ok(Some((self.row, dec.finish_text(key_text))))
    }

    fn prepare(&mut self, batch: &RecordBatch, dec: &Decoder) {
        self.cols.clear();
        self.key_col = None;
        if dec.plan.key_fields.len() == 1 {
            self.key_col = dec
                .plan
                .fields
                .iter()
                .position(|(_, u)| u.key_pos == Some(0));
        }
        for (name, usage) in &dec.plan.fields {
            let _ = usage;
            let Some(arr) = batch.column_by_name(name) else {
                self.cols.push(Col::Absent);
                continue;
            };
            if let DataType::Dictionary(k, v) = arr.data_type() {
                if **k == DataType::Int32 && **v == DataType::Utf8 {
                    let d = arr.as_dictionary::<arrow_array::types::Int32Type>();
                    let values = d.values().as_string::<i32>().clone();
                    // Keys were checked against the dictionary by the reader.
                    self.cols.push(Col::Dict(d.keys().clone(), values));
                    continue;
                }
            }
            let canon = match arr.data_type() {
                DataType::Utf8
                | DataType::LargeUtf8
                | DataType::Utf8View
                | DataType::Dictionary(_, _) => Some(DataType::Utf8),
                DataType::Int8
                | DataType::Int16
                | DataType::Int32
                | DataType::Int64
                | DataType::UInt8
                | DataType::UInt16
                | DataType::UInt32
                | DataType::UInt64 => Some(DataType::Int64),
                DataType::Float16
                | DataType::Float32
                | DataType::Float64
                | DataType::Decimal128(_, _) => Some(DataType::Float64),
                DataType::Boolean => Some(DataType::Boolean),
                DataType::Timestamp(_, tz) => {
                    Some(DataType::Timestamp(TimeUnit::Microsecond, tz.clone()))
                }
                DataType::Date32 | DataType::Date64 => {
                    Some(DataType::Timestamp(TimeUnit::Microsecond, None))
                }
                _ => None,
            };
            let col = match canon.and_then(|t| arrow_cast::cast(arr, &t).ok()) {
                None => Col::Unsupported(arr.data_type().to_string()),
                Some(c) => match c.data_type() {
                    DataType::Utf8 => Col::Str(c.as_string::<i32>().clone()),
                    DataType::Int64 => Col::Int(c.as_primitive::<Int64Type>().clone()),
                    DataType::Float64 => Col::Float(c.as_primitive::<Float64Type>().clone()),
                    DataType::Boolean => Col::Bool(c.as_boolean().clone()),
                    DataType::Timestamp(_, _) => {
                        Col::Time(c.as_primitive::<TimestampMicrosecondType>().clone())
                    }
                    other => Col::Unsupported(other.to_string()),
                },
            };
            self.cols.push(col);
        }
        self.hash_dictionary();
    }

    /// Hashes the values of the key column's dictionary, unless they are
    /// those of the previous batch.
    fn hash_dictionary(&mut self) {
        let Some(Col::Dict(_, vs)) = self.key_col.map(|c| &self.cols[c]) else {
            self.hashed_dict = None;
            return;
        };
        let same = self.hashed_dict.as_ref().is_some_and(|h| {
            h.len() == vs.len()
                && h.values().as_ptr() == vs.values().as_ptr()
                && h.value_offsets().as_ptr() == vs.value_offsets().as_ptr()
        });
        if same {
            return;
        }
        let mut buf = Vec::new();
        self.dict_hashes.clear();
        self.dict_pairs.clear();
        for j in 0..vs.len() {
            crate::event::encode_str_key(vs.value(j), &mut buf);
            let h = crate::engine::key_hash(&buf);
            match self.extra_hash {
                Some(f) => self.dict_pairs.push((h, f(&buf))),
                None => self.dict_hashes.push(h),
            }
        }
        self.hashed_dict = Some(vs.clone());
    }

    /// Keeps `f` of each encoded key of a dictionary-encoded key column
    /// beside its key hash, for [`ParquetRows::dict_key_hashes`] (a caller
    /// that splits keys by another hash computes it once per distinct key
    /// of a row group instead of once per row).
    pub fn also_hash_keys(&mut self, f: fn(&[u8]) -> u64) {
        self.extra_hash = Some(f);
        self.hashed_dict = None;
        if self.batch.is_some() {
            self.hash_dictionary();
        }
    }

    /// The key hash and the hash given to [`ParquetRows::also_hash_keys`]
    /// of the key of the row `at` rows after the next one, when it is a
    /// non-null value of a dictionary-encoded key column.
    #[inline]
    pub fn dict_key_hashes(&self, at: usize) -> Option<(u64, u64)> {
        self.dict_pair_at(self.row_in_batch + at).copied()
    }

    /// Asks the CPU to fetch [`ParquetRows::dict_key_hashes`]`(at)`.
    #[inline]
    pub fn prefetch_dict_key_hashes(&self, at: usize) {
        if let Some(p) = self.dict_pair_at(self.row_in_batch + at) {
            crate::mem::prefetch(p as *const (u64, u64));
        }
    }

    #[inline]
    fn dict_pair_at(&self, i: usize) -> Option<&(u64, u64)> {
        self.dict_pairs.get(self.dict_index_at(i)?)
    }

    /// The key hash of the row `at` rows after the next one, when its key is
    /// a non-null value of a dictionary-encoded key column (then equal to
    /// the hash of the key the row decodes to).
    #[inline]
    pub fn dict_key_hash(&self, at: usize) -> Option<u64> {
        self.dict_hash_at(self.row_in_batch + at)
    }

    /// [`ParquetRows::dict_key_hash`] of row `i` of the batch.
    #[inline]
    fn dict_hash_at(&self, i: usize) -> Option<u64> {
        self.dict_hashes.get(self.dict_index_at(i)?).copied()
    }

    /// The dictionary index of row `i` of the batch, when the key is one
    /// dictionary-encoded column and the row's key is not null.
    #[inline]
    fn dict_index_at(&self, i: usize) -> Option<usize> {
        match self.key_col.map(|c| &self.cols[c]) {
            Some(Col::Dict(ks, _)) if i < ks.len() && ks.is_valid(i) => {
                Some(ks.values()[i] as usize)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{decode_key, DecodePlan, FieldVal, KeyValue};
    use arrow_array::{Int64Array, RecordBatch, StringArray};
    use arrow_schema::{Field, Schema};
    use parquet::arrow::ArrowWriter;
    use parquet::file::properties::WriterProperties;

    /// (key, kind, time) of every row, as the replay reads them, and how
    /// many rows had a key hash known from the dictionary (each checked
    /// against the decoded key's hash).
    fn read_all(path: &Path) -> (Vec<(Option<String>, Option<String>, i64)>, usize) {
        let p = crate::config::test_pipeline(
            "[user_id]",
            "  - { name: c, agg: count, where: 'kind == \"click\"' }\n",
        );
        let mut dec = Decoder::new(DecodePlan::new(&p));
        let columns: Vec<String> = dec.plan.fields.iter().map(|(n, _)| n.clone()).collect();
        let kind_slot = dec
            .plan
            .fields
            .iter()
            .find(|(n, _)| n == "kind")
            .and_then(|(_, u)| u.slot)
            .expect("kind is read");
        let Input::Parquet(mut rows) = open(path, 7, &columns).expect("open").input else {
            panic!("not read as Parquet");
        };
        let mut out = Vec::new();
        let mut hashed = 0;
        loop {
            let known = rows.dict_key_hash(0);
            let Some((_, r)) = rows.next_row(&mut dec).expect("row") else {
                break;
            };
            match r {
                Ok(ev) => {
                    if let Some(h) = known {
                        assert_eq!(h, crate::engine::key_hash(ev.key), "row {}", out.len());
                        hashed += 1;
                    }
                    let key = match decode_key(ev.key).as_slice() {
                        [KeyValue::Str(s)] => Some(s.clone()),
                        other => panic!("unexpected key {other:?}"),
                    };
                    let kind = match ev.field(kind_slot) {
                        FieldVal::Str(s) => Some(s.to_string()),
                        _ => None,
                    };
                    out.push((key, kind, ev.time));
                }
                Err(_) => out.push((None, None, 0)),
            }
        }
        (out, hashed)
    }

    fn write(path: &Path, props: WriterProperties, users: &[Option<&str>], kinds: &[Option<&str>]) {
        let schema = Arc::new(Schema::new(vec![
            Field::new("user_id", DataType::Utf8, true),
            Field::new("kind", DataType::Utf8, true),
            Field::new("ts", DataType::Int64, false),
        ]));
        let ts: Vec<i64> = (0..users.len() as i64).map(|i| 1_000 * i).collect();
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from(users.to_vec())),
                Arc::new(StringArray::from(kinds.to_vec())),
                Arc::new(Int64Array::from(ts)),
            ],
        )
        .expect("batch");
        let mut w = ArrowWriter::try_new(File::create(path).expect("create"), schema, Some(props))
            .expect("writer");
        w.write(&batch).expect("write");
        w.close().expect("close");
    }

    /// String columns read the same whether the file stores them with a
    /// dictionary (read as dictionary arrays), without one, or with a
    /// dictionary that overflows into plain pages part-way; nulls stay nulls.
    #[test]
    fn string_columns_in_every_storage_form() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let n = 200;
        let names: Vec<String> = (0..n)
            .map(|i| format!("user-{:03}", (i * 37) % 91))
            .collect();
        let users: Vec<Option<&str>> = names
            .iter()
            .enumerate()
            .map(|(i, s)| (i % 17 != 5).then_some(s.as_str()))
            .collect();
        let kinds: Vec<Option<&str>> = (0..n)
            .map(|i| match i % 3 {
                0 => Some("click"),
                1 => Some("view"),
                _ => None,
            })
            .collect();
        let expected: Vec<(Option<String>, Option<String>, i64)> = users
            .iter()
            .zip(&kinds)
            .enumerate()
            .map(|(i, (u, k))| match u {
                Some(u) => (
                    Some(u.to_string()),
                    k.map(str::to_string),
                    1_000_000 * i as i64,
                ),
                // A null key is refused (dead letter).
                None => (None, None, 0),
            })
            .collect();
        let forms = [
            ("dictionary", WriterProperties::builder().build()),
            (
                "plain",
                WriterProperties::builder()
                    .set_dictionary_enabled(false)
                    .build(),
            ),
            (
                "a dictionary per row group of 50 rows",
                WriterProperties::builder()
                    .set_max_row_group_row_count(Some(50))
                    .build(),
            ),
            (
                "dictionary overflowing to plain pages",
                WriterProperties::builder()
                    .set_dictionary_page_size_limit(64)
                    .set_data_page_row_count_limit(8)
                    .set_write_batch_size(8)
                    .build(),
            ),
        ];
        for (form, props) in forms {
            let path = tmp
                .path()
                .join(format!("{}.parquet", form.replace(' ', "_")));
            write(&path, props, &users, &kinds);
            let (got, hashed) = read_all(&path);
            assert_eq!(got, expected, "{form}");
            // Keys read from a dictionary come with their hash.
            if form.starts_with("dictionary") || form.starts_with("a dictionary") {
                assert!(hashed > 0, "{form}: no key hash known from the dictionary");
            } else {
                assert_eq!(hashed, 0, "{form}");
            }
        }
    }

    /// Lines as a plain split gives them: without `\n` and a trailing `\r`,
    /// numbered from 1, no line after a final newline.
    fn split_lines(data: &[u8]) -> Vec<(u64, Vec<u8>)> {
        let mut v: Vec<&[u8]> = data.split(|&b| b == b'\n').collect();
        if data.is_empty() || data.ends_with(b"\n") {
            v.pop();
        }
        v.iter()
            .enumerate()
            .map(|(i, l)| (i as u64 + 1, l.strip_suffix(b"\r").unwrap_or(l).to_vec()))
            .collect()
    }

    fn read_batches(r: &mut LineReader, sizes: &[usize]) -> Vec<(u64, Vec<u8>)> {
        let mut got = Vec::new();
        for i in 0.. {
            let b = r.next_batch(sizes[i % sizes.len()]).expect("read");
            if b.is_empty() {
                break;
            }
            assert!(b.len() <= sizes[i % sizes.len()]);
            for j in 0..b.len() {
                let l = b.line(j);
                assert!(!l.oversized);
                assert_eq!(l.len, l.bytes.len());
                got.push((l.number, l.bytes.to_vec()));
            }
        }
        got
    }

    proptest::proptest! {
        /// A mapped file and a stream give the same lines, in batches of
        /// any size, as a plain split of the bytes.
        #[test]
        fn batches_of_lines_match_a_plain_split(
            data in proptest::collection::vec(
                proptest::sample::select(vec![b'a', b'{', b'"', b'\n', b'\r', b' ']), 0..400),
            sizes in proptest::collection::vec(1usize..70, 1..5),
        ) {
            let want = split_lines(&data);
            let tmp = tempfile::tempdir().expect("tempdir");
            // A first byte that is not gzip's or zstd's: plain JSON lines.
            let path = tmp.path().join("in.jsonl");
            std::fs::write(&path, &data).expect("write");
            let Input::Lines(mut mapped) = open(&path, 16, &[]).expect("open").input else {
                panic!("not read as lines");
            };
            proptest::prop_assert_eq!(&read_batches(&mut mapped, &sizes), &want);
            // A stream, read in small chunks so that lines straddle them.
            let stream = std::io::BufReader::with_capacity(7, std::io::Cursor::new(data.clone()));
            let mut streamed = LineReader::buffered(Box::new(stream), &path);
            proptest::prop_assert_eq!(&read_batches(&mut streamed, &sizes), &want);
        }
    }
}
