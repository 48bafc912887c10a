//! A key space cut into ranges of one 16-bit value each, found by a short search:
//! the shape shared by the ISP ranges and the rankings by address, both compiled
//! per snapshot from the geo databases' tables.
//!
//! The ranges (first key and value) sit in one sorted array. A radix index finds
//! a key's bucket: a table by the key's top bits, and for a bucket that holds more
//! ranges than a short window, a table of its own by the next bits, and so on, so
//! that every bucket ends up holding at most [`WINDOW`] ranges however unevenly
//! the ranges spread (the IPv6 ranges crowd into a few /16s; IPv4 City networks
//! into a few /16s of the busiest cities). A lookup reads an index entry or two,
//! then counts the starts at or below the key in the window: the window's lines
//! load in parallel where a binary search would wait on each in turn. A range is
//! stored once however many buckets it spans, so its true ends are known and an
//! answer can carry the widest aligned block around the key that lies inside its
//! range (an ECS scope).

use std::fmt::Debug;
use std::ops::BitXor;

/// Ranges per top-table bucket aimed at.
const RANGES_PER_BUCKET: usize = 12;
/// Bounds on the top table's key bits: 256 buckets at least, 65,536 (256 KiB) at most.
const MIN_INDEX_BITS: u32 = 8;
const MAX_INDEX_BITS: u32 = 16;
/// Ranges after a bucket's first that a lookup counts through: a bucket holding
/// more gets a table of its own. Fifteen ranges of 8 bytes are two lines or three.
const WINDOW: usize = 15;
/// Ranges per bucket aimed at in a table of a bucket's own.
const RANGES_PER_SUB_BUCKET: usize = 8;
/// Most key bits a bucket's own table takes.
const MAX_SUB_BITS: u32 = 12;

/// An index entry: a bucket's table (this bit set; its key bits and where its
/// entries start in the index) or the range holding the bucket's first key.
const TABLE: u32 = 1 << 31;
const TABLE_BITS_SHIFT: u32 = 26;
const TABLE_START: u32 = (1 << TABLE_BITS_SHIFT) - 1;

/// A key space cut into ranges, each with a 16-bit value.
#[derive(Debug, Clone)]
pub struct Ranges<K> {
    /// Key bits the top table takes.
    top_bits: u32,
    /// The top table's `1 << top_bits` entries, then the buckets' own tables.
    index: Box<[u32]>,
    /// Each range's first key, ascending from 0, and value (adjacent ranges'
    /// differ), side by side: the line the search ends on holds the value too.
    ranges: Box<[Range<K>]>,
}

/// How far warming a lookup's lines has got (see [`Ranges::warm`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Warming {
    /// Nothing is loading yet.
    Start,
    /// The index entry at `at` is loading; `taken` key bits are read.
    Entry { at: u32, taken: u8 },
    /// The window is loading: the lookup reads nothing not asked for.
    Done,
}

/// Asks for the cache line holding `value` without waiting for it.
#[inline]
fn prefetch<T>(value: &T) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        // SAFETY: a prefetch is a hint that never faults, and SSE is part of
        // every x86_64 target.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(std::ptr::from_ref(value).cast()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
}

/// One range: its first key and its value.
#[derive(Debug, Clone, Copy)]
struct Range<K> {
    start: K,
    value: u16,
}

/// What ranges are keyed by: an IPv4 address, or the top 64 bits of an IPv6 one.
pub trait RangeKey: Copy + Ord + Debug + BitXor<Output = Self> {
    /// The first key.
    const ZERO: Self;
    /// The last key.
    const MAX: Self;
    /// Bits in a key.
    const BITS: u32;
    /// The `count` bits after the first `skip` (`skip + count <= BITS`, `count >= 1`),
    /// as an index.
    fn field(self, skip: u32, count: u32) -> usize;
    /// The first and last key of the block of `1 << low` keys at `first` plus
    /// `number` blocks.
    fn block(first: Self, number: usize, low: u32) -> (Self, Self);
    /// The number of leading zero bits.
    fn leading_zeros(self) -> u32;
    /// The key before this one, if any.
    fn before(self) -> Option<Self>;
    /// The key after this one, if any.
    fn after(self) -> Option<Self>;
}

