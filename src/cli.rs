//! The `meridian` command line. Names, flags and exit codes here are contracts:
//! scripts and checks depend on them.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::config::{Config, ConfigError, Overlay};
use crate::explain::{self, Query};
use crate::snapshot::Snapshot;

/// Meridian: authoritative GeoDNS traffic scheduler for CDNs.
#[derive(Debug, Parser)]
#[command(name = "meridian", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// What to do.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve DNS and the control-plane HTTP API.
    Serve(ServeArgs),
    /// Validate the config, its zone files and geo databases; exit 1 on any problem.
    Check(CheckArgs),
    /// Show how a client would be routed: location, every POP's score, the choice.
    Explain(ExplainArgs),
    /// Run the whole CDN on loopback: Meridian on the sample config and geodata
    /// built in, an origin, and cache nodes for a few POPs.
    Demo(DemoArgs),
    /// Run an edge cache node: a reverse-proxy cache that pushes its load to Meridian.
    Cache(CacheArgs),
    /// Build MaxMind-format City and ASN databases from a readable source file.
    Geodata {
        #[command(subcommand)]
        command: GeodataCommand,
    },
}

/// `meridian serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The config file.
    #[arg(long)]
    pub config: PathBuf,
    /// DNS listen address (UDP and TCP); repeat for several. Overrides the config.
    #[arg(long = "dns-listen", value_name = "ADDR")]
    pub dns_listen: Vec<SocketAddr>,
    /// Control-plane HTTP listen address. Overrides the config.
    #[arg(long = "http-listen", value_name = "ADDR")]
    pub http_listen: Option<SocketAddr>,
    /// HTTP 302 router listen address. Overrides the config.
    #[arg(long = "http-router-listen", value_name = "ADDR")]
    pub http_router_listen: Option<SocketAddr>,
    /// DoH-over-TLS listen address. Overrides the config.
    #[arg(long = "doh-tls-listen", value_name = "ADDR")]
    pub doh_tls_listen: Option<SocketAddr>,
    /// Reload on SIGHUP only, not when the config, a zone file or a geo database
    /// changes.
    #[arg(long = "no-watch")]
    pub no_watch: bool,
    #[command(flatten)]
    pub geo: GeoArgs,
}

/// Geo database paths that override the config's.
#[derive(Debug, Args, Clone, Default)]
pub struct GeoArgs {
    /// MaxMind-format City database.
    #[arg(long = "city-db", value_name = "FILE")]
    pub city_db: Option<PathBuf>,
    /// MaxMind-format ASN database.
    #[arg(long = "asn-db", value_name = "FILE")]
    pub asn_db: Option<PathBuf>,
}

/// `meridian check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The config file.
    #[arg(long)]
    pub config: PathBuf,
    #[command(flatten)]
    pub geo: GeoArgs,
}

/// `meridian explain`.
#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// The config file.
    #[arg(long)]
    pub config: PathBuf,
    #[command(flatten)]
    pub geo: GeoArgs,
    /// The name asked for; defaults to the first accelerated domain.
    #[arg(long)]
    pub name: Option<String>,
    /// A or AAAA.
    #[arg(long, default_value = "A")]
    pub qtype: String,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// The client: an address (as a resolver's source) or a subnet such as
    /// 203.0.113.0/24 (as EDNS Client Subnet).
    pub client: String,
}

/// `meridian cache`.
#[derive(Debug, Args)]
pub struct CacheArgs {
    /// The cache node's config file.
    #[arg(long)]
    pub config: PathBuf,
}

/// `meridian demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// DNS listen address (UDP and TCP).
    #[arg(long = "dns-listen", value_name = "ADDR", default_value = crate::config::DEFAULT_DNS_LISTEN)]
    pub dns_listen: SocketAddr,
    /// Control-plane HTTP listen address.
    #[arg(long = "http-listen", value_name = "ADDR", default_value = crate::config::DEFAULT_HTTP_LISTEN)]
    pub http_listen: SocketAddr,
    /// HTTP 302 router listen address.
    #[arg(long = "http-router-listen", value_name = "ADDR", default_value = crate::config::DEFAULT_HTTP_ROUTER_LISTEN)]
    pub http_router_listen: SocketAddr,
    /// The first cache node's loopback address; the other nodes take the next ones.
    #[arg(long = "cache-first-address", value_name = "IP", default_value = crate::demo::DEFAULT_CACHE_FIRST_ADDRESS)]
    pub cache_first_address: std::net::Ipv4Addr,
    /// The cache nodes' port (80 needs root).
    #[arg(long = "cache-port", value_name = "PORT", default_value = crate::demo::DEFAULT_CACHE_PORT)]
    pub cache_port: u16,
}

/// `meridian geodata ...`.
#[derive(Debug, Subcommand)]
pub enum GeodataCommand {
    /// Write City and ASN databases from a YAML source (see geodata/README.md).
    Build {
        /// The source file.
        #[arg(long)]
        source: PathBuf,
        /// Where to write the City database.
        #[arg(long)]
        city: PathBuf,
        /// Where to write the ASN database.
        #[arg(long)]
        asn: PathBuf,
    },
}

