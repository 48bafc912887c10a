//! What the micro-benchmarks share: the reference world (26 POPs) and a generated
//! one of any size, the geo databases (the real ones from `../shared/geodata/` when
//! present, else the sample data), and client networks drawn from real ASN data.

#![allow(dead_code)] // Each bench uses its own part of this module.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use maxminddb::{Reader, WithinOptions};
use meridian::config::Config;
use meridian::geo::GeoDb;
use meridian::snapshot::Snapshot;

/// The reference world's config file, relative to the crate.
const WORLD: &str = "examples/world/meridian.yaml";
/// Where the real databases live, relative to the crate.
const SHARED_GEODATA: &str = "../shared/geodata";
/// The sample databases shipped with the crate.
const SAMPLE_CITY: &str = "geodata/sample-city.mmdb";
const SAMPLE_ASN: &str = "geodata/sample-asn.mmdb";

fn crate_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// The City and ASN database paths: the real ones if present, else the sample
/// data (with a message, so a run without them is not mistaken for a real one).
pub fn geodata_paths() -> (PathBuf, PathBuf, &'static str) {
    let city = crate_path(SHARED_GEODATA).join("GeoLite2-City.mmdb");
    let asn = crate_path(SHARED_GEODATA).join("ASN.mmdb");
    if city.exists() && asn.exists() {
        (city, asn, "real")
    } else {
        eprintln!(
            "note: {} not found; benchmarking on the sample geodata instead",
            city.display()
        );
        (crate_path(SAMPLE_CITY), crate_path(SAMPLE_ASN), "sample")
    }
}

/// The geo databases, opened as `serve` opens them.
pub fn geo() -> (Arc<GeoDb>, &'static str) {
    let (city, asn, kind) = geodata_paths();
    let geo = GeoDb::open(Some(&city), Some(&asn)).expect("geo databases open");
    (Arc::new(geo), kind)
}

/// The reference world's config text with its POP list replaced by `pops` POPs
/// jittered deterministically around its 26 cities (26 gives the world as written).
pub fn world_text(pops: usize) -> String {
    let text = std::fs::read_to_string(crate_path(WORLD)).expect("reference world");
    if pops == 26 {
        return text;
    }
    let config = parse(&text);
    let start = text.find("\npops:\n").expect("pops section") + 1;
    let end = text.find("\ndomains:\n").expect("domains section") + 1;
    let mut generated = String::from("pops:\n");
    let mut state = 0x5eed_u64;
    for i in 0..pops {
        let base = &config.pops[i % config.pops.len()];
        // Up to about +-3 degrees: a metro area's worth of distinct sites.
        let lat = (base.coordinates.latitude + jitter(&mut state) * 3.0).clamp(-89.0, 89.0);
        let lon = base.coordinates.longitude + jitter(&mut state) * 3.0;
        let lon = if lon > 180.0 {
            lon - 360.0
        } else if lon < -180.0 {
            lon + 360.0
        } else {
            lon
        };
        let isp = base
            .isp
            .map(|id| format!(", isp: {}", config.isps[usize::from(id.0)].name))
            .unwrap_or_default();
        let continent = base
            .continent
            .map(|c| format!(", continent: {c}"))
            .unwrap_or_default();
        // The first round keeps the reference ids, which the rest of the config names.
        let id = if i < config.pops.len() {
            base.id.clone()
        } else {
            format!("{}-{i}", base.id)
        };
        generated.push_str(&format!(
            "  - {{id: {id}, country: {country}{continent}, latitude: {lat:.4}, longitude: {lon:.4}{isp}, \
             addresses: [10.{hi}.{lo}.1, 10.{hi}.{lo}.2, \"2001:db8:{i:x}::1\"], capacity: 10000}}\n",
            country = base.country,
            hi = i >> 8,
            lo = i & 0xff,
        ));
    }
    format!("{}{}{}", &text[..start], generated, &text[end..])
}

/// A uniform draw in [-1, 1) from SplitMix64: the same world on every machine.
fn jitter(state: &mut u64) -> f64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z >> 11) as f64 / (1_u64 << 52) as f64 - 1.0
}

/// Parses a world's text as if it were the reference world's file (so its zone
/// path resolves).
pub fn parse(text: &str) -> Config {
    Config::parse(text, &crate_path(WORLD)).unwrap_or_else(|e| panic!("world config:\n{e}"))
}

/// A snapshot of a world of `pops` POPs on the given databases.
pub fn snapshot(pops: usize, geo: &Arc<GeoDb>) -> Arc<Snapshot> {
    let config = parse(&world_text(pops));
    Arc::new(Snapshot::with_geo(config, Arc::clone(geo)).expect("snapshot builds"))
}

/// About `count` client subnets (IPv4 /24 and IPv6 /56 base addresses, one in
/// eight IPv6) spread evenly over the networks of the ASN database.
pub fn clients(count: usize) -> Vec<IpAddr> {
    let (_, asn, _) = geodata_paths();
    let reader = Reader::open_readfile(&asn).expect("ASN database");
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    for (cidr, out) in [("0.0.0.0/0", &mut v4), ("2000::/3", &mut v6)] {
        let cidr = cidr.parse().expect("network");
        for network in reader
            .within(cidr, WithinOptions::default())
            .expect("ASN networks")
            .flatten()
        {
            if let Ok(network) = network.network() {
                out.push(network.ip());
            }
        }
    }
    let want_v6 = count / 8;
    let mut out = spread(&v4, count - want_v6);
    out.extend(spread(&v6, want_v6));
    out
}

fn spread(from: &[IpAddr], count: usize) -> Vec<IpAddr> {
    if from.is_empty() || count == 0 {
        return Vec::new();
    }
    let step = (from.len() / count).max(1);
    from.iter().step_by(step).take(count).copied().collect()
}
