//! The cache node's serving path over real connections: ranges and conditional
//! requests answered from the cache, stale-while-revalidate and stale-if-error,
//! HTTPS origins, a parent tier and `Via`, and the node's `/metrics`. Each test
//! starts an in-test origin (recording what it is asked) and cache nodes, all on
//! port 0.

mod common;

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use common::cache::{HTTP_TIMEOUT, reaching, start_node, x_cache};
use meridian::cache::{CacheConfig, CacheNode};
use prometheus_parse::{Scrape, Value};
use reqwest::Client;
use tokio::sync::{Notify, oneshot, watch};

const DOMAIN: &str = "www.example.test";
const LAST_MODIFIED: &str = "Sun, 06 Nov 1994 08:49:37 GMT";

/// A binary object whose every byte depends on its offset, so a wrong slice shows.
fn binary() -> Vec<u8> {
    (0..5000u32).map(|i| (i * 7 + i / 256) as u8).collect()
}

/// Like [`binary`], but large enough to be kept in a file and sent from it.
fn large() -> Vec<u8> {
    (0..300 * 1024u32)
        .map(|i| (i * 7 + i / 256 + i / 65536) as u8)
        .collect()
}

/// An in-test origin: answers by path, records what it was asked.
#[derive(Clone, Default)]
struct Origin {
    seen: Arc<Mutex<HashMap<String, Vec<HeaderMap>>>>,
    /// Answers every request 503 while set.
    failing: Arc<AtomicBool>,
    /// `/swr` refreshes wait for this before answering.
    release: Arc<Notify>,
    /// Requests to `/swr` that arrived.
    swr_arrived: Arc<watch::Sender<usize>>,
}

impl Origin {
    fn router(&self) -> Router {
        Router::new().fallback(answer).with_state(self.clone())
    }

    /// Serves plain HTTP until the returned sender is used or dropped.
    async fn start(&self) -> (SocketAddr, oneshot::Sender<()>) {
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind origin");
        let addr = listener.local_addr().expect("origin address");
        let (stop, stopped) = oneshot::channel::<()>();
        let app = self.router();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await
        });
        (addr, stop)
    }

    fn count(&self, path: &str) -> usize {
        self.seen
            .lock()
            .expect("seen")
            .get(path)
            .map_or(0, Vec::len)
    }

    /// The headers of the last request for `path`.
    fn last(&self, path: &str) -> HeaderMap {
        self.seen.lock().expect("seen")[path]
            .last()
            .cloned()
            .expect("a request")
    }
}

