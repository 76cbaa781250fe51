//! A validating reader for one flat JSON object per record.
//!
//! It checks the whole record against the JSON grammar (RFC 8259) but only
//! materialises the top-level members the pipeline uses; nested objects and
//! arrays are validated and skipped. Escapes are decoded only in strings that
//! are used. This is the hot path of replay and the daemon.

use super::{Decoder, EventRef, Reason, Refusal, Slot};
use crate::time::{epoch_int_to_micros, parse_epoch_decimal, TimeFormat};

/// Nesting deeper than this is refused rather than risking the stack.
const MAX_DEPTH: usize = 128;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RawKind {
    Str,
    /// A string with escapes to decode.
    StrEsc,
    Num,
    True,
    False,
    Null,
    Nested,
}

/// Where a top-level value sits in the record.
#[derive(Debug, Clone, Copy)]
pub struct RawValue {
    pub kind: RawKind,
    pub start: u32,
    pub end: u32,
}

struct Scan<'a> {
    b: &'a [u8],
    i: usize,
    /// Whether a line break counts as white space. Not when reading a
    /// record in place in a JSON Lines file: there it ends the record.
    newlines: bool,
    /// Whether a string scanned so far has a byte above 0x7F. Every other
    /// byte a valid record has is checked against ASCII by the grammar, so
    /// a record without such a string is ASCII: valid UTF-8 unchecked.
    non_ascii: bool,
}

/// Where the white space from `i` ends (line breaks included when
/// `newlines`). Out of line: most records have none.
#[inline(never)]
fn ws_end(b: &[u8], mut i: usize, newlines: bool) -> usize {
    while let Some(&c) = b.get(i) {
        if c == b' ' || c == b'\t' || c == b'\r' || (c == b'\n' && newlines) {
            i += 1;
        } else {
            break;
        }
    }
    i
}

/// A record as text: most are ASCII, which needs no further validation.
#[inline]
fn record_text(line: &[u8]) -> Result<&str, std::str::Utf8Error> {
    if line.is_ascii() {
        // SAFETY: ASCII is valid UTF-8.
        Ok(unsafe { std::str::from_utf8_unchecked(line) })
    } else {
        std::str::from_utf8(line)
    }
}

/// A scan failure: cheap to return; formatted only when reported.
#[derive(Debug, Clone, Copy)]
struct ScanErr {
    at: usize,
    what: &'static str,
    found: Option<u8>,
}

impl ScanErr {
    fn message(self) -> String {
        match self.found {
            Some(c) => format!("{} at byte {}, found {:?}", self.what, self.at, c as char),
            None => format!(
                "{} at byte {}, found the end of the record",
                self.what, self.at
            ),
        }
    }
}

type R<T> = Result<T, ScanErr>;

impl<'a> Scan<'a> {
    #[inline(always)]
    fn ws(&mut self) {
        // Most records have no white space between tokens: one compare.
        if self.b.get(self.i).is_some_and(|&c| c <= b' ') {
            self.i = ws_end(self.b, self.i, self.newlines);
        }
    }

    #[cold]
    fn fail<T>(&self, what: &'static str) -> R<T> {
        Err(ScanErr {
            at: self.i,
            what,
            found: self.b.get(self.i).copied(),
        })
    }

