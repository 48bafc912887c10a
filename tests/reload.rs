//! Hot reload over real sockets: a changed TTL, a new POP, a zone file, broken
//! configs that are rejected while the old answers stay, the file watcher, geo
//! databases reused when untouched, and no query lost while reloads run under load.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{Path, exchange_raw, pops_of, query, query_ecs, udp_exchange, v4};
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use meridian::config::{Config, Overlay};
use meridian::server::Server;

const WWW: &str = "www.example.com.cdn.test.";
/// Routed to Washington: iad, until a POP in Washington itself is added.
const WASHINGTON: &str = "10.30.1.0";
/// Routed to Tokyo: nrt.
const TOKYO: &str = "10.10.1.0";
/// How long the watcher gets to notice a change (it waits ~300 ms for quiet).
const WATCH_TIMEOUT: Duration = Duration::from_secs(10);

/// A world of its own (reloads would disturb a shared one) and its fast-path
/// instance; with `watch`, reloading on file changes too. Tests that reload
/// explicitly turn the watcher off, so that it cannot add reloads of its own.
async fn start(watch: bool) -> (tempfile::TempDir, Server) {
    let dir = common::write_world();
    let overlay = Overlay {
        dns_listen: vec![SocketAddr::from((Ipv4Addr::LOCALHOST, 0))],
        http_listen: Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))),
        no_watch: !watch,
        ..Overlay::default()
    };
    let config = Config::load(&config_path(&dir), &overlay).expect("config loads");
    let server = meridian::server::start(config)
        .await
        .expect("instance starts");
    (dir, server)
}

fn config_path(dir: &tempfile::TempDir) -> PathBuf {
    // The fast-path config of `common::write_world`.
    dir.path().join("fast.yaml")
}

/// Replaces a file the way deploy tools do: write beside it, rename over it.
fn replace(path: &FsPath, text: &str) {
    let temporary = path.with_extension("new");
    std::fs::write(&temporary, text).expect("write");
    std::fs::rename(&temporary, path).expect("rename");
}

/// The config with `www.example.com` at another TTL.
fn with_www_ttl(ttl: u32) -> String {
    let text = common::config_text(true);
    let www =
        "  - name: www.example.com\n    origins: [{ host: origin.example.com }]\n    ttl: 30\n";
    assert!(text.contains(www));
    text.replace(www, &www.replace("ttl: 30", &format!("ttl: {ttl}")))
}

/// Asks for `WWW` A from `client` over `path`; returns the TTL and the POPs.
async fn www(server: &Server, path: Path, client: &str) -> (u32, Vec<&'static str>) {
    let packet = query_ecs(WWW, RecordType::A, v4(client), 24)
        .to_vec()
        .expect("encodes");
    let reply = exchange_raw(path, server.dns_addrs()[0], &packet, common::TIMEOUT)
        .await
        .unwrap_or_else(|| panic!("{path:?}: a reply"));
    let reply = Message::from_vec(&reply).expect("decodes");
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    let ttl = reply.answers.first().map(|r| r.ttl).expect("an answer");
    (ttl, pops_of(&reply))
}

