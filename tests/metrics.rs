//! `/metrics`, `/live` and `/ready` over real sockets: queries on every answer path
//! (UDP fast, UDP full, TCP), scraped and parsed as Prometheus would, and every
//! value asserted exactly.

mod common;

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use common::{Path, addresses, exchange_raw, pops_of, query, query_ecs, reply_ecs, v4};
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use meridian::http::{AppState, METRICS_CONTENT_TYPE, Readiness};
use meridian::metrics::Metrics;
use meridian::server::Server;
use prometheus_parse::{Scrape, Value};

const WWW: &str = "www.example.com.cdn.test.";

/// A world with one UDP worker per instance, so that which decisions are timed (the
/// first on each worker, then one in 64) is known.
fn write_world() -> tempfile::TempDir {
    let dir = common::write_world();
    for (file, fast) in [("fast.yaml", true), ("full.yaml", false)] {
        let text = common::config_text(fast).replace("udp-threads: 2", "udp-threads: 1");
        std::fs::write(dir.path().join(file), text).expect("config");
    }
    dir
}

async fn start(dir: &std::path::Path, fast_path: bool) -> Server {
    meridian::server::start(common::load_config(dir, fast_path))
        .await
        .expect("instance starts")
}

/// One query of the scenario and what its reply must be.
struct Case {
    what: &'static str,
    packet: Vec<u8>,
    rcode: ResponseCode,
    /// POP of the answer, for routed answers.
    pop: Option<&'static str>,
    /// Scope echoed, for queries with ECS.
    scope: Option<u8>,
}

/// Nine queries: four routed by the fast path where it is on (A and AAAA with
/// ECS, A from an unlocatable resolver), one routed through a CNAME (full path
/// everywhere), NXDOMAIN with ECS (scope 0), REFUSED, FORMERR (ECS with bits set
/// past its prefix) and a static MX.
fn cases() -> Vec<Case> {
    let encode = |message: Message| message.to_vec().expect("query encodes");
    let mut formerr = encode(query(WWW, RecordType::A));
    formerr[11] = 1; // ARCOUNT: the OPT below
    formerr.extend_from_slice(&[0, 0, 41, 0x04, 0xD0, 0, 0, 0, 0, 0, 11]);
    formerr.extend_from_slice(&[0, 8, 0, 7, 0, 1, 20, 0, 10, 1, 0x0F]);
    vec![
        Case {
            what: "Tokyo on isp-y, A",
            packet: encode(query_ecs(WWW, RecordType::A, v4("10.10.1.0"), 24)),
            rcode: ResponseCode::NoError,
            pop: Some("nrt"),
            scope: Some(16),
        },
        Case {
            what: "Frankfurt on isp-x, AAAA",
            packet: encode(query_ecs(WWW, RecordType::AAAA, v4("10.20.1.0"), 24)),
            rcode: ResponseCode::NoError,
            pop: Some("ams"),
            scope: Some(20),
        },
        Case {
            what: "no ECS, resolver unknown to the databases",
            packet: encode(query(WWW, RecordType::A)),
            rcode: ResponseCode::NoError,
            pop: Some("iad"),
            scope: None,
        },
        Case {
            what: "Washington, A",
            packet: encode(query_ecs(WWW, RecordType::A, v4("10.30.1.0"), 24)),
            rcode: ResponseCode::NoError,
            pop: Some("iad"),
            scope: Some(24),
        },
        Case {
            what: "CNAME to an accelerated name, no ECS",
            packet: encode(query("geo.cdn.test.", RecordType::A)),
            rcode: ResponseCode::NoError,
            pop: Some("iad"),
            scope: None,
        },
        Case {
            what: "NXDOMAIN with ECS",
            packet: encode(query_ecs(
                "nothing.cdn.test.",
                RecordType::A,
                v4("10.10.1.0"),
                24,
            )),
            rcode: ResponseCode::NXDomain,
            pop: None,
            scope: Some(0),
        },
        Case {
            what: "outside our zones",
            packet: encode(query("www.example.net.", RecordType::A)),
            rcode: ResponseCode::Refused,
            pop: None,
            scope: None,
        },
        Case {
            what: "malformed ECS",
            packet: formerr,
            rcode: ResponseCode::FormErr,
            pop: None,
            scope: None,
        },
        Case {
            what: "static MX",
            packet: encode(query("cdn.test.", RecordType::MX)),
            rcode: ResponseCode::NoError,
            pop: None,
            scope: None,
        },
    ]
}

