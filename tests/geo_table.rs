//! The compiled tables answer lookups exactly as the tree walk does: the City
//! record, the ASN and both prefix lengths, for addresses inside a network and
//! for addresses in the empty space between networks, whose prefix sets the ECS
//! scope of an answer as much as a found network's does. The IPv4 tables answer
//! every IPv4 address; the IPv6 tables answer or leave the address to the walk
//! (in a /64 split into longer networks, or an IPv4 alias), and whatever answers
//! must agree with the walk.
//!
//! Checked around every boundary between leaves (the last address before it and
//! the two after it) and on random addresses of: databases built here in every
//! shape the reader accepts (IPv4 and IPv6 trees, the three record sizes, with and
//! without IPv4 aliases, reserved networks painted empty, no IPv4 subtree at all,
//! IPv6 networks longer than a /64); the sample databases shipped in `geodata/`;
//! and, around a stride of the boundaries, the real City and ASN databases in
//! `../shared/geodata/` when that directory exists, with the /56s of the ASN
//! database's IPv6 networks, as resolvers send IPv6 clients. IPv6 addresses
//! include each IPv4 boundary's places in `::/96` and in the aliases.
//!
//! The ISP ranges compiled from the tables (for `examples/world`'s ISPs) name,
//! on the same real addresses, the ISP of the ASN the walk finds, with a block
//! around the address at least as wide as the ASN network; and so does the
//! router, which falls back to the ASN where the IPv6 ranges do not know.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::time::SystemTime;

use ipnet::IpNet;
use ipnetwork::IpNetwork;
use maxminddb::{Reader, WithinOptions};
use meridian::config::{Config, IspId, Overlay};
use meridian::geo::GeoDb;
use meridian::routing::Router;
use meridian::routing::isp_ranges::{Ipv4IspRanges, Ipv6IspRanges};
use mmdb_writer::{IpVersion, Ipv4Aliasing, RecordSize, ReservedNetworks, Value, Writer};

/// A deterministic stream of addresses (xorshift64).
struct Addresses(u64);

impl Iterator for Addresses {
    type Item = Ipv4Addr;

    fn next(&mut self) -> Option<Ipv4Addr> {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        Some(Ipv4Addr::from((self.0 >> 16) as u32))
    }
}

/// Around every boundary between two IPv4 leaves of `database`'s tree (networks
/// and empty nodes alike) the last address before it and the two after it: per
/// leaf, its first two addresses and its last. One leaf in `stride` is taken.
fn boundaries(database: &[u8], stride: usize) -> Vec<Ipv4Addr> {
    let reader = Reader::from_source(database).expect("database");
    let all: IpNetwork = "0.0.0.0/0".parse().expect("network");
    let options = WithinOptions::default().include_networks_without_data();
    let mut addresses = Vec::new();
    for result in reader
        .within(all, options)
        .expect("IPv4 networks")
        .step_by(stride)
    {
        let IpNetwork::V4(network) = result.expect("leaf").network().expect("network") else {
            // One IPv6 leaf holding all of IPv4: its ends are 0.0.0.0 and
            // 255.255.255.255, checked for every database anyway.
            continue;
        };
        let (first, last) = (u32::from(network.network()), u32::from(network.broadcast()));
        addresses.extend([first, first.saturating_add(1), last].map(Ipv4Addr::from));
    }
    addresses
}

/// Asserts that the tables and the walk agree on `addresses` and on `random`
/// random addresses; returns how many addresses were checked.
fn assert_agree(
    geo: &GeoDb,
    addresses: impl IntoIterator<Item = Ipv4Addr>,
    random: usize,
    what: &str,
) -> usize {
    let ends = [Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST];
    let addresses = addresses
        .into_iter()
        .chain(ends)
        .chain(Addresses(0x5eed_cafe).take(random))
        .map(IpAddr::V4);
    assert_agree_on(geo, addresses, what).checked
}

/// How many addresses [`assert_agree_on`] checked, and how many of them the
/// tables answered without a walk.
#[derive(Debug, Default, Clone, Copy)]
struct Agreed {
    checked: usize,
    from_tables: usize,
}

