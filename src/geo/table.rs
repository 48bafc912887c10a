//! The IPv4 part of one MaxMind database compiled, when it is opened, into flat
//! sorted arrays that answer what the tree walk answers from a few cache lines.
//!
//! A tree walk reads about 24 dependent nodes spread over a 60 MB image: with
//! clients spread over the address space each is a CPU cache miss. The table
//! instead lists every leaf of the IPv4 tree in address order, the networks that
//! hold a record and the empty nodes between them alike, as ranges: the tree
//! reports the depth of an empty node too, and the ECS scope of an answer is built
//! from it.
//!
//! Each range is one 56-bit entry holding the whole answer: the low 16 bits of its
//! first address on top (so entries compare as their starts do), then the prefix
//! length, a has-value bit and the value itself (the City record offset, or the
//! ASN). Nine 7-byte entries fill a 64-byte line and the lines are aligned, so the
//! search that finds a range has read its answer too; no further array is indexed.
//! Seven bytes rather than a `u64` keep the growth over a separate 2-byte start
//! and 4-byte payload indexing the distinct values to 10% (GeoLite2-City: 22.4 MB
//! instead of 20.4 MB; a `u64` would take 24.4 MB).
//!
//! A lookup reads about three lines: the top 16 bits' bucket bounds (a 256 KiB index),
//! the first start of each of the bucket's lines of entries (a `u16` per line, in
//! one or two lines for a /16 of up to 288 ranges, 98% of GeoLite2-City's; 670 KB
//! in all, so it tends to stay cached with the bucket index), and the one line of
//! entries. A binary search over the entries themselves reads up to six lines in a
//! dense /16 and measured no faster than a search of the starts then reading the
//! payload and value; an index of each dense /16 by its next 8 bits would cost
//! 512 bytes per bucket, 13 MB for GeoLite2-City's 26,000 /16s of over 16 ranges.
//!
//! The ranges come from the tree itself ([`maxminddb::Reader::within`] with the
//! networks without data), so the table agrees with the walk by construction,
//! including on trees whose empty space is not split into maximal blocks.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use ipnetwork::{IpNetwork, Ipv4Network};
use maxminddb::{LookupResult, MaxMindDbError, Reader, WithinOptions, geoip2};

use super::records::Numbering;

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
}

/// The compiled IPv4 part of one database: for any IPv4 address, the value of the
/// tree's leaf holding it (if that leaf has a record) and the leaf's prefix length.
#[derive(Debug)]
pub struct Ipv4Table {
    /// For each value of an address's top 16 bits, the index of its first range;
    /// one more entry at the end, the number of ranges. Range `i` is entry
    /// `i % PER_LINE` of line `i / PER_LINE`.
    buckets: Box<[u32]>,
    /// The ranges' entries, [`PER_LINE`] to a line, ascending within a bucket.
    /// Every bucket's first range starts at 0: a leaf wider than a /16 is listed
    /// once in each bucket it covers.
    lines: Box<[Line<ENTRY_BYTES>]>,
    /// The low 16 bits of the first address of each line's first range.
    firsts: Box<[u16]>,
    /// How many ranges the lines hold (the last line may be partly unused).
    ranges: usize,
}

/// One cache line of entries of `BYTES` bytes each (at most 8): entry `i` is the
/// low `BYTES` bytes of the little-endian `u64` at byte `BYTES * i`. Shared with
/// the IPv6 table, whose entries are shorter.
#[derive(Debug, Clone, Copy)]
#[repr(C, align(64))]
pub(super) struct Line<const BYTES: usize>([u8; 64]);

impl<const BYTES: usize> Line<BYTES> {
    pub(super) const EMPTY: Self = Self([0; 64]);
    const MASK: u64 = u64::MAX >> (64 - 8 * BYTES);

    /// Entry `i`; its 8-byte read must end inside the line.
    #[inline]
    pub(super) fn entry(&self, i: usize) -> u64 {
        let at = BYTES * i;
        let bytes: [u8; 8] = self.0[at..at + 8].try_into().unwrap_or_default();
        u64::from_le_bytes(bytes) & Self::MASK
    }

    pub(super) fn set(&mut self, i: usize, entry: u64) {
        let at = BYTES * i;
        self.0[at..at + BYTES].copy_from_slice(&entry.to_le_bytes()[..BYTES]);
    }
}

