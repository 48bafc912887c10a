//! The cache node's configuration: its own versioned YAML file (kebab-case keys,
//! unknown keys rejected), read as [`File`] and validated into a plain
//! [`CacheConfig`], with every problem named by line and reported at once.
//!
//! ```yaml
//! version: 1
//! listen: 127.0.0.1:8080
//! pop: nrt
//! node-id: nrt-edge-1          # in `Via`; defaults to the POP id
//! memory-budget: 268435456
//! max-object-size: 33554432    # larger objects stream through, never stored
//! metrics-listen: 127.0.0.1:9090
//! parent: { host: 192.0.2.50, port: 8080 }   # a regional tier, asked before the origins
//! domains:
//!   - name: www.example.com
//!     origins:
//!       - { host: 192.0.2.10, port: 8000, scheme: http }
//!       - { host: 192.0.2.11, port: 443, scheme: https, tls-server-name: origin.example.com }
//!     cache:
//!       default-ttl: 60
//!       stale-while-revalidate: 30
//!       stale-if-error: 600
//!       ttl:
//!         - { prefix: /static/, seconds: 86400 }
//!         - { extension: jpg, seconds: 3600 }
//!       query-string: keep        # keep | ignore | { only: [v, lang] }
//!     dynamic:                    # passed through uncached (X-Cache: BYPASS)
//!       - { prefix: /api/ }
//!       - { extension: php }
//!     access:                     # refused with 403 (X-Cache: DENIED)
//!       client-ip: { allow: [192.0.2.0/24], deny: [192.0.2.66/32] }
//!       referer: { allow: [www.example.com, "*.example.com"], allow-empty: true }
//!       signed-urls: { secret: a-long-random-secret }
//! admin:                          # purge and prefetch API, on its own listener
//!   listen: 127.0.0.1:8082
//!   token: admin-secret
//!   prefetch-concurrency: 4
//! meridian:
//!   health-urls: [http://127.0.0.1:8053/v1/health]
//!   token: secret
//!   interval-seconds: 5
//!   capacity: 1000
//! ```

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde::Deserialize;
use serde_saphyr::Spanned;

use super::access::{Access, HostPattern, IpRules, RefererRules, UrlSigning};
use crate::config::{ConfigError, Problem, Secret};

/// Memory for cached objects when the file does not say: 256 MiB.
pub const DEFAULT_MEMORY_BUDGET: u64 = 256 * 1024 * 1024;
/// Seconds between health pushes when the file does not say.
pub const DEFAULT_INTERVAL_SECONDS: u64 = 5;
/// In-flight requests the node is sized for when the file does not say.
pub const DEFAULT_CAPACITY: u64 = 1000;
/// Prefetches fetched at once when the file does not say: enough to warm a list
/// quickly, few enough that clients' own misses still get the origin's attention.
pub const DEFAULT_PREFETCH_CONCURRENCY: usize = 4;
/// Shortest secret accepted for signed URLs: HMAC keys much shorter can be guessed.
pub const MIN_SIGNING_SECRET: usize = 16;

/// The validated cache node configuration.
#[derive(Debug, Clone)]
pub struct CacheConfig {
    /// Where the proxy listens for clients.
    pub listen: SocketAddr,
    /// The POP this node serves, as Meridian knows it.
    pub pop: String,
    /// Most bytes of cached objects kept in memory.
    pub memory_budget: u64,
    /// Objects larger than this stream through without being stored.
    pub max_object_size: u64,
    /// Accelerated domains by lower-case name without a trailing dot.
    pub domains: HashMap<String, CacheDomain>,
    /// Where to push health and load, if anywhere.
    pub meridian: Option<MeridianPush>,
    /// The purge and prefetch API, if enabled.
    pub admin: Option<AdminApi>,
    /// This node's name in `Via`, which is also how it recognises a request that
    /// has looped back to it.
    pub node_id: String,
    /// Where `/metrics` is served, apart from the accelerated domains' traffic.
    pub metrics_listen: Option<SocketAddr>,
}

/// The purge and prefetch API: on a listener of its own, so it is never reachable
/// through the public one.
#[derive(Debug, Clone)]
pub struct AdminApi {
    /// Where the API listens: an address only operators can reach.
    pub listen: SocketAddr,
    /// Bearer token every request must carry.
    pub token: Secret,
    /// Most prefetches fetched at once.
    pub prefetch_concurrency: usize,
}