async fn answer(State(origin): State<Origin>, request: Request) -> Response {
    let path = request.uri().path().to_string();
    let count = {
        let mut seen = origin.seen.lock().expect("seen");
        let requests = seen.entry(path.clone()).or_default();
        requests.push(request.headers().clone());
        requests.len()
    };
    if origin.failing.load(Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, "origin down\n").into_response();
    }
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("")
        .to_string();
    let if_none_match = request.headers().get(header::IF_NONE_MATCH).cloned();
    match path.as_str() {
        "/bin" => (
            [
                (header::CACHE_CONTROL, "max-age=60"),
                (header::ETAG, "\"b1\""),
                (header::LAST_MODIFIED, LAST_MODIFIED),
            ],
            binary(),
        )
            .into_response(),
        "/large" => ([(header::CACHE_CONTROL, "max-age=60")], large()).into_response(),
        "/reval" => {
            if if_none_match.is_some_and(|v| v == "\"r1\"") {
                return (StatusCode::NOT_MODIFIED, [(header::ETAG, "\"r1\"")]).into_response();
            }
            (
                [
                    (header::CACHE_CONTROL, "max-age=0"),
                    (header::ETAG, "\"r1\""),
                    (header::LAST_MODIFIED, LAST_MODIFIED),
                ],
                "revalidated",
            )
                .into_response()
        }
        "/swr" if count == 1 => (
            [(
                header::CACHE_CONTROL,
                "max-age=0, stale-while-revalidate=600",
            )],
            "v1",
        )
            .into_response(),
        "/swr" => {
            origin.swr_arrived.send_modify(|n| *n = count);
            origin.release.notified().await;
            ([(header::CACHE_CONTROL, "max-age=600")], "v2").into_response()
        }
        "/sie" => (
            [(header::CACHE_CONTROL, "max-age=0, stale-if-error=600")],
            "kept",
        )
            .into_response(),
        "/nosie" => ([(header::CACHE_CONTROL, "max-age=0")], "plain").into_response(),
        "/obj" => (
            [(header::CACHE_CONTROL, "max-age=60")],
            format!("object for {host}"),
        )
            .into_response(),
        "/blob" => ([(header::CACHE_CONTROL, "max-age=60")], vec![7u8; 4096]).into_response(),
        // The first part at once, the rest when the test says.
        "/stream" => {
            let release = origin.release.clone();
            let parts = futures_util::stream::unfold(0, move |step| {
                let release = release.clone();
                async move {
                    match step {
                        0 => Some((Ok::<_, std::io::Error>(&b"first part|"[..]), 1)),
                        1 => {
                            release.notified().await;
                            Some((Ok(&b"second part"[..]), 2))
                        }
                        _ => None,
                    }
                }
            });
            (
                [(header::CACHE_CONTROL, "max-age=60")],
                Body::from_stream(parts),
            )
                .into_response()
        }
        // A first part, then the origin fails mid-body when the test says.
        "/broken" => {
            let release = origin.release.clone();
            let parts = futures_util::stream::unfold(0, move |step| {
                let release = release.clone();
                async move {
                    match step {
                        0 => Some((Ok(&b"partial"[..]), 1)),
                        1 => {
                            release.notified().await;
                            Some((Err(std::io::Error::other("origin crashed")), 2))
                        }
                        _ => None,
                    }
                }
            });
            (
                [(header::CACHE_CONTROL, "max-age=60")],
                Body::from_stream(parts),
            )
                .into_response()
        }
        _ => (StatusCode::NOT_FOUND, "no such object\n").into_response(),
    }
}

/// An origin line of the node config.
fn http_origin(addr: SocketAddr) -> String {
    format!(
        "      - {{ host: {}, port: {}, scheme: http }}\n",
        addr.ip(),
        addr.port()
    )
}

/// A cache node config: `origins` are origin lines, `node` extra node-wide keys.
fn node_yaml(pop: &str, origins: &str, node: &str) -> String {
    format!(
        "version: 1
listen: 127.0.0.1:0
pop: {pop}
memory-budget: 67108864
{node}domains:
  - name: {DOMAIN}
    origins:
{origins}    cache:
      query-string:
        only: [v]
"
    )
}

fn client(node: &CacheNode) -> Client {
    reaching(node, &[DOMAIN, "evil.test"])
        .build()
        .expect("client")
}

fn url(node: &CacheNode, path: &str) -> String {
    format!("http://{DOMAIN}:{}{path}", node.addr().port())
}

/// Every `Via` hop, in order.
fn via(headers: &HeaderMap) -> String {
    let hops: Vec<_> = headers
        .get_all(header::VIA)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    hops.join(", ")
}

