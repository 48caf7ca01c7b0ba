//! Human units in the config: durations (`"10s"`, `"500ms"`, `"5m"`) and byte sizes (`65536`,
//! `"64KiB"`, `"1MiB"`).

use std::time::Duration;

/// Parses a duration such as `"250ms"`, `"10s"`, `"5m"` or `"1h"`. A bare number is refused:
/// a unit is required so that `timeout = 10` can never silently mean milliseconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("`{text}` has no unit: write e.g. \"10s\", \"500ms\", \"5m\""))?;
    let (number, unit) = text.split_at(split);
    let value: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` does not start with a whole number"))?;
    let per_unit = match unit.trim() {
        "ms" => Duration::from_millis(1),
        "s" => Duration::from_secs(1),
        "m" | "min" => Duration::from_secs(60),
        "h" => Duration::from_secs(3600),
        other => {
            return Err(format!(
                "unknown duration unit `{other}` (use ms, s, m or h)"
            ))
        }
    };
    per_unit
        .checked_mul(u32::try_from(value).map_err(|_| format!("`{text}` is too large"))?)
        .ok_or_else(|| format!("`{text}` is too large"))
}

/// Parses a byte size: a plain integer, or a number with a binary unit (`B`, `KiB`, `MiB`,
/// `GiB`). Decimal units (`KB`) are refused because they are ambiguous.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` does not start with a whole number"))?;
    let multiplier: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        other => {
            return Err(format!(
                "unknown size unit `{other}` (use B, KiB, MiB or GiB)"
            ))
        }
    };
    value
        .checked_mul(multiplier)
        .ok_or_else(|| format!("`{text}` is too large"))
}

/// A byte size as written: an integer (bytes) or a string with a unit ([`parse_size`]).
pub fn size_value(value: &super::raw::Size) -> Result<u64, String> {
    match value {
        super::raw::Size::Bytes(n) => Ok(*n),
        super::raw::Size::Text(text) => parse_size(text),
    }
}

/// A size the way the documents and the config write it: `4KiB`, `16MiB`, `1GiB`, or bytes.
pub fn format_size(bytes: u64) -> String {
    match bytes {
        n if n >= 1 << 30 && n % (1 << 30) == 0 => format!("{}GiB", n >> 30),
        n if n >= 1 << 20 && n % (1 << 20) == 0 => format!("{}MiB", n >> 20),
        n if n >= 1 << 10 && n % (1 << 10) == 0 => format!("{}KiB", n >> 10),
        n => n.to_string(),
    }
}

/// `size` as the capacity of a ring: a power of two from the smallest ring this machine can
/// make (a page, and at least 4 KiB: FORMAT.md section 1) to `max`.
pub fn ring_capacity(size: u64, page_size: usize, max: u64) -> Result<usize, String> {
    let min = edgegw_ring::MIN_CAPACITY.max(page_size) as u64;
    if !size.is_power_of_two() || !(min..=max).contains(&size) {
        let page = if min > edgegw_ring::MIN_CAPACITY as u64 {
            " (this machine's page size)"
        } else {
            ""
        };
        return Err(format!(
            "capacity {size} must be a power of two between {}{page} and {}",
            format_size(min),
            format_size(max)
        ));
    }
    Ok(size as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_need_a_unit_and_accept_the_common_ones() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert!(parse_duration("10").unwrap_err().contains("no unit"));
        assert!(parse_duration("10 parsecs")
            .unwrap_err()
            .contains("parsecs"));
        assert!(parse_duration("s").is_err());
    }

    #[test]
    fn a_ring_capacity_is_a_power_of_two_of_at_least_a_page() {
        assert_eq!(ring_capacity(4096, 4096, 1 << 30), Ok(4096));
        assert_eq!(ring_capacity(1 << 30, 4096, 1 << 30), Ok(1 << 30));
        assert_eq!(
            ring_capacity(2048, 4096, 1 << 30).unwrap_err(),
            "capacity 2048 must be a power of two between 4KiB and 1GiB"
        );
        assert!(ring_capacity(5000, 4096, 1 << 30).is_err());
        assert!(ring_capacity(1 << 31, 4096, 1 << 30).is_err());
        // An aarch64 kernel with 16 KiB or 64 KiB pages makes no smaller ring: the config says
        // so, not the ring's creation after check-config passed.
        assert_eq!(
            ring_capacity(8192, 16384, 16 << 20).unwrap_err(),
            "capacity 8192 must be a power of two between 16KiB (this machine's page size) and \
             16MiB"
        );
        assert_eq!(ring_capacity(65536, 65536, 1 << 30), Ok(65536));
        assert!(ring_capacity(32768, 65536, 1 << 30).is_err());
    }

    #[test]
    fn sizes_accept_bytes_and_binary_units_only() {
        assert_eq!(parse_size("65536"), Ok(65536));
        assert_eq!(parse_size("64KiB"), Ok(65536));
        assert_eq!(parse_size("1 MiB"), Ok(1 << 20));
        assert!(parse_size("1MB").unwrap_err().contains("MB"));
        assert!(parse_size("99999999999GiB")
            .unwrap_err()
            .contains("too large"));
    }
}
