//! The cache node's control features over real connections: purge and prefetch on
//! the admin listener, per-domain access control (client address, Referer, signed
//! URLs) and dynamic rules. Each test starts an in-test origin that counts what it
//! is asked, and a cache node, both on port 0.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use common::cache::{HTTP_TIMEOUT, reaching, start_node, x_cache};
use meridian::cache::CacheNode;
use reqwest::Client;
use serde_json::{Value, json};
use tokio::sync::watch;

/// No access rules; `/api/` and `.php` are dynamic.
const WWW: &str = "www.example.test";
/// Referer lists.
const REFERER: &str = "ref.example.test";
/// Signed URLs.
const SIGNED: &str = "signed.example.test";
/// Client address lists that let 127.0.0.1 in and keep 127.0.0.2 out.
const IP_IN: &str = "ip-in.example.test";
/// A client address list that lists none of the test's clients.
const IP_OUT: &str = "ip-out.example.test";
const ADMIN_TOKEN: &str = "admin-token";
const SIGNING_SECRET: &str = "signing-secret-0123456789";

/// An in-test origin: every path is an object cached for a minute, whose body
/// says how many times the origin was asked for it; `/vary` varies on
/// Accept-Language; a path under `/api/hold/` or `/slow/` is answered only once
/// released.
#[derive(Clone, Default)]
struct Origin {
    /// Path and query of every request, in order.
    seen: Arc<Mutex<Vec<(String, String)>>>,
    arrived: Arc<watch::Sender<usize>>,
    release: Arc<watch::Sender<bool>>,
}

impl Origin {
    async fn start() -> (Self, SocketAddr) {
        let origin = Self::default();
        let app = Router::new().fallback(answer).with_state(origin.clone());
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind origin");
        let addr = listener.local_addr().expect("origin address");
        tokio::spawn(async move { axum::serve(listener, app).await });
        (origin, addr)
    }

    fn count(&self, path: &str) -> usize {
        let seen = self.seen.lock().expect("seen");
        seen.iter().filter(|(p, _)| p == path).count()
    }

    fn total(&self) -> usize {
        self.seen.lock().expect("seen").len()
    }

    fn queries(&self) -> Vec<String> {
        let seen = self.seen.lock().expect("seen");
        seen.iter().map(|(_, q)| q.clone()).collect()
    }
}