/// GET with extra headers: status, headers, body bytes.
async fn get(
    client: &Client,
    url: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, HeaderMap, Vec<u8>) {
    let mut request = client.get(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("GET");
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.bytes().await.expect("body").to_vec();
    (status, headers, body)
}

/// Polls `check` until it holds; panics after the deadline.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + HTTP_TIMEOUT;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn ranges_are_answered_from_the_cache() {
    let origin = Origin::default();
    let (addr, _stop) = origin.start().await;
    let node = start_node(&node_yaml("fra", &http_origin(addr), "")).await;
    let client = client(&node);
    let object = binary();
    let bin = url(&node, "/bin");

    // A miss fills the whole object and answers the slice.
    let (status, headers, body) = get(&client, &bin, &[("range", "bytes=0-9")]).await;
    assert_eq!(
        (status, x_cache(&headers)),
        (StatusCode::PARTIAL_CONTENT, "MISS")
    );
    assert_eq!(body, &object[0..10]);
    assert_eq!(headers[header::CONTENT_RANGE], "bytes 0-9/5000");
    assert!(
        !origin.last("/bin").contains_key(header::RANGE),
        "Range is never forwarded"
    );
    for (range, expected) in [
        ("bytes=4990-", 4990..5000),
        ("bytes=-7", 4993..5000),
        ("bytes=1000-1999", 1000..2000),
        ("bytes=4000-9999", 4000..5000),
    ] {
        let (status, headers, body) = get(&client, &bin, &[("range", range)]).await;
        assert_eq!(status, StatusCode::PARTIAL_CONTENT, "{range}");
        assert_eq!(x_cache(&headers), "HIT", "{range}");
        assert_eq!(body, &object[expected.clone()], "{range}");
        let content_range = format!("bytes {}-{}/5000", expected.start, expected.end - 1);
        assert_eq!(headers[header::CONTENT_RANGE], content_range.as_str());
    }
    // Past the end: 416 with the length.
    let (status, headers, _) = get(&client, &bin, &[("range", "bytes=5000-")]).await;
    assert_eq!(status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(headers[header::CONTENT_RANGE], "bytes */5000");
    // Several ranges: the whole object.
    let (status, _, body) = get(&client, &bin, &[("range", "bytes=0-1,10-11")]).await;
    assert_eq!((status, body.len()), (StatusCode::OK, 5000));
    // If-Range: a matching strong ETag keeps the range, anything else gets it all.
    let (status, _, body) = get(
        &client,
        &bin,
        &[("range", "bytes=10-19"), ("if-range", "\"b1\"")],
    )
    .await;
    assert_eq!(
        (status, body.as_slice()),
        (StatusCode::PARTIAL_CONTENT, &object[10..20])
    );
    for validator in ["\"b0\"", "Sat, 05 Nov 1994 08:49:37 GMT"] {
        let (status, headers, body) = get(
            &client,
            &bin,
            &[("range", "bytes=10-19"), ("if-range", validator)],
        )
        .await;
        assert_eq!(
            (status, body),
            (StatusCode::OK, object.clone()),
            "{validator}"
        );
        assert_eq!(headers[header::ACCEPT_RANGES], "bytes");
    }
    let (status, _, _) = get(
        &client,
        &bin,
        &[("range", "bytes=10-19"), ("if-range", LAST_MODIFIED)],
    )
    .await;
    assert_eq!(status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(origin.count("/bin"), 1);
}

#[tokio::test]
async fn large_objects_are_served_whole_and_in_parts() {
    let origin = Origin::default();
    let (addr, _stop) = origin.start().await;
    let node = start_node(&node_yaml("fra", &http_origin(addr), "")).await;
    let client = client(&node);
    let object = large();
    let path = url(&node, "/large");

    let (status, headers, body) = get(&client, &path, &[]).await;
    assert_eq!((status, x_cache(&headers)), (StatusCode::OK, "MISS"));
    assert!(body == object, "the miss is the origin's object");
    // Hits, one after another on a kept-alive connection and side by side.
    for _ in 0..3 {
        let (status, headers, body) = get(&client, &path, &[]).await;
        assert_eq!((status, x_cache(&headers)), (StatusCode::OK, "HIT"));
        assert_eq!(headers[header::CONTENT_LENGTH], "307200");
        assert!(body == object, "a hit is the whole object");
    }
    let side_by_side: Vec<_> = (0..8)
        .map(|_| {
            let (client, path) = (client.clone(), path.clone());
            tokio::spawn(async move { get(&client, &path, &[]).await })
        })
        .collect();
    for hit in side_by_side {
        let (status, _, body) = hit.await.expect("hit");
        assert!(status == StatusCode::OK && body == object);
    }
    // Parts from anywhere in it, small and large.
    for (range, expected) in [
        ("bytes=5-9", 5..10),
        ("bytes=40000-250000", 40000..250001),
        ("bytes=-70000", 237200..307200),
    ] {
        let (status, headers, body) = get(&client, &path, &[("range", range)]).await;
        assert_eq!(
            (status, x_cache(&headers)),
            (StatusCode::PARTIAL_CONTENT, "HIT")
        );
        assert!(body == object[expected], "{range}");
    }
    let head = client.head(&path).send().await.expect("HEAD");
    assert_eq!(head.headers()[header::CONTENT_LENGTH], "307200");
    assert_eq!(origin.count("/large"), 1);
}

#[tokio::test]
async fn if_modified_since_is_answered_from_the_cache() {
    let origin = Origin::default();
    let (addr, _stop) = origin.start().await;
    let node = start_node(&node_yaml("fra", &http_origin(addr), "")).await;
    let client = client(&node);
    let bin = url(&node, "/bin");
    let (status, headers, body) = get(&client, &bin, &[("if-modified-since", LAST_MODIFIED)]).await;
    assert_eq!(
        (status, x_cache(&headers)),
        (StatusCode::NOT_MODIFIED, "MISS")
    );
    assert!(body.is_empty());
    let later = "Mon, 07 Nov 1994 08:49:37 GMT";
    let (status, headers, _) = get(&client, &bin, &[("if-modified-since", later)]).await;
    assert_eq!(
        (status, x_cache(&headers)),
        (StatusCode::NOT_MODIFIED, "HIT")
    );
    let earlier = "Sat, 05 Nov 1994 08:49:37 GMT";
    let (status, _, body) = get(&client, &bin, &[("if-modified-since", earlier)]).await;
    assert_eq!((status, body.len()), (StatusCode::OK, 5000));
    // If-None-Match decides when both are sent (RFC 9110 section 13.2.2).
    let (status, _, _) = get(
        &client,
        &bin,
        &[("if-none-match", "\"b0\""), ("if-modified-since", later)],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(origin.count("/bin"), 1);
}

#[tokio::test]
async fn revalidation_sends_both_validators() {
    let origin = Origin::default();
    let (addr, _stop) = origin.start().await;
    let node = start_node(&node_yaml("fra", &http_origin(addr), "")).await;
    let client = client(&node);
    get(&client, &url(&node, "/reval"), &[]).await;
    let (status, headers, body) = get(&client, &url(&node, "/reval"), &[]).await;
    assert_eq!(
        (status, x_cache(&headers), body.as_slice()),
        (StatusCode::OK, "REVALIDATED", b"revalidated".as_slice())
    );
    let asked = origin.last("/reval");
    assert_eq!(asked[header::IF_NONE_MATCH], "\"r1\"");
    assert_eq!(asked[header::IF_MODIFIED_SINCE], LAST_MODIFIED);
}

#[tokio::test]
async fn stale_while_revalidate_answers_at_once_and_refreshes_once() {
    let origin = Origin::default();
    let (addr, _stop) = origin.start().await;
    let node = start_node(&node_yaml("fra", &http_origin(addr), "")).await;
    let client = client(&node);
    let swr = url(&node, "/swr");
    let (_, headers, body) = get(&client, &swr, &[]).await;
    assert_eq!(
        (x_cache(&headers), body.as_slice()),
        ("MISS", b"v1".as_slice())
    );
    // Stale within the window: answered from the cache while the origin holds
    // the refresh (so the answer cannot have waited for it).
    let (status, headers, body) = get(&client, &swr, &[]).await;
    assert_eq!(
        (status, x_cache(&headers), body.as_slice()),
        (StatusCode::OK, "STALE", b"v1".as_slice())
    );
    let mut arrived = origin.swr_arrived.subscribe();
    tokio::time::timeout(HTTP_TIMEOUT, arrived.wait_for(|n| *n >= 2))
        .await
        .expect("the refresh reaches the origin")
        .expect("origin alive");
    // More stale requests meanwhile join that one refresh.
    for _ in 0..3 {
        let (_, headers, body) = get(&client, &swr, &[]).await;
        assert_eq!(
            (x_cache(&headers), body.as_slice()),
            ("STALE", b"v1".as_slice())
        );
    }
    origin.release.notify_one();
    eventually("the refreshed object", || async {
        let (_, headers, body) = get(&client, &swr, &[]).await;
        x_cache(&headers) == "HIT" && body == b"v2"
    })
    .await;
    assert_eq!(origin.count("/swr"), 2);
}

#[tokio::test]
async fn stale_if_error_when_the_origin_fails_or_dies() {
    let origin = Origin::default();
    let (addr, stop) = origin.start().await;
    let node = start_node(&node_yaml("fra", &http_origin(addr), "")).await;
    let client = client(&node);
    for path in ["/sie", "/nosie"] {
        let (status, headers, _) = get(&client, &url(&node, path), &[]).await;
        assert_eq!((status, x_cache(&headers)), (StatusCode::OK, "MISS"));
    }
    // The origin answers 503: stale within `stale-if-error`, else the 503.
    origin.failing.store(true, Ordering::SeqCst);
    let (status, headers, body) = get(&client, &url(&node, "/sie"), &[]).await;
    assert_eq!(
        (status, x_cache(&headers), body.as_slice()),
        (StatusCode::OK, "STALE", b"kept".as_slice())
    );
    let (status, _, _) = get(&client, &url(&node, "/nosie"), &[]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    // The origin is gone: the same.
    stop.send(()).expect("origin running");
    eventually("the origin to stop listening", || async {
        tokio::net::TcpStream::connect(addr).await.is_err()
    })
    .await;
    let (status, headers, body) = get(&client, &url(&node, "/sie"), &[]).await;
    assert_eq!(
        (status, x_cache(&headers), body.as_slice()),
        (StatusCode::OK, "STALE", b"kept".as_slice())
    );
    let (status, _, _) = get(&client, &url(&node, "/nosie"), &[]).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
}

#[tokio::test]
async fn domain_defaults_allow_stale_if_error() {
    let origin = Origin::default();
    let (addr, _stop) = origin.start().await;
    let yaml = node_yaml("fra", &http_origin(addr), "")
        .replace("    cache:\n", "    cache:\n      stale-if-error: 60\n");
    let node = start_node(&yaml).await;
    let client = client(&node);
    get(&client, &url(&node, "/nosie"), &[]).await;
    origin.failing.store(true, Ordering::SeqCst);
    let (status, headers, body) = get(&client, &url(&node, "/nosie"), &[]).await;
    assert_eq!(
        (status, x_cache(&headers), body.as_slice()),
        (StatusCode::OK, "STALE", b"plain".as_slice())
    );
}

/// Serves `origin` over TLS with a self-signed certificate for `origin.test`;
/// returns the address and the certificate (PEM) to trust.
async fn start_tls_origin(origin: &Origin) -> (SocketAddr, String) {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::service::TowerToHyperService;
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

    let made =
        rcgen::generate_simple_self_signed(vec!["origin.test".to_string()]).expect("certificate");
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(made.key_pair.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocols")
        .with_no_client_auth()
        .with_single_cert(vec![made.cert.der().clone()], key)
        .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .expect("bind TLS origin");
    let addr = listener.local_addr().expect("address");
    let app = origin.router();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, app) = (acceptor.clone(), app.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), TowerToHyperService::new(app))
                    .await;
            });
        }
    });
    (addr, made.cert.pem())
}

