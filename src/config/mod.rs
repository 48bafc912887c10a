//! Configuration: the YAML file format (`file`), and the validated model the rest of
//! Meridian reads. Validation reports every problem at once, each with its file and
//! line; a config that fails it is never served.
//!
//! Zone files and geo databases are named here but read by `snapshot`, which owns
//! everything that must be loaded together and swapped in at once.

mod file;
mod problem;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use hickory_proto::rr::Name;
use ipnetwork::IpNetwork;
use serde_saphyr::{Location, Spanned};

pub use problem::{ConfigError, Problem};

use crate::geo::{Code, Coordinates};

/// Default TTL of geo-routed answers: short, so clients follow health changes.
pub const DEFAULT_TTL: u32 = 30;
/// Longest TTL accepted for geo-routed answers (one day).
pub const MAX_TTL: u32 = 86_400;
/// Default cap on the ECS source prefix used for IPv4 (RFC 7871 section 11.1 advice).
pub const DEFAULT_ECS_MAX_V4: u8 = 24;
/// Default cap on the ECS source prefix used for IPv6.
pub const DEFAULT_ECS_MAX_V6: u8 = 56;
/// Largest UDP payload Meridian sends by default: the DNS flag day 2020 value, safe
/// from IP fragmentation on nearly every path.
pub const DEFAULT_MAX_UDP_PAYLOAD: u16 = 1232;
/// Score credit, in km, for a POP on the client's own ISP.
pub const DEFAULT_ISP_MATCH_BONUS_KM: f64 = 2_000.0;
/// Score penalty, in km, for a POP on a different known ISP than the client's.
pub const DEFAULT_ISP_MISMATCH_PENALTY_KM: f64 = 5_000.0;
/// Default DNS listener for `serve` when neither config nor flags name one.
pub const DEFAULT_DNS_LISTEN: &str = "127.0.0.1:5353";
/// Default listener of the HTTP 302 router in the demo and the reference world.
pub const DEFAULT_HTTP_ROUTER_LISTEN: &str = "127.0.0.1:8080";
/// Default control-plane HTTP listener.
pub const DEFAULT_HTTP_LISTEN: &str = "127.0.0.1:8053";
/// Seconds without a report after which a POP's health is unknown: a few missed
/// reports at the usual one a second, not one lost packet.
pub const DEFAULT_EXPIRE_AFTER_SECONDS: f64 = 30.0;
/// Consecutive unhealthy reports before a POP is taken down.
pub const DEFAULT_DOWN_AFTER: u32 = 3;
/// Consecutive healthy reports before a down POP is used again.
pub const DEFAULT_UP_AFTER: u32 = 3;
/// Most consecutive reports a flip may wait for.
pub const MAX_STREAK: u32 = 1_000;
/// Half-life of the load average, in seconds: a step in load is half felt after it.
pub const DEFAULT_LOAD_HALF_LIFE_SECONDS: f64 = 10.0;
/// Load (share of capacity) above which a POP starts shedding clients.
pub const DEFAULT_LOW_WATERMARK: f64 = 0.75;
/// Load at which a POP takes no new clients.
pub const DEFAULT_HIGH_WATERMARK: f64 = 0.95;
/// Share of a POP's clients that may move, per second, as its load changes: at
/// 0.05 a full swing takes 20 s, so one report cannot move the world.
pub const DEFAULT_MAX_SHIFT_PER_SECOND: f64 = 0.05;
/// TTL of answers from a degraded POP, so that clients move soon after it recovers
/// or gets worse (gdnsd shortens TTLs the same way).
pub const DEFAULT_DEGRADED_TTL: u32 = 10;
/// Longest `expire-after` and `load-half-life`, in seconds (one day).
pub const MAX_HEALTH_SECONDS: f64 = 86_400.0;

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from; relative paths inside were resolved against its directory.
    pub source: PathBuf,
    /// The command-line settings applied over the file, so that a reload reading
    /// `source` again applies them again.
    pub overlay: Overlay,
    pub listen: Listen,
    pub geodata: Geodata,
    pub zones: Vec<ZoneSource>,
    /// The zone accelerated domains are served under.
    pub cdn_suffix: Name,
    pub dns: DnsSettings,
    pub ecs: EcsPolicy,
    pub scoring: Weights,
    pub unknown_location: Fallback,
    pub isps: Vec<Isp>,
    pub pops: Vec<Pop>,
    pub domains: Vec<Domain>,
    pub overrides: Overrides,
    /// Live health and load: who may report, and how reports count.
    pub health: HealthSettings,
    /// DNS over HTTPS and the 302 router: whose forwarding headers are believed.
    pub doh: DohSettings,
    /// Certificate and key of the DoH-over-TLS listener.
    pub tls: Option<TlsFiles>,
    /// Line of each domain's and each zone's declaration, for problems found later
    /// (a geo name that clashes with a static record).
    pub lines: Lines,
}

/// Where declarations sit in the config file.
#[derive(Debug, Clone, Default)]
pub struct Lines {
    pub domains: Vec<u64>,
    pub zones: Vec<u64>,
    pub geodata_city: u64,
    pub geodata_asn: u64,
    /// The `tls:` section, for a certificate or key that cannot be read.
    pub tls: u64,
}

/// Sockets to serve on.
#[derive(Debug, Clone, Default)]
pub struct Listen {
    /// DNS over UDP and TCP, each address both.
    pub dns: Vec<SocketAddr>,
    /// Control-plane HTTP (DoH at `/dns-query` too).
    pub http: Option<SocketAddr>,
    /// DNS over HTTPS over TLS, HTTP/2 and HTTP/1.1.
    pub doh_tls: Option<SocketAddr>,
    /// The HTTP 302 router (plain HTTP).
    pub http_router: Option<SocketAddr>,
}

/// DNS over HTTPS (and the 302 router): who may speak for the client.
#[derive(Debug, Clone, Default)]
pub struct DohSettings {
    /// Peers whose `Forwarded: for=` or `X-Forwarded-For` (and `X-Forwarded-Proto`)
    /// is believed; any other peer is the client itself.
    pub trusted_proxies: Vec<IpNetwork>,
}

/// PEM files of the DoH-over-TLS listener, read at start, on reload and on SIGHUP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, leaf first.
    pub certificate: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// How clients of a domain are sent to a POP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RoutingMode {
    /// DNS answers only (and DoH).
    Dns,
    /// The 302 router answers for it too (DNS still does).
    Http,
}

/// Geo database files.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Geodata {
    pub city: Option<PathBuf>,
    pub asn: Option<PathBuf>,
}

/// A zone and the file it comes from.
#[derive(Debug, Clone)]
pub struct ZoneSource {
    pub origin: Name,
    pub file: PathBuf,
}

/// DNS transport settings.
#[derive(Debug, Clone)]
pub struct DnsSettings {
    /// Largest UDP response sent, whatever the requester offers.
    pub max_udp_payload: u16,
    /// Answer the common UDP query from pre-built records (off: every query takes
    /// the full hickory-proto path; both give the same answers).
    pub fast_path: bool,
    /// UDP worker threads per listener; 0 means one per core.
    pub udp_threads: usize,
}

