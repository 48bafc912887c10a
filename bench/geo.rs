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
//! - `compile/*-ipv4-table`: compiling each database's IPv4 table, which a reload
//!   that finds the databases changed does on top of reading them.

#[path = "common/mod.rs"]
mod common;

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use maxminddb::Reader;
use meridian::geo::table::Ipv4Table;

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

fn compile(c: &mut Criterion) {
    let (city, asn, kind) = common::geodata_paths();
    let city = Reader::open_readfile(city).expect("City database");
    let asn = Reader::open_readfile(asn).expect("ASN database");
    let mut group = c.benchmark_group("compile");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));
    group.bench_function(format!("city-ipv4-table-{kind}"), |b| {
        b.iter(|| black_box(Ipv4Table::city(&city).expect("City table")))
    });
    group.bench_function(format!("asn-ipv4-table-{kind}"), |b| {
        b.iter(|| black_box(Ipv4Table::asn(&asn).expect("ASN table")))
    });
    group.finish();
}

criterion_group!(benches, locate, networks_ipv4_random, compile);
criterion_main!(benches);
