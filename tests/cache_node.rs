//! The edge cache node over real connections: each test starts an in-test origin
//! (counting the requests it sees) and a cache node, both on port 0, and talks to
//! the node as a client would. The health push is checked against a real
//! in-process Meridian.

mod common;

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use common::cache::{HTTP_TIMEOUT, reaching, start_node, x_cache};
use meridian::cache::CacheNode;
use reqwest::Client;
use serde_json::Value;
use tokio::sync::{Notify, watch};

const DOMAIN: &str = "www.example.test";

/// An in-test origin: answers by path, counts requests per path.
#[derive(Clone, Default)]
struct Origin {
    seen: Arc<Mutex<HashMap<String, usize>>>,
    /// `/slow` waits for this before answering.
    release: Arc<Notify>,
    /// Requests to `/slow` that arrived.
    slow_arrived: Arc<watch::Sender<usize>>,
}

impl Origin {
    /// Starts the origin; `status_override` makes it answer every request with
    /// that status (a failing origin).
    async fn start(status_override: Option<StatusCode>) -> (Self, SocketAddr) {
        let origin = Self::default();
        let app = Router::new()
            .fallback(answer)
            .with_state((origin.clone(), status_override));
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind origin");
        let addr = listener.local_addr().expect("origin address");
        tokio::spawn(async move { axum::serve(listener, app).await });
        (origin, addr)
    }

    fn count(&self, path: &str) -> usize {
        self.seen
            .lock()
            .expect("counts")
            .get(path)
            .copied()
            .unwrap_or(0)
    }

    fn total(&self) -> usize {
        self.seen.lock().expect("counts").values().sum()
    }
}

