//! Sinks: where panes and refused records go.
//!
//! `parquet` is the offline store (SPEC 6), `dead_letter` the files of bad
//! input with reasons and source positions (SPEC 5).

pub mod dead_letter;
pub mod embedded;
pub mod parquet;
pub mod redis;

/// Decimal text of a float in shortest round-trip form (`0.1`, `12`, `-3.5`).
pub fn format_f64(f: f64) -> String {
    if f == f.trunc() && f.abs() < 1e16 {
        format!("{}", f as i64)
    } else {
        format!("{f}")
    }
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