    /// At the opening quote; returns (content start, end, has escapes).
    #[inline(always)]
    fn string(&mut self) -> R<(usize, usize, bool)> {
        self.i += 1;
        let start = self.i;
        let mut esc = false;
        let b = self.b;
        // Sixteen bytes at a time: find the first quote, backslash, control
        // or non-ASCII byte (most strings end in the first step).
        #[cfg(target_arch = "x86_64")]
        while self.i + 16 <= b.len() {
            let m = special_bytes16(&b[self.i..self.i + 16]);
            if m == 0 {
                self.i += 16;
                continue;
            }
            self.i += m.trailing_zeros() as usize;
            if b[self.i] == b'"' {
                let end = self.i;
                self.i += 1;
                return Ok((start, end, false));
            }
            break;
        }
        // Eight bytes at a time near the end of the record (and off x86_64).
        while self.i + 8 <= b.len() {
            let w = u64::from_le_bytes(b[self.i..self.i + 8].try_into().expect("8 bytes"));
            let m = special_bytes(w);
            if m == 0 {
                self.i += 8;
                continue;
            }
            self.i += (m.trailing_zeros() / 8) as usize;
            if b[self.i] == b'"' {
                let end = self.i;
                self.i += 1;
                return Ok((start, end, false));
            }
            break;
        }
        loop {
            let rest = &self.b[self.i..];
            let Some(off) = memchr::memchr2(b'"', b'\\', rest) else {
                self.i = self.b.len();
                return self.fail("unterminated string");
            };
            if rest[..off].iter().any(|&c| c >= 0x80) {
                self.non_ascii = true;
            }
            if rest[..off].iter().any(|&c| c < 0x20) {
                let bad = rest[..off].iter().position(|&c| c < 0x20).unwrap_or(0);
                self.i += bad;
                return self.fail("control character in string");
            }
            self.i += off;
            if self.b[self.i] == b'"' {
                let end = self.i;
                self.i += 1;
                return Ok((start, end, esc));
            }
            esc = true;
            match self.b.get(self.i + 1) {
                Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => self.i += 2,
                Some(b'u') => {
                    let hex = self.b.get(self.i + 2..self.i + 6);
                    if !hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
                        self.i += 1;
                        return self.fail("invalid \\u escape");
                    }
                    self.i += 6;
                }
                _ => {
                    self.i += 1;
                    return self.fail("invalid escape");
                }
            }
        }
    }

    #[inline(always)]
    fn number(&mut self) -> R<(usize, usize)> {
        let start = self.i;
        let b = self.b;
        if b.get(self.i) == Some(&b'-') {
            self.i += 1;
        }
        match b.get(self.i) {
            Some(b'0') => self.i += 1,
            Some(c) if c.is_ascii_digit() => {
                while b.get(self.i).is_some_and(u8::is_ascii_digit) {
                    self.i += 1;
                }
            }
            _ => return self.fail("expected a digit"),
        }
        if b.get(self.i) == Some(&b'.') {
            self.i += 1;
            if !b.get(self.i).is_some_and(u8::is_ascii_digit) {
                return self.fail("expected a digit after '.'");
            }
            while b.get(self.i).is_some_and(u8::is_ascii_digit) {
                self.i += 1;
            }
        }
        if matches!(b.get(self.i), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(b.get(self.i), Some(b'+' | b'-')) {
                self.i += 1;
            }
            if !b.get(self.i).is_some_and(u8::is_ascii_digit) {
                return self.fail("expected a digit in the exponent");
            }
            while b.get(self.i).is_some_and(u8::is_ascii_digit) {
                self.i += 1;
            }
        }
        Ok((start, self.i))
    }

    fn literal(&mut self, lit: &[u8]) -> R<()> {
        if self.b.get(self.i..self.i + lit.len()) == Some(lit) {
            self.i += lit.len();
            Ok(())
        } else {
            self.fail("invalid literal")
        }
    }

    /// Any value; returns its kind and extent.
    #[inline(always)]
    fn value(&mut self, depth: usize) -> R<RawValue> {
        let start = self.i;
        let kind = match self.b.get(self.i) {
            Some(b'"') => {
                let (s, e, esc) = self.string()?;
                return Ok(RawValue {
                    kind: if esc { RawKind::StrEsc } else { RawKind::Str },
                    start: s as u32,
                    end: e as u32,
                });
            }
            Some(b'-' | b'0'..=b'9') => {
                self.number()?;
                RawKind::Num
            }
            Some(b't') => {
                self.literal(b"true")?;
                RawKind::True
            }
            Some(b'f') => {
                self.literal(b"false")?;
                RawKind::False
            }
            Some(b'n') => {
                self.literal(b"null")?;
                RawKind::Null
            }
            Some(b'{') => {
                self.object_skip(depth + 1)?;
                RawKind::Nested
            }
            Some(b'[') => {
                self.array_skip(depth + 1)?;
                RawKind::Nested
            }
            _ => return self.fail("expected a value"),
        };
        Ok(RawValue {
            kind,
            start: start as u32,
            end: self.i as u32,
        })
    }

    #[inline(never)]
    fn nested_value(&mut self, depth: usize) -> R<RawValue> {
        self.value(depth)
    }

    #[inline(never)]
    fn object_skip(&mut self, depth: usize) -> R<()> {
        if depth > MAX_DEPTH {
            return self.fail("nesting too deep");
        }
        self.i += 1;
        self.ws();
        if self.b.get(self.i) == Some(&b'}') {
            self.i += 1;
            return Ok(());
        }
        loop {
            if self.b.get(self.i) != Some(&b'"') {
                return self.fail("expected a member name");
            }
            self.string()?;
            self.ws();
            if self.b.get(self.i) != Some(&b':') {
                return self.fail("expected ':'");
            }
            self.i += 1;
            self.ws();
            self.nested_value(depth)?;
            self.ws();
            match self.b.get(self.i) {
                Some(b',') => {
                    self.i += 1;
                    self.ws();
                }
                Some(b'}') => {
                    self.i += 1;
                    return Ok(());
                }
                _ => return self.fail("expected ',' or '}'"),
            }
        }
    }

    #[inline(never)]
    fn array_skip(&mut self, depth: usize) -> R<()> {
        if depth > MAX_DEPTH {
            return self.fail("nesting too deep");
        }
        self.i += 1;
        self.ws();
        if self.b.get(self.i) == Some(&b']') {
            self.i += 1;
            return Ok(());
        }
        loop {
            self.nested_value(depth)?;
            self.ws();
            match self.b.get(self.i) {
                Some(b',') => {
                    self.i += 1;
                    self.ws();
                }
                Some(b']') => {
                    self.i += 1;
                    return Ok(());
                }
                _ => return self.fail("expected ',' or ']'"),
            }
        }
    }
}

