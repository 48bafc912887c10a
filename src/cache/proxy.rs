//! The reverse proxy: Host check, cache lookup, coalesced origin fetch with
//! failover, and the response with its `X-Cache`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use axum::Router;
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{Request, State};
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::{Method, StatusCode, Uri, request, response};
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, Full, Limited};
use http_cache_semantics::{AfterResponse, BeforeRequest, CacheOptions, CachePolicy};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use tokio::sync::OnceCell;

use super::conditional;
use super::config::{CacheConfig, CacheDomain};
use super::growing::GrowingBody;
use super::hit;
use super::metrics::CacheMetrics;
use super::origin::{OriginError, Upstreams};
use super::purge::{self, Purges};
use super::range::{self, Selection};
use super::stale::{self, StaleWindows, Window};
use super::store::{Entry, Store};

/// The header that says how a response was served.
pub const X_CACHE: &str = "x-cache";
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
    /// A stale entry served while it is refreshed, or because the origins failed.
    Stale,
    /// Not a cacheable request: passed through.
    Bypass,
}

impl CacheStatus {
    pub fn header(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            Self::Hit => "HIT",
            Self::Miss => "MISS",
            Self::Revalidated => "REVALIDATED",
            Self::Stale => "STALE",
            Self::Bypass => "BYPASS",
        })
    }
}

/// What one coalesced fill produced: the response, its body (possibly still
/// arriving) and how it was served.
#[derive(Debug)]
struct Fill {
    policy: CachePolicy,
    body: FillBody,
    /// Storable and shared: waiting requests may be served it.
    shared: bool,
    status: CacheStatus,
    /// The headers to serve when the policy will not serve the entry fresh.
    parts: response::Parts,
}

/// A fill's body.
#[derive(Debug)]
enum FillBody {
    /// Already whole (a revalidated entry).
    Whole(Bytes),
    /// Arriving; readers follow it and the store gets it once complete.
    Growing(Arc<GrowingBody>),
    /// Over `max-object-size`: streamed to the one request that asked, never
    /// buffered or stored.
    Direct(Mutex<Option<Incoming>>),
}

/// One fill in progress for a key; requests for the key wait on it.
type Flight = Arc<OnceCell<Result<Arc<Fill>, OriginError>>>;

/// Shared state of the proxy.
pub struct Node {
    pub config: CacheConfig,
    upstreams: Upstreams,
    pub(super) store: Arc<Store>,
    /// Prefix purges in progress: entries they cover count as absent.
    pub(super) purges: Purges,
    pub metrics: CacheMetrics,
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
    /// The proxy state for a config; fails only on a TLS setting rustls refuses.
    pub fn new(config: CacheConfig) -> Result<Self, String> {
        let metrics = CacheMetrics::new();
        Ok(Self {
            upstreams: Upstreams::new(&config, metrics.clone())?,
            store: Arc::new(Store::new(config.memory_budget, metrics.evictions.clone())),
            purges: Purges::default(),
            metrics,
            config,
            flights: Mutex::new(HashMap::new()),
            in_flight: AtomicU64::new(0),
            peak_in_flight: AtomicU64::new(0),
        })
    }

    /// The HTTP client, shared with the health pushes.
    pub fn client(&self) -> &Client<HttpConnector, Full<Bytes>> {
        self.upstreams.http()
    }
}

/// Every path and method goes to the proxy.
pub fn router(node: Arc<Node>) -> Router {
    Router::new()
        .fallback(handle)
        .layer(axum::middleware::map_response_with_state(
            node.clone(),
            on_the_way_out,
        ))
        .with_state(node)
}

