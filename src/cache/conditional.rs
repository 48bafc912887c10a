//! Client preconditions answered from what is cached (RFC 9110 section 13):
//! `If-None-Match` first, and `If-Modified-Since` only when there is no
//! `If-None-Match` (section 13.2.2), both for GET and HEAD, which is all the
//! cache answers itself.

use std::time::SystemTime;

use axum::http::header::{self, HeaderMap};

/// Whether a 200 with `response` headers becomes a 304 for a client that sent
/// `request` headers.
pub fn not_modified(request: &HeaderMap, response: &HeaderMap) -> bool {
    if request.contains_key(header::IF_NONE_MATCH) {
        return etag_matches(request, response);
    }
    let since = date(request, header::IF_MODIFIED_SINCE);
    let modified = date(response, header::LAST_MODIFIED);
    matches!((since, modified), (Some(since), Some(modified)) if modified <= since)
}

/// Whether `If-None-Match` lists the response's ETag (weak comparison, RFC 9110
/// section 13.1.2) or is `*`.
fn etag_matches(request: &HeaderMap, response: &HeaderMap) -> bool {
    let Some(etag) = response.get(header::ETAG).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let weak = |tag: &str| tag.trim().trim_start_matches("W/").to_string();
    let etag = weak(etag);
    request
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|tag| tag.trim() == "*" || weak(tag) == etag)
}

/// An HTTP-date header; one that does not parse counts as absent (RFC 9110
/// section 13.1.3: an invalid date is ignored).
pub fn date(headers: &HeaderMap, name: header::HeaderName) -> Option<SystemTime> {
    httpdate::parse_http_date(headers.get(name)?.to_str().ok()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(header::HeaderName, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(n, v)| (n.clone(), HeaderValue::from_static(v)))
            .collect()
    }

    #[test]
    fn etag_comparison_is_weak() {
        let response = headers(&[(header::ETAG, "\"v1\"")]);
        let request = headers(&[(header::IF_NONE_MATCH, "\"v0\", W/\"v1\"")]);
        assert!(not_modified(&request, &response));
        let request = headers(&[(header::IF_NONE_MATCH, "\"v2\"")]);
        assert!(!not_modified(&request, &response));
    }

    #[test]
    fn if_modified_since_unless_if_none_match() {
        let response = headers(&[
            (header::ETAG, "\"v1\""),
            (header::LAST_MODIFIED, "Sun, 06 Nov 1994 08:49:37 GMT"),
        ]);
        let same = headers(&[(header::IF_MODIFIED_SINCE, "Sun, 06 Nov 1994 08:49:37 GMT")]);
        assert!(not_modified(&same, &response));
        let earlier = headers(&[(header::IF_MODIFIED_SINCE, "Sat, 05 Nov 1994 08:49:37 GMT")]);
        assert!(!not_modified(&earlier, &response));
        let garbage = headers(&[(header::IF_MODIFIED_SINCE, "yesterday")]);
        assert!(!not_modified(&garbage, &response));
        // A failing If-None-Match wins over a matching If-Modified-Since.
        let both = headers(&[
            (header::IF_NONE_MATCH, "\"v0\""),
            (header::IF_MODIFIED_SINCE, "Sun, 06 Nov 1994 08:49:37 GMT"),
        ]);
        assert!(!not_modified(&both, &response));
    }
}
