//! The reverse proxy: Host check, cache lookup, coalesced origin fetch with
//! failover, and the response with its `X-Cache`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::{Method, StatusCode, Uri, request, response};
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, Full, Limited};
use http_cache_semantics::{AfterResponse, BeforeRequest, CacheOptions, CachePolicy};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::sync::OnceCell;

use super::config::{CacheConfig, CacheDomain};
use super::purge::{self, Purges};
use super::store::{Entry, Store};

/// The header that says how a response was served.
pub const X_CACHE: &str = "x-cache";
/// How long one origin may take to connect.
const ORIGIN_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long one origin may take to answer in full before the next is tried.
const ORIGIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest request body passed through to an origin.
const MAX_REQUEST_BODY: usize = 16 * 1024 * 1024;

/// Headers meaningful only for one connection (RFC 9110 section 7.6.1), never
/// forwarded.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];
/// Client preconditions and ranges: answered here from what is cached, never sent
/// on a fill, which must bring the whole object.
const CLIENT_CONDITIONALS: [HeaderName; 5] = [
    header::IF_NONE_MATCH,
    header::IF_MODIFIED_SINCE,
    header::IF_MATCH,
    header::IF_UNMODIFIED_SINCE,
    header::IF_RANGE,
];

/// How a response was served, as `X-Cache` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    /// From the cache, no origin contact.
    Hit,
    /// From the origin.
    Miss,
    /// A stale entry confirmed by the origin (304) and served from the cache.
    Revalidated,
    /// Not a cacheable request: passed through.
    Bypass,
}

impl CacheStatus {
    fn header(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            Self::Hit => "HIT",
            Self::Miss => "MISS",
            Self::Revalidated => "REVALIDATED",
            Self::Bypass => "BYPASS",
        })
    }
}

/// Why no origin gave an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OriginError {
    /// No origin could be reached or answered in time.
    Unreachable,
    /// An answer's body was over the limit.
    TooLarge,
}

impl OriginError {
    fn response(self) -> Response {
        let (status, text) = match self {
            Self::Unreachable => (StatusCode::BAD_GATEWAY, "no origin answered\n"),
            Self::TooLarge => (StatusCode::BAD_GATEWAY, "origin response too large\n"),
        };
        (status, [(X_CACHE, CacheStatus::Miss.header())], text).into_response()
    }
}

/// An origin's full answer.
#[derive(Debug)]
struct Fetched {
    parts: response::Parts,
    body: Bytes,
}

/// What one coalesced fill produced: the entry (stored or not) and how.
#[derive(Debug)]
struct Fill {
    entry: Arc<Entry>,
    /// In the store: waiting requests may be served it.
    stored: bool,
    status: CacheStatus,
    /// The headers to serve when the policy will not serve the entry fresh.
    parts: response::Parts,
}

/// One fill in progress for a key; requests for the key wait on it.
type Flight = Arc<OnceCell<Result<Arc<Fill>, OriginError>>>;

/// Shared state of the proxy.
pub struct Node {
    pub config: CacheConfig,
    client: Client<HttpConnector, Full<Bytes>>,
    pub(super) store: Store,
    /// Prefix purges in progress: entries they cover count as absent.
    pub(super) purges: Purges,
    flights: Mutex<HashMap<String, Flight>>,
    /// Requests being served now.
    pub in_flight: AtomicU64,
    /// Most requests in flight at once since the last health report.
    pub peak_in_flight: AtomicU64,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("pop", &self.config.pop)
            .field("store", &self.store)
            .finish()
    }
}

impl Node {
    /// The proxy state for a config.
    pub fn new(config: CacheConfig) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(ORIGIN_CONNECT_TIMEOUT));
        connector.set_nodelay(true);
        Self {
            client: Client::builder(TokioExecutor::new()).build(connector),
            store: Store::new(config.memory_budget),
            purges: Purges::default(),
            config,
            flights: Mutex::new(HashMap::new()),
            in_flight: AtomicU64::new(0),
            peak_in_flight: AtomicU64::new(0),
        }
    }

    /// The HTTP client, shared with the health pushes.
    pub fn client(&self) -> &Client<HttpConnector, Full<Bytes>> {
        &self.client
    }
}