/// The `"name":` bytes of a member, with its first 16 bytes as two words
/// so that most names are recognised with two loads and compares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberName {
    bytes: Box<[u8]>,
    words: [u64; 2],
    masks: [u64; 2],
}

impl MemberName {
    pub fn new(bytes: &[u8]) -> MemberName {
        let mut padded = [0u8; 16];
        let n = bytes.len().min(16);
        padded[..n].copy_from_slice(&bytes[..n]);
        let mask = |k: usize| -> u64 {
            match k {
                0 => 0,
                k if k >= 8 => u64::MAX,
                k => (1u64 << (8 * k)) - 1,
            }
        };
        let word = |i: usize| u64::from_le_bytes(padded[i..i + 8].try_into().expect("8 bytes"));
        MemberName {
            bytes: bytes.into(),
            words: [word(0), word(8)],
            masks: [mask(n), mask(n.saturating_sub(8))],
        }
    }

    /// Length in bytes.
    #[inline(always)]
    pub fn byte_len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether `line[at..]` starts with this name.
    #[inline(always)]
    pub fn is_at(&self, line: &[u8], at: usize) -> bool {
        if let (true, Some(w)) = (self.bytes.len() <= 16, line.get(at..at.wrapping_add(16))) {
            let (a, b) = w.split_at(8);
            let a = u64::from_le_bytes(a.try_into().expect("8 bytes"));
            let b = u64::from_le_bytes(b.try_into().expect("8 bytes"));
            (a & self.masks[0]) == self.words[0] && (b & self.masks[1]) == self.words[1]
        } else {
            line.get(at..)
                .is_some_and(|rest| rest.starts_with(&self.bytes))
        }
    }
}

/// A member position of the records of a stream: the `"name":` bytes the
/// last record had there, the field they name, and whether its value was a
/// string or a number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShapeMember {
    name: MemberName,
    target: Option<usize>,
    string: bool,
}

/// A mask with the high bit set in each byte of `w` that ends a string's
/// fast scan: `"`, `\\`, below 0x20 or above 0x7F (exact: no false
/// positives).
#[inline(always)]
fn special_bytes(w: u64) -> u64 {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    // Exact zero-byte test: ((x & 0x7f..) + 0x7f..) | x has the high bit clear only for zero bytes.
    let zero = |x: u64| !(((x & !HI).wrapping_add(!HI)) | x | !HI);
    let quote = zero(w ^ (LO * b'"' as u64));
    let slash = zero(w ^ (LO * b'\\' as u64));
    // Bytes below 0x20: high bit clear and (byte & 0x7f) + 0x60 has no carry into bit 7.
    let ctrl = !(((w & !HI).wrapping_add(LO * 0x60)) | w) & HI;
    quote | slash | ctrl | (w & HI)
}

