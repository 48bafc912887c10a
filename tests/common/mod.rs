//! The integration harness: a tiny world (zone, geo databases, POPs, ISPs and
//! accelerated domains) written to a temporary directory and served in-process on
//! port 0, plus clients that talk to it over UDP and TCP as a resolver would.
//!
//! One world is started per test binary and shared by its tests, twice over: once
//! with the UDP fast path and once without, from the same files. Every behaviour is
//! checked on the three ways a query can be answered ([`Path`]).

// Each test binary uses a different part of the harness.
#![allow(dead_code)]

pub mod cache;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path as FsPath;
use std::sync::OnceLock;
use std::time::Duration;

use hickory_net::client::Client;
use hickory_net::runtime::TokioRuntimeProvider;
use hickory_net::tcp::TcpClientStream;
use hickory_net::udp::UdpClientStream;
use hickory_proto::op::{Edns, Message, Query};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsCode, EdnsOption};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use ipnet::IpNet;
use meridian::config::{Config, Overlay};
use meridian::geo::build::{AsnEntry, CityEntry, Source};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// How long a client waits for an answer before the test fails (a bound, not a
/// synchronisation: answers come back in microseconds).
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// The zone every test queries.
pub const ZONE: &str = "cdn.test.";

/// The ways a query is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// UDP with `dns.fast-path: true`.
    UdpFast,
    /// UDP with `dns.fast-path: false`: everything through resolve + encode.
    UdpFull,
    /// TCP through hickory-server.
    Tcp,
}

/// Every path, for tests that loop over them.
pub const PATHS: [Path; 3] = [Path::UdpFast, Path::UdpFull, Path::Tcp];

/// A POP of the tiny world.
pub struct PopSpec {
    pub id: &'static str,
    pub city: &'static str,
    pub country: &'static str,
    pub continent: &'static str,
    pub latitude: f64,
    pub longitude: f64,
    pub isp: Option<&'static str>,
    pub addresses: &'static [&'static str],
}

/// The POPs: Frankfurt (no ISP), Amsterdam (on isp-x), Tokyo (on isp-y), Ashburn
/// (no ISP), and Beijing (mainland China, IPv4 only).
pub const POPS: [PopSpec; 5] = [
    PopSpec {
        id: "fra",
        city: "Frankfurt",
        country: "DE",
        continent: "EU",
        latitude: 50.11,
        longitude: 8.68,
        isp: None,
        addresses: &["192.0.2.10", "192.0.2.11", "2001:db8:10::1"],
    },
    PopSpec {
        id: "ams",
        city: "Amsterdam",
        country: "NL",
        continent: "EU",
        latitude: 52.37,
        longitude: 4.90,
        isp: Some("isp-x"),
        addresses: &["192.0.2.20", "2001:db8:20::1"],
    },
    PopSpec {
        id: "nrt",
        city: "Tokyo",
        country: "JP",
        continent: "AS",
        latitude: 35.68,
        longitude: 139.69,
        isp: Some("isp-y"),
        addresses: &["198.51.100.30", "198.51.100.31", "2001:db8:30::1"],
    },
    PopSpec {
        id: "iad",
        city: "Ashburn",
        country: "US",
        continent: "NA",
        latitude: 39.04,
        longitude: -77.49,
        isp: None,
        addresses: &["203.0.113.40", "2001:db8:40::1"],
    },
    PopSpec {
        id: "pek",
        city: "Beijing",
        country: "CN",
        continent: "AS",
        latitude: 39.90,
        longitude: 116.40,
        isp: None,
        addresses: &["203.0.113.50"],
    },
];

/// A network of the tiny City database.
pub struct CitySpec {
    pub network: &'static str,
    pub city: &'static str,
    pub country: &'static str,
    pub continent: &'static str,
    pub latitude: f64,
    pub longitude: f64,
}

