//! The IPv6 part of one MaxMind database compiled, when it is opened, into flat
//! arrays that answer most IPv6 lookups as the tree walk does, from a few cache
//! lines instead of up to 64 dependent nodes.
//!
//! Resolvers send IPv6 clients cut to a /56 at most, and nearly all of the tree's
//! leaves are a /64 or wider, so the table keys its ranges by an address's top 64
//! bits. A leaf of a /64 or wider is one range. A /64 the tree splits further is
//! a range marked "walk the tree": the lookup does not answer and the caller
//! walks, as it did before. GeoLite2-City's 101,610 leaves longer than a /64 lie
//! behind 1,677 such ranges of its 597,534 (ASN.mmdb: 2,918 behind 134 of
//! 565,112), and 99.4% of the /56s at the ends of ASN.mmdb's networks are
//! answered from the two tables. So
//! are the IPv4 aliases of the tree (`::ffff:0:0/96`, 6to4 `2002::/16`, Teredo
//! `2001::/32`): [`maxminddb::Reader::within`] skips them, and the hole each
//! leaves is marked like a split /64. `::/96`, the IPv4 subtree itself, is deeper
//! than a /64 and so marked too. Runs of marked /64s are kept as a few aligned
//! blocks.
//!
//! The ranges tile the 64-bit key space and each is a leaf, an aligned block: its
//! prefix length gives its size, and so the start of the next one. An entry stores
//! only the answer (the value, a has-value bit and the prefix length, 5 bytes);
//! each 64-byte line of twelve entries has the start of its first one kept apart,
//! and a lookup adds up the sizes along the line to find the range holding the
//! key. That is 5.7 bytes a range where explicit 8-byte starts would take 13:
//! 3.8 MB for GeoLite2-City, 3.7 MB for ASN.mmdb, index included.
//!
//! A lookup reads about three cold lines: the line index of its top 16 bits (a
//! 256 KiB index), the first starts of eight lines (found by a search of every
//! eighth line's, which stays cached), and the one line of entries.

use std::collections::HashMap;
use std::net::Ipv6Addr;

use ipnetwork::{IpNetwork, Ipv6Network};
use maxminddb::{LookupResult, MaxMindDbError, Reader, WithinOptions};

use super::records::Numbering;
use super::table::{Line, asn_value, city_value};

