//! Requests upstream: to the domain's parent cache node first when it has one,
//! then to its origins in order (plain HTTP or HTTPS), with failover, `Via` and
//! metrics. One HTTPS client per distinct TLS setting, built at start, so
//! connections are pooled and certificates are checked against the right roots
//! and name.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::{Method, StatusCode, Uri, response};
use axum::response::{IntoResponse, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_rustls::{ConfigBuilderExt, FixedServerNameResolver, HttpsConnector};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::ServerName;

use super::config::{CacheConfig, CacheDomain, OriginServer, OriginTls};
use super::metrics::{CacheMetrics, FetchResult};
use super::proxy::{CacheStatus, X_CACHE};

/// How long one upstream may take to connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long one upstream may take to send its response headers before the next
/// is tried (the body then streams, with an idle timeout of its own).
const TIMEOUT: Duration = Duration::from_secs(30);

type HttpsClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Why no upstream gave an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OriginError {
    /// No upstream could be reached or answered in time.
    Unreachable,
}

impl OriginError {
    /// The 502 a client gets.
    pub fn response(self) -> Response {
        let (status, text) = match self {
            Self::Unreachable => (StatusCode::BAD_GATEWAY, "no origin answered\n"),
        };
        (status, [(X_CACHE, CacheStatus::Miss.header())], text).into_response()
    }
}

/// An upstream's answer, its body still to come.
#[derive(Debug)]
pub struct Fetched {
    pub parts: response::Parts,
    pub body: Incoming,
}

/// The HTTP clients and what every upstream request carries.
pub struct Upstreams {
    http: Client<HttpConnector, Full<Bytes>>,
    https: Vec<(OriginTls, HttpsClient)>,
    /// `1.1 NODE-ID`, appended to `Via`.
    via: HeaderValue,
    metrics: CacheMetrics,
}

impl Upstreams {
    /// The clients for every origin in `config`. A TLS setting rustls refuses
    /// (an unusable CA certificate) is an error here, at start.
    pub fn new(config: &CacheConfig, metrics: CacheMetrics) -> Result<Self, String> {
        let mut https: Vec<(OriginTls, HttpsClient)> = Vec::new();
        for tls in config
            .domains
            .values()
            .flat_map(|d| &d.origins)
            .filter_map(|o| o.tls.as_ref())
        {
            if !https.iter().any(|(known, _)| known == tls) {
                https.push((tls.clone(), https_client(tls)?));
            }
        }
        Ok(Self {
            http: Client::builder(TokioExecutor::new()).build(http_connector()),
            https,
            via: HeaderValue::from_str(&format!("1.1 {}", config.node_id))
                .map_err(|_| format!("`node-id` {} cannot go in Via", config.node_id))?,
            metrics,
        })
    }

    /// The plain HTTP client, shared with the health pushes.
    pub fn http(&self) -> &Client<HttpConnector, Full<Bytes>> {
        &self.http
    }

    /// The value this node adds to `Via`.
    pub fn via(&self) -> &HeaderValue {
        &self.via
    }

    /// Asks the parent, then the origins in order. An upstream that cannot be
    /// connected to always gives way to the next; one that times out or answers
    /// 502/503/504 does too when `failover` (a request that is safe to repeat).
    /// The last answer or error stands.
    pub async fn fetch(
        &self,
        domain: &CacheDomain,
        method: Method,
        path_and_query: &str,
        mut headers: HeaderMap,
        body: Bytes,
        failover: bool,
    ) -> Result<Fetched, OriginError> {
        headers.append(header::VIA, self.via.clone());
        // The proxy names the host asked for (one of a wildcard domain's names);
        // anything else asks for the domain itself.
        if !headers.contains_key(header::HOST)
            && let Ok(host) = HeaderValue::from_str(&domain.name)
        {
            headers.insert(header::HOST, host);
        }
        let mut last = Err(OriginError::Unreachable);
        for upstream in domain.parent.iter().chain(&domain.origins) {
            let scheme = if upstream.tls.is_some() {
                "https"
            } else {
                "http"
            };
            let Ok(uri) = format!(
                "{scheme}://{}:{}{path_and_query}",
                upstream.host, upstream.port
            )
            .parse::<Uri>() else {
                continue;
            };
            let mut request = axum::http::Request::new(Full::new(body.clone()));
            *request.method_mut() = method.clone();
            *request.uri_mut() = uri;
            *request.headers_mut() = headers.clone();
            let started = Instant::now();
            let (result, connect_failed) =
                match tokio::time::timeout(TIMEOUT, self.attempt(upstream, request)).await {
                    Ok(Ok(fetched)) => (Ok(fetched), false),
                    Ok(Err((error, connect_failed))) => (Err(error), connect_failed),
                    Err(_) => (Err(OriginError::Unreachable), false),
                };
            let server_error = matches!(
                &result,
                Ok(f) if matches!(
                    f.parts.status,
                    StatusCode::BAD_GATEWAY
                        | StatusCode::SERVICE_UNAVAILABLE
                        | StatusCode::GATEWAY_TIMEOUT
                )
            );
            self.metrics.record_fetch(
                match &result {
                    Ok(f) if f.parts.status.is_server_error() => FetchResult::ServerError,
                    Ok(_) => FetchResult::Ok,
                    Err(_) => FetchResult::Unreachable,
                },
                started.elapsed(),
            );
            last = result;
            if (last.is_ok() && !server_error) || (!failover && !connect_failed) {
                break;
            }
            tracing::warn!(domain = %domain.name, upstream = %upstream.host, "upstream failed");
        }
        last
    }

    /// One request to one upstream; the error says whether it never connected.
    async fn attempt(
        &self,
        upstream: &OriginServer,
        request: axum::http::Request<Full<Bytes>>,
    ) -> Result<Fetched, (OriginError, bool)> {
        // TODO-robustness: an upstream may still fail mid-body; that ends the
        // client's response (see `growing`) rather than failing over.
        let sent = match &upstream.tls {
            None => self.http.request(request).await,
            Some(tls) => match self.https.iter().find(|(known, _)| known == tls) {
                Some((_, client)) => client.request(request).await,
                None => return Err((OriginError::Unreachable, true)),
            },
        };
        let response = sent.map_err(|e| {
            tracing::debug!(upstream = %upstream.host, error = %e, "upstream request failed");
            (OriginError::Unreachable, e.is_connect())
        })?;
        let (parts, body) = response.into_parts();
        Ok(Fetched { parts, body })
    }
}

/// Whether a request already passed through the node named `node_id`: its name
/// is a received-by in `Via` (RFC 9110 section 7.6.3).
pub fn came_through(headers: &HeaderMap, node_id: &str) -> bool {
    headers
        .get_all(header::VIA)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|hop| hop.split_whitespace().nth(1) == Some(node_id))
}

fn http_connector() -> HttpConnector {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
    connector.set_nodelay(true);
    connector.enforce_http(false);
    connector
}

/// An HTTPS-only client checking certificates against `tls`'s roots (the public
/// web roots by default) and name (the origin's host by default).
fn https_client(tls: &OriginTls) -> Result<HttpsClient, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match &tls.roots {
        Some(certs) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in certs {
                roots
                    .add(cert.clone())
                    .map_err(|e| format!("unusable CA certificate: {e}"))?;
            }
            builder.with_root_certificates(roots)
        }
        None => builder.with_webpki_roots(),
    };
    let config = builder.with_no_client_auth();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_only();
    let connector = match &tls.server_name {
        Some(name) => {
            let name = ServerName::try_from(name.clone())
                .map_err(|_| format!("`tls-server-name` {name} is not a DNS name"))?;
            connector.with_server_name_resolver(FixedServerNameResolver::new(name))
        }
        None => connector,
    };
    let connector = connector.enable_http1().wrap_connector(http_connector());
    Ok(Client::builder(TokioExecutor::new()).build(connector))
}
