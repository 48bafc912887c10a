//! The compiled IPv4 tables answer every IPv4 lookup exactly as the tree walk
//! does: the City record, the ASN and both prefix lengths, for addresses inside a
//! network and for addresses in the empty space between networks, whose prefix
//! sets the ECS scope of an answer as much as a found network's does.
//!
//! Checked around every boundary between leaves (the last address before it and
//! the two after it) and on random addresses of: databases built here in every shape the reader
//! accepts (IPv4 and IPv6 trees, the three record sizes, with and without IPv4
//! aliases, reserved networks painted empty, no IPv4 subtree at all); the sample
//! databases shipped in `geodata/`; and, around a stride of the boundaries, the
//! real City and ASN databases in `../shared/geodata/` when that directory exists.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::SystemTime;

use ipnet::IpNet;
use ipnetwork::IpNetwork;
use maxminddb::{Reader, WithinOptions};
use meridian::geo::GeoDb;
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
    let mut checked = 0;
    for addr in addresses
        .into_iter()
        .chain(ends)
        .chain(Addresses(0x5eed_cafe).take(random))
    {
        let ip = IpAddr::V4(addr);
        let by_tree = geo.locate_networks_by_tree(ip);
        assert_eq!(geo.locate_networks(ip), by_tree, "{what}: {addr}");
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
            "{what}: locate({addr})"
        );
        checked += 1;
    }
    checked
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

/// The same databases as ASN and as City (the City table keeps record offsets,
/// the ASN table decoded numbers: both sides are exercised).
fn check_shape(shape: Shape, networks: &[(&str, u32)]) {
    let bytes = database(shape, networks);
    let geo = GeoDb::from_bytes(Some(bytes.clone()), Some(bytes.clone())).expect("databases");
    let checked = assert_agree(&geo, boundaries(&bytes, 1), 20_000, &format!("{shape:?}"));
    assert!(checked > 20_000, "{shape:?}: only {checked} addresses");
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
                let networks = if excluded {
                    vec![NETWORKS[1], NETWORKS[2], NETWORKS[3]]
                } else {
                    NETWORKS.to_vec()
                };
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
        let geo = GeoDb::from_bytes(Some(bytes.clone()), Some(bytes)).expect("databases");
        assert_agree(&geo, [], 2_000, &format!("{ip_version:?} {networks:?}"));
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

/// Both files' boundaries, one leaf in `strides` (City, ASN), and `random`
/// random addresses.
fn check_files(city: &Path, asn: &Path, random: usize, strides: (usize, usize)) {
    let geo = GeoDb::open(Some(city), Some(asn)).expect("databases");
    let city_bytes = std::fs::read(city).expect("City database");
    let asn_bytes = std::fs::read(asn).expect("ASN database");
    assert_agree(
        &geo,
        boundaries(&city_bytes, strides.0),
        0,
        "City boundaries",
    );
    assert_agree(
        &geo,
        boundaries(&asn_bytes, strides.1),
        random,
        "ASN boundaries",
    );
}
