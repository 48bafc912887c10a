//! Cache-node helpers shared by the cache test binaries: start a node from its
//! config text, reach it under its domains' names, read how it served.

use std::path::Path;
use std::time::Duration;

use axum::http::HeaderMap;
use meridian::cache::{CacheConfig, CacheNode};
use reqwest::{Client, ClientBuilder};

/// How long one HTTP exchange may take before the test fails (a bound, not a
/// measure).
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// A cache node started from its config text, as `meridian cache` would read it.
pub async fn start_node(yaml: &str) -> CacheNode {
    let config = CacheConfig::parse(yaml, Path::new("cache.yaml")).expect("cache config");
    meridian::cache::start(config)
        .await
        .expect("cache node starts")
}

/// A client builder that reaches `node` under each of `names`.
pub fn reaching(node: &CacheNode, names: &[&str]) -> ClientBuilder {
    names
        .iter()
        .fold(Client::builder().timeout(HTTP_TIMEOUT), |builder, name| {
            builder.resolve(name, node.addr())
        })
}

/// How a response was served, as its `X-Cache` says ("" when it says nothing).
pub fn x_cache(headers: &HeaderMap) -> &str {
    headers
        .get("x-cache")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}
