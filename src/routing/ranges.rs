//! A key space cut into ranges of one 16-bit value each, found by a short search:
//! the shape shared by the ISP ranges and the rankings by address, both compiled
//! per snapshot from the geo databases' tables.
//!
//! The ranges (first key and value) sit in one sorted array with an index by a
//! key's top bits, sized so that a bucket holds about a dozen ranges: a lookup
//! reads the index and a line or two of ranges. A range is stored once however
//! many buckets it spans, so its true ends are known and an answer can carry the
//! widest aligned block around the key that lies inside its range (an ECS scope).

use std::fmt::Debug;
use std::ops::BitXor;

/// Ranges per index bucket aimed at: the starts a lookup searches fit a line or two.
const RANGES_PER_BUCKET: usize = 12;
/// Bounds on the index's key bits: 256 buckets at least, 65,536 (256 KiB) at most.
const MIN_INDEX_BITS: u32 = 8;
const MAX_INDEX_BITS: u32 = 16;

/// A key space cut into ranges, each with a 16-bit value.
#[derive(Debug, Clone)]
pub struct Ranges<K> {
    /// How far a key is shifted right to give its bucket.
    shift: u32,
    /// For each bucket, the range holding its first key; one more entry at the
    /// end, the last range.
    index: Box<[u32]>,
    /// Each range's first key, ascending from 0, and value (adjacent ranges'
    /// differ), side by side: the line the search ends on holds the value too.
    ranges: Box<[Range<K>]>,
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
    /// The key shifted right by `shift` bits, as an index.
    fn top(self, shift: u32) -> usize;
    /// The first key whose top bits, shifted right by `shift`, are `bucket`.
    fn bucket_first(bucket: usize, shift: u32) -> Self;
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
            fn top(self, shift: u32) -> usize {
                (self >> shift) as usize
            }
            fn bucket_first(bucket: usize, shift: u32) -> Self {
                (bucket as $key) << shift
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
        let bits = buckets
            .next_power_of_two()
            .ilog2()
            .clamp(MIN_INDEX_BITS, MAX_INDEX_BITS)
            .min(K::BITS);
        let shift = K::BITS - bits;
        let index = (0..=1usize << bits)
            .map(|bucket| {
                let first = if bucket == 1 << bits {
                    K::MAX
                } else {
                    K::bucket_first(bucket, shift)
                };
                (starts.partition_point(|&s| s <= first) - 1) as u32
            })
            .collect();
        Self {
            shift,
            index,
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
        let bucket = key.top(self.shift);
        // The ranges holding the bucket's keys are `from..=to`: `to` holds the
        // next bucket's first key, and may start there.
        let (from, to) = (self.index[bucket] as usize, self.index[bucket + 1] as usize);
        let at = from + self.ranges[from + 1..=to].partition_point(|r| r.start <= key);
        let range = self.ranges[at];
        let last = self.ranges.get(at + 1).and_then(|next| next.start.before());
        (
            range.value,
            widest_block(key, range.start, last.unwrap_or(K::MAX)),
        )
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