async fn answer(
    State((origin, status_override)): State<(Origin, Option<StatusCode>)>,
    request: Request,
) -> Response {
    let path = request.uri().path().to_string();
    *origin
        .seen
        .lock()
        .expect("counts")
        .entry(path.clone())
        .or_default() += 1;
    if let Some(status) = status_override {
        return (status, "origin failing\n").into_response();
    }
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("")
        .to_string();
    let etag = "\"v1\"";
    let if_none_match = request.headers().get(header::IF_NONE_MATCH).cloned();
    match path.as_str() {
        "/obj" | "/query" => {
            if if_none_match.is_some_and(|v| v == etag) {
                return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response();
            }
            let body = format!(
                "object {path}?{} for {host}",
                request.uri().query().unwrap_or("")
            );
            (
                [(header::CACHE_CONTROL, "max-age=60"), (header::ETAG, etag)],
                body,
            )
                .into_response()
        }
        // Stale at once, but with a validator: revalidated every time.
        "/revalidate" => {
            if if_none_match.is_some_and(|v| v == etag) {
                return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response();
            }
            (
                [(header::CACHE_CONTROL, "max-age=0"), (header::ETAG, etag)],
                "revalidated object",
            )
                .into_response()
        }
        "/vary" => {
            let language = request
                .headers()
                .get(header::ACCEPT_LANGUAGE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("none")
                .to_string();
            (
                [
                    (header::CACHE_CONTROL, "max-age=60"),
                    (header::VARY, "accept-language"),
                ],
                language,
            )
                .into_response()
        }
        "/nostore" => ([(header::CACHE_CONTROL, "no-store")], "secret").into_response(),
        "/private" => ([(header::CACHE_CONTROL, "private, max-age=60")], "mine").into_response(),
        // No freshness from the origin: the domain's rule TTL applies.
        "/static/app.js" => "console.log(1)".into_response(),
        "/slow" => {
            origin.slow_arrived.send_modify(|n| *n += 1);
            origin.release.notified().await;
            ([(header::CACHE_CONTROL, "max-age=60")], "slow object").into_response()
        }
        _ => (StatusCode::NOT_FOUND, "no such object\n").into_response(),
    }
}

/// The cache node's config text for origins at `origins`.
fn node_yaml(origins: &[SocketAddr], meridian: Option<(&str, &str)>) -> String {
    let mut text = format!(
        "version: 1
listen: 127.0.0.1:0
pop: fra
memory-budget: 67108864
domains:
  - name: {DOMAIN}
    origins:
"
    );
    for origin in origins {
        text.push_str(&format!(
            "      - {{ host: {}, port: {}, scheme: http }}\n",
            origin.ip(),
            origin.port()
        ));
    }
    text.push_str(
        "    cache:
      ttl:
        - { prefix: /static/, seconds: 600 }
      query-string:
        only: [v]
",
    );
    if let Some((url, token)) = meridian {
        text.push_str(&format!(
            "meridian:\n  health-urls: [{url}]\n  token: {token}\n  interval-seconds: 1\n  capacity: 4\n"
        ));
    }
    text
}

/// A client that reaches the node under the test domain (and an unknown one).
fn client(node: &CacheNode) -> Client {
    reaching(node, &[DOMAIN, "evil.test"])
        .build()
        .expect("client")
}

fn url(node: &CacheNode, path: &str) -> String {
    format!("http://{DOMAIN}:{}{path}", node.addr().port())
}

async fn get(client: &Client, url: &str) -> (StatusCode, HeaderMap, String) {
    let response = client.get(url).send().await.expect("GET");
    let status = response.status();
    let headers = response.headers().clone();
    (status, headers, response.text().await.expect("body"))
}

#[tokio::test]
async fn miss_then_hit() {
    let (origin, origin_addr) = Origin::start(None).await;
    let node = start_node(&node_yaml(&[origin_addr], None)).await;
    let client = client(&node);
    let (status, headers, body) = get(&client, &url(&node, "/obj")).await;
    assert_eq!((status, x_cache(&headers)), (StatusCode::OK, "MISS"));
    assert_eq!(body, format!("object /obj? for {DOMAIN}"));
    let (status, headers, again) = get(&client, &url(&node, "/obj")).await;
    assert_eq!((status, x_cache(&headers)), (StatusCode::OK, "HIT"));
    assert_eq!(again, body);
    assert!(headers.contains_key(header::AGE), "{headers:?}");
    assert_eq!(origin.count("/obj"), 1);
    node.stop().await.expect("stops");
}

#[tokio::test]
async fn query_string_rules_shape_the_cache_key() {
    let (origin, origin_addr) = Origin::start(None).await;
    let node = start_node(&node_yaml(&[origin_addr], None)).await;
    let client = client(&node);
    // Only `v` is kept: these two are one object, and the origin sees `v` only.
    let (_, headers, body) = get(&client, &url(&node, "/query?v=1&utm=a")).await;
    assert_eq!(x_cache(&headers), "MISS");
    assert_eq!(body, format!("object /query?v=1 for {DOMAIN}"));
    let (_, headers, _) = get(&client, &url(&node, "/query?utm=b&v=1")).await;
    assert_eq!(x_cache(&headers), "HIT");
    let (_, headers, _) = get(&client, &url(&node, "/query?v=2")).await;
    assert_eq!(x_cache(&headers), "MISS");
    assert_eq!(origin.count("/query"), 2);
}

#[tokio::test]
async fn rule_ttl_caches_what_the_origin_left_open() {
    let (origin, origin_addr) = Origin::start(None).await;
    let node = start_node(&node_yaml(&[origin_addr], None)).await;
    let client = client(&node);
    let (_, first, _) = get(&client, &url(&node, "/static/app.js")).await;
    let (_, second, body) = get(&client, &url(&node, "/static/app.js")).await;
    assert_eq!((x_cache(&first), x_cache(&second)), ("MISS", "HIT"));
    assert_eq!(body, "console.log(1)");
    assert_eq!(origin.count("/static/app.js"), 1);
}

#[tokio::test]
async fn unknown_host_is_refused() {
    let (origin, origin_addr) = Origin::start(None).await;
    let node = start_node(&node_yaml(&[origin_addr], None)).await;
    let client = client(&node);
    let evil = format!("http://evil.test:{}/obj", node.addr().port());
    let (status, _, _) = get(&client, &evil).await;
    assert_eq!(status, StatusCode::MISDIRECTED_REQUEST);
    // Absolute-form, as to an open proxy: refused just the same.
    let proxied = Client::builder()
        .proxy(reqwest::Proxy::http(format!("http://{}", node.addr())).expect("proxy"))
        .timeout(HTTP_TIMEOUT)
        .build()
        .expect("client");
    let (status, _, _) = get(
        &proxied,
        &format!("http://127.0.0.1:{}/obj", origin_addr.port()),
    )
    .await;
    assert_eq!(status, StatusCode::MISDIRECTED_REQUEST);
    assert_eq!(origin.total(), 0);
}

#[tokio::test]
async fn a_wildcard_domain_serves_each_name_as_a_site_of_its_own() {
    let (origin, origin_addr) = Origin::start(None).await;
    let yaml = node_yaml(&[origin_addr], None)
        + &format!(
            "  - name: \"*.sites.test\"\n    origins:\n      - {{ host: {}, port: {} }}\n",
            origin_addr.ip(),
            origin_addr.port()
        );
    let node = start_node(&yaml).await;
    let port = node.addr().port();
    let mut client = Client::builder().timeout(HTTP_TIMEOUT);
    for name in [
        "a.sites.test",
        "b.c.sites.test",
        "sites.test",
        "a.sites.test.evil",
    ] {
        client = client.resolve(name, node.addr());
    }
    let client = client.build().expect("client");
    // Each name below the wildcard is its own object, asked for by its own name.
    for name in ["a.sites.test", "b.c.sites.test"] {
        let url = format!("http://{name}:{port}/obj");
        let (status, first, body) = get(&client, &url).await;
        assert_eq!(
            (status, x_cache(&first)),
            (StatusCode::OK, "MISS"),
            "{name}"
        );
        assert_eq!(body, format!("object /obj? for {name}"));
        let (_, second, again) = get(&client, &url).await;
        assert_eq!((x_cache(&second), again), ("HIT", body));
    }
    assert_eq!(origin.count("/obj"), 2);
    // The wildcard's own parent, and names that only end alike, are not served.
    for name in ["sites.test", "a.sites.test.evil"] {
        let (status, _, _) = get(&client, &format!("http://{name}:{port}/obj")).await;
        assert_eq!(status, StatusCode::MISDIRECTED_REQUEST, "{name}");
    }
    assert_eq!(origin.total(), 2);
    node.stop().await.expect("stops");
}

#[tokio::test]
async fn no_store_and_private_are_not_cached() {
    let (origin, origin_addr) = Origin::start(None).await;
    let node = start_node(&node_yaml(&[origin_addr], None)).await;
    let client = client(&node);
    for path in ["/nostore", "/private"] {
        for _ in 0..2 {
            let (status, headers, _) = get(&client, &url(&node, path)).await;
            assert_eq!(
                (status, x_cache(&headers)),
                (StatusCode::OK, "MISS"),
                "{path}"
            );
        }
        assert_eq!(origin.count(path), 2, "{path}");
    }
}

#[tokio::test]
async fn if_none_match_is_answered_304_from_the_cache() {
    let (origin, origin_addr) = Origin::start(None).await;
    let node = start_node(&node_yaml(&[origin_addr], None)).await;
    let client = client(&node);
    // Cold: filled whole from the origin, then answered 304 here.
    let response = client
        .get(url(&node, "/obj"))
        .header(header::IF_NONE_MATCH, "\"v1\"")
        .send()
        .await
        .expect("GET");
    assert_eq!(response.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(x_cache(response.headers()), "MISS");
    // Warm: 304 with no origin contact; a different tag gets the body.
    let response = client
        .get(url(&node, "/obj"))
        .header(header::IF_NONE_MATCH, "W/\"v1\"")
        .send()
        .await
        .expect("GET");
    assert_eq!(response.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(x_cache(response.headers()), "HIT");
    assert_eq!(response.headers()[header::ETAG], "\"v1\"");
    let response = client
        .get(url(&node, "/obj"))
        .header(header::IF_NONE_MATCH, "\"v0\"")
        .send()
        .await
        .expect("GET");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(x_cache(response.headers()), "HIT");
    assert_eq!(origin.count("/obj"), 1);
}

#[tokio::test]
async fn stale_entry_is_revalidated_with_its_etag() {
    let (origin, origin_addr) = Origin::start(None).await;
    let node = start_node(&node_yaml(&[origin_addr], None)).await;
    let client = client(&node);
    let (_, first, _) = get(&client, &url(&node, "/revalidate")).await;
    let (status, second, body) = get(&client, &url(&node, "/revalidate")).await;
    assert_eq!(
        (x_cache(&first), status, x_cache(&second)),
        ("MISS", StatusCode::OK, "REVALIDATED")
    );
    assert_eq!(body, "revalidated object");
    // Both reached the origin; the second was conditional and got a 304.
    assert_eq!(origin.count("/revalidate"), 2);
}

#[tokio::test]
async fn vary_never_serves_the_wrong_variant() {
    let (_origin, origin_addr) = Origin::start(None).await;
    let node = start_node(&node_yaml(&[origin_addr], None)).await;
    let client = client(&node);
    let ask = |language: &'static str| {
        client
            .get(url(&node, "/vary"))
            .header(header::ACCEPT_LANGUAGE, language)
            .send()
    };
    for (language, expected) in [("en", "MISS"), ("en", "HIT"), ("fr", "MISS"), ("fr", "HIT")] {
        let response = ask(language).await.expect("GET");
        assert_eq!(x_cache(response.headers()), expected, "{language}");
        assert_eq!(response.text().await.expect("body"), language);
    }
    // TODO-performance: one variant per key, so `en` was replaced by `fr`.
    let response = ask("en").await.expect("GET");
    assert_eq!(response.text().await.expect("body"), "en");
}

#[tokio::test]
async fn head_and_post() {
    let (origin, origin_addr) = Origin::start(None).await;
    let node = start_node(&node_yaml(&[origin_addr], None)).await;
    let client = client(&node);
    let response = client.head(url(&node, "/obj")).send().await.expect("HEAD");
    assert_eq!(response.status(), StatusCode::OK);
    let expected = format!("object /obj? for {DOMAIN}");
    assert_eq!(
        response.headers()[header::CONTENT_LENGTH],
        expected.len().to_string().as_str()
    );
    let (_, headers, body) = get(&client, &url(&node, "/obj")).await;
    assert_eq!((x_cache(&headers), body), ("HIT", expected));
    let response = client
        .post(url(&node, "/obj"))
        .body("x")
        .send()
        .await
        .expect("POST");
    assert_eq!(x_cache(response.headers()), "BYPASS");
    assert_eq!(origin.count("/obj"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_misses_make_one_origin_fetch() {
    let (origin, origin_addr) = Origin::start(None).await;
    let node = start_node(&node_yaml(&[origin_addr], None)).await;
    let client = client(&node);
    let mut requests = tokio::task::JoinSet::new();
    for _ in 0..50 {
        let client = client.clone();
        let url = url(&node, "/slow");
        requests.spawn(async move { get(&client, &url).await });
    }
    // The origin holds the one fill until told; every request that reaches the
    // node meanwhile must wait for it, and any later one finds it stored.
    let mut arrived = origin.slow_arrived.subscribe();
    tokio::time::timeout(HTTP_TIMEOUT, arrived.wait_for(|n| *n >= 1))
        .await
        .expect("the fill reaches the origin")
        .expect("origin alive");
    // Widen the window in which the others pile up behind the fill (not a
    // synchronisation: the assertions hold however many arrived by now).
    tokio::time::sleep(Duration::from_millis(200)).await;
    origin.release.notify_one();
    let mut results = HashMap::<String, usize>::new();
    while let Some(done) = requests.join_next().await {
        let (status, headers, body) = done.expect("request task");
        assert_eq!((status, body.as_str()), (StatusCode::OK, "slow object"));
        *results.entry(x_cache(&headers).to_string()).or_default() += 1;
    }
    assert_eq!(origin.count("/slow"), 1);
    assert_eq!(results.get("MISS"), Some(&1), "{results:?}");
    assert_eq!(results.get("HIT"), Some(&49), "{results:?}");
}

#[tokio::test]
async fn failover_to_the_next_origin() {
    // Refused connections: a port bound and released.
    let dead = {
        let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        listener.local_addr().expect("address")
    };
    let (failing, failing_addr) = Origin::start(Some(StatusCode::SERVICE_UNAVAILABLE)).await;
    let (origin, origin_addr) = Origin::start(None).await;
    let node = start_node(&node_yaml(&[dead, failing_addr, origin_addr], None)).await;
    let client = client(&node);
    let (status, headers, body) = get(&client, &url(&node, "/obj")).await;
    assert_eq!((status, x_cache(&headers)), (StatusCode::OK, "MISS"));
    assert_eq!(body, format!("object /obj? for {DOMAIN}"));
    assert_eq!((failing.count("/obj"), origin.count("/obj")), (1, 1));

    // With no origin left: 502.
    let node = start_node(&node_yaml(&[dead], None)).await;
    let (status, _, _) = get(&self::client(&node), &url(&node, "/obj")).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
}

#[tokio::test]
async fn health_is_pushed_to_meridian() {
    const TOKEN: &str = "push-token";
    let dir = common::write_world();
    let text = format!(
        "{}health:\n  tokens:\n    - {{ token: {TOKEN}, pops: [\"*\"] }}\n  load-half-life: 0\n",
        common::config_text(true)
    );
    std::fs::write(dir.path().join("meridian.yaml"), text).expect("config");
    let overlay = meridian::config::Overlay {
        dns_listen: vec![SocketAddr::from((Ipv4Addr::LOCALHOST, 0))],
        http_listen: Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))),
        ..Default::default()
    };
    let config = meridian::config::Config::load(&dir.path().join("meridian.yaml"), &overlay)
        .expect("Meridian config");
    let server = meridian::server::start(config)
        .await
        .expect("Meridian starts");
    let control = server.http_addr().expect("control plane");

    let (_origin, origin_addr) = Origin::start(None).await;
    let health_url = format!("http://{control}/v1/health");
    let node = start_node(&node_yaml(&[origin_addr], Some((&health_url, TOKEN)))).await;
    let mut accepted = node.accepted_reports();
    tokio::time::timeout(HTTP_TIMEOUT, accepted.wait_for(|n| *n >= 1))
        .await
        .expect("a first report is accepted")
        .expect("node alive");
    // One request in flight at its peak, over a capacity of 4: the next report
    // says 0.25.
    get(&client(&node), &url(&node, "/obj")).await;
    tokio::time::timeout(HTTP_TIMEOUT, accepted.wait_for(|n| *n >= 2))
        .await
        .expect("a second report is accepted")
        .expect("node alive");
    let pops: Value = reqwest::get(format!("http://{control}/v1/pops"))
        .await
        .expect("GET /v1/pops")
        .json()
        .await
        .expect("JSON");
    let fra = pops["pops"]
        .as_array()
        .expect("pops")
        .iter()
        .find(|p| p["id"] == "fra")
        .expect("fra")
        .clone();
    assert_eq!(fra["load"].as_f64(), Some(0.25), "{fra}");
    assert_eq!(fra["seq"].as_u64(), Some(2), "{fra}");
    node.stop().await.expect("stops");
    server.shutdown().await;
}

#[tokio::test]
async fn unreachable_meridian_does_not_stop_serving() {
    let dead = {
        let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        listener.local_addr().expect("address")
    };
    let (_origin, origin_addr) = Origin::start(None).await;
    let health_url = format!("http://{dead}/v1/health");
    let node = start_node(&node_yaml(&[origin_addr], Some((&health_url, "t")))).await;
    let (status, _, _) = get(&client(&node), &url(&node, "/obj")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(*node.accepted_reports().borrow(), 0);
}

#[test]
fn cli_reports_every_config_problem_with_its_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("cache.yaml");
    let text = node_yaml(&[SocketAddr::from((Ipv4Addr::LOCALHOST, 8000))], None)
        .replace("version: 1", "version: 2")
        .replace("pop: fra\n", "pop: fra\ncolour: blue\n");
    std::fs::write(&file, text).expect("config");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args(["cache", "--config"])
        .arg(&file)
        .output()
        .expect("run meridian");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    // Unknown keys stop the read at the first one, with its line.
    assert!(stderr.contains("cache.yaml:4:"), "{stderr}");
    assert!(stderr.contains("colour"), "{stderr}");
}
