//! The reference world (`examples/world/meridian.yaml`: 26 POPs, three Chinese ISPs,
//! two accelerated domains) end to end. Meridian is started in-process on port 0 and
//! asked over real UDP and TCP sockets with EDNS Client Subnet, as a resolver would
//! ask it; every routed answer is also asked of `GET /v1/explain`, which must tell
//! the same story (POP, addresses, scope).
//!
//! Twice over: on the sample geodata shipped in `geodata/` (always), and on the real
//! City and ASN databases in `../shared/geodata/` when that directory exists (CI has
//! it; those files are not part of the product). The sample was cut from the real
//! databases, so every sample client must get the same POP on both, and on the real
//! databases a scope at least as wide as the sample's (neighbouring networks with
//! the same ranking merge there). The demo's embedded files are served once too.

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use common::{TIMEOUT, addresses, query, query_ecs, query_edns, reply_ecs};
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use ipnet::IpNet;
use meridian::config::{Config, Overlay};
use meridian::geo::build::Source;
use meridian::snapshot::Shared;
use serde_json::Value;

/// The accelerated names of the reference world, as served under the CDN suffix.
const WWW: &str = "www.example.com.cdn.test.";
const API: &str = "api.example.com.cdn.test.";

/// Both domains of the reference world answer with this TTL.
const TTL: u32 = 30;

/// The source prefix a resolver sends, and the world's `ecs.max-source-prefix-*`.
const SOURCE_V4: u8 = 24;
const SOURCE_V6: u8 = 56;

/// The fallback for clients the databases cannot place (`unknown-location`).
const FALLBACK: &str = "iad";

