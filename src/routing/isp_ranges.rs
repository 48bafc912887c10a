//! Which of the config's ISPs each IPv4 address belongs to, compiled per snapshot
//! from the ASN database's IPv4 table and the config's ISPs.
//!
//! A decision reads the client's ISP, not its ASN. Mapped to the ISPs of a
//! config, with adjacent ranges of the same ISP (or of none) merged, the ASN
//! database's 690,000 IPv4 ranges shrink to a few thousand (11,025 for the three
//! ISPs of `examples/world`, 66 KB): small enough to stay in the CPU cache, where
//! the ASN table's 5 MB missed it on nearly every query.
//!
//! The merged ranges also widen ECS scopes. Every address of the widest aligned
//! block around the client that lies inside its range has the same ISP, and that
//! block is at least the ASN database's network, often wider: the networks of
//! one AS, or of ASes no ISP names, sit side by side.

use std::net::Ipv4Addr;

use crate::config::IspId;

/// The IPv4 space cut into ranges of one ISP each (or of none).
#[derive(Debug, Clone)]
pub struct IspRanges {
    /// For each value of an address's top [`INDEX_BITS`] bits, the range holding
    /// the first address with them; one more entry at the end, the last range.
    index: Box<[u32]>,
    /// The first address of each range, ascending; the first is 0.
    starts: Box<[u32]>,
    /// Each range's ISP: [`IspId`]'s number, or [`NO_ISP`].
    isps: Box<[u16]>,
}

/// Bits of the address the index is keyed by: 4,097 entries, 16 KB.
const INDEX_BITS: u32 = 12;
const NO_ISP: u16 = u16::MAX;

impl IspRanges {
    /// Compiles ranges that tile the IPv4 space in address order, each given as
    /// its first address and ASN (if it has one), with `isp_of` telling the ISP of
    /// an ASN. Space before the first range has no ISP.
    pub fn new(
        ranges: impl IntoIterator<Item = (Ipv4Addr, Option<u32>)>,
        isp_of: impl Fn(u32) -> Option<IspId>,
    ) -> Self {
        let mut starts = vec![0];
        let mut isps = vec![NO_ISP];
        for (start, asn) in ranges {
            let isp = asn.and_then(&isp_of).map_or(NO_ISP, |id| id.0);
            let start = u32::from(start);
            if isps.last() == Some(&isp) {
                continue;
            }
            if starts.last() == Some(&start) {
                // Only the first range can start where the one before it did.
                isps.pop();
                starts.pop();
                if isps.last() == Some(&isp) {
                    continue;
                }
            }
            starts.push(start);
            isps.push(isp);
        }
        let index = (0..=1u32 << INDEX_BITS)
            .map(|block| {
                let first = if block == 1 << INDEX_BITS {
                    u32::MAX
                } else {
                    block << (32 - INDEX_BITS)
                };
                (starts.partition_point(|&s| s <= first) - 1) as u32
            })
            .collect();
        Self {
            index,
            starts: starts.into_boxed_slice(),
            isps: isps.into_boxed_slice(),
        }
    }

    /// The ISP of `addr`, and the prefix length of the widest block around it in
    /// which every address has that ISP.
    #[inline]
    pub fn get(&self, addr: Ipv4Addr) -> (Option<IspId>, u8) {
        let addr = u32::from(addr);
        let block = (addr >> (32 - INDEX_BITS)) as usize;
        // The ranges holding the block's addresses are `from..=to`: `to` holds the
        // next block's first address, and may start there.
        let (from, to) = (self.index[block] as usize, self.index[block + 1] as usize);
        let at = from + self.starts[from + 1..=to].partition_point(|&s| s <= addr);
        let first = self.starts[at];
        let last = self.starts.get(at + 1).map_or(u32::MAX, |next| next - 1);
        let isp = self.isps[at];
        (
            (isp != NO_ISP).then_some(IspId(isp)),
            widest_block(addr, first, last),
        )
    }

    /// How many ranges there are.
    pub fn len(&self) -> usize {
        self.starts.len()
    }

    /// Whether there are none; never, since the ranges cover the IPv4 space.
    pub fn is_empty(&self) -> bool {
        self.starts.is_empty()
    }

    /// Heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        size_of_val(&*self.index) + size_of_val(&*self.starts) + size_of_val(&*self.isps)
    }
}