/// One accelerated domain.
#[derive(Debug, Clone)]
pub struct CacheDomain {
    /// Lower-case, no trailing dot.
    pub name: String,
    /// Tried in order: a connection failure or a 5xx moves on to the next.
    pub origins: Vec<OriginServer>,
    /// Another cache node asked before the origins (the domain's own, else the
    /// node-wide one); the origins remain the fallback.
    pub parent: Option<OriginServer>,
    /// How responses are cached.
    pub rules: CacheRules,
    /// Requests passed through to the origin uncached: the first match wins.
    pub dynamic: Vec<DynamicRule>,
    /// Who may be served.
    pub access: Access,
}

/// Paths that are never cached: a prefix, or a file extension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DynamicRule {
    Prefix(String),
    Extension(String),
}

/// An origin server (or a parent cache node).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginServer {
    /// Address or host name.
    pub host: String,
    pub port: u16,
    /// Set for `scheme: https`.
    pub tls: Option<OriginTls>,
}

/// How an HTTPS origin's certificate is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginTls {
    /// The name the certificate must carry when it is not `host`.
    pub server_name: Option<String>,
    /// Trust anchors from `ca-file` instead of the public web roots.
    pub roots: Option<Vec<CertificateDer<'static>>>,
}

/// Per-domain caching rules, applied where the origin says nothing itself.
#[derive(Debug, Clone, Default)]
pub struct CacheRules {
    /// Freshness (seconds) of a response with no explicit freshness of its own;
    /// 0 leaves it to the origin's headers and heuristics.
    pub default_ttl: u64,
    /// Path rules, the first that matches wins.
    pub ttl: Vec<TtlRule>,
    /// What of the query string goes into the cache key.
    pub query: QueryHandling,
    /// RFC 5861 windows (seconds) for responses that do not set their own.
    pub stale_while_revalidate: u64,
    pub stale_if_error: u64,
}

/// A TTL for paths that start with a prefix or end in a file extension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TtlRule {
    Prefix { prefix: String, seconds: u64 },
    Extension { extension: String, seconds: u64 },
}

/// What of the query string makes the cache key (and is sent to the origin).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum QueryHandling {
    /// All of it, as sent.
    #[default]
    Keep,
    /// None of it.
    Ignore,
    /// Only these parameters, in the order sent.
    Only(Vec<String>),
}

/// Health pushes to Meridian.
#[derive(Debug, Clone)]
pub struct MeridianPush {
    /// `POST /v1/health` URLs of every Meridian.
    pub health_urls: Vec<axum::http::Uri>,
    /// Bearer token.
    pub token: String,
    pub interval: Duration,
    /// In-flight requests this node is sized for; load is in-flight over this.
    pub capacity: u64,
}

impl CacheDomain {
    /// Whether requests for `path` pass through uncached.
    pub fn is_dynamic(&self, path: &str) -> bool {
        self.dynamic.iter().any(|rule| match rule {
            DynamicRule::Prefix(prefix) => path.starts_with(prefix.as_str()),
            DynamicRule::Extension(e) => extension(path).is_some_and(|x| x.eq_ignore_ascii_case(e)),
        })
    }
}

impl CacheRules {
    /// The rule TTL for a path: the first matching rule's, else the default
    /// (0: none).
    pub fn ttl_for(&self, path: &str) -> u64 {
        let extension = extension(path);
        self.ttl
            .iter()
            .find_map(|rule| match rule {
                TtlRule::Prefix { prefix, seconds } => path.starts_with(prefix).then_some(*seconds),
                TtlRule::Extension {
                    extension: e,
                    seconds,
                } => extension
                    .is_some_and(|x| x.eq_ignore_ascii_case(e))
                    .then_some(*seconds),
            })
            .unwrap_or(self.default_ttl)
    }

    /// The query string as the cache key (and the origin) sees it.
    pub fn query<'a>(&self, query: Option<&'a str>) -> Option<std::borrow::Cow<'a, str>> {
        let query = query.filter(|q| !q.is_empty())?;
        match &self.query {
            QueryHandling::Keep => Some(query.into()),
            QueryHandling::Ignore => None,
            QueryHandling::Only(keep) => {
                let kept: Vec<&str> = query
                    .split('&')
                    .filter(|pair| {
                        let name = pair.split_once('=').map_or(*pair, |(n, _)| n);
                        keep.iter().any(|k| k == name)
                    })
                    .collect();
                (!kept.is_empty()).then(|| kept.join("&").into())
            }
        }
    }
}

/// The file extension of a path's last segment, without the dot.
fn extension(path: &str) -> Option<&str> {
    path.rsplit('/')
        .next()
        .and_then(|last| last.rsplit_once('.'))
        .map(|(_, ext)| ext)
}