/// Bit `i` set where `b[i]` is `"`, `\\`, a control byte (below 0x20) or
/// not ASCII (above 0x7F).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn special_bytes16(b: &[u8]) -> u32 {
    use std::arch::x86_64::*;
    assert!(b.len() >= 16);
    // SAFETY: SSE2 is part of x86_64; the load reads 16 bytes of `b`.
    unsafe {
        let x = _mm_loadu_si128(b.as_ptr() as *const __m128i);
        let quote = _mm_cmpeq_epi8(x, _mm_set1_epi8(b'"' as i8));
        let backslash = _mm_cmpeq_epi8(x, _mm_set1_epi8(b'\\' as i8));
        // Unsigned x < 0x20: min(x, 0x1f) == x.
        let ctrl = _mm_cmpeq_epi8(_mm_min_epu8(x, _mm_set1_epi8(0x1f)), x);
        // The sign bits of `x` itself mark the bytes above 0x7F.
        _mm_movemask_epi8(_mm_or_si128(
            _mm_or_si128(quote, backslash),
            _mm_or_si128(ctrl, x),
        )) as u32
    }
}

const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// Parses a JSON number (grammar already checked). Plain decimals with at
/// most 15 significant digits take Clinger's fast path, which is exact: the
/// mantissa and the power of ten are both exact doubles, and one division
/// is correctly rounded. Everything else goes to the standard library.
#[inline]
pub fn parse_number(raw: &str) -> f64 {
    let b = raw.as_bytes();
    let (neg, digits) = match b.first() {
        Some(b'-') => (true, &b[1..]),
        _ => (false, b),
    };
    if digits.len() <= 16 {
        let mut mantissa: u64 = 0;
        let mut frac_digits: usize = 0;
        let mut seen_dot = false;
        let mut ok = true;
        for &c in digits {
            match c {
                b'0'..=b'9' => {
                    mantissa = mantissa * 10 + (c - b'0') as u64;
                    if seen_dot {
                        frac_digits += 1;
                    }
                }
                b'.' if !seen_dot => seen_dot = true,
                _ => {
                    ok = false;
                    break;
                }
            }
        }
        if ok && mantissa < (1u64 << 53) && frac_digits < POW10.len() {
            let v = mantissa as f64 / POW10[frac_digits];
            return if neg { -v } else { v };
        }
    }
    raw.parse().unwrap_or(f64::NAN)
}

/// Decodes the JSON string content `raw` (between the quotes, escapes included).
pub fn unescape(raw: &str, out: &mut String) {
    let b = raw.as_bytes();
    let mut i = 0;
    let mut last = 0;
    while i < b.len() {
        if b[i] != b'\\' {
            i += 1;
            continue;
        }
        out.push_str(&raw[last..i]);
        let c = b[i + 1];
        i += 2;
        match c {
            b'n' => out.push('\n'),
            b't' => out.push('\t'),
            b'r' => out.push('\r'),
            b'b' => out.push('\u{8}'),
            b'f' => out.push('\u{c}'),
            b'u' => {
                let hex = |s: &str| u32::from_str_radix(s, 16).unwrap_or(0xFFFD);
                let mut cp = hex(&raw[i..i + 4]);
                i += 4;
                if (0xD800..0xDC00).contains(&cp)
                    && b.get(i) == Some(&b'\\')
                    && b.get(i + 1) == Some(&b'u')
                    && i + 6 <= b.len()
                {
                    let lo = hex(&raw[i + 2..i + 6]);
                    if (0xDC00..0xE000).contains(&lo) {
                        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                        i += 6;
                    }
                }
                out.push(char::from_u32(cp).unwrap_or('\u{FFFD}'));
            }
            other => out.push(other as char),
        }
        last = i;
    }
    out.push_str(&raw[last..]);
}

/// How many compact record shapes a decoder keeps.
const COMPACT_SHAPES: usize = 4;

