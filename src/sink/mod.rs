//! Sinks: where panes and refused records go.
//!
//! `parquet` is the offline store (SPEC 6), `dead_letter` the files of bad
//! input with reasons and source positions (SPEC 5).

pub mod dead_letter;
pub mod embedded;
pub mod parquet;
pub mod redis;

use std::path::{Path, PathBuf};

use crate::storage::{self, Mirror, StorageError};

/// Publishes closed files, each a (temporary, final) pair: local files are
/// renamed, objects (URLs, see `storage`) copied by the store and the
/// temporary one deleted. A pair already published (a repeated publication
/// after a crash: the temporary is gone, the final one is there) is skipped.
pub fn publish(files: &[(PathBuf, PathBuf)]) -> Result<(), StorageError> {
    for (tmp, dest) in files {
        if storage::is_url(tmp) {
            let (t, d) = (tmp.to_string_lossy(), dest.to_string_lossy());
            if storage::copy(&t, &d)? {
                storage::delete(&t)?;
            } else if !storage::exists(&d)? {
                return Err(StorageError::Local {
                    what: "unpublished file is gone",
                    path: tmp.clone(),
                    source: std::io::ErrorKind::NotFound.into(),
                });
            }
            continue;
        }
        match std::fs::rename(tmp, dest) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && dest.exists() => {}
            Err(source) => {
                return Err(StorageError::Local {
                    what: "failed to publish",
                    path: dest.clone(),
                    source,
                })
            }
        }
    }
    Ok(())
}

/// Removes the temporary side of unpublished (temporary, final) pairs.
pub fn discard(files: &[(PathBuf, PathBuf)]) {
    for (tmp, _) in files {
        if storage::is_url(tmp) {
            let _ = storage::delete(&tmp.to_string_lossy());
        } else {
            let _ = std::fs::remove_file(tmp);
        }
    }
}

/// Moves closed local files bound for object storage up under their
/// temporary names (the local copy is removed): returns the pairs as URLs,
/// ready for [`publish`]. Pairs outside every mirror stay as they are.
pub fn upload_pending(
    mirrors: &[&Mirror],
    files: Vec<(PathBuf, PathBuf)>,
) -> Result<Vec<(PathBuf, PathBuf)>, StorageError> {
    let mut out = Vec::with_capacity(files.len());
    for (tmp, dest) in files {
        let m = mirrors.iter().find(|m| tmp.starts_with(&m.local));
        match m.and_then(|m| Some((m.url_of(&tmp)?, m.url_of(&dest)?))) {
            Some((t, d)) => {
                storage::put_file(&tmp, &t)?;
                let _ = std::fs::remove_file(&tmp);
                out.push((PathBuf::from(t), PathBuf::from(d)));
            }
            None => out.push((tmp, dest)),
        }
    }
    Ok(out)
}

/// Whether `name` is a file or object written but not yet published by a
/// run whose identifier starts with `prefix` (`.part-<run>….tmp`, the
/// temporary names of Parquet and dead-letter files).
pub fn is_unpublished(name: &str, prefix: &str) -> bool {
    name.strip_prefix(".part-")
        .is_some_and(|rest| rest.starts_with(prefix))
        && name.ends_with(".tmp")
}

/// Removes the temporary objects under the URL `dir` (recursively) of
/// runs whose identifiers start with `prefix` (uploaded for an epoch whose
/// checkpoint was never stored). Returns how many were removed.
pub fn remove_unpublished_objects(dir: &Path, prefix: &str) -> Result<usize, StorageError> {
    let url = dir.to_string_lossy();
    let mut removed = 0;
    for rel in storage::list(&url)? {
        let name = rel.rsplit('/').next().unwrap_or(&rel);
        if is_unpublished(name, prefix) {
            storage::delete(&storage::join(&url, &rel))?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// Decimal text of a float in shortest round-trip form (`0.1`, `12`, `-3.5`).
pub fn format_f64(f: f64) -> String {
    let mut s = String::new();
    write_f64(f, &mut s);
    s
}

fn write_f64(f: f64, buf: &mut String) {
    use std::fmt::Write as _;
    if f == f.trunc() && f.abs() < 1e16 {
        let _ = write!(buf, "{}", f as i64);
    } else {
        let _ = write!(buf, "{f}");
    }
}

/// A feature value as text (Redis fields, text columns); `None` for null.
/// Floats in shortest round-trip form (`nan`, `inf`, `-inf` aside); a list
/// (`collect_set`) as a JSON array of strings.
pub fn value_text(v: &crate::aggregate::Value) -> Option<String> {
    let mut s = String::new();
    write_value_text(v, &mut s).then_some(s)
}

/// [`value_text`] appended to `buf`; false (nothing appended) for null.
pub fn write_value_text(v: &crate::aggregate::Value, buf: &mut String) -> bool {
    use crate::aggregate::Value;
    use std::fmt::Write as _;
    match v {
        Value::Null => return false,
        Value::Int(i) => {
            let _ = write!(buf, "{i}");
        }
        Value::Float(f) if f.is_finite() => write_f64(*f, buf),
        Value::Float(f) if f.is_nan() => buf.push_str("nan"),
        Value::Float(f) => buf.push_str(if *f > 0.0 { "inf" } else { "-inf" }),
        Value::Bool(b) => {
            let _ = write!(buf, "{b}");
        }
        Value::Str(s) => buf.push_str(s),
        Value::List(items) => {
            buf.push_str(&serde_json::to_string(items).expect("strings serialize"))
        }
    }
    true
}

#[cfg(test)]
mod tests {
    #[test]
    fn shortest_round_trip() {
        for f in [0.1, 12.0, -3.5, 1.0 / 3.0, 1e-7, 123456789.125] {
            let s = super::format_f64(f);
            assert_eq!(s.parse::<f64>().expect("number"), f, "{s}");
        }
        assert_eq!(super::format_f64(12.0), "12");
        assert_eq!(super::format_f64(0.1), "0.1");
    }
}
