//! Rankings by address: per snapshot, the IPv4 space and the IPv6 space (by /64)
//! cut into ranges in which every address has the same ranking and ISP, as gdnsd
//! compiles its own map from network to datacenter list.
//!
//! [`RankingCache`](super::cache::RankingCache) keeps a ranking per City record
//! and needs three lookups before it can read one: the City table (22 MB for
//! GeoLite2-City, so a CPU cache miss on nearly every query), the ISP ranges and
//! the record's slot. But neighbouring networks rarely share a City record and
//! often share their best POPs: at the 26 POPs of `examples/world`, the City
//! database's 3.6 million networks crossed with the ISPs' ranges merge into 1.3
//! million ranges of about 1,950 distinct rankings (12.5 MB). One search of
//! those answers what the three lookups did.
//!
//! Merging widens ECS scopes too: every address of the widest aligned block
//! around the client inside its range gets the same ranking from the same ISP,
//! hence the same answer whatever health does to the POPs, unless health takes
//! so many of the ranked POPs out that the decision must scan them all; that
//! rare decision is left to the per-record path, which scopes it by the City
//! network. So are the addresses the tables leave to the tree walk.
//!
//! The price is the build, which ranks every distinct place of the City
//! database (about 150,000) for each coverage and family the domains ask for,
//! and for each ISP whose clients are there. A POP's score is its distance plus
//! a term that depends only on its ISP, so among the POPs of one ISP (or of none)
//! the best are the nearest: found by a dot product of unit vectors, with no
//! trigonometry, then scored exactly. About 2 seconds at 26 POPs (most of it
//! decoding the City records), 5 at 3,200 (2.3 million ranges, 53,700 rankings,
//! 23 MB). Past [`MAX_POP_COLUMNS`], or past 65,535 distinct classes, nothing is
//! built and every decision takes the per-record path.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use rustc_hash::FxHashMap;

use super::cache::{RANKED_POPS, Ranking, slots_index};
use super::distance::Point;
use super::ranges::{RangeKey, Ranges, Warming};
use super::{Family, Router};
use crate::config::{Coverage, IspId, PopId};
use crate::geo::records::UNNUMBERED;
use crate::geo::{Code, GeoDb, Location};

/// The most POPs times (coverage, family) columns ranked per place: about 15
/// seconds of build on one core at 150,000 places.
pub const MAX_POP_COLUMNS: usize = 20_000;

/// A range value that no class has: its addresses take the per-record path.
const NOT_SERVED: u16 = u16::MAX;
/// A (coverage, family) that has no column.
const NO_COLUMN: u8 = u8::MAX;
/// Addresses warmed together: a receive batch's worth.
const WARM_CHUNK: usize = 32;
/// Warming steps: the top table's entry, a bucket's table's or two, the window;
/// deeper tables (rare) are left to the lookup.
const WARM_STAGES: usize = 4;

/// An IPv6 address's key: its /64.
fn key6(addr: Ipv6Addr) -> u64 {
    (u128::from(addr) >> 64) as u64
}

/// The IPv4 space cut into ranges of one class each: an ISP and a ranking for
/// each (coverage, family) built.
#[derive(Debug)]
pub struct RangeRankings {
    /// Each IPv4 range's class, or [`NOT_SERVED`].
    ranges: Ranges<u32>,
    /// Each IPv6 range's class, by an address's top 64 bits, if built.
    ranges6: Option<Ranges<u64>>,
    /// Each (coverage, family)'s column (by `slots_index` with no ISP), or
    /// [`NO_COLUMN`].
    columns: [u8; 6],
    /// Columns built.
    width: usize,
    /// Each class's ranking per column, as indexes into `rankings`.
    class_rankings: Box<[u32]>,
    /// Each class's ISP.
    class_isps: Box<[Option<IspId>]>,
    /// The distinct rankings.
    rankings: Box<[Ranking]>,
}

/// What the ranges hold for one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RangeAnswer {
    /// The address's ranking for the coverage and family asked for.
    pub ranking: Ranking,
    /// The address's ISP.
    pub isp: Option<IspId>,
    /// The widest aligned block around the address with the same ranking and
    /// ISP, as a prefix length.
    pub prefix: u8,
}

