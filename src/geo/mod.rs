//! Where a client is: MaxMind-format City and ASN databases (GeoLite2, GeoIP2 and
//! DB-IP files are drop-ins), opened once per snapshot and only read afterwards.
//!
//! A lookup also returns the prefix length of the database network that matched,
//! found or not: the ECS scope of an answer is built from these prefixes, since
//! every address inside that network gets the same record and so the same answer.
//!
//! Each database is compiled into a [`table::Ipv4Table`] and a
//! [`table6::Ipv6Table`] when it is opened (off the answer path: reloads open
//! databases on a blocking thread, and reuse them while the files are unchanged).
//! IPv4 lookups read the IPv4 table; IPv6 lookups read the IPv6 table, except in
//! the /64s the tree splits further and in its IPv4 aliases, where they walk the
//! tree; the City record's fields still come from the tree.

pub mod build;
pub mod records;
pub mod subnet_cache;
pub mod table;
pub mod table6;

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use maxminddb::{Reader, geoip2};
use serde::Serialize;

use records::{Numbering, RecordNumbers};
use table::Ipv4Table;
use table6::Ipv6Table;

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
    /// Number of the City record (below [`GeoDb::city_records`], or
    /// [`records::UNNUMBERED`] if its database could not be read whole): addresses
    /// with the same record share every location field, so rankings can be kept
    /// per record rather than per address.
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
    city: Option<Database>,
    asn: Option<Database>,
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
        let kind = |db: &Option<Database>| {
            db.as_ref()
                .map(|db| db.reader.metadata().database_type.clone())
        };
        f.debug_struct("GeoDb")
            .field("city", &kind(&self.city))
            .field("asn", &kind(&self.asn))
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
        let city = city
            .map(|p| {
                Ok(Database::city(
                    open(p, &["ASN", "ISP"], "a City database")?,
                    p,
                ))
            })
            .transpose()?;
        let asn = asn
            .map(|p| {
                Ok(Database::asn(
                    open(p, &["City", "Country"], "an ASN database")?,
                    p,
                ))
            })
            .transpose()?;
        Ok(Self {
            city,
            asn,
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
        let city = city
            .map(|b| Ok(Database::city(load(b, "<city>")?, Path::new("<city>"))))
            .transpose()?;
        let asn = asn
            .map(|b| Ok(Database::asn(load(b, "<asn>")?, Path::new("<asn>"))))
            .transpose()?;
        Ok(Self {
            city,
            asn,
            generation: next_generation(),
        })
    }

    /// Locates an address. Never fails: a database error reads as "not found".
    pub fn locate(&self, ip: IpAddr) -> Location {
        self.lookup(ip, true)
    }

    /// Locates an address as far as the networks go: both prefixes, the City
    /// record's number and the ASN, but not the City record's fields, whose
    /// decoding is a fifth of a lookup (a GeoLite2 record is mostly names to skip).
    /// For callers that cache what they derive from the record by its number.
    pub fn locate_networks(&self, ip: IpAddr) -> Location {
        self.lookup(ip, false)
    }

    /// As [`GeoDb::locate_networks`], if every database read answers for `ip`
    /// from its compiled tables, without a tree walk; `None` otherwise. Without
    /// `with_asn` the ASN database is not read: the ASN is `None` and its prefix 0.
    pub fn locate_networks_from_tables(&self, ip: IpAddr, with_asn: bool) -> Option<Location> {
        let mut location = Location::default();
        if let Some(city) = &self.city {
            (location.city_record, location.city_prefix) = city.table_answer(ip)?;
        }
        if with_asn && let Some(asn) = &self.asn {
            (location.asn, location.asn_prefix) = asn.table_answer(ip)?;
        }
        Some(location)
    }

    /// The City database's IPv4 ranges in address order, each as its first address
    /// and record number (if it has a record), if it is loaded and its IPv4 part
    /// compiled into a table. A network wider than a /16 comes once per /16.
    pub fn city_ipv4_ranges(&self) -> Option<impl Iterator<Item = (Ipv4Addr, Option<u32>)> + '_> {
        Some(self.city.as_ref()?.ipv4.as_ref()?.iter())
    }

    /// The City database's IPv6 ranges in address order, if it is loaded and its
    /// IPv6 part compiled into a table: each as the top 64 bits of its first
    /// address and its record number (if it has a record), or `None` for a range
    /// the table leaves to the tree walk.
    pub fn city_ipv6_ranges(
        &self,
    ) -> Option<impl Iterator<Item = (u64, Option<Option<u32>>)> + '_> {
        Some(self.city.as_ref()?.ipv6.as_ref()?.iter())
    }

    /// The ASN database's IPv4 ranges in address order, each as its first address
    /// and ASN, if it is loaded and its IPv4 part compiled into a table.
    pub fn asn_ipv4_ranges(&self) -> Option<impl Iterator<Item = (Ipv4Addr, Option<u32>)> + '_> {
        Some(self.asn.as_ref()?.ipv4.as_ref()?.iter())
    }

    /// The ASN database's IPv6 ranges in address order, if it is loaded and its
    /// IPv6 part compiled into a table: each as the top 64 bits of its first
    /// address and its ASN (if it has one), or `None` for a range the table
    /// leaves to the tree walk (a split /64, an IPv4 alias).
    pub fn asn_ipv6_ranges(&self) -> Option<impl Iterator<Item = (u64, Option<Option<u32>>)> + '_> {
        Some(self.asn.as_ref()?.ipv6.as_ref()?.iter())
    }

    /// Which databases these are: a number no other `GeoDb` of this process has.
    pub fn generation(&self) -> u32 {
        self.generation
    }

    /// As [`GeoDb::locate_networks`], always by walking the trees: the reference
    /// the compiled tables are held to (tests, benchmarks).
    pub fn locate_networks_by_tree(&self, ip: IpAddr) -> Location {
        let mut location = Location::default();
        if let Some(city) = &self.city {
            city.walk_city(ip, false, &mut location);
        }
        if let Some(asn) = &self.asn {
            asn.walk_asn(ip, &mut location);
        }
        location
    }

    /// Both lookups; the City record's fields only with `city_fields`. Answered
    /// from the tables where they can, except for the City record's fields,
    /// which only the record has.
    fn lookup(&self, ip: IpAddr, city_fields: bool) -> Location {
        let mut location = Location::default();
        if let Some(city) = &self.city {
            // The fields need the record, which only the walk reaches.
            let found = if city_fields {
                None
            } else {
                city.table_answer(ip)
            };
            match found {
                Some(found) => (location.city_record, location.city_prefix) = found,
                None => city.walk_city(ip, city_fields, &mut location),
            }
        }
        if let Some(asn) = &self.asn {
            match asn.table_answer(ip) {
                Some(found) => (location.asn, location.asn_prefix) = found,
                None => asn.walk_asn(ip, &mut location),
            }
        }
        location
    }

    /// Human-readable names for `explain`.
    pub fn describe(&self, ip: IpAddr) -> Description {
        let mut description = Description::default();
        if let Some(city) = &self.city
            && let Ok(result) = city.reader.lookup(ip)
        {
            description.city_network = result.network().ok().map(|n| n.to_string());
            if let Ok(Some(record)) = result.decode::<geoip2::City<'_>>() {
                description.city = record.city.names.english.map(str::to_owned);
            }
        }
        if let Some(asn) = &self.asn
            && let Ok(result) = asn.reader.lookup(ip)
        {
            description.asn_network = result.network().ok().map(|n| n.to_string());
            if let Ok(Some(record)) = result.decode::<geoip2::Asn<'_>>() {
                description.organization = record.autonomous_system_organization.map(str::to_owned);
            }
        }
        description
    }

    /// The coordinates of `ip`'s City record, by a walk of the City tree alone
    /// (for a decision that has the rest of the location already).
    pub fn coordinates(&self, ip: IpAddr) -> Option<Coordinates> {
        self.locate_city(ip).coordinates
    }

    /// The City record's fields and network for `ip`, by a walk of the City tree
    /// alone; no ASN.
    pub fn locate_city(&self, ip: IpAddr) -> Location {
        let mut location = Location::default();
        if let Some(city) = &self.city {
            city.walk_city(ip, true, &mut location);
        }
        location
    }

    /// How many City records are numbered: every `Location::city_record` but
    /// [`records::UNNUMBERED`] is below it.
    pub fn city_records(&self) -> usize {
        self.city.as_ref().map_or(0, |db| db.numbers.len())
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

/// One opened database and its IPv4 and IPv6 parts compiled into tables, which
/// answer lookups in place of the tree walk.
struct Database {
    reader: Reader<Vec<u8>>,
    /// None if the tree could not be compiled (a damaged tree the walk may still
    /// read in part): then the walk answers, as it did before tables.
    ipv4: Option<Ipv4Table>,
    /// None if the tree could not be compiled, or has no IPv6 part.
    ipv6: Option<Ipv6Table>,
    /// A City database's records by offset, as the tables number them; empty
    /// for an ASN database.
    numbers: RecordNumbers,
}

impl Database {
    /// A City database and its tables.
    fn city(reader: Reader<Vec<u8>>, name: &Path) -> Self {
        let started = Instant::now();
        let mut numbering = Numbering::default();
        let ipv4 = Ipv4Table::city(&reader, &mut numbering);
        let mut db = Self::with_table(reader, ipv4, name, started);
        let started = Instant::now();
        let ipv6 = Ipv6Table::city(&db.reader, &mut numbering);
        let compiled =
            db.ipv4.is_some() && matches!(ipv6, Ok(_) | Err(table6::Ipv6TableError::NoIpv6Tree));
        db.ipv6 = ipv6_table(ipv6, name, started);
        if !compiled {
            records::number_every_record(&db.reader, &mut numbering);
        }
        db.numbers = numbering.finish();
        tracing::info!(
            database = %name.display(),
            records = db.numbers.len(),
            "numbered the City records"
        );
        db
    }

    /// An ASN database and its tables.
    fn asn(reader: Reader<Vec<u8>>, name: &Path) -> Self {
        let started = Instant::now();
        let ipv4 = Ipv4Table::asn(&reader);
        let mut db = Self::with_table(reader, ipv4, name, started);
        let started = Instant::now();
        db.ipv6 = ipv6_table(Ipv6Table::asn(&db.reader), name, started);
        db
    }

    /// The value and prefix length the tables give for `ip`, if they answer.
    #[inline]
    fn table_answer(&self, ip: IpAddr) -> Option<(Option<u32>, u8)> {
        match ip {
            IpAddr::V4(addr) => self.ipv4.as_ref().map(|table| table.get(addr)),
            IpAddr::V6(addr) => self.ipv6.as_ref()?.get(addr),
        }
    }

    /// Keeps the IPv4 table, or says why there is none (lookups still work, slower).
    fn with_table(
        reader: Reader<Vec<u8>>,
        ipv4: Result<Ipv4Table, table::TableError>,
        name: &Path,
        started: Instant,
    ) -> Self {
        let ipv4 = match ipv4 {
            Ok(table) => {
                tracing::info!(
                    database = %name.display(),
                    ranges = table.ranges(),
                    bytes = table.heap_bytes(),
                    took_ms = started.elapsed().as_millis() as u64,
                    "compiled the IPv4 networks into a table"
                );
                Some(table)
            }
            Err(error) => {
                tracing::warn!(
                    database = %name.display(),
                    %error,
                    "IPv4 lookups walk the tree: it could not be compiled into a table"
                );
                None
            }
        };
        Self {
            reader,
            ipv4,
            ipv6: None,
            numbers: RecordNumbers::default(),
        }
    }

    /// The City tree walk: the network's prefix and record number, and the
    /// record's fields with `fields`.
    fn walk_city(&self, ip: IpAddr, fields: bool, location: &mut Location) {
        let Ok(result) = self.reader.lookup(ip) else {
            return;
        };
        location.city_prefix = network_prefix(&result);
        location.city_record = result.offset().map(|o| self.numbers.get(o));
        if fields && let Ok(Some(record)) = result.decode::<CityFields<'_>>() {
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

    /// The ASN tree walk: the network's prefix and the ASN.
    fn walk_asn(&self, ip: IpAddr, location: &mut Location) {
        let Ok(result) = self.reader.lookup(ip) else {
            return;
        };
        location.asn_prefix = network_prefix(&result);
        if let Ok(Some(record)) = result.decode::<geoip2::Asn<'_>>() {
            location.asn = record.autonomous_system_number;
        }
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

/// Keeps an IPv6 table, or says why there is none (IPv6 lookups then walk the tree).
fn ipv6_table(
    table: Result<Ipv6Table, table6::Ipv6TableError>,
    name: &Path,
    started: Instant,
) -> Option<Ipv6Table> {
    match table {
        Ok(table) => {
            tracing::info!(
                database = %name.display(),
                ranges = table.ranges(),
                walked = table.walk_ranges(),
                bytes = table.heap_bytes(),
                took_ms = started.elapsed().as_millis() as u64,
                "compiled the IPv6 networks into a table"
            );
            Some(table)
        }
        // An IPv4 database: its tree has no IPv6 addresses to answer for.
        Err(table6::Ipv6TableError::NoIpv6Tree) => None,
        Err(error) => {
            tracing::warn!(
                database = %name.display(),
                %error,
                "IPv6 lookups walk the tree: it could not be compiled into a table"
            );
            None
        }
    }
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