/// A client: what it is, the subnet a resolver sends for it, the POP it must get.
type Client = (&'static str, &'static str, &'static str);

/// Sample clients, one or more per kind of decision; each is in `geodata/sample.yaml`,
/// whose comments say why it gets its POP.
const SAMPLE_CLIENTS: [Client; 11] = [
    ("Tokyo (KDDI)", "118.156.18.0/24", "nrt"),
    ("Frankfurt (Deutsche Telekom)", "84.191.16.0/24", "fra"),
    (
        "Munich, no POP there: the nearest",
        "46.244.225.0/24",
        "fra",
    ),
    (
        "China Telecom in Beijing: its ISP's POP, not the nearer pek",
        "182.34.212.0/24",
        "sha",
    ),
    ("China Unicom in Beijing", "211.94.252.0/24", "pek"),
    (
        "China Mobile in Beijing: its ISP's POP, 1900 km away",
        "111.32.128.0/24",
        "can",
    ),
    ("Sao Paulo (Vivo)", "152.249.2.0/24", "gru"),
    ("Sydney (TPG)", "60.242.63.0/24", "syd"),
    ("New York (Verizon)", "68.129.248.0/24", "jfk"),
    ("Johannesburg (Telkom SA)", "41.144.18.0/24", "jnb"),
    ("IPv6 Tokyo (KDDI)", "240f:33:5000::/56", "nrt"),
];

/// Real networks beyond the sample, with the POP and ECS scope they must get. The
/// networks in each comment are those of GeoLite2-City (build 2019-12-24) and
/// ASN.mmdb as described in `../shared/geodata/README.md`; a newer build may move
/// them, and then this table needs looking at again.
const REAL_CLIENTS: [(&str, &str, &str, u8); 12] = [
    // City 219.110.8.0/21 (Setagaya), ASN 219.110.0.0/16.
    (
        "Setagaya, Tokyo (its communications)",
        "219.110.10.0/24",
        "nrt",
        21,
    ),
    // City 106.72.10.0/23 (Shinjuku), ASN 106.72.0.0/15.
    ("Shinjuku, Tokyo (KDDI)", "106.72.10.0/24", "nrt", 23),
    // City 2400:4050::/39 (Tokyo), ASN 2400:4000::/22.
    ("IPv6 Tokyo (NTT)", "2400:4050:10::/56", "nrt", 39),
    // City 78.194.10.0/23 (Paris), ASN 78.192.0.0/12.
    ("Paris (Free)", "78.194.10.0/24", "cdg", 23),
    // City 81.57.8.0/21 (Paris), ASN 81.56.0.0/15.
    ("Paris (Scaleway)", "81.57.10.0/24", "cdg", 21),
    // City 2a01:cb00::/40 (Paris), ASN 2a01:ca00::/23.
    ("IPv6 Paris (Orange)", "2a01:cb00:10::/56", "cdg", 40),
    // City 82.64.10.0/26 (Limoges), ASN 82.64.0.0/14: the scope stops at the source /24.
    (
        "Limoges (Free), City network longer than the source",
        "82.64.10.0/24",
        "cdg",
        24,
    ),
    // City 219.137.0.0/18 (Guangzhou), ASN 219.137.0.0/17 (AS4134).
    (
        "China Telecom in Guangzhou: its ISP's sha, not the local can",
        "219.137.10.0/24",
        "sha",
        18,
    ),
    // City 113.108.0.0/18 (Guangdong, no city), ASN 113.108.0.0/18 (AS4134).
    (
        "China Telecom in Guangdong, country-level record",
        "113.108.20.0/24",
        "sha",
        18,
    ),
    // City 112.64.0.0/20 (Shanghai), ASN 112.64.0.0/19 (AS17621).
    (
        "China Unicom in Shanghai: its ISP's pek, not the local sha",
        "112.64.10.0/24",
        "pek",
        20,
    ),
    // City 121.134.10.0/23 (Seoul), ASN 121.134.0.0/17.
    ("Seoul (Korea Telecom)", "121.134.10.0/24", "icn", 23),
    // City 1.224.8.0/21 (Goyang), ASN 1.224.0.0/20.
    (
        "Goyang, near Seoul (SK Broadband)",
        "1.224.10.0/24",
        "icn",
        21,
    ),
];

#[tokio::test]
async fn sample_clients_get_their_pops_on_both_domains_and_families() {
    let world = sample_world();
    for (what, subnet, pop) in SAMPLE_CLIENTS {
        let scope = sample_scope(subnet);
        for name in [WWW, API] {
            for qtype in [RecordType::A, RecordType::AAAA] {
                world
                    .expect_route(what, name, qtype, subnet, pop, scope)
                    .await;
            }
        }
    }
}

#[tokio::test]
async fn every_sample_network_routes_as_its_comment_says() {
    let world = sample_world();
    for (network, pop) in sample_networks() {
        let subnet = client_subnet(network);
        let what = format!("sample network {network}");
        world
            .expect_route(
                &what,
                WWW,
                family_qtype(network),
                &subnet,
                &pop,
                sample_scope(&subnet),
            )
            .await;
    }
}

#[tokio::test]
async fn sample_unknown_client_without_ecs_gets_the_fallback_and_no_ecs() {
    sample_world().expect_fallback_without_ecs().await;
}

#[tokio::test]
async fn sample_explain_over_http() {
    let world = sample_world();
    let http = http_client();
    // The README's example. `expect_route` checks explain against DNS for every
    // client; here the same, spelt out.
    let client = "182.34.212.0/24";
    let network = net(client);
    let reply = world
        .ask(
            Transport::Udp,
            &query_ecs(WWW, RecordType::A, network.addr(), network.prefix_len()),
        )
        .await;
    let scope = reply_ecs(&reply).expect("ECS in reply").scope_prefix();
    assert_eq!(scope, sample_scope(client), "DNS scope");
    let (status, body) = get(
        &http,
        world.http,
        &format!("/v1/explain?client={client}&name=www.example.com"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["chosen"][0], "sha", "{body}");
    assert_eq!(body["ecs_scope"], u64::from(scope), "{body}");
    assert_eq!(body["pops"].as_array().map(Vec::len), Some(26), "{body}");
    assert_eq!(body["location"]["isp"], "china-telecom", "{body}");
    assert_eq!(body["location"]["asn"], 4134, "{body}");
    assert_eq!(body["ttl"], TTL, "{body}");

    for (query, status) in [
        ("client=1.2.3.4/40&name=www.example.com", 400),
        ("client=not-an-address", 400),
        ("name=www.example.com", 400),
        ("client=118.156.18.0/24&qtype=MX", 400),
        ("client=118.156.18.0/24&name=www.example.net", 404),
        ("client=118.156.18.0/24&name=status.cdn.test", 404),
    ] {
        let (got, body) = get(&http, world.http, &format!("/v1/explain?{query}")).await;
        assert_eq!(got, status, "{query}: {body}");
        let error = body["error"].as_str().unwrap_or_default();
        assert!(!error.is_empty(), "{query}: no `error` in {body}");
    }
}

#[tokio::test]
async fn demo_files_built_into_the_binary_serve_the_world() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = meridian::demo::materialize(dir.path()).expect("demo files written");
    let config = Config::load(&path, &loopback_overlay()).expect("demo config loads");
    let server = meridian::server::start(config)
        .await
        .expect("demo world starts");
    let world = World {
        dns: server.dns_addrs()[0],
        http: server.http_addr().expect("control plane"),
        shared: server.shared().clone(),
        widens_scopes: false,
    };
    world
        .expect_route("Tokyo", WWW, RecordType::A, "118.156.18.0/24", "nrt", 24)
        .await;
    world
        .expect_route(
            "China Telecom in Beijing",
            WWW,
            RecordType::A,
            "182.34.212.0/24",
            "sha",
            22,
        )
        .await;
    world.expect_fallback_without_ecs().await;
    server.shutdown().await;
}

#[tokio::test]
async fn real_databases_route_sample_clients_as_the_sample_does() {
    let Some(world) = real_world("real_databases_route_sample_clients_as_the_sample_does") else {
        return;
    };
    for (what, subnet, pop) in SAMPLE_CLIENTS {
        for qtype in [RecordType::A, RecordType::AAAA] {
            world
                .expect_route(what, WWW, qtype, subnet, pop, sample_scope(subnet))
                .await;
        }
    }
    for (network, pop) in sample_networks() {
        let subnet = client_subnet(network);
        let what = format!("sample network {network} on the real databases");
        world
            .expect_route(
                &what,
                WWW,
                family_qtype(network),
                &subnet,
                &pop,
                sample_scope(&subnet),
            )
            .await;
    }
    world.expect_fallback_without_ecs().await;
}

#[tokio::test]
async fn real_databases_route_networks_beyond_the_sample() {
    let Some(world) = real_world("real_databases_route_networks_beyond_the_sample") else {
        return;
    };
    for (what, subnet, pop, scope) in REAL_CLIENTS {
        for name in [WWW, API] {
            world
                .expect_route(what, name, family_qtype(net(subnet)), subnet, pop, scope)
                .await;
        }
    }
}

/// A running instance of the reference world.
struct World {
    /// DNS, UDP and TCP.
    dns: SocketAddr,
    /// The control plane.
    http: SocketAddr,
    /// The snapshot served: the POPs' addresses are read from its config.
    shared: Shared,
    /// Whether neighbouring networks merge into wider scopes: on the real
    /// databases, not on the sample, whose networks lie apart.
    widens_scopes: bool,
}

/// How a query travels.
#[derive(Debug, Clone, Copy)]
enum Transport {
    Udp,
    Tcp,
}

impl World {
    /// Asks for `name`/`qtype` on behalf of `subnet` over UDP and TCP, and of
    /// `/v1/explain`, and asserts every answer: NOERROR, AA, the POP's addresses of
    /// that family, TTL 30, the ECS option echoed with `scope`, the same scope
    /// from all three. With `widens_scopes`, a scope may be wider than `scope`
    /// (the subnet's network), and every address of the wider block must then
    /// get the same POP: its first and last subnets are asked too.
    async fn expect_route(
        &self,
        what: &str,
        name: &str,
        qtype: RecordType,
        subnet: &str,
        pop: &str,
        scope: u8,
    ) {
        let network = net(subnet);
        let context = format!("{what}: {name} {qtype} +subnet={subnet}");
        let expected = self.pop_addresses(pop, qtype);
        assert!(!expected.is_empty(), "{context}: {pop} has no {qtype}");
        let message = query_ecs(name, qtype, network.addr(), network.prefix_len());
        let mut scopes = BTreeSet::new();
        for transport in [Transport::Udp, Transport::Tcp] {
            let context = format!("{context} over {transport:?}");
            let reply = self.ask(transport, &message).await;
            self.assert_answer(&reply, &context, name, qtype, pop, &expected);
            let ecs = reply_ecs(&reply).unwrap_or_else(|| panic!("{context}: no ECS in reply"));
            assert_eq!(ecs.addr(), network.addr(), "{context}: ECS address echoed");
            assert_eq!(
                ecs.source_prefix(),
                network.prefix_len(),
                "{context}: ECS source echoed"
            );
            scopes.insert(ecs.scope_prefix());
        }
        assert_eq!(
            scopes.len(),
            1,
            "{context}: scopes over UDP and TCP {scopes:?}"
        );
        let got = scopes.pop_first().unwrap_or_default();
        if self.widens_scopes {
            assert!(
                got <= scope,
                "{context}: ECS scope /{got} narrower than /{scope}"
            );
            let block = IpNet::new(network.addr(), got).expect("scope").trunc();
            let ends = [block.network(), block.broadcast()].map(|end| {
                IpNet::new(end, network.prefix_len())
                    .expect("subnet")
                    .trunc()
            });
            for end in ends {
                let context = format!("{context}: {end} in the scope {block}");
                let reply = self
                    .ask(
                        Transport::Udp,
                        &query_ecs(name, qtype, end.addr(), end.prefix_len()),
                    )
                    .await;
                self.assert_answer(&reply, &context, name, qtype, pop, &expected);
            }
        } else {
            assert_eq!(got, scope, "{context}: ECS scope");
        }
        let scope = got;

        let served = name.trim_end_matches(".cdn.test.");
        let (status, body) = get(
            &http_client(),
            self.http,
            &format!("/v1/explain?client={subnet}&name={served}&qtype={qtype}"),
        )
        .await;
        assert_eq!(status, 200, "{context}: explain: {body}");
        assert_eq!(
            body["chosen"],
            serde_json::json!([pop]),
            "{context}: explain: {body}"
        );
        assert_eq!(body["name"], name, "{context}: explain: {body}");
        assert_eq!(
            body["ecs_scope"],
            u64::from(scope),
            "{context}: explain: {body}"
        );
        let explained: BTreeSet<IpAddr> = body["addresses"]
            .as_array()
            .unwrap_or_else(|| panic!("{context}: explain without addresses: {body}"))
            .iter()
            .filter_map(|a| a.as_str()?.parse().ok())
            .collect();
        assert_eq!(explained, expected, "{context}: explain's addresses");
    }

    /// A query with no ECS comes from 127.0.0.1, which no database places: the
    /// fallback POP answers, and a reply carries no ECS option, with EDNS or without.
    async fn expect_fallback_without_ecs(&self) {
        for qtype in [RecordType::A, RecordType::AAAA] {
            let expected = self.pop_addresses(FALLBACK, qtype);
            for (message, edns) in [
                (query(WWW, qtype), false),
                (query_edns(WWW, qtype, 1232), true),
            ] {
                for transport in [Transport::Udp, Transport::Tcp] {
                    let context =
                        format!("no ECS: {WWW} {qtype} (EDNS: {edns}) over {transport:?}");
                    let reply = self.ask(transport, &message).await;
                    self.assert_answer(&reply, &context, WWW, qtype, FALLBACK, &expected);
                    assert_eq!(reply_ecs(&reply), None, "{context}: ECS in reply");
                    assert_eq!(
                        reply.edns.is_some(),
                        edns,
                        "{context}: OPT mirrors the query"
                    );
                }
            }
        }
    }

    /// Asserts a routed answer: NOERROR, AA, exactly `expected` (the addresses of
    /// `pop`) for `name`, each with the domain's TTL.
    fn assert_answer(
        &self,
        reply: &Message,
        context: &str,
        name: &str,
        qtype: RecordType,
        pop: &str,
        expected: &BTreeSet<IpAddr>,
    ) {
        assert_eq!(
            reply.metadata.response_code,
            ResponseCode::NoError,
            "{context}"
        );
        assert!(reply.metadata.authoritative, "{context}: AA not set");
        let got: BTreeSet<IpAddr> = addresses(reply).into_iter().collect();
        assert_eq!(
            got,
            *expected,
            "{context}: expected {pop}, got {:?}",
            self.pops_of(&got)
        );
        assert_eq!(reply.answers.len(), expected.len(), "{context}: answers");
        for record in &reply.answers {
            assert_eq!(record.record_type(), qtype, "{context}: {record}");
            assert_eq!(record.name.to_ascii(), name, "{context}: {record}");
            assert_eq!(record.ttl, TTL, "{context}: {record}");
        }
    }

    /// Sends a query and decodes the reply, which must come.
    async fn ask(&self, transport: Transport, message: &Message) -> Message {
        let packet = message.to_vec().expect("query encodes");
        let reply = match transport {
            Transport::Udp => common::udp_exchange(self.dns, &packet, TIMEOUT).await,
            Transport::Tcp => common::tcp_exchange(self.dns, &[&packet], 1)
                .await
                .into_iter()
                .next(),
        };
        let reply = reply.unwrap_or_else(|| panic!("{transport:?}: no reply"));
        Message::from_vec(&reply).expect("reply decodes")
    }

    /// The addresses of `pop` of the family `qtype` asks for, from the served config.
    fn pop_addresses(&self, pop: &str, qtype: RecordType) -> BTreeSet<IpAddr> {
        let snapshot = self.shared.load();
        let pop = snapshot
            .config
            .pops
            .iter()
            .find(|p| p.id == pop)
            .unwrap_or_else(|| panic!("no POP {pop} in the world"));
        match qtype {
            RecordType::A => pop.ipv4.iter().map(|a| IpAddr::V4(*a)).collect(),
            _ => pop.ipv6.iter().map(|a| IpAddr::V6(*a)).collect(),
        }
    }

    /// Which POPs the addresses belong to, for failure messages.
    fn pops_of(&self, addrs: &BTreeSet<IpAddr>) -> BTreeSet<String> {
        let snapshot = self.shared.load();
        addrs
            .iter()
            .map(|addr| {
                snapshot
                    .config
                    .pops
                    .iter()
                    .find(|p| match addr {
                        IpAddr::V4(a) => p.ipv4.contains(a),
                        IpAddr::V6(a) => p.ipv6.contains(a),
                    })
                    .map_or_else(|| format!("? {addr}"), |p| p.id.clone())
            })
            .collect()
    }
}

/// The crate's directory: config and geodata paths are relative to it.
fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Listeners on loopback port 0: the addresses are read back from the server.
fn loopback_overlay() -> Overlay {
    Overlay {
        dns_listen: vec![SocketAddr::from((Ipv4Addr::LOCALHOST, 0))],
        http_listen: Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))),
        http_router_listen: Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))),
        ..Overlay::default()
    }
}