#[tokio::test]
async fn https_origin_with_its_own_ca() {
    let origin = Origin::default();
    let (addr, ca) = start_tls_origin(&origin).await;
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("ca.pem"), ca).expect("CA file");
    let https = format!(
        "      - {{ host: 127.0.0.1, port: {}, scheme: https, tls-server-name: origin.test, ca-file: ca.pem }}\n",
        addr.port()
    );
    let config = CacheConfig::parse(
        &node_yaml("fra", &https, ""),
        &dir.path().join("cache.yaml"),
    )
    .expect("config");
    let node = meridian::cache::start(config).await.expect("node");
    let client = client(&node);
    let (status, headers, body) = get(&client, &url(&node, "/obj"), &[]).await;
    assert_eq!((status, x_cache(&headers)), (StatusCode::OK, "MISS"));
    assert_eq!(body, format!("object for {DOMAIN}").as_bytes());
    let (_, headers, _) = get(&client, &url(&node, "/obj"), &[]).await;
    assert_eq!(x_cache(&headers), "HIT");
    assert_eq!(origin.count("/obj"), 1);

    // Checked against the public roots instead, the self-signed origin is
    // refused: no answer from it.
    let untrusted = https.replace(", ca-file: ca.pem", "");
    let node = start_node(&node_yaml("fra", &untrusted, "")).await;
    let (status, _, _) = get(&self::client(&node), &url(&node, "/obj"), &[]).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(origin.count("/obj"), 1);
}

