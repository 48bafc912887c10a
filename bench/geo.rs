//! A geo lookup (City and ASN) on the real databases in `../shared/geodata/`, or on
//! the sample data if they are absent.
//!
//! `cargo bench --bench geo`
//!
//! - `locate-*`: the full lookup (both networks and the City record's fields) for
//!   4,096 client subnets from ASN.mmdb, cycled: the CPU caches hold their paths.
//! - `networks-ipv4-random-{tree,table}`: what the answer path asks on a location
//!   cache miss (both networks, no fields) for a million random IPv4 addresses,
//!   by walking both trees and from the compiled IPv4 tables: clients spread over
//!   the whole space, as a busy resolver population is.
//! - `networks-ipv6-subnets-{tree,table}`: the same for a million IPv6 /56s, each
//!   drawn at random inside an IPv6 network of ASN.mmdb (as resolvers cut clients
//!   to a /56), by walking both trees and as the answer path asks: from the
//!   compiled IPv6 tables, walking where they do not answer.
//! - `compile/*-ipv{4,6}-table`: compiling each database's tables, which a reload
//!   that finds the databases changed does on top of reading them.

#[path = "common/mod.rs"]
mod common;

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use ipnetwork::IpNetwork;
use maxminddb::{Reader, WithinOptions};
use meridian::geo::records::Numbering;
use meridian::geo::table::Ipv4Table;
use meridian::geo::table6::Ipv6Table;

/// Random addresses looked up: more distinct paths than any CPU cache holds.
const RANDOM_ADDRESSES: usize = 1 << 20;

fn locate(c: &mut Criterion) {
    let (geo, kind) = common::geo();
    let clients = common::clients(4096);
    let mut next = 0;
    c.bench_function(&format!("locate-{kind}-geodata"), |b| {
        b.iter(|| {
            next = (next + 1) % clients.len();
            black_box(geo.locate(black_box(clients[next])))
        })
    });
}

fn networks_ipv4_random(c: &mut Criterion) {
    let (geo, kind) = common::geo();
    let mut state = 0x5eed_u64;
    let addresses: Vec<IpAddr> = (0..RANDOM_ADDRESSES)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            IpAddr::V4(Ipv4Addr::from((state >> 16) as u32))
        })
        .collect();
    let mut next = 0;
    c.bench_function(&format!("networks-ipv4-random-tree-{kind}"), |b| {
        b.iter(|| {
            next = (next + 1) % addresses.len();
            black_box(geo.locate_networks_by_tree(black_box(addresses[next])))
        })
    });
    c.bench_function(&format!("networks-ipv4-random-table-{kind}"), |b| {
        b.iter(|| {
            next = (next + 1) % addresses.len();
            black_box(geo.locate_networks(black_box(addresses[next])))
        })
    });
}

fn networks_ipv6_subnets(c: &mut Criterion) {
    let (geo, kind) = common::geo();
    let (_, asn, _) = common::geodata_paths();
    let reader = Reader::open_readfile(asn).expect("ASN database");
    let global = "2000::/3".parse().expect("network");
    let networks: Vec<(u128, u128)> = reader
        .within(global, WithinOptions::default())
        .expect("ASN networks")
        .flatten()
        .filter_map(|result| match result.network() {
            Ok(IpNetwork::V6(n)) => Some((u128::from(n.network()), u128::from(n.broadcast()))),
            _ => None,
        })
        .collect();
    let mut state = 0x5eed_u64;
    let addresses: Vec<IpAddr> = (0..RANDOM_ADDRESSES)
        .map(|i| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let (first, last) = networks[i % networks.len()];
            let inside =
                (u128::from(state) << 64 | u128::from(state.rotate_left(17))) & (last - first);
            IpAddr::V6(Ipv6Addr::from((first | inside) & !(u128::MAX >> 56)))
        })
        .collect();
    let mut next = 0;
    c.bench_function(&format!("networks-ipv6-subnets-tree-{kind}"), |b| {
        b.iter(|| {
            next = (next + 1) % addresses.len();
            black_box(geo.locate_networks_by_tree(black_box(addresses[next])))
        })
    });
    c.bench_function(&format!("networks-ipv6-subnets-table-{kind}"), |b| {
        b.iter(|| {
            next = (next + 1) % addresses.len();
            black_box(geo.locate_networks(black_box(addresses[next])))
        })
    });
}

fn compile(c: &mut Criterion) {
    let (city, asn, kind) = common::geodata_paths();
    let city = Reader::open_readfile(city).expect("City database");
    let asn = Reader::open_readfile(asn).expect("ASN database");
    let mut group = c.benchmark_group("compile");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));
    group.bench_function(format!("city-ipv4-table-{kind}"), |b| {
        b.iter(|| black_box(Ipv4Table::city(&city, &mut Numbering::default()).expect("City table")))
    });
    group.bench_function(format!("asn-ipv4-table-{kind}"), |b| {
        b.iter(|| black_box(Ipv4Table::asn(&asn).expect("ASN table")))
    });
    group.bench_function(format!("city-ipv6-table-{kind}"), |b| {
        b.iter(|| black_box(Ipv6Table::city(&city, &mut Numbering::default()).expect("City table")))
    });
    group.bench_function(format!("asn-ipv6-table-{kind}"), |b| {
        b.iter(|| black_box(Ipv6Table::asn(&asn).expect("ASN table")))
    });
    group.finish();
}

criterion_group!(
    benches,
    locate,
    networks_ipv4_random,
    networks_ipv6_subnets,
    compile
);
criterion_main!(benches);
