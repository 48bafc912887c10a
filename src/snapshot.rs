//! Everything the answer path reads, loaded and validated together and published as
//! one immutable value: the config, the zones, the geo databases and the routing
//! tables. A reload builds a new snapshot off the answer path and swaps it in
//! whole; queries in flight finish on the snapshot they started with.

use rustc_hash::FxHashMap;
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use hickory_proto::rr::Name;

use crate::config::{Config, ConfigError, Domain, Problem};
use crate::geo::GeoDb;
use crate::health::LiveView;
use crate::routing::cache::RankingCache;
use crate::routing::range_rankings::{MAX_POP_COLUMNS, RangeRankings};
use crate::routing::{Client, Decision, Family, Router};
use crate::zone::{Conflict, Zone};

/// The published snapshot, swapped atomically on reload.
pub type Shared = Arc<ArcSwap<Snapshot>>;

/// Index of a domain in [`Config::domains`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DomainId(pub u32);

/// One consistent view of config, zones, geodata and routing.
#[derive(Debug)]
pub struct Snapshot {
    pub config: Config,
    /// Zones, most specific origin first.
    pub zones: Vec<Zone>,
    pub geo: Arc<GeoDb>,
    pub router: Router,
    /// Live health of this snapshot's POPs, indexed like `config.pops`; written
    /// only by the health keeper (`health::Health`), loaded once per decision.
    pub live: ArcSwap<LiveView>,
    /// Rankings per client location: this snapshot's own, or its predecessor's
    /// when nothing they are computed from changed (`with_geo_after`).
    pub rankings: Arc<RankingCache>,
    /// Served name (lower-case wire form) → domain.
    /// Probed for every query's name: hashed with Fx, not SipHash (the keys come
    /// from the config, so no client can fill a chain).
    exact: FxHashMap<Box<[u8]>, DomainId>,
    /// For `*.example.org`: the wire form of `example.org.<suffix>` → domain.
    wildcards: FxHashMap<Box<[u8]>, DomainId>,
}

impl Snapshot {
    /// Loads the zones and geo databases a config names and checks them against it.
    pub fn load(config: Config) -> Result<Self, ConfigError> {
        let geo = GeoDb::open(
            config.geodata.city.as_deref(),
            config.geodata.asn.as_deref(),
        )
        .map_err(|e| {
            let line = if Some(&e.path) == config.geodata.city.as_ref() {
                config.lines.geodata_city
            } else {
                config.lines.geodata_asn
            };
            ConfigError::one(Problem::at(
                &config.source,
                line,
                None,
                format!("geodata {}: {}", e.path.display(), e.reason),
            ))
        })?;
        Self::with_geo(config, Arc::new(geo))
    }

    /// Builds with geo databases already open.
    pub fn with_geo(config: Config, geo: Arc<GeoDb>) -> Result<Self, ConfigError> {
        Self::assemble(config, geo, None)
    }

    /// Builds for a reload that kept `previous`'s geo databases, sharing its
    /// rankings when they hold for the new config too (`rankings_hold_for`).
    pub fn with_geo_after(
        config: Config,
        geo: Arc<GeoDb>,
        previous: &Snapshot,
    ) -> Result<Self, ConfigError> {
        Self::assemble(config, geo, Some(previous))
    }

    fn assemble(
        config: Config,
        geo: Arc<GeoDb>,
        previous: Option<&Snapshot>,
    ) -> Result<Self, ConfigError> {
        let mut problems = Vec::new();
        let mut zones = Vec::new();
        for source in &config.zones {
            match Zone::load(&source.origin, &source.file) {
                Ok(zone) => zones.push(zone),
                Err(mut found) => problems.append(&mut found),
            }
        }
        if !problems.is_empty() {
            return Err(problems.into());
        }
        zones.sort_by_key(|z| std::cmp::Reverse(z.origin().num_labels()));

        let mut exact = FxHashMap::default();
        let mut wildcards = FxHashMap::default();
        for (i, domain) in config.domains.iter().enumerate() {
            let id = DomainId(i as u32);
            let line = config.lines.domains.get(i).copied().unwrap_or(0);
            let Some(zone) = zones.iter_mut().find(|z| z.contains(&domain.served)) else {
                problems.push(Problem::at(
                    &config.source,
                    line,
                    None,
                    format!("domain {}: {} is in no zone", domain.name, domain.served),
                ));
                continue;
            };
            if let Err(conflict) = zone.reserve(&domain.served) {
                let file = config
                    .zones
                    .iter()
                    .find(|z| &z.origin == zone.origin())
                    .map(|z| z.file.display().to_string())
                    .unwrap_or_default();
                problems.push(Problem::at(
                    &config.source,
                    line,
                    None,
                    match conflict {
                        Conflict::Records(zone_line) => format!(
                            "domain {}: {} also has static records ({file} line {zone_line}); a name is either geo-routed or static",
                            domain.name, domain.served
                        ),
                        Conflict::Delegated(zone_line) => format!(
                            "domain {}: {} lies below a zone cut ({file} line {zone_line}); its answers belong to the delegated zone",
                            domain.name, domain.served
                        ),
                        Conflict::Shadowed(zone_line) => format!(
                            "domain {}: static names below {} ({file} line {zone_line}) would never be routed (a wildcard does not cover names that exist); move them out or list them as domains",
                            domain.name,
                            domain.served.base_name()
                        ),
                    },
                ));
                continue;
            }
            if domain.is_wildcard() {
                wildcards.insert(wire_lower(&domain.served.base_name()), id);
            } else {
                exact.insert(wire_lower(&domain.served), id);
            }
        }
        if !problems.is_empty() {
            return Err(problems.into());
        }
        let router = Router::new(&config, &geo);
        let rankings = match previous.filter(|p| p.rankings_hold_for(&config, &geo)) {
            Some(previous) => Arc::clone(&previous.rankings),
            None => Arc::new(rankings(&config, &router, &geo)),
        };
        let live = ArcSwap::from_pointee(LiveView::all_static(config.pops.len()));
        Ok(Self {
            config,
            zones,
            geo,
            router,
            live,
            rankings,
            exact,
            wildcards,
        })
    }