/// Reads the members of `shape` from member `from` on, `s` at its first
/// byte, into `raw`. `Err(k)` when member `k` does not match: `s` is then at
/// member `k`'s first byte, members before it were read (each with the
/// `,` after it) and nothing of member `k` was stored.
#[inline(always)]
fn compact_members(
    shape: &[ShapeMember],
    from: usize,
    s: &mut Scan<'_>,
    raw: &mut [Option<RawValue>],
) -> Result<(), usize> {
    let line = s.b;
    for (k, m) in shape.iter().enumerate().skip(from) {
        let at = s.i;
        let fail = |s: &mut Scan<'_>| {
            s.i = at;
            Err(k)
        };
        if !m.name.is_at(line, s.i) {
            return fail(s);
        }
        s.i += m.name.byte_len();
        let v = if m.string {
            if line.get(s.i) != Some(&b'"') {
                return fail(s);
            }
            let Ok((start, end, esc)) = s.string() else {
                return fail(s);
            };
            RawValue {
                kind: if esc { RawKind::StrEsc } else { RawKind::Str },
                start: start as u32,
                end: end as u32,
            }
        } else {
            let Ok((start, end)) = s.number() else {
                return fail(s);
            };
            RawValue {
                kind: RawKind::Num,
                start: start as u32,
                end: end as u32,
            }
        };
        let close = if k + 1 == shape.len() { b'}' } else { b',' };
        if line.get(s.i) != Some(&close) {
            return fail(s);
        }
        if let Some(t) = m.target {
            raw[t] = Some(v);
        }
        s.i += 1;
    }
    Ok(())
}

