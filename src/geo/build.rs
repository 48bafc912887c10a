//! Builds small City and ASN databases in MaxMind format from a readable YAML source,
//! so the sample data ships as reviewable text and tests can make tiny databases in
//! memory. The output uses the GeoLite2 schema, so the real databases are drop-ins.
//!
//! ```yaml
//! cities:
//!   - network: 1.0.16.0/24        # IPv4 or IPv6 CIDR, host bits zero
//!     city: Tokyo                 # optional
//!     country: JP                 # ISO 3166 alpha-2
//!     continent: AS               # AF AN AS EU NA OC SA
//!     latitude: 35.6895           # optional, with longitude
//!     longitude: 139.6917
//! asns:
//!   - network: 1.0.16.0/24
//!     asn: 2519
//!     organization: ARTERIA Networks   # optional
//! ```
//!
//! Networks in one list may nest (the more specific one wins, whatever the order) but
//! may not repeat. The two lists are independent, as in the real databases, where a
//! City network and the ASN network holding the same address often differ in size.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use ipnet::IpNet;
use mmdb_writer::{Value, Writer};
use serde::{Deserialize, Deserializer};
use serde_saphyr::Spanned;

/// Database type of the City database, as GeoLite2 names it: some readers pick the
/// record layout by this name.
pub const CITY_DATABASE_TYPE: &str = "GeoLite2-City";
/// Database type of the ASN database, as GeoLite2 names it.
pub const ASN_DATABASE_TYPE: &str = "GeoLite2-ASN";

/// Continent codes MaxMind uses.
const CONTINENTS: [&str; 7] = ["AF", "AN", "AS", "EU", "NA", "OC", "SA"];

/// IPv6 ranges the writer aliases to the IPv4 tree (IPv4-mapped, Teredo, 6to4): a
/// network inside one cannot hold data of its own.
const ALIASED: [&str; 3] = ["::ffff:0:0/96", "2001::/32", "2002::/16"];

/// A geo source: the City and ASN lists, each built into its own database.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Source {
    /// Networks and where they are.
    #[serde(default)]
    pub cities: Vec<CityEntry>,
    /// Networks and who operates them.
    #[serde(default)]
    pub asns: Vec<AsnEntry>,
}

/// One City database network.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct CityEntry {
    /// The network; every address in it gets this record.
    #[serde(deserialize_with = "network")]
    pub network: IpNet,
    /// English city name; absent for country-level records.
    #[serde(default)]
    pub city: Option<String>,
    /// ISO 3166 alpha-2 country code.
    pub country: String,
    /// MaxMind continent code: AF, AN, AS, EU, NA, OC or SA.
    pub continent: String,
    /// Degrees north; given together with `longitude` or not at all.
    #[serde(default)]
    pub latitude: Option<f64>,
    /// Degrees east; given together with `latitude` or not at all.
    #[serde(default)]
    pub longitude: Option<f64>,
}

/// One ASN database network.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct AsnEntry {
    /// The network; every address in it gets this record.
    #[serde(deserialize_with = "network")]
    pub network: IpNet,
    /// Autonomous system number of the operator.
    pub asn: u32,
    /// The operator's name.
    #[serde(default)]
    pub organization: Option<String>,
}

/// Why a source could not be built into databases.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The text is not YAML, or not this format (unknown key, missing field, wrong type,
    /// malformed network). The message ends with the line and column.
    #[error("{message}")]
    Syntax {
        /// 1-based line, when the parser knows it.
        line: Option<u64>,
        /// The parser's message, "... at line L, column C".
        message: String,
    },
    /// A well-formed entry whose values cannot be right.
    #[error("{list} entry {entry} ({network}{}): {problem}", at_line(*.line))]
    Invalid {
        /// `cities` or `asns`.
        list: &'static str,
        /// 1-based position in that list.
        entry: usize,
        /// The entry's network.
        network: IpNet,
        /// 1-based line of the entry, when it was parsed from text.
        line: Option<u64>,
        /// What is wrong.
        problem: String,
    },
    /// The MMDB writer refused the data (not expected once validation passed).
    #[error("writing the {database} database: {source}")]
    Write {
        /// Database type being written.
        database: &'static str,
        /// The writer's reason.
        source: mmdb_writer::Error,
    },
    /// Reading the source or writing a database file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// An error in a source file, with the file's name.
    #[error("{}: {error}", path.display())]
    InFile {
        /// The source file.
        path: PathBuf,
        /// What is wrong in it.
        #[source]
        error: Box<BuildError>,
    },
}