/// The reference world on the shipped sample geodata, shared by this binary's tests.
fn sample_world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| serve_in_background(loopback_overlay(), false))
}

/// The reference world on the real databases, loaded once for this binary (the City
/// database is 60 MB); None, said on stderr, where they are not installed.
fn real_world(test: &str) -> Option<&'static World> {
    static WORLD: OnceLock<Option<World>> = OnceLock::new();
    let geodata = manifest_dir().join("../shared/geodata");
    let city = geodata.join("GeoLite2-City.mmdb");
    let asn = geodata.join("ASN.mmdb");
    let world = WORLD.get_or_init(|| {
        (city.is_file() && asn.is_file()).then(|| {
            serve_in_background(
                Overlay {
                    city_db: Some(city),
                    asn_db: Some(asn),
                    ..loopback_overlay()
                },
                true,
            )
        })
    });
    if world.is_none() {
        // Straight to the process's stderr: the harness captures `eprintln!`, and a
        // skip should show in CI logs without `--nocapture`.
        let _ = writeln!(
            std::io::stderr(),
            "{test}: skipped: ../shared/geodata not found (looked for GeoLite2-City.mmdb and ASN.mmdb in {})",
            geodata.display()
        );
    }
    world.as_ref()
}

/// Starts the reference world on a runtime of its own, on a thread that lives as long
/// as the process: each `#[tokio::test]` has a runtime that ends with the test.
fn serve_in_background(overlay: Overlay, widens_scopes: bool) -> World {
    let config_path: PathBuf = manifest_dir().join("examples/world/meridian.yaml");
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("meridian-reference-world".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let config = match Config::load(&config_path, &overlay) {
                    Ok(config) => config,
                    Err(e) => {
                        let _ = sender.send(Err(format!("config: {e}")));
                        return;
                    }
                };
                let server = match meridian::server::start(config).await {
                    Ok(server) => server,
                    Err(e) => {
                        let _ = sender.send(Err(format!("start: {e}")));
                        return;
                    }
                };
                let world = World {
                    dns: server.dns_addrs()[0],
                    http: server.http_addr().expect("control plane"),
                    shared: server.shared().clone(),
                    widens_scopes,
                };
                let _ = sender.send(Ok(world));
                // Keep serving until the process exits.
                let _server = server;
                std::future::pending::<()>().await;
            });
        })
        .expect("world thread");
    receiver
        .recv()
        .expect("world thread reports")
        .unwrap_or_else(|e| panic!("the reference world does not start: {e}"))
}