/// How much of a client subnet Meridian uses.
#[derive(Debug, Clone, Copy)]
pub struct EcsPolicy {
    pub max_source_prefix_v4: u8,
    pub max_source_prefix_v6: u8,
}

impl EcsPolicy {
    /// The most bits of an address of this family Meridian uses.
    pub fn cap(&self, addr: IpAddr) -> u8 {
        match addr {
            IpAddr::V4(_) => self.max_source_prefix_v4,
            IpAddr::V6(_) => self.max_source_prefix_v6,
        }
    }
}

/// Scoring weights: one score per POP, in kilometre equivalents, lower is better.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Weights {
    /// Multiplier on great-circle distance.
    pub distance: f64,
    /// Subtracted for a POP on the client's ISP.
    pub isp_match_bonus_km: f64,
    /// Added for a POP on another known ISP, when the client's ISP is known.
    pub isp_mismatch_penalty_km: f64,
}

/// Where a client with no known location goes.
#[derive(Debug, Clone)]
pub enum Fallback {
    /// These POPs, in order of preference.
    Pops(Vec<PopId>),
    /// As if the client were in this country (its override, else its POPs).
    Country(Code),
    /// As if the client were at this point.
    Coordinates(Coordinates),
}

/// Index of a POP in [`Config::pops`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PopId(pub u16);

impl PopId {
    /// The index as usize.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// Index of an ISP in [`Config::isps`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IspId(pub u16);

/// An ISP: a name and the autonomous systems that belong to it.
#[derive(Debug, Clone, PartialEq)]
pub struct Isp {
    pub name: String,
    pub asns: Vec<u32>,
}

/// Which side of the mainland-China border a POP is on (licensing decides which
/// domains it may serve).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Region {
    MainlandChina,
    Global,
}

/// Operator's say over a POP, above anything health reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AdminState {
    /// Serves when eligible.
    Up,
    /// Never chosen.
    Down,
}

/// A point of presence.
#[derive(Debug, Clone, PartialEq)]
pub struct Pop {
    pub id: String,
    pub city: Option<String>,
    pub country: Code,
    pub continent: Option<Code>,
    pub coordinates: Coordinates,
    pub isp: Option<IspId>,
    pub region: Region,
    pub ipv4: Vec<Ipv4Addr>,
    pub ipv6: Vec<Ipv6Addr>,
    /// What the POP is sized for; reported load is a share of it.
    pub capacity: u64,
    pub admin: AdminState,
    /// Host in 302 `Location`s to this POP (`redirect-host`); None: the POP's first
    /// address of the client's family (IPv6 in brackets).
    pub redirect_host: Option<String>,
    /// Cache nodes a path is hashed over (rendezvous hashing); empty: `redirect_host`.
    pub cache_nodes: Vec<String>,
}

/// Which POPs may serve a domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Coverage {
    Global,
    MainlandChina,
    GlobalExcludingMainlandChina,
}

impl Coverage {
    /// The name as written in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            Coverage::Global => "global",
            Coverage::MainlandChina => "mainland-china",
            Coverage::GlobalExcludingMainlandChina => "global-excluding-mainland-china",
        }
    }

    /// Whether a POP in `region` may serve a domain with this coverage.
    pub fn admits(self, region: Region) -> bool {
        match self {
            Coverage::Global => true,
            Coverage::MainlandChina => region == Region::MainlandChina,
            Coverage::GlobalExcludingMainlandChina => region == Region::Global,
        }
    }
}

/// Where the cache node fetches a domain's content from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub host: String,
    pub port: u16,
    pub https: bool,
}

/// An accelerated domain.
#[derive(Debug, Clone)]
pub struct Domain {
    /// The customer's name, e.g. `www.example.com.` or `*.example.org.`.
    pub name: Name,
    /// The name Meridian answers for: `name` under the CDN suffix.
    pub served: Name,
    pub origins: Vec<Origin>,
    pub coverage: Coverage,
    pub ttl: u32,
    /// POPs whose addresses go in one answer: 1, or 2 for client-side failover.
    pub answer_pops: u8,
    /// Most addresses of one POP per answer; 0 means all.
    pub max_addresses: u8,
    /// Whether the 302 router answers for it too.
    pub routing: RoutingMode,
}

impl Domain {
    /// Whether the name is a wildcard (`*.example.org`).
    pub fn is_wildcard(&self) -> bool {
        self.name.is_wildcard()
    }
}

/// Operator overrides, consulted before scoring.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// Subnet → POPs, longest prefix wins.
    pub networks: Vec<NetworkOverride>,
    pub countries: HashMap<Code, Vec<PopId>>,
    pub continents: HashMap<Code, Vec<PopId>>,
}

/// A subnet sent to a list of POPs.
#[derive(Debug, Clone)]
pub struct NetworkOverride {
    pub network: IpNetwork,
    pub pops: Vec<PopId>,
}

/// Live health and load: who may report for which POP, who may administer, and how
/// reports turn into answers.
#[derive(Debug, Clone)]
pub struct HealthSettings {
    /// Report tokens, each with the POPs it may report for.
    pub tokens: Vec<ReportToken>,
    /// Tokens for the admin API (drain, undrain, force).
    pub admin_tokens: Vec<Secret>,
    /// A POP with no report for this long is unknown.
    pub expire_after: Duration,
    /// What an unknown POP is taken for.
    pub unknown_means: UnknownMeans,
    /// Consecutive unhealthy reports that take a POP down.
    pub down_after: u32,
    /// Consecutive healthy reports that bring a down POP back.
    pub up_after: u32,
    /// Half-life of the load average (zero: no smoothing).
    pub load_half_life: Duration,
    /// Load above which a POP sheds a growing share of its clients.
    pub low_watermark: f64,
    /// Load at which a POP takes no new clients.
    pub high_watermark: f64,
    /// Share of a POP's clients that may move per second as its load changes.
    pub max_shift_per_second: f64,
    /// TTL cap for answers from a degraded POP.
    pub degraded_ttl: u32,
}

impl Default for HealthSettings {
    /// No tokens (nobody reports, every POP trusted as configured) and the
    /// documented defaults.
    fn default() -> Self {
        Self {
            tokens: Vec::new(),
            admin_tokens: Vec::new(),
            expire_after: Duration::from_secs_f64(DEFAULT_EXPIRE_AFTER_SECONDS),
            unknown_means: UnknownMeans::Static,
            down_after: DEFAULT_DOWN_AFTER,
            up_after: DEFAULT_UP_AFTER,
            load_half_life: Duration::from_secs_f64(DEFAULT_LOAD_HALF_LIFE_SECONDS),
            low_watermark: DEFAULT_LOW_WATERMARK,
            high_watermark: DEFAULT_HIGH_WATERMARK,
            max_shift_per_second: DEFAULT_MAX_SHIFT_PER_SECOND,
            degraded_ttl: DEFAULT_DEGRADED_TTL,
        }
    }
}

/// A token that may report health, and for which POPs.
#[derive(Debug, Clone)]
pub struct ReportToken {
    pub token: Secret,
    pub pops: TokenScope,
}

/// The POPs a report token speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenScope {
    /// `pops: ["*"]`.
    All,
    /// The POPs listed.
    Only(Vec<PopId>),
}