/// Why a database's IPv6 part could not be compiled; IPv6 lookups then walk its tree.
#[derive(Debug, thiserror::Error)]
pub enum Ipv6TableError {
    /// The tree could not be read (a bad node or data pointer).
    #[error("reading the IPv6 networks: {0}")]
    Database(#[from] MaxMindDbError),
    /// The database has no IPv6 tree (an IPv4 database).
    #[error("an IPv4 database has no IPv6 networks")]
    NoIpv6Tree,
    /// The tree's leaves overlapped or went backwards.
    #[error("IPv6 networks out of order: expected one at {expected}, got {found}")]
    NotContiguous {
        /// Where the next network should have started (or later, for a hole).
        expected: Ipv6Addr,
        /// Where it started.
        found: Ipv6Addr,
    },
    /// The tree's leaves stopped short of the end of the IPv6 space.
    #[error("IPv6 networks end before {0}")]
    Incomplete(Ipv6Addr),
}

/// The compiled IPv6 part of one database: for an IPv6 address outside the /64s
/// the tree splits and outside its IPv4 aliases, the value of the tree's leaf
/// holding it (if that leaf has a record) and the leaf's prefix length.
#[derive(Debug)]
pub struct Ipv6Table {
    /// For each value of an address's top 16 bits, the line holding the range of
    /// its first address; one more entry at the end, the last line.
    buckets: Box<[u32]>,
    /// The ranges' entries in address order, [`PER_LINE`] to a line.
    lines: Box<[Line<ENTRY_BYTES>]>,
    /// The top 64 bits of the first address of each line's first range,
    /// [`GROUP`] lines' to a 64-byte group.
    firsts: Box<[Firsts]>,
    /// Each group's first entry: searched before the groups. A top-16-bit bucket
    /// spans thousands of lines (IPv6 space is allocated from a few dozen /16s),
    /// and a binary search over its firsts read a cold line at nearly every step;
    /// this is an eighth of their size (about 50 KB a database) and stays cached,
    /// so a lookup reads one line of firsts and one of entries.
    summary: Box<[u64]>,
    /// How many ranges the lines hold (the last line may be partly unused).
    ranges: usize,
    /// How many of them are marked "walk the tree".
    walks: usize,
}

/// Bytes per entry, and entries per line (the last one's 8-byte read ends inside
/// the line).
const ENTRY_BYTES: usize = 5;
const PER_LINE: usize = 12;
/// Lines whose firsts share a 64-byte group.
const GROUP: usize = 8;

/// The firsts of [`GROUP`] consecutive lines, on one cache line.
#[derive(Clone, Copy, Debug)]
#[repr(C, align(64))]
struct Firsts([u64; GROUP]);
/// Where an entry's fields sit: the value in the low 32 bits, then the prefix
/// length (0 to 64) and the has-value bit on top.
const PREFIX_SHIFT: u32 = 32;
const PREFIX_MASK: u64 = (1 << 7) - 1;
const HAS_VALUE: u64 = 1 << 39;
/// A range the table does not answer for: no value, and a value field of 1
/// (a range without a record has 0 there).
const WALK: u64 = 1;
/// `::/0`.
const EVERY_IPV6: Ipv6Network = match Ipv6Network::new_checked(Ipv6Addr::UNSPECIFIED, 0) {
    Some(network) => network,
    None => unreachable!(),
};

/// The size, in /64s, of a block of prefix length `prefix` (0 to 64); a /0 wraps
/// to 0, and is only ever the one range of a table.
#[inline]
fn block_size(prefix: u64) -> u64 {
    u64::MAX
        .checked_shr(prefix as u32)
        .unwrap_or(0)
        .wrapping_add(1)
}

/// What an entry answers: its value (if its leaf has one) and prefix length, or
/// `None` for a range marked "walk the tree".
#[inline]
fn answer(entry: u64) -> Option<(Option<u32>, u8)> {
    if entry & HAS_VALUE == 0 && entry & u64::from(u32::MAX) == WALK {
        return None;
    }
    let value = (entry & HAS_VALUE != 0).then_some(entry as u32);
    Some((value, ((entry >> PREFIX_SHIFT) & PREFIX_MASK) as u8))
}

impl Ipv6Table {
    /// A City database's table: the value is the record's number from
    /// `numbering`, as [`GeoDb::locate_networks`](super::GeoDb::locate_networks)
    /// reports it.
    pub fn city<S: AsRef<[u8]>>(
        reader: &Reader<S>,
        numbering: &mut Numbering,
    ) -> Result<Self, Ipv6TableError> {
        Self::compile(reader, city_value(numbering))
    }

    /// An ASN database's table: the value is the ASN, decoded as the walk decodes it.
    pub fn asn<S: AsRef<[u8]>>(reader: &Reader<S>) -> Result<Self, Ipv6TableError> {
        Self::compile(reader, asn_value)
    }