/// `geodata/sample.yaml`, parsed as `meridian geodata build` reads it.
fn sample_source() -> &'static Source {
    static SOURCE: OnceLock<Source> = OnceLock::new();
    SOURCE.get_or_init(|| {
        Source::parse(&sample_text()).unwrap_or_else(|e| panic!("geodata/sample.yaml: {e}"))
    })
}

fn sample_text() -> String {
    std::fs::read_to_string(manifest_dir().join("geodata/sample.yaml"))
        .expect("read geodata/sample.yaml")
}

/// The ECS scope the sample promises a client subnet: the longer of the sample's
/// City network holding its address and the block around it in which every
/// address has its ISP (the world configures ISPs, so both count), never more
/// than the source prefix. Worked out from the source text and the world's ISPs,
/// not from the databases Meridian reads.
fn sample_scope(subnet: &str) -> u8 {
    let client = net(subnet);
    let source = sample_source();
    let city = source
        .cities
        .iter()
        .filter(|c| c.network.contains(&client.addr()))
        .map(|c| c.network.prefix_len())
        .max()
        .unwrap_or_else(|| panic!("{subnet}: no City network in geodata/sample.yaml"));
    city.max(isp_block(client.addr())).min(client.prefix_len())
}

/// The prefix length of the widest block around `addr` in which every address
/// has the ISP `addr` has, by the sample's ASN networks and the world's ISPs.
/// IPv6 blocks are of whole /64s, by an address's top 64 bits; in the /64s a
/// longer network splits and in the IPv4 aliases the ASN database maps to its
/// IPv4 tree (`::/64` holds `::/96` and `::ffff:0:0/96`), the ISP is read from
/// the ASN network, and the block is that network.
fn isp_block(addr: IpAddr) -> u8 {
    let networks = &sample_source().asns;
    let holding = |at: IpAddr| {
        networks
            .iter()
            .filter(|a| a.network.contains(&at))
            .max_by_key(|a| a.network.prefix_len())
    };
    // An address's key and back, and the keys' width.
    let bits = if addr.is_ipv6() { 64 } else { 32 };
    let key_of = |a: IpAddr| match a {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a) >> 64,
    };
    let addr_of = |key: u128| match addr {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from(key as u32)),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(key << 64)),
    };
    let family: Vec<IpNet> = networks
        .iter()
        .map(|a| a.network)
        .filter(|n| n.addr().is_ipv4() == addr.is_ipv4())
        .collect();
    let unknown: Vec<IpNet> = match addr {
        IpAddr::V4(_) => Vec::new(),
        IpAddr::V6(_) => ["::/64", "2001::/32", "2002::/16"]
            .map(net)
            .into_iter()
            .chain(
                family
                    .iter()
                    .filter(|n| n.prefix_len() > 64)
                    .map(|n| IpNet::new(n.addr(), 64).expect("/64").trunc()),
            )
            .collect(),
    };
    let is_unknown = |key: u128| unknown.iter().any(|n| n.contains(&addr_of(key)));
    if is_unknown(key_of(addr)) {
        return holding(addr)
            .map(|a| a.network.prefix_len())
            .unwrap_or_else(|| panic!("{addr}: no ASN network in geodata/sample.yaml"));
    }
    let isps = world_isps();
    let state_at = |key: u128| {
        (!is_unknown(key)).then(|| holding(addr_of(key)).and_then(|a| isps.get(&a.asn).copied()))
    };
    // The ISP can only change where a network or an unknown range starts or ends.
    let mut edges: Vec<u128> = family
        .iter()
        .chain(&unknown)
        .flat_map(|n| [key_of(n.network()), key_of(n.broadcast()) + 1])
        .collect();
    edges.sort_unstable();
    let key = key_of(addr);
    let own = state_at(key);
    let every = u128::MAX >> (128 - bits);
    (0..=bits)
        .find(|&prefix| {
            let mask = every.checked_shl(bits - prefix).unwrap_or(0) & every;
            let (first, last) = (key & mask, key | (!mask & every));
            state_at(first) == own
                && edges
                    .iter()
                    .filter(|&&edge| edge > first && edge <= last)
                    .all(|&edge| state_at(edge) == own)
        })
        .unwrap_or(bits) as u8
}

