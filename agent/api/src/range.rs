//! HTTP range and conditional-request rules (RFC 9110 §13–14) for immutable
//! blobs, kept pure so every edge case is unit-tested without a server.
//!
//! Deliberate choices:
//! - Only one range per request is served as 206. A multi-range request is
//!   answered 200 with the whole body, which RFC 9110 §14.2 allows (a server
//!   may ignore `Range`) and spares us `multipart/byteranges`.
//! - A syntactically invalid `Range`, an unknown unit or `first > last` is
//!   ignored (200 whole body), also per §14.2; only a well-formed range that
//!   does not overlap the blob is 416.

use metanode_core::limits::API_HEADER_LIST_ITEMS_COUNT_MAX;

/// What to send for a request's `Range` header against a blob of known size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeDecision {
    /// 200 with the whole blob.
    Full,
    /// 206 with bytes `start..=end_inclusive`.
    Partial { start: u64, end_inclusive: u64 },
    /// 416 with `Content-Range: bytes */size`.
    Unsatisfiable,
}

impl RangeDecision {
    /// Start offset and length of the body this decision sends.
    pub fn span(self, size: u64) -> (u64, u64) {
        match self {
            RangeDecision::Full => (0, size),
            RangeDecision::Partial {
                start,
                end_inclusive,
            } => (start, end_inclusive - start + 1),
            RangeDecision::Unsatisfiable => (0, 0),
        }
    }
}

/// One parsed byte-range spec, before it is checked against the blob size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Spec {
    /// `first-last` (`last` is `None` for `first-`).
    From { first: u64, last: Option<u64> },
    /// `-n`: the final `n` bytes.
    Suffix { len: u64 },
}

/// Decide how to answer `Range: value` for a blob of `size` bytes.
pub fn decide(value: Option<&str>, size: u64) -> RangeDecision {
    let Some(value) = value else {
        return RangeDecision::Full;
    };
    let Some(spec) = parse_single(value) else {
        return RangeDecision::Full;
    };
    // A zero-length representation has no satisfiable byte range at all.
    if size == 0 {
        return RangeDecision::Unsatisfiable;
    }
    match spec {
        Spec::From { first, last } => {
            if first >= size {
                return RangeDecision::Unsatisfiable;
            }
            let end_inclusive = last.map_or(size - 1, |last| last.min(size - 1));
            RangeDecision::Partial {
                start: first,
                end_inclusive,
            }
        }
        Spec::Suffix { len } => {
            if len == 0 {
                return RangeDecision::Unsatisfiable;
            }
            RangeDecision::Partial {
                start: size.saturating_sub(len),
                end_inclusive: size - 1,
            }
        }
    }
}

/// Parse `bytes=<one spec>`; `None` means "ignore the header" (invalid
/// syntax, another unit, or more than one range).
fn parse_single(value: &str) -> Option<Spec> {
    let (unit, set) = value.trim().split_once('=')?;
    if !unit.trim().eq_ignore_ascii_case("bytes") {
        return None;
    }
    // RFC 9110 list syntax allows empty elements (`bytes=, 0-1`).
    let mut specs = set.split(',').map(str::trim).filter(|s| !s.is_empty());
    let spec = specs.next()?;
    if specs.next().is_some() {
        return None;
    }
    let (first, last) = spec.split_once('-')?;
    let (first, last) = (first.trim(), last.trim());
    if first.is_empty() {
        // Suffix larger than u64 means "everything", like any suffix >= size.
        return Some(Spec::Suffix {
            len: parse_digits(last)?.unwrap_or(u64::MAX),
        });
    }
    // A first position beyond u64 is beyond any blob: unsatisfiable.
    let first = parse_digits(first)?.unwrap_or(u64::MAX);
    let last = if last.is_empty() {
        None
    } else {
        Some(parse_digits(last)?.unwrap_or(u64::MAX))
    };
    if let Some(last) = last
        && last < first
    {
        return None;
    }
    Some(Spec::From { first, last })
}

/// `Some(Some(n))` for a decimal number, `Some(None)` for digits that
/// overflow u64, `None` for anything that is not all ASCII digits.
fn parse_digits(s: &str) -> Option<Option<u64>> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(s.parse::<u64>().ok())
}

/// True when an `If-None-Match` value matches `etag` under the weak
/// comparison RFC 9110 §13.1.2 prescribes for this header.
pub fn if_none_match(value: &str, etag: &str) -> bool {
    let ours = opaque(etag);
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .take(API_HEADER_LIST_ITEMS_COUNT_MAX)
        .any(|tag| tag == "*" || opaque(tag) == ours)
}

