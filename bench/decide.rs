//! One routing decision (geo lookup, overrides, scoring, live view) at 26 POPs, the
//! reference world, and at 3,200 POPs, a generated world of the same cities; and
//! the scoring alone, with the client already located.
//!
//! `cargo bench --bench decide`

#[path = "common/mod.rs"]
mod common;

use std::hint::black_box;
use std::net::IpAddr;

use criterion::{Criterion, criterion_group, criterion_main};
use hickory_proto::rr::Name;
use meridian::geo::Location;
use meridian::health::LiveView;
use meridian::routing::{Client, Family};

/// Distinct client subnets cycled through, so that the geo lookup and the caches
/// see a realistic spread rather than one hot address.
const CLIENTS: usize = 4096;

fn decide(c: &mut Criterion) {
    let (geo, kind) = common::geo();
    let addrs = common::clients(CLIENTS);
    let mut group = c.benchmark_group(format!("decide-{kind}-geodata"));
    for pops in [26, 3200] {
        let snapshot = common::snapshot(pops, &geo);
        let name = Name::from_ascii("www.example.com.cdn.test.").expect("name");
        let id = snapshot.domain_for(&name).expect("geo-routed name");
        let clients: Vec<(Client, Family)> = addrs
            .iter()
            .map(|addr| {
                let (prefix, family) = match addr {
                    IpAddr::V4(_) => (24, Family::V4),
                    IpAddr::V6(_) => (56, Family::V6),
                };
                (
                    Client::from_ecs(*addr, prefix, &snapshot.config.ecs),
                    family,
                )
            })
            .collect();
        let mut next = 0;
        group.bench_function(format!("{pops}-pops"), |b| {
            b.iter(|| {
                next = (next + 1) % clients.len();
                let (client, family) = &clients[next];
                black_box(snapshot.decide(id, *family, black_box(client)))
            })
        });

        // Scoring alone, every POP scanned: what the ranking cache saves.
        let located: Vec<(Location, Client, Family)> = clients
            .iter()
            .map(|(client, family)| (geo.locate(client.addr), *client, *family))
            .collect();
        let live = LiveView::all_static(snapshot.config.pops.len());
        let domain = snapshot.domain(id);
        let mut next = 0;
        group.bench_function(format!("{pops}-pops-score-uncached"), |b| {
            b.iter(|| {
                next = (next + 1) % located.len();
                let (location, client, family) = &located[next];
                black_box(
                    snapshot
                        .router
                        .decide_at(location, domain, *family, client, &live),
                )
            })
        });
    }
    group.finish();
}

criterion_group!(benches, decide);
criterion_main!(benches);