impl TokenScope {
    /// Whether a token with this scope may report for `pop`.
    pub fn admits(&self, pop: PopId) -> bool {
        match self {
            TokenScope::All => true,
            TokenScope::Only(pops) => pops.contains(&pop),
        }
    }
}

/// What a POP with no fresh report is taken for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum UnknownMeans {
    /// Trust the config: the POP serves (the default; a broken reporter does not
    /// take the CDN down).
    Static,
    /// Down until it reports healthy `up-after` times.
    Down,
}

/// A bearer token from the config: compared in constant time and never printed,
/// so neither timing nor a debug log gives it away.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// Wraps a token.
    pub fn new(token: impl Into<String>) -> Self {
        Self(token.into())
    }

    /// Whether `offered` is this token. The time taken depends on the lengths
    /// only, never on where the two first differ.
    pub fn matches(&self, offered: &[u8]) -> bool {
        use subtle::ConstantTimeEq;
        bool::from(self.0.as_bytes().ct_eq(offered))
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Settings given on the command line, which win over the file.
#[derive(Debug, Clone, Default)]
pub struct Overlay {
    pub dns_listen: Vec<SocketAddr>,
    pub http_listen: Option<SocketAddr>,
    /// The HTTP 302 router's listener (`--http-router-listen`).
    pub http_router_listen: Option<SocketAddr>,
    /// The DoH-over-TLS listener (`--doh-tls-listen`).
    pub doh_tls_listen: Option<SocketAddr>,
    pub city_db: Option<PathBuf>,
    pub asn_db: Option<PathBuf>,
    /// Reload on SIGHUP only, not when a file changes (`--no-watch`).
    pub no_watch: bool,
}

impl Config {
    /// Reads and validates a config file, then applies command-line settings.
    pub fn load(path: &Path, overlay: &Overlay) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::one(Problem::file(path, format!("cannot read: {e}"))))?;
        let mut config = Self::parse(&text, path)?;
        config.apply(overlay);
        Ok(config)
    }

    /// Validates config text; `path` names it in problems and anchors relative paths.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let file: file::File = serde_saphyr::from_str(text).map_err(|e| {
            let (line, column) = e
                .location()
                .map(|l| (l.line(), Some(l.column())))
                .unwrap_or((0, None));
            ConfigError::one(Problem::at(
                path,
                line,
                column,
                yaml_message(&e, text, e.location()),
            ))
        })?;
        Validator::new(path).run(file)
    }

    /// Applies command-line settings over the file's.
    pub fn apply(&mut self, overlay: &Overlay) {
        if !overlay.dns_listen.is_empty() {
            self.listen.dns = overlay.dns_listen.clone();
        }
        if overlay.http_listen.is_some() {
            self.listen.http = overlay.http_listen;
        }
        if overlay.http_router_listen.is_some() {
            self.listen.http_router = overlay.http_router_listen;
        }
        if overlay.doh_tls_listen.is_some() {
            self.listen.doh_tls = overlay.doh_tls_listen;
        }
        if let Some(city) = &overlay.city_db {
            self.geodata.city = Some(city.clone());
        }
        if let Some(asn) = &overlay.asn_db {
            self.geodata.asn = Some(asn.clone());
        }
        self.overlay = overlay.clone();
    }

    /// The POP with this id.
    pub fn pop(&self, id: PopId) -> &Pop {
        &self.pops[id.index()]
    }

    /// Looks a POP up by its name.
    pub fn pop_by_name(&self, name: &str) -> Option<PopId> {
        self.pops
            .iter()
            .position(|p| p.id == name)
            .map(|i| PopId(i as u16))
    }
}

/// serde-saphyr's message without its own location prefix and snippet (ours carries
/// the place), with the key and the expected value spelt out where the library only
/// names the Rust type that failed ("invalid u8").
fn yaml_message(error: &serde_saphyr::Error, text: &str, at: Option<Location>) -> String {
    let rendered = error.without_snippet().to_string();
    let mut message = rendered.lines().next().unwrap_or("invalid YAML").trim();
    // Drop a trailing " at line X, column Y" the library may add; our prefix has it.
    if let Some(i) = message.find(" at line ") {
        message = &message[..i];
    }
    // A hint to the library's caller, not to the operator.
    if let Some(i) = message.find(", set DuplicateKeyPolicy") {
        message = &message[..i];
    }
    let expected = match message {
        "invalid u8" => "a whole number from 0 to 255",
        "invalid u16" => "a whole number from 0 to 65535",
        "invalid u32" => "a whole number from 0 to 4294967295",
        "invalid u64" | "invalid usize" => "a whole number, 0 or more",
        "invalid floating point" => "a number",
        "invalid bool" => "true or false",
        _ => return message.to_string(),
    };
    let line = at.and_then(|at| {
        text.lines()
            .nth(usize::try_from(at.line()).ok()?.checked_sub(1)?)
            .map(|l| (l, at.column()))
    });
    match line.map(|(line, column)| key_and_value(line, column)) {
        Some((Some(key), value)) => format!("`{key}`: expected {expected}, found `{value}`"),
        Some((None, value)) => format!("expected {expected}, found `{value}`"),
        None => format!("{message}: expected {expected}"),
    }
}

/// The mapping key a value on this line belongs to (the last `key:` before the
/// 1-based `column`), and the scalar at `column`. Good for the one-line block and
/// flow forms a config is written in; None where the line says nothing.
fn key_and_value(line: &str, column: u64) -> (Option<&str>, &str) {
    let split = line
        .char_indices()
        .nth(usize::try_from(column.saturating_sub(1)).unwrap_or(usize::MAX))
        .map_or(line.len(), |(i, _)| i);
    let (before, from) = line.split_at(split);
    let value = from
        .split(['#', ',', ']', '}'])
        .next()
        .unwrap_or_default()
        .trim();
    // A key ends in `: ` (or `:` at the end of what comes before); a bare colon
    // inside a value such as an IPv6 address is not followed by a space.
    let before = before.trim_end();
    let key_end = if before.ends_with(':') {
        Some(before.len() - 1)
    } else {
        before.rfind(": ")
    };
    let key = key_end.and_then(|end| {
        before[..end]
            .rsplit([' ', '{', ',', '['])
            .next()
            .map(|k| k.trim_matches(['"', '\'']))
            .filter(|k| !k.is_empty())
    });
    (key, value)
}

/// Collects problems while turning the file format into a [`Config`].
struct Validator<'p> {
    path: &'p Path,
    base: PathBuf,
    problems: Vec<Problem>,
}

impl<'p> Validator<'p> {
    fn new(path: &'p Path) -> Self {
        let base = path
            .parent()
            .map(Path::to_path_buf)
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or_else(|| PathBuf::from("."));
        Self {
            path,
            base,
            problems: Vec::new(),
        }
    }

    fn problem(&mut self, at: &Location, message: impl Into<String>) {
        self.problems.push(Problem::at(
            self.path,
            at.line(),
            Some(at.column()),
            message,
        ));
    }