/// Every response: this node in `Via`, and counted.
async fn on_the_way_out(State(node): State<Arc<Node>>, mut response: Response) -> Response {
    response
        .headers_mut()
        .append(header::VIA, node.upstreams.via().clone());
    // A streamed body's length is known from its header, if at all.
    let bytes = response
        .body()
        .size_hint()
        .exact()
        .or_else(|| content_length(response.headers()))
        .unwrap_or(0);
    node.metrics
        .record_response(response.status(), response.headers().get(X_CACHE), bytes);
    response
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
    let Some((host, domain)) =
        host_of(&request).and_then(|h| node.config.domain_for(&h).map(|d| (h, d)))
    else {
        return (
            StatusCode::MISDIRECTED_REQUEST,
            "this host is not served here\n",
        )
            .into_response();
    };
    if super::origin::came_through(request.headers(), &node.config.node_id) {
        return (
            StatusCode::LOOP_DETECTED,
            "request loop: this cache node is already in Via\n",
        )
            .into_response();
    }
    let (parts, body) = request.into_parts();
    if let Err(denied) = domain.access.check(&parts, SystemTime::now()) {
        return denied.response();
    }
    if parts.method != Method::GET && parts.method != Method::HEAD
        || domain.is_dynamic(parts.uri.path())
    {
        return bypass(&node, domain, &host, parts, body).await;
    }
    let path_and_query = key_path(domain, &parts.uri);
    let key = cache_key(&host, &path_and_query);
    let head = parts.method == Method::HEAD;
    let now = SystemTime::now();
    let cached = node.store.get(&key).filter(|_| !node.purges.hides(&key));
    if let Some(entry) = &cached
        && let Some(fresh) = hit::fresh(entry, &parts.headers, now)
    {
        return answer(&parts.headers, head, fresh, &entry.body, CacheStatus::Hit);
    }
    // The request as the cache sees it: a GET (HEAD is filled by GET) for the key,
    // without the client's own preconditions.
    let mut lookup = request::Builder::new()
        .method(Method::GET)
        .uri(path_and_query.as_str())
        .body(())
        .map(|r| r.into_parts().0)
        .unwrap_or_else(|_| request::Request::new(()).into_parts().0);
    lookup.headers = upstream_headers(&parts.headers, &host);
    for name in &CLIENT_CONDITIONALS {
        lookup.headers.remove(name);
    }
    lookup.headers.remove(header::RANGE);

    let stale = match cached {
        Some(entry) => match hit::before_request(&entry.policy, &lookup, now) {
            BeforeRequest::Fresh(fresh) => {
                return answer(&parts.headers, head, fresh, &entry.body, CacheStatus::Hit);
            }
            BeforeRequest::Stale { request, matches } => {
                if matches
                    && let Some(served) = stale::servable(&entry, &lookup, Window::Revalidate, now)
                {
                    refresh_in_background(&node, domain, &key, &lookup, &entry, request);
                    return answer(
                        &parts.headers,
                        head,
                        served,
                        &entry.body,
                        CacheStatus::Stale,
                    );
                }
                matches.then_some((entry, request))
            }
        },
        None => None,
    };
    let previous = stale.as_ref().map(|(entry, _)| entry.clone());
    let (result, led) = coalesced_fill(&node, domain, &key, &lookup, stale).await;
    // Every upstream failed: a stale entry within `stale-if-error` beats an error.
    if let Some(entry) = &previous
        && upstream_failed(&result)
        && let Some(served) = stale::servable(entry, &lookup, Window::IfError, SystemTime::now())
    {
        return answer(
            &parts.headers,
            head,
            served,
            &entry.body,
            CacheStatus::Stale,
        );
    }
    let now = SystemTime::now();
    let (fill, status) = match result {
        Ok(fill) if led => {
            let status = fill.status;
            (fill, status)
        }
        Ok(fill)
            if fill.shared
                && matches!(
                    hit::before_request(&fill.policy, &lookup, now),
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
    let served = match fill.shared {
        true => match hit::before_request(&fill.policy, &lookup, now) {
            BeforeRequest::Fresh(fresh) => fresh,
            BeforeRequest::Stale { .. } => clone_parts(&fill.parts),
        },
        false => clone_parts(&fill.parts),
    };
    answer_fill(&parts.headers, head, served, &fill.body, status).await
}

/// Joins the fill under way for `key`, or leads a new one; says which.
async fn coalesced_fill(
    node: &Arc<Node>,
    domain: &CacheDomain,
    key: &str,
    lookup: &request::Parts,
    stale: Option<(Arc<Entry>, request::Parts)>,
) -> (Result<Arc<Fill>, OriginError>, bool) {
    let flight = {
        let mut flights = node.flights.lock().unwrap_or_else(|p| p.into_inner());
        flights.entry(key.to_string()).or_default().clone()
    };
    // Only the request that runs the fill takes the flight out of the map, when it
    // ends or is abandoned (its client may go away mid-fill; a waiter then takes
    // the fill over and arms its own guard). A waiter leaving must not: the body
    // may still be streaming, and later requests must join it, not fetch again.
    let leave = LeaveFlight {
        node,
        key,
        flight: &flight,
        armed: AtomicBool::new(false),
    };
    let mut led = false;
    let result = flight
        .get_or_init(|| {
            led = true;
            leave.armed.store(true, Ordering::Relaxed);
            fill(node, domain, key, lookup, stale)
        })
        .await
        .clone();
    // Requests that arrive while a shared body is still streaming join it rather
    // than fetch again: the flight stays until the body is complete (and stored).
    if led
        && let Ok(fill) = &result
        && fill.shared
        && let FillBody::Growing(growing) = &fill.body
    {
        leave.armed.store(false, Ordering::Relaxed);
        let (node, key, flight) = (node.clone(), key.to_string(), flight.clone());
        let growing = growing.clone();
        tokio::spawn(async move {
            growing.complete().await;
            leave_flight(&node, &key, &flight);
        });
    }
    (result, led)
}

/// Refreshes a stale entry off the request path (`stale-while-revalidate`):
/// one refresh per key, as the fill joins any under way and is skipped once
/// the entry has been replaced.
fn refresh_in_background(
    node: &Arc<Node>,
    domain: &CacheDomain,
    key: &str,
    lookup: &request::Parts,
    entry: &Arc<Entry>,
    revalidation: request::Parts,
) {
    let (node, domain, key) = (node.clone(), domain.name.clone(), key.to_string());
    let (lookup, entry) = (clone_request(lookup), entry.clone());
    tokio::spawn(async move {
        let Some(domain) = node.config.domains.get(&domain) else {
            return;
        };
        if node
            .store
            .get(&key)
            .is_some_and(|current| !Arc::ptr_eq(&current, &entry))
        {
            return;
        }
        let stale = Some((entry, revalidation));
        if let (Err(e), _) = coalesced_fill(&node, domain, &key, &lookup, stale).await {
            tracing::debug!(%key, error = ?e, "background refresh failed");
        }
    });
}

/// Whether a fill found no upstream willing to answer: an error, or a 5xx that
/// was not stored.
fn upstream_failed(result: &Result<Arc<Fill>, OriginError>) -> bool {
    match result {
        Err(_) => true,
        Ok(fill) => !fill.shared && fill.parts.status.is_server_error(),
    }
}

/// Takes a flight out of the map when dropped, unless a newer one replaced it.
struct LeaveFlight<'a> {
    node: &'a Node,
    key: &'a str,
    flight: &'a Flight,
    /// Set while this request runs the fill; cleared when the flight must outlive
    /// the request. Atomic because the fill's closure sets it through a shared
    /// borrow held across an await.
    armed: AtomicBool,
}

impl Drop for LeaveFlight<'_> {
    fn drop(&mut self) {
        if self.armed.load(Ordering::Relaxed) {
            leave_flight(self.node, self.key, self.flight);
        }
    }
}

