//! Time: the integer clock of rill.
//!
//! Every instant is an `i64` count of microseconds since the Unix epoch, UTC
//! (`Micros`). No floating point time and no local zones exist past this
//! module: timestamps are parsed here (RFC 3339, epoch seconds, millis or
//! micros), durations are parsed from human strings (`30s`, `5m`, `7d`), and
//! processing time is read through a [`Clock`] so that the core and replay are
//! deterministic.

pub mod watermark;

use std::sync::atomic::{AtomicI64, Ordering};

/// Microseconds since the Unix epoch, UTC.
pub type Micros = i64;

pub const MICROS_PER_MILLI: i64 = 1_000;
pub const MICROS_PER_SEC: i64 = 1_000_000;
pub const MICROS_PER_MIN: i64 = 60 * MICROS_PER_SEC;
pub const MICROS_PER_HOUR: i64 = 60 * MICROS_PER_MIN;
pub const MICROS_PER_DAY: i64 = 24 * MICROS_PER_HOUR;

/// How an event-time field is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeFormat {
    /// `2024-01-01T12:00:00.123Z` or with a numeric offset.
    Rfc3339,
    /// Integer (or decimal) seconds since the epoch.
    EpochSeconds,
    /// Integer milliseconds since the epoch.
    EpochMillis,
    /// Integer microseconds since the epoch.
    EpochMicros,
}

impl TimeFormat {
    fn unit(self) -> i64 {
        match self {
            TimeFormat::Rfc3339 | TimeFormat::EpochMicros => 1,
            TimeFormat::EpochSeconds => MICROS_PER_SEC,
            TimeFormat::EpochMillis => MICROS_PER_MILLI,
        }
    }
}

/// Why a timestamp could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimeError {
    #[error("invalid rfc 3339 timestamp {0:?}")]
    Rfc3339(String),
    #[error("invalid epoch number {0:?}")]
    Epoch(String),
    #[error("timestamp out of range")]
    OutOfRange,
}

/// Parses a timestamp given as text in `format`.
///
/// Epoch formats accept an integer or a plain decimal (`1700000000.25` in
/// seconds); digits finer than a microsecond are truncated toward negative
/// infinity, so times keep floor semantics.
pub fn parse_time_text(s: &str, format: TimeFormat) -> Result<Micros, TimeError> {
    match format {
        TimeFormat::Rfc3339 => parse_rfc3339(s),
        _ => parse_epoch_decimal(s, format.unit()),
    }
}

/// Converts an epoch integer in `format`'s unit to micros.
pub fn epoch_int_to_micros(v: i64, format: TimeFormat) -> Result<Micros, TimeError> {
    v.checked_mul(format.unit()).ok_or(TimeError::OutOfRange)
}

/// Parses the decimal text of a number (`-12`, `3.25`, `1e3`) as an epoch
/// value in `unit` micros, exactly when it has no exponent.
pub fn parse_epoch_decimal(s: &str, unit: i64) -> Result<Micros, TimeError> {
    let err = || TimeError::Epoch(s.to_string());
    let b = s.as_bytes();
    if b.is_empty() {
        return Err(err());
    }
    if b.iter().any(|&c| c == b'e' || c == b'E') {
        let f: f64 = s.parse().map_err(|_| err())?;
        let v = (f * unit as f64).floor();
        if !v.is_finite() || v.abs() > 9.0e18 {
            return Err(TimeError::OutOfRange);
        }
        return Ok(v as i64);
    }
    let (neg, digits) = match b[0] {
        b'-' => (true, &b[1..]),
        b'+' => (false, &b[1..]),
        _ => (false, b),
    };
    let (int_part, frac_part) = match digits.iter().position(|&c| c == b'.') {
        Some(i) => (&digits[..i], &digits[i + 1..]),
        None => (digits, &digits[..0]),
    };
    if int_part.is_empty() || !int_part.iter().all(u8::is_ascii_digit) {
        return Err(err());
    }
    if !frac_part.iter().all(u8::is_ascii_digit) {
        return Err(err());
    }
    let mut whole: i64 = 0;
    for &c in int_part {
        whole = whole
            .checked_mul(10)
            .and_then(|w| w.checked_add((c - b'0') as i64))
            .ok_or(TimeError::OutOfRange)?;
    }
    let mut micros = whole.checked_mul(unit).ok_or(TimeError::OutOfRange)?;
    // The fraction of one unit, in micros, truncated.
    let mut frac: i64 = 0;
    let mut scale = unit;
    let mut remainder_nonzero = false;
    for &c in frac_part {
        if scale >= 10 {
            scale /= 10;
            frac += (c - b'0') as i64 * scale;
        } else if c != b'0' {
            remainder_nonzero = true;
        }
    }
    micros = micros.checked_add(frac).ok_or(TimeError::OutOfRange)?;
    if neg {
        micros = -micros;
        if remainder_nonzero {
            micros -= 1;
        }
    }
    Ok(micros)
}

