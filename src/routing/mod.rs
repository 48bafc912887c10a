//! The decision engine: given a client (its ECS subnet or resolver address) and an
//! accelerated domain, choose the POP(s) to answer with and how widely the answer
//! may be cached (the ECS scope).
//!
//! Order of say: a subnet override, then a country or continent override, then the
//! score, then the configured fallback for clients with no known location. The
//! score is one number per POP in kilometre equivalents, lower is better:
//! `distance * weight - isp bonus + isp penalty`; there is no chain of filters to
//! reason about, only eligibility (admin state, the domain's coverage region, an
//! address of the asked family).
//!
//! Live health joins in last: only usable POPs are ranked (if none is, the
//! decision fails open and ranks them all, as gdnsd and Route 53 do); a POP
//! shedding load sends a share of its clients, chosen by a fixed hash of the
//! client subnet, to the runner-up; and answers involving a degraded POP get a
//! shorter TTL.
//!
//! Deciding is a pure function of the router (built once per snapshot), the geo
//! databases, the client and the [`LiveView`]: no I/O, no clock, no allocation.

pub mod cache;
pub mod distance;
pub mod isp_ranges;
pub mod range_rankings;
pub mod ranges;

use rustc_hash::FxHashMap;
use std::net::IpAddr;

use ipnetwork::IpNetwork;
use serde::Serialize;

use crate::config::{
    AdminState, Config, Coverage, Domain, EcsPolicy, Fallback, IspId, NetworkOverride, PopId,
    Weights,
};
use crate::geo::{Code, GeoDb, Location, subnet_cache};
use crate::health::LiveView;
use cache::{Ranking, RankingCache};
use distance::Point;
use isp_ranges::{Ipv4IspRanges, Ipv6IspRanges};
use range_rankings::RangeAnswer;

/// Address family of the records asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// A records.
    V4,
    /// AAAA records.
    V6,
}

/// The client as Meridian sees it: an address and how many of its leading bits are
/// meaningful (the ECS source prefix after the policy cap, or the whole address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Client {
    /// The address located, with the bits past `prefix` cleared.
    pub addr: IpAddr,
    /// Meaningful leading bits of `addr`.
    pub prefix: u8,
    /// Whether the address came from EDNS Client Subnet (then a scope is returned).
    pub ecs: bool,
}

impl Client {
    /// The resolver's own address: no ECS, every bit meaningful.
    pub fn from_source(addr: IpAddr) -> Self {
        let addr = canonical(addr);
        Self {
            addr,
            prefix: full_length(addr),
            ecs: false,
        }
    }

    /// The client of a query: its ECS subnet when that says anything once capped
    /// by policy, else the resolver itself (RFC 7871 section 7.1.2: SOURCE /0
    /// means "use the resolver's address"; a policy cap of 0 means the same).
    pub fn for_query(subnet: Option<(IpAddr, u8)>, source: IpAddr, policy: &EcsPolicy) -> Self {
        match subnet {
            Some((addr, prefix)) if prefix.min(policy.cap(addr)) > 0 => {
                Self::from_ecs(addr, prefix, policy)
            }
            _ => Self::from_source(source),
        }
    }

    /// An ECS subnet, capped by policy so that Meridian never decides (nor asks
    /// resolvers to cache) on more bits than it means to.
    pub fn from_ecs(addr: IpAddr, source_prefix: u8, policy: &EcsPolicy) -> Self {
        let prefix = source_prefix.min(policy.cap(addr)).min(full_length(addr));
        Self {
            addr: mask(addr, prefix),
            prefix,
            ecs: true,
        }
    }
}

/// The client's ISP as a decision reads it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientIsp {
    /// The configured ISP the client's address belongs to, if any.
    pub isp: Option<IspId>,
    /// The prefix length of a block around the client in which every address
    /// has this same ISP (0 when no ISP is configured): the ECS scope an answer
    /// that read the ISP needs at least.
    pub prefix: u8,
}

/// Why the chosen POPs were chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Basis {
    /// A subnet override covers the client.
    NetworkOverride {
        #[serde(serialize_with = "display")]
        network: IpNetwork,
    },
    /// The client's country has an override.
    CountryOverride {
        #[serde(serialize_with = "display")]
        country: Code,
    },
    /// The client's continent has an override.
    ContinentOverride {
        #[serde(serialize_with = "display")]
        continent: Code,
    },
    /// Best score from the client's location.
    Score,
    /// The client's location is unknown: the configured fallback.
    Fallback,
}

fn display<T: std::fmt::Display, S: serde::Serializer>(value: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(value)
}

/// The outcome for one query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// The POP whose addresses answer; None if no eligible POP has an address of the
    /// family asked for (the answer is then NODATA).
    pub first: Option<PopId>,
    /// The runner-up, added to the answer when the domain asks for two POPs.
    pub second: Option<PopId>,
    /// ECS SCOPE PREFIX-LENGTH: the shortest prefix of the client's address for
    /// which this decision cannot change. 0 when the query carried no ECS.
    pub scope: u8,
    pub basis: Basis,
    /// TTL of the answer records: the domain's, capped at `health.degraded-ttl`
    /// when a POP in the answer or the one it was shed from is degraded, or the
    /// decision failed open, so that clients come back soon.
    pub ttl: u32,
    /// No eligible POP was usable, so health was ignored (counted in the metrics).
    pub fail_open: bool,
    /// The best POP was shedding load: which one, and whether this client moved.
    pub shed: Option<Shed>,
}

/// Shedding consulted for one decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Shed {
    /// The best-ranked POP, which sheds a share of its clients.
    #[serde(skip)]
    pub from: PopId,
    /// Whether this client's subnet is in the share moved to the runner-up.
    pub moved: bool,
}

/// The three best POPs, best first: the third becomes the runner-up of a client
/// shed from the first.
type Ranked = [Option<PopId>; 3];

/// A cached ranking for a decision, and the databases to find the client's
/// coordinates in should health leave too few of its POPs for a decision.
struct Cached<'a> {
    ranking: Ranking,
    geo: &'a GeoDb,
}

/// How a POP stands with the client's ISP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum IspRelation {
    /// The POP is on the client's ISP.
    Same,
    /// The POP is on another known ISP, and the client's ISP is known.
    Other,
    /// Either side has no known ISP: no bonus, no penalty.
    Neutral,
}

/// One POP's score, term by term.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Terms {
    pub distance_km: f64,
    pub isp: IspRelation,
    /// The ISP term in km (negative is a bonus).
    pub isp_km: f64,
    /// The score: lower is better.
    pub total: f64,
}

/// A POP as the router needs it, prepared once per snapshot.
#[derive(Debug, Clone)]
struct PopEntry {
    point: Point,
    isp: Option<IspId>,
    region: crate::config::Region,
    admin: AdminState,
    has_v4: bool,
    has_v6: bool,
}

/// An override map of the config, rehashed for lookups on the answer path.
fn fx_map(map: &std::collections::HashMap<Code, Vec<PopId>>) -> FxHashMap<Code, Vec<PopId>> {
    map.iter()
        .map(|(code, pops)| (*code, pops.clone()))
        .collect()
}

/// Decides for every query; built once per snapshot from the config.
#[derive(Debug, Clone)]
pub struct Router {
    pops: Vec<PopEntry>,
    /// Probed on every decision: hashed with Fx, not SipHash (the keys come from
    /// the config, so no client can fill a chain).
    asn_isp: FxHashMap<u32, IspId>,
    /// The ISP of every IPv4 address, compiled from the ASN database and
    /// `asn_isp`: one lookup in a few cached lines where the ASN table is 5 MB.
    /// None without ISPs, or without an ASN database compiled into a table.
    isp_ranges: Option<Ipv4IspRanges>,
    /// The same for IPv6, by /64s, except in the ranges the ASN database's IPv6
    /// table leaves to the tree walk, whose ISP is read from the ASN.
    isp_ranges6: Option<Ipv6IspRanges>,
    weights: Weights,
    /// Longest prefix first, so the first containing network is the most specific.
    networks: Vec<NetworkOverride>,
    countries: FxHashMap<Code, Vec<PopId>>,
    continents: FxHashMap<Code, Vec<PopId>>,
    country_pops: FxHashMap<Code, Vec<PopId>>,
    fallback: Fallback,
    fallback_point: Option<Point>,
    degraded_ttl: u32,
}