    /// Whether this snapshot's rankings hold for `config` over `geo` too: the
    /// same open geo databases (the key is a City record's number, or an address
    /// range of its tables) and the same POPs, ISPs and scoring weights, all a
    /// ranking is computed from, and the same coverages, for which the ranges by
    /// address were built (health is applied per query). At thousands of POPs a
    /// ranking costs about 100 µs to compute, and the ranges by address take
    /// about a second to build at tens of POPs, so a reload that changed none of
    /// these (a zone, a TTL, health settings) keeps them.
    fn rankings_hold_for(&self, config: &Config, geo: &Arc<GeoDb>) -> bool {
        let coverages = |c: &Config| {
            let mut used = [false; 3];
            for domain in &c.domains {
                used[domain.coverage as usize] = true;
            }
            used
        };
        Arc::ptr_eq(&self.geo, geo)
            && self.config.pops == config.pops
            && self.config.isps == config.isps
            && self.config.scoring == config.scoring
            && coverages(&self.config) == coverages(config)
    }

    /// The most specific zone holding `name`.
    pub fn zone_for(&self, name: &Name) -> Option<&Zone> {
        self.zones.iter().find(|z| z.contains(name))
    }

    /// The accelerated domain answering a name given in lower-case wire form: an
    /// exact name first, else the closest wildcard above it.
    pub fn domain_by_wire(&self, wire: &[u8]) -> Option<DomainId> {
        if let Some(id) = self.exact.get(wire) {
            return Some(*id);
        }
        if self.wildcards.is_empty() {
            return None;
        }
        // Strip one label at a time: `a.b.example.org.cdn.test.` tries
        // `b.example.org.cdn.test.`, then `example.org.cdn.test.`, ...
        let mut rest = wire;
        while let Some(&len) = rest.first() {
            if len == 0 {
                break;
            }
            rest = rest.get(1 + len as usize..)?;
            if let Some(id) = self.wildcards.get(rest) {
                return Some(*id);
            }
        }
        None
    }

    /// The accelerated domain answering `name`, if any.
    pub fn domain_for(&self, name: &Name) -> Option<DomainId> {
        self.domain_by_wire(&wire_lower(name))
    }

    /// The domain with this id.
    pub fn domain(&self, id: DomainId) -> &Domain {
        &self.config.domains[id.0 as usize]
    }

    /// Routes one query for a geo-routed name.
    pub fn decide(&self, id: DomainId, family: Family, client: &Client) -> Decision {
        self.router.decide_cached(
            &self.geo,
            &self.rankings,
            self.domain(id),
            family,
            client,
            &self.live.load(),
        )
    }
}

/// A snapshot's ranking cache, with the rankings by IPv4 address range where
/// they can be built.
fn rankings(config: &Config, router: &Router, geo: &GeoDb) -> RankingCache {
    let cache = RankingCache::new(geo.city_records(), config.isps.len());
    let began = Instant::now();
    let coverages = config.domains.iter().map(|d| d.coverage);
    match RangeRankings::build(router, geo, coverages, MAX_POP_COLUMNS) {
        Ok(by_range) => {
            tracing::info!(
                ranges = by_range.len(),
                rankings = by_range.rankings(),
                bytes = by_range.heap_bytes(),
                took_ms = began.elapsed().as_millis() as u64,
                "rankings by address range built"
            );
            cache.with_ranges(by_range)
        }
        Err(why) => {
            tracing::info!(%why, "rankings by address range not built; ranking per City record");
            cache
        }
    }
}

/// A name in lower-case DNS wire form (length-prefixed labels, root last), the key
/// the UDP fast path can build straight from a packet.
pub fn wire_lower(name: &Name) -> Box<[u8]> {
    let mut out = Vec::with_capacity(64);
    for label in name.iter() {
        out.push(label.len() as u8);
        out.extend(label.iter().map(u8::to_ascii_lowercase));
    }
    out.push(0);
    out.into_boxed_slice()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::testing;

    /// A reload that changes nothing rankings are computed from shares them; one
    /// that changes a POP, the weights, an ISP or the databases starts empty.
    #[test]
    fn rankings_are_kept_only_while_what_they_rank_is_unchanged() {
        let (_dir, first) = testing::snapshot();
        let kept = |change: fn(&mut Config), geo: &Arc<GeoDb>| {
            let mut config = first.config.clone();
            change(&mut config);
            let next = Snapshot::with_geo_after(config, Arc::clone(geo), &first).expect("snapshot");
            Arc::ptr_eq(&next.rankings, &first.rankings)
        };
        assert!(kept(|_| {}, &first.geo));
        assert!(kept(|c| c.domains[0].ttl += 1, &first.geo));
        assert!(!kept(|c| c.pops[0].coordinates.latitude += 1.0, &first.geo));
        assert!(!kept(|c| c.scoring.distance *= 2.0, &first.geo));
        assert!(!kept(|c| c.isps[0].asns.push(64_999), &first.geo));
        let (_other_dir, other) = testing::snapshot();
        assert!(!kept(|_| {}, &other.geo), "databases opened anew");
    }
}
