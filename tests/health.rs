//! Live health and load, end to end: reports pushed over real HTTP, answers read
//! back over real DNS (UDP fast path, UDP full path, TCP), the admin API, and
//! every error status of the intake.
//!
//! Each test starts its own pair of instances (with and without the UDP fast
//! path, from the same files) on port 0, since reports change their state. Time
//! never comes from sleeping: reports take effect when their POST returns, and
//! whatever depends on time passing (expiry, the shed rate limit, drains) is
//! driven by calling the keeper's tick with explicit instants from a virtual clock
//! that only moves forward.

mod common;

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use common::{PATHS, Path, TIMEOUT, pops_of, query_ecs, tcp_exchange, udp_exchange, v4};
use hickory_proto::op::Message;
use hickory_proto::rr::RecordType;
use meridian::config::{Config, Overlay};
use meridian::server::Server;
use reqwest::StatusCode;
use serde_json::{Value, json};

const REPORT_TOKEN: &str = "report-token";
/// May report for `fra` only.
const FRA_TOKEN: &str = "fra-token";
const ADMIN_TOKEN: &str = "admin-token";
const DEGRADED_TTL: u32 = 7;
const WWW: &str = "www.example.com.cdn.test.";

/// Health settings of the test world: no smoothing, a rate limit high enough that
/// one tick brings a shed share to its target, reports that do not expire while
/// the virtual clock runs, and a degraded TTL of its own. A test overrides keys.
fn health_yaml(overrides: &[(&str, &str)]) -> String {
    let mut settings = vec![
        ("expire-after", "3600"),
        ("unknown-means", "static"),
        ("down-after", "3"),
        ("up-after", "3"),
        ("load-half-life", "0"),
        ("low-watermark", "0.75"),
        ("high-watermark", "0.95"),
        ("max-shift-per-second", "1000"),
        ("degraded-ttl", "7"),
    ];
    for (key, value) in overrides {
        match settings.iter_mut().find(|(k, _)| k == key) {
            Some(setting) => setting.1 = value,
            None => panic!("no health setting `{key}`"),
        }
    }
    let mut yaml = format!(
        "health:\n  tokens:\n    - {{ token: {REPORT_TOKEN}, pops: [\"*\"] }}\n    - {{ token: {FRA_TOKEN}, pops: [fra] }}\n  admin-tokens: [{ADMIN_TOKEN}]\n"
    );
    for (key, value) in settings {
        yaml.push_str(&format!("  {key}: {value}\n"));
    }
    yaml
}

/// Two instances of the common world with a `health:` section, and a virtual
/// clock for their keepers.
struct Harness {
    dir: tempfile::TempDir,
    fast: Server,
    full: Server,
    http: reqwest::Client,
    clock: Instant,
}

impl Harness {
    async fn start(overrides: &[(&str, &str)]) -> Self {
        let dir = common::write_world();
        let health = health_yaml(overrides);
        for (file, fast_path) in [("health-fast.yaml", true), ("health-full.yaml", false)] {
            let text = format!("{}{health}", common::config_text(fast_path));
            std::fs::write(dir.path().join(file), text).expect("write config");
        }
        let fast = meridian::server::start(load(dir.path(), "health-fast.yaml"))
            .await
            .expect("fast-path instance starts");
        let full = meridian::server::start(load(dir.path(), "health-full.yaml"))
            .await
            .expect("full-path instance starts");
        Self {
            dir,
            fast,
            full,
            http: reqwest::Client::builder()
                .timeout(TIMEOUT)
                .build()
                .expect("HTTP client"),
            clock: Instant::now(),
        }
    }

    fn both(&self) -> [&Server; 2] {
        [&self.fast, &self.full]
    }

    fn url(server: &Server, path: &str) -> String {
        format!(
            "http://{}{path}",
            server.http_addr().expect("control plane")
        )
    }

    fn dns(&self, path: Path) -> SocketAddr {
        match path {
            Path::UdpFast | Path::Tcp => self.fast.dns_addrs()[0],
            Path::UdpFull => self.full.dns_addrs()[0],
        }
    }