#[tokio::test]
async fn edge_misses_go_through_the_parent_tier() {
    let origin = Origin::default();
    let (addr, _stop) = origin.start().await;
    let parent = start_node(&node_yaml("par", &http_origin(addr), "")).await;
    let with_parent = format!(
        "parent: {{ host: 127.0.0.1, port: {} }}\n",
        parent.addr().port()
    );
    let edges = [
        start_node(&node_yaml("fra", &http_origin(addr), &with_parent)).await,
        start_node(&node_yaml("ams", &http_origin(addr), &with_parent)).await,
    ];
    let (status, headers, body) = get(&client(&edges[0]), &url(&edges[0], "/obj"), &[]).await;
    assert_eq!((status, x_cache(&headers)), (StatusCode::OK, "MISS"));
    // The origin saw the accelerated domain's Host, through the parent.
    assert_eq!(body, format!("object for {DOMAIN}").as_bytes());
    assert_eq!(via(&origin.last("/obj")), "1.1 fra, 1.1 par", "both tiers");
    // The second edge's miss is the parent's hit.
    let (status, headers, _) = get(&client(&edges[1]), &url(&edges[1], "/obj"), &[]).await;
    assert_eq!((status, x_cache(&headers)), (StatusCode::OK, "MISS"));
    assert_eq!(via(&headers), "1.1 par, 1.1 ams");
    assert_eq!(origin.count("/obj"), 1);

    // A parent that cannot be reached: straight to the origins.
    let dead = {
        let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        listener.local_addr().expect("address")
    };
    let to_dead = format!("parent: {{ host: 127.0.0.1, port: {} }}\n", dead.port());
    let edge = start_node(&node_yaml("cdg", &http_origin(addr), &to_dead)).await;
    let (status, _, _) = get(&client(&edge), &url(&edge, "/obj"), &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(origin.count("/obj"), 2);
    assert_eq!(via(&origin.last("/obj")), "1.1 cdg");
}

#[tokio::test]
async fn a_request_that_looped_back_is_refused() {
    let origin = Origin::default();
    let (addr, _stop) = origin.start().await;
    let node = start_node(&node_yaml(
        "fra",
        &http_origin(addr),
        "node-id: fra-edge-1\n",
    ))
    .await;
    let client = client(&node);
    let (status, _, _) = get(
        &client,
        &url(&node, "/obj"),
        &[("via", "1.1 par, 1.1 fra-edge-1 (meridian)")],
    )
    .await;
    assert_eq!(status, StatusCode::LOOP_DETECTED);
    let (status, headers, _) = get(&client, &url(&node, "/obj"), &[("via", "1.1 fra")]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(via(&headers), "1.1 fra-edge-1");
    assert_eq!(origin.count("/obj"), 1);
}

/// A scrape of the node's `/metrics`.
struct Scraped(Scrape);

impl Scraped {
    async fn from(node: &CacheNode) -> Self {
        let at = node.metrics_addr().expect("metrics-listen set");
        let text = reqwest::get(format!("http://{at}/metrics"))
            .await
            .expect("scrape")
            .text()
            .await
            .expect("scrape body");
        Self(Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("text format"))
    }

    /// The series with exactly these labels (0 when absent).
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let found: Vec<f64> = self
            .0
            .samples
            .iter()
            .filter(|s| {
                s.metric == name
                    && s.labels.len() == labels.len()
                    && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v))
            })
            .map(|s| match &s.value {
                Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
                Value::Histogram(buckets) => buckets.last().map_or(0.0, |b| b.count),
                Value::Summary(_) => panic!("{name}: no summaries here"),
            })
            .collect();
        assert!(found.len() <= 1, "{name} {labels:?}: one series");
        found.first().copied().unwrap_or(0.0)
    }
}