/// Every path and method goes to the proxy.
pub fn router(node: Arc<Node>) -> Router {
    Router::new().fallback(handle).with_state(node)
}

/// Counts a request in flight for as long as it lives.
struct InFlight<'a>(&'a Node);

impl<'a> InFlight<'a> {
    fn enter(node: &'a Node) -> Self {
        let now = node.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        node.peak_in_flight.fetch_max(now, Ordering::Relaxed);
        Self(node)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Serves one request; prefetches come through here too.
pub(super) async fn handle(State(node): State<Arc<Node>>, request: Request) -> Response {
    let _counted = InFlight::enter(&node);
    let Some(domain) = host_of(&request).and_then(|h| node.config.domains.get(&h)) else {
        return (
            StatusCode::MISDIRECTED_REQUEST,
            "this host is not served here\n",
        )
            .into_response();
    };
    let (parts, body) = request.into_parts();
    if let Err(denied) = domain.access.check(&parts, SystemTime::now()) {
        return denied.response();
    }
    if parts.method != Method::GET && parts.method != Method::HEAD
        || domain.is_dynamic(parts.uri.path())
    {
        return bypass(&node, domain, parts, body).await;
    }
    let path_and_query = key_path(domain, &parts.uri);
    let key = cache_key(domain, &path_and_query);
    let head = parts.method == Method::HEAD;
    // The request as the cache sees it: a GET (HEAD is filled by GET) for the key,
    // without the client's own preconditions.
    let mut lookup = request::Builder::new()
        .method(Method::GET)
        .uri(path_and_query.as_str())
        .body(())
        .map(|r| r.into_parts().0)
        .unwrap_or_else(|_| request::Request::new(()).into_parts().0);
    lookup.headers = forwardable(&parts.headers);
    for name in &CLIENT_CONDITIONALS {
        lookup.headers.remove(name);
    }
    lookup.headers.remove(header::RANGE);

    let stale = match node.store.get(&key).filter(|_| !node.purges.hides(&key)) {
        Some(entry) => match entry.policy.before_request(&lookup, SystemTime::now()) {
            BeforeRequest::Fresh(fresh) => {
                return answer(&parts.headers, head, fresh, &entry.body, CacheStatus::Hit);
            }
            BeforeRequest::Stale { request, matches } => matches.then_some((entry, request)),
        },
        None => None,
    };

    // Coalesce: the first request for the key fills, the rest wait for it.
    let flight = {
        let mut flights = node.flights.lock().unwrap_or_else(|p| p.into_inner());
        flights.entry(key.clone()).or_default().clone()
    };
    // Whatever becomes of this request (its client may go away mid-fill), the
    // finished or abandoned flight leaves the map.
    let _leave = LeaveFlight {
        node: &node,
        key: &key,
        flight: &flight,
    };
    let mut led = false;
    let result = flight
        .get_or_init(|| {
            led = true;
            fill(&node, domain, &key, &lookup, stale)
        })
        .await
        .clone();
    let now = SystemTime::now();
    let (fill, status) = match result {
        Ok(fill) if led => {
            let status = fill.status;
            (fill, status)
        }
        Ok(fill)
            if fill.stored
                && matches!(
                    fill.entry.policy.before_request(&lookup, now),
                    BeforeRequest::Fresh(_)
                ) =>
        {
            (fill, CacheStatus::Hit)
        }
        // Not stored (it may be private to whoever asked), or not a variant that
        // suits this request (`Vary`): a waiter asks the origin for its own.
        // TODO-performance: uncacheable objects are fetched once per waiter.
        Ok(_) => match fill(&node, domain, &key, &lookup, None).await {
            Ok(fill) => {
                let status = fill.status;
                (fill, status)
            }
            Err(e) => return e.response(),
        },
        Err(e) => return e.response(),
    };
    // Stored: served as the policy says (with `Age`). Not stored, or already
    // stale for this request (it asked for `no-cache`, say): the origin's answer
    // is still the newest there is.
    let served = match fill.stored {
        true => match fill.entry.policy.before_request(&lookup, now) {
            BeforeRequest::Fresh(fresh) => fresh,
            BeforeRequest::Stale { .. } => clone_parts(&fill.parts),
        },
        false => clone_parts(&fill.parts),
    };
    answer(&parts.headers, head, served, &fill.entry.body, status)
}

/// Takes a flight out of the map when dropped, unless a newer one replaced it.
struct LeaveFlight<'a> {
    node: &'a Node,
    key: &'a str,
    flight: &'a Flight,
}

impl Drop for LeaveFlight<'_> {
    fn drop(&mut self) {
        let mut flights = self.node.flights.lock().unwrap_or_else(|p| p.into_inner());
        if flights
            .get(self.key)
            .is_some_and(|f| Arc::ptr_eq(f, self.flight))
        {
            flights.remove(self.key);
        }
    }
}