/// Polls until `www` from `client` answers with `ttl`, at most [`WATCH_TIMEOUT`].
async fn wait_for_ttl(server: &Server, client: &str, ttl: u32) {
    let deadline = tokio::time::Instant::now() + WATCH_TIMEOUT;
    loop {
        if www(server, Path::UdpFast, client).await.0 == ttl {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "TTL {ttl} not served within {WATCH_TIMEOUT:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `meridian_config_reloads_total{result}`, from the instance's own metrics.
async fn reloads(server: &Server, result: &str) -> u64 {
    server.metrics().flush().await;
    let line = format!("meridian_config_reloads_total{{result=\"{result}\"}} ");
    server
        .metrics()
        .render()
        .lines()
        .find_map(|l| l.strip_prefix(line.as_str()))
        .map_or(0, |v| v.parse().expect("a count"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_ttl_and_a_new_pop_are_served_after_reload() {
    let (dir, server) = start(false).await;
    for path in [Path::UdpFast, Path::Tcp] {
        assert_eq!(www(&server, path, WASHINGTON).await, (30, vec!["iad"]));
    }
    let geo = Arc::clone(&server.shared().load().geo);

    replace(&config_path(&dir), &with_www_ttl(90));
    server.reload().await.expect("reloads");
    for path in [Path::UdpFast, Path::Tcp] {
        assert_eq!(www(&server, path, WASHINGTON).await, (90, vec!["iad"]));
    }
    assert!(
        Arc::ptr_eq(&geo, &server.shared().load().geo),
        "untouched geo databases are reused"
    );

    // A POP in Washington itself takes the Washington clients.
    let pop = "  - id: dca\n    city: Washington\n    country: US\n    continent: NA\n    \
               latitude: 38.9\n    longitude: -77.04\n    addresses: [\"203.0.113.60\"]\n";
    let text = with_www_ttl(90).replace("domains:\n", &format!("{pop}domains:\n"));
    replace(&config_path(&dir), &text);
    server.reload().await.expect("reloads");
    let packet = query_ecs(WWW, RecordType::A, v4(WASHINGTON), 24)
        .to_vec()
        .expect("encodes");
    for path in [Path::UdpFast, Path::Tcp] {
        let reply = exchange_raw(path, server.dns_addrs()[0], &packet, common::TIMEOUT)
            .await
            .expect("a reply");
        let reply = Message::from_vec(&reply).expect("decodes");
        assert_eq!(
            common::addresses(&reply),
            [v4("203.0.113.60")],
            "{path:?}: the new POP answers"
        );
    }
    assert_eq!(www(&server, Path::UdpFast, TOKYO).await, (90, vec!["nrt"]));
    assert_eq!(reloads(&server, "success").await, 2);
    assert_eq!(reloads(&server, "failure").await, 0);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_config_is_rejected_and_the_old_one_keeps_serving() {
    let (dir, server) = start(false).await;
    let path = config_path(&dir);

    // Broken YAML: an unclosed flow sequence.
    let broken = with_www_ttl(90).replace("pops: [iad, fra]", "pops: [iad, fra");
    replace(&path, &broken);
    let error = server.reload().await.expect_err("rejected");
    assert!(!error.problems.is_empty());
    for problem in &error.problems {
        assert_eq!(problem.file, path, "{problem}");
        assert!(problem.line.is_some(), "{problem}: a line");
    }
    assert_eq!(
        www(&server, Path::UdpFast, WASHINGTON).await,
        (30, vec!["iad"])
    );

    // Valid YAML, invalid config: an override naming a POP that does not exist.
    let unknown = with_www_ttl(90).replace("pops: [nrt] }", "pops: [nowhere] }");
    replace(&path, &unknown);
    let error = server.reload().await.expect_err("rejected");
    let line = unknown
        .lines()
        .position(|l| l.contains("nowhere"))
        .map(|i| i as u64 + 1);
    assert!(
        error
            .problems
            .iter()
            .any(|p| p.file == path && p.line == line && p.message.contains("nowhere")),
        "{:?}",
        error.problems
    );

    // A zone file error names the zone file and its line.
    let zone = dir.path().join("cdn.test.zone");
    let good_zone = std::fs::read_to_string(&zone).expect("zone");
    replace(&path, &with_www_ttl(90));
    replace(
        &zone,
        &format!("{good_zone}bad      IN A     not-an-address\n"),
    );
    let error = server.reload().await.expect_err("rejected");
    let zone_line = good_zone.lines().count() as u64 + 1;
    assert!(
        error
            .problems
            .iter()
            .any(|p| p.file == zone && p.line == Some(zone_line)),
        "{:?}",
        error.problems
    );
    for path in [Path::UdpFast, Path::Tcp] {
        assert_eq!(www(&server, path, WASHINGTON).await, (30, vec!["iad"]));
    }
    assert_eq!(reloads(&server, "failure").await, 3);
    assert_eq!(reloads(&server, "success").await, 0);

    // Fixed, it loads.
    replace(&zone, &good_zone);
    server.reload().await.expect("reloads");
    assert_eq!(
        www(&server, Path::UdpFast, WASHINGTON).await,
        (90, vec!["iad"])
    );
    assert_eq!(reloads(&server, "success").await, 1);
    assert_eq!(reloads(&server, "failure").await, 3);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watcher_reloads_changed_files() {
    let (dir, server) = start(true).await;
    let geo = Arc::clone(&server.shared().load().geo);

    // The config file, rewritten in place as an editor would.
    std::fs::write(config_path(&dir), with_www_ttl(45)).expect("write");
    wait_for_ttl(&server, WASHINGTON, 45).await;

    // A zone file, replaced.
    let zone = dir.path().join("cdn.test.zone");
    let text = std::fs::read_to_string(&zone).expect("zone");
    replace(&zone, &format!("{text}fresh    IN A     192.0.2.123\n"));
    let packet = query("fresh.cdn.test.", RecordType::A)
        .to_vec()
        .expect("encodes");
    let deadline = tokio::time::Instant::now() + WATCH_TIMEOUT;
    loop {
        let reply = udp_exchange(server.dns_addrs()[0], &packet, common::TIMEOUT)
            .await
            .expect("a reply");
        let reply = Message::from_vec(&reply).expect("decodes");
        if reply.metadata.response_code == ResponseCode::NoError {
            assert_eq!(common::addresses(&reply), [v4("192.0.2.123")]);
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "zone not reloaded");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(Arc::ptr_eq(&geo, &server.shared().load().geo));

    // A geo database, rebuilt: opened again.
    common::write_geo_databases(dir.path());
    let deadline = tokio::time::Instant::now() + WATCH_TIMEOUT;
    while Arc::ptr_eq(&geo, &server.shared().load().geo) {
        assert!(tokio::time::Instant::now() < deadline, "geo not reloaded");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(www(&server, Path::UdpFast, TOKYO).await, (45, vec!["nrt"]));

    // A broken config is rejected and counted; the answers stay.
    std::fs::write(config_path(&dir), "version: 1\npops: [\n").expect("write");
    let deadline = tokio::time::Instant::now() + WATCH_TIMEOUT;
    while reloads(&server, "failure").await == 0 {
        assert!(tokio::time::Instant::now() < deadline, "not attempted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        www(&server, Path::UdpFast, WASHINGTON).await,
        (45, vec!["iad"])
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_under_load_lose_no_query() {
    const CLIENTS: usize = 4;
    const MAX_QUERIES: usize = 2_000;
    const RELOADS: usize = 20;
    let (dir, server) = start(false).await;
    let addr: SocketAddr = server.dns_addrs()[0];

    // Two configs that answer Tokyo differently: nrt at TTL 30, or fra at TTL 31
    // through an override. A mix (nrt at 31, fra at 30) would be a torn snapshot.
    let first = common::config_text(true);
    let second = with_www_ttl(31).replace(
        "    - { network: 10.99.0.0/16, pops: [nrt] }\n",
        "    - { network: 10.99.0.0/16, pops: [nrt] }\n    - { network: 10.10.0.0/16, pops: [fra] }\n",
    );
    let nrt: Vec<IpAddr> = vec![v4("198.51.100.30"), v4("198.51.100.31")];
    let fra: Vec<IpAddr> = vec![v4("192.0.2.10"), v4("192.0.2.11")];

    let reloading = Arc::new(AtomicBool::new(true));
    let packet = query_ecs(WWW, RecordType::A, v4(TOKYO), 24)
        .to_vec()
        .expect("encodes");
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let reloading = Arc::clone(&reloading);
            let packet = packet.clone();
            tokio::spawn(async move {
                let mut answers = Vec::new();
                while reloading.load(Ordering::Acquire) && answers.len() < MAX_QUERIES {
                    // One attempt, no retry: a lost query fails the test.
                    let reply = udp_exchange(addr, &packet, Duration::from_secs(2)).await;
                    let reply =
                        Message::from_vec(&reply.expect("every query answered")).expect("decodes");
                    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
                    let ttl = reply.answers.first().map(|r| r.ttl).expect("an answer");
                    answers.push((ttl, common::addresses(&reply)));
                }
                answers
            })
        })
        .collect();

    let path = config_path(&dir);
    for i in 0..RELOADS {
        replace(&path, if i % 2 == 0 { &second } else { &first });
        server.reload().await.expect("reloads");
        // Let the clients see each config.
        tokio::task::yield_now().await;
    }
    reloading.store(false, Ordering::Release);

    let mut seen = [0_usize; 2];
    for client in clients {
        let answers = client.await.expect("client ran");
        assert!(!answers.is_empty());
        for (ttl, addresses) in answers {
            match ttl {
                30 => {
                    assert_eq!(addresses, nrt);
                    seen[0] += 1;
                }
                31 => {
                    assert_eq!(addresses, fra);
                    seen[1] += 1;
                }
                _ => panic!("TTL {ttl}: neither config's answer"),
            }
        }
    }
    assert!(seen[0] > 0 && seen[1] > 0, "both configs served: {seen:?}");
    assert_eq!(reloads(&server, "success").await, RELOADS as u64);
    server.shutdown().await;
}