    fn resolve_path(&self, text: &str) -> PathBuf {
        let path = Path::new(text);
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.base.join(path)
        }
    }

    fn run(mut self, file: file::File) -> Result<Config, ConfigError> {
        match &file.version {
            None => self.problems.push(Problem::file(
                self.path,
                "version: missing; expected `version: 1` at the top level",
            )),
            Some(v) if v.value != 1 => {
                self.problem(
                    &v.referenced,
                    format!(
                        "version: unsupported config version {}: expected 1",
                        v.value
                    ),
                );
            }
            Some(_) => {}
        }
        let listen = self.listen(&file.listen);
        let geodata = Geodata {
            city: file
                .geodata
                .city
                .as_ref()
                .map(|p| self.resolve_path(&p.value)),
            asn: file
                .geodata
                .asn
                .as_ref()
                .map(|p| self.resolve_path(&p.value)),
        };
        let (zones, zone_lines) = self.zones(&file.zones);
        let cdn_suffix = self.cdn_suffix(&file.cdn_suffix, &zones);
        let dns = self.dns(&file.dns);
        let ecs = self.ecs(&file.ecs);
        let scoring = self.scoring(&file.scoring);
        let isps = self.isps(&file.isps);
        let pops = self.pops(&file.pops, &isps);
        let pop_index: HashMap<&str, PopId> = pops
            .iter()
            .enumerate()
            .map(|(i, p)| (p.id.as_str(), PopId(i as u16)))
            .collect();
        let unknown_location = self.fallback(file.unknown_location.as_ref(), &pop_index);
        let (domains, domain_lines) = match &cdn_suffix {
            Some(suffix) => self.domains(&file.domains, suffix, &pops),
            None => (Vec::new(), Vec::new()),
        };
        let overrides = self.overrides(&file.overrides, &pop_index);
        let health = self.health(&file.health, &pop_index, &pops);
        let doh = self.doh(&file.doh);
        let tls = file.tls.as_ref().map(|t| TlsFiles {
            certificate: self.resolve_path(&t.value.certificate.value),
            key: self.resolve_path(&t.value.key.value),
        });
        if let (Some(at), None) = (&file.listen.doh_tls, &file.tls) {
            self.problem(
                &at.referenced,
                "listen.doh-tls: no `tls:` section: expected `tls: {certificate: FILE, key: FILE}`",
            );
        }
        if let (Fallback::Country(code), Some(at)) = (&unknown_location, &file.unknown_location)
            && !pops.iter().any(|p| p.country == *code)
            && !overrides.countries.contains_key(code)
        {
            // Otherwise unknown clients would silently be scored from wherever the
            // first POP happens to be.
            self.problem(
                &at.referenced,
                format!(
                    "unknown-location: country {code} has no POP and no entry under overrides.countries"
                ),
            );
        }

        if !self.problems.is_empty() {
            // Problems are found rule by rule; the operator reads the file top-down.
            // The sort is stable, and file-wide problems (no line) come first.
            self.problems.sort_by_key(|p| p.line.unwrap_or(0));
            return Err(self.problems.into());
        }
        Ok(Config {
            source: self.path.to_path_buf(),
            overlay: Overlay::default(),
            listen,
            geodata,
            zones,
            cdn_suffix: cdn_suffix.unwrap_or_else(Name::root),
            dns,
            ecs,
            scoring,
            unknown_location,
            isps,
            pops,
            domains,
            overrides,
            health,
            doh,
            tls,
            lines: Lines {
                domains: domain_lines,
                zones: zone_lines,
                geodata_city: file
                    .geodata
                    .city
                    .as_ref()
                    .map_or(0, |s| s.referenced.line()),
                geodata_asn: file.geodata.asn.as_ref().map_or(0, |s| s.referenced.line()),
                tls: file.tls.as_ref().map_or(0, |t| t.referenced.line()),
            },
        })
    }

    fn listen(&mut self, listen: &file::ListenFile) -> Listen {
        let mut out = Listen::default();
        for addr in &listen.dns {
            match SocketAddr::from_str(&addr.value) {
                Ok(a) => out.dns.push(a),
                Err(_) => self.problem(
                    &addr.referenced,
                    format!("listen.dns: `{}` is not an address:port", addr.value),
                ),
            }
        }
        out.http = self.socket_addr(listen.http.as_ref(), "http");
        out.doh_tls = self.socket_addr(listen.doh_tls.as_ref(), "doh-tls");
        out.http_router = self.socket_addr(listen.http_router.as_ref(), "http-router");
        out
    }

    fn socket_addr(&mut self, addr: Option<&Spanned<String>>, key: &str) -> Option<SocketAddr> {
        let addr = addr?;
        let parsed = SocketAddr::from_str(addr.value.trim()).ok();
        if parsed.is_none() {
            self.problem(
                &addr.referenced,
                format!("listen.{key}: `{}` is not an address:port", addr.value),
            );
        }
        parsed
    }

    fn doh(&mut self, doh: &file::DohFile) -> DohSettings {
        let mut out = DohSettings::default();
        for proxy in &doh.trusted_proxies {
            let text = proxy.value.trim();
            let network = match IpNetwork::from_str(text) {
                Ok(n) => n,
                Err(e) => {
                    self.problem(
                        &proxy.referenced,
                        format!("doh.trusted-proxies: `{text}` is not an address or network: {e}"),
                    );
                    continue;
                }
            };
            if network.network() != network.ip() {
                self.problem(
                    &proxy.referenced,
                    format!(
                        "doh.trusted-proxies: {network} has host bits set (did you mean {}/{}?)",
                        network.network(),
                        network.prefix()
                    ),
                );
                continue;
            }
            out.trusted_proxies.push(network);
        }
        out
    }

    fn zones(&mut self, zones: &Spanned<Vec<file::ZoneFile>>) -> (Vec<ZoneSource>, Vec<u64>) {
        let mut out = Vec::new();
        let mut lines = Vec::new();
        let mut seen: HashMap<Name, u64> = HashMap::new();
        for zone in &zones.value {
            let Some(origin) = self.name(&zone.origin, "zone origin") else {
                continue;
            };
            if let Some(first) = seen.insert(origin.clone(), zone.origin.referenced.line()) {
                self.problem(
                    &zone.origin.referenced,
                    format!("zone {origin} is listed twice (first on line {first})"),
                );
                continue;
            }
            lines.push(zone.origin.referenced.line());
            out.push(ZoneSource {
                origin,
                file: self.resolve_path(&zone.file.value),
            });
        }
        if zones.value.is_empty() {
            self.problem(&zones.referenced, "zones: at least one zone is needed");
        }
        (out, lines)
    }

    /// Parses a domain name as written (trailing dot optional), lower-cased, as an FQDN.
    fn name(&mut self, text: &Spanned<String>, what: &str) -> Option<Name> {
        match parse_name(&text.value) {
            Ok(name) => Some(name),
            Err(reason) => {
                self.problem(
                    &text.referenced,
                    format!(
                        "{what} `{}` is not a valid domain name: {reason}",
                        text.value
                    ),
                );
                None
            }
        }
    }

    fn cdn_suffix(&mut self, suffix: &Spanned<String>, zones: &[ZoneSource]) -> Option<Name> {
        let name = self.name(suffix, "cdn-suffix")?;
        // With no valid zone at all, that is the problem already reported.
        if !zones.is_empty() && !zones.iter().any(|z| z.origin.zone_of(&name)) {
            let origins: Vec<String> = zones.iter().map(|z| z.origin.to_string()).collect();
            self.problem(
                &suffix.referenced,
                format!(
                    "cdn-suffix {name} is not inside any configured zone: expected one of {} or a name under it",
                    origins.join(", ")
                ),
            );
        }
        // Still returned, so that the domains are checked in the same pass.
        Some(name)
    }

    fn dns(&mut self, dns: &file::DnsFile) -> DnsSettings {
        let max_udp_payload = match &dns.max_udp_payload {
            Some(v) if v.value < 512 => {
                self.problem(
                    &v.referenced,
                    format!(
                        "dns.max-udp-payload {} is below the DNS minimum of 512",
                        v.value
                    ),
                );
                DEFAULT_MAX_UDP_PAYLOAD
            }
            Some(v) => v.value,
            None => DEFAULT_MAX_UDP_PAYLOAD,
        };
        let udp_threads = match &dns.udp_threads {
            Some(v) if v.value > 256 => {
                self.problem(
                    &v.referenced,
                    format!("dns.udp-threads {} is above the limit of 256", v.value),
                );
                0
            }
            Some(v) => v.value,
            None => 0,
        };
        DnsSettings {
            max_udp_payload,
            fast_path: dns.fast_path.unwrap_or(true),
            udp_threads,
        }
    }

    fn ecs(&mut self, ecs: &file::EcsFile) -> EcsPolicy {
        let mut cap = |v: &Option<Spanned<u8>>, max: u8, default: u8, key: &str| match v {
            Some(v) if v.value > max => {
                self.problem(
                    &v.referenced,
                    format!(
                        "ecs.{key} {} is longer than an address ({max} bits)",
                        v.value
                    ),
                );
                default
            }
            Some(v) => v.value,
            None => default,
        };
        EcsPolicy {
            max_source_prefix_v4: cap(
                &ecs.max_source_prefix_v4,
                32,
                DEFAULT_ECS_MAX_V4,
                "max-source-prefix-v4",
            ),
            max_source_prefix_v6: cap(
                &ecs.max_source_prefix_v6,
                128,
                DEFAULT_ECS_MAX_V6,
                "max-source-prefix-v6",
            ),
        }
    }

    fn scoring(&mut self, scoring: &file::ScoringFile) -> Weights {
        let mut weight = |v: &Option<Spanned<f64>>, default: f64, key: &str| match v {
            Some(v) if !v.value.is_finite() || v.value < 0.0 => {
                self.problem(
                    &v.referenced,
                    format!(
                        "scoring.{key} must be a finite number >= 0, not {}",
                        v.value
                    ),
                );
                default
            }
            Some(v) => v.value,
            None => default,
        };
        Weights {
            distance: weight(&scoring.distance_weight, 1.0, "distance-weight"),
            isp_match_bonus_km: weight(
                &scoring.isp_match_bonus_km,
                DEFAULT_ISP_MATCH_BONUS_KM,
                "isp-match-bonus-km",
            ),
            isp_mismatch_penalty_km: weight(
                &scoring.isp_mismatch_penalty_km,
                DEFAULT_ISP_MISMATCH_PENALTY_KM,
                "isp-mismatch-penalty-km",
            ),
        }
    }

    fn isps(&mut self, isps: &BTreeMap<String, Spanned<Vec<u32>>>) -> Vec<Isp> {
        let mut owner: HashMap<u32, &str> = HashMap::new();
        let mut out = Vec::new();
        // In file order, so an ASN listed twice is reported where it is listed the
        // second time (the map itself is in name order).
        let mut in_file_order: Vec<_> = isps.iter().collect();
        in_file_order.sort_by_key(|(_, asns)| asns.referenced.line());
        for (name, asns) in in_file_order {
            if asns.value.is_empty() {
                self.problem(
                    &asns.referenced,
                    format!("isp {name} lists no ASNs: expected a list of AS numbers"),
                );
            }
            for asn in &asns.value {
                if let Some(other) = owner.insert(*asn, name) {
                    self.problem(
                        &asns.referenced,
                        format!("AS{asn} is listed under both isp {other} and isp {name}"),
                    );
                }
            }
            out.push(Isp {
                name: name.clone(),
                asns: asns.value.clone(),
            });
        }
        out
    }

    fn pops(&mut self, pops: &Spanned<Vec<Spanned<file::PopFile>>>, isps: &[Isp]) -> Vec<Pop> {
        let at = pops.referenced;
        let pops = &pops.value;
        let mut out = Vec::new();
        let mut seen: HashMap<String, u64> = HashMap::new();
        if pops.is_empty() {
            self.problem(&at, "pops: at least one POP is needed");
        }
        if pops.len() > usize::from(u16::MAX) {
            self.problems
                .push(Problem::file(self.path, "pops: at most 65535 POPs"));
            return out;
        }
        for spanned in pops {
            let pop = &spanned.value;
            let id = pop.id.value.trim().to_string();
            if id.is_empty()
                || !id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                self.problem(
                    &pop.id.referenced,
                    format!("pop id `{id}` must be letters, digits, `-` or `_`"),
                );
            }
            if let Some(first) = seen.insert(id.clone(), pop.id.referenced.line()) {
                self.problem(
                    &pop.id.referenced,
                    format!("duplicate pop id `{id}` (first defined on line {first})"),
                );
            }
            let country = self
                .code(&pop.country, "country")
                .unwrap_or(Code::parse("ZZ").unwrap_or_else(|| unreachable!()));
            let continent = pop.continent.as_ref().and_then(|c| self.continent(c));
            let (lat, lon) = (pop.latitude.value, pop.longitude.value);
            if !(-90.0..=90.0).contains(&lat) || !lat.is_finite() {
                self.problem(
                    &pop.latitude.referenced,
                    format!("pop {id}: latitude {lat} is outside -90..90"),
                );
            }
            if !(-180.0..=180.0).contains(&lon) || !lon.is_finite() {
                self.problem(
                    &pop.longitude.referenced,
                    format!("pop {id}: longitude {lon} is outside -180..180"),
                );
            }
            let isp = pop.isp.as_ref().and_then(|isp| {
                let found = isps.iter().position(|i| i.name == isp.value);
                if found.is_none() {
                    self.problem(
                        &isp.referenced,
                        format!("pop {id}: isp `{}` is not defined under isps", isp.value),
                    );
                }
                found.map(|i| IspId(i as u16))
            });
            let region = match &pop.region {
                None if country.as_str() == "CN" => Region::MainlandChina,
                None => Region::Global,
                Some(r) => match r.value.as_str() {
                    "mainland-china" => Region::MainlandChina,
                    "global" => Region::Global,
                    other => {
                        self.problem(
                            &r.referenced,
                            format!(
                                "pop {id}: region `{other}`: expected mainland-china or global"
                            ),
                        );
                        Region::Global
                    }
                },
            };
            let mut ipv4 = Vec::new();
            let mut ipv6 = Vec::new();
            for addr in &pop.addresses {
                match IpAddr::from_str(addr.value.trim()) {
                    Ok(IpAddr::V4(a)) => ipv4.push(a),
                    Ok(IpAddr::V6(a)) => ipv6.push(a),
                    Err(_) => self.problem(
                        &addr.referenced,
                        format!("pop {id}: `{}` is not an IP address", addr.value),
                    ),
                }
            }
            if pop.addresses.is_empty() {
                self.problem(
                    &pop.id.referenced,
                    format!("pop {id} has no addresses: expected at least one IPv4 or IPv6 address under `addresses`"),
                );
            }
            let capacity = match &pop.capacity {
                Some(c) if c.value == 0 => {
                    self.problem(&c.referenced, format!("pop {id}: capacity must be above 0"));
                    1
                }
                Some(c) => c.value,
                None => 1,
            };
            let admin = match &pop.admin {
                None => AdminState::Up,
                Some(a) => match a.value.as_str() {
                    "up" => AdminState::Up,
                    "down" => AdminState::Down,
                    other => {
                        self.problem(
                            &a.referenced,
                            format!("pop {id}: admin `{other}`: expected up or down"),
                        );
                        AdminState::Up
                    }
                },
            };
            let redirect_host =
                pop.redirect_host.as_ref().and_then(|host| {
                    match parse_redirect_host(&host.value) {
                        Ok(host) => Some(host),
                        Err(reason) => {
                            self.problem(
                                &host.referenced,
                                format!("pop {id}: redirect-host `{}` {reason}", host.value),
                            );
                            None
                        }
                    }
                });
            let mut cache_nodes: Vec<String> = Vec::new();
            let mut node_lines: HashMap<String, u64> = HashMap::new();
            for node in &pop.cache_nodes {
                match parse_redirect_host(&node.value) {
                    Ok(host) => {
                        if let Some(first) = node_lines.insert(host.clone(), node.referenced.line())
                        {
                            self.problem(
                                &node.referenced,
                                format!("pop {id}: cache node {host} is listed twice (first on line {first})"),
                            );
                        } else {
                            cache_nodes.push(host);
                        }
                    }
                    Err(reason) => self.problem(
                        &node.referenced,
                        format!("pop {id}: cache node `{}` {reason}", node.value),
                    ),
                }
            }
            out.push(Pop {
                redirect_host,
                cache_nodes,
                id,
                city: pop.city.clone(),
                country,
                continent,
                coordinates: Coordinates {
                    latitude: lat,
                    longitude: lon,
                },
                isp,
                region,
                ipv4,
                ipv6,
                capacity,
                admin,
            });
        }
        out
    }

    fn code(&mut self, text: &Spanned<String>, what: &str) -> Option<Code> {
        let code = Code::parse(text.value.trim());
        if code.is_none() {
            self.problem(
                &text.referenced,
                format!("{what} `{}` is not a two-letter ISO 3166 code", text.value),
            );
        }
        code
    }

    fn continent(&mut self, text: &Spanned<String>) -> Option<Code> {
        let code = Code::parse(text.value.trim()).filter(|c| CONTINENTS.contains(&c.as_str()));
        if code.is_none() {
            self.problem(
                &text.referenced,
                format!(
                    "continent `{}`: expected one of {}",
                    text.value,
                    CONTINENTS.join(" ")
                ),
            );
        }
        code
    }

    fn pop_list(
        &mut self,
        names: &[String],
        at: &Location,
        what: &str,
        index: &HashMap<&str, PopId>,
    ) -> Vec<PopId> {
        let mut out = Vec::new();
        if names.is_empty() {
            self.problem(at, format!("{what}: the POP list is empty"));
        }
        for name in names {
            match index.get(name.as_str()) {
                Some(id) => out.push(*id),
                None => self.problem(at, format!("{what}: unknown pop `{name}`")),
            }
        }
        out
    }

    fn fallback(
        &mut self,
        fallback: Option<&Spanned<file::FallbackFile>>,
        index: &HashMap<&str, PopId>,
    ) -> Fallback {
        let Some(spanned) = fallback else {
            // Without a say from the operator, the first POP takes unknown clients.
            return Fallback::Pops(vec![PopId(0)]);
        };
        let at = spanned.referenced;
        let f = &spanned.value;
        let given = usize::from(!f.pops.is_empty())
            + usize::from(f.country.is_some())
            + usize::from(f.latitude.is_some() || f.longitude.is_some());
        if given != 1 {
            self.problem(
                &at,
                "unknown-location: give exactly one of `pops`, `country`, or `latitude` with `longitude`",
            );
            return Fallback::Pops(vec![PopId(0)]);
        }
        if !f.pops.is_empty() {
            return Fallback::Pops(self.pop_list(&f.pops, &at, "unknown-location", index));
        }
        if let Some(country) = &f.country {
            return match Code::parse(country) {
                Some(code) => Fallback::Country(code),
                None => {
                    self.problem(
                        &at,
                        format!("unknown-location: country `{country}` is not a two-letter code"),
                    );
                    Fallback::Pops(vec![PopId(0)])
                }
            };
        }
        match (f.latitude, f.longitude) {
            (Some(latitude), Some(longitude))
                if (-90.0..=90.0).contains(&latitude) && (-180.0..=180.0).contains(&longitude) =>
            {
                Fallback::Coordinates(Coordinates {
                    latitude,
                    longitude,
                })
            }
            _ => {
                self.problem(
                    &at,
                    "unknown-location: latitude (-90..90) and longitude (-180..180) go together",
                );
                Fallback::Pops(vec![PopId(0)])
            }
        }
    }

    fn domains(
        &mut self,
        domains: &[Spanned<file::DomainFile>],
        suffix: &Name,
        pops: &[Pop],
    ) -> (Vec<Domain>, Vec<u64>) {
        let mut out = Vec::new();
        let mut lines = Vec::new();
        let mut seen: HashMap<Name, u64> = HashMap::new();
        for spanned in domains {
            let d = &spanned.value;
            let at = d.name.referenced;
            let Some(name) = self.name(&d.name, "domain") else {
                continue;
            };
            if name.iter().skip(1).any(|l| l == b"*") {
                self.problem(
                    &at,
                    format!("domain {name}: `*` may only be the first label"),
                );
                continue;
            }
            if let Some(first) = seen.insert(name.clone(), at.line()) {
                self.problem(
                    &at,
                    format!("duplicate domain {name} (first defined on line {first})"),
                );
                continue;
            }
            let served = match name.clone().append_domain(suffix) {
                Ok(served) => served,
                Err(e) => {
                    self.problem(
                        &at,
                        format!("domain {name} under {suffix} is too long: {e}"),
                    );
                    continue;
                }
            };
            let mut origins = Vec::new();
            for origin in &d.origins {
                let o = &origin.value;
                let https = match o.scheme.as_deref() {
                    None | Some("http") => false,
                    Some("https") => true,
                    Some(other) => {
                        self.problem(
                            &origin.referenced,
                            format!(
                                "domain {name}: origin scheme `{other}`: expected http or https"
                            ),
                        );
                        false
                    }
                };
                let host = o.host.trim().trim_end_matches('.').to_ascii_lowercase();
                if host.is_empty() {
                    self.problem(
                        &origin.referenced,
                        format!("domain {name}: origin host is empty"),
                    );
                    continue;
                }
                if host.parse::<IpAddr>().is_err() {
                    match parse_name(&host) {
                        Ok(host_name) => {
                            // The cache node would resolve the origin through this very
                            // CDN name and fetch from itself forever. A host merely under
                            // a wildcard domain (`origin.example.org` for `*.example.org`)
                            // is not flagged: its own records in the customer's zone take
                            // precedence over the wildcard (RFC 4592), the usual setup.
                            let loops = host_name == name
                                || host_name == served
                                || served_by_wildcard(&served, &host_name);
                            if loops {
                                self.problem(&origin.referenced, format!("domain {name}: origin host {host} is the accelerated domain itself (a resolution loop)"));
                            }
                        }
                        Err(reason) => self.problem(&origin.referenced, format!("domain {name}: origin host `{host}` is neither an IP address nor a host name: {reason}")),
                    }
                }
                origins.push(Origin {
                    host,
                    port: o.port.unwrap_or(if https { 443 } else { 80 }),
                    https,
                });
            }
            if d.origins.is_empty() {
                self.problem(
                    &at,
                    format!(
                        "domain {name} has no origins: expected at least one `host` under `origins`"
                    ),
                );
            }
            let coverage = match &d.coverage {
                None => Coverage::Global,
                Some(c) => match c.value.as_str() {
                    "global" => Coverage::Global,
                    "mainland-china" => Coverage::MainlandChina,
                    "global-excluding-mainland-china" => Coverage::GlobalExcludingMainlandChina,
                    other => {
                        self.problem(&c.referenced, format!("domain {name}: coverage `{other}`: expected global, mainland-china or global-excluding-mainland-china"));
                        Coverage::Global
                    }
                },
            };
            if !pops.is_empty() && !pops.iter().any(|p| coverage.admits(p.region)) {
                let place = d.coverage.as_ref().map_or(at, |c| c.referenced);
                let wanted = match coverage {
                    Coverage::MainlandChina => {
                        "in mainland China (country CN, or region: mainland-china)"
                    }
                    _ => "outside mainland China (region: global)",
                };
                self.problem(
                    &place,
                    format!("domain {name}: coverage {}: no POP can serve it; expected at least one POP {wanted}", coverage.as_str()),
                );
            }
            let ttl = match &d.ttl {
                Some(t) if t.value > MAX_TTL => {
                    self.problem(
                        &t.referenced,
                        format!("domain {name}: ttl {} is above {MAX_TTL}", t.value),
                    );
                    DEFAULT_TTL
                }
                Some(t) => t.value,
                None => DEFAULT_TTL,
            };
            let answer_pops = match &d.answer.pops {
                Some(p) if !(1..=2).contains(&p.value) => {
                    self.problem(
                        &p.referenced,
                        format!("domain {name}: answer.pops must be 1 or 2, not {}", p.value),
                    );
                    1
                }
                Some(p) => p.value,
                None => 1,
            };
            let routing = match &d.routing {
                None => RoutingMode::Dns,
                Some(r) => match r.value.as_str() {
                    "dns" => RoutingMode::Dns,
                    "http" => RoutingMode::Http,
                    other => {
                        self.problem(
                            &r.referenced,
                            format!("domain {name}: routing `{other}`: expected dns or http"),
                        );
                        RoutingMode::Dns
                    }
                },
            };
            lines.push(at.line());
            out.push(Domain {
                routing,
                name,
                served,
                origins,
                coverage,
                ttl,
                answer_pops,
                max_addresses: d.answer.max_addresses.as_ref().map_or(0, |m| m.value),
            });
        }
        (out, lines)
    }

    fn health(
        &mut self,
        health: &file::HealthFile,
        index: &HashMap<&str, PopId>,
        pops: &[Pop],
    ) -> HealthSettings {
        let mut out = HealthSettings::default();
        // Every token, report or admin, once: a token that could do both would make
        // a reporter an administrator.
        let mut seen: HashMap<String, u64> = HashMap::new();
        let mut check_token = |this: &mut Self, token: &Spanned<String>, key: &str| -> bool {
            if !is_bearer_token(&token.value) {
                this.problem(
                    &token.referenced,
                    format!("health.{key}: a token must be letters, digits and `-._~+/`, optionally ending in `=` (an HTTP bearer token)"),
                );
                return false;
            }
            if let Some(first) = seen.insert(token.value.clone(), token.referenced.line()) {
                this.problem(
                    &token.referenced,
                    format!("health.{key}: this token is already given on line {first}; each token once, for reports or for admin"),
                );
                return false;
            }
            true
        };
        for spanned in &health.tokens {
            let entry = &spanned.value;
            let token_ok = check_token(self, &entry.token, "tokens");
            let listed = &entry.pops.value;
            let scope = if listed.is_empty() {
                self.problem(
                    &entry.pops.referenced,
                    "health.tokens: `pops` is empty: expected POP ids, or [\"*\"] for every POP",
                );
                None
            } else if listed.iter().any(|p| p.value == "*") {
                if listed.len() > 1 {
                    self.problem(
                        &entry.pops.referenced,
                        "health.tokens: `*` already means every POP: list it alone",
                    );
                }
                Some(TokenScope::All)
            } else {
                let mut ids = Vec::new();
                for name in listed {
                    match index.get(name.value.as_str()) {
                        Some(id) => ids.push(*id),
                        None => self.problem(
                            &name.referenced,
                            format!("health.tokens: unknown pop `{}`", name.value),
                        ),
                    }
                }
                Some(TokenScope::Only(ids))
            };
            if let (true, Some(pops)) = (token_ok, scope) {
                out.tokens.push(ReportToken {
                    token: Secret::new(entry.token.value.clone()),
                    pops,
                });
            }
        }
        for token in &health.admin_tokens {
            if check_token(self, token, "admin-tokens") {
                out.admin_tokens.push(Secret::new(token.value.clone()));
            }
        }

        let seconds = |this: &mut Self, v: &Option<Spanned<f64>>, key: &str, zero_ok: bool| {
            let v = v.as_ref()?;
            let low_ok = if zero_ok {
                v.value >= 0.0
            } else {
                v.value > 0.0
            };
            if !(v.value.is_finite() && low_ok && v.value <= MAX_HEALTH_SECONDS) {
                let bound = if zero_ok { "0" } else { "above 0" };
                this.problem(
                    &v.referenced,
                    format!(
                        "health.{key}: expected seconds, {bound} to {MAX_HEALTH_SECONDS}, not {}",
                        v.value
                    ),
                );
                return None;
            }
            Duration::try_from_secs_f64(v.value).ok()
        };
        if let Some(d) = seconds(self, &health.expire_after, "expire-after", false) {
            out.expire_after = d;
        }
        if let Some(d) = seconds(self, &health.load_half_life, "load-half-life", true) {
            out.load_half_life = d;
        }
        if let Some(v) = &health.unknown_means {
            match v.value.as_str() {
                "static" => out.unknown_means = UnknownMeans::Static,
                "down" => out.unknown_means = UnknownMeans::Down,
                other => self.problem(
                    &v.referenced,
                    format!("health.unknown-means `{other}`: expected static or down"),
                ),
            }
        }
        let streak = |this: &mut Self, v: &Option<Spanned<u32>>, key: &str, default: u32| match v {
            Some(v) if !(1..=MAX_STREAK).contains(&v.value) => {
                this.problem(
                    &v.referenced,
                    format!(
                        "health.{key}: expected a number of reports from 1 to {MAX_STREAK}, not {}",
                        v.value
                    ),
                );
                default
            }
            Some(v) => v.value,
            None => default,
        };
        out.down_after = streak(self, &health.down_after, "down-after", DEFAULT_DOWN_AFTER);
        out.up_after = streak(self, &health.up_after, "up-after", DEFAULT_UP_AFTER);
        let share = |this: &mut Self, v: &Option<Spanned<f64>>, key: &str| {
            let v = v.as_ref()?;
            if !(0.0..=1.0).contains(&v.value) {
                this.problem(
                    &v.referenced,
                    format!(
                        "health.{key}: expected a share of capacity from 0 to 1, not {}",
                        v.value
                    ),
                );
                return None;
            }
            Some(v.value)
        };
        let low = share(self, &health.low_watermark, "low-watermark");
        let high = share(self, &health.high_watermark, "high-watermark");
        out.low_watermark = low.unwrap_or(DEFAULT_LOW_WATERMARK);
        out.high_watermark = high.unwrap_or(DEFAULT_HIGH_WATERMARK);
        let both_valid = (health.low_watermark.is_none() || low.is_some())
            && (health.high_watermark.is_none() || high.is_some());
        if both_valid && out.low_watermark >= out.high_watermark {
            let at = health
                .high_watermark
                .as_ref()
                .or(health.low_watermark.as_ref())
                .map(|v| v.referenced);
            if let Some(at) = at {
                self.problem(
                    &at,
                    format!(
                        "health: low-watermark {} must be below high-watermark {}",
                        out.low_watermark, out.high_watermark
                    ),
                );
            }
        }
        if let Some(v) = &health.max_shift_per_second {
            if v.value.is_finite() && v.value > 0.0 {
                out.max_shift_per_second = v.value;
            } else {
                self.problem(
                    &v.referenced,
                    format!("health.max-shift-per-second: expected a share above 0 (0.05: 5% of a POP's clients a second), not {}", v.value),
                );
            }
        }
        if let Some(v) = &health.degraded_ttl {
            if v.value > MAX_TTL {
                self.problem(
                    &v.referenced,
                    format!("health.degraded-ttl {} is above {MAX_TTL}", v.value),
                );
            } else {
                out.degraded_ttl = v.value;
            }
        }
        if let Some(v) = &health.unknown_means
            && out.unknown_means == UnknownMeans::Down
        {
            // Such a POP could never come up: no report can speak for it.
            let silent: Vec<&str> = pops
                .iter()
                .enumerate()
                .filter(|(i, p)| {
                    p.admin == AdminState::Up
                        && !out.tokens.iter().any(|t| t.pops.admits(PopId(*i as u16)))
                })
                .map(|(_, p)| p.id.as_str())
                .collect();
            if !silent.is_empty() {
                self.problem(
                    &v.referenced,
                    format!(
                        "health.unknown-means: down, but no token may report for pop {}: it would never be up",
                        silent.join(", ")
                    ),
                );
            }
        }
        out
    }

    fn overrides(
        &mut self,
        overrides: &file::OverridesFile,
        index: &HashMap<&str, PopId>,
    ) -> Overrides {
        let mut out = Overrides::default();
        let mut seen = HashSet::new();
        for spanned in &overrides.networks {
            let at = spanned.referenced;
            let o = &spanned.value;
            let network = match IpNetwork::from_str(o.network.trim()) {
                Ok(n) => n,
                Err(e) => {
                    self.problem(
                        &at,
                        format!("overrides.networks: `{}` is not a network: {e}", o.network),
                    );
                    continue;
                }
            };
            if network.network() != network.ip() {
                self.problem(
                    &at,
                    format!(
                        "overrides.networks: {network} has host bits set (did you mean {}/{}?)",
                        network.network(),
                        network.prefix()
                    ),
                );
                continue;
            }
            if !seen.insert(network) {
                self.problem(
                    &at,
                    format!("overrides.networks: {network} is listed twice"),
                );
                continue;
            }
            let pops = self.pop_list(&o.pops, &at, &format!("override {network}"), index);
            out.networks.push(NetworkOverride { network, pops });
        }
        for (country, pops) in &overrides.countries {
            let Some(code) = Code::parse(country) else {
                self.problem(
                    &pops.referenced,
                    format!("overrides.countries: `{country}` is not a two-letter code"),
                );
                continue;
            };
            let list = self.pop_list(
                &pops.value,
                &pops.referenced,
                &format!("override for country {code}"),
                index,
            );
            out.countries.insert(code, list);
        }
        for (continent, pops) in &overrides.continents {
            let Some(code) = Code::parse(continent).filter(|c| CONTINENTS.contains(&c.as_str()))
            else {
                self.problem(
                    &pops.referenced,
                    format!(
                        "overrides.continents: `{continent}`: expected one of {}",
                        CONTINENTS.join(" ")
                    ),
                );
                continue;
            };
            let list = self.pop_list(
                &pops.value,
                &pops.referenced,
                &format!("override for continent {code}"),
                index,
            );
            out.continents.insert(code, list);
        }
        out
    }
}

