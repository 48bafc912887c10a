//! The loop closed: Meridian, an origin and two cache nodes, all in-process on
//! real sockets. The world gives `fra` and `ams` (first and second for a client
//! in Frankfurt) the loopback addresses their cache nodes listen on, so a client
//! fetches from whatever address the DNS answer names. The nodes push their own
//! health and load to Meridian's control port; load driven through fra's node
//! (requests held open at the origin, against a capacity of 4) moves the
//! client's answer to ams, and the answer comes back when the load is gone.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::header;
use axum::response::IntoResponse;
use common::{addresses, query_ecs};
use hickory_proto::op::Message;
use hickory_proto::rr::RecordType;
use meridian::cache::{CacheConfig, CacheNode};
use meridian::config::{Config, Overlay};
use reqwest::StatusCode;
use tokio::sync::watch;

/// How long a condition may take to come true (a bound, not a synchronisation):
/// pushes go every second, so a few of them.
const DEADLINE: Duration = Duration::from_secs(30);
const TOKEN: &str = "e2e-token";
const DOMAIN: &str = "www.example.com";
/// Frankfurt, outside isp-x's 10.20.0.0/20: fra first, ams second.
const FRANKFURT: Ipv4Addr = Ipv4Addr::new(10, 20, 100, 0);
/// The loopback addresses of fra's and ams's cache nodes, and so of the POPs.
const FRA: Ipv4Addr = Ipv4Addr::new(127, 0, 10, 1);
const AMS: Ipv4Addr = Ipv4Addr::new(127, 0, 20, 1);
/// fra's node is sized for this many requests in flight.
const FRA_CAPACITY: usize = 4;

/// The origin: `/slow/...` answers only once `release` turns true; every
/// `/slow` arrival is counted in `arrived`.
#[derive(Clone)]
struct Origin {
    release: watch::Receiver<bool>,
    arrived: Arc<watch::Sender<usize>>,
}

async fn answer(State(origin): State<Origin>, request: Request) -> impl IntoResponse {
    let path = request.uri().path().to_string();
    if path.starts_with("/slow/") {
        origin.arrived.send_modify(|n| *n += 1);
        let mut release = origin.release.clone();
        let _ = release.wait_for(|r| *r).await;
    }
    (
        [(header::CACHE_CONTROL, "public, max-age=60")],
        format!("object {path}\n"),
    )
}