/// City networks. 10.20/16 is Frankfurt while 10.20.0/20 is isp-x: the two
/// prefixes differ on purpose, so scopes show which one counted; likewise
/// 2001:db8:cc00::/40 (Frankfurt) and isp-x's 2001:db8:cc00::/44.
pub const CITIES: [CitySpec; 6] = [
    CitySpec {
        network: "10.10.0.0/16",
        city: "Tokyo",
        country: "JP",
        continent: "AS",
        latitude: 35.69,
        longitude: 139.70,
    },
    CitySpec {
        network: "10.20.0.0/16",
        city: "Frankfurt",
        country: "DE",
        continent: "EU",
        latitude: 50.11,
        longitude: 8.68,
    },
    CitySpec {
        network: "10.30.1.0/24",
        city: "Washington",
        country: "US",
        continent: "NA",
        latitude: 38.90,
        longitude: -77.04,
    },
    CitySpec {
        network: "2001:db8:aa00::/40",
        city: "Tokyo",
        country: "JP",
        continent: "AS",
        latitude: 35.69,
        longitude: 139.70,
    },
    CitySpec {
        network: "2001:db8:bb00:100::/64",
        city: "Frankfurt",
        country: "DE",
        continent: "EU",
        latitude: 50.11,
        longitude: 8.68,
    },
    CitySpec {
        network: "2001:db8:cc00::/40",
        city: "Frankfurt",
        country: "DE",
        continent: "EU",
        latitude: 50.11,
        longitude: 8.68,
    },
];

/// Networks of the tiny ASN database: (network, ASN, organisation). isp-x's
/// 10.20.0/20 is two /21s of two of its ASes: an answer that read the ISP holds
/// for the whole /20, and its scope says so; so is its 2001:db8:cc00::/44. Its
/// 2001:db8:cc10::/96 splits a /64, whose ISP only the ASN lookup knows.
pub const ASNS: [(&str, u32, &str); 6] = [
    ("10.20.0.0/21", 64500, "ISP X"),
    ("10.20.8.0/21", 64502, "ISP X"),
    ("10.10.0.0/16", 64501, "ISP Y"),
    ("2001:db8:cc00::/45", 64500, "ISP X"),
    ("2001:db8:cc08::/45", 64502, "ISP X"),
    ("2001:db8:cc10::/96", 64500, "ISP X"),
];

/// The static zone, with every shape of answer a test needs.
pub fn zone_text() -> String {
    let mut zone = String::from(
        "$ORIGIN cdn.test.
$TTL 3600
@        IN SOA   ns1.cdn.test. hostmaster.cdn.test. 2024010101 7200 900 1209600 300
@        IN NS    ns1
@        IN NS    ns2.cdn.test.
@        IN MX    10 mail
@        IN TXT   \"v=spf1 -all\"
ns1      IN A     192.0.2.53
ns2      IN A     192.0.2.54
ns2      IN AAAA  2001:db8::54
mail     IN A     192.0.2.25
alias    IN CNAME target
target   IN A     192.0.2.80
chain    IN CNAME alias
geo      IN CNAME www.example.com.cdn.test.
loop1    IN CNAME loop2
loop2    IN CNAME loop1
outside  IN CNAME www.example.net.
a.b.ent  IN A     192.0.2.90
sub      IN NS    ns.sub
ns.sub   IN A     192.0.2.99
",
    );
    // Answers that do not fit 512 octets: 40 A records (16 octets each when
    // compressed), and TXT records of 200 octets.
    for i in 1..=40 {
        zone.push_str(&format!("many     IN A     198.51.100.{i}\n"));
    }
    for i in 0..4 {
        zone.push_str(&format!("big      IN TXT   \"{i}{}\"\n", "t".repeat(199)));
    }
    zone
}