    /// Compiles the IPv6 part of `reader`'s tree; `value` gives a record's value
    /// from a lookup result, and is asked once per distinct record, also of the
    /// leaves narrower than a /64 the table leaves to the walk (so that a City
    /// record reached only by the walk is numbered too).
    pub fn compile<S, F>(reader: &Reader<S>, mut value: F) -> Result<Self, Ipv6TableError>
    where
        S: AsRef<[u8]>,
        F: FnMut(&LookupResult<'_, S>) -> Option<u32>,
    {
        if reader.metadata().ip_version != 6 {
            return Err(Ipv6TableError::NoIpv6Tree);
        }
        let options = WithinOptions::default().include_networks_without_data();
        // A binary tree of n nodes has at most n + 1 leaves, and each leaf gives
        // at most one range (a run of walked ones, a few). Reserved at once, as
        // the IPv4 table's are: no discarded copies from doubling for the
        // allocator to keep, the pages never written are never resident, and
        // the boxed slices give the rest back.
        let mut builder = Builder::with_capacity(reader.metadata().node_count as usize + 1);
        for result in reader.within(IpNetwork::V6(EVERY_IPV6), options)? {
            let result = result?;
            let (first, prefix) = match result.network()? {
                IpNetwork::V6(n) => (u128::from(n.network()), n.prefix()),
                // A leaf of the IPv4 subtree, which sits at `::/96`.
                IpNetwork::V4(n) => (u128::from(u32::from(n.network())), 96 + n.prefix()),
            };
            let found = match result.offset() {
                Some(offset) => builder
                    .value_of(offset, || value(&result))
                    .filter(|_| prefix <= 64),
                None => None,
            };
            builder.leaf(first, prefix, found)?;
        }
        builder.finish()
    }

    /// The value of the leaf holding `addr`, if any, and the leaf's prefix length;
    /// `None` where the table does not answer and the tree must be walked.
    #[inline]
    pub fn get(&self, addr: Ipv6Addr) -> Option<(Option<u32>, u8)> {
        let key = (u128::from(addr) >> 64) as u64;
        let bucket = (key >> 48) as usize;
        // Built with 65,537 bounds, each the line of a range holding an address
        // at or below the key (or, the next bucket's, above it): the range
        // holding the key is on one of the lines from the first to the second.
        let (from, to) = (
            self.buckets[bucket] as usize,
            self.buckets[bucket + 1] as usize,
        );
        // The last group from the first to the second whose first line starts at
        // or below the key, then the last such line of it; the first bound's
        // group and line count whatever their start, as the first bound does.
        let (first_group, last_group) = (from / GROUP, to / GROUP);
        let group = first_group
            + self.summary[first_group + 1..=last_group].partition_point(|&first| first <= key);
        let low = from.max(group * GROUP);
        let high = to.min(group * GROUP + GROUP - 1);
        let firsts = &self.firsts[group].0;
        let line = low
            + (low + 1..=high)
                .map(|i| usize::from(firsts[i % GROUP] <= key))
                .sum::<usize>();
        let entries = &self.lines[line];
        let count = (self.ranges - line * PER_LINE).min(PER_LINE);
        // The ranges tile the line from its first start: the last one starting at
        // or below the key holds it. The sum of the sizes wraps to 0 only at the
        // end of the space, after the last range.
        let offset = key - self.firsts[line / GROUP].0[line % GROUP];
        let mut start = 0u64;
        let mut entry = entries.entry(0);
        for i in 0..count {
            let next = entries.entry(i);
            if start <= offset {
                entry = next;
            }
            start = start.wrapping_add(block_size((next >> PREFIX_SHIFT) & PREFIX_MASK));
        }
        answer(entry)
    }

    /// Every range in address order, as the top 64 bits of its first address and
    /// its value as [`Ipv6Table::get`] gives it: `None` for a range marked "walk
    /// the tree" (whose leaves the table does not know), else the leaf's value if
    /// it has one. They tile the 64-bit key space; a run of walked /64s comes as
    /// a few aligned blocks.
    pub fn iter(&self) -> impl Iterator<Item = (u64, Option<Option<u32>>)> + '_ {
        self.lines
            .iter()
            .enumerate()
            .flat_map(move |(line, entries)| {
                let count = (self.ranges - line * PER_LINE).min(PER_LINE);
                let first = self.firsts[line / GROUP].0[line % GROUP];
                // Each range starts where the one before it on the line ends.
                (0..count).scan(first, move |start, i| {
                    let entry = entries.entry(i);
                    let key = *start;
                    *start = start.wrapping_add(block_size((entry >> PREFIX_SHIFT) & PREFIX_MASK));
                    Some((key, answer(entry).map(|(value, _)| value)))
                })
            })
    }

    /// How many ranges the table holds, "walk the tree" markers included.
    pub fn ranges(&self) -> usize {
        self.ranges
    }

    /// How many of the ranges are marked "walk the tree" (split /64s and IPv4
    /// aliases, a run of adjacent ones as a few aligned blocks).
    pub fn walk_ranges(&self) -> usize {
        self.walks
    }

    /// Heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        size_of_val(&*self.buckets)
            + size_of_val(&*self.lines)
            + size_of_val(&*self.firsts)
            + size_of_val(&*self.summary)
    }
}

/// Collects the leaves in address order.
struct Builder {
    buckets: Vec<u32>,
    lines: Vec<Line<ENTRY_BYTES>>,
    firsts: Vec<u64>,
    ranges: usize,
    walks: usize,
    /// The value of each record seen, by data offset.
    values: HashMap<usize, Option<u32>>,
    /// The first address no leaf has covered yet; 2^128 when all are.
    next: Address,
    /// The first /64 no range covers yet; 2^64 when all are.
    next_key: u128,
    /// /64s to be marked "walk the tree", first and last, not yet added.
    walk: Option<(u64, u64)>,
}

/// An IPv6 address, or the end of the space.
type Address = Option<u128>;

impl Builder {
    fn with_capacity(ranges: usize) -> Self {
        let lines = ranges.div_ceil(PER_LINE);
        Self {
            lines: Vec::with_capacity(lines),
            firsts: Vec::with_capacity(lines),
            ..Self::default()
        }
    }

