//! Where a client is: MaxMind-format City and ASN databases (GeoLite2, GeoIP2 and
//! DB-IP files are drop-ins), opened once per snapshot and only read afterwards.
//!
//! A lookup also returns the prefix length of the database network that matched,
//! found or not: the ECS scope of an answer is built from these prefixes, since
//! every address inside that network gets the same record and so the same answer.

pub mod build;
pub mod subnet_cache;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use maxminddb::{Reader, geoip2};
use serde::Serialize;

/// A point on the globe, in degrees.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Coordinates {
    /// Degrees north, -90..=90.
    pub latitude: f64,
    /// Degrees east, -180..=180.
    pub longitude: f64,
}

/// A two-letter code (ISO 3166 country, or MaxMind continent code), upper case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Code([u8; 2]);

impl Code {
    /// Parses two ASCII letters, folding to upper case.
    pub fn parse(text: &str) -> Option<Self> {
        match text.as_bytes() {
            [a, b] if a.is_ascii_alphabetic() && b.is_ascii_alphabetic() => {
                Some(Self([a.to_ascii_uppercase(), b.to_ascii_uppercase()]))
            }
            _ => None,
        }
    }

    /// The code as text.
    pub fn as_str(&self) -> &str {
        // Only ASCII letters are ever stored.
        std::str::from_utf8(&self.0).unwrap_or("??")
    }
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Code {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// What the databases say about one address. Cheap to build: nothing is allocated.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Location {
    /// Coordinates of the city (or country centroid), if the City database knows them.
    pub coordinates: Option<Coordinates>,
    /// ISO 3166 country code.
    pub country: Option<Code>,
    /// Continent code (AF, AN, AS, EU, NA, OC, SA).
    pub continent: Option<Code>,
    /// Autonomous system number of the network operator.
    pub asn: Option<u32>,
    /// Prefix length of the City database network holding the address (found or not).
    pub city_prefix: u8,
    /// Prefix length of the ASN database network holding the address (found or not).
    pub asn_prefix: u8,
    /// Offset of the City record: addresses with the same offset share every
    /// location field, so rankings can be cached per record rather than per address.
    pub city_record: Option<u32>,
}

/// Names for people reading `explain`; looked up only there, never on the answer path.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Description {
    /// English city name.
    pub city: Option<String>,
    /// Network operator's name.
    pub organization: Option<String>,
    /// City database network holding the address.
    pub city_network: Option<String>,
    /// ASN database network holding the address.
    pub asn_network: Option<String>,
}

/// Why a geo database could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct GeoError {
    /// The database file.
    pub path: PathBuf,
    /// What went wrong.
    pub reason: String,
}

/// The City and ASN databases; either may be absent (then every lookup misses it).
pub struct GeoDb {
    city: Option<Reader<Vec<u8>>>,
    asn: Option<Reader<Vec<u8>>>,
    /// Tells these databases from any opened before or after in this process, so
    /// that what was derived from them can be kept by generation.
    generation: u32,
}

impl Default for GeoDb {
    fn default() -> Self {
        Self {
            city: None,
            asn: None,
            generation: next_generation(),
        }
    }
}

/// A generation no `GeoDb` of this process had; never 0. Wrapping would take four
/// billion reloads.
fn next_generation() -> u32 {
    static LAST: AtomicU32 = AtomicU32::new(0);
    loop {
        let generation = LAST.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
        if generation != 0 {
            return generation;
        }
    }
}

impl std::fmt::Debug for GeoDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeoDb")
            .field(
                "city",
                &self.city.as_ref().map(|r| &r.metadata().database_type),
            )
            .field(
                "asn",
                &self.asn.as_ref().map(|r| &r.metadata().database_type),
            )
            .finish()
    }
}

impl GeoDb {
    /// Opens the databases. A file whose metadata says it is of the other kind (an
    /// ASN database given as City, or the reverse) is refused here: swapped paths
    /// would otherwise load fine and leave every client unlocated.
    pub fn open(city: Option<&Path>, asn: Option<&Path>) -> Result<Self, GeoError> {
        let open = |path: &Path, wrong: &[&str], expected: &str| {
            let reader = open_reader(path)?;
            let kind = &reader.metadata().database_type;
            if wrong.iter().any(|w| kind.contains(w)) {
                return Err(GeoError {
                    path: path.to_path_buf(),
                    reason: format!("is a {kind} database; expected {expected}"),
                });
            }
            Ok(reader)
        };
        Ok(Self {
            city: city
                .map(|p| open(p, &["ASN", "ISP"], "a City database"))
                .transpose()?,
            asn: asn
                .map(|p| open(p, &["City", "Country"], "an ASN database"))
                .transpose()?,
            generation: next_generation(),
        })
    }

