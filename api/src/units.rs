//! Parsing of the two unit-bearing strings in the spec: durations (`syncInterval`, `syncTimeout`)
//! and quantities (`storage.capacity`).

use std::time::Duration;

/// Why a duration or quantity did not parse; the text says what a valid value looks like.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    #[error("{0:?} is not a duration; use a number with a unit (ms, s, m, h, d), e.g. 30s, 5m, 1h30m, 1d")]
    BadDuration(String),
    #[error("{0:?} is not a quantity; use a number with an optional suffix, e.g. 512Mi, 1Gi, 10G")]
    BadQuantity(String),
    #[error("{0:?} is out of range")]
    OutOfRange(String),
}

/// Parses `30s`, `5m`, `2h`, `1d`, `1h30m`, `1.5h`, `250ms`: one or more number-unit pairs.
/// Units are `ms`, `s`, `m`, `h` and `d` (24 h). A bare number or a unitless `0` is rejected, so
/// that `"60"` is not silently taken as seconds or nanoseconds.
pub fn parse_duration(input: &str) -> Result<Duration, UnitError> {
    let bad = || UnitError::BadDuration(input.to_string());
    let s = input.trim();
    if s.is_empty() || s.len() > 64 {
        return Err(bad());
    }
    let bytes = s.as_bytes();
    let mut i = 0;
    let mut total_ms: u128 = 0;
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && (bytes[i].is_ascii_digit() || bytes[i] == b'.') {
            i += 1;
        }
        let number = &s[start..i];
        let unit_start = i;
        while i < bytes.len() && bytes[i].is_ascii_alphabetic() {
            i += 1;
        }
        let unit = &s[unit_start..i];
        if number.is_empty() || unit.is_empty() {
            return Err(bad());
        }
        let unit_ms: u128 = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(bad()),
        };
        let (num, den) = parse_decimal(number).ok_or_else(bad)?;
        let part = num.checked_mul(unit_ms).ok_or_else(|| UnitError::OutOfRange(input.to_string()))? / den;
        total_ms = total_ms.checked_add(part).ok_or_else(|| UnitError::OutOfRange(input.to_string()))?;
    }
    let ms = u64::try_from(total_ms).map_err(|_| UnitError::OutOfRange(input.to_string()))?;
    Ok(Duration::from_millis(ms))
}

/// Renders a duration the way users write them: `90s` → `1m30s`, `1500ms` → `1.5s`.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".to_string();
    }
    if !ms.is_multiple_of(1000) {
        if ms < 60_000 {
            let text = format!("{:.3}", ms as f64 / 1000.0);
            let text = text.trim_end_matches('0').trim_end_matches('.');
            return format!("{text}s");
        }
        return format!("{ms}ms");
    }
    let mut secs = ms / 1000;
    let mut out = String::new();
    for (unit, size) in [("d", 86_400u128), ("h", 3_600), ("m", 60), ("s", 1)] {
        if secs >= size {
            out.push_str(&format!("{}{unit}", secs / size));
            secs %= size;
        }
    }
    out
}

/// Parses a Kubernetes quantity into bytes, rounding fractions up as Kubernetes does for storage.
/// Accepts binary (`Ki`…`Ei`), decimal (`k`, `M`…`E`, `m`) suffixes and exponents (`1e9`).
pub fn parse_quantity_bytes(input: &str) -> Result<u64, UnitError> {
    let bad = || UnitError::BadQuantity(input.to_string());
    let s = input.trim();
    if s.is_empty() || s.len() > 64 {
        return Err(bad());
    }
    let s = s.strip_prefix('+').unwrap_or(s);
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (number, suffix) = s.split_at(split);
    let (num, den) = parse_decimal(number).ok_or_else(bad)?;
    // (multiplier numerator, multiplier denominator)
    let (mul, div): (u128, u128) = match suffix {
        "" => (1, 1),
        "Ki" => (1 << 10, 1),
        "Mi" => (1 << 20, 1),
        "Gi" => (1 << 30, 1),
        "Ti" => (1 << 40, 1),
        "Pi" => (1 << 50, 1),
        "Ei" => (1 << 60, 1),
        "m" => (1, 1000),
        "k" => (1_000, 1),
        "M" => (1_000_000, 1),
        "G" => (1_000_000_000, 1),
        "T" => (1_000_000_000_000, 1),
        "P" => (1_000_000_000_000_000, 1),
        "E" => (1_000_000_000_000_000_000, 1),
        other => {
            let exp = other
                .strip_prefix('e')
                .or_else(|| other.strip_prefix('E'))
                .and_then(|e| e.parse::<u32>().ok())
                .filter(|e| *e <= 18)
                .ok_or_else(bad)?;
            (10u128.pow(exp), 1)
        }
    };
    let out_of_range = || UnitError::OutOfRange(input.to_string());
    let numerator = num.checked_mul(mul).ok_or_else(out_of_range)?;
    let denominator = den.checked_mul(div).ok_or_else(out_of_range)?;
    let bytes = numerator.div_ceil(denominator);
    u64::try_from(bytes).map_err(|_| out_of_range())
}

/// `"12.50"` → (1250, 100). At most one dot, at least one digit, at most 30 digits.
fn parse_decimal(number: &str) -> Option<(u128, u128)> {
    let (int, frac) = match number.split_once('.') {
        Some((i, f)) => (i, f),
        None => (number, ""),
    };
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    if int.len() + frac.len() > 30 || frac.contains('.') {
        return None;
    }
    if !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let digits = format!("{int}{frac}");
    let num: u128 = digits.parse().ok()?;
    let den = 10u128.checked_pow(u32::try_from(frac.len()).ok()?)?;
    Some((num, den))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86400)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        for bad in ["", "60", "s", "1x", "-1s", "1.2.3s", "1 s", "ms"] {
            assert!(parse_duration(bad).is_err(), "{bad} should not parse");
        }
    }

    #[test]
    fn duration_round_trip_text() {
        assert_eq!(format_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(format_duration(Duration::from_secs(86400 + 7200)), "1d2h");
    }

    #[test]
    fn quantities() {
        assert_eq!(parse_quantity_bytes("1Gi"), Ok(1 << 30));
        assert_eq!(parse_quantity_bytes("1.5Gi"), Ok(3 << 29));
        assert_eq!(parse_quantity_bytes("500M"), Ok(500_000_000));
        assert_eq!(parse_quantity_bytes("1e3"), Ok(1000));
        assert_eq!(parse_quantity_bytes("1500m"), Ok(2));
        assert_eq!(parse_quantity_bytes("1024"), Ok(1024));
        for bad in ["", "Gi", "1GB", "-1Gi", "1..2Gi", "1 Gi", "16Ei"] {
            assert!(parse_quantity_bytes(bad).is_err(), "{bad} should not parse");
        }
    }

    proptest! {
        #[test]
        fn parsers_never_panic(s in "\\PC{0,40}") {
            let _ = parse_duration(&s);
            let _ = parse_quantity_bytes(&s);
        }

        #[test]
        fn formatted_durations_parse_back(ms in 0u64..10_000_000_000u64) {
            let d = Duration::from_millis(ms);
            let text = format_duration(d);
            if ms > 0 {
                prop_assert_eq!(parse_duration(&text), Ok(d));
            }
        }
    }
}
