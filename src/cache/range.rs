//! `Range` answered from a whole cached object (RFC 9110 section 14): one byte
//! range gets a 206 with `Content-Range`; a range past the end gets 416 with
//! `Content-Range: bytes */LENGTH`; several ranges get the whole object as a 200
//! (allowed by section 14.2, and simpler for clients than multipart); a syntax
//! error or an `If-Range` that does not match means the whole object too.
//! Fills never forward `Range`: the origin always sends the whole object.

use std::ops::Range;

use axum::http::header::{self, HeaderMap};

use super::conditional;

/// What to send for a request's `Range`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// The whole object (no usable `Range`).
    Whole,
    /// These bytes, as a 206.
    Part(Range<usize>),
    /// 416: no byte of the range exists.
    Unsatisfiable,
}

/// The selection for an object of `len` bytes with `response` headers.
pub fn select(request: &HeaderMap, response: &HeaderMap, len: usize) -> Selection {
    let Some(spec) = request.get(header::RANGE).and_then(|v| v.to_str().ok()) else {
        return Selection::Whole;
    };
    if !if_range_holds(request, response) {
        return Selection::Whole;
    }
    let Some(ranges) = spec.trim().strip_prefix("bytes=") else {
        return Selection::Whole;
    };
    let mut ranges = ranges.split(',').map(str::trim).filter(|r| !r.is_empty());
    let (Some(range), None) = (ranges.next(), ranges.next()) else {
        return Selection::Whole;
    };
    let Some((first, last)) = range.split_once('-') else {
        return Selection::Whole;
    };
    let number = |s: &str| {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse::<u64>().ok())
    };
    let len64 = len as u64;
    let (start, end) = match (number(first), number(last)) {
        // `-n`: the last n bytes.
        (None, Some(Some(suffix))) if first.is_empty() => {
            if suffix == 0 {
                return Selection::Unsatisfiable;
            }
            (len64.saturating_sub(suffix), len64)
        }
        // `a-`: from a to the end.
        (Some(Some(start)), None) if last.is_empty() => (start, len64),
        // `a-b`, inclusive.
        (Some(Some(start)), Some(Some(end))) if start <= end => {
            (start, end.saturating_add(1).min(len64))
        }
        // Oversized numbers are past any end there is.
        (Some(None), _) => return Selection::Unsatisfiable,
        _ => return Selection::Whole,
    };
    if start >= len64 {
        return Selection::Unsatisfiable;
    }
    Selection::Part(start as usize..end as usize)
}

/// `If-Range` (RFC 9110 section 13.1.5): the range applies only when the
/// validator names this representation: a strong ETag compared strongly, or a
/// date equal to `Last-Modified`.
fn if_range_holds(request: &HeaderMap, response: &HeaderMap) -> bool {
    let Some(value) = request.get(header::IF_RANGE).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let value = value.trim();
    if value.starts_with('"') || value.starts_with("W/") {
        let etag = response.get(header::ETAG).and_then(|v| v.to_str().ok());
        return !value.starts_with("W/") && etag.is_some_and(|e| e.trim() == value);
    }
    let asked = conditional::date(request, header::IF_RANGE);
    let modified = conditional::date(response, header::LAST_MODIFIED);
    asked.is_some() && asked == modified
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn select_for(range: &str, len: usize) -> Selection {
        let mut request = HeaderMap::new();
        request.insert(header::RANGE, HeaderValue::from_str(range).expect("header"));
        select(&request, &HeaderMap::new(), len)
    }

    #[test]
    fn byte_ranges() {
        assert_eq!(select_for("bytes=0-9", 100), Selection::Part(0..10));
        assert_eq!(select_for("bytes=90-200", 100), Selection::Part(90..100));
        assert_eq!(select_for("bytes=95-", 100), Selection::Part(95..100));
        assert_eq!(select_for("bytes=-5", 100), Selection::Part(95..100));
        assert_eq!(select_for("bytes=-500", 100), Selection::Part(0..100));
        assert_eq!(select_for("bytes=100-", 100), Selection::Unsatisfiable);
        assert_eq!(select_for("bytes=-0", 100), Selection::Unsatisfiable);
        assert_eq!(
            select_for("bytes=99999999999999999999999-", 100),
            Selection::Unsatisfiable
        );
        for whole in [
            "bytes=5-1",
            "bytes=0-1,5-6",
            "items=0-1",
            "bytes=a-b",
            "bytes=-",
        ] {
            assert_eq!(select_for(whole, 100), Selection::Whole, "{whole}");
        }
    }

    #[test]
    fn if_range_needs_a_strong_match() {
        let mut response = HeaderMap::new();
        response.insert(header::ETAG, HeaderValue::from_static("\"v1\""));
        response.insert(
            header::LAST_MODIFIED,
            HeaderValue::from_static("Sun, 06 Nov 1994 08:49:37 GMT"),
        );
        let check = |if_range: &'static str| {
            let mut request = HeaderMap::new();
            request.insert(header::RANGE, HeaderValue::from_static("bytes=0-0"));
            request.insert(header::IF_RANGE, HeaderValue::from_static(if_range));
            select(&request, &response, 10)
        };
        assert_eq!(check("\"v1\""), Selection::Part(0..1));
        assert_eq!(check("\"v2\""), Selection::Whole);
        assert_eq!(check("W/\"v1\""), Selection::Whole);
        assert_eq!(
            check("Sun, 06 Nov 1994 08:49:37 GMT"),
            Selection::Part(0..1)
        );
        assert_eq!(check("Sat, 05 Nov 1994 08:49:37 GMT"), Selection::Whole);
    }
}