impl Router {
    /// Prepares the config's POPs, ISPs and overrides for deciding, with the
    /// ISPs' IPv4 and IPv6 ranges in `geo`'s ASN database.
    pub fn new(config: &Config, geo: &GeoDb) -> Self {
        let pops = config
            .pops
            .iter()
            .map(|p| PopEntry {
                point: Point::new(p.coordinates),
                isp: p.isp,
                region: p.region,
                admin: p.admin,
                has_v4: !p.ipv4.is_empty(),
                has_v6: !p.ipv6.is_empty(),
            })
            .collect();
        let asn_isp = config
            .isps
            .iter()
            .enumerate()
            .flat_map(|(i, isp)| isp.asns.iter().map(move |asn| (*asn, IspId(i as u16))))
            .collect::<FxHashMap<_, _>>();
        let isp_of = |asn| asn_isp.get(&asn).copied();
        let (isp_ranges, isp_ranges6) = if asn_isp.is_empty() {
            (None, None)
        } else {
            (
                geo.asn_ipv4_ranges()
                    .map(|ranges| Ipv4IspRanges::ipv4(ranges, isp_of)),
                geo.asn_ipv6_ranges()
                    .map(|ranges| Ipv6IspRanges::new(ranges, isp_of)),
            )
        };
        let mut networks = config.overrides.networks.clone();
        networks.sort_by_key(|n| std::cmp::Reverse(n.network.prefix()));
        let mut country_pops: FxHashMap<Code, Vec<PopId>> = FxHashMap::default();
        for (i, pop) in config.pops.iter().enumerate() {
            country_pops
                .entry(pop.country)
                .or_default()
                .push(PopId(i as u16));
        }
        let fallback_point = match &config.unknown_location {
            Fallback::Coordinates(c) => Some(Point::new(*c)),
            _ => None,
        };
        Self {
            pops,
            asn_isp,
            isp_ranges,
            isp_ranges6,
            weights: config.scoring,
            networks,
            countries: fx_map(&config.overrides.countries),
            continents: fx_map(&config.overrides.continents),
            country_pops,
            fallback: config.unknown_location.clone(),
            fallback_point,
            degraded_ttl: config.health.degraded_ttl,
        }
    }

    /// Decides which POP(s) answer `client` for `domain`, given live health.
    pub fn decide(
        &self,
        geo: &GeoDb,
        domain: &Domain,
        family: Family,
        client: &Client,
        live: &LiveView,
    ) -> Decision {
        let location = geo.locate(client.addr);
        self.decide_at(&location, domain, family, client, live)
    }

    /// The client's ISP as decisions read it, and the prefix length inside which
    /// every address has the same: from the ISPs' ranges where they know it, else
    /// from the ASN `location` holds. No ISP and prefix 0 when no ISP is
    /// configured, whatever the ASN: then no decision depends on it.
    pub fn client_isp(&self, addr: IpAddr, location: &Location) -> ClientIsp {
        self.known_isp(addr)
            .unwrap_or_else(|| self.isp_of_location(location))
    }

    /// [`Router::client_isp`] where it needs no ASN: without ISPs, or from the
    /// ranges where they know the ISP; `None` where it reads the ASN.
    #[inline]
    fn known_isp(&self, addr: IpAddr) -> Option<ClientIsp> {
        if self.asn_isp.is_empty() {
            return Some(ClientIsp::default());
        }
        let (isp, prefix) = match addr {
            IpAddr::V4(addr) => self.isp_ranges.as_ref()?.get(addr)?,
            IpAddr::V6(addr) => self.isp_ranges6.as_ref()?.get(addr)?,
        };
        Some(ClientIsp { isp, prefix })
    }

    /// The ISP of the ASN `location` holds, and the ASN network's prefix length.
    fn isp_of_location(&self, location: &Location) -> ClientIsp {
        ClientIsp {
            isp: location.asn.and_then(|asn| self.isp_of(asn)),
            prefix: location.asn_prefix,
        }
    }

    /// Decides as [`Router::decide`] does, the same decision, with the ranking of
    /// POPs eligible by config taken from `cache` (and computed into it on a miss):
    /// the cost no longer grows with the number of POPs, and a hit skips decoding
    /// the City record. Live health is applied to the cached order per query.
    pub fn decide_cached(
        &self,
        geo: &GeoDb,
        cache: &RankingCache,
        domain: &Domain,
        family: Family,
        client: &Client,
        live: &LiveView,
    ) -> Decision {
        if let Some(by_range) = cache.by_range()
            && let Some(found) = by_range.get(client.addr, domain.coverage, family)
            && let Some(decision) = self.decide_by_range(found, geo, domain, family, client, live)
        {
            return decision;
        }
        let known = self.known_isp(client.addr);
        let mut location = subnet_cache::locate_networks(geo, client.addr, known.is_none());
        let isp = known.unwrap_or_else(|| self.isp_of_location(&location));
        let Some(city_record) = location.city_record else {
            // Not in the City database: no fields to decode, overrides or the
            // fallback decide.
            return self.decide_with(&location, isp, None, domain, family, client, live);
        };
        let ranking = match cache.get(city_record, isp.isp, domain.coverage, family) {
            Some(ranking) => ranking,
            None => {
                let located = geo.locate(client.addr);
                let ranking = self.ranking(&located, isp.isp, domain.coverage, family);
                cache.insert(city_record, isp.isp, domain.coverage, family, ranking);
                location.coordinates = located.coordinates;
                ranking
            }
        };
        location.country = ranking.country;
        location.continent = ranking.continent;
        let cached = Cached { ranking, geo };
        self.decide_with(&location, isp, Some(&cached), domain, family, client, live)
    }

    /// Decides as [`Router::decide_cached`] does from what the ranges by address
    /// hold for the client; `None` if health has cut the ranking short, which
    /// only a scan from the client's coordinates can decide, scoped by its City
    /// network rather than the range.
    fn decide_by_range(
        &self,
        found: RangeAnswer,
        geo: &GeoDb,
        domain: &Domain,
        family: Family,
        client: &Client,
        live: &LiveView,
    ) -> Option<Decision> {
        let ranking = found.ranking;
        if ranking.located
            && !live.all_usable()
            && ranking
                .first_three(|id| self.eligible(id, domain.coverage, family) && live.usable(id))
                .is_none()
        {
            return None;
        }
        // Every address of the block has this ranking and ISP: the block is the
        // network the decision read. A country or continent override does not
        // read the ISP, so the City network is as good a scope for it, and wider
        // where ISPs' ranges cut the block: the override's scope is the wider of
        // the two (`scope` takes the City prefix alone for an override).
        let overridden = |code: Option<Code>, lists: &FxHashMap<Code, Vec<PopId>>| {
            code.is_some_and(|code| lists.contains_key(&code))
        };
        let city_prefix = if overridden(ranking.country, &self.countries)
            || overridden(ranking.continent, &self.continents)
        {
            let city = subnet_cache::locate_networks(geo, client.addr, false).city_prefix;
            found.prefix.min(city)
        } else {
            found.prefix
        };
        let location = Location {
            country: ranking.country,
            continent: ranking.continent,
            city_prefix,
            ..Location::default()
        };
        let isp = ClientIsp {
            isp: found.isp,
            prefix: found.prefix,
        };
        let cached = Cached { ranking, geo };
        Some(self.decide_with(&location, isp, Some(&cached), domain, family, client, live))
    }