impl CacheConfig {
    /// The domain that serves `host` (lower case, no trailing dot): its own entry,
    /// else the nearest wildcard above it (`*.example.org` serves `a.example.org`
    /// and `a.b.example.org`), as Meridian's zone answers them.
    pub fn domain_for(&self, host: &str) -> Option<&CacheDomain> {
        if let Some(domain) = self.domains.get(host) {
            return Some(domain);
        }
        let mut above = host;
        while let Some((_, parent)) = above.split_once('.') {
            if let Some(domain) = self.domains.get(&format!("*.{parent}")) {
                return Some(domain);
            }
            above = parent;
        }
        None
    }

    /// Reads and validates a cache node config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::one(Problem::file(path, format!("cannot read: {e}"))))?;
        Self::parse(&text, path)
    }

    /// Validates config text; `path` names it in problems.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let file: File = serde_saphyr::from_str(text).map_err(|e| {
            let (line, column) = e
                .location()
                .map(|l| (l.line(), Some(l.column())))
                .unwrap_or((0, None));
            let rendered = e.without_snippet().to_string();
            let mut message = rendered.lines().next().unwrap_or("invalid YAML").trim();
            if let Some(i) = message.find(" at line ") {
                message = &message[..i];
            }
            ConfigError::one(Problem::at(path, line, column, message))
        })?;
        validate(file, path)
    }
}

