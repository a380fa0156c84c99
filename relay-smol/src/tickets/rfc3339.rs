//! RFC 3339 timestamps as the REST API uses them (`2026-11-27T12:00:00Z`), to and from
//! unix seconds. Written by hand: small, no calendar crate.
//!
//! Parsing accepts `T`/`t`/space between date and time, optional fractional seconds
//! (truncated), and `Z`/`z` or a numeric offset `±HH:MM`. Formatting always writes
//! `YYYY-MM-DDTHH:MM:SSZ`. Years 1970..=9999 only.

/// Days from 1970-01-01 to the given civil date (proleptic Gregorian).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    // Howard Hinnant's algorithm.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
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
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

fn digits(s: &[u8]) -> Option<u32> {
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    s.iter().try_fold(0u32, |acc, b| {
        acc.checked_mul(10)?.checked_add(u32::from(b - b'0'))
    })
}

/// Parses an RFC 3339 timestamp into unix seconds. The error says what is wrong.
pub fn parse(text: &str) -> Result<u64, &'static str> {
    const SHAPE: &str = "expected an RFC 3339 time like 2026-11-27T12:00:00Z";
    let b = text.as_bytes();
    let field = |r: core::ops::Range<usize>| b.get(r).and_then(digits).ok_or(SHAPE);
    let sep = |i: usize, c: &[u8]| b.get(i).filter(|x| c.contains(x)).map(|_| ()).ok_or(SHAPE);
    let year = i64::from(field(0..4)?);
    sep(4, b"-")?;
    let month = field(5..7)?;
    sep(7, b"-")?;
    let day = field(8..10)?;
    sep(10, b"Tt ")?;
    let hour = field(11..13)?;
    sep(13, b":")?;
    let minute = field(14..16)?;
    sep(16, b":")?;
    let second = field(17..19)?;
    let mut rest = b.get(19..).ok_or(SHAPE)?;
    if let Some(frac) = rest.strip_prefix(b".") {
        let n = frac.iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 {
            return Err(SHAPE);
        }
        rest = frac.get(n..).ok_or(SHAPE)?;
    }
    let offset_secs: i64 = match rest {
        b"Z" | b"z" => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let h = i64::from(digits(&[*h1, *h2]).ok_or(SHAPE)?);
            let m = i64::from(digits(&[*m1, *m2]).ok_or(SHAPE)?);
            if h > 23 || m > 59 {
                return Err("time zone offset out of range");
            }
            let o = h * 3600 + m * 60;
            if *sign == b'+' { o } else { -o }
        }
        _ => return Err("expected the time to end with Z (UTC) or an offset like +02:00"),
    };
    if !(1970..=9999).contains(&year) {
        return Err("year must be between 1970 and 9999");
    }
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return Err("no such calendar date");
    }
    // Second 60 (a leap second) is read as the next second's start.
    if hour > 23 || minute > 59 || second > 60 {
        return Err("time of day out of range");
    }
    let secs = days_from_civil(year, month, day) * 86_400
        + i64::from(hour) * 3600
        + i64::from(minute) * 60
        + i64::from(second)
        - offset_secs;
    u64::try_from(secs).map_err(|_| "time is before 1970")
}

/// Formats unix seconds as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn format(unix: u64) -> String {
    let days = i64::try_from(unix / 86_400).unwrap_or(i64::MAX / 2);
    let rem = unix % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        let cases = [
            ("1970-01-01T00:00:00Z", 0),
            ("2000-02-29T12:34:56Z", 951_827_696),
            ("2026-11-27T12:00:00Z", 1_795_780_800),
            ("2038-01-19T03:14:08Z", 2_147_483_648),
            ("9999-12-31T23:59:59Z", 253_402_300_799),
        ];
        for (text, unix) in cases {
            assert_eq!(parse(text), Ok(unix), "{text}");
            assert_eq!(format(unix), text);
        }
    }

    #[test]
    fn variants_accepted() {
        let base = 1_795_780_800;
        assert_eq!(parse("2026-11-27t12:00:00z"), Ok(base));
        assert_eq!(parse("2026-11-27 12:00:00Z"), Ok(base));
        assert_eq!(parse("2026-11-27T12:00:00.987654Z"), Ok(base));
        assert_eq!(parse("2026-11-27T14:00:00+02:00"), Ok(base));
        assert_eq!(parse("2026-11-27T11:30:00-00:30"), Ok(base));
    }

    #[test]
    fn refusals() {
        for bad in [
            "",
            "2026-11-27",
            "2026-11-27T12:00:00",
            "2026-11-27T12:00:00ZZ",
            "2026-13-01T00:00:00Z",
            "2026-02-29T00:00:00Z",
            "2026-04-31T00:00:00Z",
            "2026-11-27T24:00:00Z",
            "2026-11-27T12:60:00Z",
            "2026-11-27T12:00:00.Z",
            "2026-11-27T12:00:00+24:00",
            "1969-12-31T23:59:59Z",
            "+026-11-27T12:00:00Z",
            "2026-11-27T12:00:00+0200",
            "２026-11-27T12:00:00Z",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn round_trip_every_day_for_decades() {
        let mut t = 0u64;
        while t < 4_102_444_800 {
            assert_eq!(parse(&format(t)), Ok(t));
            t += 86_400 + 3_661;
        }
    }
}
