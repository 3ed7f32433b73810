//! The `Range` header of a GET, as the publish server reads it: untrusted bytes, so this
//! file depends on nothing but `core`, and the fuzz target includes it as is.

/// What a `Range` header asks of an item of `size` bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum Ranged {
    /// No usable single range: the whole item.
    Whole,
    /// Bytes `start..=last`.
    Part(u64, u64),
    /// A well-formed range that starts past the end.
    Unsatisfiable,
}

/// Reads a `Range` header value (untrusted: public for the fuzz target). A `Part` always
/// lies inside the item.
pub fn parse_range(value: &str, size: u64) -> Ranged {
    let Some(spec) = value
        .trim()
        .strip_prefix("bytes=")
        .or_else(|| value.trim().strip_prefix("Bytes="))
    else {
        return Ranged::Whole;
    };
    if spec.contains(',') {
        return Ranged::Whole;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return Ranged::Whole;
    };
    let num = |s: &str| -> Option<u64> {
        (!s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    match (a.is_empty(), num(a), num(b)) {
        // bytes=-N: the last N bytes.
        (true, _, Some(n)) => {
            if n == 0 || size == 0 {
                Ranged::Unsatisfiable
            } else {
                Ranged::Part(size.saturating_sub(n), size - 1)
            }
        }
        (false, Some(start), end) if b.is_empty() || end.is_some() => {
            if end.is_some_and(|e| e < start) {
                return Ranged::Whole;
            }
            if start >= size {
                return Ranged::Unsatisfiable;
            }
            Ranged::Part(start, end.map_or(size - 1, |e| e.min(size - 1)))
        }
        _ => Ranged::Whole,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        use Ranged::*;
        assert_eq!(parse_range("bytes=0-99", 1000), Part(0, 99));
        assert_eq!(parse_range("bytes=990-", 1000), Part(990, 999));
        assert_eq!(parse_range("bytes=990-5000", 1000), Part(990, 999));
        assert_eq!(parse_range("bytes=-10", 1000), Part(990, 999));
        assert_eq!(parse_range("bytes=-5000", 1000), Part(0, 999));
        assert_eq!(parse_range("bytes=1000-", 1000), Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 1000), Unsatisfiable);
        assert_eq!(parse_range("bytes=0-0", 0), Unsatisfiable);
        assert_eq!(parse_range("bytes=5-1", 1000), Whole);
        assert_eq!(parse_range("bytes=0-1,5-6", 1000), Whole);
        assert_eq!(parse_range("items=0-1", 1000), Whole);
        assert_eq!(parse_range("bytes=a-b", 1000), Whole);
        assert_eq!(parse_range("bytes=-", 1000), Whole);
        assert_eq!(parse_range("bytes=+1-2", 1000), Whole);
        assert_eq!(parse_range("bytes=99999999999999999999999-", 1000), Whole);
    }
}