/// `meridian.yaml` for the world.
pub fn config_text(fast_path: bool) -> String {
    let mut text = format!(
        "version: 1
geodata:
  city: city.mmdb
  asn: asn.mmdb
zones:
  - origin: cdn.test
    file: cdn.test.zone
cdn-suffix: cdn.test
dns:
  fast-path: {fast_path}
  udp-threads: 2
  max-udp-payload: 1232
ecs:
  max-source-prefix-v4: 24
  max-source-prefix-v6: 56
unknown-location:
  pops: [iad, fra]
isps:
  isp-x: [64500, 64502]
  isp-y: [64501]
pops:
"
    );
    for pop in &POPS {
        text.push_str(&format!(
            "  - id: {}\n    city: {}\n    country: {}\n    continent: {}\n    latitude: {}\n    longitude: {}\n    addresses: [{}]\n",
            pop.id,
            pop.city,
            pop.country,
            pop.continent,
            pop.latitude,
            pop.longitude,
            pop.addresses.iter().map(|a| format!("\"{a}\"")).collect::<Vec<_>>().join(", "),
        ));
        if let Some(isp) = pop.isp {
            text.push_str(&format!("    isp: {isp}\n"));
        }
    }
    text.push_str(
        "domains:
  - name: www.example.com
    origins: [{ host: origin.example.com }]
    ttl: 30
  - name: two.example.com
    origins: [{ host: origin.example.com }]
    ttl: 60
    answer: { pops: 2, max-addresses: 1 }
  - name: \"*.example.org\"
    origins: [{ host: origin.example.net }]
    ttl: 45
  - name: cn.example.com
    origins: [{ host: origin.example.com }]
    coverage: mainland-china
overrides:
  networks:
    - { network: 10.99.0.0/16, pops: [nrt] }
",
    );
    text
}

/// Writes the City and ASN databases of the world into `dir`, built in-process
/// from entries made here.
pub fn write_geo_databases(dir: &FsPath) {
    let source = Source {
        cities: CITIES
            .iter()
            .map(|spec| CityEntry {
                network: spec.network.parse::<IpNet>().expect("city network"),
                city: Some(spec.city.to_string()),
                country: spec.country.to_string(),
                continent: spec.continent.to_string(),
                latitude: Some(spec.latitude),
                longitude: Some(spec.longitude),
            })
            .collect(),
        asns: ASNS
            .iter()
            .map(|(network, asn, organization)| AsnEntry {
                network: network.parse::<IpNet>().expect("asn network"),
                asn: *asn,
                organization: Some(organization.to_string()),
            })
            .collect(),
    };
    let city = source.city_database().expect("city database builds");
    let asn = source.asn_database().expect("asn database builds");
    std::fs::write(dir.join("city.mmdb"), city).expect("write city database");
    std::fs::write(dir.join("asn.mmdb"), asn).expect("write asn database");
}

/// A running world: the same files served twice, with and without the fast path.
pub struct World {
    /// Keeps the files alive while the servers run.
    pub dir: tempfile::TempDir,
    /// DNS address of the instance with the fast path (UDP and TCP).
    pub fast: SocketAddr,
    /// DNS address of the instance without it.
    pub full: SocketAddr,
    /// Control-plane address of the fast-path instance.
    pub http: Option<SocketAddr>,
}

impl World {
    /// Where to send a query for `path`.
    pub fn addr(&self, path: Path) -> SocketAddr {
        match path {
            Path::UdpFast | Path::Tcp => self.fast,
            Path::UdpFull => self.full,
        }
    }
}

/// Writes the world's files into a new temporary directory.
pub fn write_world() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("cdn.test.zone"), zone_text()).expect("zone file");
    std::fs::write(dir.path().join("fast.yaml"), config_text(true)).expect("config");
    std::fs::write(dir.path().join("full.yaml"), config_text(false)).expect("config");
    write_geo_databases(dir.path());
    dir
}

/// Loads a config of the world with the listeners on port 0.
pub fn load_config(dir: &FsPath, fast_path: bool) -> Config {
    let file = if fast_path { "fast.yaml" } else { "full.yaml" };
    let overlay = Overlay {
        dns_listen: vec![SocketAddr::from((Ipv4Addr::LOCALHOST, 0))],
        http_listen: Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))),
        ..Overlay::default()
    };
    Config::load(&dir.join(file), &overlay).expect("config loads")
}

