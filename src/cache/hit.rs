//! Fresh hits answered from headers made ready when the entry was stored.
//!
//! Asking the stored policy again on every hit (`CachePolicy::before_request`)
//! parses the request's `Cache-Control` into a map, looks headers up by name
//! strings, works out the response's freshness and copies its headers without the
//! hop-by-hop ones: measured under load, about a quarter of a node's user CPU
//! per hit. For a request with no `Cache-Control` or `Pragma` of its
//! own and a stored response without `Vary`, what the policy answers depends on
//! the time alone: fresh until [`Entry::stale_at`], with the same headers, an
//! `Age` that grows with the clock, and `Date` now. [`Ready`] keeps those headers
//! and the age at storing; anything else asks the policy, as before.
//!
//! [`before_request`] is the one way the proxy asks the policy, so both ways give
//! the same headers, `Date` included: the policy writes it as RFC 2822
//! (`+0000`), which is not an HTTP date, and it is rewritten here in the form
//! RFC 9110 requires (`GMT`).

use std::cell::RefCell;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::{Method, StatusCode, request, response};
use http_cache_semantics::{BeforeRequest, CachePolicy};

use super::store::Entry;

/// Past this age the policy may add a `113` warning to a heuristically fresh
/// response (RFC 7234 section 5.5.4); such hits are left to it.
const WARNING_AGE: Duration = Duration::from_secs(24 * 3600);

/// What the policy answers for a plain request, made ready at storing.
#[derive(Debug, Clone)]
pub struct Ready {
    status: StatusCode,
    /// The policy's headers without `Age` and `Date`, which change with the clock.
    headers: HeaderMap,
    /// The response's age when these were made, at `at`.
    age: Duration,
    at: SystemTime,
}

impl Ready {
    /// The headers `policy` serves to a plain GET of `uri` at `now`, if it serves
    /// one fresh and the answer does not depend on request headers (no `Vary`).
    pub fn of(policy: &CachePolicy, lookup: &request::Parts, now: SystemTime) -> Option<Self> {
        let mut plain = request::Request::new(()).into_parts().0;
        plain.method = Method::GET;
        plain.uri = lookup.uri.clone();
        if let Some(host) = lookup.headers.get(header::HOST) {
            plain.headers.insert(header::HOST, host.clone());
        }
        let BeforeRequest::Fresh(mut parts) = policy.before_request(&plain, now) else {
            return None;
        };
        if parts.headers.contains_key(header::VARY) || parts.headers.contains_key(header::WARNING) {
            return None;
        }
        parts.headers.remove(header::AGE);
        parts.headers.remove(header::DATE);
        Some(Self {
            status: parts.status,
            headers: parts.headers,
            age: policy.age(now),
            at: now,
        })
    }
}

/// The headers of a fresh hit on `entry` for a request with `request_headers`
/// at `now`, if it can be answered without asking the policy; None means ask it.
pub fn fresh(
    entry: &Entry,
    request_headers: &HeaderMap,
    now: SystemTime,
) -> Option<response::Parts> {
    let ready = entry.ready.as_ref()?;
    if request_headers.contains_key(header::CACHE_CONTROL)
        || request_headers.contains_key(header::PRAGMA)
        || now >= entry.stale_at
    {
        return None;
    }
    let age = ready.age + now.duration_since(ready.at).ok()?;
    if age > WARNING_AGE {
        return None;
    }
    let mut parts = response::Response::new(()).into_parts().0;
    parts.status = ready.status;
    parts.headers = ready.headers.clone();
    parts
        .headers
        .insert(header::AGE, HeaderValue::from(age.as_secs()));
    parts.headers.insert(header::DATE, http_date(now));
    Some(parts)
}

/// The policy's answer for `lookup` at `now`, its `Date` an HTTP date.
pub fn before_request(
    policy: &CachePolicy,
    lookup: &request::Parts,
    now: SystemTime,
) -> BeforeRequest {
    match policy.before_request(lookup, now) {
        BeforeRequest::Fresh(mut parts) => {
            parts.headers.insert(header::DATE, http_date(now));
            BeforeRequest::Fresh(parts)
        }
        stale => stale,
    }
}