/// Why no ranges were built; decisions then take the per-record path.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NotBuilt {
    /// No City database, or its IPv4 part not compiled into a table.
    #[error("no compiled City table")]
    NoCityTable,
    /// ISPs are configured but the ASN database's IPv4 part is not compiled.
    #[error("ISPs configured without a compiled ASN table")]
    NoIspRanges,
    /// No domain asks for a ranking.
    #[error("no domains")]
    NoDomains,
    /// Ranking every place would take too long.
    #[error("{pops} POPs x {columns} coverage and family columns is over {max}")]
    TooManyPops {
        /// POPs in the config.
        pops: usize,
        /// Coverage and family pairs to rank for.
        columns: usize,
        /// The most allowed.
        max: usize,
    },
    /// More distinct (ISP, rankings) classes than a range can name.
    #[error("over {} distinct rankings by range", NOT_SERVED)]
    TooManyClasses,
}

impl RangeRankings {
    /// Builds the ranges for `router`'s POPs and ISPs over `geo`'s City and ISP
    /// tables, with a column for each of `coverages` in both families, if the
    /// POPs times the columns are at most `max_pop_columns`
    /// ([`MAX_POP_COLUMNS`] when serving).
    pub fn build(
        router: &Router,
        geo: &GeoDb,
        coverages: impl IntoIterator<Item = Coverage>,
        max_pop_columns: usize,
    ) -> Result<Self, NotBuilt> {
        let mut columns = [NO_COLUMN; 6];
        let mut keys = Vec::new();
        for coverage in coverages {
            for family in [Family::V4, Family::V6] {
                let column = &mut columns[slots_index(None, coverage, family)];
                if *column == NO_COLUMN {
                    *column = keys.len() as u8;
                    keys.push((coverage, family));
                }
            }
        }
        if keys.is_empty() {
            return Err(NotBuilt::NoDomains);
        }
        if router.pops.len() * keys.len() > max_pop_columns {
            return Err(NotBuilt::TooManyPops {
                pops: router.pops.len(),
                columns: keys.len(),
                max: max_pop_columns,
            });
        }
        let city = geo.city_ipv4_ranges().ok_or(NotBuilt::NoCityTable)?;
        let city = city.map(|(start, record)| (u32::from(start), Some(record)));
        let isps = match (router.asn_isp.is_empty(), &router.isp_ranges) {
            (true, _) => vec![(0, Some(None))],
            (false, Some(ranges)) => ranges.iter().collect(),
            (false, None) => return Err(NotBuilt::NoIspRanges),
        };
        let mut classes = Classes::new(router, geo, keys);
        let ranges = cut(city, isps, &mut classes, |key| {
            IpAddr::V4(Ipv4Addr::from(key))
        })?;
        // IPv6 where the tables allow; its clients take the per-record path
        // otherwise.
        let isps6 = match (router.asn_isp.is_empty(), &router.isp_ranges6) {
            (true, _) => Some(vec![(0, Some(None))]),
            (false, ranges) => ranges.as_ref().map(|r| r.iter().collect()),
        };
        let ranges6 = match (geo.city_ipv6_ranges(), isps6) {
            (Some(city), Some(isps)) => Some(cut(city, isps, &mut classes, |key| {
                IpAddr::V6(Ipv6Addr::from(u128::from(key) << 64))
            })?),
            _ => None,
        };
        Ok(Self {
            ranges,
            ranges6,
            columns,
            width: classes.keys.len(),
            class_rankings: classes.class_rankings.into_boxed_slice(),
            class_isps: classes.class_isps.into_boxed_slice(),
            rankings: classes.rankings.into_boxed_slice(),
        })
    }

    /// The ranking, ISP and scope for `addr`; `None` where the per-record path
    /// must decide (no column for the coverage and family, a range the build
    /// could not rank or an IPv6 address without IPv6 ranges).
    #[inline]
    pub fn get(&self, addr: IpAddr, coverage: Coverage, family: Family) -> Option<RangeAnswer> {
        let column = self.columns[slots_index(None, coverage, family)];
        if column == NO_COLUMN {
            return None;
        }
        let (class, prefix) = match addr {
            IpAddr::V4(addr) => self.ranges.get(u32::from(addr)),
            IpAddr::V6(addr) => self.ranges6.as_ref()?.get(key6(addr)),
        };
        if class == NOT_SERVED {
            return None;
        }
        let class = usize::from(class);
        let ranking = self.class_rankings[class * self.width + usize::from(column)];
        Some(RangeAnswer {
            ranking: self.rankings[ranking as usize],
            isp: self.class_isps[class],
            prefix,
        })
    }

