//! `rill validate FILE...`

use std::collections::HashMap;
use std::path::PathBuf;

use rill::config::Pipeline;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Pipeline files, or directories of them (*.yaml, *.yml).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
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
            }
            Err(e) => {
                eprintln!("{e}");
                bad += 1;
            }
        }
    }
    Ok(bad)
}
