//! Wall-clock timestamps: microseconds since the Unix epoch, formatted and
//! parsed as RFC 3339.
//!
//! Events record `recorded_at` as RFC 3339 UTC with exactly six fractional
//! digits (`2026-11-24T06:21:45.123456Z`). `get_state` takes any RFC 3339
//! timestamp (any offset, 0–9 fractional digits) and compares at microsecond
//! resolution: extra digits are truncated, which keeps "recorded at or before"
//! exact because every stored time is a whole microsecond.
//!
//! The calendar arithmetic is Howard Hinnant's `days_from_civil` /
//! `civil_from_days`, valid for the proleptic Gregorian calendar; years are
//! limited to 0000–9999, the range RFC 3339 can spell.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

/// Microseconds since 1970-01-01T00:00:00Z (negative before).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub i64);

/// Why a timestamp text was not accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimestampError(&'static str);

impl fmt::Display for TimestampError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for TimestampError {}

const MICROS_PER_SECOND: i64 = 1_000_000;
const SECONDS_PER_DAY: i64 = 86_400;

impl Timestamp {
    /// The current wall-clock time (one vDSO call, no syscall on Linux).
    pub fn now() -> Timestamp {
        match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(d) => Timestamp(d.as_micros() as i64),
            // A clock set before 1970: report the epoch rather than fail an
            // append. Monotonicity is enforced by the log, not by the clock.
            Err(_) => Timestamp(0),
        }
    }

    /// Microseconds since the epoch.
    pub fn as_micros(self) -> i64 {
        self.0
    }

    /// Appends the RFC 3339 UTC form with six fractional digits.
    pub fn write_rfc3339(self, out: &mut Vec<u8>) {
        let secs = self.0.div_euclid(MICROS_PER_SECOND);
        let micros = self.0.rem_euclid(MICROS_PER_SECOND);
        let days = secs.div_euclid(SECONDS_PER_DAY);
        let sod = secs.rem_euclid(SECONDS_PER_DAY);
        let (y, m, d) = civil_from_days(days);
        let mut buf = [0u8; 27];
        put_digits(&mut buf[0..4], y.clamp(0, 9999) as u64);
        buf[4] = b'-';
        put_digits(&mut buf[5..7], m as u64);
        buf[7] = b'-';
        put_digits(&mut buf[8..10], d as u64);
        buf[10] = b'T';
        put_digits(&mut buf[11..13], (sod / 3600) as u64);
        buf[13] = b':';
        put_digits(&mut buf[14..16], (sod / 60 % 60) as u64);
        buf[16] = b':';
        put_digits(&mut buf[17..19], (sod % 60) as u64);
        buf[19] = b'.';
        put_digits(&mut buf[20..26], micros as u64);
        buf[26] = b'Z';
        out.extend_from_slice(&buf);
    }

    /// Parses an RFC 3339 date-time: `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`.
    /// `T` may also be `t` or a space, `Z` may be `z`. A leap second (`:60`)
    /// is read as the last microsecond of that minute.
    pub fn parse_rfc3339(text: &str) -> Result<Timestamp, TimestampError> {
        let b = text.as_bytes();
        if b.len() < 20 {
            return Err(TimestampError(
                "expected an RFC 3339 timestamp like 2026-11-24T06:21:45.123456Z",
            ));
        }
        let num = |range: std::ops::Range<usize>| -> Result<i64, TimestampError> {
            let mut v = 0i64;
            for &c in &b[range] {
                if !c.is_ascii_digit() {
                    return Err(TimestampError(
                        "expected an RFC 3339 timestamp like 2026-11-24T06:21:45.123456Z",
                    ));
                }
                v = v * 10 + i64::from(c - b'0');
            }
            Ok(v)
        };
        let sep_ok = b[4] == b'-'
            && b[7] == b'-'
            && matches!(b[10], b'T' | b't' | b' ')
            && b[13] == b':'
            && b[16] == b':';
        if !sep_ok {
            return Err(TimestampError(
                "expected an RFC 3339 timestamp like 2026-11-24T06:21:45.123456Z",
            ));
        }
        let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
        let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
        if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
            return Err(TimestampError("date out of range"));
        }
        if hour > 23 || minute > 59 || second > 60 {
            return Err(TimestampError("time of day out of range"));
        }
        let mut i = 19;
        let mut micros = 0i64;
        if b[i] == b'.' {
            i += 1;
            let start = i;
            while i < b.len() && b[i].is_ascii_digit() {
                if i - start < 6 {
                    micros = micros * 10 + i64::from(b[i] - b'0');
                }
                i += 1;
            }
            let digits = i - start;
            if digits == 0 || digits > 9 {
                return Err(TimestampError(
                    "fraction of a second must have 1 to 9 digits",
                ));
            }
            for _ in digits..6 {
                micros *= 10;
            }
        }
        let offset_seconds = match &b[i..] {
            [b'Z' | b'z'] => 0,
            [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
                let digits = [*h1, *h2, *m1, *m2];
                if !digits.iter().all(u8::is_ascii_digit) {
                    return Err(TimestampError("offset must be Z or ±HH:MM"));
                }
                let h = i64::from(h1 - b'0') * 10 + i64::from(h2 - b'0');
                let m = i64::from(m1 - b'0') * 10 + i64::from(m2 - b'0');
                if h > 23 || m > 59 {
                    return Err(TimestampError("offset out of range"));
                }
                let s = h * 3600 + m * 60;
                if *sign == b'-' { -s } else { s }
            }
            _ => return Err(TimestampError("offset must be Z or ±HH:MM")),
        };
        let (second, micros) = if second == 60 {
            (59, MICROS_PER_SECOND - 1)
        } else {
            (second, micros)
        };
        let days = days_from_civil(year, month, day);
        let secs = days * SECONDS_PER_DAY + hour * 3600 + minute * 60 + second - offset_seconds;
        Ok(Timestamp(secs * MICROS_PER_SECOND + micros))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = Vec::with_capacity(27);
        self.write_rfc3339(&mut out);
        f.write_str(&String::from_utf8_lossy(&out))
    }
}