    /// Starts loading the lines [`RangeRankings::get`] will read for each
    /// address, a stage of each lookup at a time across them all (index entry,
    /// its table's entry, the window), so that their cache misses overlap where
    /// lookups one after another would each wait on theirs in turn.
    pub fn warm(&self, addrs: &[IpAddr]) {
        for addrs in addrs.chunks(WARM_CHUNK) {
            let mut stages = [Warming::Start; WARM_CHUNK];
            for _ in 0..WARM_STAGES {
                for (addr, stage) in addrs.iter().zip(&mut stages) {
                    *stage = match *addr {
                        IpAddr::V4(addr) => self.ranges.warm(u32::from(addr), *stage),
                        IpAddr::V6(addr) => self
                            .ranges6
                            .as_ref()
                            .map_or(Warming::Done, |r| r.warm(key6(addr), *stage)),
                    };
                }
            }
        }
    }

    /// How many ranges there are, IPv4 and IPv6.
    pub fn len(&self) -> usize {
        self.ranges.len() + self.ranges6.as_ref().map_or(0, Ranges::len)
    }

    /// Whether there are none; never, since the ranges cover the IPv4 space.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// How many distinct rankings the ranges name.
    pub fn rankings(&self) -> usize {
        self.rankings.len()
    }

    /// Heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        self.ranges.heap_bytes()
            + self.ranges6.as_ref().map_or(0, Ranges::heap_bytes)
            + size_of_val(&*self.class_rankings)
            + size_of_val(&*self.class_isps)
            + size_of_val(&*self.rankings)
    }
}

/// Cuts a key space into ranges of one class from the City ranges (a record
/// number if any, `None` if not known) and the ISP ranges (`None` if not known),
/// both tiling it in order; `address` gives the address of a key.
fn cut<K: RangeKey>(
    city: impl Iterator<Item = (K, Option<Option<u32>>)>,
    isps: Vec<(K, Option<Option<IspId>>)>,
    classes: &mut Classes<'_>,
    address: impl Fn(K) -> IpAddr,
) -> Result<Ranges<K>, NotBuilt> {
    let mut starts = Vec::new();
    let mut city = city.peekable();
    let mut isps = isps.into_iter().peekable();
    let (mut record, mut isp) = (Some(None), Some(None));
    // Consecutive ranges often differ only in what the other side cuts.
    let mut last = None;
    loop {
        let next = match (city.peek(), isps.peek()) {
            (None, None) => break,
            (Some(c), None) => c.0,
            (None, Some(i)) => i.0,
            (Some(c), Some(i)) => c.0.min(i.0),
        };
        while let Some(&(_, found)) = city.peek().filter(|c| c.0 == next) {
            record = found;
            city.next();
        }
        while let Some(&(_, found)) = isps.peek().filter(|i| i.0 == next) {
            isp = found;
            isps.next();
        }
        let class = match last {
            Some((key, class)) if key == (record, isp) => class,
            _ => classes.of(address(next), record, isp)?,
        };
        last = Some(((record, isp), class));
        starts.push((next, class));
    }
    Ok(Ranges::new(starts, NOT_SERVED))
}

/// Where a City record is, as far as a ranking reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Place {
    coordinates: Option<(u64, u64)>,
    country: Option<Code>,
    continent: Option<Code>,
}

/// The classes met while building, each computed once.
struct Classes<'a> {
    router: &'a Router,
    geo: &'a GeoDb,
    keys: Vec<(Coverage, Family)>,
    /// Each key's eligible POPs by ISP, for the pruned scan; `None` where the
    /// distance weighs nothing and only the full scan orders the POPs.
    groups: Option<Vec<Vec<Group>>>,
    /// Per (record, ISP) met: its class.
    by_record: FxHashMap<(Option<u32>, Option<IspId>), u16>,
    /// Per (place, ISP) ranked: its class.
    by_place: FxHashMap<(Place, Option<IspId>), u16>,
    /// Per class key (ISP and rankings): its number.
    by_class: FxHashMap<(Option<IspId>, Box<[u32]>), u16>,
    distinct: FxHashMap<Ranking, u32>,
    rankings: Vec<Ranking>,
    class_rankings: Vec<u32>,
    class_isps: Vec<Option<IspId>>,
}