    /// Adds the leaf `first/prefix`, which must start where the previous one ended
    /// or later: a hole (an IPv4 alias the iteration skips) is walked.
    fn leaf(&mut self, first: u128, prefix: u8, value: Option<u32>) -> Result<(), Ipv6TableError> {
        let next = self.next.ok_or(Ipv6TableError::NotContiguous {
            expected: Ipv6Addr::from(u128::MAX),
            found: Ipv6Addr::from(first),
        })?;
        let size_mask = u128::MAX.checked_shr(u32::from(prefix)).unwrap_or(0);
        if first < next || first & size_mask != 0 {
            return Err(Ipv6TableError::NotContiguous {
                expected: Ipv6Addr::from(next),
                found: Ipv6Addr::from(first),
            });
        }
        if first > next {
            self.mark_walk((next >> 64) as u64, ((first - 1) >> 64) as u64)?;
        }
        let key = (first >> 64) as u64;
        if prefix <= 64 {
            let answer = value.map_or(0, |v| HAS_VALUE | u64::from(v));
            self.flush_walk()?;
            self.push(key, prefix, answer)?;
        } else {
            self.mark_walk(key, key)?;
        }
        self.next = (first | size_mask).checked_add(1);
        Ok(())
    }

    /// Notes /64s `first..=last` as to be walked; adjacent ones join one run.
    fn mark_walk(&mut self, first: u64, last: u64) -> Result<(), Ipv6TableError> {
        match &mut self.walk {
            Some((_, end)) if u128::from(first) <= u128::from(*end) + 1 => *end = last.max(*end),
            _ => {
                self.flush_walk()?;
                self.walk = Some((first, last));
            }
        }
        Ok(())
    }

    /// Adds the pending run of walked /64s as the fewest aligned blocks.
    fn flush_walk(&mut self) -> Result<(), Ipv6TableError> {
        let Some((first, last)) = self.walk.take() else {
            return Ok(());
        };
        let (mut at, end) = (u128::from(first), u128::from(last) + 1);
        while at < end {
            // The widest block aligned at `at` that ends by `end`.
            let mut bits = at.trailing_zeros().min(64);
            while at + (1 << bits) > end {
                bits -= 1;
            }
            self.push(at as u64, 64 - bits as u8, WALK)?;
            self.walks += 1;
            at += 1 << bits;
        }
        Ok(())
    }

    /// Adds one range: the /64s `key/prefix`, answering `answer`.
    fn push(&mut self, key: u64, prefix: u8, answer: u64) -> Result<(), Ipv6TableError> {
        if u128::from(key) != self.next_key {
            return Err(Ipv6TableError::NotContiguous {
                expected: Ipv6Addr::from(self.next_key << 64),
                found: Ipv6Addr::from(u128::from(key) << 64),
            });
        }
        let slot = self.ranges % PER_LINE;
        if slot == 0 {
            self.lines.push(Line::EMPTY);
            self.firsts.push(key);
        }
        let line = self.lines.len() - 1;
        if let Some(entries) = self.lines.last_mut() {
            entries.set(
                slot,
                answer | (u64::from(prefix) & PREFIX_MASK) << PREFIX_SHIFT,
            );
        }
        self.ranges += 1;
        self.next_key = u128::from(key) + (1 << (64 - u32::from(prefix)));
        // Every bucket whose first address this range holds.
        while self.buckets.len() < 1 << 16 && (self.buckets.len() as u128) << 48 < self.next_key {
            self.buckets.push(line as u32);
        }
        Ok(())
    }

    /// The value of the record at `offset`, found with `value` the first time the
    /// record is seen (decoding an ASN record once, not once per network).
    fn value_of(&mut self, offset: usize, value: impl FnOnce() -> Option<u32>) -> Option<u32> {
        *self.values.entry(offset).or_insert_with(value)
    }

    fn finish(mut self) -> Result<Ipv6Table, Ipv6TableError> {
        if let Some(next) = self.next {
            return Err(Ipv6TableError::Incomplete(Ipv6Addr::from(next)));
        }
        self.flush_walk()?;
        self.buckets.push(self.lines.len().saturating_sub(1) as u32);
        // Past the last line, starts above every key (never read: the lookup
        // stops at the last line).
        let firsts: Box<[Firsts]> = self
            .firsts
            .chunks(GROUP)
            .map(|chunk| {
                let mut group = Firsts([u64::MAX; GROUP]);
                group.0[..chunk.len()].copy_from_slice(chunk);
                group
            })
            .collect();
        let summary = firsts.iter().map(|group| group.0[0]).collect();
        Ok(Ipv6Table {
            buckets: self.buckets.into_boxed_slice(),
            lines: self.lines.into_boxed_slice(),
            firsts,
            summary,
            ranges: self.ranges,
            walks: self.walks,
        })
    }
}