macro_rules! range_key {
    ($($key:ty),*) => {$(
        impl RangeKey for $key {
            const ZERO: Self = 0;
            const MAX: Self = <$key>::MAX;
            const BITS: u32 = <$key>::BITS;
            #[inline]
            fn field(self, skip: u32, count: u32) -> usize {
                ((self << skip) >> (Self::BITS - count)) as usize
            }
            fn block(first: Self, number: usize, low: u32) -> (Self, Self) {
                let start = first | ((number as $key).checked_shl(low).unwrap_or(0));
                (start, start | (<$key>::MAX.checked_shr(Self::BITS - low).unwrap_or(0)))
            }
            #[inline]
            fn leading_zeros(self) -> u32 {
                <$key>::leading_zeros(self)
            }
            #[inline]
            fn before(self) -> Option<Self> {
                self.checked_sub(1)
            }
            #[inline]
            fn after(self) -> Option<Self> {
                self.checked_add(1)
            }
        }
    )*};
}

range_key!(u32, u64);

impl<K: RangeKey> Ranges<K> {
    /// Compiles ranges that tile the key space in order, each given as its first
    /// key and value; adjacent ranges of one value merge. Space before the first
    /// range has `before`'s value.
    pub fn new(ranges: impl IntoIterator<Item = (K, u16)>, before: u16) -> Self {
        let mut starts = vec![K::ZERO];
        let mut values = vec![before];
        for (start, value) in ranges {
            if values.last() == Some(&value) {
                continue;
            }
            if starts.last() == Some(&start) {
                // Only the first range can start where the one before it did.
                values.pop();
                starts.pop();
                if values.last() == Some(&value) {
                    continue;
                }
            }
            starts.push(start);
            values.push(value);
        }
        let buckets = starts.len().div_ceil(RANGES_PER_BUCKET).max(1);
        let top_bits = buckets
            .next_power_of_two()
            .ilog2()
            .clamp(MIN_INDEX_BITS, MAX_INDEX_BITS)
            .min(K::BITS);
        let mut index = Vec::new();
        table(&starts, K::ZERO, 0, top_bits, &mut index);
        Self {
            top_bits,
            index: index.into(),
            ranges: starts
                .into_iter()
                .zip(values)
                .map(|(start, value)| Range { start, value })
                .collect(),
        }
    }

    /// The value of `key`'s range, and the prefix length (in bits of the key) of
    /// the widest aligned block around `key` inside that range.
    #[inline]
    pub fn get(&self, key: K) -> (u16, u8) {
        let mut entry = self.index[key.field(0, self.top_bits)];
        let mut taken = self.top_bits;
        while entry & TABLE != 0 {
            let at;
            (at, taken) = in_table(entry, key, taken);
            entry = self.index[at];
        }
        // The bucket's ranges are `from` and at most WINDOW after it; any after
        // those start past the bucket, so counting the starts at or below the
        // key in the window finds its range.
        let from = entry as usize;
        let end = (from + 1 + WINDOW).min(self.ranges.len());
        let at = from
            + self.ranges[from + 1..end]
                .iter()
                .filter(|r| r.start <= key)
                .count();
        let range = self.ranges[at];
        let last = self.ranges.get(at + 1).and_then(|next| next.start.before());
        (
            range.value,
            widest_block(key, range.start, last.unwrap_or(K::MAX)),
        )
    }

    /// Reads the line warming `key` loaded last (by now, it is hoped, in the
    /// cache) and starts loading the next one [`Ranges::get`] reads: from
    /// [`Warming::Start`], the top table's entry; then a bucket's table's entries;
    /// then the window. Warming many keys a stage at a time lets their cache
    /// misses overlap.
    #[inline]
    pub fn warm(&self, key: K, warming: Warming) -> Warming {
        let (at, taken) = match warming {
            Warming::Start => {
                let at = key.field(0, self.top_bits);
                prefetch(&self.index[at]);
                return Warming::Entry {
                    at: at as u32,
                    taken: self.top_bits as u8,
                };
            }
            Warming::Entry { at, taken } => (at as usize, u32::from(taken)),
            Warming::Done => return Warming::Done,
        };
        let entry = self.index[at];
        if entry & TABLE != 0 {
            let (at, taken) = in_table(entry, key, taken);
            prefetch(&self.index[at]);
            return Warming::Entry {
                at: at as u32,
                taken: taken as u8,
            };
        }
        let from = entry as usize;
        let last = self.ranges.len() - 1;
        for at in [from, from + WINDOW / 2, from + WINDOW] {
            prefetch(&self.ranges[at.min(last)]);
        }
        Warming::Done
    }

