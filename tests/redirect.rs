//! The HTTP 302 router end to end: real HTTP requests (reqwest, redirects not
//! followed) to an instance of the common world started in-process on port 0,
//! with `download.example.com` set to `routing: http`, a redirect host for Tokyo
//! and three cache nodes in Frankfurt.
//!
//! Clients in Tokyo, Frankfurt and Washington are emulated through the trusted
//! proxy 127.0.0.2 and `X-Forwarded-For`; health and load changes are pushed to
//! `POST /v1/health` and the keeper's clock is driven by explicit ticks.

mod common;

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use common::TIMEOUT;
use meridian::config::{Config, Overlay};
use meridian::server::Server;
use reqwest::StatusCode;
use reqwest::header::{CACHE_CONTROL, LOCATION};

const DOWNLOAD: &str = "download.example.com";
const TOKEN: &str = "report-token";
const FRA_NODES: [&str; 3] = ["a.fra.example", "b.fra.example", "c.fra.example"];
/// The proxy the instance trusts.
const PROXY: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
const TOKYO: &str = "10.10.0.5";
const FRANKFURT: &str = "10.20.200.1";
const WASHINGTON: &str = "10.30.1.9";

struct Harness {
    _dir: tempfile::TempDir,
    server: Server,
    proxy: reqwest::Client,
    clock: Instant,
}

impl Harness {
    async fn start() -> Self {
        let dir = common::write_world();
        let text = common::config_text(true)
            .replacen(
                "domains:\n",
                "domains:\n  - name: download.example.com\n    origins: [{ host: origin.example.com }]\n    ttl: 20\n    routing: http\n",
                1,
            )
            .replacen(
                "  - id: fra\n",
                "  - id: fra\n    cache-nodes: [a.fra.example, b.fra.example, c.fra.example]\n",
                1,
            )
            .replacen("  - id: nrt\n", "  - id: nrt\n    redirect-host: nrt.cdn.example\n", 1);
        let text = format!(
            "{text}listen:\n  http-router: 127.0.0.1:0\ndoh:\n  trusted-proxies: [127.0.0.2/32]\nhealth:\n  tokens: [{{ token: {TOKEN}, pops: [\"*\"] }}]\n  down-after: 1\n  up-after: 1\n  load-half-life: 0\n  max-shift-per-second: 1000\n  degraded-ttl: 5\n"
        );
        std::fs::write(dir.path().join("router.yaml"), text).expect("config");
        let overlay = Overlay {
            dns_listen: vec![SocketAddr::from((Ipv4Addr::LOCALHOST, 0))],
            http_listen: Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))),
            no_watch: true,
            ..Overlay::default()
        };
        let config = Config::load(&dir.path().join("router.yaml"), &overlay).expect("config loads");
        let server = meridian::server::start(config).await.expect("starts");
        Self {
            _dir: dir,
            server,
            proxy: client_from(PROXY),
            clock: Instant::now(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!(
            "http://{}{path}",
            self.server.http_router_addr().expect("router")
        )
    }

    /// A GET of `path` on `host` for a client at `client` (via the trusted proxy).
    async fn get(&self, host: &str, path: &str, client: &str) -> reqwest::Response {
        self.proxy
            .get(self.url(path))
            .header("host", host)
            .header("x-forwarded-for", client)
            .send()
            .await
            .expect("GET")
    }

    /// The Location of a 302 for `client`.
    async fn location(&self, path: &str, client: &str) -> String {
        let response = self.get(DOWNLOAD, path, client).await;
        assert_eq!(response.status(), StatusCode::FOUND, "{client} {path}");
        header(&response, LOCATION)
    }

    async fn report(&self, pop: &str, seq: u64, healthy: bool, load: f64) {
        let response = reqwest::Client::new()
            .post(format!(
                "http://{}/v1/health",
                self.server.http_addr().expect("control plane")
            ))
            .bearer_auth(TOKEN)
            .json(&serde_json::json!({"pop": pop, "seq": seq, "healthy": healthy, "load": load}))
            .send()
            .await
            .expect("report");
        assert_eq!(response.status(), StatusCode::OK);
    }

    /// Moves the keeper's clock on a second, so shed shares reach their targets.
    fn settle(&mut self) {
        self.clock = self.clock.max(Instant::now()) + Duration::from_secs(1);
        self.server.health().tick(self.clock);
    }
}

/// A client that does not follow redirects, connecting from `local`.
fn client_from(local: IpAddr) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(TIMEOUT)
        .local_address(local)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("HTTP client")
}

fn header(response: &reqwest::Response, name: reqwest::header::HeaderName) -> String {
    response
        .headers()
        .get(&name)
        .unwrap_or_else(|| panic!("no {name}"))
        .to_str()
        .expect("text")
        .to_string()
}

/// The host of an http(s) URL.
fn host_of(url: &str) -> &str {
    let rest = url.split_once("://").expect("scheme").1;
    rest.split(['/', ':']).next().expect("host")
}