    /// Posts a body to `/v1/health` of one instance.
    async fn post_to(
        &self,
        server: &Server,
        token: Option<&str>,
        body: impl Into<reqwest::Body>,
    ) -> (StatusCode, Value) {
        let mut request = self
            .http
            .post(Self::url(server, "/v1/health"))
            .header("content-type", "application/json")
            .body(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("POST /v1/health");
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Reports to both instances with the report token; both must agree.
    async fn report(&self, body: Value) -> (StatusCode, Value) {
        let fast = self
            .post_to(&self.fast, Some(REPORT_TOKEN), body.to_string())
            .await;
        let full = self
            .post_to(&self.full, Some(REPORT_TOKEN), body.to_string())
            .await;
        assert_eq!(fast.0, full.0, "{body}: {} / {}", fast.1, full.1);
        fast
    }

    /// One accepted report.
    async fn accepted(&self, pop: &str, seq: u64, healthy: bool, load: f64) -> Value {
        let (status, body) = self
            .report(json!({"pop": pop, "seq": seq, "healthy": healthy, "load": load}))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    /// An admin POST to both instances; returns the fast instance's reply.
    async fn admin(&self, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut replies = Vec::new();
        for server in self.both() {
            let mut request = self
                .http
                .post(Self::url(server, path))
                .bearer_auth(ADMIN_TOKEN);
            if let Some(body) = &body {
                request = request.json(body);
            }
            let response = request.send().await.expect("admin POST");
            let status = response.status();
            replies.push((status, response.json().await.unwrap_or(Value::Null)));
        }
        assert_eq!(replies[0].0, replies[1].0, "{path}");
        replies.swap_remove(0)
    }

    /// `GET /v1/pops` of the fast instance, by POP id.
    async fn pops(&self) -> HashMap<String, Value> {
        let body: Value = self
            .http
            .get(Self::url(&self.fast, "/v1/pops"))
            .send()
            .await
            .expect("GET /v1/pops")
            .json()
            .await
            .expect("JSON");
        body["pops"]
            .as_array()
            .expect("pops list")
            .iter()
            .map(|p| (p["id"].as_str().expect("id").to_string(), p.clone()))
            .collect()
    }

    /// Moves the virtual clock on by `by` (from now at the earliest) and ticks
    /// both keepers there.
    fn advance(&mut self, by: Duration) {
        self.clock = self.clock.max(Instant::now()) + by;
        for server in self.both() {
            server.health().tick(self.clock);
        }
    }

    /// Lets shed shares reach their targets (the test rate limit is 1000/s).
    fn settle(&mut self) {
        self.advance(Duration::from_secs(1));
    }

    /// Asks `name` A for a client subnet over `path`.
    async fn ask(&self, path: Path, subnet: &str, name: &str) -> Message {
        let (addr, prefix) = subnet.split_once('/').expect("subnet");
        let message = query_ecs(
            name,
            RecordType::A,
            v4(addr),
            prefix.parse().expect("prefix"),
        );
        let packet = message.to_vec().expect("query encodes");
        let reply = match path {
            Path::UdpFast | Path::UdpFull => udp_exchange(self.dns(path), &packet, TIMEOUT)
                .await
                .unwrap_or_else(|| panic!("{path:?}: no reply")),
            Path::Tcp => tcp_exchange(self.dns(path), &[&packet], 1)
                .await
                .pop()
                .unwrap_or_else(|| panic!("{path:?}: no reply")),
        };
        Message::from_vec(&reply).expect("reply decodes")
    }

    /// The POP answering `www` for a subnet over `path`.
    async fn pop_for(&self, path: Path, subnet: &str) -> &'static str {
        let reply = self.ask(path, subnet, WWW).await;
        pops_of(&reply).first().copied().unwrap_or("none")
    }

    /// The POP answering on every path, which must agree.
    async fn pop_everywhere(&self, subnet: &str) -> &'static str {
        let pop = self.pop_for(Path::UdpFast, subnet).await;
        for path in [Path::UdpFull, Path::Tcp] {
            assert_eq!(
                self.pop_for(path, subnet).await,
                pop,
                "{subnet} over {path:?}"
            );
        }
        pop
    }
}

fn load(dir: &std::path::Path, file: &str) -> Config {
    let overlay = Overlay {
        dns_listen: vec![SocketAddr::from((Ipv4Addr::LOCALHOST, 0))],
        http_listen: Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))),
        ..Overlay::default()
    };
    Config::load(&dir.join(file), &overlay).expect("config loads")
}

/// A client in Tokyo on isp-y: nrt, then pek.
const TOKYO: &str = "10.10.1.0/24";

/// Frankfurt subnets on no known ISP (the ASN database knows only 10.20.0.0/20):
/// fra first, ams second, iad third.
fn frankfurt_subnets() -> Vec<String> {
    (16..=255).map(|i| format!("10.20.{i}.0/24")).collect()
}

/// Where each Frankfurt subnet is sent, over the fast path.
async fn frankfurt_answers(harness: &Harness) -> Vec<&'static str> {
    let mut answers = Vec::new();
    for subnet in frankfurt_subnets() {
        answers.push(harness.pop_for(Path::UdpFast, &subnet).await);
    }
    answers
}

