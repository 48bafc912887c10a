//! The IPv4 part of one MaxMind database compiled, when it is opened, into flat
//! sorted arrays that answer what the tree walk answers from a few cache lines.
//!
//! A tree walk reads about 24 dependent nodes spread over a 60 MB image: with
//! clients spread over the address space each is a CPU cache miss. The table
//! instead lists every leaf of the IPv4 tree in address order, the networks that
//! hold a record and the empty nodes between them alike, as ranges: the tree
//! reports the depth of an empty node too, and the ECS scope of an answer is built
//! from it. A lookup reads the top 16 bits' bucket bounds (one line of a 256 KiB
//! index), binary-searches the bucket's 16-bit range starts (one or two lines for
//! most buckets) and reads the one payload found.
//!
//! Each range costs 6 bytes (a `u16` start and a `u32` payload); the payload packs
//! the prefix length the tree reports with an index into the values of the
//! database's distinct records (City record offsets, or ASNs), which are few next
//! to the ranges.
//!
//! The ranges come from the tree itself ([`maxminddb::Reader::within`] with the
//! networks without data), so the table agrees with the walk by construction,
//! including on trees whose empty space is not split into maximal blocks.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use ipnetwork::{IpNetwork, Ipv4Network};
use maxminddb::{LookupResult, MaxMindDbError, Reader, WithinOptions, geoip2};

/// Why a database's IPv4 part could not be compiled; lookups then walk its tree.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    /// The tree could not be read (a bad node or data pointer).
    #[error("reading the IPv4 networks: {0}")]
    Database(#[from] MaxMindDbError),
    /// The tree's leaves did not tile the IPv4 space in order.
    #[error("IPv4 networks out of order: expected one at {expected}, got {found}")]
    NotContiguous {
        /// Where the next network should have started.
        expected: Ipv4Addr,
        /// Where it started.
        found: Ipv4Addr,
    },
    /// The tree's leaves stopped short of the end of the IPv4 space.
    #[error("IPv4 networks end before {0}")]
    Incomplete(Ipv4Addr),
    /// More distinct values than a payload can index.
    #[error("more than {MAX_VALUES} distinct records")]
    TooManyValues,
}

/// The compiled IPv4 part of one database: for any IPv4 address, the value of the
/// tree's leaf holding it (if that leaf has a record) and the leaf's prefix length.
#[derive(Debug)]
pub struct Ipv4Table {
    /// For each value of an address's top 16 bits, where its ranges start in
    /// `starts`; one more entry at the end, the number of ranges.
    buckets: Box<[u32]>,
    /// The low 16 bits of each range's first address, ascending within a bucket.
    /// Every bucket's first range starts at 0: a leaf wider than a /16 is listed
    /// once in each bucket it covers.
    starts: Box<[u16]>,
    /// Per range: `value index << PREFIX_BITS | prefix length`.
    payloads: Box<[u32]>,
    /// The value of each distinct record that has one, by index; [`NO_VALUE`]
    /// stands for a leaf without a record or a record without a value.
    values: Box<[u32]>,
}

/// Bits of a payload holding the prefix length. Seven, not six: an IPv6 database
/// without an IPv4 subtree reports for every IPv4 address the IPv6 prefix (up
/// to 95) of the leaf `::/96` falls in.
const PREFIX_BITS: u32 = 7;
const PREFIX_MASK: u32 = (1 << PREFIX_BITS) - 1;
/// The value index of a leaf without a value (an empty node, a record without the
/// field); the largest index a payload holds.
const NO_VALUE: u32 = u32::MAX >> PREFIX_BITS;
/// `0.0.0.0/0`.
const EVERY_IPV4: Ipv4Network = match Ipv4Network::new_checked(Ipv4Addr::UNSPECIFIED, 0) {
    Some(network) => network,
    None => unreachable!(),
};
/// How many distinct records with a value a table can index: 33 million.
const MAX_VALUES: u32 = NO_VALUE;

impl Ipv4Table {
    /// A City database's table: the value is the record's offset, as
    /// [`GeoDb::locate_networks`](super::GeoDb::locate_networks) reports it.
    pub fn city<S: AsRef<[u8]>>(reader: &Reader<S>) -> Result<Self, TableError> {
        Self::compile(reader, |result| result.offset().map(|o| o as u32))
    }

    /// An ASN database's table: the value is the ASN, decoded as the walk decodes it.
    pub fn asn<S: AsRef<[u8]>>(reader: &Reader<S>) -> Result<Self, TableError> {
        Self::compile(reader, |result| {
            result
                .decode::<geoip2::Asn<'_>>()
                .ok()
                .flatten()
                .and_then(|record| record.autonomous_system_number)
        })
    }