/// Starts the origin; returns its address, the release switch and the arrivals.
async fn start_origin() -> (SocketAddr, watch::Sender<bool>, watch::Receiver<usize>) {
    let (release_tx, release) = watch::channel(false);
    let (arrived, arrivals) = watch::channel(0);
    let app = Router::new().fallback(answer).with_state(Origin {
        release,
        arrived: Arc::new(arrived),
    });
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .expect("bind origin");
    let addr = listener.local_addr().expect("origin address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, release_tx, arrivals)
}

/// The common world with fra's and ams's addresses swapped for their nodes', and
/// live health without smoothing or rate limits, so one report moves answers.
fn world_text() -> String {
    let text = common::config_text(true);
    let swaps = [
        (
            r#"addresses: ["192.0.2.10", "192.0.2.11", "2001:db8:10::1"]"#,
            format!(r#"addresses: ["{FRA}"]"#),
        ),
        (
            r#"addresses: ["192.0.2.20", "2001:db8:20::1"]"#,
            format!(r#"addresses: ["{AMS}"]"#),
        ),
    ];
    let mut text = swaps.iter().fold(text, |text, (from, to)| {
        assert_eq!(text.matches(from).count(), 1, "{from} in the world");
        text.replace(from, to)
    });
    text.push_str(&format!(
        "health:
  tokens:
    - {{ token: {TOKEN}, pops: [\"*\"] }}
  expire-after: 3600
  load-half-life: 0
  low-watermark: 0.75
  high-watermark: 0.95
  max-shift-per-second: 1000
"
    ));
    text
}

/// A cache node for `pop` on `ip` (any port), pushing to `control` every second.
async fn start_node(
    pop: &str,
    ip: Ipv4Addr,
    capacity: usize,
    origin: SocketAddr,
    control: SocketAddr,
) -> CacheNode {
    let yaml = format!(
        "version: 1
listen: \"{ip}:0\"
pop: {pop}
domains:
  - name: {DOMAIN}
    origins:
      - {{ host: \"{}\", port: {} }}
meridian:
  health-urls: [\"http://{control}/v1/health\"]
  token: {TOKEN}
  interval-seconds: 1
  capacity: {capacity}
",
        origin.ip(),
        origin.port()
    );
    let config = CacheConfig::parse(&yaml, Path::new(&format!("{pop}.yaml"))).expect("config");
    meridian::cache::start(config)
        .await
        .expect("cache node starts")
}

/// The A answer for a Frankfurt client, over UDP.
async fn resolve(dns: SocketAddr) -> Vec<IpAddr> {
    let packet = query_ecs(
        "www.example.com.cdn.test.",
        RecordType::A,
        FRANKFURT.into(),
        24,
    )
    .to_vec()
    .expect("query encodes");
    let reply = common::udp_exchange(dns, &packet, common::TIMEOUT)
        .await
        .expect("a DNS reply");
    addresses(&Message::from_vec(&reply).expect("reply decodes"))
}

/// Asks until the Frankfurt client is sent to `want`, up to the deadline.
async fn await_answer(dns: SocketAddr, want: Ipv4Addr, why: &str) {
    let start = Instant::now();
    loop {
        let got = resolve(dns).await;
        if got == [IpAddr::V4(want)] {
            return;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "{why}: still answering {got:?}, expected {want}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// GETs `path` from the cache node the DNS answer names.
async fn fetch(dns: SocketAddr, nodes: &[&CacheNode], path: &str) -> (StatusCode, String) {
    let answer = resolve(dns).await;
    let [IpAddr::V4(ip)] = answer[..] else {
        panic!("one IPv4 address expected, got {answer:?}");
    };
    let node = nodes
        .iter()
        .find(|n| n.addr().ip() == IpAddr::V4(ip))
        .unwrap_or_else(|| panic!("no cache node on {ip}"));
    let response = reqwest::Client::new()
        .get(format!("http://{}{path}", node.addr()))
        .header(header::HOST, DOMAIN)
        .timeout(common::TIMEOUT)
        .send()
        .await
        .expect("GET from the cache node");
    let status = response.status();
    (status, response.text().await.expect("body"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_pushed_by_a_cache_node_moves_answers_and_back() {
    let dir = common::write_world();
    let path = dir.path().join("meridian.yaml");
    std::fs::write(&path, world_text()).expect("write config");
    let overlay = Overlay {
        dns_listen: vec![SocketAddr::from((Ipv4Addr::LOCALHOST, 0))],
        http_listen: Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))),
        ..Overlay::default()
    };
    let server = meridian::server::start(Config::load(&path, &overlay).expect("config"))
        .await
        .expect("Meridian starts");
    let (dns, control) = (
        server.dns_addrs()[0],
        server.http_addr().expect("control plane"),
    );
    let (origin, release, mut arrivals) = start_origin().await;
    let fra = start_node("fra", FRA, FRA_CAPACITY, origin, control).await;
    let ams = start_node("ams", AMS, 1000, origin, control).await;
    for node in [&fra, &ams] {
        tokio::time::timeout(DEADLINE, node.accepted_reports().wait_for(|n| *n >= 1))
            .await
            .expect("a first report is accepted")
            .expect("node alive");
    }

    // Idle: the client goes to fra, and its node serves it.
    await_answer(dns, FRA, "idle").await;
    let (status, body) = fetch(dns, &[&fra, &ams], "/obj").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "object /obj\n"));

    // As many requests in flight on fra's node as it is sized for: its next
    // report says load 1.0, above the high watermark, and the client moves on.
    let held: Vec<_> = (0..FRA_CAPACITY)
        .map(|i| {
            let url = format!("http://{}/slow/{i}", fra.addr());
            tokio::spawn(async move {
                reqwest::Client::new()
                    .get(url)
                    .header(header::HOST, DOMAIN)
                    .timeout(DEADLINE * 2)
                    .send()
                    .await
                    .map(|r| r.status())
            })
        })
        .collect();
    tokio::time::timeout(DEADLINE, arrivals.wait_for(|n| *n >= FRA_CAPACITY))
        .await
        .expect("every held request reaches the origin")
        .expect("origin alive");
    await_answer(dns, AMS, "fra loaded").await;
    let (status, body) = fetch(dns, &[&fra, &ams], "/obj").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "object /obj\n"));

    // The origin answers, the load drains, and the client comes back to fra.
    release.send_replace(true);
    for request in held {
        let status = request.await.expect("request task").expect("held request");
        assert_eq!(status, StatusCode::OK);
    }
    await_answer(dns, FRA, "fra idle again").await;

    fra.stop().await.expect("fra stops");
    ams.stop().await.expect("ams stops");
    server.shutdown().await;
}