/// Asserts that every lookup agrees with the tree walks on `addresses`: the
/// lookups that use the tables, and the tables alone wherever they answer.
fn assert_agree_on(geo: &GeoDb, addresses: impl IntoIterator<Item = IpAddr>, what: &str) -> Agreed {
    let mut agreed = Agreed::default();
    for ip in addresses {
        let by_tree = geo.locate_networks_by_tree(ip);
        // Every record the walk reaches was numbered when the tables were
        // compiled, those of the leaves the IPv6 table leaves to the walk too:
        // rankings are kept per number.
        if let Some(record) = by_tree.city_record {
            assert!(
                (record as usize) < geo.city_records(),
                "{what}: {ip}: record number {record} of {}",
                geo.city_records()
            );
        }
        assert_eq!(geo.locate_networks(ip), by_tree, "{what}: {ip}");
        if let Some(from_tables) = geo.locate_networks_from_tables(ip, true) {
            assert_eq!(from_tables, by_tree, "{what}: tables alone, {ip}");
            agreed.from_tables += 1;
        }
        let located = geo.locate(ip);
        assert_eq!(
            (
                located.city_record,
                located.city_prefix,
                located.asn,
                located.asn_prefix
            ),
            (
                by_tree.city_record,
                by_tree.city_prefix,
                by_tree.asn,
                by_tree.asn_prefix
            ),
            "{what}: locate({ip})"
        );
        agreed.checked += 1;
    }
    agreed
}

/// A deterministic stream of IPv6 addresses (xorshift64, two draws each): every
/// other one inside `2000::/3`, where the networks are.
struct Ipv6Addresses(Addresses);

impl Iterator for Ipv6Addresses {
    type Item = IpAddr;

    fn next(&mut self) -> Option<IpAddr> {
        let high = u128::from(self.0.0);
        self.0.next();
        let low = u128::from(self.0.0);
        self.0.next();
        let mut addr = high << 64 | low;
        if high & 1 == 0 {
            addr = addr >> 3 | 1 << 125;
        }
        Some(IpAddr::V6(Ipv6Addr::from(addr)))
    }
}

/// IPv6 addresses to check in `database`'s tree: around every boundary between
/// two IPv6 leaves outside `::/96` (networks and empty nodes alike), one leaf in
/// `stride`, the last address before it and the two after it; for each of `ipv4`
/// (boundaries of the IPv4 tree), its places in `::/96` and in the aliases of the
/// IPv4 tree (`::ffff:0:0/96`, Teredo `2001::/32`, 6to4 `2002::/16`); and both
/// ends of each alias and the addresses either side. None for an IPv4 database.
fn ipv6_addresses(database: &[u8], stride: usize, ipv4: &[Ipv4Addr]) -> Vec<IpAddr> {
    let reader = Reader::from_source(database).expect("database");
    if reader.metadata().ip_version != 6 {
        return Vec::new();
    }
    let all: IpNetwork = "::/0".parse().expect("network");
    let options = WithinOptions::default().include_networks_without_data();
    let mut addresses = Vec::new();
    let leaves = reader.within(all, options).expect("IPv6 networks");
    // The IPv4 subtree's leaves are placed from `ipv4` below.
    let ipv6_leaves = leaves.filter(|result| {
        !matches!(
            result.as_ref().map(|r| r.network()),
            Ok(Ok(IpNetwork::V4(_)))
        )
    });
    for result in ipv6_leaves.step_by(stride) {
        if let IpNetwork::V6(network) = result.expect("leaf").network().expect("network") {
            let (first, last) = (
                u128::from(network.network()),
                u128::from(network.broadcast()),
            );
            addresses.extend([first, first.saturating_add(1), last]);
        }
    }
    let ends = [Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST];
    for addr in ipv4.iter().copied().chain(ends) {
        let addr = u128::from(u32::from(addr));
        addresses.extend([
            addr,
            0xffff << 32 | addr,
            0x2001 << 112 | addr << 64,
            0x2001 << 112 | addr << 64 | 1,
            0x2002 << 112 | addr << 80,
            0x2002 << 112 | addr << 80 | 0xffff_ffff,
        ]);
    }
    for (first, bits) in [
        (0xffff_u128 << 32, 32),
        (0x2001 << 112, 96),
        (0x2002 << 112, 112),
    ] {
        let last = first | ((1 << bits) - 1);
        addresses.extend([first - 1, first, last, last + 1]);
    }
    addresses
        .into_iter()
        .map(|a| IpAddr::V6(Ipv6Addr::from(a)))
        .collect()
}