fn at_line(line: Option<u64>) -> String {
    line.map(|l| format!(", line {l}")).unwrap_or_default()
}

/// The source as parsed from text, with the line of every entry so validation errors
/// can point at it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct SpannedSource {
    #[serde(default)]
    cities: Vec<Spanned<CityEntry>>,
    #[serde(default)]
    asns: Vec<Spanned<AsnEntry>>,
}

/// Lines of the entries of a parsed source (0 if unknown), by list position.
#[derive(Default)]
struct Lines {
    cities: Vec<u64>,
    asns: Vec<u64>,
}

impl Source {
    /// Parses and validates YAML source text.
    pub fn parse(text: &str) -> Result<Source, BuildError> {
        let spanned: SpannedSource = serde_saphyr::from_str(text).map_err(|e| {
            let message = e.render_with_options(serde_saphyr::render_options! {
                snippets: serde_saphyr::SnippetMode::Off,
            });
            BuildError::Syntax {
                line: e.location().map(|l| l.line()).filter(|l| *l > 0),
                message,
            }
        })?;
        let lines = Lines {
            cities: spanned.cities.iter().map(|e| e.referenced.line()).collect(),
            asns: spanned.asns.iter().map(|e| e.referenced.line()).collect(),
        };
        let source = Source {
            cities: spanned.cities.into_iter().map(|e| e.value).collect(),
            asns: spanned.asns.into_iter().map(|e| e.value).collect(),
        };
        source.check_cities(&lines)?;
        source.check_asns(&lines)?;
        Ok(source)
    }

    /// Checks both lists; [`Source::parse`] and the database builders do this already,
    /// but a source assembled in code may want to know early.
    pub fn validate(&self) -> Result<(), BuildError> {
        self.check_cities(&Lines::default())?;
        self.check_asns(&Lines::default())
    }

    /// Builds the City database (GeoLite2-City schema) from `cities`.
    pub fn city_database(&self) -> Result<Vec<u8>, BuildError> {
        self.check_cities(&Lines::default())?;
        let records = self.cities.iter().map(|e| (e.network, city_record(e)));
        write_database(
            CITY_DATABASE_TYPE,
            "City database built by Meridian from a YAML source",
            records,
        )
    }

    /// Builds the ASN database (GeoLite2-ASN schema) from `asns`.
    pub fn asn_database(&self) -> Result<Vec<u8>, BuildError> {
        self.check_asns(&Lines::default())?;
        let records = self.asns.iter().map(|e| (e.network, asn_record(e)));
        write_database(
            ASN_DATABASE_TYPE,
            "ASN database built by Meridian from a YAML source",
            records,
        )
    }

    fn check_cities(&self, lines: &Lines) -> Result<(), BuildError> {
        let mut seen = Seen::new("cities", &lines.cities);
        for (i, entry) in self.cities.iter().enumerate() {
            seen.check(i, entry.network, city_problem(entry))?;
        }
        Ok(())
    }

    fn check_asns(&self, lines: &Lines) -> Result<(), BuildError> {
        let mut seen = Seen::new("asns", &lines.asns);
        for (i, entry) in self.asns.iter().enumerate() {
            seen.check(i, entry.network, asn_problem(entry))?;
        }
        Ok(())
    }
}

