//! Why a client gets the answer it gets: location, every POP's score terms and
//! live health (status, smoothed load, shed share), the choice and the ECS scope.
//! The same decision code as the answer path runs on the same live view, so what
//! `explain` shows is what DNS answers. Served by `meridian explain` (offline, so
//! every POP as configured) and `GET /v1/explain` (live).

use std::fmt;
use std::net::IpAddr;

use serde::Serialize;

use crate::config::{AdminState, PopId, UnknownMeans};
use crate::geo::{Code, Coordinates, Description};
use crate::health::{Forced, HealthStatus};
use crate::routing::{Basis, Client, Family, IspRelation, shed_draw};
use crate::snapshot::Snapshot;

/// What to explain.
#[derive(Debug, Clone)]
pub struct Query {
    /// The client address, or the subnet's address.
    pub addr: IpAddr,
    /// The ECS source prefix, if the client is a subnet.
    pub ecs_prefix: Option<u8>,
    /// The name asked for; None means the first accelerated domain.
    pub name: Option<String>,
    pub family: Family,
}

/// Why a request to explain cannot be answered.
#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    #[error("{0}")]
    BadClient(String),
    #[error("qtype `{0}`: expected A or AAAA")]
    BadQtype(String),
    #[error("`{0}` is not a valid name")]
    BadName(String),
    #[error("{0} is not an accelerated name")]
    NotAccelerated(String),
    #[error("the config has no accelerated domains")]
    NoDomains,
}

impl Query {
    /// Parses the client (`ADDR` or `ADDR/PREFIX`), name and qtype as given by a user.
    pub fn parse(client: &str, name: Option<&str>, qtype: &str) -> Result<Self, ExplainError> {
        let (addr, ecs_prefix) =
            crate::cli::parse_client(client).map_err(ExplainError::BadClient)?;
        let family = match qtype.to_ascii_uppercase().as_str() {
            "A" => Family::V4,
            "AAAA" => Family::V6,
            _ => return Err(ExplainError::BadQtype(qtype.to_string())),
        };
        Ok(Self {
            addr,
            ecs_prefix,
            name: name.map(str::to_string),
            family,
        })
    }
}

/// The whole story of one routing decision.
#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    /// The name routed (as served under the CDN suffix).
    pub name: String,
    /// The accelerated domain it belongs to.
    pub domain: String,
    pub qtype: &'static str,
    pub client: ClientView,
    pub location: LocationView,
    /// Every POP, best score first; ineligible ones last with the reason.
    pub pops: Vec<PopView>,
    pub basis: Basis,
    /// Every eligible POP was down, so health was ignored.
    pub fail_open: bool,
    /// The best POP was shedding load: this client's draw against its share.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shed: Option<ShedView>,
    pub chosen: Vec<String>,
    pub addresses: Vec<IpAddr>,
    /// The domain's TTL, or the degraded TTL.
    pub ttl: u32,
    /// The ECS scope the answer carries (None without ECS).
    pub ecs_scope: Option<u8>,
}

/// The client as located.
#[derive(Debug, Clone, Serialize)]
pub struct ClientView {
    pub address: IpAddr,
    /// Bits used: the ECS source prefix after the policy cap, or the full address.
    pub prefix: u8,
    pub ecs: bool,
}

/// What the geo databases say.
#[derive(Debug, Clone, Serialize)]
pub struct LocationView {
    pub coordinates: Option<Coordinates>,
    pub country: Option<Code>,
    pub continent: Option<Code>,
    pub asn: Option<u32>,
    pub isp: Option<String>,
    pub city_prefix: u8,
    pub asn_prefix: u8,
    /// Prefix length of the block around the client in which every address has
    /// its ISP (0 without ISPs): what an answer that read the ISP is scoped to.
    pub isp_prefix: u8,
    #[serde(flatten)]
    pub names: Description,
}

/// How shedding decided for this client.
#[derive(Debug, Clone, Serialize)]
pub struct ShedView {
    /// The POP shedding.
    pub from: String,
    /// Its shed share, 0 to 1.
    pub share: f32,
    /// This client subnet's fixed draw in [0, 1): moved if below the share.
    pub draw: f64,
    pub moved: bool,
}

/// One POP's standing.
#[derive(Debug, Clone, Serialize)]
pub struct PopView {
    pub id: String,
    pub city: Option<String>,
    pub country: Code,
    pub isp: Option<String>,
    /// May be chosen: admin up, in coverage, an address of the family, and usable.
    pub eligible: bool,
    /// Reported health after anti-flap.
    pub health: HealthStatus,
    pub forced: Forced,
    /// Smoothed load, share of capacity; None without a fresh report.
    pub load: Option<f32>,
    /// Share of its clients sent to the runner-up.
    pub shed: f32,
    /// Answers from it get the degraded TTL.
    pub degraded: bool,
    /// Why not eligible.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub excluded: Option<&'static str>,
    pub distance_km: Option<f64>,
    pub isp_relation: Option<IspRelation>,
    pub isp_km: Option<f64>,
    pub score: Option<f64>,
}