/// Takes `flight` out of the map, unless a newer one replaced it.
fn leave_flight(node: &Node, key: &str, flight: &Flight) {
    let mut flights = node.flights.lock().unwrap_or_else(|p| p.into_inner());
    if flights.get(key).is_some_and(|f| Arc::ptr_eq(f, flight)) {
        flights.remove(key);
    }
}

/// Fetches `key` from the origins (revalidating `stale` when there is one) and
/// stores what may be stored.
async fn fill(
    node: &Arc<Node>,
    domain: &CacheDomain,
    key: &str,
    lookup: &request::Parts,
    stale: Option<(Arc<Entry>, request::Parts)>,
) -> Result<Arc<Fill>, OriginError> {
    let headers = match &stale {
        Some((entry, revalidation)) => {
            let mut headers = forwardable(&revalidation.headers);
            // Both validators when there are both (RFC 9111 section 4.3.1); the
            // policy sends `If-Modified-Since` only without an ETag.
            if let Some(modified) = &entry.last_modified
                && !headers.contains_key(header::IF_MODIFIED_SINCE)
            {
                headers.insert(header::IF_MODIFIED_SINCE, modified.clone());
            }
            headers
        }
        None => lookup.headers.clone(),
    };
    let path = lookup.uri.path_and_query().map_or("/", |p| p.as_str());
    let purges = node.purges.epoch();
    let upstreams = &node.upstreams;
    let fetched = upstreams
        .fetch(domain, Method::GET, path, headers, Bytes::new(), true)
        .await?;
    let now = SystemTime::now();
    if let Some((entry, _)) = &stale
        && fetched.parts.status == StatusCode::NOT_MODIFIED
        && let AfterResponse::NotModified(policy, parts) =
            entry.policy.after_response(lookup, &fetched.parts, now)
    {
        let refreshed = Arc::new(Entry {
            header_bytes: entry.header_bytes,
            stale_at: now + policy.time_to_live(now),
            windows: StaleWindows::of(&parts.headers, &domain.rules),
            last_modified: parts.headers.get(header::LAST_MODIFIED).cloned(),
            ready: hit::Ready::of(&policy, lookup, now),
            policy,
            body: entry.body.clone(),
        });
        purge::store_fill(node, key, refreshed.clone(), purges);
        return Ok(Arc::new(Fill {
            policy: refreshed.policy.clone(),
            body: FillBody::Whole(refreshed.body.clone()),
            shared: true,
            status: CacheStatus::Revalidated,
            parts,
        }));
    }
    // A 304 for validators other than the entry's says nothing about it: ask
    // again for the whole object.
    let fetched = if stale.is_some() && fetched.parts.status == StatusCode::NOT_MODIFIED {
        let headers = lookup.headers.clone();
        upstreams
            .fetch(domain, Method::GET, path, headers, Bytes::new(), true)
            .await?
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
    let storable = policy.is_storable();
    if !storable && !fetched.parts.status.is_server_error() {
        // An uncacheable answer replaces what was cached; a failure does not,
        // so the old entry stays for `stale-if-error`.
        node.store.remove(key);
    }
    let header_bytes = fetched
        .parts
        .headers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len())
        .sum();
    let max_object = node.config.max_object_size;
    let too_large = content_length(&fetched.parts.headers).is_some_and(|l| l > max_object);
    let (mut parts, upstream) = (fetched.parts, fetched.body);
    let body = if too_large {
        FillBody::Direct(Mutex::new(Some(upstream)))
    } else {
        let entry = Entry {
            stale_at: now + policy.time_to_live(now),
            windows: StaleWindows::of(&parts.headers, &domain.rules),
            last_modified: parts.headers.get(header::LAST_MODIFIED).cloned(),
            ready: hit::Ready::of(&policy, lookup, now),
            policy: policy.clone(),
            body: Bytes::new(),
            header_bytes,
        };
        let (node, key) = (node.clone(), key.to_string());
        let budget = node.config.memory_budget;
        FillBody::Growing(GrowingBody::fill(
            upstream,
            max_object,
            budget,
            move |body| {
                if storable {
                    purge::store_fill(&node, &key, Arc::new(Entry { body, ..entry }), purges);
                }
            },
        ))
    };
    parts.headers = forwardable(&parts.headers);
    Ok(Arc::new(Fill {
        policy,
        body,
        shared: storable && !too_large,
        status: CacheStatus::Miss,
        parts,
    }))
}