impl Decoder {
    /// Decodes one JSON record.
    pub fn decode_json(&mut self, line: &[u8]) -> Result<EventRef<'_>, Refusal> {
        let text = record_text(line).map_err(|e| {
            Refusal::new(
                Reason::InvalidJson,
                format!("not UTF-8 at byte {}", e.valid_up_to()),
            )
        })?;
        let mut s = Scan {
            b: line,
            i: self.scan_record(line, true)?.0,
            newlines: true,
            non_ascii: false,
        };
        s.ws();
        if s.i != s.b.len() {
            return Err(Refusal::new(
                Reason::InvalidJson,
                ScanErr {
                    at: s.i,
                    what: "unexpected data after the object",
                    found: s.b.get(s.i).copied(),
                }
                .message(),
            ));
        }
        self.materialise(text)
    }

    /// Decodes the record at the start of `rest`, the unread rest of a JSON
    /// Lines file, and finds the end of its line on the way: a valid record
    /// needs no separate search for its line break.
    ///
    /// Returns the line's length (without its `\n` and one `\r` before it,
    /// as [`crate::source::file::LineReader`] cuts lines), the bytes to
    /// advance past it, and the decoded record. `None` when the line does not
    /// start with a well-formed record, is not UTF-8 or is longer than `max`:
    /// the caller then cuts the line itself and hands it to
    /// [`Decoder::decode_json`], which gives the same result a line it cut
    /// always gets, and says what is wrong.
    pub fn decode_json_line(
        &mut self,
        rest: &[u8],
        max: usize,
    ) -> Option<(usize, usize, Result<EventRef<'_>, Refusal>)> {
        // A line longer than `max` is refused unread: scan no further.
        let b = &rest[..rest.len().min(max.saturating_add(2))];
        let (close, non_ascii) = self.scan_record(b, false).ok()?;
        let mut s = Scan {
            b,
            i: close,
            newlines: false,
            non_ascii: false,
        };
        s.ws();
        let advance = match b.get(s.i) {
            None if b.len() < rest.len() => return None,
            None => s.i,
            Some(b'\n') => s.i + 1,
            Some(_) => return None,
        };
        let mut len = s.i;
        if len > close && rest[len - 1] == b'\r' {
            len -= 1;
        }
        if len > max {
            return None;
        }
        let line = &rest[..len];
        let text = if non_ascii {
            std::str::from_utf8(line).ok()?
        } else {
            debug_assert!(line.is_ascii());
            // SAFETY: no string of the record has a byte above 0x7F, and the
            // grammar admits only ASCII outside strings (the line's tail is
            // white space): the line is ASCII, which is valid UTF-8.
            unsafe { std::str::from_utf8_unchecked(line) }
        };
        Some((len, advance, self.materialise(text)))
    }

    /// Checks the JSON object at the start of `line` (after white space)
    /// against the grammar and notes where the used members' values are;
    /// returns the index after its closing brace, and whether a string of
    /// the object has a byte above 0x7F (if not, the object is ASCII).
    #[inline(always)]
    fn scan_record(&mut self, line: &[u8], newlines: bool) -> Result<(usize, bool), Refusal> {
        let mut s = Scan {
            b: line,
            i: 0,
            newlines,
            non_ascii: false,
        };
        self.begin();
        for r in self.raw.iter_mut() {
            *r = None;
        }
        if !self.compact.is_empty() {
            if let Some(found) = self.scan_compact(line) {
                return Ok(found);
            }
            for r in self.raw.iter_mut() {
                *r = None;
            }
        }
        s.ws();
        // Whether the record is compact so far: no white space anywhere,
        // every name remembered, every value a string or a number.
        let mut compact = s.i == 0;
        if s.b.get(s.i) != Some(&b'{') {
            let msg = if s.i >= s.b.len() {
                "empty record".to_string()
            } else {
                ScanErr {
                    at: s.i,
                    what: "expected a JSON object",
                    found: s.b.get(s.i).copied(),
                }
                .message()
            };
            return Err(Refusal::new(Reason::InvalidJson, msg));
        }
        s.i += 1;
        let mut at = s.i;
        s.ws();
        compact &= s.i == at;
        let inv = |e: ScanErr| Refusal::new(Reason::InvalidJson, e.message());
        let mut member = 0usize;
        if s.b.get(s.i) == Some(&b'}') {
            s.i += 1;
        } else {
            loop {
                // Records of one stream mostly share their member order: try
                // the `"name":` bytes the previous record had at this position.
                let predicted = match self.shape.get(member) {
                    Some(m) if m.name.is_at(line, s.i) => Some((m.name.byte_len(), m.target)),
                    _ => None,
                };
                let target = if let Some((len, t)) = predicted {
                    s.i += len;
                    t
                } else {
                    if s.b.get(s.i) != Some(&b'"') {
                        return Err(inv(ScanErr {
                            at: s.i,
                            what: "expected a member name",
                            found: s.b.get(s.i).copied(),
                        }));
                    }
                    let quote = s.i;
                    let (ks, ke, kesc) = s.string().map_err(inv)?;
                    let target = if kesc {
                        let raw = std::str::from_utf8(&line[ks..ke]).map_err(|_| {
                            inv(ScanErr {
                                at: ks,
                                what: "member name is not UTF-8",
                                found: None,
                            })
                        })?;
                        let mut name = String::new();
                        unescape(raw, &mut name);
                        self.plan.lookup(name.as_bytes())
                    } else {
                        self.plan.lookup(&line[ks..ke])
                    };
                    s.ws();
                    if s.b.get(s.i) != Some(&b':') {
                        return Err(inv(ScanErr {
                            at: s.i,
                            what: "expected ':'",
                            found: s.b.get(s.i).copied(),
                        }));
                    }
                    s.i += 1;
                    // Remember `"name":` when it has no escapes and no spaces,
                    // and is ASCII: a name recognised by its bytes is not
                    // scanned, so it must not hide a byte above 0x7F.
                    if !kesc
                        && s.i - quote == ke - ks + 3
                        && member <= self.shape.len()
                        && line[ks..ke].is_ascii()
                    {
                        let entry = ShapeMember {
                            name: MemberName::new(&line[quote..s.i]),
                            target,
                            string: false,
                        };
                        if member == self.shape.len() {
                            self.shape.push(entry);
                        } else {
                            self.shape[member] = entry;
                        }
                    } else {
                        compact = false;
                    }
                    target
                };
                at = s.i;
                s.ws();
                compact &= s.i == at;
                let v = s.value(0).map_err(inv)?;
                if let Some(t) = target {
                    self.raw[t] = Some(v);
                }
                if compact {
                    let string = matches!(v.kind, RawKind::Str | RawKind::StrEsc);
                    compact =
                        (string || v.kind == RawKind::Num) && self.shape.get(member).is_some();
                    if let Some(m) = self.shape.get_mut(member) {
                        m.string = string;
                    }
                }
                member += 1;
                at = s.i;
                s.ws();
                compact &= s.i == at;
                match s.b.get(s.i) {
                    Some(b',') => {
                        s.i += 1;
                        at = s.i;
                        s.ws();
                        compact &= s.i == at;
                    }
                    Some(b'}') => {
                        s.i += 1;
                        break;
                    }
                    _ => {
                        return Err(inv(ScanErr {
                            at: s.i,
                            what: "expected ',' or '}'",
                            found: s.b.get(s.i).copied(),
                        }))
                    }
                }
            }
        }
        if compact && member > 0 {
            self.remember_compact(member);
        }
        Ok((s.i, s.non_ascii))
    }

    /// Keeps the first `members` entries of the learned shape as a compact
    /// shape, the most recent first; at most [`COMPACT_SHAPES`] are kept.
    #[cold]
    fn remember_compact(&mut self, members: usize) {
        let shape = &self.shape[..members];
        match self.compact.iter().position(|c| c[..] == *shape) {
            Some(k) => self.compact[..=k].rotate_right(1),
            None => {
                if self.compact.len() == COMPACT_SHAPES {
                    self.compact.pop();
                }
                self.compact.insert(0, shape.to_vec());
            }
        }
    }

    /// [`Decoder::scan_record`] for a record of one of the compact shapes
    /// seen last (members in that order, values of the same types, no white
    /// space): the usual records of a stream, which may have a few shapes
    /// (events of some types carry more members). `None` for anything else
    /// (the caller then scans the record in full); a record it accepts is
    /// valid JSON and gives the values the full scan gives.
    ///
    /// The shapes are tried most recent first. When one fails at a member,
    /// the next one goes on from that member: the members read stay read.
    #[inline(always)]
    fn scan_compact(&mut self, line: &[u8]) -> Option<(usize, bool)> {
        if line.first() != Some(&b'{') {
            return None;
        }
        let mut s = Scan {
            b: line,
            i: 1,
            newlines: false,
            non_ascii: false,
        };
        // Members read so far: they are the record's, whichever shape read
        // them, so any longer shape may go on from there.
        let mut done = 0usize;
        for k in 0..self.compact.len() {
            if self.compact[k].len() <= done {
                continue;
            }
            match compact_members(&self.compact[k], done, &mut s, &mut self.raw) {
                Ok(()) => {
                    if k > 0 {
                        self.compact[..=k].rotate_right(1);
                    }
                    return Some((s.i, s.non_ascii));
                }
                Err(read) => done = read,
            }
        }
        None
    }

    /// Turns the used members noted by [`Decoder::scan_record`] into the
    /// event; `text` is the record.
    fn materialise(&mut self, text: &str) -> Result<EventRef<'_>, Refusal> {
        // Materialise the used members.
        for fi in 0..self.raw.len() {
            let Some(v) = self.raw[fi] else { continue };
            let raw = &text[v.start as usize..v.end as usize];
            let (slot, key_pos, is_time) = {
                let u = &self.plan.fields[fi].1;
                (u.slot, u.key_pos, u.is_time)
            };
            if let Some(pos) = key_pos {
                match v.kind {
                    RawKind::Str => self.key_text(pos, v.start, v.end),
                    RawKind::StrEsc => {
                        let mut tmp = String::new();
                        unescape(raw, &mut tmp);
                        self.key_str(pos, &tmp);
                    }
                    RawKind::Num => match raw.parse::<i64>() {
                        Ok(i) => self.key_int(pos, i),
                        Err(_) => self.key_other(pos, raw),
                    },
                    RawKind::True | RawKind::False => self.key_other(pos, raw),
                    RawKind::Null => self.key_null(pos),
                    RawKind::Nested => self.key_bad(pos),
                }
            }
            if is_time {
                let fmt = self.plan.time_format();
                match v.kind {
                    RawKind::Null => {}
                    RawKind::Str => self.time_text(raw),
                    RawKind::StrEsc => {
                        let mut tmp = String::new();
                        unescape(raw, &mut tmp);
                        self.time_text(&tmp);
                    }
                    RawKind::Num if fmt != TimeFormat::Rfc3339 => {
                        let t = match raw.parse::<i64>() {
                            Ok(i) => epoch_int_to_micros(i, fmt),
                            Err(_) => parse_epoch_decimal(raw, epoch_unit(fmt)),
                        };
                        self.time(t.map_err(|e| e.to_string()));
                    }
                    _ => self.time(Err(format!(
                        "event time {raw:?} is not a {}",
                        format_name(fmt)
                    ))),
                }
            }
            if let Some(i) = slot {
                match v.kind {
                    RawKind::Str => self.slot_str(i, raw),
                    RawKind::StrEsc => {
                        let start = self.scratch_len();
                        self.push_unescaped(raw);
                        let end = self.scratch_len();
                        self.slot(i, Slot::Str(start, end));
                    }
                    RawKind::Num => {
                        // The grammar was checked: parsing cannot fail, but a
                        // huge exponent gives infinity, which is no value.
                        let n: f64 = parse_number(raw);
                        self.slot(
                            i,
                            if n.is_finite() {
                                Slot::Num(n)
                            } else {
                                Slot::Nested
                            },
                        );
                    }
                    RawKind::True => self.slot(i, Slot::Bool(true)),
                    RawKind::False => self.slot(i, Slot::Bool(false)),
                    RawKind::Null => self.slot(i, Slot::Null),
                    RawKind::Nested => self.slot(i, Slot::Nested),
                }
            }
        }
        self.finish_text(text)
    }

    fn scratch_len(&self) -> u32 {
        self.scratch.len() as u32
    }

    fn push_unescaped(&mut self, raw: &str) {
        unescape(raw, &mut self.scratch);
    }
}