/// Fetches `key` from the origins (revalidating `stale` when there is one) and
/// stores what may be stored.
async fn fill(
    node: &Node,
    domain: &CacheDomain,
    key: &str,
    lookup: &request::Parts,
    stale: Option<(Arc<Entry>, request::Parts)>,
) -> Result<Arc<Fill>, OriginError> {
    let headers = match &stale {
        Some((_, revalidation)) => forwardable(&revalidation.headers),
        None => lookup.headers.clone(),
    };
    let path = lookup.uri.path_and_query().map_or("/", |p| p.as_str());
    let purges = node.purges.epoch();
    let fetched = fetch(node, domain, Method::GET, path, headers, Bytes::new(), true).await?;
    let now = SystemTime::now();
    if let Some((entry, _)) = &stale
        && fetched.parts.status == StatusCode::NOT_MODIFIED
        && let AfterResponse::NotModified(policy, parts) =
            entry.policy.after_response(lookup, &fetched.parts, now)
    {
        let refreshed = Arc::new(Entry {
            header_bytes: entry.header_bytes,
            policy,
            body: entry.body.clone(),
        });
        purge::store_fill(node, key, refreshed.clone(), purges);
        return Ok(Arc::new(Fill {
            entry: refreshed,
            stored: true,
            status: CacheStatus::Revalidated,
            parts,
        }));
    }
    // A 304 for validators other than the entry's says nothing about it: ask
    // again for the whole object.
    let fetched = if stale.is_some() && fetched.parts.status == StatusCode::NOT_MODIFIED {
        let headers = lookup.headers.clone();
        fetch(node, domain, Method::GET, path, headers, Bytes::new(), true).await?
    } else {
        fetched
    };
    let mut rule_parts = clone_parts(&fetched.parts);
    apply_rule_ttl(
        &mut rule_parts.headers,
        domain.rules.ttl_for(lookup.uri.path()),
    );
    let options = CacheOptions::default();
    let policy = CachePolicy::new_options(lookup, &rule_parts, now, options);
    let stored = policy.is_storable();
    let header_bytes = fetched
        .parts
        .headers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len())
        .sum();
    let entry = Arc::new(Entry {
        policy,
        body: fetched.body,
        header_bytes,
    });
    if stored {
        purge::store_fill(node, key, entry.clone(), purges);
    } else {
        node.store.remove(key);
    }
    let mut parts = fetched.parts;
    parts.headers = forwardable(&parts.headers);
    Ok(Arc::new(Fill {
        entry,
        stored,
        status: CacheStatus::Miss,
        parts,
    }))
}