    /// Compiles the IPv4 part of `reader`'s tree; `value` gives a record's value
    /// from a lookup result, and is asked once per distinct record, not once per
    /// network (GeoLite2-City's 3 million IPv4 leaves share half a million records).
    pub fn compile<S, F>(reader: &Reader<S>, mut value: F) -> Result<Self, TableError>
    where
        S: AsRef<[u8]>,
        F: FnMut(&LookupResult<'_, S>) -> Option<u32>,
    {
        let options = WithinOptions::default().include_networks_without_data();
        // A binary tree of n nodes has at most n + 1 leaves, and a leaf is listed
        // again in each further /16 it covers. Reserved at once, the arrays never
        // grow by doubling, whose discarded copies the allocator would keep; the
        // pages never written are never resident, and the boxed slices give the
        // rest back.
        let most = reader.metadata().node_count as usize + 1 + (1 << 16);
        let mut builder = Builder::with_capacity(most);
        for result in reader.within(IpNetwork::V4(EVERY_IPV4), options)? {
            let result = result?;
            let network = result.network()?;
            let (first, last) = match network {
                IpNetwork::V4(n) => (u32::from(n.network()), u32::from(n.broadcast())),
                // An IPv6 database without an IPv4 subtree: one IPv6 leaf holds
                // `::/96` and so every IPv4 address, as the walk reports.
                IpNetwork::V6(_) => (0, u32::MAX),
            };
            let index = match result.offset() {
                None => NO_VALUE,
                Some(offset) => builder.index_of(offset, || value(&result))?,
            };
            builder.push(first, last, network.prefix(), index)?;
        }
        builder.finish()
    }

    /// The value of the leaf holding `addr`, if any, and the leaf's prefix length.
    #[inline]
    pub fn get(&self, addr: Ipv4Addr) -> (Option<u32>, u8) {
        let addr = u32::from(addr);
        let bucket = (addr >> 16) as usize;
        let low = addr as u16;
        // Built with 65,537 bucket bounds, each bucket non-empty and starting at 0:
        // the bounds are in range and the search finds at least the first range.
        let (from, to) = (
            self.buckets[bucket] as usize,
            self.buckets[bucket + 1] as usize,
        );
        let within = self.starts[from..to].partition_point(|&start| start <= low);
        let payload = self.payloads[from + within - 1];
        let index = payload >> PREFIX_BITS;
        let value = (index != NO_VALUE).then(|| self.values[index as usize]);
        (value, (payload & PREFIX_MASK) as u8)
    }

    /// How many ranges the table holds (a leaf wider than a /16 counts once per /16).
    pub fn ranges(&self) -> usize {
        self.starts.len()
    }

    /// How many distinct values the table holds.
    pub fn values(&self) -> usize {
        self.values.len()
    }

    /// Heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        size_of_val(&*self.buckets)
            + size_of_val(&*self.starts)
            + size_of_val(&*self.payloads)
            + size_of_val(&*self.values)
    }
}

/// Collects the leaves in address order.
#[derive(Default)]
struct Builder {
    buckets: Vec<u32>,
    starts: Vec<u16>,
    payloads: Vec<u32>,
    values: Vec<u32>,
    /// The value index of each record seen, by data offset.
    indices: HashMap<usize, u32>,
    /// The first address not yet covered (2^32 when all are).
    next: u64,
}

impl Builder {
    fn with_capacity(ranges: usize) -> Self {
        Self {
            buckets: Vec::with_capacity((1 << 16) + 1),
            starts: Vec::with_capacity(ranges),
            payloads: Vec::with_capacity(ranges),
            ..Self::default()
        }
    }

    /// Adds the leaf `first..=last`, which must start where the previous one ended.
    fn push(&mut self, first: u32, last: u32, prefix: u8, index: u32) -> Result<(), TableError> {
        if u64::from(first) != self.next || last < first {
            return Err(TableError::NotContiguous {
                expected: Ipv4Addr::from(self.next.min(u64::from(u32::MAX)) as u32),
                found: Ipv4Addr::from(first),
            });
        }
        let payload = index << PREFIX_BITS | (u32::from(prefix) & PREFIX_MASK);
        let mut at = first;
        loop {
            let bucket = (at >> 16) as usize;
            if self.buckets.len() == bucket {
                self.buckets.push(self.starts.len() as u32);
            }
            self.starts.push(at as u16);
            self.payloads.push(payload);
            let bucket_last = at | 0xffff;
            if last <= bucket_last {
                break;
            }
            at = bucket_last + 1;
        }
        self.next = u64::from(last) + 1;
        Ok(())
    }

    /// The value index of the record at `offset`, its value found with `value`
    /// the first time the record is seen.
    fn index_of(
        &mut self,
        offset: usize,
        value: impl FnOnce() -> Option<u32>,
    ) -> Result<u32, TableError> {
        if let Some(&index) = self.indices.get(&offset) {
            return Ok(index);
        }
        let index = match value() {
            None => NO_VALUE,
            Some(value) => {
                let index = self.values.len() as u32;
                if index >= MAX_VALUES {
                    return Err(TableError::TooManyValues);
                }
                self.values.push(value);
                index
            }
        };
        self.indices.insert(offset, index);
        Ok(index)
    }