/// Runs the command line; the exit code says how it went.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    match cli.command {
        Command::Serve(args) => serve(args),
        Command::Check(args) => check(args),
        Command::Explain(args) => explain(args),
        Command::Cache(args) => cache(args),
        Command::Demo(args) => runtime()
            .and_then(|rt| {
                rt.block_on(crate::demo::run(crate::demo::Listen {
                    dns: args.dns_listen,
                    http: args.http_listen,
                    router: args.http_router_listen,
                    cache_first_address: args.cache_first_address,
                    cache_port: args.cache_port,
                }))
                .map_err(|e| e.to_string())
            })
            .map_or_else(fail, |()| ExitCode::SUCCESS),
        Command::Geodata {
            command: GeodataCommand::Build { source, city, asn },
        } => match crate::geo::build::build_files(&source, &city, &asn) {
            Ok(()) => {
                println!("wrote {} and {}", city.display(), asn.display());
                ExitCode::SUCCESS
            }
            Err(e) => fail(e.to_string()),
        },
    }
}

fn fail(message: String) -> ExitCode {
    eprintln!("meridian: {message}");
    ExitCode::FAILURE
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("MERIDIAN_LOG")
        // hickory-server logs every TCP request at info: too much for a server.
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,hickory_server=warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))
}

fn overlay(geo: &GeoArgs) -> Overlay {
    Overlay {
        city_db: geo.city_db.clone(),
        asn_db: geo.asn_db.clone(),
        ..Overlay::default()
    }
}

/// Loads config, zones and geodata as `serve` would.
fn load(config: &std::path::Path, overlay: &Overlay) -> Result<Snapshot, ConfigError> {
    Snapshot::load(Config::load(config, overlay)?)
}

fn report(error: &ConfigError) -> ExitCode {
    for problem in &error.problems {
        eprintln!("{problem}");
    }
    eprintln!(
        "meridian: {} problem{} found",
        error.problems.len(),
        if error.problems.len() == 1 { "" } else { "s" }
    );
    ExitCode::FAILURE
}

fn serve(args: ServeArgs) -> ExitCode {
    let mut overlay = overlay(&args.geo);
    overlay.dns_listen = args.dns_listen;
    overlay.http_listen = args.http_listen;
    overlay.http_router_listen = args.http_router_listen;
    overlay.doh_tls_listen = args.doh_tls_listen;
    overlay.no_watch = args.no_watch;
    let config = match Config::load(&args.config, &overlay) {
        Ok(config) => config,
        Err(e) => return report(&e),
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => return fail(e),
    };
    rt.block_on(async {
        let server = match crate::server::start(config).await {
            Ok(server) => server,
            Err(crate::server::StartError::Config(e)) => return report(&e),
            Err(e) => return fail(e.to_string()),
        };
        server.log_listening();
        server.run_until_signal().await;
        ExitCode::SUCCESS
    })
}

fn cache(args: CacheArgs) -> ExitCode {
    let config = match crate::cache::CacheConfig::load(&args.config) {
        Ok(config) => config,
        Err(e) => return report(&e),
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => return fail(e),
    };
    rt.block_on(async {
        let node = match crate::cache::start(config).await {
            Ok(node) => node,
            Err(e) => return fail(format!("cannot listen: {e}")),
        };
        match node.run_until_signal().await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(e.to_string()),
        }
    })
}

fn check(args: CheckArgs) -> ExitCode {
    match load(&args.config, &overlay(&args.geo)) {
        Ok(snapshot) => {
            println!(
                "{}: ok ({} zones, {} POPs, {} domains)",
                args.config.display(),
                snapshot.zones.len(),
                snapshot.config.pops.len(),
                snapshot.config.domains.len()
            );
            ExitCode::SUCCESS
        }
        Err(e) => report(&e),
    }
}

fn explain(args: ExplainArgs) -> ExitCode {
    let snapshot = match load(&args.config, &overlay(&args.geo)) {
        Ok(snapshot) => snapshot,
        Err(e) => return report(&e),
    };
    let query = match Query::parse(&args.client, args.name.as_deref(), &args.qtype) {
        Ok(query) => query,
        Err(e) => return fail(e.to_string()),
    };
    match explain::explain(&snapshot, &query) {
        Ok(explanation) => {
            let text = if args.json {
                match serde_json::to_string_pretty(&explanation) {
                    Ok(text) => text + "\n",
                    Err(e) => return fail(e.to_string()),
                }
            } else {
                explanation.to_string()
            };
            // A closed pipe (`| head`) is not an error worth a panic.
            let _ = std::io::Write::write_all(&mut std::io::stdout(), text.as_bytes());
            ExitCode::SUCCESS
        }
        Err(e) => fail(e.to_string()),
    }
}

/// Parses `ADDR` or `ADDR/PREFIX`.
pub fn parse_client(text: &str) -> Result<(IpAddr, Option<u8>), String> {
    let text = text.trim();
    match text.split_once('/') {
        None => text
            .parse()
            .map(|a| (a, None))
            .map_err(|_| format!("`{text}` is not an IP address or subnet")),
        Some((addr, prefix)) => {
            let addr: IpAddr = addr
                .parse()
                .map_err(|_| format!("`{addr}` is not an IP address"))?;
            let prefix: u8 = prefix
                .parse()
                .map_err(|_| format!("`{prefix}` is not a prefix length"))?;
            if prefix > crate::routing::full_length(addr) {
                return Err(format!("prefix /{prefix} is longer than the address"));
            }
            Ok((addr, Some(prefix)))
        }
    }
}