/// The prefix length of the widest aligned block holding `addr` inside
/// `first..=last` (which holds `addr`): it must leave out the addresses just
/// outside either end, so it is one bit longer than `addr`'s common prefix with
/// each of them.
fn widest_block(addr: u32, first: u32, last: u32) -> u8 {
    let below = first
        .checked_sub(1)
        .map_or(0, |outside| (addr ^ outside).leading_zeros() + 1);
    let above = last
        .checked_add(1)
        .map_or(0, |outside| (addr ^ outside).leading_zeros() + 1);
    below.max(above) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(text: &str) -> Ipv4Addr {
        text.parse().expect("address")
    }

    /// ASNs 1 and 2 belong to ISP 0, ASN 3 to ISP 1; others to none.
    fn isp_of(asn: u32) -> Option<IspId> {
        match asn {
            1 | 2 => Some(IspId(0)),
            3 => Some(IspId(1)),
            _ => None,
        }
    }

    #[test]
    fn adjacent_ranges_of_one_isp_merge_and_scopes_widen() {
        let ranges = IspRanges::new(
            [
                (v4("0.0.0.0"), None),
                (v4("10.0.0.0"), Some(1)),
                (v4("10.0.1.0"), Some(2)),
                (v4("10.0.2.0"), None),
                (v4("10.0.2.128"), Some(9)),
                (v4("10.0.3.0"), Some(3)),
                (v4("10.0.4.0"), None),
                (v4("255.255.255.255"), Some(3)),
            ],
            isp_of,
        );
        // 0/0..10.0.0.0, ISP 0 (two ASes), none (two ranges), ISP 1, none, ISP 1.
        assert_eq!(ranges.len(), 6);
        assert_eq!(ranges.get(v4("9.255.255.255")), (None, 7));
        assert_eq!(ranges.get(v4("0.0.0.0")), (None, 5));
        // 10.0.0.0/23 is ISP 0's whole range: its two /24 networks make one scope.
        assert_eq!(ranges.get(v4("10.0.0.7")), (Some(IspId(0)), 23));
        assert_eq!(ranges.get(v4("10.0.1.255")), (Some(IspId(0)), 23));
        assert_eq!(ranges.get(v4("10.0.2.200")), (None, 24));
        assert_eq!(ranges.get(v4("10.0.3.1")), (Some(IspId(1)), 24));
        // 10.0.4.0 up to 255.255.255.254: the blocks shrink towards either end.
        assert_eq!(ranges.get(v4("10.0.4.0")), (None, 22));
        assert_eq!(ranges.get(v4("10.0.8.0")), (None, 21));
        assert_eq!(ranges.get(v4("128.0.0.0")), (None, 2));
        assert_eq!(ranges.get(v4("255.255.255.254")), (None, 32));
        assert_eq!(ranges.get(v4("255.255.255.255")), (Some(IspId(1)), 32));
    }

    #[test]
    fn a_table_without_isps_is_one_range() {
        let ranges = IspRanges::new([(v4("0.0.0.0"), Some(7)), (v4("1.0.0.0"), None)], isp_of);
        assert_eq!(ranges.len(), 1);
        assert_eq!(ranges.get(v4("200.1.2.3")), (None, 0));
        let empty = IspRanges::new([], isp_of);
        assert_eq!(empty.get(v4("1.2.3.4")), (None, 0));
    }

    /// On ranges cut at random, every answer holds for its whole block and for no
    /// wider one, checked against the ranges themselves.
    #[test]
    fn every_block_is_one_isp_and_the_widest() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut cuts: Vec<u32> = (0..3000)
            .map(|_| next() as u32 >> (next() % 20) << (next() % 20))
            .collect();
        cuts.push(0);
        cuts.sort_unstable();
        cuts.dedup();
        let asns: Vec<Option<u32>> = cuts.iter().map(|_| Some((next() % 5) as u32)).collect();
        let input: Vec<(Ipv4Addr, Option<u32>)> = cuts
            .iter()
            .map(|c| Ipv4Addr::from(*c))
            .zip(asns.iter().copied())
            .collect();
        let ranges = IspRanges::new(input.iter().copied(), isp_of);
        // The reference: the ISP of the last input range starting at or before `addr`.
        let isp_at = |addr: u32| {
            let at = cuts.partition_point(|&c| c <= addr) - 1;
            asns[at].and_then(isp_of)
        };
        let all_one = |lo: u32, hi: u32, isp: Option<IspId>| {
            // Only the cuts inside can change the ISP.
            let from = cuts.partition_point(|&c| c <= lo);
            let to = cuts.partition_point(|&c| c <= hi);
            isp_at(lo) == isp && cuts[from..to].iter().all(|&c| isp_at(c) == isp)
        };
        for _ in 0..20_000 {
            let addr = if next() % 2 == 0 {
                cuts[(next() as usize) % cuts.len()]
                    .wrapping_add((next() % 3) as u32)
                    .wrapping_sub(1)
            } else {
                next() as u32
            };
            let (isp, prefix) = ranges.get(Ipv4Addr::from(addr));
            assert_eq!(isp, isp_at(addr), "{}", Ipv4Addr::from(addr));
            let block = |prefix: u8| {
                let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
                (addr & mask, addr | !mask)
            };
            let (lo, hi) = block(prefix);
            assert!(all_one(lo, hi, isp), "{}/{prefix}", Ipv4Addr::from(addr));
            if prefix > 0 {
                let (lo, hi) = block(prefix - 1);
                assert!(
                    !all_one(lo, hi, isp),
                    "{}/{} is one ISP",
                    Ipv4Addr::from(addr),
                    prefix - 1
                );
            }
        }
    }
}