/// True when an `If-Range` value allows serving the range: it must be our
/// ETag under strong comparison. A date (we send no `Last-Modified`) or a
/// weak tag never matches, which means "send the whole blob".
pub fn if_range_allows(value: &str, etag: &str) -> bool {
    let value = value.trim();
    !value.starts_with("W/") && value == etag
}

fn opaque(tag: &str) -> &str {
    tag.strip_prefix("W/").unwrap_or(tag)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partial(start: u64, end_inclusive: u64) -> RangeDecision {
        RangeDecision::Partial {
            start,
            end_inclusive,
        }
    }

    #[test]
    fn single_ranges_resolve_to_exact_spans() {
        assert_eq!(decide(Some("bytes=0-0"), 10), partial(0, 0));
        assert_eq!(decide(Some("bytes=2-5"), 10), partial(2, 5));
        assert_eq!(decide(Some("bytes=9-9"), 10), partial(9, 9));
        assert_eq!(decide(Some("bytes=4-"), 10), partial(4, 9));
        assert_eq!(decide(Some("bytes=-3"), 10), partial(7, 9));
        assert_eq!(decide(Some("bytes=-1"), 10), partial(9, 9));
        // Last position past the end is clamped (RFC 9110 §14.1.2).
        assert_eq!(decide(Some("bytes=5-999"), 10), partial(5, 9));
        // A suffix longer than the blob selects all of it.
        assert_eq!(decide(Some("bytes=-50"), 10), partial(0, 9));
        assert_eq!(partial(2, 5).span(10), (2, 4));
        assert_eq!(RangeDecision::Full.span(10), (0, 10));
    }

    #[test]
    fn unit_and_whitespace_are_lenient() {
        assert_eq!(decide(Some("Bytes=1-2"), 10), partial(1, 2));
        assert_eq!(decide(Some(" bytes = 1 - 2 "), 10), partial(1, 2));
        assert_eq!(decide(Some("bytes=, 1-2,"), 10), partial(1, 2));
    }

    #[test]
    fn unsatisfiable_ranges() {
        assert_eq!(decide(Some("bytes=10-"), 10), RangeDecision::Unsatisfiable);
        assert_eq!(
            decide(Some("bytes=10-20"), 10),
            RangeDecision::Unsatisfiable
        );
        assert_eq!(decide(Some("bytes=-0"), 10), RangeDecision::Unsatisfiable);
        assert_eq!(decide(Some("bytes=0-0"), 0), RangeDecision::Unsatisfiable);
        assert_eq!(decide(Some("bytes=-5"), 0), RangeDecision::Unsatisfiable);
        assert_eq!(
            decide(Some("bytes=99999999999999999999999-"), 10),
            RangeDecision::Unsatisfiable
        );
    }

    #[test]
    fn invalid_or_multi_ranges_are_ignored() {
        for v in [
            "",
            "bytes",
            "bytes=",
            "bytes=abc",
            "bytes=5-2",
            "bytes=1-2-3",
            "bytes=--1",
            "bytes=+1-2",
            "items=0-1",
            "bytes=0-1,3-4",
            "bytes=0x1-2",
        ] {
            assert_eq!(decide(Some(v), 10), RangeDecision::Full, "{v:?}");
        }
        assert_eq!(decide(None, 10), RangeDecision::Full);
        // A huge last position is clamped rather than rejected.
        assert_eq!(
            decide(Some("bytes=3-99999999999999999999999"), 10),
            partial(3, 9)
        );
        assert_eq!(
            decide(Some("bytes=-99999999999999999999999"), 10),
            partial(0, 9)
        );
    }

    #[test]
    fn etag_matching() {
        let etag = "\"bafkr4iabc.raw\"";
        assert!(if_none_match(etag, etag));
        assert!(if_none_match("W/\"bafkr4iabc.raw\"", etag));
        assert!(if_none_match("\"x\", \"bafkr4iabc.raw\"", etag));
        assert!(if_none_match("*", etag));
        assert!(!if_none_match("\"bafkr4iabc\"", etag));
        assert!(!if_none_match("", etag));
        assert!(if_range_allows(etag, etag));
        assert!(!if_range_allows("W/\"bafkr4iabc.raw\"", etag));
        assert!(!if_range_allows("Tue, 15 Nov 1994 08:12:31 GMT", etag));
    }

    #[test]
    fn if_none_match_looks_at_a_bounded_number_of_tags() {
        let etag = "\"t\"";
        let mut value = vec!["\"other\""; API_HEADER_LIST_ITEMS_COUNT_MAX];
        value.push(etag);
        assert!(!if_none_match(&value.join(","), etag));
    }
}
