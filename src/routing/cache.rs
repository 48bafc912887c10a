//! Rankings cached per client location, so that a decision costs the same at
//! thousands of POPs as at a few dozen.
//!
//! Scoring scans every POP: about 1 µs at 26 POPs, over 100 µs at 3,200. But the
//! ranking depends only on the City record the client falls in (coordinates,
//! country, continent), the client's ISP, the domain's coverage and the address
//! family. So the order of the POPs eligible by config is computed once per such
//! key and kept here, with the record's country and continent, which lets a hit
//! skip decoding the City record too. Everything live is applied per query on the
//! cached order: usable (health and drains), shedding, fail-open, degraded TTLs;
//! network overrides are checked on the address before the cache is consulted,
//! country and continent overrides on the cached fields, exactly as without the
//! cache.
//!
//! The geo tables number the City records densely ([`crate::geo::records`]), so
//! the key is an index: one array of slots per (ISP, coverage, family) in use,
//! a slot per record, no hashing and no eviction. A slot names one of the
//! distinct rankings, which are few at tens of POPs (clients in a region share
//! their nearest POPs, and the coordinates are not part of a ranking: about
//! 1,900 over GeoLite2-City's IPv4 networks at 26 POPs), so they stay in the CPU's
//! cache; at thousands of POPs they are tens of thousands. A hit reads one slot
//! and one ranking, both without a lock. The memory is bounded by the slots
//! (4 bytes a record for each ISP, coverage and family asked for) and the
//! rankings they name (at most one a filled slot).
//!
//! The cache belongs to the snapshots it is right for: a reload that changes the
//! POPs, weights, ISPs or databases starts with an empty one, so nothing stale can
//! be served; one that changes none of them keeps it (`Snapshot::with_geo_after`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};

use crate::config::{Coverage, IspId, PopId};
use crate::geo::Code;

use super::Family;
use super::range_rankings::RangeRankings;

/// POPs kept per ranking, best first. A decision needs three usable ones; when
/// health has taken so many of these out that fewer than three remain, the
/// decision scans every POP as if uncached.
pub const RANKED_POPS: usize = 8;

/// Coverage regions and address families: the other dimensions of the slot
/// arrays (see `slots_index`).
const COVERAGES: usize = 3;
const FAMILIES: usize = 2;

/// Cached rankings of one snapshot.
pub struct RankingCache {
    /// City records numbered, the length of every slot array.
    records: usize,
    /// Slot arrays by (ISP or none, coverage, family), made on first use: with
    /// many ISPs most combinations are never asked for. A slot holds 0 (nothing
    /// cached) or one more than the index of its ranking in `rankings`.
    slots: Box<[OnceLock<Box<[AtomicU32]>>]>,
    /// The distinct rankings, appended to by fills while readers index them.
    rankings: boxcar::Vec<Ranking>,
    /// Each distinct ranking's index in `rankings`; only fills take the lock.
    distinct: Mutex<HashMap<Ranking, u32>>,
    /// Rankings by IPv4 address range, consulted before the slots, if built.
    by_range: Option<RangeRankings>,
}

impl std::fmt::Debug for RankingCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RankingCache")
            .field("records", &self.records)
            .field("rankings", &self.rankings.count())
            .field("by_range", &self.by_range.as_ref().map(RangeRankings::len))
            .finish()
    }
}

/// A City record's country and continent and the best POPs for it, eligible by
/// config (admin up, in the coverage, with an address of the family), best first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ranking {
    /// Whether the record has coordinates: the POPs were scored. Without, the
    /// order is empty and overrides or the fallback decide.
    pub located: bool,
    pub country: Option<Code>,
    pub continent: Option<Code>,
    order: [PopId; RANKED_POPS],
    len: u8,
    /// Every eligible POP is in `order`: no scan can find another.
    complete: bool,
}

impl RankingCache {
    /// An empty cache for a City database of `records` numbered records and a
    /// config of `isps` ISPs.
    pub fn new(records: usize, isps: usize) -> Self {
        Self {
            records,
            slots: (0..(isps + 1) * COVERAGES * FAMILIES)
                .map(|_| OnceLock::new())
                .collect(),
            rankings: boxcar::Vec::new(),
            distinct: Mutex::default(),
            by_range: None,
        }
    }