/// A City record's table value: its number, as
/// [`GeoDb::locate_networks`](super::GeoDb::locate_networks) reports it.
pub(super) fn city_value<S: AsRef<[u8]>>(
    numbering: &mut Numbering,
) -> impl FnMut(&LookupResult<'_, S>) -> Option<u32> + '_ {
    |result| result.offset().map(|o| numbering.number(o))
}

/// An ASN record's table value: the ASN, decoded as the walk decodes it.
pub(super) fn asn_value<S: AsRef<[u8]>>(result: &LookupResult<'_, S>) -> Option<u32> {
    result
        .decode::<geoip2::Asn<'_>>()
        .ok()
        .flatten()
        .and_then(|record| record.autonomous_system_number)
}

/// Bytes per entry, and entries per line (the last one's 8-byte read ends the line).
const ENTRY_BYTES: usize = 7;
const PER_LINE: usize = 9;
/// Where an entry's fields sit: the value in the low 32 bits, then the has-value
/// bit, the prefix length and the range's low 16 start bits.
const HAS_VALUE: u64 = 1 << 32;
const PREFIX_SHIFT: u32 = 33;
/// Seven bits of prefix length, not six: an IPv6 database without an IPv4 subtree
/// reports for every IPv4 address the IPv6 prefix (up to 95) of the leaf `::/96`
/// falls in.
const PREFIX_MASK: u64 = (1 << 7) - 1;
const START_SHIFT: u32 = 40;
/// `0.0.0.0/0`.
const EVERY_IPV4: Ipv4Network = match Ipv4Network::new_checked(Ipv4Addr::UNSPECIFIED, 0) {
    Some(network) => network,
    None => unreachable!(),
};

impl Ipv4Table {
    /// A City database's table: the value is the record's number from
    /// `numbering`, as [`GeoDb::locate_networks`](super::GeoDb::locate_networks)
    /// reports it.
    pub fn city<S: AsRef<[u8]>>(
        reader: &Reader<S>,
        numbering: &mut Numbering,
    ) -> Result<Self, TableError> {
        Self::compile(reader, city_value(numbering))
    }

    /// An ASN database's table: the value is the ASN, decoded as the walk decodes it.
    pub fn asn<S: AsRef<[u8]>>(reader: &Reader<S>) -> Result<Self, TableError> {
        Self::compile(reader, asn_value)
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
            let found = match result.offset() {
                None => None,
                Some(offset) => builder.value_of(offset, || value(&result)),
            };
            builder.push(first, last, network.prefix(), found)?;
        }
        builder.finish()
    }

    /// The value of the leaf holding `addr`, if any, and the leaf's prefix length.
    #[inline]
    pub fn get(&self, addr: Ipv4Addr) -> (Option<u32>, u8) {
        let addr = u32::from(addr);
        let bucket = (addr >> 16) as usize;
        // Every entry whose start is at most the address's low 16 bits.
        let key = (u64::from(addr as u16) << START_SHIFT) | ((1 << START_SHIFT) - 1);
        // Built with 65,537 bucket bounds, each bucket non-empty and its first
        // range starting at 0: the bounds are in range and the searches below
        // find at least that range.
        let (from, to) = (
            self.buckets[bucket] as usize,
            self.buckets[bucket + 1] as usize,
        );
        // The lines after the one holding `from` that start inside the bucket:
        // the range is on the last of them starting at or before the address, or
        // else on `from`'s line.
        let (first_line, last_line) = (from / PER_LINE, (to - 1) / PER_LINE);
        let line = first_line
            + self.firsts[first_line + 1..=last_line]
                .partition_point(|&start| start <= addr as u16);
        let base = line * PER_LINE;
        let (low, high) = (from.max(base) - base, to.min(base + PER_LINE) - base);
        let entries = &self.lines[line];
        // Sorted: the entries at or below the key are the first `count`, and
        // counting them takes no branch to mispredict.
        let count: usize = (low..high)
            .map(|i| usize::from(entries.entry(i) <= key))
            .sum();
        let entry = entries.entry(low + count - 1);
        let value = (entry & HAS_VALUE != 0).then_some(entry as u32);
        (value, ((entry >> PREFIX_SHIFT) & PREFIX_MASK) as u8)
    }

    /// Every range in address order, as its first address and its value; they
    /// tile the IPv4 space. A leaf wider than a /16 comes once per /16 it covers.
    pub fn iter(&self) -> impl Iterator<Item = (Ipv4Addr, Option<u32>)> + '_ {
        self.buckets
            .windows(2)
            .enumerate()
            .flat_map(move |(bucket, bounds)| {
                (bounds[0] as usize..bounds[1] as usize).map(move |i| {
                    let entry = self.lines[i / PER_LINE].entry(i % PER_LINE);
                    let start = (bucket as u32) << 16 | (entry >> START_SHIFT) as u32;
                    let value = (entry & HAS_VALUE != 0).then_some(entry as u32);
                    (Ipv4Addr::from(start), value)
                })
            })
    }

    /// How many ranges the table holds (a leaf wider than a /16 counts once per /16).
    pub fn ranges(&self) -> usize {
        self.ranges
    }

    /// Heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        size_of_val(&*self.buckets) + size_of_val(&*self.lines) + size_of_val(&*self.firsts)
    }
}

/// Collects the leaves in address order.
#[derive(Default)]
struct Builder {
    buckets: Vec<u32>,
    lines: Vec<Line<ENTRY_BYTES>>,
    firsts: Vec<u16>,
    ranges: usize,
    /// The value of each record seen, by data offset.
    values: HashMap<usize, Option<u32>>,
    /// The first address not yet covered (2^32 when all are).
    next: u64,
}