fn share_of(answers: &[&str], pop: &str) -> f64 {
    answers.iter().filter(|a| **a == pop).count() as f64 / answers.len() as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_sheds_a_stable_share_of_subnets_to_the_runner_up() {
    let mut harness = Harness::start(&[]).await;
    let before = frankfurt_answers(&harness).await;
    assert!(before.iter().all(|p| *p == "fra"), "{before:?}");

    // Halfway between the watermarks: half of fra's clients move to ams.
    let accepted = harness.accepted("fra", 1, true, 0.85).await;
    assert_eq!(accepted["health"], "up");
    harness.settle();
    let pops = harness.pops().await;
    assert!((pops["fra"]["shed"].as_f64().expect("shed") - 0.5).abs() < 1e-6);
    let during = frankfurt_answers(&harness).await;
    assert!(
        during.iter().all(|p| matches!(*p, "fra" | "ams")),
        "{during:?}"
    );
    let moved = share_of(&during, "ams");
    assert!((0.35..=0.65).contains(&moved), "moved {moved}");

    // Each subnet keeps its answer, on every path.
    for (subnet, pop) in frankfurt_subnets().iter().zip(&during).step_by(8) {
        assert_eq!(harness.pop_everywhere(subnet).await, *pop, "{subnet}");
    }
    assert_eq!(frankfurt_answers(&harness).await, during);

    // More load moves more subnets, and those already moved stay moved.
    harness.accepted("fra", 2, true, 0.9).await;
    harness.settle();
    let more = frankfurt_answers(&harness).await;
    assert!(share_of(&more, "ams") > moved);
    for (now, then) in more.iter().zip(&during) {
        if *then == "ams" {
            assert_eq!(*now, "ams");
        }
    }

    // Load gone: everyone comes back.
    harness.accepted("fra", 3, true, 0.2).await;
    harness.settle();
    let after = frankfurt_answers(&harness).await;
    assert!(after.iter().all(|p| *p == "fra"), "{after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn above_the_high_watermark_no_client_gets_the_pop() {
    let mut harness = Harness::start(&[]).await;
    harness.accepted("fra", 1, true, 0.97).await;
    harness.settle();
    let answers = frankfurt_answers(&harness).await;
    assert!(answers.iter().all(|p| *p == "ams"), "{answers:?}");
    for subnet in ["10.20.16.0/24", "10.20.200.0/24"] {
        assert_eq!(harness.pop_everywhere(subnet).await, "ams");
    }
    // With two POPs in the answer, the next one becomes the runner-up.
    let reply = harness
        .ask(Path::UdpFast, "10.20.16.0/24", "two.example.com.cdn.test.")
        .await;
    assert_eq!(pops_of(&reply), ["ams", "iad"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_pop_stops_after_n_bad_reports_and_returns_after_n_good() {
    let harness = Harness::start(&[]).await;
    assert_eq!(harness.pop_everywhere(TOKYO).await, "nrt");
    for seq in 1..=2 {
        harness.accepted("nrt", seq, false, 0.1).await;
        assert_eq!(harness.pop_everywhere(TOKYO).await, "nrt", "after {seq}");
    }
    let body = harness.accepted("nrt", 3, false, 0.1).await;
    assert_eq!(
        (body["health"].as_str(), body["usable"].as_bool()),
        (Some("down"), Some(false))
    );
    assert_eq!(harness.pop_everywhere(TOKYO).await, "pek");
    for seq in 4..=5 {
        harness.accepted("nrt", seq, true, 0.1).await;
        assert_eq!(harness.pop_everywhere(TOKYO).await, "pek", "after {seq}");
    }
    harness.accepted("nrt", 6, true, 0.1).await;
    assert_eq!(harness.pop_everywhere(TOKYO).await, "nrt");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_reports_expire_and_unknown_means_what_the_config_says() {
    let mut harness = Harness::start(&[("expire-after", "60")]).await;
    for seq in 1..=3 {
        harness.accepted("nrt", seq, false, 0.1).await;
    }
    assert_eq!(harness.pop_for(Path::UdpFast, TOKYO).await, "pek");
    harness.advance(Duration::from_secs(59));
    assert_eq!(harness.pops().await["nrt"]["health"], "down");
    assert_eq!(harness.pop_for(Path::UdpFast, TOKYO).await, "pek");
    // A minute without a report: unknown, which here means "as configured".
    harness.advance(Duration::from_secs(1));
    let pops = harness.pops().await;
    assert_eq!(pops["nrt"]["health"], "unknown");
    assert_eq!(pops["nrt"]["usable"], true);
    assert_eq!(pops["nrt"]["load"], Value::Null);
    assert_eq!(harness.pop_everywhere(TOKYO).await, "nrt");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_means_down_keeps_silent_pops_out() {
    let mut harness = Harness::start(&[("expire-after", "60"), ("unknown-means", "down")]).await;
    let batch = |seq: u64, pops: &[&str]| {
        let reports: Vec<Value> = pops
            .iter()
            .map(|pop| json!({"pop": pop, "seq": seq, "healthy": true, "load": 0.1}))
            .collect();
        json!({ "reports": reports })
    };
    let all = ["fra", "ams", "nrt", "iad", "pek"];
    // Nothing reported yet: every POP down, so answers fail open to the nearest.
    assert_eq!(harness.pop_for(Path::UdpFast, TOKYO).await, "nrt");
    assert_eq!(harness.pops().await["nrt"]["usable"], false);
    for seq in 1..=3 {
        let (status, body) = harness.report(batch(seq, &all)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["accepted"], 5);
    }
    assert_eq!(harness.pops().await["nrt"]["usable"], true);
    // Reports stop everywhere; only the others report again.
    harness.advance(Duration::from_secs(61));
    assert_eq!(harness.pops().await["pek"]["health"], "unknown");
    for seq in 4..=6 {
        harness
            .report(batch(seq, &["fra", "ams", "iad", "pek"]))
            .await;
    }
    let pops = harness.pops().await;
    assert_eq!(
        (
            pops["nrt"]["health"].as_str(),
            pops["nrt"]["usable"].as_bool()
        ),
        (Some("unknown"), Some(false))
    );
    assert_eq!(pops["pek"]["usable"], true);
    assert_eq!(harness.pop_everywhere(TOKYO).await, "pek");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_down_fails_open_to_the_nearest() {
    let harness = Harness::start(&[]).await;
    for seq in 1..=3 {
        let reports: Vec<Value> = ["fra", "ams", "nrt", "iad", "pek"]
            .iter()
            .map(|pop| json!({"pop": pop, "seq": seq, "healthy": false, "load": 0.1}))
            .collect();
        let (status, _) = harness.report(json!({ "reports": reports })).await;
        assert_eq!(status, StatusCode::OK);
    }
    assert!(harness.pops().await.values().all(|p| p["usable"] == false));
    // Not SERVFAIL: the nearest POPs, as if nobody had reported, with a short TTL.
    assert_eq!(harness.pop_everywhere(TOKYO).await, "nrt");
    assert_eq!(harness.pop_everywhere("10.20.16.0/24").await, "fra");
    for path in PATHS {
        let reply = harness.ask(path, TOKYO, WWW).await;
        assert!(
            reply.answers.iter().all(|r| r.ttl == DEGRADED_TTL),
            "{path:?}"
        );
    }
    let explained: Value = harness
        .http
        .get(Harness::url(
            &harness.fast,
            "/v1/explain?client=10.10.1.0/24&name=www.example.com",
        ))
        .send()
        .await
        .expect("explain")
        .json()
        .await
        .expect("JSON");
    assert_eq!(explained["fail_open"], true);
    assert_eq!(explained["chosen"][0], "nrt");
    // Counted, exactly: this instance answered six of the queries above over UDP
    // and TCP (the full-path UDP ones went to the other instance); a scrape waits
    // for the UDP workers to flush.
    let counted = metric_sum(&harness, meridian::metrics::FAIL_OPEN_ANSWERS).await;
    assert_eq!(counted, 6.0, "fail-open answers counted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_limit_caps_how_far_the_shed_moves() {
    let mut harness = Harness::start(&[("max-shift-per-second", "0.05")]).await;
    let before = Instant::now();
    harness.accepted("fra", 1, true, 1.0).await;
    let after = Instant::now();
    // Full overload, yet the first report moves (next to) nobody...
    let shed = harness.pops().await["fra"]["shed"].as_f64().expect("shed");
    let slack = 0.05 * before.elapsed().as_secs_f64();
    assert!(shed <= slack + 1e-9, "shed {shed} right after the report");
    // ...then at most 5% of fra's clients a second.
    // The report came between `before` and `after`; the tick is 4 s past both.
    harness.clock = after;
    harness.advance(Duration::from_secs(4));
    let shed = harness.pops().await["fra"]["shed"].as_f64().expect("shed");
    let most = 0.05 * (harness.clock - before).as_secs_f64();
    assert!(
        (0.2 - 1e-9..=most + 1e-9).contains(&shed),
        "shed {shed} after 4 s"
    );
    let answers = frankfurt_answers(&harness).await;
    let moved = share_of(&answers, "ams");
    assert!((0.05..=0.4).contains(&moved), "moved {moved}");
    harness.advance(Duration::from_secs(100));
    assert_eq!(harness.pops().await["fra"]["shed"], 1.0);
    assert!(
        frankfurt_answers(&harness)
            .await
            .iter()
            .all(|p| *p == "ams")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_ramps_over_the_given_time_and_undrain_brings_clients_back() {
    let mut harness = Harness::start(&[("max-shift-per-second", "0.05")]).await;
    let before = Instant::now();
    let (status, body) = harness
        .admin("/v1/pops/fra/drain", Some(json!({"over_seconds": 60})))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["drain"]["state"], "draining");
    assert_eq!(body["degraded"], true);
    // The drain began between `before` and now; the tick is 30 s past both.
    harness.clock = before;
    harness.advance(Duration::from_secs(30));
    let fra = &harness.pops().await["fra"];
    let progress = fra["drain"]["progress"].as_f64().expect("progress");
    let most = (harness.clock - before).as_secs_f64() / 60.0;
    assert!((0.5 - 1e-9..=most + 1e-9).contains(&progress), "{fra}");
    assert_eq!(fra["shed"], fra["drain"]["progress"]);
    let moved = share_of(&frankfurt_answers(&harness).await, "ams");
    assert!((0.3..=0.7).contains(&moved), "moved {moved}");
    harness.advance(Duration::from_secs(30));
    let fra = &harness.pops().await["fra"];
    assert_eq!(
        (fra["drain"]["state"].as_str(), fra["shed"].as_f64()),
        (Some("drained"), Some(1.0))
    );
    assert!(
        frankfurt_answers(&harness)
            .await
            .iter()
            .all(|p| *p == "ams")
    );

    // Undrained, clients come back at the rate limit, not all at once.
    let (status, body) = harness.admin("/v1/pops/fra/undrain", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["drain"]["state"], "none");
    harness.advance(Duration::from_secs(4));
    let shed = harness.pops().await["fra"]["shed"].as_f64().expect("shed");
    assert!((shed - 0.8).abs() < 1e-6, "shed {shed}");
    harness.advance(Duration::from_secs(16));
    assert!(
        frankfurt_answers(&harness)
            .await
            .iter()
            .all(|p| *p == "fra")
    );

    // At once.
    let (status, body) = harness
        .admin("/v1/pops/ams/drain", Some(json!({"over_seconds": 0})))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (body["shed"].as_f64(), body["drain"]["state"].as_str()),
        (Some(1.0), Some("drained"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forced_states_beat_reports() {
    let harness = Harness::start(&[]).await;
    let (status, body) = harness
        .admin("/v1/pops/nrt/force", Some(json!({"state": "down"})))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (body["forced"].as_str(), body["usable"].as_bool()),
        (Some("down"), Some(false))
    );
    assert_eq!(harness.pop_everywhere(TOKYO).await, "pek");
    // Healthy reports do not lift a forced down.
    for seq in 1..=3 {
        harness.accepted("nrt", seq, true, 0.1).await;
    }
    assert_eq!(harness.pop_everywhere(TOKYO).await, "pek");
    harness
        .admin("/v1/pops/nrt/force", Some(json!({"state": "auto"})))
        .await;
    assert_eq!(harness.pop_everywhere(TOKYO).await, "nrt");
    for seq in 4..=6 {
        harness.accepted("nrt", seq, false, 0.1).await;
    }
    assert_eq!(harness.pop_everywhere(TOKYO).await, "pek");
    harness
        .admin("/v1/pops/nrt/force", Some(json!({"state": "up"})))
        .await;
    assert_eq!(harness.pop_everywhere(TOKYO).await, "nrt");
    assert_eq!(harness.pops().await["nrt"]["health"], "down");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn degraded_pops_answer_with_the_degraded_ttl_on_every_path() {
    let mut harness = Harness::start(&[]).await;
    // Loaded past the low watermark: degraded, shedding a fifth.
    harness.accepted("fra", 1, true, 0.79).await;
    harness.settle();
    for path in PATHS {
        for subnet in [
            "10.20.16.0/24",
            "10.20.17.0/24",
            "10.20.18.0/24",
            "10.20.19.0/24",
        ] {
            // Moved or not, the answer came from fra's shedding: short TTL.
            let reply = harness.ask(path, subnet, WWW).await;
            assert!(!reply.answers.is_empty());
            assert!(
                reply.answers.iter().all(|r| r.ttl == DEGRADED_TTL),
                "{path:?} {subnet}"
            );
            let scope = common::reply_ecs(&reply).expect("ECS").scope_prefix();
            assert_eq!(
                scope, 24,
                "shedding makes the answer depend on the whole /24"
            );
        }
        // Tokyo's answer does not involve fra: the domain's own TTL.
        let reply = harness.ask(path, TOKYO, WWW).await;
        assert!(reply.answers.iter().all(|r| r.ttl == 30), "{path:?}");
        // A degraded TTL never lengthens a domain's: `*.example.org` has 45.
        let reply = harness
            .ask(path, "10.20.16.0/24", "a.example.org.cdn.test.")
            .await;
        assert!(
            reply.answers.iter().all(|r| r.ttl == DEGRADED_TTL),
            "{path:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_errors_have_their_statuses_and_reasons() {
    let harness = Harness::start(&[]).await;
    let server = &harness.fast;
    let good = json!({"pop": "nrt", "seq": 1, "healthy": true, "load": 0.4}).to_string();
    let cases: [(Option<&str>, String, StatusCode, &str); 13] = [
        (None, good.clone(), StatusCode::UNAUTHORIZED, "bearer token"),
        (
            Some("wrong-token"),
            good.clone(),
            StatusCode::UNAUTHORIZED,
            "bearer token",
        ),
        (
            Some(ADMIN_TOKEN),
            good.clone(),
            StatusCode::UNAUTHORIZED,
            "bearer token",
        ),
        (
            Some(FRA_TOKEN),
            good.clone(),
            StatusCode::FORBIDDEN,
            "may not report for pop `nrt`",
        ),
        (
            Some(REPORT_TOKEN),
            good.replace("nrt", "xyz"),
            StatusCode::NOT_FOUND,
            "unknown pop `xyz`",
        ),
        (
            Some(REPORT_TOKEN),
            "{\"pop\":".into(),
            StatusCode::BAD_REQUEST,
            "not valid JSON",
        ),
        (
            Some(REPORT_TOKEN),
            r#"{"pop":"nrt","healthy":true,"load":0.4}"#.into(),
            StatusCode::BAD_REQUEST,
            "missing field `seq`",
        ),
        (
            Some(REPORT_TOKEN),
            r#"{"pop":"nrt","seq":"x","healthy":true,"load":0.4}"#.into(),
            StatusCode::BAD_REQUEST,
            "seq: invalid type",
        ),
        (
            Some(REPORT_TOKEN),
            good.replace("0.4", "1.5"),
            StatusCode::BAD_REQUEST,
            "load 1.5 is outside 0..=1",
        ),
        (
            Some(REPORT_TOKEN),
            good.replace("0.4", "-0.1"),
            StatusCode::BAD_REQUEST,
            "outside 0..=1",
        ),
        (
            Some(REPORT_TOKEN),
            good.replace("0.4", "NaN"),
            StatusCode::BAD_REQUEST,
            "not valid JSON",
        ),
        (
            Some(REPORT_TOKEN),
            good.replace("}", ",\"bandwidth_mbps\":-5}"),
            StatusCode::BAD_REQUEST,
            "bandwidth_mbps -5",
        ),
        (
            Some(REPORT_TOKEN),
            format!(
                "{{\"reports\":[{good}],\"pad\":\"{}\"}}",
                "x".repeat(70_000)
            ),
            StatusCode::PAYLOAD_TOO_LARGE,
            "body over 65536 bytes",
        ),
    ];
    for (token, body, status, phrase) in cases {
        let (got, reply) = harness.post_to(server, token, body.clone()).await;
        let shown: String = body.chars().take(80).collect();
        assert_eq!(got, status, "{shown}: {reply}");
        let error = reply["error"].as_str().unwrap_or_default();
        assert!(
            error.contains(phrase),
            "{shown}: `{phrase}` not in `{error}`"
        );
    }
    // A 401 says how to authenticate.
    let response = harness
        .http
        .post(Harness::url(server, "/v1/health"))
        .body(good.clone())
        .send()
        .await
        .expect("POST");
    assert_eq!(
        response.headers()["www-authenticate"],
        "Bearer realm=\"meridian\""
    );

    // Order: the same seq again, or an older one, is a conflict; a new epoch starts over.
    let post = |body: Value| harness.post_to(server, Some(REPORT_TOKEN), body.to_string());
    let report = |seq: u64, epoch: u64| json!({"pop": "nrt", "seq": seq, "epoch": epoch, "healthy": true, "load": 0.4});
    assert_eq!(post(report(17, 0)).await.0, StatusCode::OK);
    let (status, reply) = post(report(17, 0)).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(
        reply["error"]
            .as_str()
            .unwrap_or_default()
            .contains("seq 17 is not after"),
        "{reply}"
    );
    assert_eq!(post(report(3, 0)).await.0, StatusCode::CONFLICT);
    assert_eq!(post(report(1, 1)).await.0, StatusCode::OK);
    assert_eq!(post(report(99, 0)).await.0, StatusCode::CONFLICT);

    // A batch: each report on its own; the status is that of the first refused.
    let (status, reply) = post(json!({"reports": [
        {"pop": "fra", "seq": 1, "healthy": true, "load": 0.2},
        {"pop": "nrt", "seq": 1, "epoch": 1, "healthy": true, "load": 0.2},
        {"pop": "nowhere", "seq": 1, "healthy": true, "load": 0.2},
        {"pop": "ams", "seq": 1, "healthy": true, "load": 0.2},
    ]}))
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{reply}");
    assert_eq!(
        (reply["accepted"].as_u64(), reply["rejected"].as_u64()),
        (Some(2), Some(2))
    );
    let statuses: Vec<u64> = reply["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["status"].as_u64().expect("status"))
        .collect();
    assert_eq!(statuses, [200, 409, 404, 200]);
    let pops = harness.pops().await;
    assert_eq!(
        (pops["fra"]["seq"].as_u64(), pops["ams"]["seq"].as_u64()),
        (Some(1), Some(1))
    );
    let (status, reply) = post(json!({"reports": []})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{reply}");

    // Every outcome is counted.
    let counts = report_counts(&harness).await;
    for (reason, at_least) in [
        ("accepted", 4.0),
        ("unauthorized", 4.0),
        ("forbidden", 1.0),
        ("unknown_pop", 2.0),
        ("malformed", 7.0),
        ("out_of_order", 4.0),
        ("too_large", 1.0),
    ] {
        let got = counts.get(reason).copied().unwrap_or_default();
        assert!(
            got >= at_least,
            "{reason}: {got} < {at_least} in {counts:?}"
        );
    }
}

/// The fast instance's `/metrics`, parsed.
async fn scrape(harness: &Harness) -> prometheus_parse::Scrape {
    let text = harness
        .http
        .get(Harness::url(&harness.fast, "/metrics"))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text");
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("metrics parse")
}

/// A metric of the fast instance, summed over its label sets.
async fn metric_sum(harness: &Harness, name: &str) -> f64 {
    scrape(harness)
        .await
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum()
}

/// A metric of the fast instance, by the value of one of its labels.
async fn metric_by(harness: &Harness, name: &str, label: &str) -> HashMap<String, f64> {
    scrape(harness)
        .await
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .filter_map(|s| {
            let value = match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => return None,
            };
            Some((s.labels.get(label)?.to_string(), value))
        })
        .collect()
}

/// `meridian_health_reports_total` of the fast instance, by reason.
async fn report_counts(harness: &Harness) -> HashMap<String, f64> {
    metric_by(harness, meridian::metrics::HEALTH_REPORTS, "reason").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_needs_the_admin_token_and_says_what_is_wrong() {
    let harness = Harness::start(&[]).await;
    let server = &harness.fast;
    let post = |path: &str, token: Option<&str>, body: &str| {
        let mut request = harness
            .http
            .post(Harness::url(server, path))
            .body(body.to_string());
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        async move {
            let response = request.send().await.expect("POST");
            let status = response.status();
            (
                status,
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let drain = r#"{"over_seconds": 60}"#;
    for (path, token, body, status, phrase) in [
        (
            "/v1/pops/fra/drain",
            None,
            drain,
            StatusCode::UNAUTHORIZED,
            "bearer token",
        ),
        (
            "/v1/pops/fra/drain",
            Some(REPORT_TOKEN),
            drain,
            StatusCode::UNAUTHORIZED,
            "bearer token",
        ),
        (
            "/v1/pops/fra/undrain",
            Some("nope"),
            "",
            StatusCode::UNAUTHORIZED,
            "bearer token",
        ),
        (
            "/v1/pops/xyz/drain",
            Some(ADMIN_TOKEN),
            drain,
            StatusCode::NOT_FOUND,
            "unknown pop `xyz`",
        ),
        (
            "/v1/pops/xyz/undrain",
            Some(ADMIN_TOKEN),
            "",
            StatusCode::NOT_FOUND,
            "unknown pop",
        ),
        (
            "/v1/pops/fra/drain",
            Some(ADMIN_TOKEN),
            "",
            StatusCode::BAD_REQUEST,
            "body",
        ),
        (
            "/v1/pops/fra/drain",
            Some(ADMIN_TOKEN),
            r#"{"over_seconds": -1}"#,
            StatusCode::BAD_REQUEST,
            "expected seconds from 0",
        ),
        (
            "/v1/pops/fra/drain",
            Some(ADMIN_TOKEN),
            r#"{"over": 1}"#,
            StatusCode::BAD_REQUEST,
            "unknown field",
        ),
        (
            "/v1/pops/fra/force",
            Some(ADMIN_TOKEN),
            r#"{"state": "sideways"}"#,
            StatusCode::BAD_REQUEST,
            "unknown variant `sideways`",
        ),
        (
            "/v1/pops/fra/force",
            Some(ADMIN_TOKEN),
            r#"{"state": "down"}"#,
            StatusCode::OK,
            "",
        ),
    ] {
        let (got, reply) = post(path, token, body).await;
        assert_eq!(got, status, "{path} {body}: {reply}");
        let error = reply["error"].as_str().unwrap_or_default();
        assert!(
            error.contains(phrase),
            "{path}: `{phrase}` not in `{error}`"
        );
    }
    assert_eq!(harness.pops().await["fra"]["forced"], "down");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_pops_shows_every_pops_live_state_and_share_of_answers() {
    let harness = Harness::start(&[]).await;
    let pops = harness.pops().await;
    assert_eq!(pops.len(), 5);
    let iad = &pops["iad"];
    assert_eq!(iad["health"], "unknown");
    assert_eq!(
        (iad["usable"].as_bool(), iad["admin"].as_str()),
        (Some(true), Some("up"))
    );
    assert_eq!(iad["last_report_age_seconds"], Value::Null);
    assert_eq!(iad["drain"]["state"], "none");

    harness
        .report(json!({
            "pop": "nrt", "seq": 7, "epoch": 2, "healthy": true, "load": 0.8,
            "bandwidth_mbps": 940.5, "connections": 1200, "requests_per_second": 310.0
        }))
        .await;
    // Answers over TCP are counted as they go.
    for _ in 0..3 {
        harness.ask(Path::Tcp, TOKYO, WWW).await;
    }
    harness.ask(Path::Tcp, "10.30.1.0/24", WWW).await;
    let pops = harness.pops().await;
    let nrt = &pops["nrt"];
    assert_eq!(
        (nrt["health"].as_str(), nrt["forced"].as_str()),
        (Some("up"), Some("auto"))
    );
    assert_eq!(
        (nrt["load"].as_f64(), nrt["degraded"].as_bool()),
        (Some(0.8), Some(true))
    );
    assert_eq!(
        (nrt["seq"].as_u64(), nrt["epoch"].as_u64()),
        (Some(7), Some(2))
    );
    let age = nrt["last_report_age_seconds"].as_f64().expect("age");
    assert!((0.0..5.0).contains(&age), "{age}");
    assert_eq!(nrt["reported"]["bandwidth_mbps"], 940.5);
    assert_eq!(nrt["reported"]["connections"], 1200);
    assert_eq!(nrt["reported"]["requests_per_second"], 310.0);
    assert!(nrt["answers"].as_u64().expect("answers") >= 3, "{nrt}");
    let share = nrt["answer_share"].as_f64().expect("share");
    assert!(share > 0.0 && share <= 1.0, "{share}");
    let total: f64 = pops
        .values()
        .map(|p| p["answer_share"].as_f64().unwrap_or(0.0))
        .sum();
    assert!((total - 1.0).abs() < 1e-9, "shares add up: {total}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_shows_health_load_and_shed_and_matches_dns() {
    let mut harness = Harness::start(&[]).await;
    harness.accepted("fra", 1, true, 0.85).await;
    for seq in 1..=3 {
        harness.accepted("iad", seq, false, 0.1).await;
    }
    harness.settle();
    for subnet in [
        "10.20.16.0/24",
        "10.20.17.0/24",
        "10.20.18.0/24",
        "10.20.19.0/24",
        "10.20.20.0/24",
    ] {
        let explained: Value = harness
            .http
            .get(Harness::url(
                &harness.fast,
                &format!("/v1/explain?client={subnet}&name=www.example.com"),
            ))
            .send()
            .await
            .expect("explain")
            .json()
            .await
            .expect("JSON");
        let pops: HashMap<&str, &Value> = explained["pops"]
            .as_array()
            .expect("pops")
            .iter()
            .map(|p| (p["id"].as_str().expect("id"), p))
            .collect();
        assert_eq!(pops["fra"]["health"], "up");
        assert_eq!(
            (pops["fra"]["load"].as_f64(), pops["fra"]["shed"].as_f64()),
            (Some(0.85), Some(0.5))
        );
        assert_eq!(pops["iad"]["excluded"], "health down");
        assert_eq!(pops["iad"]["eligible"], false);
        assert_eq!(explained["shed"]["from"], "fra");
        let moved = explained["shed"]["moved"].as_bool().expect("moved");
        let draw = explained["shed"]["draw"].as_f64().expect("draw");
        assert_eq!(moved, draw < 0.5, "{explained}");
        assert_eq!(explained["ttl"], DEGRADED_TTL);
        assert_eq!(
            explained["chosen"][0],
            harness.pop_for(Path::UdpFast, subnet).await
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_state_survives_a_reload() {
    let harness = Harness::start(&[]).await;
    for seq in 1..=3 {
        harness.accepted("nrt", seq, false, 0.1).await;
    }
    assert_eq!(harness.pop_for(Path::UdpFast, TOKYO).await, "pek");
    // Same POPs in another order: state follows the id, not the index.
    let path = harness.dir.path().join("health-fast.yaml");
    let text = std::fs::read_to_string(&path).expect("config");
    let nrt_block_start = text.find("  - id: nrt\n").expect("nrt");
    let nrt_block_end = text[nrt_block_start..]
        .find("  - id: iad\n")
        .map(|i| nrt_block_start + i)
        .expect("iad after nrt");
    let nrt_block = &text[nrt_block_start..nrt_block_end];
    let moved =
        text.replacen(nrt_block, "", 1)
            .replacen("pops:\n", &format!("pops:\n{nrt_block}"), 1);
    std::fs::write(&path, &moved).expect("write config");
    harness.fast.reload().await.expect("reload");
    assert_eq!(harness.fast.shared().load().config.pops[0].id, "nrt");
    assert_eq!(harness.pop_for(Path::UdpFast, TOKYO).await, "pek");
    assert_eq!(harness.pops().await["nrt"]["health"], "down");
}

/// The per-POP gauges as a scrape shows them, by POP id.
async fn pop_gauges(harness: &Harness, name: &str) -> HashMap<String, f64> {
    metric_by(harness, name, "pop").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_pop_gauges_follow_the_reports() {
    let harness = Harness::start(&[]).await;
    let healthy = pop_gauges(&harness, meridian::metrics::POP_HEALTHY).await;
    assert_eq!(healthy.len(), 5, "{healthy:?}");
    assert!(
        healthy.values().all(|v| *v == -1.0),
        "all unknown: {healthy:?}"
    );

    harness.accepted("nrt", 1, true, 0.8).await;
    let healthy = pop_gauges(&harness, meridian::metrics::POP_HEALTHY).await;
    assert_eq!((healthy["nrt"], healthy["iad"]), (1.0, -1.0), "{healthy:?}");
    let load = pop_gauges(&harness, meridian::metrics::POP_LOAD).await;
    assert!((load["nrt"] - 0.8).abs() < 1e-9, "{load:?}");
    assert_eq!(load["iad"], 0.0);
    let age = pop_gauges(&harness, meridian::metrics::POP_REPORT_AGE).await;
    assert!((0.0..5.0).contains(&age["nrt"]), "{age:?}");
    assert_eq!(age["iad"], -1.0);
}