    /// The ranking of POPs eligible by config for a located client, to cache.
    fn ranking(
        &self,
        location: &Location,
        client_isp: Option<IspId>,
        coverage: Coverage,
        family: Family,
    ) -> Ranking {
        let scored = match location.coordinates {
            Some(coordinates) => {
                let point = Point::new(coordinates);
                (0..self.pops.len())
                    .map(|i| PopId(i as u16))
                    .filter(|id| self.eligible(*id, coverage, family))
                    .map(|id| (self.terms(id, &point, client_isp).total, id))
                    .collect()
            }
            // Never scored: overrides or the fallback decide.
            None => Vec::new(),
        };
        Ranking::new(
            location.coordinates.is_some(),
            location.country,
            location.continent,
            scored,
        )
    }

    /// Decides for an already located client.
    pub fn decide_at(
        &self,
        location: &Location,
        domain: &Domain,
        family: Family,
        client: &Client,
        live: &LiveView,
    ) -> Decision {
        let isp = self.client_isp(client.addr, location);
        self.decide_with(location, isp, None, domain, family, client, live)
    }

    /// Decides for a located client, with the scored order from the cache if given.
    #[allow(clippy::too_many_arguments)]
    fn decide_with(
        &self,
        location: &Location,
        isp: ClientIsp,
        cached: Option<&Cached<'_>>,
        domain: &Domain,
        family: Family,
        client: &Client,
        live: &LiveView,
    ) -> Decision {
        // With every POP usable, health filters nothing: skip it.
        let health = (!live.all_usable()).then_some(live);
        let (mut ranked, mut basis) =
            self.rank(location, isp.isp, cached, domain, family, client, health);
        let mut fail_open = false;
        if ranked[0].is_none() && health.is_some() {
            let (open, open_basis) =
                self.rank(location, isp.isp, cached, domain, family, client, None);
            if open[0].is_some() {
                (ranked, basis, fail_open) = (open, open_basis, true);
            }
        }
        let mut scope = if client.ecs {
            self.scope(client, location, isp, basis)
        } else {
            0
        };
        let [mut first, mut second, third] = ranked;
        let mut shed = None;
        if !live.is_calm()
            && let (Some(best), Some(runner_up)) = (first, second)
        {
            let share = live.shed(best);
            if share > 0.0 {
                let moved = share >= 1.0 || shed_draw(client, domain) < f64::from(share);
                if share < 1.0 && client.ecs {
                    // Which side of the share a client falls on depends on every
                    // bit of its subnet.
                    scope = client.prefix;
                }
                if moved {
                    // Go to the first of the next two that still takes new clients
                    // (a drained or saturated runner-up must not inherit them); if
                    // neither does, the runner-up all the same. The shedding POP
                    // is still up, only loaded: the last failover.
                    let target = [Some(runner_up), third]
                        .into_iter()
                        .flatten()
                        .find(|id| live.shed(*id) < 1.0)
                        .unwrap_or(runner_up);
                    let next = [Some(runner_up), third, Some(best)]
                        .into_iter()
                        .flatten()
                        .find(|id| *id != target);
                    (first, second) = (Some(target), next);
                }
                shed = Some(Shed { from: best, moved });
            }
        }
        let mut answered = [first, second]
            .into_iter()
            .take(usize::from(domain.answer_pops.max(1)))
            .flatten();
        let degraded = fail_open
            || (!live.is_calm()
                && (shed.is_some_and(|s| live.degraded(s.from))
                    || answered.any(|id| live.degraded(id))));
        Decision {
            first,
            second,
            scope,
            basis,
            ttl: if degraded {
                domain.ttl.min(self.degraded_ttl)
            } else {
                domain.ttl
            },
            fail_open,
            shed,
        }
    }

    /// The three best POPs for a located client and why; with `health`, only
    /// POPs it finds usable.
    #[allow(clippy::too_many_arguments)]
    fn rank(
        &self,
        location: &Location,
        client_isp: Option<IspId>,
        cached: Option<&Cached<'_>>,
        domain: &Domain,
        family: Family,
        client: &Client,
        health: Option<&LiveView>,
    ) -> (Ranked, Basis) {
        let eligible = |id: PopId| {
            self.eligible(id, domain.coverage, family) && health.is_none_or(|l| l.usable(id))
        };
        if let Some(o) = self.network_override(client.addr)
            && let Some(picked) = first_three(&o.pops, eligible)
        {
            (picked, Basis::NetworkOverride { network: o.network })
        } else if let Some(country) = location.country
            && let Some(list) = self.countries.get(&country)
            && let Some(picked) = first_three(list, eligible)
        {
            (picked, Basis::CountryOverride { country })
        } else if let Some(continent) = location.continent
            && let Some(list) = self.continents.get(&continent)
            && let Some(picked) = first_three(list, eligible)
        {
            (picked, Basis::ContinentOverride { continent })
        } else if let Some(cached) = cached {
            if !cached.ranking.located {
                (self.fallback_three(client_isp, eligible), Basis::Fallback)
            } else if let Some(ranked) = cached.ranking.first_three(eligible) {
                // The cached order holds the config-eligible POPs best first, so
                // the first three of it that pass `eligible` are what a scan would
                // find, unless it was cut short before three passed.
                (ranked, Basis::Score)
            } else {
                // A hit holds no coordinates: the record has them.
                let coordinates = location
                    .coordinates
                    .or_else(|| cached.geo.coordinates(client.addr));
                match coordinates {
                    Some(c) => (
                        self.best_three(&Point::new(c), client_isp, eligible),
                        Basis::Score,
                    ),
                    None => (self.fallback_three(client_isp, eligible), Basis::Fallback),
                }
            }
        } else if let Some(coordinates) = location.coordinates {
            let ranked = self.best_three(&Point::new(coordinates), client_isp, eligible);
            (ranked, Basis::Score)
        } else {
            (self.fallback_three(client_isp, eligible), Basis::Fallback)
        }
    }

    /// Every POP's score terms and eligibility for a located client (for `explain`).
    pub fn score_all(
        &self,
        location: &Location,
        client_isp: Option<IspId>,
        domain: &Domain,
        family: Family,
    ) -> Vec<(PopId, Option<Terms>, bool)> {
        let point = location.coordinates.map(Point::new).or(self.fallback_point);
        (0..self.pops.len())
            .map(|i| {
                let id = PopId(i as u16);
                let terms = point.map(|p| self.terms(id, &p, client_isp));
                (id, terms, self.eligible(id, domain.coverage, family))
            })
            .collect()
    }

    /// The ISP a client's ASN belongs to.
    pub fn isp_of(&self, asn: u32) -> Option<IspId> {
        self.asn_isp.get(&asn).copied()
    }

    fn eligible(&self, id: PopId, coverage: Coverage, family: Family) -> bool {
        let pop = &self.pops[id.index()];
        pop.admin == AdminState::Up
            && coverage.admits(pop.region)
            && match family {
                Family::V4 => pop.has_v4,
                Family::V6 => pop.has_v6,
            }
    }

    fn terms(&self, id: PopId, point: &Point, client_isp: Option<IspId>) -> Terms {
        let pop = &self.pops[id.index()];
        let distance_km = pop.point.distance_km(point);
        let isp = match (client_isp, pop.isp) {
            (Some(c), Some(p)) if c == p => IspRelation::Same,
            (Some(_), Some(_)) => IspRelation::Other,
            _ => IspRelation::Neutral,
        };
        let isp_km = match isp {
            IspRelation::Same => -self.weights.isp_match_bonus_km,
            IspRelation::Other => self.weights.isp_mismatch_penalty_km,
            IspRelation::Neutral => 0.0,
        };
        Terms {
            distance_km,
            isp,
            isp_km,
            total: distance_km * self.weights.distance + isp_km,
        }
    }

    /// The three best-scoring eligible POPs; ties go to the POP listed first. A
    /// scan of every POP: the answer path reaches it only where no cached
    /// ranking serves (a miss fills the cache with a scan of its own).
    fn best_three(
        &self,
        point: &Point,
        client_isp: Option<IspId>,
        eligible: impl Fn(PopId) -> bool,
    ) -> Ranked {
        let mut top: [Option<(f64, PopId)>; 3] = [None; 3];
        for i in 0..self.pops.len() {
            let id = PopId(i as u16);
            if !eligible(id) {
                continue;
            }
            let total = self.terms(id, point, client_isp).total;
            let Some(place) = top.iter().position(|t| t.is_none_or(|(s, _)| total < s)) else {
                continue;
            };
            top.copy_within(place..2, place + 1);
            top[place] = Some((total, id));
        }
        top.map(|t| t.map(|(_, id)| id))
    }