/// The world's ISPs: each ASN named, and the index of the ISP it belongs to.
fn world_isps() -> &'static std::collections::HashMap<u32, usize> {
    static ISPS: OnceLock<std::collections::HashMap<u32, usize>> = OnceLock::new();
    ISPS.get_or_init(|| {
        let path = manifest_dir().join("examples/world/meridian.yaml");
        let config = Config::load(&path, &Overlay::default())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        config
            .isps
            .iter()
            .enumerate()
            .flat_map(|(i, isp)| isp.asns.iter().map(move |asn| (*asn, i)))
            .collect()
    })
}

/// Every City network of the sample with the POP its comment names (`... -> nrt`).
fn sample_networks() -> Vec<(IpNet, String)> {
    let text = sample_text();
    let cities = text
        .split("\nasns:")
        .next()
        .expect("geodata/sample.yaml has a cities list");
    let mut networks = Vec::new();
    let mut previous = "";
    for line in cities.lines() {
        if let Some(network) = line.trim().strip_prefix("- network:") {
            let network: IpNet = network.trim().parse().expect("sample network");
            let pop = previous
                .split_once("->")
                .and_then(|(_, rest)| {
                    rest.trim_start()
                        .split(|c: char| !c.is_ascii_alphanumeric())
                        .next()
                })
                .filter(|pop| !pop.is_empty())
                .unwrap_or_else(|| {
                    panic!("{network}: the comment above it names no POP: {previous:?}")
                });
            networks.push((network, pop.to_string()));
        }
        previous = line;
    }
    assert_eq!(
        networks.len(),
        sample_source().cities.len(),
        "every City network of the sample"
    );
    networks
}