/// The world shared by every test in this binary, started on first use.
///
/// Each `#[tokio::test]` has its own runtime, which ends with the test, so the
/// servers run on a runtime of their own, on a thread that lives as long as the
/// process.
pub fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let dir = write_world();
        let (sender, receiver) = std::sync::mpsc::channel();
        let path = dir.path().to_path_buf();
        std::thread::Builder::new()
            .name("meridian-test-world".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("runtime");
                runtime.block_on(async move {
                    let fast = meridian::server::start(load_config(&path, true))
                        .await
                        .expect("fast-path instance starts");
                    let full = meridian::server::start(load_config(&path, false))
                        .await
                        .expect("full-path instance starts");
                    sender
                        .send((fast.dns_addrs()[0], full.dns_addrs()[0], fast.http_addr()))
                        .expect("test waits for the addresses");
                    // Keep both instances serving until the process exits.
                    let _instances = (fast, full);
                    std::future::pending::<()>().await;
                });
            })
            .expect("world thread");
        let (fast, full, http) = receiver.recv().expect("world started");
        World {
            dir,
            fast,
            full,
            http,
        }
    })
}

/// Sends raw bytes and returns the raw reply; None if the server sent nothing
/// within `wait` (UDP) or closed the connection (TCP).
pub async fn exchange_raw(
    path: Path,
    addr: SocketAddr,
    packet: &[u8],
    wait: Duration,
) -> Option<Vec<u8>> {
    match path {
        Path::UdpFast | Path::UdpFull => udp_exchange(addr, packet, wait).await,
        Path::Tcp => tcp_exchange(addr, &[packet], 1).await.into_iter().next(),
    }
}

/// One datagram out, one back.
pub async fn udp_exchange(addr: SocketAddr, packet: &[u8], wait: Duration) -> Option<Vec<u8>> {
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .expect("client socket");
    socket.send_to(packet, addr).await.expect("send");
    let mut buf = vec![0; 65_535];
    match tokio::time::timeout(wait, socket.recv_from(&mut buf)).await {
        Ok(Ok((len, _))) => {
            buf.truncate(len);
            Some(buf)
        }
        Ok(Err(e)) => panic!("UDP receive failed: {e}"),
        Err(_) => None,
    }
}

/// Writes every packet on one connection at once (pipelined, RFC 7766 section 6.2.1.1)
/// and reads `replies` replies, or fewer if the server closes the connection.
pub async fn tcp_exchange(addr: SocketAddr, packets: &[&[u8]], replies: usize) -> Vec<Vec<u8>> {
    let mut stream = tokio::time::timeout(TIMEOUT, TcpStream::connect(addr))
        .await
        .expect("connect in time")
        .expect("connect");
    let mut out = Vec::new();
    for packet in packets {
        out.extend_from_slice(&(packet.len() as u16).to_be_bytes());
        out.extend_from_slice(packet);
    }
    stream.write_all(&out).await.expect("write");
    let wanted = replies;
    let mut replies = Vec::new();
    while replies.len() < wanted {
        let mut len = [0_u8; 2];
        match tokio::time::timeout(TIMEOUT, stream.read_exact(&mut len)).await {
            Ok(Ok(_)) => {}
            Ok(Err(_)) => break,
            Err(_) => panic!("no TCP reply within {TIMEOUT:?}"),
        }
        let mut reply = vec![0; usize::from(u16::from_be_bytes(len))];
        tokio::time::timeout(TIMEOUT, stream.read_exact(&mut reply))
            .await
            .expect("reply body in time")
            .expect("reply body");
        replies.push(reply);
    }
    replies
}

/// Sends a message over `path` to the shared world and decodes the reply.
pub async fn ask(path: Path, message: &Message) -> Message {
    let reply = ask_raw(path, &message.to_vec().expect("query encodes")).await;
    Message::from_vec(&reply).expect("reply decodes")
}