/// The file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct File {
    /// Optional here so a missing version is reported with the other problems.
    version: Option<Spanned<u32>>,
    listen: Spanned<String>,
    pop: Spanned<String>,
    memory_budget: Option<Spanned<u64>>,
    max_object_size: Option<Spanned<u64>>,
    domains: Spanned<Vec<Spanned<DomainFile>>>,
    meridian: Option<Spanned<MeridianFile>>,
    admin: Option<Spanned<AdminFile>>,
    node_id: Option<Spanned<String>>,
    metrics_listen: Option<Spanned<String>>,
    parent: Option<Spanned<ParentFile>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct ParentFile {
    host: String,
    port: Option<u16>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct DomainFile {
    name: Spanned<String>,
    origins: Spanned<Vec<Spanned<OriginFile>>>,
    parent: Option<Spanned<ParentFile>>,
    #[serde(default)]
    cache: CacheFile,
    #[serde(default)]
    dynamic: Vec<Spanned<PathRuleFile>>,
    #[serde(default)]
    access: AccessFile,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct OriginFile {
    host: String,
    port: Option<u16>,
    scheme: Option<String>,
    tls_server_name: Option<String>,
    ca_file: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct CacheFile {
    default_ttl: Option<u64>,
    #[serde(default)]
    ttl: Vec<Spanned<TtlFile>>,
    #[serde(default)]
    query_string: QueryHandling,
    stale_while_revalidate: Option<u64>,
    stale_if_error: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct TtlFile {
    prefix: Option<String>,
    extension: Option<String>,
    seconds: u64,
}

/// A dynamic rule: exactly one of the two.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct PathRuleFile {
    prefix: Option<String>,
    extension: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct AccessFile {
    client_ip: Option<IpListFile>,
    referer: Option<RefererFile>,
    signed_urls: Option<SignedUrlsFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct IpListFile {
    #[serde(default)]
    allow: Vec<Spanned<String>>,
    #[serde(default)]
    deny: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RefererFile {
    #[serde(default)]
    allow: Vec<Spanned<String>>,
    #[serde(default)]
    deny: Vec<Spanned<String>>,
    allow_empty: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct SignedUrlsFile {
    secret: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct AdminFile {
    listen: Spanned<String>,
    token: Spanned<String>,
    prefetch_concurrency: Option<Spanned<usize>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct MeridianFile {
    health_urls: Vec<Spanned<String>>,
    token: Spanned<String>,
    interval_seconds: Option<Spanned<u64>>,
    capacity: Option<Spanned<u64>>,
}

/// Turns the file into a config, collecting every problem.
fn validate(file: File, path: &Path) -> Result<CacheConfig, ConfigError> {
    let mut problems = Vec::new();
    let mut missing_version = false;
    let mut problem = |at: &serde_saphyr::Location, message: String| {
        problems.push(Problem::at(path, at.line(), Some(at.column()), message));
    };
    match &file.version {
        None => missing_version = true,
        Some(v) if v.value != 1 => problem(
            &v.referenced,
            format!("`version`: {} is not supported, expected 1", v.value),
        ),
        Some(_) => {}
    }
    let listen = file.listen.value.parse::<SocketAddr>().unwrap_or_else(|_| {
        problem(
            &file.listen.referenced,
            format!(
                "`listen`: expected ADDRESS:PORT, found `{}`",
                file.listen.value
            ),
        );
        SocketAddr::from(([127, 0, 0, 1], 0))
    });
    if file.pop.value.trim().is_empty() {
        problem(&file.pop.referenced, "`pop`: expected a POP id".into());
    }
    let memory_budget = match &file.memory_budget {
        Some(b) if b.value == 0 => {
            problem(
                &b.referenced,
                "`memory-budget`: expected bytes above 0".into(),
            );
            0
        }
        Some(b) => b.value,
        None => DEFAULT_MEMORY_BUDGET,
    };
    if file.domains.value.is_empty() {
        problem(
            &file.domains.referenced,
            "`domains`: expected at least one domain".into(),
        );
    }
    // One object may take an eighth of the memory by default, so that a few
    // large ones cannot push out everything else.
    let max_object_size = match &file.max_object_size {
        Some(m) if m.value == 0 || m.value > memory_budget => {
            problem(
                &m.referenced,
                format!("`max-object-size`: expected 1 to `memory-budget` ({memory_budget}) bytes"),
            );
            0
        }
        Some(m) => m.value,
        None => (memory_budget / 8).max(1),
    };
    let node_parent = file
        .parent
        .as_ref()
        .and_then(|p| parent_server(p, &mut problem));
    let metrics_listen = file.metrics_listen.as_ref().and_then(|m| {
        let parsed = m.value.parse::<SocketAddr>().ok();
        if parsed.is_none() {
            problem(
                &m.referenced,
                format!(
                    "`metrics-listen`: expected ADDRESS:PORT, found `{}`",
                    m.value
                ),
            );
        }
        parsed
    });
    let node_id = match &file.node_id {
        Some(id) if !is_token(&id.value) => {
            problem(
                &id.referenced,
                format!(
                    "`node-id`: `{}` must be letters, digits and `-._` only (it goes into `Via`)",
                    id.value
                ),
            );
            String::new()
        }
        Some(id) => id.value.clone(),
        None => file.pop.value.trim().to_string(),
    };
    let mut domains = HashMap::new();
    for domain in &file.domains.value {
        let at = &domain.value.name.referenced;
        let name = domain
            .value
            .name
            .value
            .trim()
            .trim_end_matches('.')
            .to_ascii_lowercase();
        // `*` only as a whole first label: `*.example.org`, as Meridian's zone
        // has it.
        let stars = name.strip_prefix("*.").unwrap_or(&name);
        if name.is_empty() || name.contains(['/', ':', ' ']) || stars.contains('*') {
            problem(
                at,
                format!("`name`: `{name}` is not a host name or `*.` wildcard"),
            );
        }
        let mut origins = Vec::new();
        if domain.value.origins.value.is_empty() {
            problem(
                &domain.value.origins.referenced,
                format!("domain `{name}`: expected at least one origin"),
            );
        }
        for origin in &domain.value.origins.value {
            let at = &origin.referenced;
            let file = &origin.value;
            let https = match file.scheme.as_deref().unwrap_or("http") {
                "http" => false,
                "https" => true,
                other => {
                    problem(
                        at,
                        format!("`scheme`: expected http or https, found `{other}`"),
                    );
                    false
                }
            };
            if file.host.trim().is_empty() {
                problem(at, "`host`: expected an address or host name".into());
            }
            if !https && (file.tls_server_name.is_some() || file.ca_file.is_some()) {
                problem(
                    at,
                    "`tls-server-name` and `ca-file` apply to `scheme: https` only".into(),
                );
            }
            if let Some(name) = &file.tls_server_name
                && rustls::pki_types::ServerName::try_from(name.as_str()).is_err()
            {
                problem(
                    at,
                    format!("`tls-server-name`: `{name}` is not a DNS name or address"),
                );
            }
            let roots = file.ca_file.as_ref().and_then(|ca| {
                let ca = resolve(path, ca);
                let read = CertificateDer::pem_file_iter(&ca)
                    .and_then(|certs| certs.collect::<Result<Vec<_>, _>>());
                match read {
                    Ok(certs) if !certs.is_empty() => Some(certs),
                    Ok(_) => {
                        problem(
                            at,
                            format!("`ca-file`: {} holds no certificate", ca.display()),
                        );
                        None
                    }
                    Err(e) => {
                        problem(at, format!("`ca-file`: cannot read {}: {e}", ca.display()));
                        None
                    }
                }
            });
            origins.push(OriginServer {
                host: file.host.trim().to_string(),
                port: file.port.unwrap_or(if https { 443 } else { 80 }),
                tls: https.then(|| OriginTls {
                    server_name: file.tls_server_name.clone(),
                    roots,
                }),
            });
        }
        let parent = match &domain.value.parent {
            Some(p) => parent_server(p, &mut problem),
            None => node_parent.clone(),
        };
        let mut ttl = Vec::new();
        for rule in &domain.value.cache.ttl {
            let TtlFile {
                prefix,
                extension,
                seconds,
            } = &rule.value;
            match (prefix, extension) {
                (Some(prefix), None) if prefix.starts_with('/') => ttl.push(TtlRule::Prefix {
                    prefix: prefix.clone(),
                    seconds: *seconds,
                }),
                (None, Some(extension)) if !extension.is_empty() => ttl.push(TtlRule::Extension {
                    extension: extension.trim_start_matches('.').to_string(),
                    seconds: *seconds,
                }),
                _ => problem(
                    &rule.referenced,
                    "`ttl`: expected exactly one of `prefix` (starting with /) or `extension`"
                        .into(),
                ),
            }
        }
        let rules = CacheRules {
            default_ttl: domain.value.cache.default_ttl.unwrap_or(0),
            ttl,
            query: domain.value.cache.query_string.clone(),
            stale_while_revalidate: domain.value.cache.stale_while_revalidate.unwrap_or(0),
            stale_if_error: domain.value.cache.stale_if_error.unwrap_or(0),
        };
        let mut dynamic = Vec::new();
        for rule in &domain.value.dynamic {
            match (&rule.value.prefix, &rule.value.extension) {
                (Some(prefix), None) if prefix.starts_with('/') => {
                    dynamic.push(DynamicRule::Prefix(prefix.clone()));
                }
                (None, Some(extension)) if !extension.trim_start_matches('.').is_empty() => {
                    dynamic.push(DynamicRule::Extension(
                        extension.trim_start_matches('.').to_string(),
                    ));
                }
                _ => problem(
                    &rule.referenced,
                    "`dynamic`: expected exactly one of `prefix` (starting with /) or `extension`"
                        .into(),
                ),
            }
        }
        let access = access_rules(&domain.value.access, &mut problem);
        let parsed = CacheDomain {
            name: name.clone(),
            origins,
            parent,
            rules,
            dynamic,
            access,
        };
        if domains.insert(name.clone(), parsed).is_some() {
            problem(at, format!("domain `{name}` is listed twice"));
        }
    }
    let meridian = file.meridian.as_ref().map(|m| {
        let m = &m.value;
        let mut health_urls = Vec::new();
        for url in &m.health_urls {
            match url.value.parse::<axum::http::Uri>() {
                Ok(uri) if uri.scheme_str() == Some("http") && uri.host().is_some() => {
                    health_urls.push(uri);
                }
                _ => problem(
                    &url.referenced,
                    format!(
                        "`health-urls`: expected an http:// URL, found `{}`",
                        url.value
                    ),
                ),
            }
        }
        if m.token.value.is_empty() {
            problem(&m.token.referenced, "`token`: expected a token".into());
        }
        let interval = match &m.interval_seconds {
            Some(s) if s.value == 0 => {
                problem(
                    &s.referenced,
                    "`interval-seconds`: expected 1 or more".into(),
                );
                1
            }
            Some(s) => s.value,
            None => DEFAULT_INTERVAL_SECONDS,
        };
        let capacity = match &m.capacity {
            Some(c) if c.value == 0 => {
                problem(&c.referenced, "`capacity`: expected 1 or more".into());
                1
            }
            Some(c) => c.value,
            None => DEFAULT_CAPACITY,
        };
        MeridianPush {
            health_urls,
            token: m.token.value.clone(),
            interval: Duration::from_secs(interval),
            capacity,
        }
    });
    let admin = file.admin.as_ref().map(|a| {
        let a = &a.value;
        let admin_listen = a.listen.value.parse::<SocketAddr>().unwrap_or_else(|_| {
            problem(
                &a.listen.referenced,
                format!(
                    "`admin.listen`: expected ADDRESS:PORT, found `{}`",
                    a.listen.value
                ),
            );
            SocketAddr::from(([127, 0, 0, 1], 0))
        });
        if admin_listen == listen && listen.port() != 0 {
            problem(
                &a.listen.referenced,
                "`admin.listen`: expected an address apart from `listen`".into(),
            );
        }
        if a.token.value.trim().is_empty() {
            problem(
                &a.token.referenced,
                "`admin.token`: expected a token".into(),
            );
        }
        let prefetch_concurrency = match &a.prefetch_concurrency {
            Some(c) if c.value == 0 => {
                problem(
                    &c.referenced,
                    "`prefetch-concurrency`: expected 1 or more".into(),
                );
                1
            }
            Some(c) => c.value,
            None => DEFAULT_PREFETCH_CONCURRENCY,
        };
        AdminApi {
            listen: admin_listen,
            token: Secret::new(a.token.value.trim()),
            prefetch_concurrency,
        }
    });
    if missing_version {
        problems.push(Problem::at(
            path,
            1,
            None,
            "`version` is missing: expected 1",
        ));
    }
    if !problems.is_empty() {
        problems.sort_by_key(|p| p.line);
        return Err(problems.into());
    }
    Ok(CacheConfig {
        listen,
        pop: file.pop.value.trim().to_string(),
        memory_budget,
        max_object_size,
        domains,
        meridian,
        admin,
        node_id,
        metrics_listen,
    })
}

/// A parent cache node, reached over plain HTTP.
fn parent_server(
    parent: &Spanned<ParentFile>,
    problem: &mut impl FnMut(&serde_saphyr::Location, String),
) -> Option<OriginServer> {
    if parent.value.host.trim().is_empty() {
        problem(
            &parent.referenced,
            "`parent`: expected an address or host name in `host`".into(),
        );
        return None;
    }
    Some(OriginServer {
        host: parent.value.host.trim().to_string(),
        port: parent.value.port.unwrap_or(80),
        tls: None,
    })
}

/// Whether `id` can stand as a `Via` received-by name.
fn is_token(id: &str) -> bool {
    !id.is_empty()
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
}

/// A file named in the config, relative to the config's own directory.
fn resolve(config: &Path, file: &str) -> std::path::PathBuf {
    match config.parent() {
        Some(dir) if Path::new(file).is_relative() => dir.join(file),
        _ => file.into(),
    }
}

/// A domain's access rules, with a problem for every list entry that cannot be
/// read.
fn access_rules(
    file: &AccessFile,
    problem: &mut impl FnMut(&serde_saphyr::Location, String),
) -> Access {
    let mut nets = |key: &str, list: &[Spanned<String>]| -> Vec<ipnet::IpNet> {
        list.iter()
            .filter_map(|net| {
                let text = net.value.trim();
                // A bare address is a network of one.
                let parsed = text.parse::<ipnet::IpNet>().ok().or_else(|| {
                    text.parse::<std::net::IpAddr>()
                        .ok()
                        .map(ipnet::IpNet::from)
                });
                if parsed.is_none() {
                    problem(
                        &net.referenced,
                        format!("`client-ip.{key}`: expected ADDRESS/PREFIX, found `{text}`"),
                    );
                }
                parsed
            })
            .collect()
    };
    let client_ip = file.client_ip.as_ref().map(|ips| IpRules {
        allow: nets("allow", &ips.allow),
        deny: nets("deny", &ips.deny),
    });
    let mut hosts = |key: &str, list: &[Spanned<String>]| -> Vec<HostPattern> {
        list.iter()
            .filter_map(|host| match host.value.parse::<HostPattern>() {
                Ok(pattern) => Some(pattern),
                Err(reason) => {
                    problem(&host.referenced, format!("`referer.{key}`: {reason}"));
                    None
                }
            })
            .collect()
    };
    let referer = file.referer.as_ref().map(|referer| RefererRules {
        allow: hosts("allow", &referer.allow),
        deny: hosts("deny", &referer.deny),
        allow_empty: referer.allow_empty.unwrap_or(true),
    });
    let signing = file.signed_urls.as_ref().map(|signed| {
        if signed.secret.value.len() < MIN_SIGNING_SECRET {
            problem(
                &signed.secret.referenced,
                format!("`signed-urls.secret`: expected at least {MIN_SIGNING_SECRET} characters"),
            );
        }
        UrlSigning::new(signed.secret.value.as_bytes())
    });
    Access {
        client_ip,
        referer,
        signing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "version: 1
listen: 127.0.0.1:0
pop: nrt
memory-budget: 1000000
domains:
  - name: WWW.Example.com.
    origins:
      - { host: 127.0.0.1, port: 8000, scheme: http }
      - { host: origin2.example, port: 8001 }
    cache:
      default-ttl: 60
      ttl:
        - { prefix: /static/, seconds: 86400 }
        - { extension: jpg, seconds: 3600 }
      query-string:
        only: [v, lang]
meridian:
  health-urls: [http://127.0.0.1:8053/v1/health]
  token: secret
  interval-seconds: 2
  capacity: 50
";

    fn parse(text: &str) -> Result<CacheConfig, ConfigError> {
        CacheConfig::parse(text, Path::new("cache.yaml"))
    }

    /// GOOD with one more domain of that name.
    fn with_domain(name: &str) -> String {
        GOOD.replace(
            "meridian:",
            &format!("  - name: \"{name}\"\n    origins: [{{ host: 127.0.0.1 }}]\nmeridian:"),
        )
    }

    #[test]
    fn hosts_find_their_domain_or_the_nearest_wildcard() {
        let mut config = parse(&with_domain("*.example.org")).expect("valid");
        let deeper = parse(&with_domain("*.b.example.org")).expect("valid");
        config.domains.extend(deeper.domains);
        let served = |host| config.domain_for(host).map(|d| d.name.as_str());
        assert_eq!(served("www.example.com"), Some("www.example.com"));
        assert_eq!(served("a.example.org"), Some("*.example.org"));
        assert_eq!(served("x.a.example.org"), Some("*.example.org"));
        assert_eq!(served("x.b.example.org"), Some("*.b.example.org"));
        assert_eq!(served("example.org"), None);
        assert_eq!(served("a.example.com"), None);
    }

    #[test]
    fn a_star_is_only_a_whole_first_label() {
        for bad in [
            "a*.example.org",
            "*.*.example.org",
            "www.*.example.org",
            "*",
        ] {
            let error = parse(&with_domain(bad)).expect_err(bad);
            assert_eq!(error.problems.len(), 1, "{bad}: {error}");
            assert_eq!(error.problems[0].line, Some(17), "{bad}: {error}");
            assert!(error.problems[0].message.contains("wildcard"), "{error}");
        }
    }

    #[test]
    fn reads_every_key() {
        let config = parse(GOOD).expect("valid");
        assert_eq!(config.pop, "nrt");
        assert_eq!(config.memory_budget, 1_000_000);
        let domain = &config.domains["www.example.com"];
        assert_eq!(domain.origins.len(), 2);
        assert_eq!(domain.origins[1].port, 8001);
        assert_eq!(domain.rules.ttl_for("/static/a.css"), 86400);
        assert_eq!(domain.rules.ttl_for("/img/a.JPG"), 3600);
        assert_eq!(domain.rules.ttl_for("/index.html"), 60);
        assert_eq!(
            domain.rules.query(Some("a=1&v=2&lang=en")).as_deref(),
            Some("v=2&lang=en")
        );
        assert_eq!(domain.rules.query(Some("a=1")), None);
        let meridian = config.meridian.expect("meridian");
        assert_eq!((meridian.interval.as_secs(), meridian.capacity), (2, 50));
    }

    #[test]
    fn query_handling_keep_and_ignore() {
        for (word, expected) in [("keep", Some("a=1")), ("ignore", None)] {
            let text = GOOD.replace(
                "      query-string:\n        only: [v, lang]\n",
                &format!("      query-string: {word}\n"),
            );
            let config = parse(&text).expect("valid");
            let rules = &config.domains["www.example.com"].rules;
            assert_eq!(rules.query(Some("a=1")).as_deref(), expected, "{word}");
        }
    }

    #[test]
    fn serving_keys() {
        let dir = tempfile::tempdir().expect("temp dir");
        let made = rcgen::generate_simple_self_signed(vec!["origin.test".into()]).expect("cert");
        std::fs::write(dir.path().join("ca.pem"), made.cert.pem()).expect("CA");
        let text = "version: 1
listen: 127.0.0.1:0
pop: nrt
node-id: nrt-edge-1
metrics-listen: 127.0.0.1:9090
parent: { host: 10.0.0.1, port: 8080 }
domains:
  - name: a.example
    origins:
      - { host: 127.0.0.1, scheme: https, tls-server-name: origin.test, ca-file: ca.pem }
    cache:
      stale-while-revalidate: 30
      stale-if-error: 600
  - name: b.example
    origins:
      - { host: 127.0.0.1 }
    parent: { host: 10.0.0.2 }
";
        let config = CacheConfig::parse(text, &dir.path().join("cache.yaml")).expect("valid");
        assert_eq!(config.node_id, "nrt-edge-1");
        assert_eq!(config.max_object_size, DEFAULT_MEMORY_BUDGET / 8);
        assert_eq!(
            config.metrics_listen,
            Some("127.0.0.1:9090".parse().expect("addr"))
        );
        let a = &config.domains["a.example"];
        assert_eq!(a.origins[0].port, 443);
        let tls = a.origins[0].tls.as_ref().expect("https");
        assert_eq!(tls.server_name.as_deref(), Some("origin.test"));
        assert_eq!(tls.roots.as_ref().map(Vec::len), Some(1));
        assert_eq!(a.parent.as_ref().map(|p| p.port), Some(8080));
        assert_eq!(
            (a.rules.stale_while_revalidate, a.rules.stale_if_error),
            (30, 600)
        );
        let b = &config.domains["b.example"];
        assert_eq!(
            b.parent.as_ref().map(|p| (p.host.as_str(), p.port)),
            Some(("10.0.0.2", 80))
        );
        assert_eq!(
            parse(GOOD).expect("valid").node_id,
            "nrt",
            "the POP by default"
        );
    }

    #[test]
    fn serving_key_problems() {
        let text = "version: 1
listen: 127.0.0.1:0
pop: nrt
node-id: nrt edge
metrics-listen: nowhere
domains:
  - name: a.example
    origins:
      - { host: 127.0.0.1, tls-server-name: origin.test }
      - { host: 127.0.0.1, scheme: https, ca-file: /nonexistent/ca.pem }
      - { host: 127.0.0.1, scheme: https, tls-server-name: \"not a name\" }
";
        let error = parse(text).expect_err("invalid");
        let lines: Vec<_> = error.problems.iter().map(|p| p.line).collect();
        assert_eq!(
            lines,
            [Some(4), Some(5), Some(9), Some(10), Some(11)],
            "{error}"
        );
        assert!(error.to_string().contains("/nonexistent/ca.pem"), "{error}");
    }

    #[test]
    fn unknown_key_is_refused_with_its_line() {
        let text = GOOD.replace("pop: nrt\n", "pop: nrt\ncolour: blue\n");
        let error = parse(&text).expect_err("unknown key");
        assert_eq!(error.problems[0].line, Some(4), "{error}");
        assert!(error.problems[0].message.contains("colour"), "{error}");
    }

    const CONTROL: &str = "    dynamic:
      - { prefix: /api/ }
      - { extension: .PHP }
    access:
      client-ip: { allow: [192.0.2.0/24, 2001:db8::1], deny: [192.0.2.66/32] }
      referer: { allow: [\"*.example.com\"], allow-empty: false }
      signed-urls: { secret: 0123456789abcdef }
admin:
  listen: 127.0.0.1:8082
  token: admin-secret
  prefetch-concurrency: 2
";

    /// GOOD with the control keys after the domain's `cache` section.
    fn with_control(control: &str) -> String {
        GOOD.replace("meridian:\n", &format!("{control}meridian:\n"))
    }

    #[test]
    fn reads_the_control_keys() {
        let config = parse(&with_control(CONTROL)).expect("valid");
        let domain = &config.domains["www.example.com"];
        assert!(domain.is_dynamic("/api/v1/items"));
        assert!(domain.is_dynamic("/shop/cart.php"));
        assert!(!domain.is_dynamic("/static/a.css"));
        let ips = domain.access.client_ip.as_ref().expect("client-ip");
        assert_eq!((ips.allow.len(), ips.deny.len()), (2, 1));
        let referer = domain.access.referer.as_ref().expect("referer");
        assert!(!referer.allow_empty);
        assert!(domain.access.signing.is_some());
        let admin = config.admin.expect("admin");
        assert_eq!(admin.listen.port(), 8082);
        assert!(admin.token.matches(b"admin-secret"));
        assert_eq!(admin.prefetch_concurrency, 2);
        // Left out, they change nothing.
        let plain = &parse(GOOD).expect("valid").domains["www.example.com"];
        assert!(plain.dynamic.is_empty() && plain.access.client_ip.is_none());
    }

    #[test]
    fn control_problems_are_named_by_line() {
        let text = with_control(CONTROL)
            .replace("{ extension: .PHP }", "{ prefix: api }")
            .replace("2001:db8::1]", "10.0.0/8]")
            .replace("\"*.example.com\"", "\"*.*.example.com\"")
            .replace("secret: 0123456789abcdef", "secret: short")
            .replace("listen: 127.0.0.1:8082", "listen: 127.0.0.1")
            .replace("prefetch-concurrency: 2", "prefetch-concurrency: 0");
        let error = parse(&text).expect_err("invalid");
        let found: Vec<_> = error
            .problems
            .iter()
            .map(|p| (p.line, p.message.split(':').next().unwrap_or("")))
            .collect();
        assert_eq!(
            found,
            [
                (Some(19), "`dynamic`"),
                (Some(21), "`client-ip.allow`"),
                (Some(22), "`referer.allow`"),
                (Some(23), "`signed-urls.secret`"),
                (Some(25), "`admin.listen`"),
                (Some(27), "`prefetch-concurrency`"),
            ],
            "{error}"
        );
    }

    #[test]
    fn every_problem_at_once_with_lines() {
        let text = GOOD
            .replace("version: 1", "version: 2")
            .replace("listen: 127.0.0.1:0", "listen: nowhere")
            .replace("scheme: http }", "scheme: gopher }")
            .replace("{ extension: jpg, seconds: 3600 }", "{ seconds: 3600 }")
            .replace("interval-seconds: 2", "interval-seconds: 0");
        let error = parse(&text).expect_err("invalid");
        let lines: Vec<_> = error.problems.iter().map(|p| p.line).collect();
        assert_eq!(
            lines,
            [Some(1), Some(2), Some(8), Some(14), Some(20)],
            "{error}"
        );
    }
}