async fn answer(State(origin): State<Origin>, request: Request) -> Response {
    let path = request.uri().path().to_string();
    let query = request.uri().query().unwrap_or("").to_string();
    let n = {
        let mut seen = origin.seen.lock().expect("seen");
        seen.push((path.clone(), query.clone()));
        seen.iter().filter(|(p, _)| *p == path).count()
    };
    if path.starts_with("/api/hold/") || path.starts_with("/slow/") {
        origin.arrived.send_modify(|a| *a += 1);
        let mut release = origin.release.subscribe();
        let _ = release.wait_for(|r| *r).await;
    }
    if path == "/vary" {
        let language = request
            .headers()
            .get(header::ACCEPT_LANGUAGE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("none")
            .to_string();
        return (
            [
                (header::CACHE_CONTROL, "max-age=60"),
                (header::VARY, "accept-language"),
            ],
            format!("{language} #{n}"),
        )
            .into_response();
    }
    (
        [(header::CACHE_CONTROL, "max-age=60")],
        format!("{path}?{query} #{n}"),
    )
        .into_response()
}

/// The node's config for an origin at `origin`, with the admin API.
fn node_yaml(origin: SocketAddr) -> String {
    let origins = format!(
        "    origins:\n      - {{ host: {}, port: {}, scheme: http }}\n",
        origin.ip(),
        origin.port()
    );
    format!(
        "version: 1
listen: 127.0.0.1:0
pop: fra
domains:
  - name: {WWW}
{origins}    dynamic:
      - {{ prefix: /api/ }}
      - {{ extension: php }}
  - name: {REFERER}
{origins}    access:
      referer:
        allow: [\"*.example.test\", site.test]
        deny: [bad.example.test]
        allow-empty: false
  - name: {SIGNED}
{origins}    access:
      signed-urls: {{ secret: {SIGNING_SECRET} }}
  - name: {IP_IN}
{origins}    access:
      client-ip: {{ allow: [127.0.0.0/8], deny: [127.0.0.2] }}
  - name: {IP_OUT}
{origins}    access:
      client-ip: {{ allow: [10.0.0.0/8, \"2001:db8::/32\"] }}
metrics-listen: 127.0.0.1:0
admin:
  listen: 127.0.0.1:0
  token: {ADMIN_TOKEN}
  prefetch-concurrency: 2
"
    )
}

/// A client that reaches the node under every test domain, from `from`.
fn client_from(node: &CacheNode, from: Ipv4Addr) -> Client {
    reaching(node, &[WWW, REFERER, SIGNED, IP_IN, IP_OUT])
        .local_address(IpAddr::V4(from))
        .build()
        .expect("client")
}

fn client(node: &CacheNode) -> Client {
    client_from(node, Ipv4Addr::LOCALHOST)
}

/// The URL a client asks the node for.
fn url(node: &CacheNode, domain: &str, path: &str) -> String {
    format!("http://{domain}:{}{path}", node.addr().port())
}

async fn get(client: &Client, url: &str) -> (StatusCode, String, String) {
    let response = client.get(url).send().await.expect("GET");
    let status = response.status();
    let served = x_cache(response.headers()).to_string();
    (status, served, response.text().await.expect("body"))
}

/// Posts a JSON body to the admin API; the status and the JSON answer.
async fn admin(
    node: &CacheNode,
    path: &str,
    token: Option<&str>,
    body: String,
) -> (StatusCode, Value) {
    let admin = node.admin_addr().expect("admin API enabled");
    let mut request = Client::new()
        .post(format!("http://{admin}{path}"))
        .timeout(HTTP_TIMEOUT)
        .header(header::CONTENT_TYPE, "application/json")
        .body(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("admin POST");
    let status = response.status();
    let text = response.text().await.expect("body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn purge(node: &CacheNode, body: Value) -> (StatusCode, Value) {
    admin(node, "/v1/purge", Some(ADMIN_TOKEN), body.to_string()).await
}

/// The public name of an object on the node (the port is the client's business,
/// not the cache key's).
fn public(domain: &str, path: &str) -> String {
    format!("http://{domain}{path}")
}

#[tokio::test]
async fn purge_by_url_forces_a_refetch() {
    let (origin, origin_addr) = Origin::start().await;
    let node = start_node(&node_yaml(origin_addr)).await;
    let client = client(&node);
    let obj = url(&node, WWW, "/obj.css");
    assert_eq!(get(&client, &obj).await.1, "MISS");
    assert_eq!(get(&client, &obj).await.1, "HIT");
    let (status, answer) = purge(&node, json!({ "urls": [public(WWW, "/obj.css")] })).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer, json!({ "urls": 1, "prefixes": 0 }));
    let (status, served, body) = get(&client, &obj).await;
    assert_eq!((status, served.as_str()), (StatusCode::OK, "MISS"));
    assert_eq!(body, "/obj.css? #2");
    assert_eq!(get(&client, &obj).await.1, "HIT");
    assert_eq!(origin.count("/obj.css"), 2);
    node.stop().await.expect("stops");
}

#[tokio::test]
async fn a_fill_under_way_during_a_purge_is_not_kept() {
    let (origin, origin_addr) = Origin::start().await;
    let node = start_node(&node_yaml(origin_addr)).await;
    let client = client(&node);
    let obj = url(&node, WWW, "/slow/a.js");
    // The fill leaves for the origin, which holds it...
    let early = tokio::spawn({
        let (client, obj) = (client.clone(), obj.clone());
        async move { get(&client, &obj).await }
    });
    let mut arrived = origin.arrived.subscribe();
    tokio::time::timeout(HTTP_TIMEOUT, arrived.wait_for(|n| *n >= 1))
        .await
        .expect("the fill reaches the origin")
        .expect("origin alive");
    // ...while the object is purged, here and under a prefix.
    let both = json!({ "urls": [public(WWW, "/slow/a.js")], "prefixes": [public(WWW, "/slow/")] });
    assert_eq!(purge(&node, both).await.0, StatusCode::OK);
    origin.release.send_replace(true);
    let (status, served, body) = early.await.expect("request");
    assert_eq!(
        (status, served.as_str(), body.as_str()),
        (StatusCode::OK, "MISS", "/slow/a.js? #1")
    );
    // What it brought may predate the purge: not kept.
    let (_, served, body) = get(&client, &obj).await;
    assert_eq!((served.as_str(), body.as_str()), ("MISS", "/slow/a.js? #2"));
    assert_eq!(get(&client, &obj).await.1, "HIT");
    node.stop().await.expect("stops");
}

#[tokio::test]
async fn purge_by_prefix_covers_every_query_and_vary_variant() {
    let (origin, origin_addr) = Origin::start().await;
    let node = start_node(&node_yaml(origin_addr)).await;
    let client = client(&node);
    let under = [
        "/static/a.css?v=1",
        "/static/a.css?v=2",
        "/static/img/b.png",
    ];
    for path in under.iter().chain(&["/static.css", "/other/c.js"]) {
        assert_eq!(
            get(&client, &url(&node, WWW, path)).await.1,
            "MISS",
            "{path}"
        );
    }
    let vary = |language: &'static str| {
        client
            .get(url(&node, WWW, "/vary"))
            .header(header::ACCEPT_LANGUAGE, language)
            .send()
    };
    let response = vary("en").await.expect("GET");
    assert_eq!(x_cache(response.headers()), "MISS");
    let response = vary("en").await.expect("GET");
    assert_eq!(x_cache(response.headers()), "HIT");

    let prefixes = json!({ "prefixes": [public(WWW, "/static/"), public(WWW, "/vary")] });
    let (status, answer) = purge(&node, prefixes).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer, json!({ "urls": 0, "prefixes": 2 }));
    for path in under {
        assert_eq!(
            get(&client, &url(&node, WWW, path)).await.1,
            "MISS",
            "{path}"
        );
        assert_eq!(
            get(&client, &url(&node, WWW, path)).await.1,
            "HIT",
            "{path}"
        );
    }
    let response = vary("en").await.expect("GET");
    assert_eq!(x_cache(response.headers()), "MISS");
    assert_eq!(response.text().await.expect("body"), "en #2");
    // Beside the prefix, not under it: untouched.
    for path in ["/static.css", "/other/c.js"] {
        assert_eq!(
            get(&client, &url(&node, WWW, path)).await.1,
            "HIT",
            "{path}"
        );
    }
    assert_eq!(origin.count("/static/a.css"), 4);
    assert_eq!(origin.count("/static.css"), 1);
    node.stop().await.expect("stops");
}

#[tokio::test]
async fn prefetch_fills_the_cache_before_any_client_asks() {
    let (origin, origin_addr) = Origin::start().await;
    let node = start_node(&node_yaml(origin_addr)).await;
    let urls = json!({ "urls": [
        public(WWW, "/warm/a.js"),
        public(WWW, "/warm/b.js?v=3"),
        public(SIGNED, "/warm/c.js"),
    ]});
    let (status, answer) = admin(&node, "/v1/prefetch", Some(ADMIN_TOKEN), urls.to_string()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    assert_eq!(answer, json!({ "accepted": 3 }));
    let mut finished = node.finished_prefetches();
    tokio::time::timeout(HTTP_TIMEOUT, finished.wait_for(|n| *n >= 3))
        .await
        .expect("the prefetches finish")
        .expect("node alive");
    assert_eq!(origin.total(), 3);
    let client = client(&node);
    let (status, served, body) = get(&client, &url(&node, WWW, "/warm/a.js")).await;
    assert_eq!(
        (status, served.as_str(), body.as_str()),
        (StatusCode::OK, "HIT", "/warm/a.js? #1")
    );
    assert_eq!(
        get(&client, &url(&node, WWW, "/warm/b.js?v=3")).await.1,
        "HIT"
    );
    // Access rules still hold for clients: the cached object needs a signature.
    let (status, served, _) = get(&client, &url(&node, SIGNED, "/warm/c.js")).await;
    assert_eq!((status, served.as_str()), (StatusCode::FORBIDDEN, "DENIED"));
    let expires = unix_now() + 60;
    let signed = format!(
        "/warm/c.js?expires={expires}&sig={}",
        sign("/warm/c.js", expires)
    );
    assert_eq!(get(&client, &url(&node, SIGNED, &signed)).await.1, "HIT");
    assert_eq!(origin.total(), 3);
    node.stop().await.expect("stops");
}

#[tokio::test]
async fn admin_requests_are_checked_before_anything_is_done() {
    let (origin, origin_addr) = Origin::start().await;
    let node = start_node(&node_yaml(origin_addr)).await;
    let client = client(&node);
    let obj = url(&node, WWW, "/obj.css");
    get(&client, &obj).await;
    let body = json!({ "urls": [public(WWW, "/obj.css")] }).to_string();
    for token in [None, Some("wrong"), Some("admin-token-and-more")] {
        for path in ["/v1/purge", "/v1/prefetch"] {
            let (status, _) = admin(&node, path, token, body.clone()).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{path} {token:?}");
        }
    }
    let too_many: Vec<String> = (0..1001).map(|i| public(WWW, &format!("/{i}"))).collect();
    for (path, body, expected, says) in [
        (
            "/v1/purge",
            "{".to_string(),
            StatusCode::BAD_REQUEST,
            "body",
        ),
        (
            "/v1/purge",
            r#"{"urls": "x"}"#.into(),
            StatusCode::BAD_REQUEST,
            "`urls`",
        ),
        (
            "/v1/purge",
            "{}".into(),
            StatusCode::BAD_REQUEST,
            "expected `urls` or `prefixes`",
        ),
        (
            "/v1/purge",
            r#"{"urls": ["/obj.css"]}"#.into(),
            StatusCode::BAD_REQUEST,
            "absolute",
        ),
        (
            "/v1/purge",
            json!({ "prefixes": [public(WWW, "/a?v=1")] }).to_string(),
            StatusCode::BAD_REQUEST,
            "a prefix is a path",
        ),
        (
            "/v1/prefetch",
            json!({ "urls": [], "prefixes": [] }).to_string(),
            StatusCode::BAD_REQUEST,
            "prefixes",
        ),
        (
            "/v1/purge",
            json!({ "urls": [public(WWW, "/obj.css"), "http://nowhere.test/obj.css"] }).to_string(),
            StatusCode::NOT_FOUND,
            "nowhere.test",
        ),
        (
            "/v1/prefetch",
            json!({ "urls": ["http://nowhere.test/x"] }).to_string(),
            StatusCode::NOT_FOUND,
            "nowhere.test",
        ),
        (
            "/v1/purge",
            json!({ "urls": too_many }).to_string(),
            StatusCode::PAYLOAD_TOO_LARGE,
            "at most 1000",
        ),
        (
            "/v1/purge",
            format!(r#"{{"urls": ["{}"]}}"#, "x".repeat(2 * 1024 * 1024)),
            StatusCode::PAYLOAD_TOO_LARGE,
            "body over",
        ),
    ] {
        let (status, answer) = admin(&node, path, Some(ADMIN_TOKEN), body).await;
        assert_eq!(status, expected, "{path}: {answer}");
        let error = answer["error"].as_str().unwrap_or_default();
        assert!(error.contains(says), "{path}: {answer}");
    }
    // None of it purged or fetched anything.
    assert_eq!(get(&client, &obj).await.1, "HIT");
    assert_eq!(origin.total(), 1);
    assert_eq!(*node.finished_prefetches().borrow(), 0);

    // The public listener knows nothing of the API: for a served Host it is just
    // a request for the origin, and the object stays cached.
    let response = client
        .post(url(&node, WWW, "/v1/purge"))
        .bearer_auth(ADMIN_TOKEN)
        .body(json!({ "urls": [public(WWW, "/obj.css")] }).to_string())
        .send()
        .await
        .expect("POST");
    assert_eq!(x_cache(response.headers()), "BYPASS");
    assert_eq!(origin.count("/v1/purge"), 1);
    assert_eq!(get(&client, &obj).await.1, "HIT");
    node.stop().await.expect("stops");
}

#[tokio::test]
async fn no_admin_section_no_admin_listener() {
    let (_origin, origin_addr) = Origin::start().await;
    let yaml = node_yaml(origin_addr);
    let yaml = &yaml[..yaml.find("admin:").expect("admin section")];
    let node = start_node(yaml).await;
    assert_eq!(node.admin_addr(), None);
    node.stop().await.expect("stops");
}

#[tokio::test]
async fn referer_allow_and_deny_lists() {
    let (origin, origin_addr) = Origin::start().await;
    let node = start_node(&node_yaml(origin_addr)).await;
    let client = client(&node);
    let obj = url(&node, REFERER, "/obj.css");
    for (referer, allowed) in [
        (Some("https://www.example.test/page"), true),
        (Some("http://a.b.example.test:8080/"), true),
        (Some("https://site.test/"), true),
        (Some("https://bad.example.test/page"), false),
        (Some("https://example.test/"), false),
        (Some("https://www.site.test/"), false),
        (Some("https://elsewhere.test/"), false),
        (Some(""), false),
        (None, false),
    ] {
        let mut request = client.get(&obj);
        if let Some(referer) = referer {
            request = request.header(header::REFERER, referer);
        }
        let response = request.send().await.expect("GET");
        let served = x_cache(response.headers()).to_string();
        let status = response.status();
        let body = response.text().await.expect("body");
        if allowed {
            assert_eq!(status, StatusCode::OK, "{referer:?}");
            assert_ne!(served, "DENIED", "{referer:?}");
        } else {
            assert_eq!(
                (status, served.as_str()),
                (StatusCode::FORBIDDEN, "DENIED"),
                "{referer:?}"
            );
            assert_eq!(body, "referer not allowed\n");
        }
    }
    // Denied requests never reached the origin; the allowed ones shared a fill.
    assert_eq!(origin.total(), 1);
    // And they are counted apart from the traffic the cache served.
    assert_eq!(requests_counted(&node, "4xx", "denied").await, 6.0);
    assert_eq!(requests_counted(&node, "2xx", "miss").await, 1.0);
    node.stop().await.expect("stops");
}

#[tokio::test]
async fn signed_urls_share_one_entry_and_refuse_bad_or_expired_ones() {
    let (origin, origin_addr) = Origin::start().await;
    let node = start_node(&node_yaml(origin_addr)).await;
    let client = client(&node);
    let path = "/video/a.mp4";
    let signed = |expires: u64| format!("{path}?v=1&expires={expires}&sig={}", sign(path, expires));
    let now = unix_now();
    let (status, served, body) = get(&client, &url(&node, SIGNED, &signed(now + 60))).await;
    assert_eq!((status, served.as_str()), (StatusCode::OK, "MISS"));
    // The origin was asked without the signing parameters...
    assert_eq!(body, "/video/a.mp4?v=1 #1");
    assert_eq!(origin.queries(), ["v=1"]);
    // ...and another signature for the same object finds the same entry.
    assert_eq!(
        get(&client, &url(&node, SIGNED, &signed(now + 3600)))
            .await
            .1,
        "HIT"
    );
    // Passed through, the origin does not see them either.
    let response = client
        .post(url(&node, SIGNED, &signed(now + 60)))
        .body("x")
        .send()
        .await
        .expect("POST");
    assert_eq!(x_cache(response.headers()), "BYPASS");
    assert_eq!(origin.queries(), ["v=1", "v=1"]);

    let tampered = signed(now + 60).replace(
        &format!("expires={}", now + 60),
        &format!("expires={}", now + 7200),
    );
    let other_object = signed(now + 60).replace("a.mp4", "b.mp4");
    let bad_hex = format!("{path}?expires={}&sig=zz", now + 60);
    for (refused, reason) in [
        (signed(now - 1), "URL signature has expired\n"),
        (tampered, "URL signature is invalid\n"),
        (other_object, "URL signature is invalid\n"),
        (bad_hex, "URL signature is invalid\n"),
        (format!("{path}?v=1"), "URL is not signed\n"),
        (
            format!("{path}?expires={}", now + 60),
            "URL is not signed\n",
        ),
    ] {
        let (status, served, body) = get(&client, &url(&node, SIGNED, &refused)).await;
        assert_eq!(
            (status, served.as_str(), body.as_str()),
            (StatusCode::FORBIDDEN, "DENIED", reason),
            "{refused}"
        );
    }
    assert_eq!(origin.total(), 2);
    node.stop().await.expect("stops");
}

#[tokio::test]
async fn client_address_lists() {
    let (origin, origin_addr) = Origin::start().await;
    let node = start_node(&node_yaml(origin_addr)).await;
    let from_one = client(&node);
    let from_two = client_from(&node, Ipv4Addr::new(127, 0, 0, 2));
    let (status, served, _) = get(&from_one, &url(&node, IP_IN, "/obj.css")).await;
    assert_eq!((status, served.as_str()), (StatusCode::OK, "MISS"));
    for (client, domain) in [(&from_two, IP_IN), (&from_one, IP_OUT), (&from_two, IP_OUT)] {
        let (status, served, body) = get(client, &url(&node, domain, "/obj.css")).await;
        assert_eq!(
            (status, served.as_str()),
            (StatusCode::FORBIDDEN, "DENIED"),
            "{domain}"
        );
        assert_eq!(body, "client address not allowed\n");
    }
    // Refused before any origin contact, whatever the method.
    let response = from_two
        .post(url(&node, IP_IN, "/form"))
        .body("x")
        .send()
        .await
        .expect("POST");
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(origin.total(), 1);
    node.stop().await.expect("stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dynamic_rules_send_every_request_to_the_origin() {
    let (origin, origin_addr) = Origin::start().await;
    let node = start_node(&node_yaml(origin_addr)).await;
    let client = client(&node);
    for path in ["/api/items?page=1", "/shop/cart.PHP"] {
        for n in 1..=2 {
            let (status, served, body) = get(&client, &url(&node, WWW, path)).await;
            assert_eq!(
                (status, served.as_str()),
                (StatusCode::OK, "BYPASS"),
                "{path}"
            );
            assert!(body.ends_with(&format!("#{n}")), "{path}: {body}");
        }
    }
    // Never coalesced: three at once all reach the origin, which holds each until
    // all three are there.
    let mut requests = tokio::task::JoinSet::new();
    for _ in 0..3 {
        let (client, url) = (client.clone(), url(&node, WWW, "/api/hold/x"));
        requests.spawn(async move { get(&client, &url).await });
    }
    let mut arrived = origin.arrived.subscribe();
    tokio::time::timeout(HTTP_TIMEOUT, arrived.wait_for(|n| *n >= 3))
        .await
        .expect("every request reaches the origin")
        .expect("origin alive");
    origin.release.send_replace(true);
    while let Some(done) = requests.join_next().await {
        let (status, served, _) = done.expect("request");
        assert_eq!((status, served.as_str()), (StatusCode::OK, "BYPASS"));
    }
    // Nothing was stored: a prefetch of a dynamic URL still goes to the origin,
    // and so does the next client.
    let urls = json!({ "urls": [public(WWW, "/api/items?page=1")] }).to_string();
    let (status, _) = admin(&node, "/v1/prefetch", Some(ADMIN_TOKEN), urls).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let mut finished = node.finished_prefetches();
    tokio::time::timeout(HTTP_TIMEOUT, finished.wait_for(|n| *n >= 1))
        .await
        .expect("the prefetch finishes")
        .expect("node alive");
    let (_, served, body) = get(&client, &url(&node, WWW, "/api/items?page=1")).await;
    assert_eq!(
        (served.as_str(), body.as_str()),
        ("BYPASS", "/api/items?page=1 #4")
    );
    // A neighbour that no rule names is cached as usual.
    get(&client, &url(&node, WWW, "/apiary.html")).await;
    assert_eq!(
        get(&client, &url(&node, WWW, "/apiary.html")).await.1,
        "HIT"
    );
    node.stop().await.expect("stops");
}

#[test]
fn cli_names_the_line_of_bad_control_keys() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("cache.yaml");
    let text = node_yaml(SocketAddr::from((Ipv4Addr::LOCALHOST, 8000)))
        .replace("deny: [127.0.0.2]", "deny: [127.0.0.300]")
        .replace("- { extension: php }", "- { extension: php, prefix: /x/ }")
        .replace("token: admin-token", "token: \"\"");
    std::fs::write(&file, &text).expect("config");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args(["cache", "--config"])
        .arg(&file)
        .output()
        .expect("run meridian");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let line_of = |needle: &str| {
        1 + text
            .lines()
            .position(|l| l.contains(needle))
            .expect("line in config")
    };
    for (needle, says) in [
        ("extension: php", "`dynamic`"),
        (
            "127.0.0.300",
            "`client-ip.deny`: expected ADDRESS/PREFIX, found `127.0.0.300`",
        ),
        ("token: \"\"", "`admin.token`"),
    ] {
        let place = format!("cache.yaml:{}:", line_of(needle));
        assert!(
            stderr
                .lines()
                .any(|l| l.contains(&place) && l.contains(says)),
            "{place} {says}: {stderr}"
        );
    }
}

/// Signs as the README says, independently of the node's code.
/// `meridian_cache_requests_total` for a status class and cache result, as the
/// node's metrics listener reports it.
async fn requests_counted(node: &CacheNode, status: &str, cache: &str) -> f64 {
    let at = node.metrics_addr().expect("metrics listener");
    let text = Client::new()
        .get(format!("http://{at}/metrics"))
        .timeout(HTTP_TIMEOUT)
        .send()
        .await
        .expect("scrape")
        .text()
        .await
        .expect("metrics text");
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("Prometheus text");
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == "meridian_cache_requests_total")
        .filter(|s| s.labels.get("status") == Some(status) && s.labels.get("cache") == Some(cache))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v) => v,
            _ => f64::NAN,
        })
        .sum()
}

fn sign(path: &str, expires: u64) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, SIGNING_SECRET.as_bytes());
    let tag = ring::hmac::sign(&key, format!("{path}:{expires}").as_bytes());
    tag.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}