/// `now` as an HTTP date, formatted once per second per thread.
fn http_date(now: SystemTime) -> HeaderValue {
    thread_local! {
        static LAST: RefCell<(u64, HeaderValue)> =
            const { RefCell::new((u64::MAX, HeaderValue::from_static(""))) };
    }
    let second = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    LAST.with(|last| {
        let mut last = last.borrow_mut();
        if last.0 != second {
            let text = httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(second));
            // An HTTP date is ASCII: always a valid header value.
            if let Ok(value) = HeaderValue::from_str(&text) {
                *last = (second, value);
            }
        }
        last.1.clone()
    })
}

#[cfg(test)]
mod tests {
    use axum::body::Bytes;
    use axum::http::Response;

    use super::*;
    use crate::cache::stale::StaleWindows;

    fn lookup() -> request::Parts {
        let mut parts = request::Request::new(()).into_parts().0;
        parts.uri = "/object".parse().expect("uri");
        parts
            .headers
            .insert(header::HOST, HeaderValue::from_static("www.example.com"));
        parts
    }

    /// An entry stored at `stored` from a response with `headers`.
    fn entry(headers: &[(&str, &str)], stored: SystemTime) -> Entry {
        let mut response = Response::builder().status(StatusCode::OK);
        for (name, value) in headers {
            response = response.header(*name, *value);
        }
        let response = response.body(()).expect("response");
        let lookup = lookup();
        let policy = CachePolicy::new_options(
            &lookup,
            &response,
            stored,
            http_cache_semantics::CacheOptions::default(),
        );
        Entry {
            stale_at: stored + policy.time_to_live(stored),
            ready: Ready::of(&policy, &lookup, stored),
            policy,
            body: Bytes::from_static(b"body"),
            header_bytes: 0,
            windows: StaleWindows::default(),
            last_modified: None,
        }
    }

    /// Whenever the ready headers answer, they are exactly the policy's; and they
    /// answer for every fresh moment of a plain request.
    #[test]
    fn ready_headers_are_the_policys() {
        let stored = UNIX_EPOCH + Duration::from_secs(1_800_000_000) + Duration::from_millis(400);
        let kinds: [&[(&str, &str)]; 4] = [
            &[("cache-control", "public, max-age=60"), ("etag", "\"v1\"")],
            &[
                ("cache-control", "max-age=60"),
                ("age", "20"),
                ("connection", "x-hop"),
                ("x-hop", "1"),
            ],
            &[("cache-control", "s-maxage=5, max-age=1")],
            &[
                ("cache-control", "max-age=10"),
                ("x-origin", "a"),
                ("x-origin", "b"),
            ],
        ];
        for headers in kinds {
            let entry = entry(headers, stored);
            assert!(entry.ready.is_some(), "{headers:?}");
            let mut answered = 0;
            for millis in (0..70_000).step_by(700) {
                let now = stored + Duration::from_millis(millis);
                let ready = fresh(&entry, &HeaderMap::new(), now);
                match before_request(&entry.policy, &lookup(), now) {
                    BeforeRequest::Fresh(policy) => {
                        let ready =
                            ready.unwrap_or_else(|| panic!("{headers:?} fresh at +{millis} ms"));
                        assert_eq!(ready.status, policy.status);
                        assert_eq!(ready.headers, policy.headers, "{headers:?} at +{millis} ms");
                        answered += 1;
                    }
                    BeforeRequest::Stale { .. } => {
                        assert!(ready.is_none(), "{headers:?} stale at +{millis} ms");
                    }
                }
            }
            assert!(answered > 0, "{headers:?}");
        }
    }

    /// A request with directives of its own, and a response that varies, are left
    /// to the policy.
    #[test]
    fn directives_and_vary_go_to_the_policy() {
        let stored = SystemTime::now();
        let plain = entry(&[("cache-control", "max-age=60")], stored);
        for (name, value) in [("cache-control", "max-age=0"), ("pragma", "no-cache")] {
            let mut request = HeaderMap::new();
            request.insert(name, HeaderValue::from_static(value));
            assert!(fresh(&plain, &request, stored).is_none(), "{name}");
        }
        let varies = entry(
            &[("cache-control", "max-age=60"), ("vary", "accept-encoding")],
            stored,
        );
        assert!(varies.ready.is_none());
        let uncacheable = entry(&[("cache-control", "no-cache")], stored);
        assert!(uncacheable.ready.is_none());
    }

    #[test]
    fn dates_are_http_dates() {
        let date = http_date(UNIX_EPOCH + Duration::from_secs(784_111_777));
        assert_eq!(date, "Sun, 06 Nov 1994 08:49:37 GMT");
    }
}