    /// Every range in order, as its first key and value.
    pub fn iter(&self) -> impl Iterator<Item = (K, u16)> + '_ {
        self.ranges.iter().map(|r| (r.start, r.value))
    }

    /// How many ranges there are.
    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    /// Whether there are none; never, since the ranges cover the key space.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        size_of_val(&*self.index) + size_of_val(&*self.ranges)
    }
}

/// For a bucket's table `entry` and a key of whose bits `taken` are read: the
/// index position of the key's entry in that table, and the bits read then.
#[inline]
fn in_table<K: RangeKey>(entry: u32, key: K, taken: u32) -> (usize, u32) {
    let bits = (entry & !TABLE) >> TABLE_BITS_SHIFT;
    let start = (entry & TABLE_START) as usize;
    (start + key.field(taken, bits), taken + bits)
}

/// Appends a table of `1 << bits` entries for the keys from `first` (its first
/// `taken` bits fixed, the rest zero), one a block of keys, to `index`, and the
/// tables of the blocks that hold more than [`WINDOW`] ranges after their first
/// after it; returns where the table starts.
fn table<K: RangeKey>(
    starts: &[K],
    first: K,
    taken: u32,
    bits: u32,
    index: &mut Vec<u32>,
) -> usize {
    let at = index.len();
    index.resize(at + (1 << bits), 0);
    let low = K::BITS - taken - bits;
    for number in 0..1 << bits {
        let (block_first, block_last) = K::block(first, number, low);
        let from = starts.partition_point(|&s| s <= block_first) - 1;
        let to = starts.partition_point(|&s| s <= block_last) - 1;
        index[at + number] = if to - from <= WINDOW {
            u32::try_from(from).expect("fewer than 2^31 ranges")
        } else {
            // More than the window, so the block is more than one key: low > 0.
            let sub_bits = (to - from)
                .div_ceil(RANGES_PER_SUB_BUCKET)
                .next_power_of_two()
                .ilog2()
                .clamp(1, MAX_SUB_BITS)
                .min(low);
            let start = table(starts, block_first, taken + bits, sub_bits, index);
            let start = u32::try_from(start)
                .ok()
                .filter(|s| *s <= TABLE_START)
                .expect("index under 2^26 entries");
            TABLE | (sub_bits << TABLE_BITS_SHIFT) | start
        };
    }
    at
}