/// Asks the origins in order; one that cannot be reached, times out or answers
/// 502/503/504 gives way to the next (when `failover`), and the last answer or
/// error stands.
async fn fetch(
    node: &Node,
    domain: &CacheDomain,
    method: Method,
    path_and_query: &str,
    headers: HeaderMap,
    body: Bytes,
    failover: bool,
) -> Result<Fetched, OriginError> {
    let mut last = Err(OriginError::Unreachable);
    let limit = usize::try_from(node.config.memory_budget).unwrap_or(usize::MAX);
    for origin in &domain.origins {
        let Ok(uri) =
            format!("http://{}:{}{path_and_query}", origin.host, origin.port).parse::<Uri>()
        else {
            continue;
        };
        let mut request = axum::http::Request::new(Full::new(body.clone()));
        *request.method_mut() = method.clone();
        *request.uri_mut() = uri;
        *request.headers_mut() = headers.clone();
        if let Ok(host) = HeaderValue::from_str(&domain.name) {
            request.headers_mut().insert(header::HOST, host);
        }
        let attempt = async {
            let response = node.client.request(request).await.map_err(|e| {
                tracing::debug!(origin = %origin.host, error = %e, "origin request failed");
                OriginError::Unreachable
            })?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, limit)
                .collect()
                .await
                .map_err(|_| OriginError::TooLarge)?
                .to_bytes();
            Ok(Fetched { parts, body })
        };
        last = match tokio::time::timeout(ORIGIN_TIMEOUT, attempt).await {
            Ok(result) => result,
            Err(_) => Err(OriginError::Unreachable),
        };
        match &last {
            Ok(fetched)
                if !matches!(
                    fetched.parts.status,
                    StatusCode::BAD_GATEWAY
                        | StatusCode::SERVICE_UNAVAILABLE
                        | StatusCode::GATEWAY_TIMEOUT
                ) =>
            {
                break;
            }
            _ if !failover => break,
            _ => {
                tracing::warn!(domain = %domain.name, origin = %origin.host, "origin failed")
            }
        }
    }
    last
}

/// Passes a request that is not a GET or HEAD through to the origin, uncached.
/// Only an origin that cannot be reached gives way to the next: one that got the
/// request may have acted on it.
async fn bypass(node: &Node, domain: &CacheDomain, parts: request::Parts, body: Body) -> Response {
    let Ok(body) = Limited::new(body, MAX_REQUEST_BODY).collect().await else {
        return (StatusCode::PAYLOAD_TOO_LARGE, "request body too large\n").into_response();
    };
    // The origin never sees URL signing parameters.
    let path = match domain.access.strip_signature(parts.uri.query()) {
        Some(query) => format!("{}?{query}", parts.uri.path()),
        None => parts.uri.path().to_string(),
    };
    let headers = forwardable(&parts.headers);
    // TODO-robustness: fail over only on connection errors here; today the first
    // origin's failure of any kind ends it.
    match fetch(
        node,
        domain,
        parts.method.clone(),
        &path,
        headers,
        body.to_bytes(),
        false,
    )
    .await
    {
        Ok(fetched) => {
            let mut response_parts = fetched.parts;
            response_parts.headers = forwardable(&response_parts.headers);
            let mut response = Response::from_parts(response_parts, Body::from(fetched.body));
            response
                .headers_mut()
                .insert(X_CACHE, CacheStatus::Bypass.header());
            response
        }
        Err(e) => e.response(),
    }
}

/// The response to the client: `served` headers with `X-Cache`, answered 304
/// when the client's `If-None-Match` names its ETag.
fn answer(
    request: &HeaderMap,
    head: bool,
    mut served: response::Parts,
    body: &Bytes,
    status: CacheStatus,
) -> Response {
    served.headers.insert(X_CACHE, status.header());
    if served.status == StatusCode::OK && etag_matches(request, &served.headers) {
        served.status = StatusCode::NOT_MODIFIED;
        served.headers.remove(header::CONTENT_LENGTH);
        return Response::from_parts(served, Body::empty());
    }
    // Length of the body being sent, whatever the origin framed it with.
    served.headers.remove(header::CONTENT_LENGTH);
    if head {
        served
            .headers
            .insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        return Response::from_parts(served, Body::empty());
    }
    Response::from_parts(served, Body::from(body.clone()))
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

/// Gives a response the domain's rule TTL as `s-maxage` when the origin set no
/// freshness of its own. `s-maxage` binds shared caches only, so browsers still
/// follow the origin's headers.
fn apply_rule_ttl(headers: &mut HeaderMap, ttl: u64) {
    if ttl == 0 || headers.contains_key(header::EXPIRES) {
        return;
    }
    let existing: Vec<String> = headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|d| d.trim().to_ascii_lowercase())
        .filter(|d| !d.is_empty())
        .collect();
    let explicit = existing.iter().any(|d| {
        d.starts_with("max-age")
            || d.starts_with("s-maxage")
            || d == "no-store"
            || d == "no-cache"
            || d == "private"
    });
    if explicit {
        return;
    }
    let mut directives = existing;
    directives.push(format!("s-maxage={ttl}"));
    if let Ok(value) = HeaderValue::from_str(&directives.join(", ")) {
        headers.insert(header::CACHE_CONTROL, value);
    }
}