    /// The cache with rankings by IPv4 address range too.
    pub fn with_ranges(self, by_range: RangeRankings) -> Self {
        Self {
            by_range: Some(by_range),
            ..self
        }
    }

    /// The rankings by IPv4 address range, if built.
    #[inline]
    pub fn by_range(&self) -> Option<&RangeRankings> {
        self.by_range.as_ref()
    }

    /// The ranking cached for City record number `record`, the client's ISP, the
    /// domain's coverage and the family asked for.
    #[inline]
    pub fn get(
        &self,
        record: u32,
        isp: Option<IspId>,
        coverage: Coverage,
        family: Family,
    ) -> Option<Ranking> {
        let slots = self.slots.get(slots_index(isp, coverage, family))?.get()?;
        // Acquire: pairs with the fill's release, though the ranking it names was
        // published by the append before it.
        let slot = slots.get(record as usize)?.load(Ordering::Acquire);
        let index = slot.checked_sub(1)?;
        self.rankings.get(index as usize).copied()
    }

    /// Keeps `ranking` for the key [`RankingCache::get`] takes; a record number
    /// out of range (unnumbered) is not kept.
    pub fn insert(
        &self,
        record: u32,
        isp: Option<IspId>,
        coverage: Coverage,
        family: Family,
        ranking: Ranking,
    ) {
        let records = self.records;
        let Some(slots) = self.slots.get(slots_index(isp, coverage, family)) else {
            return;
        };
        if record as usize >= records {
            return;
        }
        let index = {
            let mut distinct = self.distinct.lock().unwrap_or_else(|e| e.into_inner());
            *distinct
                .entry(ranking)
                .or_insert_with(|| self.rankings.push(ranking) as u32)
        };
        let slots = slots.get_or_init(|| zeroed_slots(records));
        slots[record as usize].store(index + 1, Ordering::Release);
    }

    /// Distinct rankings held.
    pub fn len(&self) -> usize {
        self.rankings.count()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.rankings.is_empty()
    }
}

/// Where the slots of a key are in [`RankingCache::slots`]; past its end for an
/// ISP the cache was not made for.
pub(super) fn slots_index(isp: Option<IspId>, coverage: Coverage, family: Family) -> usize {
    let isp = isp.map_or(0, |id| usize::from(id.0) + 1);
    // Spelled out, so that a new coverage or family fails to compile here rather
    // than index another key's slots.
    let coverage = match coverage {
        Coverage::Global => 0,
        Coverage::MainlandChina => 1,
        Coverage::GlobalExcludingMainlandChina => 2,
    };
    let family = match family {
        Family::V4 => 0,
        Family::V6 => 1,
    };
    (isp * COVERAGES + coverage) * FAMILIES + family
}

/// `len` slots holding 0, from zeroed memory: where the allocator maps fresh
/// pages for an array this size, only those a fill writes become resident
/// (slots for an ISP's clients, all in a few countries, take a few pages of the
/// array); where it reuses freed memory, it clears the whole array.
fn zeroed_slots(len: usize) -> Box<[AtomicU32]> {
    // Its documentation guarantees the size and bit validity; the alignment is
    // its size, as `u32`'s is on the targets Meridian builds for: checked here.
    const { assert!(align_of::<AtomicU32>() == align_of::<u32>()) };
    let zeros = vec![0_u32; len].into_boxed_slice();
    // SAFETY: `AtomicU32` has the same size, bit validity and (checked above)
    // alignment as `u32`, so the allocation is a valid `[AtomicU32]` of the same
    // length, and the box frees it with the same layout.
    unsafe { Box::from_raw(Box::into_raw(zeros) as *mut [AtomicU32]) }
}

impl Ranking {
    /// A ranking from location fields and the scored eligible POPs, in any order.
    pub(super) fn new(
        located: bool,
        country: Option<Code>,
        continent: Option<Code>,
        scored: Vec<(f64, PopId)>,
    ) -> Self {
        let eligible = scored.len();
        Self::of_best(located, country, continent, scored, eligible)
    }

