//! A small snapshot for the unit tests of this module: a zone, five POPs (one
//! IPv6-only with many addresses, one mainland-China IPv4-only), two ISPs, geo
//! databases built in memory, overrides, and domains of every shape.

use std::path::Path;
use std::sync::Arc;

use crate::config::Config;
use crate::geo::GeoDb;
use crate::geo::build::{AsnEntry, CityEntry, Source};
use crate::snapshot::Snapshot;

const CONFIG: &str = r#"
version: 1
zones:
  - origin: cdn.test
    file: cdn.test.zone
cdn-suffix: cdn.test
dns:
  max-udp-payload: 1232
unknown-location:
  pops: [fra, nrt]
isps:
  isp-x: [64500]
  isp-y: [64501]
pops:
  - id: fra
    country: DE
    latitude: 50.1
    longitude: 8.7
    addresses: [192.0.2.1, 192.0.2.2, 192.0.2.3, "2001:db8:1::1", "2001:db8:1::2"]
  - id: nrt
    country: JP
    latitude: 35.7
    longitude: 139.7
    isp: isp-y
    addresses: [198.51.100.1, 198.51.100.2, "2001:db8:2::1"]
  - id: ams
    country: NL
    latitude: 52.4
    longitude: 4.9
    isp: isp-x
    addresses: [203.0.113.1, "2001:db8:3::1"]
  - id: pek
    country: CN
    latitude: 39.9
    longitude: 116.4
    addresses: [203.0.113.100]
  - id: big
    country: US
    latitude: 37.4
    longitude: -122.1
    addresses: [BIG]
domains:
  - name: www.example.com
    origins: [{ host: origin.example.com }]
    ttl: 20
  - name: two.example.com
    origins: [{ host: origin.example.com }]
    ttl: 45
    answer: { pops: 2, max-addresses: 2 }
  - name: "*.example.org"
    origins: [{ host: origin.example.net }]
  - name: cn.example.com
    origins: [{ host: origin.example.com }]
    coverage: mainland-china
  - name: many.example.com
    origins: [{ host: origin.example.com }]
    coverage: global-excluding-mainland-china
overrides:
  networks:
    - { network: 10.0.0.0/8, pops: [nrt, fra] }
    - { network: 10.1.0.0/16, pops: [ams, nrt] }
    - { network: "2001:db8:ff::/48", pops: [pek] }
    - { network: 192.0.2.0/24, pops: [big] }
"#;

const ZONE: &str = "\
$TTL 3600
@ IN SOA ns1.cdn.test. hostmaster.cdn.test. 1 7200 900 1209600 300
@ IN NS ns1.cdn.test.
ns1 IN A 192.0.2.53
";

fn city(network: &str, country: &str, continent: &str, latitude: f64, longitude: f64) -> CityEntry {
    CityEntry {
        network: network.parse().expect("network"),
        city: None,
        country: country.into(),
        continent: continent.into(),
        latitude: Some(latitude),
        longitude: Some(longitude),
    }
}

fn asn(network: &str, asn: u32) -> AsnEntry {
    AsnEntry {
        network: network.parse().expect("network"),
        asn,
        organization: None,
    }
}

/// The snapshot, and the directory holding its zone file.
pub fn snapshot() -> (tempfile::TempDir, Arc<Snapshot>) {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("cdn.test.zone"), ZONE).expect("zone file");
    let path = dir.path().join("meridian.yaml");
    // 20 AAAA records of 28 octets: over 512 with the question and OPT.
    let big: Vec<String> = (1..=20).map(|i| format!("\"2001:db8:99::{i}\"")).collect();
    let text = CONFIG.replace("BIG", &big.join(", "));
    let config = Config::parse(&text, Path::new(&path)).expect("config");
    let source = Source {
        cities: vec![
            city("100.64.0.0/16", "JP", "AS", 35.7, 139.7),
            city("100.65.0.0/16", "DE", "EU", 50.1, 8.7),
            city("2001:db8:aa00::/40", "DE", "EU", 50.1, 8.7),
        ],
        asns: vec![asn("100.64.0.0/20", 64501), asn("100.65.0.0/20", 64500)],
    };
    let geo = GeoDb::from_bytes(
        Some(source.city_database().expect("city database")),
        Some(source.asn_database().expect("asn database")),
    )
    .expect("geo databases");
    let snapshot = Snapshot::with_geo(config, Arc::new(geo)).expect("snapshot");
    (dir, Arc::new(snapshot))
}
