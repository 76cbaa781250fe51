//! Which feature groups a join reads, and how: `NAME` or `NAME:f1,f2`
//! resolved against the groups' pipeline files (keys, TTL, features,
//! accumulation, request-time features), with per-group overrides
//! (`NAME=col1,col2` keys, `NAME=30d` or `NAME=none` TTL). One function
//! for `rill join` and the Python package, so that both join alike.

use std::path::Path;

use super::{load_group_files, GroupSpec, JoinError};
use crate::config::{Accumulation, Pipeline};

/// The value of `NAME=VALUE` flags for `group`, if one names it.
fn flag_for<'a>(
    flags: &'a [String],
    group: &str,
    what: &str,
) -> Result<Option<&'a str>, JoinError> {
    for f in flags {
        let (g, v) = f
            .split_once('=')
            .ok_or_else(|| JoinError::Input(format!("--{what} {f:?}: expected GROUP=VALUE")))?;
        if g == group {
            return Ok(Some(v));
        }
    }
    Ok(None)
}

/// The feature columns of a group without a pipeline file, from its first
/// Parquet file's schema.
fn features_from_files(dir: &Path, keys: &[String]) -> Result<Vec<String>, JoinError> {
    let files = load_group_files(dir)?;
    let f = files
        .first()
        .ok_or_else(|| JoinError::Input(format!("no Parquet files under {}", dir.display())))?;
    let file = std::fs::File::open(f).map_err(|source| JoinError::Io {
        path: f.clone(),
        source,
    })?;
    let b = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)?;
    let fixed = crate::config::PANE_COLUMNS;
    Ok(b.schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .filter(|n| !keys.contains(n) && !fixed.contains(&n.as_str()))
        .collect())
}

/// Resolves the requested groups (`NAME` or `NAME:f1,f2`) against the
/// pipelines (read from `pipelines_dir`, a directory or one file) and the
/// offline store under `offline`.
pub fn resolve_groups(
    groups: &[String],
    pipelines: &[Pipeline],
    pipelines_dir: &Path,
    offline: &Path,
    keys: &[String],
    ttl: &[String],
) -> Result<Vec<GroupSpec>, JoinError> {
    let mut out = Vec::new();
    for g in groups {
        let (name, features) = match g.split_once(':') {
            Some((n, f)) => (
                n.to_string(),
                Some(
                    f.split(',')
                        .map(|s| s.trim().to_string())
                        .filter(|s| !s.is_empty())
                        .collect::<Vec<_>>(),
                ),
            ),
            None => (g.clone(), None),
        };
        let p = pipelines.iter().find(|p| p.name == name);
        let keys: Vec<String> = match (flag_for(keys, &name, "keys")?, p) {
            (Some(k), _) => k.split(',').map(str::to_string).collect(),
            (None, Some(p)) => p.key_fields.clone(),
            (None, None) => {
                return Err(JoinError::UnknownGroup {
                    group: name,
                    pipelines: pipelines_dir.display().to_string(),
                    known: pipelines
                        .iter()
                        .map(|p| p.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                })
            }
        };
        let ttl = match flag_for(ttl, &name, "ttl")? {
            Some("none") => None,
            Some(d) => Some(
                crate::time::parse_duration(d)
                    .map_err(|e| JoinError::Input(format!("--ttl {name}={d}: {e}")))?,
            ),
            None => p.and_then(|p| p.redis.as_ref().and_then(|r| r.ttl)),
        };
        let all_features = match p {
            Some(p) => p.features.iter().map(|f| f.name.clone()).collect(),
            None => features_from_files(&offline.join(&name), &keys)?,
        };
        out.push(GroupSpec {
            name,
            keys,
            features,
            all_features,
            ttl,
            discarding: p.is_some_and(|p| p.accumulation == Accumulation::Discarding),
            plan: p.map(crate::plan::Plan::new),
        });
    }
    Ok(out)
}