impl<'a> Classes<'a> {
    fn new(router: &'a Router, geo: &'a GeoDb, keys: Vec<(Coverage, Family)>) -> Self {
        let groups = (router.weights.distance > 0.0).then(|| {
            keys.iter()
                .map(|&(coverage, family)| Group::of(router, coverage, family))
                .collect()
        });
        Self {
            router,
            geo,
            keys,
            groups,
            by_record: FxHashMap::default(),
            by_place: FxHashMap::default(),
            by_class: FxHashMap::default(),
            distinct: FxHashMap::default(),
            rankings: Vec::new(),
            class_rankings: Vec::new(),
            class_isps: Vec::new(),
        }
    }

    /// The class of an address `at` in City record `record` (if any; `None` if
    /// not known) and of ISP `isp` (`None` if not known).
    fn of(
        &mut self,
        at: IpAddr,
        record: Option<Option<u32>>,
        isp: Option<Option<IspId>>,
    ) -> Result<u16, NotBuilt> {
        let (Some(record), Some(isp)) = (record.filter(|r| *r != Some(UNNUMBERED)), isp) else {
            return Ok(NOT_SERVED);
        };
        if let Some(class) = self.by_record.get(&(record, isp)) {
            return Ok(*class);
        }
        let location = match record {
            Some(_) => self.geo.locate_city(at),
            None => Location::default(),
        };
        let place = Place {
            coordinates: location
                .coordinates
                .map(|c| (c.latitude.to_bits(), c.longitude.to_bits())),
            country: location.country,
            continent: location.continent,
        };
        let class = match self.by_place.get(&(place, isp)) {
            Some(class) => *class,
            None => {
                let class = self.rank(&location, isp)?;
                self.by_place.insert((place, isp), class);
                class
            }
        };
        self.by_record.insert((record, isp), class);
        Ok(class)
    }

    /// The class of a place for clients of `isp`, ranked for every key.
    fn rank(&mut self, location: &Location, isp: Option<IspId>) -> Result<u16, NotBuilt> {
        let mut columns = Vec::with_capacity(self.keys.len());
        for (column, &(coverage, family)) in self.keys.iter().enumerate() {
            let ranking = match (&self.groups, location.coordinates) {
                (Some(groups), Some(coordinates)) => {
                    let point = Point::new(coordinates);
                    let unit = point.unit();
                    let mut candidates = Vec::new();
                    let mut eligible = 0;
                    for group in &groups[column] {
                        eligible += group.ids.len();
                        for id in group.nearest(unit) {
                            let total = self.router.terms(id, &point, isp).total;
                            candidates.push((total, id));
                        }
                    }
                    Ranking::of_best(
                        true,
                        location.country,
                        location.continent,
                        candidates,
                        eligible,
                    )
                }
                _ => self.router.ranking(location, isp, coverage, family),
            };
            let next = self.rankings.len() as u32;
            columns.push(*self.distinct.entry(ranking).or_insert_with(|| {
                self.rankings.push(ranking);
                next
            }));
        }
        let columns = columns.into_boxed_slice();
        let next = self.class_isps.len();
        if let Some(class) = self.by_class.get(&(isp, columns.clone())) {
            return Ok(*class);
        }
        let class = u16::try_from(next)
            .ok()
            .filter(|c| *c != NOT_SERVED)
            .ok_or(NotBuilt::TooManyClasses)?;
        self.class_rankings.extend_from_slice(&columns);
        self.class_isps.push(isp);
        self.by_class.insert((isp, columns), class);
        Ok(class)
    }
}

/// The POPs eligible for one coverage and family that share an ISP (or have
/// none): any client's ISP stands in the same relation to all of them, so their
/// score grows with distance alone and the best of them are the nearest.
struct Group {
    ids: Vec<PopId>,
    /// Each POP's unit vector ([`Point::unit`]).
    units: Vec<[f64; 3]>,
}