/// The shape of a database built for a test.
#[derive(Debug, Clone, Copy)]
struct Shape {
    ip_version: IpVersion,
    record_size: RecordSize,
    aliasing: Ipv4Aliasing,
    reserved: ReservedNetworks,
}

/// A database of `networks`, each with its ASN, in `shape`; inserted in the order
/// given, so a later network overrides the part of an earlier one it covers.
fn database(shape: Shape, networks: &[(&str, u32)]) -> Vec<u8> {
    let mut writer = Writer::builder("Test-ASN")
        .ip_version(shape.ip_version)
        .record_size(shape.record_size)
        .ipv4_aliasing(shape.aliasing)
        .reserved_networks(shape.reserved)
        .build_epoch(SystemTime::UNIX_EPOCH)
        .build();
    for (network, asn) in networks {
        let network: IpNet = network.parse().expect("network");
        let record = Value::map([("autonomous_system_number", Value::from(*asn))]);
        writer.insert_value(network, record).expect("insert");
    }
    writer.to_bytes().expect("database")
}

/// Networks meant to find edge cases: leaves wider than a /16 and reaching either
/// end of the space, /32s, a /31 at the top, nested networks punching holes in
/// bigger ones, neighbours sharing a record, and an empty space split unevenly.
const NETWORKS: [(&str, u32); 14] = [
    ("0.0.0.0/8", 1),
    ("1.0.0.0/16", 2),
    ("1.0.16.0/24", 3),
    ("1.0.16.128/32", 4),
    ("1.0.17.0/24", 3),
    ("10.0.0.0/7", 5),
    ("10.200.0.0/13", 6),
    ("10.200.1.1/32", 7),
    ("63.255.255.255/32", 8),
    ("64.0.0.0/32", 8),
    ("100.64.0.0/10", 9),
    ("192.0.2.0/24", 10),
    ("223.255.0.0/16", 11),
    ("255.255.255.254/31", 12),
];

/// IPv6 networks meant to find edge cases, none reserved: leaves wider than a
/// /16 and reaching the end of the space, a /64 split into longer networks down
/// to a /128, a /64 next to it that is not, and nested networks.
const IPV6_NETWORKS: [(&str, u32); 10] = [
    ("2400::/6", 20),
    ("2a00::/12", 21),
    ("2a00:1::/48", 22),
    ("2a00:1:0:2::/64", 23),
    ("2a00:1:0:3:8000::/65", 24),
    ("2a00:1:0:3::1/128", 25),
    ("2a00:1:0:4::/63", 22),
    ("2c0f:ffff:ffff:ff00::/56", 26),
    ("8000::/1", 27),
    ("fbff:ffff:ffff:ffff::/64", 28),
];

/// The same databases as ASN and as City (the City table keeps record numbers,
/// the ASN table decoded numbers: both sides are exercised).
fn check_shape(shape: Shape, networks: &[(&str, u32)]) {
    let bytes = database(shape, networks);
    let geo = GeoDb::from_bytes(Some(bytes.clone()), Some(bytes.clone())).expect("databases");
    let ipv4 = boundaries(&bytes, 1);
    let ipv6 = ipv6_addresses(&bytes, 1, &ipv4);
    let checked = assert_agree(&geo, ipv4, 20_000, &format!("{shape:?}"));
    assert!(checked > 20_000, "{shape:?}: only {checked} addresses");
    if matches!(shape.ip_version, IpVersion::V6) {
        let random = Ipv6Addresses(Addresses(0x5eed_beef)).take(20_000);
        let agreed = assert_agree_on(&geo, ipv6.into_iter().chain(random), &format!("{shape:?}"));
        assert!(agreed.from_tables > 10_000, "{shape:?}: {agreed:?}");
    }
}

