//! The cache node's Prometheus metrics, served on `metrics-listen` (apart from
//! the accelerated domains' traffic, so no domain's `/metrics` is ever shadowed).
//! Each node has its own `Registry`; the serving path only increments handles;
//! the store's size is read when scraped.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};

use super::store::Store;

/// Client requests answered, by `status` class (2xx ...) and `cache` result
/// (hit, miss, stale, revalidated, bypass; none when no domain took it).
pub const REQUESTS: &str = "meridian_cache_requests_total";
/// Response body bytes sent to clients.
pub const SERVED_BYTES: &str = "meridian_cache_served_bytes_total";
/// Requests to origins and parents, by `result` (ok, server_error, unreachable).
pub const ORIGIN_FETCHES: &str = "meridian_cache_origin_fetches_total";
/// Time to an origin's response headers, by `result`.
pub const ORIGIN_DURATION: &str = "meridian_cache_origin_fetch_duration_seconds";
/// Objects in the store.
pub const OBJECTS: &str = "meridian_cache_objects";
/// Bytes in the store, as weighed against `memory-budget`.
pub const STORED_BYTES: &str = "meridian_cache_stored_bytes";
/// Objects pushed out of the store to make room.
pub const EVICTIONS: &str = "meridian_cache_evictions_total";

/// How one origin request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchResult {
    /// Any answer below 500.
    Ok,
    /// A 5xx answer.
    ServerError,
    /// No answer: connection refused, TLS failure, timeout.
    Unreachable,
}

impl FetchResult {
    fn label(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::ServerError => "server_error",
            Self::Unreachable => "unreachable",
        }
    }
}

/// A cache node's metrics.
#[derive(Debug, Clone)]
pub struct CacheMetrics {
    registry: Registry,
    requests: IntCounterVec,
    served_bytes: IntCounter,
    origin_fetches: IntCounterVec,
    origin_duration: HistogramVec,
    objects: IntGauge,
    stored_bytes: IntGauge,
    /// Handed to the store, which counts its own evictions.
    pub evictions: IntCounter,
}

impl CacheMetrics {
    /// Registers every metric in a new registry.
    pub fn new() -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(REQUESTS, "Client requests by status class and cache result"),
            &["status", "cache"],
        )
        .expect("valid metric");
        let served_bytes = IntCounter::new(SERVED_BYTES, "Response body bytes sent to clients")
            .expect("valid metric");
        let origin_fetches = IntCounterVec::new(
            Opts::new(ORIGIN_FETCHES, "Requests to origins and parents by result"),
            &["result"],
        )
        .expect("valid metric");
        let origin_duration = HistogramVec::new(
            HistogramOpts::new(ORIGIN_DURATION, "Time to an origin's response headers").buckets(
                vec![
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                ],
            ),
            &["result"],
        )
        .expect("valid metric");
        let objects = IntGauge::new(OBJECTS, "Objects in the store").expect("valid metric");
        let stored_bytes = IntGauge::new(
            STORED_BYTES,
            "Bytes in the store, as weighed against the budget",
        )
        .expect("valid metric");
        let evictions = IntCounter::new(EVICTIONS, "Objects pushed out of the store for room")
            .expect("valid metric");
        for collector in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(served_bytes.clone()),
            Box::new(origin_fetches.clone()),
            Box::new(origin_duration.clone()),
            Box::new(objects.clone()),
            Box::new(stored_bytes.clone()),
            Box::new(evictions.clone()),
        ] {
            registry.register(collector).expect("unique metric");
        }
        Self {
            registry,
            requests,
            served_bytes,
            origin_fetches,
            origin_duration,
            objects,
            stored_bytes,
            evictions,
        }
    }

    /// Counts a response as it leaves: its status class, how it was served
    /// (the `X-Cache` value) and the body bytes it carries.
    pub fn record_response(&self, status: StatusCode, x_cache: Option<&HeaderValue>, bytes: u64) {
        let class = match status.as_u16() / 100 {
            1 => "1xx",
            2 => "2xx",
            3 => "3xx",
            4 => "4xx",
            _ => "5xx",
        };
        let cache = match x_cache.map(HeaderValue::as_bytes) {
            Some(b"HIT") => "hit",
            Some(b"MISS") => "miss",
            Some(b"STALE") => "stale",
            Some(b"REVALIDATED") => "revalidated",
            Some(b"BYPASS") => "bypass",
            Some(b"DENIED") => "denied",
            _ => "none",
        };
        self.requests.with_label_values(&[class, cache]).inc();
        self.served_bytes.inc_by(bytes);
    }

    /// Counts one origin request and how long it took.
    pub fn record_fetch(&self, result: FetchResult, took: Duration) {
        self.origin_fetches
            .with_label_values(&[result.label()])
            .inc();
        let histogram: Histogram = self.origin_duration.with_label_values(&[result.label()]);
        histogram.observe(took.as_secs_f64());
    }

    /// The text exposition, with the store's size as of now.
    pub fn render(&self, store: &Store) -> Response {
        self.objects
            .set(i64::try_from(store.len()).unwrap_or(i64::MAX));
        self.stored_bytes
            .set(i64::try_from(store.weight()).unwrap_or(i64::MAX));
        let encoder = TextEncoder::new();
        let mut out = Vec::new();
        match encoder.encode(&self.registry.gather(), &mut out) {
            Ok(()) => (
                [(header::CONTENT_TYPE, encoder.format_type().to_string())],
                out,
            )
                .into_response(),
            Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
        }
    }
}