impl Default for Builder {
    fn default() -> Self {
        Self {
            buckets: Vec::with_capacity((1 << 16) + 1),
            lines: Vec::new(),
            firsts: Vec::new(),
            ranges: 0,
            walks: 0,
            values: HashMap::new(),
            next: Some(0),
            next_key: 0,
            walk: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A leaf of a test tiling: first address, prefix length, value, and whether
    /// the iteration skips it (an alias).
    type Leaf = (u128, u8, Option<u32>, bool);

    /// A deterministic stream (xorshift64).
    struct Random(u64);

    impl Random {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn wide(&mut self) -> u128 {
            u128::from(self.next()) << 64 | u128::from(self.next())
        }
    }

    /// The whole space cut at `cuts` random points of random alignment (from /0
    /// to /128), each piece split into the aligned blocks a tree's leaves are.
    /// Pieces share a few values, some have none and some are skipped.
    fn tiling(random: &mut Random, cuts: usize) -> Vec<Leaf> {
        let mut points: Vec<u128> = (0..cuts)
            .map(|_| {
                let align = random.next() % 129;
                random.wide() & !low_bits(align as u32)
            })
            .chain([0])
            .collect();
        points.sort_unstable();
        points.dedup();
        let mut leaves = Vec::new();
        for (i, &from) in points.iter().enumerate() {
            let to = points.get(i + 1).map(|&p| p - 1).unwrap_or(u128::MAX);
            let roll = random.next() % 8;
            let value = (roll > 1).then_some((roll % 5) as u32);
            // Never the last piece: the iteration skips only inner subtrees.
            let skipped = roll == 1 && i + 1 < points.len();
            let mut at = from;
            loop {
                // The widest aligned block at `at` that ends by `to`.
                let mut bits = at.trailing_zeros();
                while low_bits(bits) > to - at {
                    bits -= 1;
                }
                leaves.push((at, 128 - bits as u8, value, skipped));
                let last = at | low_bits(bits);
                if last >= to {
                    break;
                }
                at = last + 1;
            }
        }
        leaves
    }

    /// The low `bits` bits set (0 to 128).
    fn low_bits(bits: u32) -> u128 {
        u128::MAX.checked_shr(128 - bits).unwrap_or(0)
    }

    fn table(leaves: &[Leaf]) -> Result<Ipv6Table, Ipv6TableError> {
        let mut builder = Builder::default();
        for &(first, prefix, value, skipped) in leaves {
            if !skipped {
                builder.leaf(first, prefix, value)?;
            }
        }
        builder.finish()
    }

    /// What the table must say for `addr`: the leaf's answer if it is a /64 or
    /// wider and not skipped, else nothing.
    fn expected(leaves: &[Leaf], addr: u128) -> Option<(Option<u32>, u8)> {
        let i = leaves.partition_point(|leaf| leaf.0 <= addr) - 1;
        let (_, prefix, value, skipped) = leaves[i];
        (prefix <= 64 && !skipped).then_some((value, prefix))
    }

    /// Random tilings, dense and sparse, answer as their leaves do at each leaf's
    /// edges and at random addresses; split /64s and skipped leaves are walked.
    #[test]
    fn tables_answer_as_their_leaves() {
        let mut random = Random(0x5eed_f00d);
        for cuts in [0, 1, 5, 40, 300, 3_000] {
            for _ in 0..4 {
                let leaves = tiling(&mut random, cuts);
                let table = table(&leaves).expect("table");
                let mut addresses = vec![0, u128::MAX];
                for &(first, prefix, ..) in &leaves {
                    let last = first | u128::MAX.checked_shr(u32::from(prefix)).unwrap_or(0);
                    addresses.extend([first, first.saturating_add(1), last]);
                }
                addresses.extend((0..2_000).map(|_| random.wide()));
                for addr in addresses {
                    assert_eq!(
                        table.get(Ipv6Addr::from(addr)),
                        expected(&leaves, addr),
                        "{cuts} cuts: {}",
                        Ipv6Addr::from(addr)
                    );
                }
                assert_iter_tiles(&table, &leaves);
            }
        }
    }

    /// The iteration gives every range once, in order, each starting where the one
    /// before it ends and answering at its first and last /64 as the lookup does.
    fn assert_iter_tiles(table: &Ipv6Table, leaves: &[Leaf]) {
        let ranges: Vec<(u64, Option<Option<u32>>)> = table.iter().collect();
        assert_eq!(ranges.len(), table.ranges());
        assert_eq!(ranges.first().map(|r| r.0), Some(0));
        let walks = ranges.iter().filter(|(_, value)| value.is_none()).count();
        assert_eq!(walks, table.walk_ranges());
        for (i, &(key, value)) in ranges.iter().enumerate() {
            let end = ranges.get(i + 1).map(|next| u128::from(next.0) << 64);
            let last = end.map_or(u128::MAX, |end| end - 1);
            assert!(end.is_none_or(|end| end > u128::from(key) << 64), "{i}");
            let first = u128::from(key) << 64;
            for addr in [first, last] {
                let found = expected(leaves, addr);
                assert_eq!(
                    found.map(|(value, _)| value),
                    value,
                    "{}",
                    Ipv6Addr::from(addr)
                );
            }
            // A range with an answer is one leaf, exactly.
            if value.is_some() {
                let (start, prefix, ..) =
                    leaves[leaves.partition_point(|leaf| leaf.0 <= first) - 1];
                let size = u128::MAX.checked_shr(u32::from(prefix)).unwrap_or(0);
                assert_eq!(
                    (start, start | size),
                    (first, last),
                    "{}",
                    Ipv6Addr::from(first)
                );
            }
        }
    }

    /// A run of walked /64s is kept as the fewest aligned blocks, and wide leaves
    /// cross bucket bounds.
    #[test]
    fn walked_runs_are_aligned_blocks() {
        let mut builder = Builder::default();
        // ::/64 split (two /96s, the second ending at ::1:ffff:ffff), the rest
        // of it, 0:0:0:1::/64 and 0:0:0:2::/63 skipped: one run of /64s 0 to 3,
        // a /62.
        builder.leaf(0, 96, Some(1)).expect("leaf");
        builder.leaf(1 << 32, 96, None).expect("leaf");
        builder.leaf(4 << 64, 62, Some(2)).expect("leaf");
        builder.leaf(8 << 64, 61, None).expect("leaf");
        // Then blocks doubling in size up to the top half: /60 at 0:0:0:10::
        // to /1 at 8000::.
        for bits in 4..64 {
            let value = (bits % 2 == 1).then_some(bits);
            builder
                .leaf(1 << (64 + bits), 64 - bits as u8, value)
                .expect("leaf");
        }
        let table = builder.finish().expect("table");
        assert_eq!((table.ranges(), table.walk_ranges()), (63, 1));
        let get = |text: &str| table.get(text.parse().expect("address"));
        assert_eq!(get("::"), None);
        assert_eq!(get("0:0:0:3:ffff:ffff:ffff:ffff"), None);
        assert_eq!(get("0:0:0:4::"), Some((Some(2), 62)));
        assert_eq!(get("0:0:0:f::"), Some((None, 61)));
        assert_eq!(get("0:0:0:10::"), Some((None, 60)));
        assert_eq!(get("0fff:ffff::"), Some((Some(59), 5)));
        assert_eq!(get("1000::"), Some((None, 4)));
        assert_eq!(get("3fff::1"), Some((Some(61), 3)));
        assert_eq!(get("ffff:ffff::"), Some((Some(63), 1)));
    }

    /// Leaves that overlap, are misaligned or stop short are refused.
    #[test]
    fn leaves_must_tile_the_space() {
        let leaf = |first, prefix| (first, prefix, None, false);
        let overlap = table(&[leaf(0, 1), leaf(0, 2)]);
        assert!(
            matches!(overlap, Err(Ipv6TableError::NotContiguous { .. })),
            "{overlap:?}"
        );
        let misaligned = table(&[leaf(0, 2), leaf(1 << 126, 1)]);
        assert!(
            matches!(misaligned, Err(Ipv6TableError::NotContiguous { .. })),
            "{misaligned:?}"
        );
        let short = table(&[leaf(0, 1)]);
        assert!(
            matches!(short, Err(Ipv6TableError::Incomplete(end)) if u128::from(end) == 1 << 127),
            "{short:?}"
        );
        let whole = table(&[(0, 0, Some(7), false)]).expect("table");
        assert_eq!(whole.get(Ipv6Addr::LOCALHOST), Some((Some(7), 0)));
        assert_eq!(whole.get(Ipv6Addr::from(u128::MAX)), Some((Some(7), 0)));
    }
}