#[tokio::test]
async fn metrics_count_known_traffic() {
    let origin = Origin::default();
    let (addr, _stop) = origin.start().await;
    let yaml = node_yaml("fra", &http_origin(addr), "metrics-listen: 127.0.0.1:0\n")
        .replace("memory-budget: 67108864", "memory-budget: 65536");
    let node = start_node(&yaml).await;
    let client = client(&node);
    let object = format!("object for {DOMAIN}");
    for expected in ["MISS", "HIT", "HIT"] {
        let (_, headers, _) = get(&client, &url(&node, "/obj"), &[]).await;
        assert_eq!(x_cache(&headers), expected);
    }
    let (_, headers, _) = get(&client, &url(&node, "/obj"), &[("range", "bytes=0-4")]).await;
    assert_eq!(x_cache(&headers), "HIT");
    let posted = client
        .post(url(&node, "/missing"))
        .body("x")
        .send()
        .await
        .expect("POST");
    assert_eq!(posted.status(), StatusCode::NOT_FOUND);
    let (status, _, _) = get(
        &client,
        &format!("http://evil.test:{}/obj", node.addr().port()),
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::MISDIRECTED_REQUEST);

    let scrape = Scraped::from(&node).await;
    let requests = "meridian_cache_requests_total";
    assert_eq!(
        scrape.value(requests, &[("status", "2xx"), ("cache", "miss")]),
        1.0
    );
    assert_eq!(
        scrape.value(requests, &[("status", "2xx"), ("cache", "hit")]),
        3.0
    );
    assert_eq!(
        scrape.value(requests, &[("status", "4xx"), ("cache", "bypass")]),
        1.0
    );
    assert_eq!(
        scrape.value(requests, &[("status", "4xx"), ("cache", "none")]),
        1.0
    );
    let bodies =
        3 * object.len() + 5 + "no such object\n".len() + "this host is not served here\n".len();
    assert_eq!(
        scrape.value("meridian_cache_served_bytes_total", &[]),
        bodies as f64
    );
    assert_eq!(
        scrape.value("meridian_cache_origin_fetches_total", &[("result", "ok")]),
        2.0
    );
    assert_eq!(
        scrape.value(
            "meridian_cache_origin_fetch_duration_seconds",
            &[("result", "ok")]
        ),
        2.0
    );
    assert_eq!(scrape.value("meridian_cache_objects", &[]), 1.0);
    assert!(scrape.value("meridian_cache_stored_bytes", &[]) > object.len() as f64);
    assert_eq!(scrape.value("meridian_cache_evictions_total", &[]), 0.0);

    // 4 KiB objects well past the 64 KiB budget: some are evicted, and what is
    // left plus what went is everything stored.
    for v in 0..40 {
        let (status, _, _) = get(&client, &url(&node, &format!("/blob?v={v}")), &[]).await;
        assert_eq!(status, StatusCode::OK);
    }
    let scrape = Scraped::from(&node).await;
    let evicted = scrape.value("meridian_cache_evictions_total", &[]);
    assert!(evicted > 0.0, "evictions counted");
    assert_eq!(scrape.value("meridian_cache_objects", &[]) + evicted, 41.0);
    assert!(scrape.value("meridian_cache_stored_bytes", &[]) <= 65536.0);
}