#[tokio::test]
async fn clients_in_each_region_go_to_their_pop_with_path_and_query() {
    let h = Harness::start().await;
    assert_eq!(
        h.location("/app/v2.apk?token=abc&x=1", TOKYO).await,
        "http://nrt.cdn.example/app/v2.apk?token=abc&x=1"
    );
    assert_eq!(
        h.location("/app/v2.apk", WASHINGTON).await,
        "http://203.0.113.40/app/v2.apk"
    );
    let frankfurt = h.location("/app/v2.apk?x", FRANKFURT).await;
    assert!(FRA_NODES.contains(&host_of(&frankfurt)), "{frankfurt}");
    assert!(frankfurt.ends_with("/app/v2.apk?x"), "{frankfurt}");
    // The forwarded header of an untrusted peer is ignored: 127.0.0.1 is nowhere,
    // the fallback (iad).
    let untrusted = client_from(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let response = untrusted
        .get(h.url("/a"))
        .header("host", DOWNLOAD)
        .header("x-forwarded-for", TOKYO)
        .send()
        .await
        .expect("GET");
    assert_eq!(header(&response, LOCATION), "http://203.0.113.40/a");
}

#[tokio::test]
async fn scheme_port_cache_control_body_and_head() {
    let h = Harness::start().await;
    // Port from Host, scheme from a trusted X-Forwarded-Proto.
    let response = h
        .proxy
        .get(h.url("/file.bin"))
        .header("host", "download.example.com:8080")
        .header("x-forwarded-for", TOKYO)
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .expect("GET");
    assert_eq!(response.status(), StatusCode::FOUND);
    let location = header(&response, LOCATION);
    assert_eq!(location, "https://nrt.cdn.example:8080/file.bin");
    assert_eq!(header(&response, CACHE_CONTROL), "private, max-age=20");
    let body = response.text().await.expect("body");
    assert!(body.contains(&format!("href=\"{location}\"")), "{body}");
    // X-Forwarded-Proto from an untrusted peer does not count.
    let response = client_from(IpAddr::V4(Ipv4Addr::LOCALHOST))
        .get(h.url("/file.bin"))
        .header("host", DOWNLOAD)
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .expect("GET");
    assert!(header(&response, LOCATION).starts_with("http://"));
    // HEAD: the same redirect, no body.
    let response = h
        .proxy
        .head(h.url("/file.bin"))
        .header("host", DOWNLOAD)
        .header("x-forwarded-for", TOKYO)
        .send()
        .await
        .expect("HEAD");
    assert_eq!(response.status(), StatusCode::FOUND);
    assert_eq!(
        header(&response, LOCATION),
        "http://nrt.cdn.example/file.bin"
    );
    assert!(response.bytes().await.expect("body").is_empty());
}

#[tokio::test]
async fn unknown_hosts_are_404_and_other_methods_405() {
    let h = Harness::start().await;
    for host in ["nowhere.example.com", "www.example.com", "127.0.0.1"] {
        let response = h.get(host, "/x", TOKYO).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{host}");
        let body = response.text().await.expect("body");
        assert!(body.contains("not a domain routed by HTTP"), "{body}");
    }
    // The served name under the CDN suffix is the same domain.
    let response = h.get("download.example.com.cdn.test", "/x", TOKYO).await;
    assert_eq!(response.status(), StatusCode::FOUND);
    for method in [
        reqwest::Method::POST,
        reqwest::Method::PUT,
        reqwest::Method::DELETE,
    ] {
        let response = h
            .proxy
            .request(method.clone(), h.url("/x"))
            .header("host", DOWNLOAD)
            .send()
            .await
            .expect("request");
        assert_eq!(
            response.status(),
            StatusCode::METHOD_NOT_ALLOWED,
            "{method}"
        );
        assert_eq!(header(&response, reqwest::header::ALLOW), "GET, HEAD");
    }
    let metrics = reqwest::get(format!(
        "http://{}/metrics",
        h.server.http_addr().expect("control plane")
    ))
    .await
    .expect("metrics")
    .text()
    .await
    .expect("text");
    assert!(
        metrics.contains(r#"meridian_http_redirect_errors_total{reason="unknown_host"} 3"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"meridian_http_redirect_errors_total{reason="method_not_allowed"} 3"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"meridian_http_redirects_total{pop="nrt"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn locations_follow_health_and_load() {
    let mut h = Harness::start().await;
    assert_eq!(host_of(&h.location("/v", TOKYO).await), "nrt.cdn.example");
    // Tokyo reports unhealthy (down-after: 1): its clients go elsewhere, with the
    // degraded TTL while a fail-open or degraded POP is involved.
    h.report("nrt", 1, false, 0.1).await;
    let moved = h.location("/v", TOKYO).await;
    assert_ne!(host_of(&moved), "nrt.cdn.example", "{moved}");
    h.report("nrt", 2, true, 0.1).await;
    assert_eq!(host_of(&h.location("/v", TOKYO).await), "nrt.cdn.example");

    // Washington at full load sheds every client to the runner-up.
    assert_eq!(host_of(&h.location("/v", WASHINGTON).await), "203.0.113.40");
    h.report("iad", 1, true, 1.0).await;
    h.settle();
    let response = h.get(DOWNLOAD, "/v", WASHINGTON).await;
    let shed = header(&response, LOCATION);
    assert_ne!(host_of(&shed), "203.0.113.40", "{shed}");
    assert_eq!(header(&response, CACHE_CONTROL), "private, max-age=5");
    h.report("iad", 2, true, 0.0).await;
    h.settle();
    assert_eq!(host_of(&h.location("/v", WASHINGTON).await), "203.0.113.40");
}

#[tokio::test]
async fn a_path_stays_on_one_cache_node_and_paths_spread() {
    let h = Harness::start().await;
    let mut nodes = HashSet::new();
    for i in 0..30 {
        let path = format!("/objects/{i}.bin");
        let first = h.location(&path, FRANKFURT).await;
        // Again, and with another query string and another Frankfurt client.
        let again = h.location(&format!("{path}?range=2"), "10.20.100.7").await;
        assert_eq!(host_of(&first), host_of(&again), "{path}");
        nodes.insert(host_of(&first).to_string());
    }
    assert_eq!(nodes.len(), FRA_NODES.len(), "{nodes:?}");
}