fn epoch_unit(f: TimeFormat) -> i64 {
    match f {
        TimeFormat::EpochSeconds => 1_000_000,
        TimeFormat::EpochMillis => 1_000,
        _ => 1,
    }
}

fn format_name(f: TimeFormat) -> &'static str {
    match f {
        TimeFormat::Rfc3339 => "rfc 3339 string",
        TimeFormat::EpochSeconds => "number of epoch seconds",
        TimeFormat::EpochMillis => "number of epoch milliseconds",
        TimeFormat::EpochMicros => "number of epoch microseconds",
    }
}

#[cfg(test)]
mod tests {
    use super::{parse_number, special_bytes};
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn fast_numbers_match_the_standard_parser(m in 0u64..10_000_000_000_000_000, k in 0usize..20, neg in any::<bool>()) {
            let digits = m.to_string();
            let text = if k == 0 || k >= digits.len() {
                digits.clone()
            } else {
                format!("{}.{}", &digits[..digits.len() - k], &digits[digits.len() - k..])
            };
            let text = if neg { format!("-{text}") } else { text };
            prop_assert_eq!(parse_number(&text).to_bits(), text.parse::<f64>().expect("number").to_bits(), "{}", text);
        }
    }

    #[test]
    fn numbers_outside_the_fast_path() {
        for t in [
            "1e5",
            "-0.5E-3",
            "12345678901234567890",
            "0.1",
            "-0",
            "9007199254740993",
            "3.14159265358979323846",
        ] {
            assert_eq!(
                parse_number(t).to_bits(),
                t.parse::<f64>().expect("number").to_bits(),
                "{t}"
            );
        }
    }

    #[test]
    fn special_bytes_is_exact() {
        for b in 0u8..=255 {
            for pos in 0..8 {
                let mut bytes = [b'a'; 8];
                bytes[pos] = b;
                let m = special_bytes(u64::from_le_bytes(bytes));
                let want = b == b'"' || b == b'\\' || !(0x20..0x80).contains(&b);
                assert_eq!(m != 0, want, "byte {b:#x} at {pos}");
                if want {
                    assert_eq!(m.trailing_zeros() / 8, pos as u32);
                }
            }
            #[cfg(target_arch = "x86_64")]
            for pos in 0..16 {
                let mut bytes = [b'a'; 16];
                bytes[pos] = b;
                let m = super::special_bytes16(&bytes);
                let want = b == b'"' || b == b'\\' || !(0x20..0x80).contains(&b);
                assert_eq!(m, if want { 1 << pos } else { 0 }, "byte {b:#x} at {pos}");
            }
        }
    }
}