    fn fallback_three(
        &self,
        client_isp: Option<IspId>,
        eligible: impl Fn(PopId) -> bool,
    ) -> Ranked {
        let listed = match &self.fallback {
            Fallback::Pops(list) => first_three(list, &eligible),
            Fallback::Country(code) => self
                .countries
                .get(code)
                .and_then(|list| first_three(list, &eligible))
                .or_else(|| {
                    self.country_pops
                        .get(code)
                        .and_then(|list| first_three(list, &eligible))
                }),
            Fallback::Coordinates(_) => None,
        };
        if let Some(picked) = listed {
            return picked;
        }
        // The fallback names no eligible POP (say, an IPv4-only list for AAAA):
        // score from its point, or from nowhere in particular, rather than fail.
        let point = self.fallback_point.unwrap_or_else(|| self.pops[0].point);
        self.best_three(&point, client_isp, eligible)
    }

    fn network_override(&self, addr: IpAddr) -> Option<&NetworkOverride> {
        self.networks.iter().find(|o| o.network.contains(addr))
    }

    /// The shortest prefix of the client's address inside which every address
    /// gets this same decision: the longest of the database networks the decision
    /// read and of the override networks it had to stay clear of, never longer than
    /// the prefix the client gave.
    fn scope(&self, client: &Client, location: &Location, isp: ClientIsp, basis: Basis) -> u8 {
        let read = match basis {
            Basis::NetworkOverride { network } => network.prefix(),
            Basis::CountryOverride { .. } | Basis::ContinentOverride { .. } => location.city_prefix,
            Basis::Score | Basis::Fallback => location.city_prefix.max(isp.prefix),
        };
        // A shorter scope would take in part of an override network that does not
        // hold the client, where the answer differs: stop one bit past where the
        // client's address and that network part ways.
        let clear_of_overrides = self
            .networks
            .iter()
            .filter(|o| !o.network.contains(client.addr))
            .filter_map(|o| common_prefix(client.addr, o.network.network()).map(|c| c + 1))
            .max()
            .unwrap_or(0);
        read.max(clear_of_overrides).min(client.prefix)
    }
}

/// The first three POPs of a list that pass `eligible`; None if none does.
fn first_three(list: &[PopId], eligible: impl Fn(PopId) -> bool) -> Option<Ranked> {
    let mut iter = list.iter().copied().filter(|id| eligible(*id));
    let first = iter.next()?;
    Some([Some(first), iter.next(), iter.next()])
}

/// Where a client falls in [0, 1) when its best POP sheds load: it moves if the
/// draw is below the POP's shed share. A fixed function of the client's subnet
/// (address masked at its prefix, and the prefix) and the domain's name, with no
/// per-process seed: every Meridian instance running this code sends a subnet to
/// the same POP, a subnet's answer is stable while the share holds (so resolver
/// caches stay useful), and as the share grows the clients already moved stay
/// moved. The domain takes part so that different domains shed different subnets.
pub fn shed_draw(client: &Client, domain: &Domain) -> f64 {
    // SplitMix64's finalizer (Steele, Lea and Flood 2014): a bijection with full
    // avalanche, written out so that it can never change under us with a
    // dependency or a Rust release (std's `DefaultHasher` makes no such promise).
    fn mix(mut z: u64) -> u64 {
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn absorb(state: u64, word: u64) -> u64 {
        mix(state.wrapping_add(0x9e37_79b9_7f4a_7c15) ^ word)
    }
    let (family, bits) = match client.addr {
        IpAddr::V4(a) => (4_u64, u128::from(u32::from(a))),
        IpAddr::V6(a) => (6_u64, u128::from(a)),
    };
    let mut state = absorb(0, (family << 8) | u64::from(client.prefix));
    state = absorb(state, (bits >> 64) as u64);
    state = absorb(state, bits as u64);
    for label in domain.name.iter() {
        state = absorb(state, label.len() as u64);
        for chunk in label.chunks(8) {
            let mut word = [0_u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            state = absorb(state, u64::from_le_bytes(word));
        }
    }
    // The top 53 bits, as a double in [0, 1).
    (mix(state) >> 11) as f64 / (1_u64 << 53) as f64
}

/// An IPv4-mapped IPv6 address is the IPv4 client it stands for.
fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
        v4 => v4,
    }
}

/// Bits in an address of this family.
pub fn full_length(addr: IpAddr) -> u8 {
    match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

/// Clears the bits past `prefix`.
pub fn mask(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let bits = u32::from(a);
            let keep = if prefix == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(prefix.min(32)))
            };
            IpAddr::V4((bits & keep).into())
        }
        IpAddr::V6(a) => {
            let bits = u128::from(a);
            let keep = if prefix == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(prefix.min(128)))
            };
            IpAddr::V6((bits & keep).into())
        }
    }
}