/// Every shape the reader accepts, on the edge-case networks.
#[test]
fn tables_agree_with_the_walk_on_every_shape() {
    let sizes = [RecordSize::Bits24, RecordSize::Bits28, RecordSize::Bits32];
    for record_size in sizes {
        for excluded in [false, true] {
            let reserved = if excluded {
                ReservedNetworks::Excluded
            } else {
                ReservedNetworks::Included
            };
            let mut shapes = vec![Shape {
                ip_version: IpVersion::V4,
                record_size,
                aliasing: Ipv4Aliasing::Disabled,
                reserved,
            }];
            for aliasing in [Ipv4Aliasing::Enabled, Ipv4Aliasing::Disabled] {
                shapes.push(Shape {
                    ip_version: IpVersion::V6,
                    record_size,
                    aliasing,
                    reserved,
                });
            }
            for shape in shapes {
                // Reserved networks painted empty refuse inserts inside them.
                let mut networks = if excluded {
                    vec![NETWORKS[1], NETWORKS[2], NETWORKS[3]]
                } else {
                    NETWORKS.to_vec()
                };
                if matches!(shape.ip_version, IpVersion::V6) {
                    networks.extend(IPV6_NETWORKS);
                }
                check_shape(shape, &networks);
            }
        }
    }
}

/// Databases whose IPv4 space is a single leaf: empty, all one network, or (in an
/// IPv6 tree without an IPv4 subtree) inside an IPv6 network or an empty IPv6
/// node, where the walk reports that leaf's IPv6 prefix for every IPv4 address.
#[test]
fn tables_agree_with_the_walk_on_single_leaf_databases() {
    let shape = |ip_version| Shape {
        ip_version,
        record_size: RecordSize::Bits28,
        aliasing: Ipv4Aliasing::Disabled,
        reserved: ReservedNetworks::Included,
    };
    let cases: [(IpVersion, &[(&str, u32)]); 5] = [
        (IpVersion::V4, &[]),
        (IpVersion::V4, &[("0.0.0.0/0", 1)]),
        (IpVersion::V6, &[("::/64", 1), ("2001:db8::/32", 2)]),
        (IpVersion::V6, &[("2001:db8::/32", 2)]),
        (IpVersion::V6, &[("::1:0:0:0/80", 3), ("8000::/1", 4)]),
    ];
    for (ip_version, networks) in cases {
        let bytes = database(shape(ip_version), networks);
        let geo = GeoDb::from_bytes(Some(bytes.clone()), Some(bytes.clone())).expect("databases");
        let what = format!("{ip_version:?} {networks:?}");
        assert_agree(&geo, [], 2_000, &what);
        let ipv6 = ipv6_addresses(&bytes, 1, &boundaries(&bytes, 1));
        let random = Ipv6Addresses(Addresses(0x5eed_beef)).take(2_000);
        assert_agree_on(&geo, ipv6.into_iter().chain(random), &what);
    }
}

/// The sample databases shipped with the crate, as `serve` opens them.
#[test]
fn tables_agree_with_the_walk_on_the_sample_geodata() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("geodata");
    check_files(
        &dir.join("sample-city.mmdb"),
        &dir.join("sample-asn.mmdb"),
        50_000,
        (1, 1),
    );
}

/// The real databases, when installed: the boundaries of one leaf in
/// [`REAL_CITY_STRIDE`] of the City database's 3 million and one in
/// [`REAL_ASN_STRIDE`] of the ASN database's 700,000 (the walk takes microseconds
/// in a test build), and random addresses.
#[test]
fn tables_agree_with_the_walk_on_the_real_geodata() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/geodata");
    let (city, asn) = (dir.join("GeoLite2-City.mmdb"), dir.join("ASN.mmdb"));
    if !(city.is_file() && asn.is_file()) {
        let _ = writeln!(
            std::io::stderr(),
            "tables_agree_with_the_walk_on_the_real_geodata: skipped: ../shared/geodata not found \
             (looked for GeoLite2-City.mmdb and ASN.mmdb in {})",
            dir.display()
        );
        return;
    }
    check_files(&city, &asn, 100_000, (REAL_CITY_STRIDE, REAL_ASN_STRIDE));
}