/// What is wrong with a City entry's values, if anything.
fn city_problem(entry: &CityEntry) -> Option<String> {
    if !is_country(&entry.country) {
        return Some(format!(
            "country {:?} is not a two-letter ISO 3166 code",
            entry.country
        ));
    }
    if !CONTINENTS.contains(&entry.continent.to_ascii_uppercase().as_str()) {
        return Some(format!(
            "continent {:?} is not one of {}",
            entry.continent,
            CONTINENTS.join(" ")
        ));
    }
    match (entry.latitude, entry.longitude) {
        (Some(lat), _) if !(-90.0..=90.0).contains(&lat) => {
            return Some(format!("latitude {lat} is outside -90..90"));
        }
        (_, Some(lon)) if !(-180.0..=180.0).contains(&lon) => {
            return Some(format!("longitude {lon} is outside -180..180"));
        }
        (Some(_), None) => return Some("latitude without longitude".into()),
        (None, Some(_)) => return Some("longitude without latitude".into()),
        _ => {}
    }
    if entry.city.as_deref().is_some_and(|c| c.trim().is_empty()) {
        return Some("city is empty (leave it out for a country-level record)".into());
    }
    None
}

/// What is wrong with an ASN entry's values, if anything.
fn asn_problem(entry: &AsnEntry) -> Option<String> {
    if entry.asn == 0 {
        return Some("asn 0 is reserved and never announced".into());
    }
    if entry
        .organization
        .as_deref()
        .is_some_and(|o| o.trim().is_empty())
    {
        return Some("organization is empty (leave it out if unknown)".into());
    }
    None
}

/// Reads, validates and builds `source`, then writes both databases. Nothing is
/// written unless both build.
pub fn build_files(source: &Path, city_out: &Path, asn_out: &Path) -> Result<(), BuildError> {
    let text = std::fs::read_to_string(source).map_err(|e| BuildError::Io {
        path: source.to_path_buf(),
        source: e,
    })?;
    let in_file = |error: BuildError| BuildError::InFile {
        path: source.to_path_buf(),
        error: Box::new(error),
    };
    let parsed = Source::parse(&text).map_err(in_file)?;
    let city = parsed.city_database().map_err(in_file)?;
    let asn = parsed.asn_database().map_err(in_file)?;
    for (path, bytes) in [(city_out, city), (asn_out, asn)] {
        std::fs::write(path, bytes).map_err(|e| BuildError::Io {
            path: path.to_path_buf(),
            source: e,
        })?;
    }
    Ok(())
}

/// Tracks the networks of one list to reject repeats, and names entries in errors.
struct Seen<'a> {
    list: &'static str,
    lines: &'a [u64],
    first: HashMap<(u128, u8), usize>,
}

impl<'a> Seen<'a> {
    fn new(list: &'static str, lines: &'a [u64]) -> Self {
        Self {
            list,
            lines,
            first: HashMap::new(),
        }
    }

    fn line(&self, index: usize) -> Option<u64> {
        self.lines.get(index).copied().filter(|l| *l > 0)
    }

    fn invalid(&self, index: usize, network: IpNet, problem: String) -> BuildError {
        BuildError::Invalid {
            list: self.list,
            entry: index + 1,
            network,
            line: self.line(index),
            problem,
        }
    }

    /// Checks one entry: a usable network, not listed before, sound values.
    /// Duplicates are keyed by the network's place in the IPv6 tree, so `1.2.3.0/24`
    /// and `::1.2.3.0/120` (the same node) count as the same network.
    fn check(
        &mut self,
        index: usize,
        network: IpNet,
        problem: Option<String>,
    ) -> Result<(), BuildError> {
        if let Some(problem) = network_problem(network) {
            return Err(self.invalid(index, network, problem));
        }
        if let Some(&first) = self.first.get(&tree_key(network)) {
            let problem = format!(
                "duplicate network, already entry {}{}",
                first + 1,
                at_line(self.line(first))
            );
            return Err(self.invalid(index, network, problem));
        }
        self.first.insert(tree_key(network), index);
        match problem {
            Some(problem) => Err(self.invalid(index, network, problem)),
            None => Ok(()),
        }
    }
}

/// The network's bits and depth in an IPv6 tree, where IPv4 lives under `::/96`.
fn tree_key(network: IpNet) -> (u128, u8) {
    match network {
        IpNet::V4(n) => (u128::from(u32::from(n.network())), n.prefix_len() + 96),
        IpNet::V6(n) => (u128::from(n.network()), n.prefix_len()),
    }
}

