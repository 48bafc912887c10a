//! The HTTP 302 router (`listen.http-router`): for a domain with `routing: http`,
//! `GET http://<domain>/<path>?<query>` answers `302 Found` with a `Location` on
//! the POP chosen for the client, path and query kept.
//!
//! It is a listener of its own, apart from the control plane: requests are routed
//! by their `Host`, and no customer path may ever reach an operator route. The
//! client is the connecting address (or the one a trusted proxy forwarded, see
//! `forwarded`), located and ranked by the same `Snapshot::decide` as a DNS query
//! without ECS, so overrides, health and load shedding apply alike. Within the
//! chosen POP a path is hashed onto one of its `cache-nodes` (rendezvous hashing)
//! so that a large object is cached on one node, not on all of them.
//!
//! Statuses: 302 with a short HTML body (none for HEAD); 404 for a host that is not
//! an HTTP-routed domain; 405 for methods other than GET and HEAD; 400 without a
//! usable `Host`; 503 when no POP can serve the client. Errors are plain text.

use std::net::{IpAddr, SocketAddr};

use axum::Router;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

use super::{AppState, forwarded};
use crate::config::{Pop, RoutingMode, parse_name};
use crate::routing::{Client, Family};
use crate::snapshot::{DomainId, Snapshot};

/// The router's only route: every path of every host.
pub fn router(state: AppState) -> Router {
    Router::new().fallback(handler).with_state(state)
}

/// Serves the 302 router until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    super::serve_routes(listener, router(state), shutdown).await
}

/// Answers one request.
async fn handler(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let head = method == Method::HEAD;
    if method != Method::GET && !head {
        let mut response = refuse(
            &state,
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "the router takes GET or HEAD",
        );
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    let Some((host, port)) = request_host(&uri, &headers) else {
        return refuse(
            &state,
            StatusCode::BAD_REQUEST,
            "bad_host",
            "no usable Host header",
        );
    };
    let snapshot = state.shared.load_full();
    let Some(id) = http_domain(&snapshot, &host) else {
        return refuse(
            &state,
            StatusCode::NOT_FOUND,
            "unknown_host",
            &format!("{host} is not a domain routed by HTTP here"),
        );
    };
    let trusted = &snapshot.config.doh.trusted_proxies;
    let addr = forwarded::client_address(peer, &headers, trusted);
    let family = match addr {
        IpAddr::V4(_) => Family::V4,
        IpAddr::V6(_) => Family::V6,
    };
    let decision = snapshot.decide(id, family, &Client::from_source(addr));
    let Some(pop_id) = decision.first else {
        return refuse(
            &state,
            StatusCode::SERVICE_UNAVAILABLE,
            "no_pop",
            "no POP can serve this client",
        );
    };
    if decision.fail_open {
        state.metrics.fail_open();
    }
    let pop = snapshot.config.pop(pop_id);
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let Some(target) = target_host(pop, family, uri.path()) else {
        return refuse(
            &state,
            StatusCode::SERVICE_UNAVAILABLE,
            "no_pop",
            "the chosen POP has no address to redirect to",
        );
    };
    let scheme = if forwarded::forwarded_https(peer, &headers, trusted) {
        "https"
    } else {
        "http"
    };
    let port = port.map(|p| format!(":{p}")).unwrap_or_default();
    let location = format!("{scheme}://{target}{port}{path}");
    let Ok(location_value) = HeaderValue::from_str(&location) else {
        return refuse(
            &state,
            StatusCode::BAD_REQUEST,
            "bad_host",
            "the target is not a valid URL",
        );
    };
    state.metrics.redirect(&pop.id);
    let body = if head {
        String::new()
    } else {
        let link = escape_html(&location);
        format!(
            "<!DOCTYPE html>\n<html><head><title>302 Found</title></head><body><p>Moved to <a href=\"{link}\">{link}</a></p></body></html>\n"
        )
    };
    (
        StatusCode::FOUND,
        [
            (header::LOCATION, location_value),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_str(&format!("private, max-age={}", decision.ttl))
                    .unwrap_or_else(|_| HeaderValue::from_static("private, max-age=0")),
            ),
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
        ],
        body,
    )
        .into_response()
}

/// The host asked for (lower case, no trailing dot) and the port if one was given:
/// from the `Host` header, else the request target's authority (HTTP/2).
fn request_host(uri: &Uri, headers: &HeaderMap) -> Option<(String, Option<u16>)> {
    let authority = match headers.get(header::HOST) {
        Some(value) => value
            .to_str()
            .ok()?
            .parse::<axum::http::uri::Authority>()
            .ok()?,
        None => uri.authority()?.clone(),
    };
    let host = authority.host().trim_end_matches('.').to_ascii_lowercase();
    (!host.is_empty()).then_some((host, authority.port_u16()))
}