/// POPs kept per group beyond a ranking's length: the nearest by dot product
/// and by haversine distance can differ for POPs within rounding of each other.
const SLACK: usize = 2;

impl Group {
    /// The groups of POPs eligible for `coverage` and `family`.
    fn of(router: &Router, coverage: Coverage, family: Family) -> Vec<Group> {
        let mut groups: Vec<(Option<IspId>, Group)> = Vec::new();
        for (i, pop) in router.pops.iter().enumerate() {
            let id = PopId(i as u16);
            if !router.eligible(id, coverage, family) {
                continue;
            }
            let at = match groups.iter().position(|(isp, _)| *isp == pop.isp) {
                Some(at) => at,
                None => {
                    let empty = Group {
                        ids: Vec::new(),
                        units: Vec::new(),
                    };
                    groups.push((pop.isp, empty));
                    groups.len() - 1
                }
            };
            groups[at].1.ids.push(id);
            groups[at].1.units.push(pop.point.unit());
        }
        groups.into_iter().map(|(_, group)| group).collect()
    }

    /// The group's POPs nearest to the point with unit vector `at`: the
    /// [`RANKED_POPS`] nearest and [`SLACK`] more (all, in a small group), the
    /// POP listed first among equals.
    fn nearest(&self, at: [f64; 3]) -> impl Iterator<Item = PopId> + '_ {
        const KEEP: usize = RANKED_POPS + SLACK;
        // Largest dot product (nearest) first.
        let mut top = [(f64::NEG_INFINITY, PopId(0)); KEEP];
        let mut kept = 0;
        for (id, unit) in self.ids.iter().zip(&self.units) {
            let dot = unit[0] * at[0] + unit[1] * at[1] + unit[2] * at[2];
            if kept == KEEP && dot <= top[KEEP - 1].0 {
                continue;
            }
            // After every equal one: they were listed first.
            let place = top[..kept].partition_point(|t| t.0 >= dot);
            kept = (kept + 1).min(KEEP);
            top.copy_within(place..kept - 1, place + 1);
            top[place] = (dot, *id);
        }
        top.into_iter().take(kept).map(|(_, id)| id)
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    use super::*;
    use crate::health::{LiveView, PopLive};
    use crate::routing::cache::RankingCache;
    use crate::routing::cache::tests::{Draw, geodata, live_view, world};
    use crate::routing::{Basis, Client, Decision};