/// Reads from a streamed response until `n` bytes have come.
async fn read_at_least(response: &mut reqwest::Response, n: usize) -> Vec<u8> {
    let mut got = Vec::new();
    while got.len() < n {
        let chunk = tokio::time::timeout(HTTP_TIMEOUT, response.chunk())
            .await
            .expect("a chunk in time")
            .expect("body readable")
            .expect("more body");
        got.extend_from_slice(&chunk);
    }
    got
}

#[tokio::test]
async fn a_fill_streams_to_its_client_and_to_waiters() {
    let origin = Origin::default();
    let (addr, _stop) = origin.start().await;
    let node = start_node(&node_yaml("fra", &http_origin(addr), "")).await;
    let client = client(&node);
    let stream = url(&node, "/stream");
    // The origin holds back its second part: both the client that caused the
    // fill and one that joined it read the first part meanwhile.
    let mut first = client.get(&stream).send().await.expect("GET");
    assert_eq!(x_cache(first.headers()), "MISS");
    assert_eq!(read_at_least(&mut first, 11).await, b"first part|");
    let mut joined = client.get(&stream).send().await.expect("GET");
    assert_eq!(x_cache(joined.headers()), "HIT");
    assert_eq!(read_at_least(&mut joined, 11).await, b"first part|");
    // One more after the joined one has its answer under way: still the same fill.
    let mut late = client.get(&stream).send().await.expect("GET");
    assert_eq!(x_cache(late.headers()), "HIT");
    assert_eq!(read_at_least(&mut late, 11).await, b"first part|");
    origin.release.notify_one();
    for mut response in [first, joined, late] {
        assert_eq!(read_at_least(&mut response, 11).await, b"second part");
        assert!(response.chunk().await.expect("end").is_none());
    }
    // Complete, and stored whole.
    let (_, headers, body) = get(&client, &stream, &[]).await;
    assert_eq!(
        (x_cache(&headers), body.as_slice()),
        ("HIT", b"first part|second part".as_slice())
    );
    assert_eq!(origin.count("/stream"), 1);
}