/// Leading bits two addresses share; None across families.
fn common_prefix(a: IpAddr, b: IpAddr) -> Option<u8> {
    match (a, b) {
        (IpAddr::V4(a), IpAddr::V4(b)) => Some((u32::from(a) ^ u32::from(b)).leading_zeros() as u8),
        (IpAddr::V6(a), IpAddr::V6(b)) => {
            Some((u128::from(a) ^ u128::from(b)).leading_zeros() as u8)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DEFAULT_ECS_MAX_V4, DEFAULT_ECS_MAX_V6};
    use crate::geo::Coordinates;
    use crate::health::PopLive;
    use std::net::{Ipv4Addr, Ipv6Addr};
    use std::path::Path;

    /// Seven POPs: three in Europe on no ISP (Paris administratively down, London
    /// IPv4 only), two in mainland China on different ISPs (IPv4 only), Hong Kong and
    /// Singapore on no ISP. Three domains, one per coverage; overrides for two
    /// nested networks, one network sent to the IPv4-only London, NZ and JP (to the
    /// down Paris) and Oceania.
    const WORLD: &str = r#"
version: 1
zones:
  - origin: cdn.test.
    file: cdn.test.zone
cdn-suffix: cdn.test.
isps:
  telecom: [4134]
  unicom: [4837]
  mobile: [9808]
pops:
  - {id: fra, country: DE, continent: EU, latitude: 50.11, longitude: 8.68, addresses: [192.0.2.1, "2001:db8::1"]}
  - {id: lhr, country: GB, continent: EU, latitude: 51.51, longitude: -0.13, addresses: [192.0.2.2]}
  - {id: cdg, country: FR, continent: EU, latitude: 48.86, longitude: 2.35, admin: down, addresses: [192.0.2.3, "2001:db8::3"]}
  - {id: pek, country: CN, continent: AS, latitude: 39.90, longitude: 116.41, isp: unicom, addresses: [192.0.2.4]}
  - {id: sha, country: CN, continent: AS, latitude: 31.23, longitude: 121.47, isp: telecom, addresses: [192.0.2.5]}
  - {id: hkg, country: HK, continent: AS, latitude: 22.32, longitude: 114.17, addresses: [192.0.2.6, "2001:db8::6"]}
  - {id: sin, country: SG, continent: AS, latitude: 1.35, longitude: 103.82, addresses: [192.0.2.7, "2001:db8::7"]}
domains:
  - {name: www.example.com, origins: [{host: origin.example.com}]}
  - {name: cn.example.com, coverage: mainland-china, origins: [{host: origin.example.com}]}
  - {name: intl.example.com, coverage: global-excluding-mainland-china, origins: [{host: origin.example.com}]}
overrides:
  networks:
    - {network: 203.0.113.0/24, pops: [sin]}
    - {network: 203.0.113.128/25, pops: [hkg]}
    - {network: 198.51.100.0/24, pops: [lhr]}
  countries:
    NZ: [hkg]
    JP: [cdg]
  continents:
    OC: [sin]
"#;

    const TELECOM: u32 = 4134;
    const UNICOM: u32 = 4837;
    const MOBILE: u32 = 9808;

    /// A config and its router.
    struct World {
        config: Config,
        router: Router,
    }

    impl World {
        fn parse(text: &str) -> Self {
            let config = Config::parse(text, Path::new("routing-test.yaml"))
                .unwrap_or_else(|e| panic!("test config is invalid:\n{e}"));
            let router = Router::new(&config, &GeoDb::default());
            Self { config, router }
        }

        /// `WORLD` with extra top-level sections.
        fn with(extra: &str) -> Self {
            Self::parse(&format!("{WORLD}{extra}"))
        }

        fn domain(&self, name: &str) -> &Domain {
            let name = crate::config::parse_name(name).expect("domain name");
            self.config
                .domains
                .iter()
                .find(|d| d.name == name)
                .expect("domain in the test config")
        }

        fn decide(
            &self,
            location: &Location,
            domain: &str,
            family: Family,
            client: &Client,
        ) -> Decision {
            let live = LiveView::all_static(self.config.pops.len());
            self.decide_live(location, domain, family, client, &live)
        }

        fn decide_live(
            &self,
            location: &Location,
            domain: &str,
            family: Family,
            client: &Client,
            live: &LiveView,
        ) -> Decision {
            self.router
                .decide_at(location, self.domain(domain), family, client, live)
        }

        /// Every POP as configured, except those named.
        fn live(&self, changed: &[(&str, PopLive)]) -> LiveView {
            let pops = self
                .config
                .pops
                .iter()
                .map(|pop| {
                    changed
                        .iter()
                        .find(|(id, _)| *id == pop.id)
                        .map_or_else(PopLive::default, |(_, live)| *live)
                })
                .collect();
            LiveView::new(pops)
        }

        /// The names of the first and second POPs of a decision.
        fn names(&self, decision: &Decision) -> (Option<&str>, Option<&str>) {
            let name = |id: Option<PopId>| id.map(|id| self.config.pop(id).id.as_str());
            (name(decision.first), name(decision.second))
        }

        /// Where a resolver at an address outside every override network sends `www` A.
        fn pick(&self, location: &Location) -> (Option<&str>, Option<&str>) {
            self.pick_for(location, "www.example.com", Family::V4)
        }

        fn pick_for(
            &self,
            location: &Location,
            domain: &str,
            family: Family,
        ) -> (Option<&str>, Option<&str>) {
            let decision = self.decide(location, domain, family, &resolver());
            assert_eq!(decision.basis, Basis::Score);
            self.names(&decision)
        }
    }

    /// A client located at a city, with no ISP and database prefixes of /16.
    fn at(latitude: f64, longitude: f64, country: &str, continent: &str) -> Location {
        Location {
            coordinates: Some(Coordinates {
                latitude,
                longitude,
            }),
            country: Code::parse(country),
            continent: Code::parse(continent),
            asn: None,
            city_prefix: 16,
            asn_prefix: 16,
            city_record: None,
        }
    }

    fn on(asn: u32, location: Location) -> Location {
        Location {
            asn: Some(asn),
            ..location
        }
    }

    fn prefixes(city_prefix: u8, asn_prefix: u8, location: Location) -> Location {
        Location {
            city_prefix,
            asn_prefix,
            ..location
        }
    }

    fn paris() -> Location {
        at(48.86, 2.35, "FR", "EU")
    }
    fn madrid() -> Location {
        at(40.42, -3.70, "ES", "EU")
    }
    fn london() -> Location {
        at(51.51, -0.13, "GB", "EU")
    }
    fn frankfurt() -> Location {
        at(50.11, 8.68, "DE", "EU")
    }
    fn beijing() -> Location {
        at(39.90, 116.41, "CN", "AS")
    }
    fn shanghai() -> Location {
        at(31.23, 121.47, "CN", "AS")
    }
    fn tokyo() -> Location {
        at(35.68, 139.65, "JP", "AS")
    }
    fn auckland() -> Location {
        at(-36.85, 174.76, "NZ", "OC")
    }
    fn sydney() -> Location {
        at(-33.87, 151.21, "AU", "OC")
    }

    /// A resolver outside every override network, no ECS.
    fn resolver() -> Client {
        Client::from_source(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 200)))
    }

    fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(a, b, c, d))
    }

    /// An ECS client whose subnet is taken as given (no policy cap).
    fn subnet(addr: IpAddr, prefix: u8) -> Client {
        Client {
            addr: mask(addr, prefix),
            prefix,
            ecs: true,
        }
    }

    fn default_policy() -> EcsPolicy {
        EcsPolicy {
            max_source_prefix_v4: DEFAULT_ECS_MAX_V4,
            max_source_prefix_v6: DEFAULT_ECS_MAX_V6,
        }
    }

    // Scoring.

    #[test]
    fn nearest_pop_wins_with_the_runner_up_second() {
        let world = World::with("");
        assert_eq!(world.pick(&madrid()), (Some("lhr"), Some("fra")));
        assert_eq!(world.pick(&frankfurt()), (Some("fra"), Some("lhr")));
        assert_eq!(
            world.pick(&at(1.30, 103.85, "SG", "AS")),
            (Some("sin"), Some("hkg"))
        );
    }

    #[test]
    fn admin_down_pop_is_never_chosen() {
        let world = World::with("");
        // Paris is 0 km from the down POP: London (344 km) then Frankfurt (479 km).
        assert_eq!(world.pick(&paris()), (Some("lhr"), Some("fra")));
        let cdg = world.config.pop_by_name("cdg");
        for location in [
            paris(),
            madrid(),
            london(),
            frankfurt(),
            beijing(),
            sydney(),
        ] {
            for family in [Family::V4, Family::V6] {
                let decision = world.decide(&location, "www.example.com", family, &resolver());
                assert!(decision.first.is_some());
                assert_ne!(decision.first, cdg);
                assert_ne!(decision.second, cdg);
            }
        }
    }

    #[test]
    fn client_prefers_a_farther_pop_on_its_own_isp() {
        let world = World::with("");
        // Beijing on China Telecom: Shanghai (1,070 km, -2,000 bonus) beats Beijing
        // itself (0 km, on China Unicom: +5,000).
        assert_eq!(world.pick(&on(TELECOM, beijing())).0, Some("sha"));
        // Beijing on China Unicom stays home.
        assert_eq!(world.pick(&on(UNICOM, beijing())).0, Some("pek"));
    }

    #[test]
    fn client_with_no_known_isp_goes_to_the_nearest() {
        let world = World::with("");
        assert_eq!(world.pick(&beijing()), (Some("pek"), Some("sha")));
        // An ASN under no configured ISP is as good as none.
        assert_eq!(
            world.pick(&on(64_500, beijing())),
            (Some("pek"), Some("sha"))
        );
        assert_eq!(world.pick(&shanghai()), (Some("sha"), Some("pek")));
    }

    #[test]
    fn pops_on_no_isp_suit_every_client() {
        let world = World::with("");
        // China Telecom's client in London: the local POP carries no ISP, so neither
        // bonus nor penalty; Shanghai's bonus cannot make up 9,000 km.
        assert_eq!(
            world.pick(&on(TELECOM, london())),
            (Some("lhr"), Some("fra"))
        );
        let scores = world.router.score_all(
            &on(TELECOM, london()),
            world.router.isp_of(TELECOM),
            world.domain("www.example.com"),
            Family::V4,
        );
        let lhr = world.config.pop_by_name("lhr").expect("lhr");
        let (_, terms, eligible) = scores
            .iter()
            .find(|(id, _, _)| *id == lhr)
            .expect("lhr scored");
        let terms = terms.expect("a located client has terms");
        assert!(eligible);
        assert_eq!(terms.isp, IspRelation::Neutral);
        assert_eq!(terms.isp_km, 0.0);
        assert!(terms.distance_km < 1.0, "{}", terms.distance_km);
    }

    #[test]
    fn mismatch_penalty_steers_away_from_another_isps_pop() {
        let world = World::with("");
        // China Mobile has no POP: the Shanghai POP 0 km away is on China Telecom
        // (+5,000), so Hong Kong, on no ISP at 1,230 km, wins.
        assert_eq!(
            world.pick(&on(MOBILE, shanghai())),
            (Some("hkg"), Some("sin"))
        );
        let scores = world.router.score_all(
            &on(MOBILE, shanghai()),
            world.router.isp_of(MOBILE),
            world.domain("www.example.com"),
            Family::V4,
        );
        let sha = world.config.pop_by_name("sha").expect("sha");
        let terms = scores
            .iter()
            .find(|(id, _, _)| *id == sha)
            .and_then(|s| s.1)
            .expect("sha scored");
        assert_eq!(terms.isp, IspRelation::Other);
        assert_eq!(terms.isp_km, crate::config::DEFAULT_ISP_MISMATCH_PENALTY_KM);
    }

    // Eligibility.

    #[test]
    fn mainland_china_domain_gets_only_mainland_pops() {
        let world = World::with("");
        for location in [frankfurt(), madrid(), sydney(), on(MOBILE, shanghai())] {
            let (first, second) = world.pick_for(&location, "cn.example.com", Family::V4);
            assert!(matches!(first, Some("pek" | "sha")), "{first:?}");
            assert!(matches!(second, Some("pek" | "sha")), "{second:?}");
        }
        assert_eq!(
            world.pick_for(&frankfurt(), "cn.example.com", Family::V4),
            (Some("pek"), Some("sha"))
        );
    }

    #[test]
    fn global_excluding_mainland_domain_never_gets_mainland_pops() {
        let world = World::with("");
        assert_eq!(
            world.pick_for(&beijing(), "intl.example.com", Family::V4),
            (Some("hkg"), Some("sin"))
        );
        assert_eq!(
            world.pick_for(&on(TELECOM, shanghai()), "intl.example.com", Family::V4),
            (Some("hkg"), Some("sin"))
        );
        assert_eq!(
            world.pick_for(&tokyo(), "intl.example.com", Family::V4).0,
            Some("hkg")
        );
    }

    #[test]
    fn aaaa_skips_pops_without_ipv6() {
        let world = World::with("");
        // London has no IPv6 address: Frankfurt, then Hong Kong (Paris is down).
        assert_eq!(
            world.pick_for(&london(), "www.example.com", Family::V6),
            (Some("fra"), Some("hkg"))
        );
        assert_eq!(
            world.pick_for(&beijing(), "www.example.com", Family::V6),
            (Some("hkg"), Some("sin"))
        );
    }

    #[test]
    fn aaaa_with_no_ipv6_pop_decides_nothing() {
        let world = World::with("");
        // Both mainland POPs are IPv4 only.
        let decision = world.decide(&beijing(), "cn.example.com", Family::V6, &resolver());
        assert_eq!((decision.first, decision.second), (None, None));
        assert_eq!(decision.basis, Basis::Score);
        // A still works.
        assert_eq!(
            world.pick_for(&beijing(), "cn.example.com", Family::V4).0,
            Some("pek")
        );
    }

    // Overrides.

    #[test]
    fn network_override_beats_country_and_score() {
        let world = World::with("");
        // Located in New Zealand (a country override) on China Telecom, but inside
        // 203.0.113.0/24.
        let client = Client::from_source(v4(203, 0, 113, 10));
        let decision = world.decide(
            &on(TELECOM, auckland()),
            "www.example.com",
            Family::V4,
            &client,
        );
        assert_eq!(world.names(&decision), (Some("sin"), None));
        assert_eq!(
            decision.basis,
            Basis::NetworkOverride {
                network: "203.0.113.0/24".parse().expect("network")
            }
        );
    }

    #[test]
    fn longest_override_prefix_wins() {
        let world = World::with("");
        let client = Client::from_source(v4(203, 0, 113, 200));
        let decision = world.decide(&frankfurt(), "www.example.com", Family::V4, &client);
        assert_eq!(world.names(&decision), (Some("hkg"), None));
        assert_eq!(
            decision.basis,
            Basis::NetworkOverride {
                network: "203.0.113.128/25".parse().expect("network")
            }
        );
    }

    #[test]
    fn country_override_then_continent_override() {
        let world = World::with("");
        let decision = world.decide(&auckland(), "www.example.com", Family::V4, &resolver());
        assert_eq!(world.names(&decision), (Some("hkg"), None));
        assert_eq!(
            decision.basis,
            Basis::CountryOverride {
                country: Code::parse("NZ").expect("code")
            }
        );
        let decision = world.decide(&sydney(), "www.example.com", Family::V4, &resolver());
        assert_eq!(world.names(&decision), (Some("sin"), None));
        assert_eq!(
            decision.basis,
            Basis::ContinentOverride {
                continent: Code::parse("OC").expect("code")
            }
        );
    }

    #[test]
    fn override_with_only_ineligible_pops_falls_through_to_the_score() {
        let world = World::with("");
        // JP is sent to Paris, which is down.
        let decision = world.decide(&tokyo(), "www.example.com", Family::V4, &resolver());
        assert_eq!(decision.basis, Basis::Score);
        assert_eq!(world.names(&decision), (Some("sha"), Some("pek")));
        // 198.51.100.0/24 is sent to London, which has no IPv6 address.
        let client = Client::from_source(v4(198, 51, 100, 7));
        let a = world.decide(&frankfurt(), "www.example.com", Family::V4, &client);
        assert_eq!(world.names(&a).0, Some("lhr"));
        assert!(matches!(a.basis, Basis::NetworkOverride { .. }));
        let aaaa = world.decide(&frankfurt(), "www.example.com", Family::V6, &client);
        assert_eq!(world.names(&aaaa).0, Some("fra"));
        assert_eq!(aaaa.basis, Basis::Score);
        // Coverage makes an override ineligible too: New Zealand's Hong Kong POP is
        // no use for a mainland-only domain.
        let cn = world.decide(&auckland(), "cn.example.com", Family::V4, &resolver());
        assert_eq!(cn.basis, Basis::Score);
        assert!(matches!(world.names(&cn).0, Some("pek" | "sha")));
    }

    // Clients with no known location.

    #[test]
    fn unknown_location_goes_to_the_fallback_pops() {
        let world = World::with("unknown-location:\n  pops: [lhr, fra]\n");
        let nowhere = Location::default();
        let decision = world.decide(&nowhere, "www.example.com", Family::V4, &resolver());
        assert_eq!(decision.basis, Basis::Fallback);
        assert_eq!(world.names(&decision), (Some("lhr"), Some("fra")));
        // London has no IPv6: the list is filtered, not abandoned.
        let decision = world.decide(&nowhere, "www.example.com", Family::V6, &resolver());
        assert_eq!(world.names(&decision), (Some("fra"), None));
        // No listed POP may serve mainland China: scored from the first POP instead.
        let decision = world.decide(&nowhere, "cn.example.com", Family::V4, &resolver());
        assert_eq!(decision.basis, Basis::Fallback);
        assert_eq!(world.names(&decision), (Some("pek"), Some("sha")));
    }

    #[test]
    fn unknown_location_goes_to_the_fallback_country() {
        let world = World::with("unknown-location:\n  country: CN\n");
        let decision = world.decide(
            &Location::default(),
            "www.example.com",
            Family::V4,
            &resolver(),
        );
        assert_eq!(decision.basis, Basis::Fallback);
        assert_eq!(world.names(&decision), (Some("pek"), Some("sha")));
        // A country with an override uses it.
        let world = World::with("unknown-location:\n  country: NZ\n");
        let decision = world.decide(
            &Location::default(),
            "www.example.com",
            Family::V4,
            &resolver(),
        );
        assert_eq!(world.names(&decision), (Some("hkg"), None));
    }

    #[test]
    fn unknown_location_scores_from_the_fallback_coordinates() {
        let world = World::with("unknown-location:\n  latitude: 1.3\n  longitude: 103.8\n");
        let decision = world.decide(
            &Location::default(),
            "www.example.com",
            Family::V4,
            &resolver(),
        );
        assert_eq!(decision.basis, Basis::Fallback);
        assert_eq!(world.names(&decision), (Some("sin"), Some("hkg")));
    }

    #[test]
    fn without_a_fallback_the_first_pop_takes_unknown_clients() {
        let world = World::with("");
        let decision = world.decide(
            &Location::default(),
            "www.example.com",
            Family::V4,
            &resolver(),
        );
        assert_eq!(decision.basis, Basis::Fallback);
        assert_eq!(world.names(&decision).0, Some("fra"));
    }

    // ECS scope.

    #[test]
    fn scope_is_the_longer_database_prefix_capped_at_the_clients() {
        let world = World::with("");
        let location = prefixes(20, 22, frankfurt());
        let decision = world.decide(
            &location,
            "www.example.com",
            Family::V4,
            &subnet(v4(192, 0, 2, 0), 24),
        );
        assert_eq!(decision.scope, 22);
        let location = prefixes(20, 18, frankfurt());
        let decision = world.decide(
            &location,
            "www.example.com",
            Family::V4,
            &subnet(v4(192, 0, 2, 0), 24),
        );
        assert_eq!(decision.scope, 20);
        // Never longer than what the client gave.
        let location = prefixes(23, 22, frankfurt());
        let decision = world.decide(
            &location,
            "www.example.com",
            Family::V4,
            &subnet(v4(192, 0, 0, 0), 21),
        );
        assert_eq!(decision.scope, 21);
    }

    #[test]
    fn asn_prefix_is_ignored_without_isps() {
        let text = WORLD
            .replace(
                "isps:\n  telecom: [4134]\n  unicom: [4837]\n  mobile: [9808]\n",
                "",
            )
            .replace(" isp: unicom,", "")
            .replace(" isp: telecom,", "");
        let world = World::parse(&text);
        assert!(world.config.isps.is_empty());
        let location = on(TELECOM, prefixes(20, 22, frankfurt()));
        let decision = world.decide(
            &location,
            "www.example.com",
            Family::V4,
            &subnet(v4(192, 0, 2, 0), 24),
        );
        assert_eq!(decision.scope, 20);
    }

    #[test]
    fn country_override_scope_reads_only_the_city_prefix() {
        let world = World::with("");
        let location = prefixes(19, 23, auckland());
        let decision = world.decide(
            &location,
            "www.example.com",
            Family::V4,
            &subnet(v4(100, 64, 0, 0), 24),
        );
        assert!(matches!(decision.basis, Basis::CountryOverride { .. }));
        assert_eq!(decision.scope, 19);
    }

    #[test]
    fn network_override_scope_is_the_override_prefix() {
        let world = World::with("");
        // The location's prefixes do not matter to an override.
        let location = prefixes(16, 30, frankfurt());
        let decision = world.decide(
            &location,
            "www.example.com",
            Family::V4,
            &subnet(v4(203, 0, 113, 192), 28),
        );
        assert_eq!(world.names(&decision).0, Some("hkg"));
        assert_eq!(decision.scope, 25);
        let decision = world.decide(
            &location,
            "www.example.com",
            Family::V4,
            &subnet(v4(198, 51, 100, 0), 24),
        );
        assert_eq!(world.names(&decision).0, Some("lhr"));
        assert_eq!(decision.scope, 24);
        // In the /24 but not its /25 (which answers otherwise): scoped to the /25
        // this client is in, not the whole /24.
        let decision = world.decide(
            &location,
            "www.example.com",
            Family::V4,
            &subnet(v4(203, 0, 113, 0), 28),
        );
        assert_eq!(world.names(&decision).0, Some("sin"));
        assert_eq!(decision.scope, 25);
    }

    #[test]
    fn scope_stops_one_bit_past_where_a_nearby_override_diverges() {
        let world = World::with("");
        // 198.51.96.0/24 and the override 198.51.100.0/24 share 21 bits: a scope of
        // 21 or less would take in the override's clients, who get London.
        let location = prefixes(16, 18, frankfurt());
        let decision = world.decide(
            &location,
            "www.example.com",
            Family::V4,
            &subnet(v4(198, 51, 96, 0), 24),
        );
        assert_eq!(decision.basis, Basis::Score);
        assert_eq!(world.names(&decision).0, Some("fra"));
        assert_eq!(decision.scope, 22);
        // Far from every override network, the databases decide.
        let decision = world.decide(
            &location,
            "www.example.com",
            Family::V4,
            &subnet(v4(10, 1, 2, 0), 24),
        );
        assert_eq!(decision.scope, 18);
    }

    #[test]
    fn scope_is_zero_without_ecs() {
        let world = World::with("");
        let location = prefixes(20, 22, frankfurt());
        let decision = world.decide(&location, "www.example.com", Family::V4, &resolver());
        assert_eq!(decision.scope, 0);
        let client = Client::from_source(v4(203, 0, 113, 200));
        assert_eq!(
            world
                .decide(&location, "www.example.com", Family::V4, &client)
                .scope,
            0
        );
    }

    // Clients.

    #[test]
    fn ecs_subnet_is_capped_by_policy_and_masked() {
        let client = Client::from_ecs(v4(203, 0, 113, 77), 32, &default_policy());
        assert_eq!(
            client,
            Client {
                addr: v4(203, 0, 113, 0),
                prefix: 24,
                ecs: true
            }
        );
        // Shorter than the cap: kept, host bits cleared all the same.
        let client = Client::from_ecs(v4(203, 0, 113, 77), 20, &default_policy());
        assert_eq!(
            client,
            Client {
                addr: v4(203, 0, 112, 0),
                prefix: 20,
                ecs: true
            }
        );
        let addr = IpAddr::V6("2001:db8:1:23ff::1".parse::<Ipv6Addr>().expect("address"));
        let client = Client::from_ecs(addr, 128, &default_policy());
        let expected = IpAddr::V6("2001:db8:1:2300::".parse::<Ipv6Addr>().expect("address"));
        assert_eq!(
            client,
            Client {
                addr: expected,
                prefix: 56,
                ecs: true
            }
        );
        let client = Client::from_ecs(v4(203, 0, 113, 77), 0, &default_policy());
        assert_eq!(
            client,
            Client {
                addr: v4(0, 0, 0, 0),
                prefix: 0,
                ecs: true
            }
        );
    }

    #[test]
    fn a_query_whose_subnet_says_nothing_is_the_resolver() {
        let resolver = v4(198, 51, 100, 9);
        let from_source = Client::from_source(resolver);
        let policy = default_policy();
        // SOURCE /0 in the query.
        let zero = Some((v4(203, 0, 113, 77), 0));
        assert_eq!(Client::for_query(zero, resolver, &policy), from_source);
        // A policy that uses no bits of IPv4 subnets.
        let ignore_v4 = EcsPolicy {
            max_source_prefix_v4: 0,
            ..policy
        };
        let subnet = Some((v4(203, 0, 113, 0), 24));
        assert_eq!(Client::for_query(subnet, resolver, &ignore_v4), from_source);
        assert_eq!(
            Client::for_query(subnet, resolver, &policy),
            Client::from_ecs(v4(203, 0, 113, 0), 24, &policy)
        );
    }

    #[test]
    fn ipv4_mapped_source_is_treated_as_ipv4() {
        let mapped = IpAddr::V6(Ipv4Addr::new(203, 0, 113, 200).to_ipv6_mapped());
        let client = Client::from_source(mapped);
        assert_eq!(
            client,
            Client {
                addr: v4(203, 0, 113, 200),
                prefix: 32,
                ecs: false
            }
        );
        // So IPv4 override networks apply to it.
        let world = World::with("");
        let decision = world.decide(&frankfurt(), "www.example.com", Family::V4, &client);
        assert_eq!(world.names(&decision).0, Some("hkg"));
    }

    // Live health.

    fn down() -> PopLive {
        PopLive {
            usable: false,
            ..PopLive::default()
        }
    }

    fn shedding(share: f32) -> PopLive {
        PopLive {
            shed: share,
            degraded: true,
            ..PopLive::default()
        }
    }

    #[test]
    fn unusable_pops_are_passed_over() {
        let world = World::with("");
        let live = world.live(&[("fra", down())]);
        let decision = world.decide_live(
            &frankfurt(),
            "www.example.com",
            Family::V4,
            &resolver(),
            &live,
        );
        assert_eq!(world.names(&decision), (Some("lhr"), Some("pek")));
        assert!(!decision.fail_open);
        assert_eq!(decision.ttl, crate::config::DEFAULT_TTL);
        // An override whose only POP is down falls through to the score.
        let live = world.live(&[("lhr", down())]);
        let client = Client::from_source(v4(198, 51, 100, 7));
        let decision =
            world.decide_live(&frankfurt(), "www.example.com", Family::V4, &client, &live);
        assert_eq!(decision.basis, Basis::Score);
        assert_eq!(world.names(&decision), (Some("fra"), Some("pek")));
    }

    #[test]
    fn everything_down_fails_open_to_the_nearest() {
        let world = World::with("");
        let all_down: Vec<(&str, PopLive)> = world
            .config
            .pops
            .iter()
            .map(|p| (p.id.as_str(), down()))
            .collect();
        let live = world.live(&all_down);
        let decision = world.decide_live(
            &frankfurt(),
            "www.example.com",
            Family::V4,
            &resolver(),
            &live,
        );
        assert!(decision.fail_open);
        assert_eq!(world.names(&decision), (Some("fra"), Some("lhr")));
        assert_eq!(decision.ttl, crate::config::DEFAULT_DEGRADED_TTL);
        // Overrides still speak when failing open.
        let client = Client::from_source(v4(203, 0, 113, 200));
        let decision =
            world.decide_live(&frankfurt(), "www.example.com", Family::V4, &client, &live);
        assert!(decision.fail_open);
        assert_eq!(world.names(&decision), (Some("hkg"), None));
        // Down POPs do not make an answer out of nothing: no mainland POP has IPv6.
        let decision =
            world.decide_live(&beijing(), "cn.example.com", Family::V6, &resolver(), &live);
        assert_eq!(decision.first, None);
        assert!(!decision.fail_open);
    }

    #[test]
    fn shedding_moves_about_its_share_of_subnets_to_the_runner_up() {
        let world = World::with("");
        let live = world.live(&[("fra", shedding(0.3))]);
        let mut moved = 0;
        let total = 8192;
        for i in 0..total {
            let client = subnet(v4(10, (i >> 8) as u8, i as u8, 0), 24);
            let decision =
                world.decide_live(&frankfurt(), "www.example.com", Family::V4, &client, &live);
            // Either side of the share depends on every bit of the subnet.
            assert_eq!(decision.scope, 24);
            assert_eq!(decision.ttl, crate::config::DEFAULT_DEGRADED_TTL);
            let shed = decision.shed.expect("shedding consulted");
            assert_eq!(world.config.pop(shed.from).id, "fra");
            if shed.moved {
                moved += 1;
                // The runner-up moves up, and the next one becomes the runner-up.
                assert_eq!(world.names(&decision), (Some("lhr"), Some("pek")));
            } else {
                assert_eq!(world.names(&decision), (Some("fra"), Some("lhr")));
            }
            // The same subnet always gets the same answer.
            let again =
                world.decide_live(&frankfurt(), "www.example.com", Family::V4, &client, &live);
            assert_eq!(again, decision);
        }
        let share = f64::from(moved) / f64::from(total);
        assert!((share - 0.3).abs() < 0.02, "moved {share}");
    }

    #[test]
    fn full_shed_moves_everyone_and_keeps_the_scope() {
        let world = World::with("");
        let live = world.live(&[("fra", shedding(1.0))]);
        for i in 0..64 {
            let client = subnet(v4(10, i, 0, 0), 24);
            let decision =
                world.decide_live(&frankfurt(), "www.example.com", Family::V4, &client, &live);
            assert_eq!(world.names(&decision), (Some("lhr"), Some("pek")));
            // Everyone moves: the answer does not depend on the subnet's low bits.
            assert_eq!(decision.scope, 16);
        }
        // Without ECS the scope stays 0.
        let live = world.live(&[("fra", shedding(0.5))]);
        let decision = world.decide_live(
            &frankfurt(),
            "www.example.com",
            Family::V4,
            &resolver(),
            &live,
        );
        assert_eq!(decision.scope, 0);
    }

    #[test]
    fn a_drained_runner_up_does_not_inherit_shed_clients() {
        let world = World::with("");
        let live = world.live(&[("fra", shedding(1.0)), ("lhr", shedding(1.0))]);
        let client = subnet(v4(10, 1, 0, 0), 24);
        let decision =
            world.decide_live(&frankfurt(), "www.example.com", Family::V4, &client, &live);
        assert_eq!(world.names(&decision), (Some("pek"), Some("lhr")));
    }

    #[test]
    fn a_pop_with_no_runner_up_keeps_its_clients() {
        let world = World::with("");
        // 203.0.113.128/25 is sent to Hong Kong alone.
        let live = world.live(&[("hkg", shedding(1.0))]);
        let client = subnet(v4(203, 0, 113, 128), 25);
        let decision =
            world.decide_live(&frankfurt(), "www.example.com", Family::V4, &client, &live);
        assert_eq!(world.names(&decision), (Some("hkg"), None));
        assert_eq!(decision.shed, None);
        // Still degraded: short TTL.
        assert_eq!(decision.ttl, crate::config::DEFAULT_DEGRADED_TTL);
    }

    #[test]
    fn degraded_ttl_applies_only_to_answers_from_degraded_pops() {
        let world = World::with("health:\n  degraded-ttl: 5\n");
        let degraded = PopLive {
            degraded: true,
            ..PopLive::default()
        };
        let live = world.live(&[("fra", degraded)]);
        let decision = world.decide_live(
            &frankfurt(),
            "www.example.com",
            Family::V4,
            &resolver(),
            &live,
        );
        assert_eq!(world.names(&decision).0, Some("fra"));
        assert_eq!(decision.ttl, 5);
        // Domains ask for one POP: a degraded runner-up is not in the answer.
        let decision =
            world.decide_live(&london(), "www.example.com", Family::V4, &resolver(), &live);
        assert_eq!(world.names(&decision), (Some("lhr"), Some("fra")));
        assert_eq!(decision.ttl, crate::config::DEFAULT_TTL);
    }

    #[test]
    fn shed_draws_are_fixed_uniform_and_per_domain() {
        let world = World::with("");
        let www = world.domain("www.example.com");
        let cn = world.domain("cn.example.com");
        let policy = default_policy();
        let client = Client::from_ecs(v4(192, 0, 2, 77), 24, &policy);
        let draw = shed_draw(&client, www);
        assert!((0.0..1.0).contains(&draw));
        // Host bits past the prefix do not count; the prefix and the domain do.
        assert_eq!(
            draw,
            shed_draw(&Client::from_ecs(v4(192, 0, 2, 1), 24, &policy), www)
        );
        assert_ne!(
            draw,
            shed_draw(&Client::from_ecs(v4(192, 0, 2, 1), 23, &policy), www)
        );
        assert_ne!(draw, shed_draw(&client, cn));
        // Pinned: every instance must agree, so the function may never drift.
        assert_eq!(format!("{draw:.12}"), PINNED_DRAW_V4);
        let v6 = Client::from_ecs(IpAddr::V6("2001:db8::".parse().expect("v6")), 56, &policy);
        assert_eq!(format!("{:.12}", shed_draw(&v6, www)), PINNED_DRAW_V6);
        // Uniform: ten buckets of 20480 subnets each hold about a tenth.
        let mut buckets = [0_u32; 10];
        for i in 0..20_480_u32 {
            let client = subnet(v4(100, (i >> 8) as u8, i as u8, 0), 24);
            buckets[(shed_draw(&client, www) * 10.0) as usize] += 1;
        }
        for count in buckets {
            assert!((1_848..=2_248).contains(&count), "{buckets:?}");
        }
    }

    const PINNED_DRAW_V4: &str = "0.565981836033";
    const PINNED_DRAW_V6: &str = "0.420505636877";
}