/// The HTTP-routed domain a host names: the customer's name (`download.example.com`)
/// or the served one under the CDN suffix; wildcards as DNS has them.
fn http_domain(snapshot: &Snapshot, host: &str) -> Option<DomainId> {
    let name = parse_name(host).ok()?;
    let suffix = &snapshot.config.cdn_suffix;
    let id = if suffix.zone_of(&name) {
        snapshot.domain_for(&name)
    } else {
        snapshot.domain_for(&name.append_domain(suffix).ok()?)
    }?;
    (snapshot.domain(id).routing == RoutingMode::Http).then_some(id)
}

/// Where in the POP a path goes: one of its cache nodes by rendezvous hashing of
/// the path, else its `redirect-host`, else its first address of the family.
fn target_host(pop: &Pop, family: Family, path: &str) -> Option<String> {
    if let Some(node) = pop
        .cache_nodes
        .iter()
        .max_by_key(|node| rendezvous_weight(node, path))
    {
        return Some(node.clone());
    }
    if let Some(host) = &pop.redirect_host {
        return Some(host.clone());
    }
    match family {
        Family::V4 => pop.ipv4.first().map(ToString::to_string),
        Family::V6 => pop.ipv6.first().map(|a| format!("[{a}]")),
    }
    .or_else(|| pop.ipv4.first().map(ToString::to_string))
    .or_else(|| pop.ipv6.first().map(|a| format!("[{a}]")))
}

/// Highest-random-weight hashing (Thaler and Ravishankar 1998): a path goes to the
/// node whose (node, path) hash is highest, so adding or removing a node moves only
/// the paths that node gains or held. A fixed function (FNV-1a, then SplitMix64's
/// finalizer), with no per-process key: every Meridian instance sends a path to the
/// same node.
pub fn rendezvous_weight(node: &str, path: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let bytes = node
        .bytes()
        .chain(std::iter::once(0xff))
        .chain(path.bytes());
    for byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash = (hash ^ (hash >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    hash = (hash ^ (hash >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    hash ^ (hash >> 31)
}

/// A plain-text error, counted by `reason`.
fn refuse(state: &AppState, status: StatusCode, reason: &'static str, message: &str) -> Response {
    state.metrics.redirect_error(reason);
    (status, format!("{message}\n")).into_response()
}

fn escape_html(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_come_from_the_host_header_or_the_authority() {
        let uri: Uri = "/a?b".parse().expect("uri");
        let mut headers = HeaderMap::new();
        assert_eq!(request_host(&uri, &headers), None);
        headers.insert(
            header::HOST,
            "Download.Example.COM.:8080".parse().expect("host"),
        );
        assert_eq!(
            request_host(&uri, &headers),
            Some(("download.example.com".into(), Some(8080)))
        );
        let uri: Uri = "http://www.example.com/x".parse().expect("uri");
        assert_eq!(
            request_host(&uri, &HeaderMap::new()),
            Some(("www.example.com".into(), None))
        );
        headers.insert(header::HOST, "bad host".parse().expect("value"));
        assert_eq!(request_host(&uri, &headers), None);
    }

    #[test]
    fn rendezvous_is_stable_and_spreads() {
        let nodes = ["a.fra", "b.fra", "c.fra", "d.fra"];
        let pick = |path: &str| {
            nodes
                .iter()
                .max_by_key(|n| rendezvous_weight(n, path))
                .copied()
                .expect("a node")
        };
        assert_eq!(pick("/video/1.mp4"), pick("/video/1.mp4"));
        let mut counts = std::collections::HashMap::new();
        for i in 0..4000 {
            *counts.entry(pick(&format!("/object/{i}"))).or_insert(0) += 1;
        }
        assert_eq!(counts.len(), 4);
        for count in counts.values() {
            assert!((800..1200).contains(count), "{counts:?}");
        }
        // Removing a node moves only the paths it held.
        let fewer = ["a.fra", "b.fra", "c.fra"];
        for i in 0..1000 {
            let path = format!("/object/{i}");
            let before = pick(&path);
            let after = fewer
                .iter()
                .max_by_key(|n| rendezvous_weight(n, &path))
                .copied()
                .expect("a node");
            if before != "d.fra" {
                assert_eq!(before, after, "{path}");
            }
        }
    }

    #[test]
    fn html_is_escaped() {
        assert_eq!(escape_html("a<b>&\"c"), "a&lt;b&gt;&amp;&quot;c");
    }
}