/// What makes a network unusable, if anything.
fn network_problem(network: IpNet) -> Option<String> {
    if network.addr() != network.network() {
        return Some(format!(
            "host bits are set; the network is {}",
            network.trunc()
        ));
    }
    ALIASED
        .iter()
        .find(|aliased| aliased.parse::<IpNet>().is_ok_and(|a| a.contains(&network)))
        .map(|aliased| {
            format!("inside {aliased}, which the database maps to IPv4: list the IPv4 network")
        })
}

fn is_country(code: &str) -> bool {
    code.len() == 2 && code.bytes().all(|b| b.is_ascii_alphabetic())
}

/// A GeoLite2-City record: absent source fields are left out, as GeoLite2 does.
fn city_record(entry: &CityEntry) -> Value {
    let names = |name: &str| Value::map([("en", Value::from(name))]);
    let country = entry.country.to_ascii_uppercase();
    let mut record = vec![
        (
            "country",
            Value::map([
                ("iso_code", Value::from(country.as_str())),
                ("names", names(&country)),
            ]),
        ),
        (
            "continent",
            Value::map([("code", Value::from(entry.continent.to_ascii_uppercase()))]),
        ),
    ];
    if let Some(city) = &entry.city {
        record.push(("city", Value::map([("names", names(city))])));
    }
    if let (Some(latitude), Some(longitude)) = (entry.latitude, entry.longitude) {
        record.push((
            "location",
            Value::map([
                ("latitude", Value::from(latitude)),
                ("longitude", Value::from(longitude)),
            ]),
        ));
    }
    Value::map(record)
}

/// A GeoLite2-ASN record.
fn asn_record(entry: &AsnEntry) -> Value {
    let mut record = vec![("autonomous_system_number", Value::from(entry.asn))];
    if let Some(organization) = &entry.organization {
        record.push((
            "autonomous_system_organization",
            Value::from(organization.as_str()),
        ));
    }
    Value::map(record)
}

/// Writes an IPv6 database (IPv4 reachable through the usual aliases). Entries go in
/// from the shortest prefix to the longest so a nested network overrides the one that
/// holds it whatever the source order, and the build time is pinned to the epoch so
/// the same source always gives the same bytes.
fn write_database(
    database: &'static str,
    description: &str,
    records: impl Iterator<Item = (IpNet, Value)>,
) -> Result<Vec<u8>, BuildError> {
    let fail = |source| BuildError::Write { database, source };
    let mut writer = Writer::builder(database)
        .description(&[("en", description)])
        .build_epoch(SystemTime::UNIX_EPOCH)
        .build();
    let mut records: Vec<_> = records.collect();
    records.sort_by_key(|(network, _)| {
        let (bits, depth) = tree_key(*network);
        (depth, bits)
    });
    for (network, record) in records {
        writer.insert_value(network, record).map_err(fail)?;
    }
    writer.to_bytes().map_err(fail)
}