/// Explains the decision for one client and name.
pub fn explain(snapshot: &Snapshot, query: &Query) -> Result<Explanation, ExplainError> {
    let config = &snapshot.config;
    let domain_id = match &query.name {
        Some(text) => {
            let name =
                crate::config::parse_name(text).map_err(|_| ExplainError::BadName(text.clone()))?;
            snapshot
                .domain_for(&name)
                .or_else(|| {
                    // Accept the customer's name too: www.example.com → its served name.
                    name.append_domain(&config.cdn_suffix)
                        .ok()
                        .and_then(|served| snapshot.domain_for(&served))
                })
                .ok_or_else(|| ExplainError::NotAccelerated(text.clone()))?
        }
        None if config.domains.is_empty() => return Err(ExplainError::NoDomains),
        None => crate::snapshot::DomainId(0),
    };
    let domain = snapshot.domain(domain_id);
    // As a query would be: the subnet as ECS, a bare address as the resolver.
    let client = Client::for_query(
        query.ecs_prefix.map(|prefix| (query.addr, prefix)),
        query.addr,
        &config.ecs,
    );
    let location = snapshot.geo.locate(client.addr);
    let isp = snapshot.router.client_isp(client.addr, &location);
    let live = snapshot.live.load();
    // The decision the answer path makes, scope included (which the ranges by
    // address may widen beyond the networks `location` was found in).
    let decision = snapshot.decide(domain_id, query.family, &client);

    let mut pops: Vec<PopView> = snapshot
        .router
        .score_all(&location, isp.isp, domain, query.family)
        .into_iter()
        .map(|(id, terms, eligible)| {
            let pop = config.pop(id);
            let state = live.pop(id);
            let excluded = if !eligible {
                Some(if pop.admin == AdminState::Down {
                    "admin down"
                } else if !domain.coverage.admits(pop.region) {
                    "outside the domain's coverage"
                } else {
                    "no address of this family"
                })
            } else if !state.usable {
                Some(match (state.forced, state.health) {
                    (Forced::Down, _) => "forced down",
                    (_, HealthStatus::Down) => "health down",
                    _ if config.health.unknown_means == UnknownMeans::Down => {
                        "no fresh report (unknown-means: down)"
                    }
                    _ => "not usable",
                })
            } else {
                None
            };
            PopView {
                id: pop.id.clone(),
                city: pop.city.clone(),
                country: pop.country,
                isp: pop.isp.map(|i| config.isps[i.0 as usize].name.clone()),
                eligible: excluded.is_none(),
                health: state.health,
                forced: state.forced,
                load: state.load.map(|l| round3(f64::from(l)) as f32),
                shed: round3(f64::from(state.shed)) as f32,
                degraded: state.degraded,
                excluded,
                distance_km: terms.map(|t| round1(t.distance_km)),
                isp_relation: terms.map(|t| t.isp),
                isp_km: terms.map(|t| t.isp_km),
                score: terms.map(|t| round1(t.total)),
            }
        })
        .collect();
    pops.sort_by(|a, b| {
        b.eligible.cmp(&a.eligible).then(
            a.score
                .unwrap_or(f64::MAX)
                .total_cmp(&b.score.unwrap_or(f64::MAX)),
        )
    });

    let chosen: Vec<PopId> = [decision.first, decision.second]
        .into_iter()
        .flatten()
        .take(usize::from(domain.answer_pops))
        .collect();
    let addresses = chosen
        .iter()
        .flat_map(|id| {
            let pop = config.pop(*id);
            let all: Vec<IpAddr> = match query.family {
                Family::V4 => pop.ipv4.iter().map(|a| IpAddr::V4(*a)).collect(),
                Family::V6 => pop.ipv6.iter().map(|a| IpAddr::V6(*a)).collect(),
            };
            let cap = if domain.max_addresses == 0 {
                all.len()
            } else {
                usize::from(domain.max_addresses)
            };
            all.into_iter().take(cap)
        })
        .collect();

    Ok(Explanation {
        name: domain.served.to_ascii(),
        domain: domain.name.to_ascii(),
        qtype: match query.family {
            Family::V4 => "A",
            Family::V6 => "AAAA",
        },
        client: ClientView {
            address: client.addr,
            prefix: client.prefix,
            ecs: client.ecs,
        },
        location: LocationView {
            coordinates: location.coordinates,
            country: location.country,
            continent: location.continent,
            asn: location.asn,
            isp: isp.isp.map(|i| config.isps[i.0 as usize].name.clone()),
            city_prefix: location.city_prefix,
            asn_prefix: location.asn_prefix,
            isp_prefix: isp.prefix,
            names: snapshot.geo.describe(client.addr),
        },
        pops,
        basis: decision.basis,
        fail_open: decision.fail_open,
        shed: decision.shed.map(|shed| ShedView {
            from: config.pop(shed.from).id.clone(),
            share: live.shed(shed.from),
            draw: round3(shed_draw(&client, domain)),
            moved: shed.moved,
        }),
        chosen: chosen.iter().map(|id| config.pop(*id).id.clone()).collect(),
        addresses,
        ttl: decision.ttl,
        ecs_scope: client.ecs.then_some(decision.scope),
    })
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let l = &self.location;
        writeln!(
            f,
            "name:      {} {} (domain {})",
            self.name, self.qtype, self.domain
        )?;
        let how = if self.client.ecs {
            "EDNS Client Subnet"
        } else {
            "resolver address"
        };
        writeln!(
            f,
            "client:    {}/{} ({how})",
            self.client.address, self.client.prefix
        )?;
        let place = match l.coordinates {
            Some(c) => format!("{:.4}, {:.4}", c.latitude, c.longitude),
            None => "unknown".into(),
        };
        let opt = |v: Option<String>| v.unwrap_or_else(|| "-".into());
        writeln!(
            f,
            "location:  {} {} {} [{}] (city network {}, /{})",
            opt(l.names.city.clone()),
            opt(l.country.map(|c| c.to_string())),
            opt(l.continent.map(|c| c.to_string())),
            place,
            opt(l.names.city_network.clone()),
            l.city_prefix
        )?;
        writeln!(
            f,
            "network:   {} {} isp {} (asn network {}, /{}; same isp across /{})",
            opt(l.asn.map(|a| format!("AS{a}"))),
            opt(l.names.organization.clone()),
            opt(l.isp.clone()),
            opt(l.names.asn_network.clone()),
            l.asn_prefix,
            l.isp_prefix
        )?;
        writeln!(f)?;
        writeln!(
            f,
            "  {:<8} {:<16} {:<3} {:<14} {:>10} {:>9} {:>10}  {:<8} {:>5} {:>5}",
            "pop", "city", "cc", "isp", "km", "isp km", "score", "health", "load", "shed"
        )?;
        for p in &self.pops {
            let num = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.1}"));
            let mark = if self.chosen.first() == Some(&p.id) {
                "*"
            } else {
                " "
            };
            let health = match p.forced {
                Forced::Auto => p.health.as_str().to_string(),
                forced => format!("forced-{}", forced.as_str()),
            };
            write!(
                f,
                "{mark} {:<8} {:<16} {:<3} {:<14} {:>10} {:>9} {:>10}  {:<8} {:>5} {:>5.2}",
                p.id,
                p.city.as_deref().unwrap_or("-"),
                p.country.as_str(),
                p.isp.as_deref().unwrap_or("-"),
                num(p.distance_km),
                num(p.isp_km),
                num(p.score),
                health,
                p.load
                    .map_or_else(|| "-".to_string(), |l| format!("{l:.2}")),
                p.shed
            )?;
            match p.excluded {
                Some(reason) => writeln!(f, "  excluded: {reason}")?,
                None => writeln!(f)?,
            }
        }
        writeln!(f)?;
        let basis = match self.basis {
            Basis::NetworkOverride { network } => format!("override for network {network}"),
            Basis::CountryOverride { country } => format!("override for country {country}"),
            Basis::ContinentOverride { continent } => format!("override for continent {continent}"),
            Basis::Score => "best score".into(),
            Basis::Fallback => "location unknown: configured fallback".into(),
        };
        if self.fail_open {
            writeln!(
                f,
                "fail open: every eligible POP is down; chosen ignoring health"
            )?;
        }
        if let Some(shed) = &self.shed {
            writeln!(
                f,
                "shedding:  {} sheds {:.3}; this subnet draws {:.3}: {}",
                shed.from,
                shed.share,
                shed.draw,
                if shed.moved {
                    "moved to the runner-up"
                } else {
                    "stays"
                }
            )?;
        }
        writeln!(
            f,
            "chosen:    {} ({basis})",
            if self.chosen.is_empty() {
                "none (NODATA)".into()
            } else {
                self.chosen.join(", ")
            }
        )?;
        let addrs: Vec<String> = self.addresses.iter().map(|a| a.to_string()).collect();
        writeln!(f, "answer:    {} ttl {}", addrs.join(" "), self.ttl)?;
        match self.ecs_scope {
            Some(scope) => writeln!(f, "ecs scope: /{scope}"),
            None => writeln!(f, "ecs scope: - (no ECS in the query)"),
        }
    }
}
