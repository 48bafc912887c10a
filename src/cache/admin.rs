//! The cache node's admin API, on its own listener (`admin.listen`) so the public
//! one never serves it:
//!
//! - `POST /v1/purge` `{"urls": [...], "prefixes": [...]}`: removes each URL's
//!   cache entry (the URL as a client would ask for it, so the domain's query rules
//!   and URL signing apply) and everything under each prefix (every path below
//!   it, with every query and `Vary` variant). Answers 200 `{"urls": N,
//!   "prefixes": M}` once they are gone.
//! - `POST /v1/prefetch` `{"urls": [...]}`: queues the URLs to be fetched from the
//!   origin into the cache in the background; answers 202 `{"accepted": N}`.
//!
//! URLs are absolute (`http://www.example.com/a.css`), for domains this node
//! serves. Every request needs `Authorization: Bearer <admin.token>`. Statuses:
//! 401 missing or wrong token, 400 malformed body (with the reason), 404 a URL for
//! a domain not served here (nothing is done), 413 body over [`MAX_BODY`] or more
//! than [`MAX_URLS`] URLs, 503 prefetch queue full; errors as `{"error": "..."}`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use tokio::sync::watch;

use super::config::{AdminApi, CacheDomain};
use super::prefetch::{Prefetcher, QueueFull};
use super::proxy::{self, Node};
use super::purge;
use crate::config::Secret;
use crate::http::{bearer, error, unauthorized};

/// Largest request body: a list of a thousand long URLs.
pub const MAX_BODY: usize = 1024 * 1024;
/// Most URLs and prefixes in one request.
pub const MAX_URLS: usize = 1000;

/// The running admin listener.
#[derive(Debug)]
pub struct Admin {
    /// The address actually bound.
    pub addr: SocketAddr,
    /// Serves until the node stops.
    pub task: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// What the handlers share.
#[derive(Clone)]
struct AdminState {
    node: Arc<Node>,
    token: Secret,
    prefetcher: Prefetcher,
}

/// Why a request was refused.
#[derive(Debug, thiserror::Error)]
enum Refused {
    #[error("{0}")]
    Malformed(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("`{url}`: domain `{host}` is not served here")]
    UnknownDomain { url: String, host: String },
    #[error(transparent)]
    QueueFull(#[from] QueueFull),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PurgeBody {
    #[serde(default)]
    urls: Vec<String>,
    #[serde(default)]
    prefixes: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PrefetchBody {
    urls: Vec<String>,
}

/// Binds the admin listener and serves until `stopped`; `prefetched` counts
/// finished prefetches.
pub async fn start(
    node: Arc<Node>,
    api: &AdminApi,
    prefetched: watch::Sender<u64>,
    stopped: watch::Receiver<bool>,
) -> std::io::Result<Admin> {
    let listener = tokio::net::TcpListener::bind(api.listen).await?;
    let addr = listener.local_addr()?;
    let prefetcher = Prefetcher::start(
        node.clone(),
        api.prefetch_concurrency,
        prefetched,
        stopped.clone(),
    );
    let state = AdminState {
        node,
        token: api.token.clone(),
        prefetcher,
    };
    let app = Router::new()
        .route("/v1/purge", post(purge_handler))
        .route("/v1/prefetch", post(prefetch_handler))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state);
    let mut until = stopped;
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = until.wait_for(|stop| *stop).await;
            })
            .await
    });
    tracing::info!(%addr, "cache admin API listening");
    Ok(Admin { addr, task })
}

async fn purge_handler(
    State(state): State<AdminState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    if !authorized(&state, &headers) {
        return unauthorized();
    }
    let (keys, prefixes) = match read(body).and_then(|body| purge_keys(&state.node, body)) {
        Ok(found) => found,
        Err(refused) => return refused.response(),
    };
    let counts = json!({ "urls": keys.len(), "prefixes": prefixes.len() });
    purge::purge(state.node.clone(), keys, prefixes).await;
    tracing::info!(%counts, "purged");
    (StatusCode::OK, axum::Json(counts)).into_response()
}

