use super::*;
use proptest::prelude::*;

fn decoder() -> Decoder {
    let p = crate::config::test_pipeline(
        "[user_id, region]\n  key_types: { region: int }",
        r#"  - { name: s, agg: sum, field: amount }
  - { name: c, agg: count, where: 'kind == "click"' }
"#,
    );
    Decoder::new(DecodePlan::new(&p))
}

#[test]
fn keys_of_another_type_than_declared_are_bad_keys() {
    let mut d = decoder();
    for (line, ok) in [
        (r#"{"user_id":"u1","region":7,"ts":1}"#, true),
        (r#"{"user_id":7,"region":7,"ts":1}"#, false),
        (r#"{"user_id":"u1","region":"7","ts":1}"#, false),
        (r#"{"user_id":"u1","region":7.5,"ts":1}"#, false),
        (r#"{"user_id":true,"region":7,"ts":1}"#, false),
    ] {
        match d.decode_json(line.as_bytes()) {
            Ok(_) => assert!(ok, "{line} must be refused"),
            Err(r) => {
                assert!(!ok, "{line}: {}", r.detail);
                assert_eq!(r.reason, Reason::BadKey, "{line}");
                assert!(r.detail.contains("key_types"), "{}", r.detail);
            }
        }
    }
}

#[test]
fn reads_used_fields_and_skips_the_rest() {
    let mut d = decoder();
    let ev = d
        .decode_json(br#" {"user_id":"u1","x":{"deep":[1,2,{"a":null}]},"region":7,"ts":1700000000123,"amount":12.5,"kind":"cl\u0069ck"} "#)
        .expect("valid");
    assert_eq!(ev.time, 1_700_000_000_123_000);
    assert_eq!(
        decode_key(ev.key),
        vec![KeyValue::Str("u1".into()), KeyValue::Int(7)]
    );
    assert_eq!(ev.field(0), FieldVal::Num(12.5));
    assert_eq!(ev.field(1), FieldVal::Str("click"));
}

#[test]
fn refusals_carry_reasons() {
    let mut d = decoder();
    let r = |d: &mut Decoder, s: &str| d.decode_json(s.as_bytes()).map(|_| ()).unwrap_err().reason;
    assert_eq!(
        r(&mut d, r#"{"user_id":"u1","region":1,"ts":5"#),
        Reason::InvalidJson
    );
    assert_eq!(r(&mut d, r#"{"region":1,"ts":5}"#), Reason::MissingKey);
    assert_eq!(
        r(&mut d, r#"{"user_id":null,"region":1,"ts":5}"#),
        Reason::MissingKey
    );
    assert_eq!(
        r(&mut d, r#"{"user_id":[1],"region":1,"ts":5}"#),
        Reason::BadKey
    );
    assert_eq!(
        r(&mut d, r#"{"user_id":"u","region":1}"#),
        Reason::MissingEventTime
    );
    assert_eq!(
        r(&mut d, r#"{"user_id":"u","region":1,"ts":"soon"}"#),
        Reason::BadEventTime
    );
    assert_eq!(r(&mut d, r#"[1,2]"#), Reason::InvalidJson);
    assert_eq!(r(&mut d, ""), Reason::InvalidJson);
    assert_eq!(
        r(&mut d, "{\"user_id\":\"a\tb\",\"region\":1,\"ts\":5}"),
        Reason::InvalidJson
    );
    assert_eq!(
        d.decode_json(&[0xff, 0xfe, b'{'])
            .map(|_| ())
            .unwrap_err()
            .reason,
        Reason::InvalidJson
    );
}

#[test]
fn composite_keys_never_collide() {
    let p = crate::config::test_pipeline("[user_id, region]", "  - { name: n, agg: count }\n");
    let mut d = Decoder::new(DecodePlan::new(&p));
    let a = d
        .decode_json(br#"{"user_id":"1","region":"12","ts":1}"#)
        .expect("valid")
        .key
        .to_vec();
    let b = d
        .decode_json(br#"{"user_id":"11","region":"2","ts":1}"#)
        .expect("valid")
        .key
        .to_vec();
    assert_ne!(a, b);
}

fn json_value() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just("null".to_string()),
        Just("true".to_string()),
        any::<i32>().prop_map(|i| i.to_string()),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| format!("{f:e}")),
        "[a-z\\\\\"\u{e9} ]{0,6}".prop_map(|s| serde_json::to_string(&s).expect("string")),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(|v| format!("[{}]", v.join(","))),
            prop::collection::vec(("[a-z]{1,3}", inner), 0..4).prop_map(|v| format!(
                "{{{}}}",
                v.iter()
                    .map(|(k, x)| format!("\"{k}\":{x}"))
                    .collect::<Vec<_>>()
                    .join(",")
            )),
        ]
    })
}

proptest! {
    /// The reader accepts exactly the objects serde_json accepts, and reads the same values.
    #[test]
    fn agrees_with_serde_json(extra in prop::collection::vec(("[a-z]{1,4}", json_value()), 0..5),
                              amount in json_value(), cut in 0usize..200, mutate in 0u8..3,
                              ch in prop::sample::select(vec!['"', ',', ':', '{', '}', '[', '0', '-', '.', 'e', ' ', 't', '\t'])) {
        let mut members: Vec<String> = vec!["\"user_id\":\"u\"".into(), "\"region\":3".into(), "\"ts\":99".into()];
        members.push(format!("\"amount\":{amount}"));
        for (k, v) in &extra {
            members.push(format!("\"x{k}\":{v}"));
        }
        let mut line = format!("{{{}}}", members.join(","));
        if mutate > 0 {
            let cut = cut % line.len();
            if !line.is_char_boundary(cut) || !line.is_char_boundary(cut + 1) { return Ok(()); }
            if mutate == 1 {
                line.truncate(cut);
            } else {
                // One byte replaced by a byte that means something to JSON.
                line.replace_range(cut..cut + 1, &ch.to_string());
            }
        }
        let want = serde_json::from_str::<serde_json::Value>(&line);
        // serde_json refuses numbers beyond f64's range; JSON's grammar (and
        // this reader) accept them.
        if want.as_ref().is_err_and(|e| e.to_string().contains("out of range")) {
            return Ok(());
        }
        let mut d = decoder();
        // Cold, then warm: the second read predicts member names from the
        // first.
        for _ in 0..2 {
        let got = d.decode_json(line.as_bytes());
        match (&want, &got) {
            (Ok(v), Ok(ev)) => {
                let f = ev.field(0);
                match v.get("amount") {
                    // An edit renamed the member.
                    None => prop_assert_eq!(f, FieldVal::Missing),
                    // An edit changed the number: serde_json's parse is close.
                    Some(serde_json::Value::Number(n)) if mutate == 2 => {
                        let x = n.as_f64().expect("f64");
                        prop_assert!(matches!(f, FieldVal::Num(y) if (y - x).abs() <= 1e-12 * x.abs()), "{:?} vs {}", f, x);
                    }
                    Some(a) => match a {
                    // serde_json's default float parsing is not always correctly
                    // rounded; the standard library's is the reference.
                    serde_json::Value::Number(_) => prop_assert_eq!(f, FieldVal::Num(amount.parse::<f64>().expect("number"))),
                    serde_json::Value::String(s) => prop_assert_eq!(f, FieldVal::Str(s.as_str())),
                    serde_json::Value::Bool(b) => prop_assert_eq!(f, FieldVal::Bool(*b)),
                    serde_json::Value::Null => prop_assert_eq!(f, FieldVal::Null),
                    _ => prop_assert_eq!(f, FieldVal::Nested),
                    },
                }
            }
            (Err(_), Err(r)) => prop_assert_eq!(r.reason, Reason::InvalidJson),
            // Valid JSON that an edit left without its key or time.
            (Ok(_), Err(r)) if mutate == 2 => prop_assert_ne!(r.reason, Reason::InvalidJson, "{:?}", line),
            _ => prop_assert!(false, "disagree on {:?}: serde {:?}, ours {:?}", line, want.is_ok(), got.is_ok()),
        }
        }
    }
}

proptest! {
    /// Arbitrary bytes decode or are refused with a reason: never a panic.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let mut d = decoder();
        let _ = d.decode_json(&bytes);
    }
}

proptest! {
    /// A decoder that has seen other records (its member-order cache and
    /// its compact-record shapes) reads every record exactly as a fresh one
    /// does: the same event or the same refusal. Records mostly repeat the
    /// member order of one of the last few, as a stream's records of a few
    /// event types do, with values that change type, spaces, escaped names,
    /// and one-byte edits.
    #[test]
    fn record_history_never_changes_a_result(lines in prop::collection::vec(
        (prop::collection::vec(0usize..10, 0..7), prop::bool::weighted(0.7), prop::bool::weighted(0.15),
         prop::sample::select(vec![0usize, 0, 0, 0, 0, 0, 1, 2]),
         prop::option::weighted(0.3, (0usize..80, prop::sample::select(vec![
            b'"', b',', b'}', b' ', b'\\', 0xC3, b'0', b':', b'x', b'-', b'.', b'e']))),
         prop::collection::vec(0u8..8, 10), 0usize..3), 1..40)) {
        let names = ["\"user_id\":\"u\"", "\"region\":3", "\"ts\":99", "\"amount\":1.5", "\"kind\":\"click\"",
            "\"other\":[1,{\"a\":2}]", "\"amount\":-0.25e2", "\"kind\":\"a\\\"b\"", "\"long_member_name_here\":\"v\"", "\"region\":null"];
        let alt = ["\"user_id\":7", "\"region\":\"eu\"", "\"ts\":\"x\"", "\"amount\":true", "\"kind\":4",
            "\"other\":\"s\"", "\"amount\":\"1\"", "\"kind\":null", "\"long_member_name_here\":1", "\"region\":{}"];
        let mut warm = decoder();
        let mut recent: Vec<Vec<usize>> = Vec::new();
        for (members, repeat, spaced, variant, edit, types, pick) in lines {
            let members = if repeat && !recent.is_empty() { recent[pick % recent.len()].clone() } else { members };
            recent.retain(|r| *r != members);
            recent.insert(0, members.clone());
            recent.truncate(3);
            let sep = if spaced { ", " } else { "," };
            let mut parts: Vec<String> = members.iter().zip(&types)
                .map(|(&i, &t)| if t == 0 { alt[i] } else { names[i] }.to_string())
                .collect();
            if variant == 1 { parts.iter_mut().for_each(|p| *p = p.replacen(':', " : ", 1)); }
            if variant == 2 { parts.push("\"amo\\u0075nt\":2".into()); }
            let mut line = format!("{{{}}}", parts.join(sep)).into_bytes();
            if let Some((at, byte)) = edit {
                let at = at % line.len();
                line[at] = byte;
            }
            let mut fresh = decoder();
            let a = warm.decode_json(&line).map(|e| (e.key.to_vec(), e.time, (0..e.slot_count()).map(|i| format!("{:?}", e.field(i))).collect::<Vec<_>>()));
            let b = fresh.decode_json(&line).map(|e| (e.key.to_vec(), e.time, (0..e.slot_count()).map(|i| format!("{:?}", e.field(i))).collect::<Vec<_>>()));
            prop_assert_eq!(a, b, "{}", String::from_utf8_lossy(&line));
        }
    }
}

proptest! {
    /// The word-load comparison agrees with slice equality for every length
    /// and for slices that differ in one bit anywhere.
    #[test]
    fn short_eq_is_slice_equality(a in prop::collection::vec(any::<u8>(), 0..48), flip in any::<prop::sample::Index>(), same_len in any::<bool>(), bit in 0u8..8, extra in any::<u8>()) {
        let mut b = a.clone();
        if !a.is_empty() {
            let i = flip.index(a.len());
            b[i] ^= 1 << bit;
        }
        if !same_len { b.push(extra); }
        prop_assert_eq!(super::short_eq(&a, &b), a == b);
        prop_assert!(super::short_eq(&a, &a));
    }
}

proptest! {
    /// The word-wise member-name match agrees with a plain prefix test,
    /// whatever the name's length and where the line ends.
    #[test]
    fn member_name_match_is_a_prefix_test(
        name in proptest::collection::vec(any::<u8>(), 1..24),
        line in proptest::collection::vec(any::<u8>(), 0..40),
        at in 0usize..40,
        copy in any::<bool>(),
    ) {
        let mut line = line;
        if copy && at <= line.len() {
            // Put the name (or as much as fits) at `at`.
            for (i, b) in name.iter().enumerate() {
                if at + i < line.len() {
                    line[at + i] = *b;
                }
            }
        }
        let m = json::MemberName::new(&name);
        let expected = line.get(at..).is_some_and(|r| r.starts_with(&name));
        prop_assert_eq!(m.is_at(&line, at), expected);
    }
}

/// What a read gave, in a form two reads can be compared by.
type Outcome = Result<(Vec<u8>, i64, Vec<String>), Refusal>;

fn outcome(r: Result<EventRef<'_>, Refusal>) -> Outcome {
    r.map(|e| {
        let fields = (0..e.slot_count())
            .map(|i| format!("{:?}", e.field(i)))
            .collect();
        (e.key.to_vec(), e.time, fields)
    })
}

/// A line as the line reader cuts it: up to `\n`, without one `\r` before it.
fn cut_line(rest: &[u8]) -> (usize, usize) {
    let (len, advance) = match rest.iter().position(|&b| b == b'\n') {
        Some(i) => (i, i + 1),
        None => (rest.len(), rest.len()),
    };
    let full = if rest[..len].last() == Some(&b'\r') {
        len - 1
    } else {
        len
    };
    (full, advance)
}

#[test]
fn records_read_in_place_find_their_line_end() {
    let data = b"{\"user_id\":\"u\",\"region\":3,\"ts\":99,\"amount\":1.5} \r\n{\"user_id\":\"v\",\"region\":4,\"ts\":5}";
    let mut d = decoder();
    let (len, advance, r) = d
        .decode_json_line(data, 1 << 20)
        .expect("a valid first line");
    assert_eq!((len, advance), (48, 50));
    let ev = r.expect("decoded");
    assert_eq!(ev.time, 99_000);
    assert_eq!(ev.field(0), FieldVal::Num(1.5));
    let (len, advance, r) = d
        .decode_json_line(&data[50..], 1 << 20)
        .expect("a valid last line");
    assert_eq!((len, advance), (data.len() - 50, data.len() - 50));
    assert_eq!(r.expect("decoded").time, 5_000);
    // A record broken over two lines is two bad lines, not one good record.
    assert!(d
        .decode_json_line(b"{\"user_id\":\"u\",\n\"region\":3,\"ts\":99}\n", 1 << 20)
        .is_none());
    // Longer than the limit: left to the line reader, which refuses it.
    assert!(d.decode_json_line(&data[50..], 10).is_none());
}

proptest! {
    /// Reading a JSON Lines file in place gives, line for line, what cutting
    /// it into lines and decoding each gives: the same line ends, the same
    /// records and the same refusals; where it declines, the cut line is
    /// refused or too long. Lines: records with and without spaces, broken
    /// by one edit (line breaks, CRs and quotes included), records spread
    /// over lines, blank lines, names and values that are not ASCII, bytes
    /// that are not UTF-8.
    #[test]
    fn reading_in_place_matches_cut_lines(
        lines in prop::collection::vec((0usize..7, any::<bool>(), 0usize..80, prop::sample::select(vec![
            b'\n', b'\r', b'"', b',', b'}', b' ', b'\t', 0xC3, 0xFF, b'0', b'\\'])), 1..12),
        final_newline in any::<bool>(),
        max in prop::sample::select(vec![30usize, 1 << 20]),
    ) {
        let records = [
            "{\"user_id\":\"u1\",\"region\":3,\"ts\":99,\"amount\":1.5,\"kind\":\"click\"}",
            "{ \"user_id\" : \"u\\u00e9\" , \"region\":\"eu\", \"ts\":1e3 } \t",
            "{\"region\":3,\"ts\":7,\"user_id\":\"x\",\"other\":[1,{\"a\":[true,null]}]}\r",
            "{\"user_id\":\"u1\",\n\"region\":3,\"ts\":99}",
            "  \t ",
            "{\"user_id\":\"\u{e9}t\u{e9}\",\"region\":1,\"ts\":2,\"amount\":\"x\"}",
            "{\"r\u{e9}gion\":3,\"user_id\":\"u2\",\"ts\":5,\"\u{e9}\":[\"\u{e9}\"]}",
        ];
        let mut data = Vec::new();
        for (i, (which, edit, at, byte)) in lines.iter().enumerate() {
            let mut line = records[*which].as_bytes().to_vec();
            if *edit && !line.is_empty() {
                let at = at % line.len();
                line[at] = *byte;
            }
            data.extend_from_slice(&line);
            if i + 1 < lines.len() || final_newline {
                data.push(b'\n');
            }
        }
        let (mut fast, mut slow) = (decoder(), decoder());
        let mut pos = 0;
        while pos < data.len() {
            let rest = &data[pos..];
            let (len, advance) = cut_line(rest);
            let want = if len > max { None } else { Some(outcome(slow.decode_json(&rest[..len]))) };
            match fast.decode_json_line(rest, max) {
                Some((l, a, got)) => {
                    prop_assert_eq!((l, a), (len, advance), "line end at {}", pos);
                    prop_assert_eq!(Some(outcome(got)), want, "line at {}", pos);
                }
                None => prop_assert!(
                    !matches!(want, Some(Ok(_))),
                    "declined a good line at {}: {:?}", pos, String::from_utf8_lossy(&rest[..len])
                ),
            }
            pos += advance;
        }
    }
}