    fn finish(mut self) -> Result<Ipv4Table, TableError> {
        if self.next != 1 << 32 {
            return Err(TableError::Incomplete(Ipv4Addr::from(self.next as u32)));
        }
        self.buckets.push(self.starts.len() as u32);
        Ok(Ipv4Table {
            buckets: self.buckets.into_boxed_slice(),
            starts: self.starts.into_boxed_slice(),
            payloads: self.payloads.into_boxed_slice(),
            values: self.values.into_boxed_slice(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> u32 {
        u32::from(text.parse::<Ipv4Addr>().expect("address"))
    }

    /// A table of `leaves` (first address, prefix, value) in order.
    fn table(leaves: &[(&str, u8, Option<u32>)]) -> Result<Ipv4Table, TableError> {
        let mut builder = Builder::default();
        for &(first, prefix, value) in leaves {
            let first = addr(first);
            let last = first | u32::MAX.checked_shr(u32::from(prefix)).unwrap_or(0);
            // Leaves with the same value share a record, as they would in a database.
            let offset = value.map_or(usize::MAX, |v| v as usize);
            let index = builder.index_of(offset, || value)?;
            builder.push(first, last, prefix, index)?;
        }
        builder.finish()
    }

    /// Leaves wider than a /16 are listed in every bucket they cover; a lookup
    /// anywhere in one finds it, and the leaves either side of a bucket boundary
    /// are told apart.
    #[test]
    fn leaves_are_found_across_buckets() {
        let table = table(&[
            ("0.0.0.0", 1, None),
            ("128.0.0.0", 8, Some(7)),
            ("129.0.0.0", 16, Some(8)),
            ("129.1.0.0", 32, None),
            ("129.1.0.1", 32, Some(9)),
            ("129.1.0.2", 31, Some(9)),
            ("129.1.0.4", 30, None),
            ("129.1.0.8", 29, None),
            ("129.1.0.16", 28, None),
            ("129.1.0.32", 27, None),
            ("129.1.0.64", 26, None),
            ("129.1.0.128", 25, None),
            ("129.1.1.0", 24, None),
            ("129.1.2.0", 23, None),
            ("129.1.4.0", 22, None),
            ("129.1.8.0", 21, None),
            ("129.1.16.0", 20, None),
            ("129.1.32.0", 19, None),
            ("129.1.64.0", 18, None),
            ("129.1.128.0", 17, None),
            ("129.2.0.0", 15, None),
            ("129.4.0.0", 14, None),
            ("129.8.0.0", 13, None),
            ("129.16.0.0", 12, None),
            ("129.32.0.0", 11, None),
            ("129.64.0.0", 10, None),
            ("129.128.0.0", 9, None),
            ("130.0.0.0", 7, None),
            ("132.0.0.0", 6, None),
            ("136.0.0.0", 5, None),
            ("144.0.0.0", 4, None),
            ("160.0.0.0", 3, None),
            ("192.0.0.0", 2, Some(10)),
        ])
        .expect("table");
        let get = |text: &str| table.get(text.parse().expect("address"));
        assert_eq!(get("0.0.0.0"), (None, 1));
        assert_eq!(get("127.255.255.255"), (None, 1));
        assert_eq!(get("128.0.0.0"), (Some(7), 8));
        assert_eq!(get("128.200.3.4"), (Some(7), 8));
        assert_eq!(get("128.255.255.255"), (Some(7), 8));
        assert_eq!(get("129.0.255.255"), (Some(8), 16));
        assert_eq!(get("129.1.0.0"), (None, 32));
        assert_eq!(get("129.1.0.1"), (Some(9), 32));
        assert_eq!(get("129.1.0.3"), (Some(9), 31));
        assert_eq!(get("129.1.0.4"), (None, 30));
        assert_eq!(get("129.1.255.255"), (None, 17));
        assert_eq!(get("191.255.255.255"), (None, 3));
        assert_eq!(get("255.255.255.255"), (Some(10), 2));
        // 128/1 spans 2^15 buckets, 128/8 256 of them, 192/2 2^14.
        assert_eq!(table.buckets.len(), (1 << 16) + 1);
        assert!(table.ranges() > (1 << 15) + (1 << 14));
        // Two leaves share one record: one value.
        assert_eq!(table.values.len(), 4);
    }

    /// Leaves that overlap, leave a gap or stop short are refused, not tabled.
    #[test]
    fn leaves_must_tile_the_space() {
        let gap = table(&[("0.0.0.0", 2, None), ("128.0.0.0", 1, None)]);
        assert!(
            matches!(gap, Err(TableError::NotContiguous { expected, found })
                if expected == Ipv4Addr::new(64, 0, 0, 0) && found == Ipv4Addr::new(128, 0, 0, 0)),
            "{gap:?}"
        );
        let overlap = table(&[("0.0.0.0", 1, None), ("0.0.0.0", 2, None)]);
        assert!(
            matches!(overlap, Err(TableError::NotContiguous { .. })),
            "{overlap:?}"
        );
        let short = table(&[("0.0.0.0", 1, Some(1))]);
        assert!(
            matches!(short, Err(TableError::Incomplete(end)) if end == Ipv4Addr::new(128, 0, 0, 0)),
            "{short:?}"
        );
        assert!(table(&[("0.0.0.0", 0, Some(1))]).is_ok());
    }
}