    /// Decisions from the ranges are the scan's, but for a scope at least as
    /// wide; every address of a widened scope gets the same decision.
    #[test]
    fn ranged_decisions_agree_with_the_scan_and_their_scopes_hold() {
        let mut draw = Draw(11);
        let config = world(&mut draw);
        let geo = geodata(&mut draw);
        let router = Router::new(&config, &geo);
        let coverages = || config.domains.iter().map(|d| d.coverage);
        let too_many = RangeRankings::build(&router, &geo, coverages(), 300 * 6 - 1);
        assert!(
            matches!(too_many, Err(NotBuilt::TooManyPops { .. })),
            "{too_many:?}"
        );
        let by_range = RangeRankings::build(&router, &geo, coverages(), 300 * 6).expect("built");
        let cache = RankingCache::new(geo.city_records(), config.isps.len()).with_ranges(by_range);
        let (mut scored, mut widened, mut widened6) = (0, 0, 0);
        for _ in 0..300 {
            let live = live_view(&mut draw, config.pops.len());
            for _ in 0..25 {
                // 100.64.0.0/10, or 2400::/24.
                let v6 = draw.below(2) == 0;
                let (addr, bits) = if v6 {
                    let addr = (0x2400_u128 << 112) | (u128::from(draw.next()) >> 24 << 64);
                    (IpAddr::V6(Ipv6Addr::from(addr)), 128)
                } else {
                    let addr = 0x6440_0000 | (draw.below(1 << 22) as u32);
                    (IpAddr::V4(Ipv4Addr::from(addr)), 32)
                };
                let ecs = draw.below(5) != 0;
                let client = |addr: IpAddr| {
                    if ecs {
                        Client::from_ecs(addr, if v6 { 56 } else { 24 }, &config.ecs)
                    } else {
                        Client::from_source(addr)
                    }
                };
                let domain = &config.domains[draw.below(3) as usize];
                let family = if draw.below(2) == 0 {
                    Family::V4
                } else {
                    Family::V6
                };
                let scan = |addr| router.decide(&geo, domain, family, &client(addr), &live);
                let expected = scan(addr);
                let got = router.decide_cached(&geo, &cache, domain, family, &client(addr), &live);
                let context = format!("{addr} ecs {ecs} {family:?} {}", domain.name);
                assert!(
                    got.scope <= expected.scope,
                    "{context}: {got:?} {expected:?}"
                );
                assert_eq!(
                    Decision {
                        scope: expected.scope,
                        ..got
                    },
                    expected,
                    "{context}"
                );
                scored += usize::from(expected.basis == Basis::Score);
                if got.scope < expected.scope {
                    widened += 1;
                    widened6 += usize::from(v6);
                    // The block's first and last addresses and one between.
                    let key = |addr: IpAddr| match addr {
                        IpAddr::V4(a) => u128::from(u32::from(a)),
                        IpAddr::V6(a) => u128::from(a),
                    };
                    let at = |key: u128| match addr {
                        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from(key as u32)),
                        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(key)),
                    };
                    let outside = (1_u128 << (bits - u32::from(got.scope))) - 1;
                    let first = key(addr) & !outside;
                    let between =
                        (u128::from(draw.next()) << 64 | u128::from(draw.next())) & outside;
                    for other in [first, first | outside, first | between] {
                        let other = scan(at(other));
                        assert_eq!(
                            Decision {
                                scope: got.scope,
                                ..other
                            },
                            got,
                            "{context}: /{} holds {other:?}",
                            got.scope
                        );
                    }
                }
            }
        }
        // Scored decisions and widened scopes, not only overrides and the fallback.
        assert!(scored > 2000, "{scored}");
        assert!(widened > 100 && widened6 > 30, "{widened} {widened6}");
    }

    /// When health leaves fewer than three of a ranking's POPs, the decision is a
    /// scan from the client's own coordinates, which the range's other records
    /// do not share: it is scoped by the City network, not the range.
    #[test]
    fn a_ranking_cut_short_by_health_is_scoped_by_its_city_network() {
        let mut draw = Draw(11);
        let config = world(&mut draw);
        let geo = geodata(&mut draw);
        let router = Router::new(&config, &geo);
        let coverages = config.domains.iter().map(|d| d.coverage);
        let by_range = RangeRankings::build(&router, &geo, coverages, 300 * 6).expect("built");
        let cache = RankingCache::new(geo.city_records(), config.isps.len()).with_ranges(by_range);
        let domain = &config.domains[0];
        let calm = LiveView::all_static(config.pops.len());
        let mut checked = 0;
        for subnet in (0x6440_0000_u32..0x6480_0000).step_by(256) {
            let client = Client::from_ecs(IpAddr::V4(Ipv4Addr::from(subnet)), 24, &config.ecs);
            let scan = router.decide(&geo, domain, Family::V4, &client, &calm);
            let ranged = router.decide_cached(&geo, &cache, domain, Family::V4, &client, &calm);
            if scan.basis != Basis::Score || ranged.scope >= scan.scope {
                continue;
            }
            // Only the POP farthest from the client is up: none of its ranking.
            let location = geo.locate(client.addr);
            let isp = router.client_isp(client.addr, &location);
            let farthest = router
                .score_all(&location, isp.isp, domain, Family::V4)
                .into_iter()
                .filter(|(_, _, eligible)| *eligible)
                .filter_map(|(id, terms, _)| Some((terms?.total, id)))
                .max_by(|a, b| a.0.total_cmp(&b.0))
                .map(|(_, id)| id)
                .expect("an eligible POP");
            let live = LiveView::new(
                (0..config.pops.len())
                    .map(|i| PopLive {
                        usable: i == farthest.index(),
                        ..PopLive::default()
                    })
                    .collect(),
            );
            let expected = router.decide(&geo, domain, Family::V4, &client, &live);
            let got = router.decide_cached(&geo, &cache, domain, Family::V4, &client, &live);
            assert_eq!(got, expected, "{client:?}");
            assert_eq!(got.first, Some(farthest), "{client:?}");
            checked += 1;
        }
        assert!(checked > 20, "{checked}");
    }
}