fn put_digits(dst: &mut [u8], mut v: u64) {
    for slot in dst.iter_mut().rev() {
        *slot = b'0' + (v % 10) as u8;
        v /= 10;
    }
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The proleptic Gregorian date of a day count since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (
        if m <= 2 {
            yoe + era * 400 + 1
        } else {
            yoe + era * 400
        },
        m,
        d,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fmt(ts: Timestamp) -> String {
        ts.to_string()
    }

    #[test]
    fn formats_epoch_and_known_instants() {
        assert_eq!(fmt(Timestamp(0)), "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            fmt(Timestamp(1_795_501_305_123_456)),
            "2026-11-24T06:21:45.123456Z"
        );
        assert_eq!(
            fmt(Timestamp(951_782_400_000_001)),
            "2000-02-29T00:00:00.000001Z"
        );
    }

    #[test]
    fn parse_inverts_format_across_many_days() {
        let mut t = -10_000 * SECONDS_PER_DAY * MICROS_PER_SECOND;
        while t < 30_000 * SECONDS_PER_DAY * MICROS_PER_SECOND {
            let ts = Timestamp(t);
            assert_eq!(Timestamp::parse_rfc3339(&fmt(ts)), Ok(ts), "{}", fmt(ts));
            t += 7_777_777_777_777 / 100;
        }
    }

    #[test]
    fn parses_offsets_fractions_and_case() {
        let z = Timestamp::parse_rfc3339("2026-11-24T06:21:45.123456Z").unwrap();
        assert_eq!(
            Timestamp::parse_rfc3339("2026-11-24T08:21:45.123456+02:00"),
            Ok(z)
        );
        assert_eq!(
            Timestamp::parse_rfc3339("2026-11-24t01:21:45.123456-05:00"),
            Ok(z)
        );
        assert_eq!(
            Timestamp::parse_rfc3339("2026-11-24 06:21:45.123456789z"),
            Ok(z)
        );
        let whole = Timestamp::parse_rfc3339("2026-11-24T06:21:45Z").unwrap();
        assert_eq!(z.0 - whole.0, 123_456);
        let tenth = Timestamp::parse_rfc3339("2026-11-24T06:21:45.1Z").unwrap();
        assert_eq!(tenth.0 - whole.0, 100_000);
    }

    #[test]
    fn rejects_malformed_and_out_of_range() {
        for bad in [
            "",
            "yesterday",
            "2026-11-24",
            "2026-11-24T06:21:45",
            "2026-13-01T00:00:00Z",
            "2026-02-29T00:00:00Z",
            "2026-11-24T24:00:00Z",
            "2026-11-24T06:21:45.Z",
            "2026-11-24T06:21:45.1234567890Z",
            "2026-11-24T06:21:45+0200",
            "2026-11-24T06:21:45+24:00",
            "2026-11-24T06:21:45Zjunk",
            "2026-11-24T06:2a:45Z",
        ] {
            assert!(Timestamp::parse_rfc3339(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn leap_second_reads_as_last_microsecond() {
        let leap = Timestamp::parse_rfc3339("2016-12-31T23:59:60Z").unwrap();
        let next = Timestamp::parse_rfc3339("2017-01-01T00:00:00Z").unwrap();
        assert_eq!(next.0 - leap.0, 1);
    }
}