    /// A ranking from location fields and some of the `eligible` POPs scored, in
    /// any order, among them every one of the [`RANKED_POPS`] best.
    pub(super) fn of_best(
        located: bool,
        country: Option<Code>,
        continent: Option<Code>,
        mut scored: Vec<(f64, PopId)>,
        eligible: usize,
    ) -> Self {
        // Lower score first, ties to the POP listed first: the order `best_three`
        // keeps.
        let by_score = |a: &(f64, PopId), b: &(f64, PopId)| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1));
        let complete = eligible <= RANKED_POPS;
        if scored.len() > RANKED_POPS {
            scored.select_nth_unstable_by(RANKED_POPS - 1, by_score);
            scored.truncate(RANKED_POPS);
        }
        scored.sort_unstable_by(by_score);
        let mut order = [PopId(0); RANKED_POPS];
        for (slot, (_, id)) in order.iter_mut().zip(&scored) {
            *slot = *id;
        }
        Self {
            located,
            country,
            continent,
            order,
            len: scored.len() as u8,
            complete,
        }
    }

    /// The first three POPs of the order that pass `usable`; None if the order was
    /// cut short and fewer than three of it pass (then only a full scan can say).
    pub(super) fn first_three(&self, usable: impl Fn(PopId) -> bool) -> Option<super::Ranked> {
        let mut picked: super::Ranked = [None; 3];
        let mut found = 0;
        for id in &self.order[..usize::from(self.len)] {
            if usable(*id) {
                picked[found] = Some(*id);
                found += 1;
                if found == 3 {
                    return Some(picked);
                }
            }
        }
        self.complete.then_some(picked)
    }
}

#[cfg(test)]
pub(super) mod tests {
    use std::net::{IpAddr, Ipv4Addr};
    use std::path::Path;

    use super::*;
    use crate::config::Config;
    use crate::geo::GeoDb;
    use crate::geo::build::{AsnEntry, CityEntry, Source};
    use crate::health::{LiveView, PopLive};
    use crate::routing::{Client, Family, Router};
    use ipnet::IpNet;

    /// SplitMix64: the same "random" worlds on every run.
    pub(in crate::routing) struct Draw(pub(in crate::routing) u64);

    impl Draw {
        pub(in crate::routing) fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }

        pub(in crate::routing) fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }

        /// Uniform in [lo, hi).
        fn within(&mut self, lo: f64, hi: f64) -> f64 {
            lo + (self.next() >> 11) as f64 / (1_u64 << 53) as f64 * (hi - lo)
        }
    }

    const COUNTRIES: [(&str, &str); 8] = [
        ("DE", "EU"),
        ("CN", "AS"),
        ("JP", "AS"),
        ("US", "NA"),
        ("NZ", "OC"),
        ("BR", "SA"),
        ("ZA", "AF"),
        ("FR", "EU"),
    ];
    const ASNS: [u32; 5] = [4134, 4837, 9808, 3320, 64_500];

    /// 300 POPs (far more than a ranking keeps) on three ISPs or none, some down,
    /// some without IPv6, mainland China among them; one domain per coverage;
    /// network, country and continent overrides.
    pub(in crate::routing) fn world(draw: &mut Draw) -> Config {
        let mut text = String::from(
            "version: 1\nzones:\n  - {origin: cdn.test., file: cdn.test.zone}\ncdn-suffix: cdn.test.\n\
             isps:\n  telecom: [4134]\n  unicom: [4837]\n  mobile: [9808]\npops:\n",
        );
        for i in 0..300 {
            let (country, continent) = COUNTRIES[draw.below(COUNTRIES.len() as u64) as usize];
            let isp =
                ["", ", isp: telecom", ", isp: unicom", ", isp: mobile"][draw.below(4) as usize];
            let admin = if draw.below(10) == 0 {
                ", admin: down"
            } else {
                ""
            };
            let v6 = if draw.below(3) == 0 {
                String::new()
            } else {
                format!(", \"2001:db8:{i:x}::1\"")
            };
            text.push_str(&format!(
                "  - {{id: p{i}, country: {country}, continent: {continent}, latitude: {:.3}, \
                 longitude: {:.3}{isp}{admin}, addresses: [10.9.{}.{}{v6}]}}\n",
                draw.within(-60.0, 70.0),
                draw.within(-180.0, 180.0),
                i >> 8,
                i & 0xff,
            ));
        }
        text.push_str(
            "domains:\n  - {name: www.example.com, origins: [{host: origin.example.com}]}\n  \
             - {name: cn.example.com, coverage: mainland-china, origins: [{host: origin.example.com}]}\n  \
             - {name: intl.example.com, coverage: global-excluding-mainland-china, origins: [{host: origin.example.com}], answer: {pops: 2}}\n\
             overrides:\n  networks:\n    - {network: 100.64.0.0/16, pops: [p1, p2]}\n  \
             countries:\n    NZ: [p3, p4]\n  continents:\n    SA: [p5]\n",
        );
        Config::parse(&text, Path::new("cache-test.yaml"))
            .unwrap_or_else(|e| panic!("test world is invalid:\n{e}"))
    }

    /// 200 City networks (/18s of 100.64.0.0/10, some with no coordinates, a
    /// third next to their neighbour) and ASN networks that cut across them, in
    /// runs of one ASN; the same in IPv6, in 2400::/24.
    pub(in crate::routing) fn geodata(draw: &mut Draw) -> GeoDb {
        let mut cities: Vec<CityEntry> = Vec::new();
        for i in 0..200_u32 {
            let network = format!("100.{}.{}.0/{}", 64 + i / 4, (i % 4) * 64, 18)
                .parse()
                .expect("network");
            if let Some(last) = cities.last().filter(|_| draw.below(3) == 0) {
                // A different record (the tree would merge equal neighbours), a
                // kilometre away.
                let neighbour = CityEntry {
                    network,
                    latitude: last.latitude.map(|l| l + 0.01),
                    ..last.clone()
                };
                cities.push(neighbour);
                continue;
            }
            let (country, continent) = COUNTRIES[draw.below(COUNTRIES.len() as u64) as usize];
            let located = draw.below(8) != 0;
            cities.push(CityEntry {
                network,
                city: None,
                country: country.into(),
                continent: continent.into(),
                latitude: located.then(|| draw.within(-60.0, 70.0)),
                longitude: located.then(|| draw.within(-180.0, 180.0)),
            });
        }
        let mut asn = ASNS[0];
        let asns: Vec<AsnEntry> = (0..400_u32)
            .map(|i| {
                if draw.below(8) == 0 {
                    asn = ASNS[draw.below(ASNS.len() as u64) as usize];
                }
                AsnEntry {
                    network: format!("100.{}.{}.0/20", 64 + i / 8, (i % 8) * 32)
                        .parse()
                        .expect("network"),
                    asn,
                    organization: None,
                }
            })
            .collect();
        // The same networks again in IPv6: 100.64.0.0/10 as 2400::/24, a /18
        // as a /32.
        let v6 = |network: &IpNet| {
            let IpNet::V4(network) = network else {
                unreachable!("IPv4 networks above")
            };
            let offset = u128::from(u32::from(network.addr()) - 0x6440_0000);
            let addr = std::net::Ipv6Addr::from((0x2400_u128 << 112) | (offset << 82));
            IpNet::new(IpAddr::V6(addr), network.prefix_len() + 14).expect("network")
        };
        let cities6: Vec<CityEntry> = cities
            .iter()
            .map(|city| CityEntry {
                network: v6(&city.network),
                ..city.clone()
            })
            .collect();
        let asns6: Vec<AsnEntry> = asns
            .iter()
            .map(|entry| AsnEntry {
                network: v6(&entry.network),
                ..entry.clone()
            })
            .collect();
        cities.extend(cities6);
        let mut asns = asns;
        asns.extend(asns6);
        let source = Source { cities, asns };
        GeoDb::from_bytes(
            Some(source.city_database().expect("city database")),
            Some(source.asn_database().expect("asn database")),
        )
        .expect("geo databases")
    }

    /// Calm, or a random share of POPs down, shedding or degraded; now and then all
    /// down, so that decisions fail open.
    pub(in crate::routing) fn live_view(draw: &mut Draw, pops: usize) -> LiveView {
        let mode = draw.below(6);
        LiveView::new(
            (0..pops)
                .map(|_| match mode {
                    0 => PopLive::default(),
                    1 => PopLive {
                        usable: false,
                        ..PopLive::default()
                    },
                    _ => PopLive {
                        usable: draw.below(u64::from(mode as u32)) != 0,
                        shed: [0.0, 0.0, 0.3, 1.0][draw.below(4) as usize],
                        degraded: draw.below(4) == 0,
                        ..PopLive::default()
                    },
                })
                .collect(),
        )
    }

    #[test]
    fn cached_and_uncached_decisions_agree() {
        let mut draw = Draw(7);
        let config = world(&mut draw);
        let geo = geodata(&mut draw);
        let router = Router::new(&config, &geo);
        let cache = RankingCache::new(geo.city_records(), config.isps.len());
        let mut scored = 0;
        for _ in 0..400 {
            let live = live_view(&mut draw, config.pops.len());
            for _ in 0..25 {
                let addr = Ipv4Addr::from(0x6440_0000 | (draw.below(1 << 22) as u32));
                let client = if draw.below(5) == 0 {
                    Client::from_source(IpAddr::V4(addr))
                } else {
                    Client::from_ecs(IpAddr::V4(addr), 24, &config.ecs)
                };
                let domain = &config.domains[draw.below(3) as usize];
                let family = if draw.below(2) == 0 {
                    Family::V4
                } else {
                    Family::V6
                };
                let expected = router.decide(&geo, domain, family, &client, &live);
                // A miss or a hit: both must agree with the scan.
                for _ in 0..2 {
                    let cached = router.decide_cached(&geo, &cache, domain, family, &client, &live);
                    assert_eq!(cached, expected, "{client:?} {family:?} {}", domain.name);
                }
                scored += usize::from(expected.basis == crate::routing::Basis::Score);
            }
        }
        // The test covers the cached case, not only overrides and the fallback.
        assert!(scored > 3000, "{scored}");
        assert!(!cache.is_empty());
    }

    #[test]
    fn records_share_their_ranking_and_keys_stay_apart() {
        let cache = RankingCache::new(1_000, 2);
        let near = Ranking::new(true, None, None, vec![(1.0, PopId(0)), (2.0, PopId(1))]);
        let far = Ranking::new(true, None, None, vec![(1.0, PopId(1)), (2.0, PopId(0))]);
        for record in 0..1_000 {
            cache.insert(record, None, Coverage::Global, Family::V4, near);
        }
        // A thousand records, one distinct ranking.
        assert_eq!(cache.len(), 1);
        cache.insert(7, Some(IspId(1)), Coverage::Global, Family::V4, far);
        cache.insert(8, None, Coverage::MainlandChina, Family::V6, far);
        assert_eq!(cache.len(), 2);
        let get = |record, isp, coverage, family| cache.get(record, isp, coverage, family);
        assert_eq!(get(7, None, Coverage::Global, Family::V4), Some(near));
        assert_eq!(
            get(7, Some(IspId(1)), Coverage::Global, Family::V4),
            Some(far)
        );
        assert_eq!(get(7, Some(IspId(0)), Coverage::Global, Family::V4), None);
        assert_eq!(get(7, None, Coverage::Global, Family::V6), None);
        assert_eq!(get(8, None, Coverage::MainlandChina, Family::V6), Some(far));
        assert_eq!(
            get(8, None, Coverage::GlobalExcludingMainlandChina, Family::V6),
            None
        );
        // An unnumbered record, or an ISP the cache was not made for, is not kept.
        cache.insert(1_000, None, Coverage::Global, Family::V4, far);
        cache.insert(
            crate::geo::records::UNNUMBERED,
            None,
            Coverage::Global,
            Family::V4,
            far,
        );
        cache.insert(3, Some(IspId(2)), Coverage::Global, Family::V4, far);
        assert_eq!(get(1_000, None, Coverage::Global, Family::V4), None);
        assert_eq!(get(3, Some(IspId(2)), Coverage::Global, Family::V4), None);
    }

    #[test]
    fn a_short_order_defers_to_a_scan() {
        let scored: Vec<(f64, PopId)> = (0..20).map(|i| (f64::from(20 - i), PopId(i))).collect();
        let ranking = Ranking::new(true, None, None, scored);
        // Best first, ties to the POP listed first.
        assert_eq!(
            ranking.first_three(|_| true),
            Some([Some(PopId(19)), Some(PopId(18)), Some(PopId(17))])
        );
        // Only two of the eight kept are usable: cannot tell without a scan.
        assert_eq!(ranking.first_three(|id| id.0 >= 18), None);
        // An order holding every eligible POP answers whatever the health.
        let complete = Ranking::new(true, None, None, vec![(1.0, PopId(4)), (1.0, PopId(2))]);
        assert_eq!(
            complete.first_three(|_| true),
            Some([Some(PopId(2)), Some(PopId(4)), None])
        );
        assert_eq!(complete.first_three(|_| false), Some([None, None, None]));
    }
}