/// The request's host, lower-case, without port or trailing dot.
fn host_of(request: &Request) -> Option<String> {
    let host = match request.uri().host() {
        Some(host) => host.to_string(),
        None => {
            let value = request.headers().get(header::HOST)?.to_str().ok()?;
            let authority: axum::http::uri::Authority = value.parse().ok()?;
            authority.host().to_string()
        }
    };
    Some(host.trim_end_matches('.').to_ascii_lowercase())
}

/// The cache key of a path and query as [`key_path`] gives them.
pub(super) fn cache_key(domain: &CacheDomain, path_and_query: &str) -> String {
    format!("{}{path_and_query}", domain.name)
}

/// The path and the query as the domain's rules keep it (without URL signing
/// parameters): the cache key's path part, and what the origin is asked for.
pub(super) fn key_path(domain: &CacheDomain, uri: &Uri) -> String {
    let query = domain.access.strip_signature(uri.query());
    match domain.rules.query(query.as_deref()) {
        Some(query) => format!("{}?{query}", uri.path()),
        None => uri.path().to_string(),
    }
}

/// Headers without the hop-by-hop ones (and those `Connection` names).
fn forwardable(headers: &HeaderMap) -> HeaderMap {
    let named: Vec<String> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|n| n.trim().to_ascii_lowercase())
        .collect();
    let mut out = headers.clone();
    for name in HOP_BY_HOP
        .iter()
        .copied()
        .chain(named.iter().map(String::as_str))
    {
        out.remove(name);
    }
    out.remove(header::HOST);
    out
}

fn clone_parts(parts: &response::Parts) -> response::Parts {
    let mut copy = empty_parts();
    copy.status = parts.status;
    copy.version = parts.version;
    copy.headers = parts.headers.clone();
    copy
}

fn empty_parts() -> response::Parts {
    Response::new(()).into_parts().0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_ttl_only_where_the_origin_is_silent() {
        let mut headers = HeaderMap::new();
        apply_rule_ttl(&mut headers, 60);
        assert_eq!(headers[header::CACHE_CONTROL], "s-maxage=60");
        let mut headers = HeaderMap::new();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("public"));
        apply_rule_ttl(&mut headers, 60);
        assert_eq!(headers[header::CACHE_CONTROL], "public, s-maxage=60");
        for origin in ["max-age=5", "no-store", "private"] {
            let mut headers = HeaderMap::new();
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(origin));
            apply_rule_ttl(&mut headers, 60);
            assert_eq!(headers[header::CACHE_CONTROL], origin);
        }
    }

    #[test]
    fn etag_comparison_is_weak() {
        let mut response = HeaderMap::new();
        response.insert(header::ETAG, HeaderValue::from_static("\"v1\""));
        let mut request = HeaderMap::new();
        request.insert(
            header::IF_NONE_MATCH,
            HeaderValue::from_static("\"v0\", W/\"v1\""),
        );
        assert!(etag_matches(&request, &response));
        request.insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"v2\""));
        assert!(!etag_matches(&request, &response));
    }

    #[test]
    fn hop_by_hop_headers_are_dropped() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, x-secret"),
        );
        headers.insert("x-secret", HeaderValue::from_static("1"));
        headers.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        let out = forwardable(&headers);
        assert_eq!(out.len(), 1);
        assert!(out.contains_key(header::ACCEPT));
    }
}