fn digits2(b: &[u8], i: usize) -> Option<u32> {
    let (a, c) = (*b.get(i)?, *b.get(i + 1)?);
    if a.is_ascii_digit() && c.is_ascii_digit() {
        Some(((a - b'0') * 10 + (c - b'0')) as u32)
    } else {
        None
    }
}

/// Seconds (up to 60) and milliseconds of the 8 bytes `:SS.mmmZ` read as a
/// little-endian word, with one test for the punctuation and one for the
/// digits; `None` for anything else.
#[inline]
fn seconds_millis_utc(w: u64) -> Option<(i64, i64)> {
    const PUNCT: u64 = 0xFF00_0000_FF00_00FF;
    const WANT: u64 = u64::from_le_bytes(*b":00.000Z") & PUNCT;
    const ZEROS: u64 = u64::from_le_bytes(*b"00000000") & PUNCT;
    if w & PUNCT != WANT {
        return None;
    }
    // The punctuation replaced by '0': eight ASCII digits or not.
    let v = (w & !PUNCT) | ZEROS;
    const HI: u64 = 0xF0F0_F0F0_F0F0_F0F0;
    if (v & HI) | (((v.wrapping_add(0x0606_0606_0606_0606)) & HI) >> 4) != 0x3333_3333_3333_3333 {
        return None;
    }
    let d = v - 0x3030_3030_3030_3030;
    let digit = |i: u32| ((d >> (8 * i)) & 0xFF) as i64;
    let second = digit(1) * 10 + digit(2);
    (second <= 60).then(|| (second, digit(4) * 100 + digit(5) * 10 + digit(6)))
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// (year, month, day) of a count of days since 1970-01-01.
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ => {
            if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 {
                29
            } else {
                28
            }
        }
    }
}

/// Parses RFC 3339 (`YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`); a space or a
/// lowercase `t`/`z` is accepted as in RFC 3339's note. Fractions finer than a
/// microsecond are truncated.
pub fn parse_rfc3339(s: &str) -> Result<Micros, TimeError> {
    let mut cache = DateCache::default();
    parse_rfc3339_cached(s, &mut cache)
}

/// The last minute seen (`YYYY-MM-DDTHH:MM`), so that a stream of
/// timestamps parses its date, hour and minute once per minute.
#[derive(Debug, Clone, Default)]
pub struct DateCache {
    text: [u8; 16],
    /// Seconds from the epoch to that minute, before any UTC offset.
    minute: i64,
    valid: bool,
}