/// Parses a CIDR string, naming the expected form when it is not one.
fn network<'de, D: Deserializer<'de>>(deserializer: D) -> Result<IpNet, D::Error> {
    let text = String::deserialize(deserializer)?;
    text.trim().parse().map_err(|_| {
        serde::de::Error::custom(format!(
            "{text:?} is not a network; expected a CIDR such as 192.0.2.0/24 or 2001:db8::/32"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use maxminddb::{Reader, geoip2};
    use std::net::IpAddr;

    const SOURCE: &str = "\
# A small world.
cities:
  - network: 1.0.16.0/24        # Tokyo
    city: Tokyo
    country: JP
    continent: AS
    latitude: 35.6895
    longitude: 139.6917
  - network: 2003:c9:f400::/38
    city: Frankfurt am Main
    country: de
    continent: eu
    latitude: 50.1273
    longitude: 8.6895
  - network: 24.2.0.0/20        # country level: no city
    country: US
    continent: NA
    latitude: 37.751
    longitude: -97.822
  - network: 5.0.0.0/16         # country only: no city, no coordinates
    country: FR
    continent: EU
asns:
  - network: 1.0.0.0/16
    asn: 2519
    organization: ARTERIA Networks
  - network: 2003::/23
    asn: 3320
  - network: 24.2.0.0/24
    asn: 7922
    organization: Comcast
";

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn open(bytes: Vec<u8>) -> Reader<Vec<u8>> {
        Reader::from_source(bytes).unwrap()
    }

    /// (network prefix, decoded record) of a lookup.
    fn city_at<'r>(reader: &'r Reader<Vec<u8>>, addr: &str) -> (u8, Option<geoip2::City<'r>>) {
        let result = reader.lookup(ip(addr)).unwrap();
        (result.network().unwrap().prefix(), result.decode().unwrap())
    }

    fn asn_at<'r>(reader: &'r Reader<Vec<u8>>, addr: &str) -> (u8, Option<geoip2::Asn<'r>>) {
        let result = reader.lookup(ip(addr)).unwrap();
        (result.network().unwrap().prefix(), result.decode().unwrap())
    }

    fn error(text: &str) -> String {
        Source::parse(text).unwrap_err().to_string()
    }

    fn city(network: &str) -> CityEntry {
        CityEntry {
            network: network.parse().unwrap(),
            city: Some("Somewhere".into()),
            country: "JP".into(),
            continent: "AS".into(),
            latitude: Some(35.0),
            longitude: Some(139.0),
        }
    }

    fn asn(network: &str, number: u32) -> AsnEntry {
        AsnEntry {
            network: network.parse().unwrap(),
            asn: number,
            organization: None,
        }
    }

    #[test]
    fn city_records_decode_as_geolite2() {
        let reader = open(Source::parse(SOURCE).unwrap().city_database().unwrap());
        assert_eq!(reader.metadata().database_type, "GeoLite2-City");
        assert_eq!(reader.metadata().ip_version, 6);

        let (prefix, record) = city_at(&reader, "1.0.16.77");
        let record = record.unwrap();
        assert_eq!(prefix, 24);
        assert_eq!(record.city.names.english, Some("Tokyo"));
        assert_eq!(record.country.iso_code, Some("JP"));
        assert_eq!(record.country.names.english, Some("JP"));
        assert_eq!(record.continent.code, Some("AS"));
        assert_eq!(record.location.latitude, Some(35.6895));
        assert_eq!(record.location.longitude, Some(139.6917));
        assert_eq!(record.location.accuracy_radius, None);
    }

    #[test]
    fn ipv6_entries_and_ipv4_aliases() {
        let reader = open(Source::parse(SOURCE).unwrap().city_database().unwrap());
        let (prefix, record) = city_at(&reader, "2003:c9:f7ff::1");
        let record = record.unwrap();
        assert_eq!(prefix, 38);
        assert_eq!(record.city.names.english, Some("Frankfurt am Main"));
        // Codes are written upper case whatever the source's case.
        assert_eq!(record.country.iso_code, Some("DE"));
        assert_eq!(record.continent.code, Some("EU"));
        assert!(city_at(&reader, "2003:c9:f800::1").1.is_none());

        // IPv4-mapped and 6to4 forms reach the IPv4 record.
        for alias in ["::ffff:1.0.16.77", "2002:100:104d::1"] {
            let (_, record) = city_at(&reader, alias);
            assert_eq!(record.unwrap().city.names.english, Some("Tokyo"), "{alias}");
        }
    }

    #[test]
    fn absent_fields_are_left_out() {
        let reader = open(Source::parse(SOURCE).unwrap().city_database().unwrap());
        let (prefix, record) = city_at(&reader, "24.2.15.255");
        let record = record.unwrap();
        assert_eq!(prefix, 20);
        assert!(record.city.names.is_empty());
        assert_eq!(record.country.iso_code, Some("US"));
        assert_eq!(record.location.latitude, Some(37.751));

        let (prefix, record) = city_at(&reader, "5.0.200.1");
        let record = record.unwrap();
        assert_eq!(prefix, 16);
        assert_eq!(record.country.iso_code, Some("FR"));
        assert_eq!(record.location, Default::default());
    }

    #[test]
    fn addresses_outside_every_network_are_not_found() {
        let reader = open(Source::parse(SOURCE).unwrap().city_database().unwrap());
        for addr in ["1.0.17.1", "1.0.15.255", "8.8.8.8", "2001:db8::1", "::1"] {
            let result = reader.lookup(ip(addr)).unwrap();
            assert!(!result.has_data(), "{addr}");
            assert!(
                result.decode::<geoip2::City<'_>>().unwrap().is_none(),
                "{addr}"
            );
        }
        // The miss still reports the empty network around the address: 1.0.17.0/24
        // and 1.0.16.0/24 are siblings, so the miss covers exactly 1.0.17.0/24.
        let result = reader.lookup(ip("1.0.17.1")).unwrap();
        assert_eq!(result.network().unwrap().to_string(), "1.0.17.0/24");
    }

    #[test]
    fn asn_records_decode_as_geolite2() {
        let reader = open(Source::parse(SOURCE).unwrap().asn_database().unwrap());
        assert_eq!(reader.metadata().database_type, "GeoLite2-ASN");

        let (prefix, record) = asn_at(&reader, "1.0.16.77");
        let record = record.unwrap();
        assert_eq!(prefix, 16);
        assert_eq!(record.autonomous_system_number, Some(2519));
        assert_eq!(
            record.autonomous_system_organization,
            Some("ARTERIA Networks")
        );

        let (prefix, record) = asn_at(&reader, "2003:c9:f400::1");
        assert_eq!(prefix, 23);
        let record = record.unwrap();
        assert_eq!(record.autonomous_system_number, Some(3320));
        assert_eq!(record.autonomous_system_organization, None);

        // The City network (/20) is shorter than the ASN one (/24) here.
        assert_eq!(asn_at(&reader, "24.2.0.9").0, 24);
        assert!(asn_at(&reader, "24.2.1.9").1.is_none());
    }

    #[test]
    fn nested_networks_more_specific_wins_in_any_order() {
        let outer = asn("10.0.0.0/8", 64_500);
        let inner = asn("10.1.2.0/24", 64_501);
        for asns in [
            vec![outer.clone(), inner.clone()],
            vec![inner.clone(), outer.clone()],
        ] {
            let source = Source {
                cities: vec![],
                asns,
            };
            let reader = open(source.asn_database().unwrap());
            let (prefix, record) = asn_at(&reader, "10.1.2.3");
            assert_eq!(
                (prefix, record.unwrap().autonomous_system_number),
                (24, Some(64_501))
            );
            let (prefix, record) = asn_at(&reader, "10.1.3.3");
            assert_eq!(
                (prefix, record.unwrap().autonomous_system_number),
                (24, Some(64_500))
            );
            let (prefix, record) = asn_at(&reader, "10.200.0.1");
            assert_eq!(
                (prefix, record.unwrap().autonomous_system_number),
                (9, Some(64_500))
            );
        }
    }

    #[test]
    fn output_is_deterministic() {
        let source = Source::parse(SOURCE).unwrap();
        let city = source.city_database().unwrap();
        let asn = source.asn_database().unwrap();
        assert_eq!(
            city,
            Source::parse(SOURCE).unwrap().city_database().unwrap()
        );
        assert_eq!(asn, source.asn_database().unwrap());

        // Order in the source does not matter either.
        let mut reversed = source.clone();
        reversed.cities.reverse();
        reversed.asns.reverse();
        assert_eq!(city, reversed.city_database().unwrap());
        assert_eq!(asn, reversed.asn_database().unwrap());

        assert_eq!(open(city).metadata().build_epoch, 0);
    }

    #[test]
    fn empty_source_builds_empty_databases() {
        let source = Source::parse("# nothing yet\n").unwrap();
        assert_eq!(source, Source::default());
        let reader = open(source.city_database().unwrap());
        assert!(!reader.lookup(ip("1.2.3.4")).unwrap().has_data());
    }

    #[test]
    fn yaml_errors_name_the_line() {
        let cases = [
            (
                "cities:\n  - network: 1.0.0.0/24\n    country: JP\n    continent: AS\n    colour: red\n",
                "line 5",
                "unknown field `colour`",
            ),
            (
                "cities:\n  - network: 1.0.0.0/24\n    continent: AS\n",
                "line 3",
                "missing field `country`",
            ),
            (
                "cities:\n  - network: 1.0.0.0/24\n    country: JP\n    continent: AS\n    latitude: north\n",
                "line 5",
                "invalid floating point",
            ),
            (
                "asns:\n  - network: 1.0.0.0\n    asn: 1\n",
                "line 2",
                "\"1.0.0.0\" is not a network",
            ),
            (
                "asns:\n  - network: 1.0.0.0/24\n    asn: -1\n",
                "line 3",
                "",
            ),
            ("asns:\n  - network: [1.0.0.0/24\n", "line 2", ""),
            ("routes: []\n", "line 1", "unknown field `routes`"),
        ];
        for (text, line, reason) in cases {
            let err = Source::parse(text).unwrap_err();
            let message = err.to_string();
            assert!(
                matches!(err, BuildError::Syntax { line: Some(_), .. }),
                "{message}"
            );
            assert!(message.contains(line), "{message:?} lacks {line:?}");
            assert!(message.contains(reason), "{message:?} lacks {reason:?}");
            assert!(!message.contains('\n'), "{message:?} is not one line");
        }
    }

    #[test]
    fn validation_errors_name_the_entry() {
        let entry = |fields: &str| {
            format!(
                "cities:\n  - network: 9.9.9.0/24\n    country: US\n    continent: NA\n  - network: 1.0.16.0/24\n{fields}"
            )
        };
        let cases = [
            (
                "    country: JPN\n    continent: AS\n",
                "country \"JPN\" is not a two-letter",
            ),
            ("    country: J1\n    continent: AS\n", "country \"J1\""),
            (
                "    country: JP\n    continent: XX\n",
                "continent \"XX\" is not one of AF AN AS EU NA OC SA",
            ),
            (
                "    country: JP\n    continent: AS\n    latitude: 91\n    longitude: 0\n",
                "latitude 91 is outside -90..90",
            ),
            (
                "    country: JP\n    continent: AS\n    latitude: 0\n    longitude: -180.5\n",
                "longitude -180.5 is outside -180..180",
            ),
            (
                "    country: JP\n    continent: AS\n    latitude: .nan\n    longitude: 0\n",
                "latitude NaN",
            ),
            (
                "    country: JP\n    continent: AS\n    latitude: 35\n",
                "latitude without longitude",
            ),
            (
                "    country: JP\n    continent: AS\n    city: ' '\n",
                "city is empty",
            ),
        ];
        for (fields, reason) in cases {
            let message = error(&entry(fields));
            assert!(
                message.starts_with("cities entry 2 (1.0.16.0/24, line 5): "),
                "{message}"
            );
            assert!(message.contains(reason), "{message:?} lacks {reason:?}");
        }
        let message = error("asns:\n  - network: 1.0.16.0/24\n    asn: 0\n");
        assert_eq!(
            message,
            "asns entry 1 (1.0.16.0/24, line 2): asn 0 is reserved and never announced"
        );
    }

    #[test]
    fn network_problems_are_rejected() {
        let message = error("asns:\n  - network: 1.0.16.5/24\n    asn: 1\n");
        assert!(
            message.contains("host bits are set; the network is 1.0.16.0/24"),
            "{message}"
        );
        let message = error("asns:\n  - network: ::ffff:1.0.16.0/120\n    asn: 1\n");
        assert!(message.contains("inside ::ffff:0:0/96"), "{message}");
        let message = error("asns:\n  - network: 2002:100:1000::/40\n    asn: 1\n");
        assert!(message.contains("inside 2002::/16"), "{message}");
        // A network holding an aliased range is fine: the alias is carved out.
        Source::parse("asns:\n  - network: 2000::/4\n    asn: 1\n").unwrap();
    }

    #[test]
    fn duplicates_name_both_entries() {
        let text = "asns:\n  - network: 1.0.16.0/24\n    asn: 1\n  - network: 2.0.0.0/8\n    asn: 2\n  - network: 1.0.16.0/24\n    asn: 3\n";
        assert_eq!(
            error(text),
            "asns entry 3 (1.0.16.0/24, line 6): duplicate network, already entry 1, line 2"
        );
        // The same tree node spelled as IPv4-compatible IPv6 is a duplicate too.
        let text = "asns:\n  - network: 1.0.16.0/24\n    asn: 1\n  - network: ::100:1000/120\n    asn: 3\n";
        assert!(error(text).contains("duplicate network"), "{}", error(text));
        // The same network in the two lists is normal.
        Source::parse("cities:\n  - network: 1.0.16.0/24\n    country: JP\n    continent: AS\nasns:\n  - network: 1.0.16.0/24\n    asn: 1\n").unwrap();
    }

    #[test]
    fn sources_built_in_code_are_validated_without_lines() {
        let mut bad = city("1.0.16.0/24");
        bad.country = "Japan".into();
        let source = Source {
            cities: vec![city("1.0.0.0/24"), bad],
            asns: vec![asn("1.0.0.0/24", 1), asn("1.0.0.0/24", 2)],
        };
        let err = source.city_database().unwrap_err();
        assert!(matches!(
            err,
            BuildError::Invalid {
                list: "cities",
                entry: 2,
                line: None,
                ..
            }
        ));
        assert_eq!(
            err.to_string(),
            "cities entry 2 (1.0.16.0/24): country \"Japan\" is not a two-letter ISO 3166 code"
        );
        assert!(
            source
                .asn_database()
                .unwrap_err()
                .to_string()
                .contains("duplicate")
        );
        assert!(source.validate().is_err());
    }

    #[test]
    fn build_files_writes_both_databases() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("geo.yaml");
        let (city, asn) = (dir.path().join("city.mmdb"), dir.path().join("asn.mmdb"));
        std::fs::write(&source, SOURCE).unwrap();
        build_files(&source, &city, &asn).unwrap();
        let parsed = Source::parse(SOURCE).unwrap();
        assert_eq!(
            std::fs::read(&city).unwrap(),
            parsed.city_database().unwrap()
        );
        assert_eq!(std::fs::read(&asn).unwrap(), parsed.asn_database().unwrap());

        // Errors name the file; nothing is written when the source is bad.
        std::fs::write(
            &source,
            "cities:\n  - network: 1.0.0.0/24\n    country: X\n    continent: AS\n",
        )
        .unwrap();
        let (city2, asn2) = (dir.path().join("c2.mmdb"), dir.path().join("a2.mmdb"));
        let message = build_files(&source, &city2, &asn2).unwrap_err().to_string();
        assert!(
            message.starts_with(&format!("{}: cities entry 1", source.display())),
            "{message}"
        );
        assert!(!city2.exists() && !asn2.exists());

        let missing = dir.path().join("missing.yaml");
        let err = build_files(&missing, &city2, &asn2).unwrap_err();
        assert!(matches!(err, BuildError::Io { ref path, .. } if *path == missing));
    }

    /// The checked-in sample databases are exactly what the checked-in source builds:
    /// edit `geodata/sample.yaml`, then rebuild (see `geodata/README.md`).
    #[test]
    fn sample_databases_are_up_to_date() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("geodata");
        let text = std::fs::read_to_string(dir.join("sample.yaml")).unwrap();
        let source = Source::parse(&text).unwrap();
        let city = std::fs::read(dir.join("sample-city.mmdb")).unwrap();
        let asn = std::fs::read(dir.join("sample-asn.mmdb")).unwrap();
        assert!(
            source.city_database().unwrap() == city,
            "sample-city.mmdb is stale"
        );
        assert!(
            source.asn_database().unwrap() == asn,
            "sample-asn.mmdb is stale"
        );
    }
}