/// Sends every case over `path` and checks each reply.
async fn run_cases(path: Path, addr: SocketAddr) {
    for case in cases() {
        let reply = exchange_raw(path, addr, &case.packet, common::TIMEOUT)
            .await
            .unwrap_or_else(|| panic!("{path:?} {}: a reply", case.what));
        let reply = Message::from_vec(&reply).expect("reply decodes");
        let what = case.what;
        assert_eq!(reply.metadata.response_code, case.rcode, "{path:?} {what}");
        if let Some(pop) = case.pop {
            assert!(!addresses(&reply).is_empty(), "{path:?} {what}");
            assert_eq!(pops_of(&reply), [pop], "{path:?} {what}");
        }
        assert_eq!(
            reply_ecs(&reply).map(|s| s.scope_prefix()),
            case.scope,
            "{path:?} {what}"
        );
    }
}

/// A parsed scrape.
struct Scraped(Scrape);

impl Scraped {
    /// Scrapes `/metrics`, checking the content type.
    async fn from(http: SocketAddr) -> Self {
        let response = reqwest::get(format!("http://{http}/metrics"))
            .await
            .expect("scrape");
        assert_eq!(response.status(), 200);
        assert_eq!(
            response
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok()),
            Some(METRICS_CONTENT_TYPE)
        );
        let text = response.text().await.expect("scrape body");
        let lines = text.lines().map(|l| Ok(l.to_string()));
        Self(Scrape::parse(lines).expect("Prometheus text format"))
    }

    /// The value of the series with exactly these labels; 0 if absent (a counter
    /// never incremented).
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let found: Vec<f64> = self
            .0
            .samples
            .iter()
            .filter(|s| s.metric == name && same_labels(&s.labels, labels))
            .map(|s| match s.value {
                Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
                _ => panic!("{name} is not a plain value"),
            })
            .collect();
        assert!(found.len() <= 1, "{name} {labels:?}: one series");
        found.first().copied().unwrap_or(0.0)
    }

    /// Every series of `name`, as label sets (without `le`) and values.
    fn series(&self, name: &str) -> Vec<(HashMap<String, String>, f64)> {
        self.0
            .samples
            .iter()
            .filter(|s| s.metric == name)
            .filter_map(|s| match s.value {
                Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => {
                    Some(((*s.labels).clone(), v))
                }
                _ => None,
            })
            .collect()
    }

    /// The cumulative bucket counts of a histogram series, as (upper bound, count).
    fn buckets(&self, name: &str, labels: &[(&str, &str)]) -> Vec<(f64, f64)> {
        self.0
            .samples
            .iter()
            .find(|s| s.metric == name && same_labels(&s.labels, labels))
            .map(|s| match &s.value {
                Value::Histogram(counts) => counts.iter().map(|c| (c.less_than, c.count)).collect(),
                _ => panic!("{name} is not a histogram"),
            })
            .unwrap_or_default()
    }
}

fn same_labels(found: &HashMap<String, String>, wanted: &[(&str, &str)]) -> bool {
    found.len() == wanted.len()
        && wanted
            .iter()
            .all(|(k, v)| found.get(*k).map(String::as_str) == Some(*v))
}