/// [`parse_rfc3339`] with a minute cache.
pub fn parse_rfc3339_cached(s: &str, cache: &mut DateCache) -> Result<Micros, TimeError> {
    let err = || TimeError::Rfc3339(s.chars().take(64).collect());
    let b = s.as_bytes();
    if b.len() < 20 {
        return Err(err());
    }
    let prefix: [u8; 16] = b[..16].try_into().expect("16 bytes");
    let minute_secs = if cache.valid && prefix == cache.text {
        cache.minute
    } else {
        let year = {
            let (Some(hi), Some(lo)) = (digits2(b, 0), digits2(b, 2)) else {
                return Err(err());
            };
            (hi * 100 + lo) as i64
        };
        if b[4] != b'-' || b[7] != b'-' {
            return Err(err());
        }
        let month = digits2(b, 5).ok_or_else(err)?;
        let day = digits2(b, 8).ok_or_else(err)?;
        if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
            return Err(err());
        }
        if !matches!(b[10], b'T' | b't' | b' ') || b[13] != b':' {
            return Err(err());
        }
        let hour = digits2(b, 11).ok_or_else(err)?;
        let minute = digits2(b, 14).ok_or_else(err)?;
        if hour > 23 || minute > 59 {
            return Err(err());
        }
        let m =
            days_from_civil(year, month, day) * 86_400 + hour as i64 * 3600 + minute as i64 * 60;
        cache.text = prefix;
        cache.minute = m;
        cache.valid = true;
        m
    };
    // The usual tail, `SS.mmmZ` (milliseconds in UTC, as JavaScript and
    // most loggers write them), read at fixed places.
    if let Ok(tail) = <[u8; 8]>::try_from(&b[16..]) {
        if let Some((second, millis)) = seconds_millis_utc(u64::from_le_bytes(tail)) {
            let secs = minute_secs + second;
            if !(RFC3339_FIRST_SEC..RFC3339_END_SEC).contains(&secs) {
                return Err(err());
            }
            return Ok(secs * MICROS_PER_SEC + millis * 1000);
        }
    }
    if b[16] != b':' {
        return Err(err());
    }
    let second = digits2(b, 17).ok_or_else(err)?;
    if second > 60 {
        return Err(err());
    }
    let mut i = 19;
    let mut frac: i64 = 0;
    if b[i] == b'.' {
        i += 1;
        let start = i;
        // Digits past the sixth (below a microsecond) are checked, not kept.
        let mut kept = 0;
        while i < b.len() && b[i].is_ascii_digit() {
            if kept < 6 {
                frac = frac * 10 + (b[i] - b'0') as i64;
                kept += 1;
            }
            i += 1;
        }
        if i == start {
            return Err(err());
        }
        frac *= [1_000_000, 100_000, 10_000, 1_000, 100, 10, 1][kept];
    }
    let offset_secs: i64 = match b.get(i) {
        Some(b'Z' | b'z') if i + 1 == b.len() => 0,
        Some(&sign @ (b'+' | b'-')) if i + 6 == b.len() && b[i + 3] == b':' => {
            let oh = digits2(b, i + 1).ok_or_else(err)? as i64;
            let om = digits2(b, i + 4).ok_or_else(err)? as i64;
            if oh > 23 || om > 59 {
                return Err(err());
            }
            let o = oh * 3600 + om * 60;
            if sign == b'-' {
                -o
            } else {
                o
            }
        }
        _ => return Err(err()),
    };
    // A leap second (:60) lands on the first second of the next minute.
    let secs = minute_secs + second as i64 - offset_secs;
    // In UTC the time must stay within years 0000 to 9999, the times RFC
    // 3339 can write (a leap second or an offset could carry it out).
    if !(RFC3339_FIRST_SEC..RFC3339_END_SEC).contains(&secs) {
        return Err(err());
    }
    Ok(secs * MICROS_PER_SEC + frac)
}

/// 0000-01-01T00:00:00Z and 10000-01-01T00:00:00Z in seconds since the epoch.
const RFC3339_FIRST_SEC: i64 = -62_167_219_200;
const RFC3339_END_SEC: i64 = 253_402_300_800;

/// Formats micros as RFC 3339 UTC with microseconds trimmed to what is needed
/// (`2024-01-01T00:00:00Z`, `...00.123Z`, `...00.123456Z`).
pub fn format_rfc3339(t: Micros) -> String {
    let mut s = String::with_capacity(32);
    write_rfc3339(&mut s, t, false);
    s
}

/// Appends RFC 3339 UTC text of `t`; with `fixed_millis`, always three
/// fractional digits (the generator's format).
pub fn write_rfc3339(out: &mut String, t: Micros, fixed_millis: bool) {
    use std::fmt::Write;
    let secs = t.div_euclid(MICROS_PER_SEC);
    let us = t.rem_euclid(MICROS_PER_SEC);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let _ = write!(
        out,
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        y,
        m,
        d,
        sod / 3600,
        (sod / 60) % 60,
        sod % 60
    );
    if fixed_millis {
        let _ = write!(out, ".{:03}", us / 1000);
    } else if us != 0 {
        if us % 1000 == 0 {
            let _ = write!(out, ".{:03}", us / 1000);
        } else {
            let _ = write!(out, ".{:06}", us);
        }
    }
    out.push('Z');
}

/// The UTC date `YYYY-MM-DD` of an instant.
pub fn utc_date(t: Micros) -> String {
    let (y, m, d) = civil_from_days(t.div_euclid(MICROS_PER_DAY));
    format!("{y:04}-{m:02}-{d:02}")
}