/// MaxMind's continent codes.
pub const CONTINENTS: [&str; 7] = ["AF", "AN", "AS", "EU", "NA", "OC", "SA"];

/// Parses a domain name as an operator writes it: trailing dot optional, any case.
pub fn parse_name(text: &str) -> Result<Name, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty".into());
    }
    let mut name = Name::from_ascii(text).map_err(|e| e.to_string())?;
    name.set_fqdn(true);
    if name.is_root() {
        return Err("the root is not a domain".into());
    }
    Ok(name.to_lowercase())
}

/// A host for a URL authority: a host name (lower-cased, no trailing dot), an IPv4
/// address, or an IPv6 address (bare or in brackets; returned in brackets). The
/// error completes "`text` ...".
pub fn parse_redirect_host(text: &str) -> Result<String, String> {
    let text = text.trim();
    let bare = text
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(text);
    match IpAddr::from_str(bare) {
        Ok(IpAddr::V4(a)) if bare == text => return Ok(a.to_string()),
        Ok(IpAddr::V6(a)) => return Ok(format!("[{a}]")),
        _ => {}
    }
    let host = text.trim_end_matches('.').to_ascii_lowercase();
    let valid = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if valid {
        Ok(host)
    } else {
        Err("is neither a host name nor an IP address".into())
    }
}

/// Whether `text` can be sent as an HTTP bearer token (RFC 6750 section 2.1:
/// `1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`).
fn is_bearer_token(text: &str) -> bool {
    let body = text.trim_end_matches('=');
    !body.is_empty()
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b))
}

/// Whether `host` would be answered by the wildcard entry that produced `served`.
fn served_by_wildcard(served: &Name, host: &Name) -> bool {
    served.is_wildcard()
        && served.base_name().zone_of(host)
        && host.num_labels() > served.base_name().num_labels()
}
