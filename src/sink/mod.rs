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