/// Why a duration string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {0:?}: expected a number and a unit such as 500ms, 30s, 5m, 2h or 7d")]
pub struct DurationError(pub String);

/// Parses a human duration: one or more `<integer><unit>` parts with units
/// `us`, `ms`, `s`, `m`, `h`, `d`, `w` (`1h30m`); `0` alone is zero.
pub fn parse_duration(s: &str) -> Result<Micros, DurationError> {
    let err = || DurationError(s.to_string());
    let t = s.trim();
    if t == "0" {
        return Ok(0);
    }
    let b = t.as_bytes();
    if b.is_empty() {
        return Err(err());
    }
    let mut i = 0;
    let mut total: i64 = 0;
    while i < b.len() {
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return Err(err());
        }
        let n: i64 = t[start..i].parse().map_err(|_| err())?;
        let ustart = i;
        while i < b.len() && b[i].is_ascii_alphabetic() {
            i += 1;
        }
        let unit = match &t[ustart..i] {
            "us" => 1,
            "ms" => MICROS_PER_MILLI,
            "s" => MICROS_PER_SEC,
            "m" => MICROS_PER_MIN,
            "h" => MICROS_PER_HOUR,
            "d" => MICROS_PER_DAY,
            "w" => 7 * MICROS_PER_DAY,
            _ => return Err(err()),
        };
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(err)?;
    }
    Ok(total)
}

/// Formats a duration back to the shortest human string (`300s` -> `5m`).
pub fn format_duration(d: Micros) -> String {
    if d == 0 {
        return "0s".into();
    }
    for (unit, name) in [
        (7 * MICROS_PER_DAY, "w"),
        (MICROS_PER_DAY, "d"),
        (MICROS_PER_HOUR, "h"),
        (MICROS_PER_MIN, "m"),
        (MICROS_PER_SEC, "s"),
        (MICROS_PER_MILLI, "ms"),
    ] {
        if d % unit == 0 {
            return format!("{}{}", d / unit, name);
        }
    }
    format!("{d}us")
}

/// A source of processing time.
pub trait Clock: Send + Sync {
    fn now(&self) -> Micros;
}

/// The machine's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Micros {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        d.as_micros() as i64
    }
}