const REAL_CITY_STRIDE: usize = 29;
const REAL_ASN_STRIDE: usize = 5;
/// One leaf in this many of the IPv6 trees' 700,000 and 570,000 outside `::/96`,
/// and one IPv4 boundary in this many placed in `::/96` and the aliases.
const REAL_IPV6_STRIDE: usize = 7;
const REAL_ALIAS_STRIDE: usize = 8;

/// Both files' boundaries, one leaf in `strides` (City, ASN), and `random`
/// random addresses; then the same for IPv6, with the /56 at each end of every
/// IPv6 network of the ASN database, as resolvers send clients' subnets.
fn check_files(city: &Path, asn: &Path, random: usize, strides: (usize, usize)) {
    let geo = GeoDb::open(Some(city), Some(asn)).expect("databases");
    let city_bytes = std::fs::read(city).expect("City database");
    let asn_bytes = std::fs::read(asn).expect("ASN database");
    let city_ipv4 = boundaries(&city_bytes, strides.0);
    let asn_ipv4 = boundaries(&asn_bytes, strides.1);
    assert_agree(&geo, city_ipv4.iter().copied(), 0, "City boundaries");
    assert_agree(&geo, asn_ipv4.iter().copied(), random, "ASN boundaries");

    let (ipv6_stride, alias_stride) = if strides == (1, 1) {
        (1, 1)
    } else {
        (REAL_IPV6_STRIDE, REAL_ALIAS_STRIDE)
    };
    let aliased = |ipv4: &[Ipv4Addr]| -> Vec<Ipv4Addr> {
        ipv4.iter().step_by(alias_stride).copied().collect()
    };
    let city_ipv6 = ipv6_addresses(&city_bytes, ipv6_stride, &aliased(&city_ipv4));
    let asn_ipv6 = ipv6_addresses(&asn_bytes, ipv6_stride, &aliased(&asn_ipv4));
    let random_ipv6 = Ipv6Addresses(Addresses(0x5eed_beef)).take(random);
    for (addresses, what) in [
        (city_ipv6, "City IPv6 boundaries"),
        (asn_ipv6, "ASN IPv6 boundaries"),
        (random_ipv6.collect(), "random IPv6 addresses"),
    ] {
        let agreed = assert_agree_on(&geo, addresses, what);
        let _ = writeln!(std::io::stderr(), "{what}: {agreed:?}");
    }
    let subnets = assert_agree_on(&geo, ipv6_subnets(&asn_bytes), "IPv6 /56s");
    let _ = writeln!(std::io::stderr(), "IPv6 /56s: {subnets:?}");
    // Nearly all clients' /56s lie in networks of a /64 or wider.
    assert!(
        subnets.from_tables * 10 >= subnets.checked * 9,
        "IPv6 /56s: {subnets:?}"
    );
}