#[tokio::test]
async fn an_origin_failing_mid_body_aborts_and_stores_nothing() {
    let origin = Origin::default();
    let (addr, _stop) = origin.start().await;
    let node = start_node(&node_yaml("fra", &http_origin(addr), "")).await;
    let client = client(&node);
    for _ in 0..2 {
        let mut response = client.get(url(&node, "/broken")).send().await.expect("GET");
        assert_eq!(x_cache(response.headers()), "MISS");
        assert_eq!(read_at_least(&mut response, 7).await, b"partial");
        origin.release.notify_one();
        let rest = tokio::time::timeout(HTTP_TIMEOUT, response.bytes())
            .await
            .expect("the end in time");
        assert!(rest.is_err(), "a truncated body is an error: {rest:?}");
    }
    assert_eq!(origin.count("/broken"), 2, "the half object was not cached");
}

#[tokio::test]
async fn objects_over_the_size_limit_stream_through_uncached() {
    let origin = Origin::default();
    let (addr, _stop) = origin.start().await;
    let yaml = node_yaml("fra", &http_origin(addr), "max-object-size: 1000\n");
    let node = start_node(&yaml).await;
    let client = client(&node);
    for _ in 0..2 {
        let (status, headers, body) = get(&client, &url(&node, "/bin"), &[]).await;
        assert_eq!((status, x_cache(&headers)), (StatusCode::OK, "MISS"));
        assert_eq!(body, binary());
    }
    // Not stored, so a range gets the whole object streamed.
    let (status, _, body) = get(&client, &url(&node, "/bin"), &[("range", "bytes=0-9")]).await;
    assert_eq!((status, body.len()), (StatusCode::OK, 5000));
    assert_eq!(origin.count("/bin"), 3);
    // Small objects are still cached.
    get(&client, &url(&node, "/obj"), &[]).await;
    let (_, headers, _) = get(&client, &url(&node, "/obj"), &[]).await;
    assert_eq!(x_cache(&headers), "HIT");
}

/// A plain request's hit (answered from headers made ready at storing) and the
/// same request with a directive that changes nothing (answered by asking the
/// policy) get the same response: status, headers and body, for a whole
/// object, a range, a HEAD and a conditional request. Both carry an HTTP date.
#[tokio::test]
async fn plain_hits_answer_as_the_policy_does() {
    let origin = Origin::default();
    let (addr, _stop) = origin.start().await;
    let node = start_node(&node_yaml("fra", &http_origin(addr), "")).await;
    let client = client(&node);
    let bin = url(&node, "/bin");
    get(&client, &bin, &[]).await;
    let asks: [&[(&str, &str)]; 3] = [
        &[],
        &[("range", "bytes=10-19")],
        &[("if-none-match", "\"b1\"")],
    ];
    for ask in asks {
        // Within one second, so that `Age` and `Date` agree too; retried otherwise.
        let mut tries = 0;
        let (plain, by_policy) = loop {
            let plain = get(&client, &bin, ask).await;
            let mut directive = ask.to_vec();
            directive.push(("cache-control", "max-stale=0"));
            let by_policy = get(&client, &bin, &directive).await;
            tries += 1;
            if plain.1.get(header::DATE) == by_policy.1.get(header::DATE) || tries == 5 {
                break (plain, by_policy);
            }
        };
        assert_eq!(x_cache(&plain.1), "HIT", "{ask:?}");
        assert_eq!(plain.0, by_policy.0, "{ask:?}");
        assert_eq!(plain.1, by_policy.1, "{ask:?}");
        assert_eq!(plain.2, by_policy.2, "{ask:?}");
        let date = plain
            .1
            .get(header::DATE)
            .and_then(|d| d.to_str().ok())
            .unwrap_or("");
        assert!(httpdate::parse_http_date(date).is_ok(), "{ask:?}: {date}");
    }
    let head = client.head(&bin).send().await.expect("HEAD");
    let head_by_policy = client
        .head(&bin)
        .header("cache-control", "max-stale=0")
        .send()
        .await
        .expect("HEAD");
    assert_eq!(head.status(), head_by_policy.status());
    assert_eq!(
        head.headers().get(header::CONTENT_LENGTH),
        head_by_policy.headers().get(header::CONTENT_LENGTH)
    );
    assert_eq!(origin.count("/bin"), 1);
}
