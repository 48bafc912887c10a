//! The configuration file as written: versioned YAML, kebab-case keys, unknown keys
//! rejected. Values an operator may get wrong are `Spanned` so validation can name
//! their line; `super::validate` turns this into a plain [`super::Config`].

use serde::Deserialize;
use serde_saphyr::Spanned;
use std::collections::BTreeMap;

/// The top level of `meridian.yaml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct File {
    /// Format version; only 1 exists. Optional here so that a missing version is
    /// reported with every other problem, rather than as serde's "missing field" at
    /// the end of the file.
    pub version: Option<Spanned<u32>>,
    #[serde(default)]
    pub listen: ListenFile,
    #[serde(default)]
    pub geodata: GeodataFile,
    /// Zones Meridian is authoritative for (spanned so an empty list has a line).
    pub zones: Spanned<Vec<ZoneFile>>,
    /// The zone accelerated domains are served under (`www.example.com` →
    /// `www.example.com.<cdn-suffix>`); must be one of `zones`.
    pub cdn_suffix: Spanned<String>,
    #[serde(default)]
    pub dns: DnsFile,
    #[serde(default)]
    pub ecs: EcsFile,
    #[serde(default)]
    pub scoring: ScoringFile,
    /// Where clients with no known location are sent.
    pub unknown_location: Option<Spanned<FallbackFile>>,
    /// ISP name → ASNs.
    #[serde(default)]
    pub isps: BTreeMap<String, Spanned<Vec<u32>>>,
    /// Spanned so an empty list has a line.
    pub pops: Spanned<Vec<Spanned<PopFile>>>,
    #[serde(default)]
    pub domains: Vec<Spanned<DomainFile>>,
    #[serde(default)]
    pub overrides: OverridesFile,
    /// Who may report POP health and load, and how reports count.
    #[serde(default)]
    pub health: HealthFile,
    /// DNS over HTTPS: which peers may say who the client is.
    #[serde(default)]
    pub doh: DohFile,
    /// Certificate and key of the DoH-over-TLS listener.
    pub tls: Option<Spanned<TlsFile>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ListenFile {
    #[serde(default)]
    pub dns: Vec<Spanned<String>>,
    pub http: Option<Spanned<String>>,
    /// DNS over HTTPS over TLS (needs `tls`).
    pub doh_tls: Option<Spanned<String>>,
    /// The HTTP 302 router for domains with `routing: http`.
    pub http_router: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DohFile {
    /// Peers (CIDRs or addresses) whose `Forwarded` / `X-Forwarded-For` is believed.
    #[serde(default)]
    pub trusted_proxies: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TlsFile {
    pub certificate: Spanned<String>,
    pub key: Spanned<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct GeodataFile {
    pub city: Option<Spanned<String>>,
    pub asn: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ZoneFile {
    pub origin: Spanned<String>,
    pub file: Spanned<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DnsFile {
    pub max_udp_payload: Option<Spanned<u16>>,
    pub fast_path: Option<bool>,
    pub udp_threads: Option<Spanned<usize>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct EcsFile {
    pub max_source_prefix_v4: Option<Spanned<u8>>,
    pub max_source_prefix_v6: Option<Spanned<u8>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ScoringFile {
    pub distance_weight: Option<Spanned<f64>>,
    pub isp_match_bonus_km: Option<Spanned<f64>>,
    pub isp_mismatch_penalty_km: Option<Spanned<f64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FallbackFile {
    #[serde(default)]
    pub pops: Vec<String>,
    pub country: Option<String>,
    pub latitude: Option<f64>,
    pub longitude: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PopFile {
    pub id: Spanned<String>,
    pub city: Option<String>,
    pub country: Spanned<String>,
    pub continent: Option<Spanned<String>>,
    pub latitude: Spanned<f64>,
    pub longitude: Spanned<f64>,
    pub isp: Option<Spanned<String>>,
    pub region: Option<Spanned<String>>,
    #[serde(default)]
    pub addresses: Vec<Spanned<String>>,
    pub capacity: Option<Spanned<u64>>,
    pub admin: Option<Spanned<String>>,
    /// Host name or address put in 302 `Location`s to this POP.
    pub redirect_host: Option<Spanned<String>>,
    /// Cache nodes a path is hashed over in 302 routing.
    #[serde(default)]
    pub cache_nodes: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DomainFile {
    pub name: Spanned<String>,
    #[serde(default)]
    pub origins: Vec<Spanned<OriginFile>>,
    pub coverage: Option<Spanned<String>>,
    pub ttl: Option<Spanned<u32>>,
    #[serde(default)]
    pub answer: AnswerFile,
    /// `dns` (default) or `http` (also answered by the 302 router).
    pub routing: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct OriginFile {
    pub host: String,
    pub port: Option<u16>,
    pub scheme: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct AnswerFile {
    pub pops: Option<Spanned<u8>>,
    pub max_addresses: Option<Spanned<u8>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct OverridesFile {
    #[serde(default)]
    pub networks: Vec<Spanned<NetworkOverrideFile>>,
    #[serde(default)]
    pub countries: BTreeMap<String, Spanned<Vec<String>>>,
    #[serde(default)]
    pub continents: BTreeMap<String, Spanned<Vec<String>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct NetworkOverrideFile {
    pub network: String,
    pub pops: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct HealthFile {
    #[serde(default)]
    pub tokens: Vec<Spanned<TokenFile>>,
    #[serde(default)]
    pub admin_tokens: Vec<Spanned<String>>,
    pub expire_after: Option<Spanned<f64>>,
    pub unknown_means: Option<Spanned<String>>,
    pub down_after: Option<Spanned<u32>>,
    pub up_after: Option<Spanned<u32>>,
    pub load_half_life: Option<Spanned<f64>>,
    pub low_watermark: Option<Spanned<f64>>,
    pub high_watermark: Option<Spanned<f64>>,
    pub max_shift_per_second: Option<Spanned<f64>>,
    pub degraded_ttl: Option<Spanned<u32>>,
}

/// A report token and the POPs it may report for (`["*"]`: every POP).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TokenFile {
    pub token: Spanned<String>,
    pub pops: Spanned<Vec<Spanned<String>>>,
}
