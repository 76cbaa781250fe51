//! The fuzz targets' corpus and every crash they found, replayed through
//! the same checks (`fuzz/entries.rs`): each input gives an error or a
//! result, never a panic. A crash found by `cargo fuzz run` goes to
//! `fuzz/regressions/<target>/` with the fix.

#[path = "../../fuzz/entries.rs"]
mod entries;

fn replay(target: &str, check: fn(&[u8])) {
    let mut n = 0;
    for dir in ["corpus", "regressions"] {
        let d = crate::util::repo(&format!("fuzz/{dir}/{target}"));
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd {
            let path = e.expect("entry").path();
            if path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
            {
                continue;
            }
            let data = std::fs::read(&path).expect("read");
            let r = std::panic::catch_unwind(|| check(&data));
            assert!(r.is_ok(), "{} panics", path.display());
            n += 1;
        }
    }
    assert!(n >= 3, "the {target} corpus has {n} inputs");
}

#[test]
fn json_decoder_corpus() {
    replay("json_decoder", entries::json_decoder);
}

#[test]
fn rfc3339_corpus() {
    replay("rfc3339", entries::rfc3339);
}

#[test]
fn yaml_loader_corpus() {
    replay("yaml_loader", entries::yaml_loader);
}

#[test]
fn expr_parser_corpus() {
    replay("expr_parser", entries::expr_parser);
}