/// Sends raw bytes over `path` to the shared world; the reply must come.
pub async fn ask_raw(path: Path, packet: &[u8]) -> Vec<u8> {
    exchange_raw(path, world().addr(path), packet, TIMEOUT)
        .await
        .unwrap_or_else(|| panic!("{path:?}: no reply"))
}

/// A query as a resolver sends it: random id, RD clear, no EDNS. The name keeps
/// its case.
pub fn query(name: &str, qtype: RecordType) -> Message {
    let mut message = Message::query();
    message.add_query(Query::query(Name::from_ascii(name).expect("name"), qtype));
    message
}

/// The same with an OPT record offering `udp_size`.
pub fn query_edns(name: &str, qtype: RecordType, udp_size: u16) -> Message {
    let mut message = query(name, qtype);
    let mut edns = Edns::new();
    edns.set_max_payload(udp_size);
    message.set_edns(edns);
    message
}

/// The same with EDNS Client Subnet `addr/source`.
pub fn query_ecs(name: &str, qtype: RecordType, addr: IpAddr, source: u8) -> Message {
    let mut message = query_edns(name, qtype, 1232);
    if let Some(edns) = message.edns.as_mut() {
        edns.options_mut()
            .insert(EdnsOption::Subnet(ClientSubnet::new(addr, source, 0)));
    }
    message
}

/// The ECS option of a reply, if any.
pub fn reply_ecs(message: &Message) -> Option<ClientSubnet> {
    match message.edns.as_ref()?.option(EdnsCode::Subnet)? {
        EdnsOption::Subnet(subnet) => Some(*subnet),
        _ => None,
    }
}

/// The IPv4 and IPv6 addresses in a reply's answer section, in order.
pub fn addresses(message: &Message) -> Vec<IpAddr> {
    message
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            _ => None,
        })
        .collect()
}

/// Which POP an address belongs to.
pub fn pop_of(addr: IpAddr) -> Option<&'static str> {
    POPS.iter()
        .find(|p| {
            p.addresses
                .iter()
                .any(|a| a.parse::<IpAddr>().ok() == Some(addr))
        })
        .map(|p| p.id)
}

/// The POPs a reply's addresses belong to, in order, without repeats.
pub fn pops_of(message: &Message) -> Vec<&'static str> {
    let mut pops = Vec::new();
    for addr in addresses(message) {
        if let Some(pop) = pop_of(addr)
            && !pops.contains(&pop)
        {
            pops.push(pop);
        }
    }
    pops
}

/// Records of one type in a section.
pub fn of_type(records: &[Record], rtype: RecordType) -> Vec<&Record> {
    records
        .iter()
        .filter(|r| r.record_type() == rtype)
        .collect()
}

/// A hickory-net client connected to the shared world over `path`.
pub async fn hickory_client(path: Path) -> Client<TokioRuntimeProvider> {
    let addr = world().addr(path);
    let provider = TokioRuntimeProvider::default();
    match path {
        Path::UdpFast | Path::UdpFull => {
            let stream = UdpClientStream::builder(addr, provider)
                .with_timeout(Some(TIMEOUT))
                .build();
            let (client, background) = Client::<TokioRuntimeProvider>::from_sender(stream);
            tokio::spawn(background);
            client
        }
        Path::Tcp => {
            let (connect, handle) = TcpClientStream::new(addr, None, Some(TIMEOUT), provider);
            let stream = connect.await.expect("TCP connect");
            let (client, background) = Client::<TokioRuntimeProvider>::new(stream, handle);
            tokio::spawn(background);
            client
        }
    }
}

/// An IPv4 address from text.
pub fn v4(text: &str) -> IpAddr {
    IpAddr::V4(text.parse::<Ipv4Addr>().expect("IPv4 address"))
}

/// An IPv6 address from text.
pub fn v6(text: &str) -> IpAddr {
    IpAddr::V6(text.parse::<Ipv6Addr>().expect("IPv6 address"))
}
