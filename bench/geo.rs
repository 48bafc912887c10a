//! A geo lookup (City and ASN) on the real databases in `../shared/geodata/`, or on
//! the sample data if they are absent.
//!
//! `cargo bench --bench geo`

#[path = "common/mod.rs"]
mod common;

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};

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

criterion_group!(benches, locate);
criterion_main!(benches);