/// What one instance must show after [`run_cases`] over each of `transports`.
fn assert_counted(scrape: &Scraped, transports: &[&str], timed_decisions: f64) {
    let n = transports.len() as f64;
    assert_eq!(
        scrape.value(
            "meridian_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
    let queries = "meridian_dns_queries_total";
    for transport in transports {
        for (qtype, rcode, count) in [
            ("A", "NOERROR", 4.0),
            ("AAAA", "NOERROR", 1.0),
            ("A", "NXDOMAIN", 1.0),
            ("A", "REFUSED", 1.0),
            ("A", "FORMERR", 1.0),
            ("MX", "NOERROR", 1.0),
        ] {
            let labels = [
                ("transport", *transport),
                ("qtype", qtype),
                ("rcode", rcode),
            ];
            assert_eq!(scrape.value(queries, &labels), count, "{labels:?}");
        }
    }
    let total: f64 = scrape.series(queries).iter().map(|(_, v)| v).sum();
    assert_eq!(total, 9.0 * n, "no other query counted");

    let answers = "meridian_dns_answers_total";
    for (pop, count) in [("nrt", 1.0), ("ams", 1.0), ("iad", 3.0), ("fra", 0.0)] {
        assert_eq!(scrape.value(answers, &[("pop", pop)]), count * n, "{pop}");
    }
    let ecs = "meridian_dns_ecs_queries_total";
    assert_eq!(scrape.value(ecs, &[("ecs", "present")]), 4.0 * n);
    assert_eq!(scrape.value(ecs, &[("ecs", "absent")]), 5.0 * n);
    assert_eq!(scrape.value("meridian_geo_misses_total", &[]), 2.0 * n);

    // Scopes 16, 20, 24 and 0 per transport, all IPv4.
    let scope = "meridian_dns_ecs_scope_prefix_length";
    let buckets = scrape.buckets(scope, &[("family", "ipv4")]);
    let cumulative = |bound: f64| {
        buckets
            .iter()
            .find(|(le, _)| *le == bound)
            .map(|(_, count)| *count)
            .unwrap_or_else(|| panic!("bucket le={bound}"))
    };
    assert_eq!(cumulative(0.0), n);
    assert_eq!(cumulative(8.0), n);
    assert_eq!(cumulative(16.0), 2.0 * n);
    assert_eq!(cumulative(20.0), 3.0 * n);
    assert_eq!(cumulative(24.0), 4.0 * n);
    assert_eq!(cumulative(f64::INFINITY), 4.0 * n);
    assert_eq!(
        scrape.value(&format!("{scope}_count"), &[("family", "ipv4")]),
        4.0 * n
    );
    assert_eq!(
        scrape.value(&format!("{scope}_sum"), &[("family", "ipv4")]),
        60.0 * n
    );
    assert_eq!(
        scrape.value(&format!("{scope}_count"), &[("family", "ipv6")]),
        0.0
    );

    let decisions = "meridian_decision_duration_seconds";
    assert_eq!(
        scrape.value(&format!("{decisions}_count"), &[]),
        timed_decisions
    );
    let timed = scrape.buckets(decisions, &[]);
    assert_eq!(timed.last().map(|b| b.1), Some(timed_decisions));
    assert_eq!(scrape.value("meridian_fail_open_answers_total", &[]), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_are_counted_on_every_path() {
    let dir = write_world();
    let fast = start(dir.path(), true).await;
    let full = start(dir.path(), false).await;
    let fast_http = fast.http_addr().expect("control plane");
    let full_http = full.http_addr().expect("control plane");

    let before = Scraped::from(fast_http).await;
    assert_eq!(before.series("meridian_dns_queries_total"), []);
    assert_eq!(
        before.value(
            "meridian_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );

    run_cases(Path::UdpFast, fast.dns_addrs()[0]).await;
    run_cases(Path::Tcp, fast.dns_addrs()[0]).await;
    run_cases(Path::UdpFull, full.dns_addrs()[0]).await;

    // Fast-path instance: UDP times its first decision of five (then one in 64),
    // TCP all five.
    assert_counted(&Scraped::from(fast_http).await, &["udp", "tcp"], 6.0);
    assert_counted(&Scraped::from(full_http).await, &["udp"], 1.0);

    // The same counts for `/v1/pops`.
    fast.metrics().flush().await;
    let counts = fast.metrics().pop_answer_counts();
    for (pop, count) in [("nrt", 2), ("ams", 2), ("iad", 6), ("fra", 0), ("pek", 0)] {
        assert_eq!(counts.get(pop), Some(&count), "{pop}: {counts:?}");
    }

    // A second scrape with no query in between shows the same.
    assert_counted(&Scraped::from(full_http).await, &["udp"], 1.0);

    // Reloads by result.
    full.reload().await.expect("the same config reloads");
    let scrape = Scraped::from(full_http).await;
    let reloads = "meridian_config_reloads_total";
    assert_eq!(scrape.value(reloads, &[("result", "success")]), 1.0);
    assert_eq!(scrape.value(reloads, &[("result", "failure")]), 0.0);

    fast.shutdown().await;
    full.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_only_once_dns_serves_and_live_throughout() {
    // The control plane on its own, as `server::start` has it before the DNS
    // listeners are up.
    let dir = write_world();
    let snapshot = meridian::snapshot::Snapshot::load(common::load_config(dir.path(), true))
        .expect("snapshot");
    let shared = Arc::new(arc_swap::ArcSwap::from_pointee(snapshot));
    let metrics = Metrics::new();
    let ready = Readiness::new();
    let state = AppState {
        health: Arc::new(meridian::health::Health::new(
            Arc::clone(&shared),
            metrics.clone(),
        )),
        shared,
        metrics,
        ready: ready.clone(),
    };
    let listener = meridian::http::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .await
        .expect("bind");
    let http = listener.local_addr().expect("bound");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(meridian::http::serve(listener, state, async move {
        let _ = stopped.await;
    }));
    let status = |path: &'static str| async move {
        reqwest::get(format!("http://{http}{path}"))
            .await
            .expect("request")
            .status()
            .as_u16()
    };
    assert_eq!(status("/live").await, 200);
    assert_eq!(status("/ready").await, 503);
    ready.set_ready();
    assert_eq!(status("/ready").await, 200);
    assert_eq!(status("/live").await, 200);
    let _ = stop.send(());
    task.await.expect("joins").expect("serves");

    // A started instance is ready.
    let server = start(dir.path(), true).await;
    let http = server.http_addr().expect("control plane");
    let ready = reqwest::get(format!("http://{http}/ready"))
        .await
        .expect("request");
    assert_eq!(ready.status(), 200);
    server.shutdown().await;
}