/// Passes a request that is not a GET or HEAD through to the origin, uncached.
/// Only an origin that cannot be reached gives way to the next: one that got the
/// request may have acted on it.
async fn bypass(
    node: &Node,
    domain: &CacheDomain,
    host: &str,
    parts: request::Parts,
    body: Body,
) -> Response {
    let Ok(body) = Limited::new(body, MAX_REQUEST_BODY).collect().await else {
        return (StatusCode::PAYLOAD_TOO_LARGE, "request body too large\n").into_response();
    };
    // The origin never sees URL signing parameters.
    let path = match domain.access.strip_signature(parts.uri.query()) {
        Some(query) => format!("{}?{query}", parts.uri.path()),
        None => parts.uri.path().to_string(),
    };
    let headers = upstream_headers(&parts.headers, host);
    let upstreams = &node.upstreams;
    match upstreams
        .fetch(
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
            let mut response = Response::from_parts(response_parts, Body::new(fetched.body));
            response
                .headers_mut()
                .insert(X_CACHE, CacheStatus::Bypass.header());
            response
        }
        Err(e) => e.response(),
    }
}

/// The response to the client: `served` headers with `X-Cache`; a 200 becomes
/// a 304 when the client's preconditions say it has the object, or a 206/416
/// for its `Range`.
fn answer(
    request: &HeaderMap,
    head: bool,
    mut served: response::Parts,
    body: &Bytes,
    status: CacheStatus,
) -> Response {
    served.headers.insert(X_CACHE, status.header());
    // Length of the body being sent, whatever the origin framed it with.
    served.headers.remove(header::CONTENT_LENGTH);
    if served.status != StatusCode::OK {
        return whole(served, head, body);
    }
    if conditional::not_modified(request, &served.headers) {
        served.status = StatusCode::NOT_MODIFIED;
        return Response::from_parts(served, Body::empty());
    }
    served
        .headers
        .insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    // Range is defined for GET only (RFC 9110 section 14.2).
    if head {
        return whole(served, head, body);
    }
    match range::select(request, &served.headers, body.len()) {
        Selection::Whole => whole(served, head, body),
        Selection::Part(part) => {
            let content_range = format!("bytes {}-{}/{}", part.start, part.end - 1, body.len());
            served.status = StatusCode::PARTIAL_CONTENT;
            if let Ok(value) = HeaderValue::from_str(&content_range) {
                served.headers.insert(header::CONTENT_RANGE, value);
            }
            Response::from_parts(served, Body::from(body.slice(part)))
        }
        Selection::Unsatisfiable => {
            served.status = StatusCode::RANGE_NOT_SATISFIABLE;
            if let Ok(value) = HeaderValue::from_str(&format!("bytes */{}", body.len())) {
                served.headers.insert(header::CONTENT_RANGE, value);
            }
            Response::from_parts(served, Body::empty())
        }
    }
}