/// The ISP ranges of `examples/world`'s ISPs against the real ASN database's
/// walk: the /56s of its IPv6 networks, and around one IPv4 leaf in
/// [`REAL_ASN_STRIDE`].
#[test]
fn isp_ranges_agree_with_the_walk_on_the_real_geodata() {
    let asn = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/geodata/ASN.mmdb");
    if !asn.is_file() {
        let _ = writeln!(
            std::io::stderr(),
            "isp_ranges_agree_with_the_walk_on_the_real_geodata: skipped: {} not found",
            asn.display()
        );
        return;
    }
    let world = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/world/meridian.yaml");
    let config = Config::load(&world, &Overlay::default()).expect("examples/world config");
    let geo = GeoDb::open(None, Some(&asn)).expect("ASN database");
    let router = Router::new(&config, &geo);
    let isps: std::collections::HashMap<u32, IspId> = config
        .isps
        .iter()
        .enumerate()
        .flat_map(|(i, isp)| isp.asns.iter().map(move |asn| (*asn, IspId(i as u16))))
        .collect();
    let isp_of = |asn: u32| isps.get(&asn).copied();
    let ranges4 = Ipv4IspRanges::ipv4(geo.asn_ipv4_ranges().expect("IPv4 table"), isp_of);
    let ranges6 = Ipv6IspRanges::new(geo.asn_ipv6_ranges().expect("IPv6 table"), isp_of);
    for (what, len, bytes) in [
        ("IPv4", ranges4.len(), ranges4.heap_bytes()),
        ("IPv6", ranges6.len(), ranges6.heap_bytes()),
    ] {
        let _ = writeln!(
            std::io::stderr(),
            "{what} ISP ranges of examples/world: {len}, {bytes} heap bytes"
        );
    }
    let bytes = std::fs::read(&asn).expect("ASN database");
    let ipv4 = boundaries(&bytes, REAL_ASN_STRIDE)
        .into_iter()
        .map(IpAddr::V4);
    let v4 = assert_isps_agree(&geo, &router, ipv4, isp_of, |addr| match addr {
        IpAddr::V4(addr) => ranges4.get(addr),
        IpAddr::V6(_) => unreachable!("IPv4 addresses only"),
    });
    let v6 = assert_isps_agree(
        &geo,
        &router,
        ipv6_subnets(&bytes),
        isp_of,
        |addr| match addr {
            IpAddr::V6(addr) => ranges6.get(addr),
            IpAddr::V4(_) => unreachable!("IPv6 addresses only"),
        },
    );
    let _ = writeln!(
        std::io::stderr(),
        "IPv4 boundaries: {v4:?}\nIPv6 /56s: {v6:?}"
    );
    // Every IPv4 ISP is known, nearly every IPv6 one; both sides have clients of
    // the ISPs, and blocks wider than the ASN network.
    assert_eq!(v4.known, v4.checked, "{v4:?}");
    assert!(v6.known * 100 >= v6.checked * 99, "{v6:?}");
    for counts in [v4, v6] {
        assert!(counts.of_an_isp > 100 && counts.widened > 100, "{counts:?}");
    }
}

/// What [`assert_isps_agree`] checked.
#[derive(Debug, Clone, Copy, Default)]
struct IspsAgreed {
    checked: usize,
    /// Answered by the ranges.
    known: usize,
    /// Of those, in a configured ISP.
    of_an_isp: usize,
    /// Of those, in a block wider than the ASN network.
    widened: usize,
}

/// Asserts, for each of `addresses`, that `ranges` (where they know it) give the
/// ISP of the ASN the walk finds, in a block holding the ASN network, and that
/// the router's ISP is that ISP, read from the walk's location.
fn assert_isps_agree(
    geo: &GeoDb,
    router: &Router,
    addresses: impl IntoIterator<Item = IpAddr>,
    isp_of: impl Fn(u32) -> Option<IspId>,
    ranges: impl Fn(IpAddr) -> Option<(Option<IspId>, u8)>,
) -> IspsAgreed {
    let mut counts = IspsAgreed::default();
    for addr in addresses {
        let walked = geo.locate_networks_by_tree(addr);
        let isp = walked.asn.and_then(&isp_of);
        counts.checked += 1;
        assert_eq!(router.client_isp(addr, &walked).isp, isp, "{addr}");
        let Some((found, prefix)) = ranges(addr) else {
            continue;
        };
        counts.known += 1;
        assert_eq!(found, isp, "{addr}");
        assert!(
            prefix <= walked.asn_prefix,
            "{addr}: /{prefix} inside the ASN network /{}",
            walked.asn_prefix
        );
        counts.of_an_isp += usize::from(isp.is_some());
        counts.widened += usize::from(prefix < walked.asn_prefix);
    }
    counts
}

/// The first and the last /56 of every IPv6 network (with data) in `2000::/3`
/// of `database`.
fn ipv6_subnets(database: &[u8]) -> Vec<IpAddr> {
    let reader = Reader::from_source(database).expect("database");
    let global: IpNetwork = "2000::/3".parse().expect("network");
    let mut subnets = Vec::new();
    for result in reader
        .within(global, WithinOptions::default())
        .expect("IPv6 networks")
    {
        if let IpNetwork::V6(network) = result.expect("network").network().expect("network") {
            let cut = |addr: Ipv6Addr| Ipv6Addr::from(u128::from(addr) & !(u128::MAX >> 56));
            subnets.extend([network.network(), network.broadcast()].map(|a| IpAddr::V6(cut(a))));
        }
    }
    subnets
}
