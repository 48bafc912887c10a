//! Serving stale (RFC 5861): `stale-while-revalidate` answers from a stale entry
//! at once while one background request refreshes it; `stale-if-error` answers
//! from it when every origin fails. The windows come from the origin's
//! `Cache-Control`, else from the domain's config defaults.
//! `http-cache-semantics` does not implement these extensions, so the windows are
//! kept beside its policy.

use std::time::{Duration, SystemTime};

use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::{request, response};
use http_cache_semantics::BeforeRequest;

use super::config::CacheRules;
use super::proxy::clone_request;
use super::store::Entry;

/// How long past its freshness an entry may still be served.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StaleWindows {
    /// Served while one background request refreshes it.
    pub revalidate: Duration,
    /// Served when the origins fail.
    pub if_error: Duration,
}

/// Which window a stale answer would rely on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    Revalidate,
    IfError,
}

impl StaleWindows {
    /// The windows a response allows: its own directives, else the domain's
    /// defaults. `must-revalidate`, `proxy-revalidate`, `no-cache` and
    /// `s-maxage` (which implies `proxy-revalidate` for shared caches, RFC 9111
    /// section 5.2.2.10) forbid serving stale at all.
    pub fn of(headers: &HeaderMap, rules: &CacheRules) -> Self {
        let mut windows = Self {
            revalidate: Duration::from_secs(rules.stale_while_revalidate),
            if_error: Duration::from_secs(rules.stale_if_error),
        };
        for directive in headers
            .get_all(header::CACHE_CONTROL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
        {
            let (name, value) = match directive.split_once('=') {
                Some((n, v)) => (n.trim(), Some(v.trim().trim_matches('"'))),
                None => (directive.trim(), None),
            };
            let seconds = || value.and_then(|v| v.parse().ok()).map(Duration::from_secs);
            match name.to_ascii_lowercase().as_str() {
                "stale-while-revalidate" => {
                    windows.revalidate = seconds().unwrap_or(windows.revalidate);
                }
                "stale-if-error" => windows.if_error = seconds().unwrap_or(windows.if_error),
                "must-revalidate" | "proxy-revalidate" | "no-cache" | "s-maxage" => {
                    return Self::default();
                }
                _ => {}
            }
        }
        windows
    }
}

/// The headers to serve `entry` with as a stale answer for `lookup`, when the
/// window allows it now and the entry is the variant `lookup` asks for.
pub fn servable(
    entry: &Entry,
    lookup: &request::Parts,
    window: Window,
    now: SystemTime,
) -> Option<response::Parts> {
    let allowed = match window {
        Window::Revalidate => entry.windows.revalidate,
        Window::IfError => entry.windows.if_error,
    };
    let staleness = now.duration_since(entry.stale_at).unwrap_or_default();
    // A client that asks for `no-cache` wants the origin's word, stale or not.
    let refused = lookup
        .headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .chain(lookup.headers.get_all(header::PRAGMA))
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.to_ascii_lowercase().contains("no-cache"));
    if refused || allowed.is_zero() || staleness > allowed {
        return None;
    }
    // Asked as a client that accepts any staleness, the policy still checks the
    // variant (`Vary`) and gives the headers with a correct `Age`.
    let mut accepting = clone_request(lookup);
    accepting
        .headers
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("max-stale"));
    match super::hit::before_request(&entry.policy, &accepting, now) {
        BeforeRequest::Fresh(parts) => Some(parts),
        BeforeRequest::Stale { .. } => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn windows(cache_control: &str, rules: &CacheRules) -> StaleWindows {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_str(cache_control).expect("header"),
        );
        StaleWindows::of(&headers, rules)
    }

    #[test]
    fn origin_directives_override_the_defaults() {
        let rules = CacheRules {
            stale_while_revalidate: 5,
            stale_if_error: 50,
            ..CacheRules::default()
        };
        let both = windows(
            "max-age=1, stale-while-revalidate=30, stale-if-error=600",
            &rules,
        );
        assert_eq!(both.revalidate, Duration::from_secs(30));
        assert_eq!(both.if_error, Duration::from_secs(600));
        let defaults = windows("max-age=1", &rules);
        assert_eq!(defaults.revalidate, Duration::from_secs(5));
        assert_eq!(defaults.if_error, Duration::from_secs(50));
        for forbidding in ["max-age=1, must-revalidate", "s-maxage=1, stale-if-error=9"] {
            assert_eq!(windows(forbidding, &rules), StaleWindows::default());
        }
    }
}