impl Builder {
    fn with_capacity(ranges: usize) -> Self {
        let lines = ranges.div_ceil(PER_LINE);
        Self {
            buckets: Vec::with_capacity((1 << 16) + 1),
            lines: Vec::with_capacity(lines),
            firsts: Vec::with_capacity(lines),
            ..Self::default()
        }
    }

    /// Adds the leaf `first..=last`, which must start where the previous one ended.
    fn push(
        &mut self,
        first: u32,
        last: u32,
        prefix: u8,
        value: Option<u32>,
    ) -> Result<(), TableError> {
        if u64::from(first) != self.next || last < first {
            return Err(TableError::NotContiguous {
                expected: Ipv4Addr::from(self.next.min(u64::from(u32::MAX)) as u32),
                found: Ipv4Addr::from(first),
            });
        }
        let answer = value.map_or(0, |v| HAS_VALUE | u64::from(v))
            | (u64::from(prefix) & PREFIX_MASK) << PREFIX_SHIFT;
        let mut at = first;
        loop {
            let bucket = (at >> 16) as usize;
            if self.buckets.len() == bucket {
                self.buckets.push(self.ranges as u32);
            }
            let start = at as u16;
            let slot = self.ranges % PER_LINE;
            if slot == 0 {
                self.lines.push(Line::EMPTY);
                self.firsts.push(start);
            }
            if let Some(line) = self.lines.last_mut() {
                line.set(slot, u64::from(start) << START_SHIFT | answer);
            }
            self.ranges += 1;
            let bucket_last = at | 0xffff;
            if last <= bucket_last {
                break;
            }
            at = bucket_last + 1;
        }
        self.next = u64::from(last) + 1;
        Ok(())
    }

    /// The value of the record at `offset`, found with `value` the first time the
    /// record is seen (decoding an ASN record once, not once per network).
    fn value_of(&mut self, offset: usize, value: impl FnOnce() -> Option<u32>) -> Option<u32> {
        *self.values.entry(offset).or_insert_with(value)
    }

    fn finish(mut self) -> Result<Ipv4Table, TableError> {
        if self.next != 1 << 32 {
            return Err(TableError::Incomplete(Ipv4Addr::from(self.next as u32)));
        }
        self.buckets.push(self.ranges as u32);
        Ok(Ipv4Table {
            buckets: self.buckets.into_boxed_slice(),
            lines: self.lines.into_boxed_slice(),
            firsts: self.firsts.into_boxed_slice(),
            ranges: self.ranges,
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
            let found = builder.value_of(offset, || value);
            builder.push(first, last, prefix, found)?;
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

        // Iterated, the ranges come in order, once per /16 they cover, each
        // starting where the lookup says its leaf does.
        let ranges: Vec<_> = table.iter().collect();
        assert_eq!(ranges.len(), table.ranges());
        assert!(ranges.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!(ranges[0], (Ipv4Addr::new(0, 0, 0, 0), None));
        assert_eq!(ranges[1], (Ipv4Addr::new(0, 1, 0, 0), None));
        let at = |text: &str| {
            ranges
                .iter()
                .find(|r| r.0 == text.parse::<Ipv4Addr>().unwrap())
        };
        assert_eq!(
            at("128.255.0.0"),
            Some(&(Ipv4Addr::new(128, 255, 0, 0), Some(7)))
        );
        assert_eq!(
            at("129.1.0.2"),
            Some(&(Ipv4Addr::new(129, 1, 0, 2), Some(9)))
        );
        assert_eq!(at("129.1.0.3"), None);
        for (start, value) in &ranges {
            assert_eq!(table.get(*start).0, *value, "{start}");
        }
    }

    /// Buckets of many ranges, starting anywhere within a line, find the range on
    /// the right line: every /24 of a /16 is a leaf of its own.
    #[test]
    fn dense_buckets_find_the_right_line() {
        // A few lone /16s first shift where the dense buckets' lines begin.
        for lone in 0..PER_LINE as u32 {
            let mut builder = Builder::default();
            let mut at = 0u32;
            for _ in 0..lone {
                builder.push(at, at | 0xffff, 16, None).expect("leaf");
                at += 1 << 16;
            }
            for bucket in 0..3u32 {
                for third in 0..256u32 {
                    let first = at + (third << 8);
                    let value = (third % 3 != 0).then_some(bucket << 8 | third);
                    builder.push(first, first | 0xff, 24, value).expect("leaf");
                }
                at += 1 << 16;
            }
            builder
                .push(at, u32::MAX, at.leading_zeros() as u8, Some(9))
                .expect("rest");
            let table = builder.finish().expect("table");
            let dense = lone << 16;
            for bucket in 0..3u32 {
                for third in 0..256u32 {
                    let value = (third % 3 != 0).then_some(bucket << 8 | third);
                    for last in [0, 1, 0x7f, 0xff] {
                        let addr = dense + (bucket << 16) + (third << 8) + last;
                        assert_eq!(table.get(Ipv4Addr::from(addr)), (value, 24), "{addr:#x}");
                    }
                }
            }
            assert_eq!(table.ranges(), 65_536 + 3 * 255);
        }
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