/// The prefix length of the widest aligned block holding `key` inside
/// `first..=last` (which holds `key`): it must leave out the keys just outside
/// either end, so it is one bit longer than `key`'s common prefix with each of
/// them.
fn widest_block<K: RangeKey>(key: K, first: K, last: K) -> u8 {
    let below = first
        .before()
        .map_or(0, |outside| (key ^ outside).leading_zeros() + 1);
    let above = last
        .after()
        .map_or(0, |outside| (key ^ outside).leading_zeros() + 1);
    below.max(above) as u8
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::cache::tests::Draw;

    /// The answer by a scan of the ranges (first key, value) of a `bits`-bit key
    /// space: the value, and the shortest prefix whose block around `key` lies
    /// inside the key's range.
    fn scan(cuts: &[(u64, u16)], bits: u32, key: u64) -> (u16, u8) {
        let at = cuts.partition_point(|(start, _)| *start <= key) - 1;
        let (first, value) = cuts[at];
        let last = cuts
            .get(at + 1)
            .map_or(u64::MAX >> (64 - bits), |(next, _)| next - 1);
        let prefix = (0..=bits)
            .find(|&prefix| {
                let size = 1_u128 << (bits - prefix);
                let block_first = u128::from(key) / size * size;
                block_first >= u128::from(first) && block_first + size - 1 <= u128::from(last)
            })
            .expect("the key's own block fits");
        (value, prefix as u8)
    }

    /// Sorted distinct starts from 0, crowded into a few narrow spans as the real
    /// tables' are (`dense`: 2^18 keys, `denser`: 2^8), with the space's last key
    /// and scattered ones among them.
    fn crowded(
        draw: &mut Draw,
        count: usize,
        dense: u64,
        denser: u64,
        mask: u64,
    ) -> Vec<(u64, u16)> {
        let mut starts: Vec<u64> = (0..count)
            .map(|i| match i % 4 {
                0 | 1 => dense | (draw.next() & 0x3_ffff),
                2 => denser | (draw.next() & 0xff),
                _ => draw.next() & mask,
            })
            .chain([0, 1, mask])
            .collect();
        starts.sort_unstable();
        starts.dedup();
        starts
            .into_iter()
            .enumerate()
            .map(|(i, start)| (start, (i % 7) as u16))
            .collect()
    }

    /// Keys at and around every start, at random, and in the densest span.
    fn keys(draw: &mut Draw, cuts: &[(u64, u16)], denser: u64, mask: u64) -> Vec<u64> {
        let mut keys: Vec<u64> = cuts
            .iter()
            .flat_map(|(start, _)| {
                [
                    *start,
                    start.wrapping_sub(1) & mask,
                    start.wrapping_add(1) & mask,
                ]
            })
            .collect();
        keys.extend((0..5_000).map(|_| draw.next() & mask));
        keys.extend((0..5_000).map(|_| denser | (draw.next() & 0xff)));
        keys
    }

    #[test]
    fn lookups_agree_with_a_scan_however_crowded_the_ranges() {
        let mut draw = Draw(7);
        for count in [0, 3, 40, 5_000, 60_000] {
            let cuts = crowded(&mut draw, count, 0x0a00_0000, 0xc0a8_0100, u32::MAX.into());
            let ranges = Ranges::new(cuts.iter().map(|(s, v)| (*s as u32, *v)), 99);
            let merged: Vec<(u64, u16)> = ranges.iter().map(|(s, v)| (s.into(), v)).collect();
            assert_eq!(
                merged.len(),
                cuts.len(),
                "adjacent values differ: none merge"
            );
            for key in keys(&mut draw, &cuts, 0xc0a8_0100, u32::MAX.into()) {
                let got = ranges.get(key as u32);
                assert_eq!(got, scan(&merged, 32, key), "key {key:#x}, {count} ranges");
            }
            let cuts = crowded(&mut draw, count, 0x2001_0db8 << 32, 0x2a00 << 48, u64::MAX);
            let ranges = Ranges::new(cuts.iter().copied(), 99);
            let merged: Vec<(u64, u16)> = ranges.iter().collect();
            for key in keys(&mut draw, &cuts, 0x2a00 << 48, u64::MAX) {
                assert_eq!(
                    ranges.get(key),
                    scan(&merged, 64, key),
                    "key {key:#x}, {count} ranges"
                );
            }
        }
    }

    #[test]
    fn warming_walks_the_lookups_tables_to_the_window() {
        let mut draw = Draw(5);
        let cuts = crowded(&mut draw, 60_000, 0x2001_0db8 << 32, 0x2a00 << 48, u64::MAX);
        let ranges = Ranges::new(cuts.iter().copied(), 99);
        for key in keys(&mut draw, &cuts, 0x2a00 << 48, u64::MAX) {
            // The index entries the lookup reads: the top one and one per table.
            let mut entry = ranges.index[key.field(0, ranges.top_bits)];
            let mut reads = 1;
            let mut taken = ranges.top_bits;
            while entry & TABLE != 0 {
                let at;
                (at, taken) = in_table(entry, key, taken);
                entry = ranges.index[at];
                reads += 1;
            }
            let mut warming = ranges.warm(key, Warming::Start);
            let mut steps = 0;
            while warming != Warming::Done {
                let Warming::Entry { at, .. } = warming else {
                    panic!("warming went back to the start");
                };
                assert!((at as usize) < ranges.index.len());
                warming = ranges.warm(key, warming);
                steps += 1;
            }
            assert_eq!(steps, reads, "key {key:#x}");
        }
    }

    #[test]
    fn crowded_buckets_get_tables_of_their_own() {
        let cuts = crowded(
            &mut Draw(3),
            60_000,
            0x0a00_0000,
            0xc0a8_0100,
            u32::MAX.into(),
        );
        let ranges = Ranges::new(cuts.iter().map(|(s, v)| (*s as u32, *v)), 99);
        let top = 1 << ranges.top_bits;
        assert!(ranges.index[..top].iter().any(|e| e & TABLE != 0));
        assert!(ranges.index.len() > top);
    }
}
