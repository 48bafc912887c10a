//! The City database's records numbered 0, 1, 2, ... so that what is derived per
//! record (a ranking of POPs) can sit in a plain array indexed by the number
//! instead of a hash map keyed by the record's data offset.
//!
//! The numbers are handed out while the tables are compiled, in the order the
//! compilation meets the records, and the tables hold the numbers as their values.
//! The tree walk, which finds a record by its offset, looks the number up here.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnetwork::IpNetwork;
use maxminddb::{Reader, WithinOptions};

/// A record the walk found that has no number: its database's tree is damaged
/// before it (neither the tables' compilation nor the walk of every network that
/// follows a failed one got that far), or its data lies past 4 GiB. Never a
/// valid number (2^32 - 1 records would not fit the data section they come from).
pub const UNNUMBERED: u32 = u32::MAX;

/// Hands out record numbers during compilation.
#[derive(Debug, Default)]
pub struct Numbering {
    by_offset: HashMap<u32, u32>,
}

impl Numbering {
    /// The number of the record at `offset`, a new one the first time it is met;
    /// [`UNNUMBERED`] past 4 GiB of data, which no real database has.
    pub fn number(&mut self, offset: usize) -> u32 {
        let Ok(offset) = u32::try_from(offset) else {
            return UNNUMBERED;
        };
        let next = self.by_offset.len() as u32;
        *self.by_offset.entry(offset).or_insert(next)
    }

    /// The numbers handed out, for the walk to look up.
    pub fn finish(self) -> RecordNumbers {
        let mut by_offset: Vec<(u32, u32)> = self.by_offset.into_iter().collect();
        by_offset.sort_unstable();
        RecordNumbers {
            by_offset: by_offset.into_boxed_slice(),
        }
    }
}

/// Numbers every record `reader`'s tree reaches, walking all its networks. For a
/// database whose tables could not be compiled (their compilation numbered part
/// of its records, or none): rankings are then still kept per record, where
/// without a number every decision for the record would score every POP. A
/// damaged tree is numbered up to its first unreadable node.
pub fn number_every_record<S: AsRef<[u8]>>(reader: &Reader<S>, numbering: &mut Numbering) {
    let unspecified = if reader.metadata().ip_version == 6 {
        IpAddr::V6(Ipv6Addr::UNSPECIFIED)
    } else {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    };
    let Ok(every) = IpNetwork::new(unspecified, 0) else {
        return;
    };
    let Ok(networks) = reader.within(every, WithinOptions::default()) else {
        return;
    };
    for result in networks {
        let Ok(result) = result else {
            break;
        };
        if let Some(offset) = result.offset() {
            numbering.number(offset);
        }
    }
}

/// Every numbered record's offset and number, in offset order: 8 bytes a record.
#[derive(Debug, Default)]
pub struct RecordNumbers {
    by_offset: Box<[(u32, u32)]>,
}

impl RecordNumbers {
    /// The number of the record at `offset`, or [`UNNUMBERED`].
    pub fn get(&self, offset: usize) -> u32 {
        let Ok(offset) = u32::try_from(offset) else {
            return UNNUMBERED;
        };
        match self.by_offset.binary_search_by_key(&offset, |&(o, _)| o) {
            Ok(i) => self.by_offset[i].1,
            Err(_) => UNNUMBERED,
        }
    }

    /// How many records are numbered: every number is below it.
    pub fn len(&self) -> usize {
        self.by_offset.len()
    }

    /// Whether no record is numbered.
    pub fn is_empty(&self) -> bool {
        self.by_offset.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geo::GeoDb;
    use crate::geo::build::{CityEntry, Source};

    #[test]
    fn a_walk_numbers_the_records_the_tables_do() {
        // Networks at both ends of the IPv6 space and in the IPv4 subtree, a
        // record narrower than a /64 among them.
        let networks = [
            "10.0.0.0/8",
            "2001:db8::/32",
            "2001:db8:0:1::1/128",
            "fd00::/8",
        ];
        let cities = networks
            .iter()
            .enumerate()
            .map(|(i, network)| CityEntry {
                network: network.parse().expect("network"),
                city: Some(format!("City {i}")),
                country: "DE".into(),
                continent: "EU".into(),
                latitude: Some(f64::from(i as u8)),
                longitude: Some(8.0),
            })
            .collect();
        let source = Source {
            cities,
            asns: Vec::new(),
        };
        let city = source.city_database().expect("City database");
        let geo = GeoDb::from_bytes(Some(city.clone()), None).expect("database");
        let mut numbering = Numbering::default();
        number_every_record(&Reader::from_source(city).expect("reader"), &mut numbering);
        let walked = numbering.finish();
        assert_eq!(walked.len(), networks.len());
        assert_eq!(geo.city_records(), networks.len());
    }

    #[test]
    fn numbers_are_dense_stable_and_found_by_offset() {
        let mut numbering = Numbering::default();
        let offsets = [900, 40, 900, 7, 40, 12_345];
        let numbers: Vec<u32> = offsets.iter().map(|&o| numbering.number(o)).collect();
        assert_eq!(numbers, [0, 1, 0, 2, 1, 3]);
        let numbers = numbering.finish();
        assert_eq!(numbers.len(), 4);
        for (offset, number) in [(900, 0), (40, 1), (7, 2), (12_345, 3)] {
            assert_eq!(numbers.get(offset), number);
        }
        assert_eq!(numbers.get(41), UNNUMBERED);
    }
}