    /// Builds from database images already in memory (tests, embedded data).
    pub fn from_bytes(city: Option<Vec<u8>>, asn: Option<Vec<u8>>) -> Result<Self, GeoError> {
        let load = |bytes: Vec<u8>, what: &str| {
            Reader::from_source(bytes).map_err(|e| GeoError {
                path: PathBuf::from(what),
                reason: e.to_string(),
            })
        };
        Ok(Self {
            city: city.map(|b| load(b, "<city>")).transpose()?,
            asn: asn.map(|b| load(b, "<asn>")).transpose()?,
            generation: next_generation(),
        })
    }

    /// Locates an address. Never fails: a database error reads as "not found".
    pub fn locate(&self, ip: IpAddr) -> Location {
        self.lookup(ip, true)
    }

    /// Locates an address as far as the networks go: both prefixes, the City
    /// record's offset and the ASN, but not the City record's fields, whose
    /// decoding is a fifth of a lookup (a GeoLite2 record is mostly names to skip).
    /// For callers that cache what they derive from the record by its offset.
    pub fn locate_networks(&self, ip: IpAddr) -> Location {
        self.lookup(ip, false)
    }

    /// Which databases these are: a number no other `GeoDb` of this process has.
    pub fn generation(&self) -> u32 {
        self.generation
    }

    /// Both lookups; the City record's fields only with `city_fields`.
    fn lookup(&self, ip: IpAddr, city_fields: bool) -> Location {
        let mut location = Location::default();
        if let Some(reader) = &self.city
            && let Ok(result) = reader.lookup(ip)
        {
            location.city_prefix = network_prefix(&result);
            location.city_record = result.offset().map(|o| o as u32);
            if city_fields && let Ok(Some(record)) = result.decode::<CityFields<'_>>() {
                if let (Some(latitude), Some(longitude)) =
                    (record.location.latitude, record.location.longitude)
                {
                    location.coordinates = Some(Coordinates {
                        latitude,
                        longitude,
                    });
                }
                location.country = record.country.iso_code.and_then(Code::parse);
                location.continent = record.continent.code.and_then(Code::parse);
            }
        }
        if let Some(reader) = &self.asn
            && let Ok(result) = reader.lookup(ip)
        {
            location.asn_prefix = network_prefix(&result);
            if let Ok(Some(record)) = result.decode::<geoip2::Asn<'_>>() {
                location.asn = record.autonomous_system_number;
            }
        }
        location
    }

    /// Human-readable names for `explain`.
    pub fn describe(&self, ip: IpAddr) -> Description {
        let mut description = Description::default();
        if let Some(reader) = &self.city
            && let Ok(result) = reader.lookup(ip)
        {
            description.city_network = result.network().ok().map(|n| n.to_string());
            if let Ok(Some(record)) = result.decode::<geoip2::City<'_>>() {
                description.city = record.city.names.english.map(str::to_owned);
            }
        }
        if let Some(reader) = &self.asn
            && let Ok(result) = reader.lookup(ip)
        {
            description.asn_network = result.network().ok().map(|n| n.to_string());
            if let Ok(Some(record)) = result.decode::<geoip2::Asn<'_>>() {
                description.organization = record.autonomous_system_organization.map(str::to_owned);
            }
        }
        description
    }

    /// Whether a City database is loaded.
    pub fn has_city(&self) -> bool {
        self.city.is_some()
    }

    /// Whether an ASN database is loaded.
    pub fn has_asn(&self) -> bool {
        self.asn.is_some()
    }
}

/// The City fields routing needs; decoding only these skips the names and
/// subdivisions that make up most of a GeoLite2 record.
#[derive(serde::Deserialize, Default)]
struct CityFields<'a> {
    #[serde(default)]
    location: LocationFields,
    #[serde(borrow, default)]
    country: CodeField<'a>,
    #[serde(borrow, default)]
    continent: ContinentField<'a>,
}

#[derive(serde::Deserialize, Default)]
struct LocationFields {
    latitude: Option<f64>,
    longitude: Option<f64>,
}

#[derive(serde::Deserialize, Default)]
struct CodeField<'a> {
    iso_code: Option<&'a str>,
}

#[derive(serde::Deserialize, Default)]
struct ContinentField<'a> {
    code: Option<&'a str>,
}

fn open_reader(path: &Path) -> Result<Reader<Vec<u8>>, GeoError> {
    Reader::open_readfile(path).map_err(|e| GeoError {
        path: path.to_path_buf(),
        reason: format!("not a readable MaxMind database: {e}"),
    })
}

/// Prefix length of the network a lookup landed in, relative to the address family
/// of the query (an IPv4 address in an IPv6 database reports its IPv4 prefix).
fn network_prefix<S: AsRef<[u8]>>(result: &maxminddb::LookupResult<'_, S>) -> u8 {
    result.network().map(|n| n.prefix()).unwrap_or(0)
}