/// The subnet a resolver would send for a client at the start of `network`.
fn client_subnet(network: IpNet) -> String {
    let source = match network {
        IpNet::V4(_) => SOURCE_V4,
        IpNet::V6(_) => SOURCE_V6,
    };
    IpNet::new(network.network(), source)
        .expect("source prefix fits the family")
        .trunc()
        .to_string()
}

/// A for an IPv4 client, AAAA for an IPv6 one.
fn family_qtype(network: IpNet) -> RecordType {
    match network {
        IpNet::V4(_) => RecordType::A,
        IpNet::V6(_) => RecordType::AAAA,
    }
}

fn net(subnet: &str) -> IpNet {
    subnet
        .parse()
        .unwrap_or_else(|_| panic!("`{subnet}` is a subnet"))
}

/// An HTTP client that never goes through a proxy: the control plane is on loopback.
fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(TIMEOUT)
        .build()
        .expect("HTTP client")
}

/// GETs a control-plane path; returns the status and the JSON body.
async fn get(http: &reqwest::Client, addr: SocketAddr, path: &str) -> (u16, Value) {
    let response = http
        .get(format!("http://{addr}{path}"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let status = response.status().as_u16();
    let body = response
        .json()
        .await
        .unwrap_or_else(|e| panic!("GET {path}: body is not JSON: {e}"));
    (status, body)
}