/// The response to the client for a fill: a whole body as [`answer`] does; a
/// growing one streamed as it arrives (after the end only for a `Range`, whose
/// slice needs the whole object, or a HEAD with no length); a direct one
/// streamed through.
async fn answer_fill(
    request: &HeaderMap,
    head: bool,
    mut served: response::Parts,
    body: &FillBody,
    status: CacheStatus,
) -> Response {
    let streamed = match body {
        FillBody::Whole(bytes) => return answer(request, head, served, bytes, status),
        FillBody::Growing(growing) => {
            let whole_first = served.status == StatusCode::OK
                && match head {
                    true => content_length(&served.headers).is_none(),
                    false => request.contains_key(header::RANGE),
                };
            if whole_first {
                return match growing.complete().await {
                    Some(bytes) => answer(request, head, served, &bytes, status),
                    None => OriginError::Unreachable.response(),
                };
            }
            growing.reader()
        }
        FillBody::Direct(upstream) => upstream
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .map_or_else(Body::empty, Body::new),
    };
    served.headers.insert(X_CACHE, status.header());
    if served.status == StatusCode::OK {
        if conditional::not_modified(request, &served.headers) {
            served.status = StatusCode::NOT_MODIFIED;
            served.headers.remove(header::CONTENT_LENGTH);
            return Response::from_parts(served, Body::empty());
        }
        served
            .headers
            .insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    }
    if head {
        return Response::from_parts(served, Body::empty());
    }
    Response::from_parts(served, streamed)
}

/// A `Content-Length`, if there is a valid one.
fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// The whole body (or, for HEAD, its length).
fn whole(mut served: response::Parts, head: bool, body: &Bytes) -> Response {
    if head {
        served
            .headers
            .insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        return Response::from_parts(served, Body::empty());
    }
    Response::from_parts(served, Body::from(body.clone()))
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

/// The cache key of a host (as [`host_of`] gives it) and a path and query (as
/// [`key_path`] gives them). The host, not the domain: every name a wildcard
/// domain serves is a site of its own.
pub(super) fn cache_key(host: &str, path_and_query: &str) -> String {
    format!("{host}{path_and_query}")
}

/// The client's headers as sent upstream: without hop-by-hop headers, and with
/// `Host` the name asked for, without the port the client reached this node on.
fn upstream_headers(client: &HeaderMap, host: &str) -> HeaderMap {
    let mut headers = forwardable(client);
    if let Ok(host) = HeaderValue::from_str(host) {
        headers.insert(header::HOST, host);
    }
    headers
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

/// A copy of a request's method, URI and headers.
pub fn clone_request(parts: &request::Parts) -> request::Parts {
    let mut copy = request::Request::new(()).into_parts().0;
    copy.method = parts.method.clone();
    copy.uri = parts.uri.clone();
    copy.headers = parts.headers.clone();
    copy
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