async fn prefetch_handler(
    State(state): State<AdminState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    if !authorized(&state, &headers) {
        return unauthorized();
    }
    let queued = read(body)
        .and_then(|body: PrefetchBody| {
            within_limit(body.urls.len())?;
            body.urls
                .iter()
                .map(|url| locate(&state.node, url).map(|(_, _, uri)| uri))
                .collect::<Result<Vec<_>, _>>()
        })
        .and_then(|urls| {
            let accepted = urls.len();
            state.prefetcher.enqueue(urls)?;
            Ok(accepted)
        });
    match queued {
        Ok(accepted) => (
            StatusCode::ACCEPTED,
            axum::Json(json!({ "accepted": accepted })),
        )
            .into_response(),
        Err(refused) => refused.response(),
    }
}

/// The cache keys of a purge's URLs and the key prefixes of its prefixes; all or
/// nothing, so a mistake anywhere in the list purges nothing.
fn purge_keys(node: &Node, body: PurgeBody) -> Result<(Vec<String>, Vec<String>), Refused> {
    if body.urls.is_empty() && body.prefixes.is_empty() {
        return Err(Refused::Malformed(
            "expected `urls` or `prefixes` to purge".into(),
        ));
    }
    within_limit(body.urls.len() + body.prefixes.len())?;
    let mut keys = Vec::with_capacity(body.urls.len());
    for url in &body.urls {
        let (host, domain, uri) = locate(node, url)?;
        keys.push(proxy::cache_key(&host, &proxy::key_path(domain, &uri)));
    }
    let mut prefixes = Vec::with_capacity(body.prefixes.len());
    for url in &body.prefixes {
        let (host, _, uri) = locate(node, url)?;
        if uri.query().is_some() {
            return Err(Refused::Malformed(format!(
                "`{url}`: a prefix is a path (it covers every query under it)"
            )));
        }
        prefixes.push(proxy::cache_key(&host, uri.path()));
    }
    Ok((keys, prefixes))
}

impl Refused {
    fn response(&self) -> Response {
        let status = match self {
            Self::Malformed(_) => StatusCode::BAD_REQUEST,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnknownDomain { .. } => StatusCode::NOT_FOUND,
            Self::QueueFull(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        error(status, &self.to_string())
    }
}

fn authorized(state: &AdminState, headers: &HeaderMap) -> bool {
    bearer(headers).is_some_and(|token| state.token.matches(token))
}

/// The JSON body, or why not (naming the field at fault).
fn read<T: DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, Refused> {
    let body = body.map_err(|rejection| match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => Refused::TooLarge(format!("body over {MAX_BODY} bytes")),
        _ => Refused::Malformed(rejection.body_text()),
    })?;
    let mut json = serde_json::Deserializer::from_slice(&body);
    serde_path_to_error::deserialize(&mut json).map_err(|e| {
        let path = e.path().to_string();
        match path.as_str() {
            "." => Refused::Malformed(format!("body: {}", e.inner())),
            _ => Refused::Malformed(format!("body: `{path}`: {}", e.inner())),
        }
    })
}

fn within_limit(count: usize) -> Result<(), Refused> {
    match count > MAX_URLS {
        true => Err(Refused::TooLarge(format!(
            "{count} URLs: at most {MAX_URLS} in one request"
        ))),
        false => Ok(()),
    }
}

/// The host an absolute URL names, the served domain it belongs to, and the URL.
fn locate<'a>(node: &'a Node, url: &str) -> Result<(String, &'a CacheDomain, Uri), Refused> {
    let uri = url
        .parse::<Uri>()
        .ok()
        .filter(|uri| matches!(uri.scheme_str(), Some("http" | "https")) && uri.host().is_some())
        .ok_or_else(|| {
            Refused::Malformed(format!(
                "`{url}`: expected an absolute http:// or https:// URL"
            ))
        })?;
    let host = uri
        .host()
        .unwrap_or_default()
        .trim_end_matches('.')
        .to_ascii_lowercase();
    match node.config.domain_for(&host) {
        Some(domain) => Ok((host, domain, uri)),
        None => Err(Refused::UnknownDomain {
            url: url.to_string(),
            host,
        }),
    }
}
