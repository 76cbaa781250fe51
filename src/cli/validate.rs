//! `rill validate FILE...`

use std::collections::HashMap;
use std::path::PathBuf;

use rill::config::Pipeline;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Pipeline files, or directories of them (*.yaml, *.yml).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// The previous version of the pipelines (a directory or files): report
    /// changes, and refuse breaking ones (a removed or renamed feature, a
    /// changed aggregate, window or key) unless the group's `version` went up.
    #[arg(long, value_name = "OLD_DIR")]
    pub against: Option<PathBuf>,
}

/// Returns the number of refused files.
pub fn run(args: Args) -> anyhow::Result<usize> {
    let mut files = Vec::new();
    for f in args.files {
        if f.is_dir() {
            let mut v: Vec<PathBuf> = std::fs::read_dir(&f)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| matches!(p.extension().and_then(|x| x.to_str()), Some("yaml" | "yml")))
                .collect();
            v.sort();
            files.extend(v);
        } else {
            files.push(f);
        }
    }
    let mut bad = 0;
    let mut names: HashMap<String, PathBuf> = HashMap::new();
    let mut loaded: Vec<Pipeline> = Vec::new();
    for f in &files {
        match Pipeline::from_file(f) {
            Ok(p) => {
                if let Some(first) = names.get(&p.name) {
                    let (line, column) = p.name_position;
                    eprintln!(
                        "{}:{line}:{column}: feature group name {:?} is already used by {}",
                        f.display(),
                        p.name,
                        first.display()
                    );
                    bad += 1;
                    continue;
                }
                names.insert(p.name.clone(), f.clone());
                println!(
                    "{}: ok ({}, {}, {} features)",
                    f.display(),
                    p.name,
                    p.window_text(),
                    p.features.len()
                );
                loaded.push(p);
            }
            Err(e) => {
                eprintln!("{e}");
                bad += 1;
            }
        }
    }
    if let Some(old_dir) = &args.against {
        let old = super::run::load_pipelines(std::slice::from_ref(old_dir))
            .map_err(|e| anyhow::anyhow!("--against {}: {e:#}", old_dir.display()))?;
        bad += report_changes(&old, &loaded);
    }
    Ok(bad)
}

/// Prints the changes from `old` to `new`; returns how many are refused.
fn report_changes(old: &[Pipeline], new: &[Pipeline]) -> usize {
    let mut refused = 0;
    for c in rill::serve::registry::diff(old, new) {
        let at = c.at.clone().unwrap_or_else(|| c.group.clone());
        let version =
            |name: &str, list: &[Pipeline]| list.iter().find(|p| p.name == name).map(|p| p.version);
        if c.breaking && !c.versioned {
            refused += 1;
            let hint = match (version(&c.group, old), version(&c.group, new)) {
                (Some(o), Some(_)) => format!(" (raise `version` above {o} to allow it)"),
                _ => String::new(),
            };
            eprintln!(
                "{at}: breaking change in feature group {}: {}{hint}",
                c.group, c.detail
            );
        } else if c.breaking {
            println!(
                "{at}: note: breaking change in feature group {} allowed by the new version {}: {}",
                c.group,
                version(&c.group, new).unwrap_or(0),
                c.detail
            );
        } else {
            println!("{at}: note: {}", c.detail);
        }
    }
    refused
}