/// A clock that moves only when told to (tests, harnesses).
#[derive(Debug, Default)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    pub fn new(t: Micros) -> Self {
        Self(AtomicI64::new(t))
    }
    pub fn set(&self, t: Micros) {
        self.0.store(t, Ordering::SeqCst);
    }
    pub fn advance(&self, d: Micros) {
        self.0.fetch_add(d, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Micros {
        self.0.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_matches_chrono() {
        for s in [
            "2024-01-01T00:00:00Z",
            "2024-02-29T23:59:59.999Z",
            "1969-12-31T23:59:59.5Z",
            "2024-06-30T12:00:00.123456+02:00",
            "2024-06-30T12:00:00-05:30",
            "1900-03-01T00:00:00Z",
            "2024-06-30T12:00:00.1234567Z",
            "1969-12-31T23:59:59.999999999Z",
        ] {
            let want = chrono::DateTime::parse_from_rfc3339(s)
                .expect("valid")
                .timestamp_micros();
            assert_eq!(parse_rfc3339(s).expect(s), want, "{s}");
        }
    }

    #[test]
    fn fixed_millisecond_tails_match_a_plain_reading() {
        // Every byte value at every place of `:SS.mmmZ`, around valid tails.
        for base in [*b":59.123Z", *b":60.000Z", *b":00.999Z", *b":07.450Z"] {
            for at in 0..8 {
                for c in 0u8..=255 {
                    let mut tail = base;
                    tail[at] = c;
                    let digits = [1, 2, 4, 5, 6].iter().all(|&i| tail[i].is_ascii_digit());
                    let n = |r: std::ops::Range<usize>| {
                        tail[r]
                            .iter()
                            .fold(0i64, |a, &c| a * 10 + (c - b'0') as i64)
                    };
                    let want = (tail[0] == b':'
                        && tail[3] == b'.'
                        && tail[7] == b'Z'
                        && digits
                        && n(1..3) <= 60)
                        .then(|| (n(1..3), n(4..7)));
                    assert_eq!(
                        seconds_millis_utc(u64::from_le_bytes(tail)),
                        want,
                        "{tail:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn rfc3339_refuses_garbage() {
        for s in [
            "",
            "2024-01-01",
            "2024-13-01T00:00:00Z",
            "2023-02-29T00:00:00Z",
            "2024-01-01T00:00:00",
            "2024-01-01T00:00:00.Z",
            "2024-01-01T00:00:00Zjunk",
            // Found by the fuzzer: a leap second or an offset carrying the
            // time past the years RFC 3339 can write.
            "9999-12-31T23:59:60Z",
            "9999-12-31T23:59:60.900Z",
            "9999-12-31T23:00:00-01:00",
            "0000-01-01T00:00:00+00:01",
        ] {
            assert!(parse_rfc3339(s).is_err(), "{s}");
        }
        assert!(parse_rfc3339("9999-12-31T23:59:59.999999Z").is_ok());
        assert!(parse_rfc3339("0000-01-01T00:00:00Z").is_ok());
    }

    proptest::proptest! {
        /// A cache shared by a stream of timestamps (most in one minute,
        /// some edited into invalid text) never changes a result, and
        /// valid ones agree with chrono.
        #[test]
        fn minute_cache_never_changes_a_result(
            stream in proptest::collection::vec(
                (0i64..600_000_000, 0usize..4, 0usize..3, proptest::option::of((0usize..26, 0u8..128))),
                1..40),
            base in -3_000_000_000i64..4_000_000_000,
        ) {
            let mut cache = DateCache::default();
            for (offset_us, frac, zone, edit) in stream {
                let t = base * MICROS_PER_SEC + offset_us;
                let utc = chrono::DateTime::from_timestamp_micros(t).expect("in range");
                let mut text = match frac {
                    0 => utc.format("%Y-%m-%dT%H:%M:%S").to_string(),
                    1 => utc.format("%Y-%m-%dT%H:%M:%S%.3f").to_string(),
                    2 => utc.format("%Y-%m-%d %H:%M:%S%.6f").to_string(),
                    _ => utc.format("%Y-%m-%dt%H:%M:%S%.f").to_string(),
                };
                text.push_str(["Z", "+02:30", "-11:00"][zone]);
                if let Some((at, c)) = edit {
                    if at < text.len() && c.is_ascii() {
                        text.replace_range(at..at + 1, &(c as char).to_string());
                    }
                }
                let cached = parse_rfc3339_cached(&text, &mut cache);
                let fresh = parse_rfc3339(&text);
                proptest::prop_assert_eq!(&cached, &fresh, "{}", text);
                if let Ok(got) = fresh {
                    let want = chrono::DateTime::parse_from_rfc3339(&text.replace(' ', "T"))
                        .map(|d| d.timestamp_micros());
                    // chrono keeps nanoseconds; this reader truncates to micros.
                    proptest::prop_assert_eq!(Ok(got), want, "{}", text);
                }
            }
        }
    }

    #[test]
    fn format_round_trips() {
        for t in [
            0,
            1,
            -1,
            1_700_000_000_123_000,
            -86_400_000_001,
            1_700_000_000_123_456,
        ] {
            assert_eq!(parse_rfc3339(&format_rfc3339(t)).expect("own format"), t);
        }
        assert_eq!(format_rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc_date(-1), "1969-12-31");
    }

    #[test]
    fn epoch_decimals_are_exact() {
        assert_eq!(
            parse_epoch_decimal("1700000000.25", MICROS_PER_SEC),
            Ok(1_700_000_000_250_000)
        );
        assert_eq!(
            parse_epoch_decimal("1700000000123", MICROS_PER_MILLI),
            Ok(1_700_000_000_123_000)
        );
        assert_eq!(parse_epoch_decimal("-1.5", MICROS_PER_SEC), Ok(-1_500_000));
        assert_eq!(parse_epoch_decimal("-0.0000015", MICROS_PER_SEC), Ok(-2));
        assert!(parse_epoch_decimal("12a", 1).is_err());
        assert!(parse_epoch_decimal("", 1).is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(30 * MICROS_PER_SEC));
        assert_eq!(parse_duration("1h30m"), Ok(90 * MICROS_PER_MIN));
        assert_eq!(parse_duration("7d"), Ok(7 * MICROS_PER_DAY));
        assert_eq!(parse_duration("0"), Ok(0));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("5 minutes").is_err());
        assert!(parse_duration("-5s").is_err());
        assert_eq!(format_duration(300 * MICROS_PER_SEC), "5m");
    }
}
