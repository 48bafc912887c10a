//! Which of the config's ISPs each address belongs to, compiled per snapshot from
//! the ASN database's tables and the config's ISPs.
//!
//! A decision reads the client's ISP, not its ASN. Mapped to the ISPs of a
//! config, with adjacent ranges of the same ISP (or of none) merged, the ASN
//! database's 690,000 IPv4 ranges shrink to a few thousand (11,025 for the three
//! ISPs of `examples/world`, 70 KB with the index): small enough to stay in the
//! CPU cache, where the ASN table's 5 MB missed it on nearly every query. Its
//! 565,000 IPv6 ranges shrink likewise (to 2,064, 22 KB, where the ASN table's
//! IPv6 part is 3.7 MB), keyed by an address's top 64 bits as that table is; the
//! ranges it leaves to the tree walk (split /64s, IPv4 aliases) stay ranges of
//! an unknown ISP, for which the caller looks the ASN up as before.
//!
//! The merged ranges also widen ECS scopes. Every address of the widest aligned
//! block around the client that lies inside its range has the same ISP, and that
//! block is at least the ASN database's network, often wider: the networks of
//! one AS, or of ASes no ISP names, sit side by side.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::ranges::{RangeKey, Ranges};
use crate::config::IspId;

/// The IPv4 space cut into ranges of one ISP each (or of none).
pub type Ipv4IspRanges = IspRanges<u32>;
/// The IPv6 space, by /64s, cut into ranges of one ISP each, of none, or of an
/// unknown one.
pub type Ipv6IspRanges = IspRanges<u64>;

/// A key space cut into ranges of one ISP each, of none, or of an unknown one.
#[derive(Debug, Clone)]
pub struct IspRanges<K> {
    /// Each range's ISP: [`IspId`]'s number (a config has far fewer than
    /// 65,534 ISPs), [`NO_ISP`] or [`UNKNOWN`].
    ranges: Ranges<K>,
}

const NO_ISP: u16 = u16::MAX;
const UNKNOWN: u16 = u16::MAX - 1;

impl<K: RangeKey> IspRanges<K> {
    /// Compiles ranges that tile the key space in order, each given as its first
    /// key and its ASN: `Some(asn)` if it has one, `Some(None)` if it has none,
    /// `None` if it is not known. `isp_of` tells the ISP of an ASN. Space before
    /// the first range has no ISP.
    pub fn new(
        ranges: impl IntoIterator<Item = (K, Option<Option<u32>>)>,
        isp_of: impl Fn(u32) -> Option<IspId>,
    ) -> Self {
        let ranges = ranges.into_iter().map(|(start, asn)| {
            let isp = match asn {
                Some(asn) => asn.and_then(&isp_of).map_or(NO_ISP, |id| id.0),
                None => UNKNOWN,
            };
            (start, isp)
        });
        Self {
            ranges: Ranges::new(ranges, NO_ISP),
        }
    }

    /// The ISP of `key`, and the prefix length (in bits of the key) of the widest
    /// block around it in which every key has that ISP; `None` if its range's ISP
    /// is not known.
    #[inline]
    pub fn get_key(&self, key: K) -> Option<(Option<IspId>, u8)> {
        let (isp, prefix) = self.ranges.get(key);
        match isp {
            UNKNOWN => None,
            NO_ISP => Some((None, prefix)),
            isp => Some((Some(IspId(isp)), prefix)),
        }
    }

    /// Every range in order, as its first key and ISP: `Some(None)` for none,
    /// `None` if not known.
    pub fn iter(&self) -> impl Iterator<Item = (K, Option<Option<IspId>>)> + '_ {
        self.ranges.iter().map(|(start, isp)| {
            let isp = match isp {
                UNKNOWN => None,
                NO_ISP => Some(None),
                isp => Some(Some(IspId(isp))),
            };
            (start, isp)
        })
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
        self.ranges.heap_bytes()
    }
}

impl IspRanges<u32> {
    /// Compiles ranges that tile the IPv4 space in address order, each given as
    /// its first address and ASN (if it has one), as
    /// [`GeoDb::asn_ipv4_ranges`](crate::geo::GeoDb::asn_ipv4_ranges) gives them.
    pub fn ipv4(
        ranges: impl IntoIterator<Item = (Ipv4Addr, Option<u32>)>,
        isp_of: impl Fn(u32) -> Option<IspId>,
    ) -> Self {
        let ranges = ranges
            .into_iter()
            .map(|(start, asn)| (u32::from(start), Some(asn)));
        Self::new(ranges, isp_of)
    }

    /// The ISP of `addr` and the prefix length of the widest block around it in
    /// which every address has that ISP, as [`IspRanges::get_key`].
    #[inline]
    pub fn get(&self, addr: Ipv4Addr) -> Option<(Option<IspId>, u8)> {
        self.get_key(u32::from(addr))
    }
}

impl IspRanges<u64> {
    /// The ISP of `addr` and the prefix length of the widest block around it in
    /// which every address has that ISP, as [`IspRanges::get_key`] on its top 64
    /// bits: a prefix length of 64 at most, the ranges being /64s or wider.
    #[inline]
    pub fn get(&self, addr: Ipv6Addr) -> Option<(Option<IspId>, u8)> {
        self.get_key((u128::from(addr) >> 64) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(text: &str) -> Ipv4Addr {
        text.parse().expect("address")
    }

    fn v6(text: &str) -> Ipv6Addr {
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
        let ranges = IspRanges::ipv4(
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
        let get = |text| ranges.get(v4(text)).expect("an IPv4 ISP is known");
        assert_eq!(get("9.255.255.255"), (None, 7));
        assert_eq!(get("0.0.0.0"), (None, 5));
        // 10.0.0.0/23 is ISP 0's whole range: its two /24 networks make one scope.
        assert_eq!(get("10.0.0.7"), (Some(IspId(0)), 23));
        assert_eq!(get("10.0.1.255"), (Some(IspId(0)), 23));
        assert_eq!(get("10.0.2.200"), (None, 24));
        assert_eq!(get("10.0.3.1"), (Some(IspId(1)), 24));
        // 10.0.4.0 up to 255.255.255.254: the blocks shrink towards either end.
        assert_eq!(get("10.0.4.0"), (None, 22));
        assert_eq!(get("10.0.8.0"), (None, 21));
        assert_eq!(get("128.0.0.0"), (None, 2));
        assert_eq!(get("255.255.255.254"), (None, 32));
        assert_eq!(get("255.255.255.255"), (Some(IspId(1)), 32));
    }

    #[test]
    fn a_table_without_isps_is_one_range() {
        let ranges = IspRanges::ipv4([(v4("0.0.0.0"), Some(7)), (v4("1.0.0.0"), None)], isp_of);
        assert_eq!(ranges.len(), 1);
        assert_eq!(ranges.get(v4("200.1.2.3")), Some((None, 0)));
        let empty = IspRanges::ipv4([], isp_of);
        assert_eq!(empty.get(v4("1.2.3.4")), Some((None, 0)));
    }

    /// IPv6 ranges are keyed by /64s: a scope is a prefix of 64 at most, and the
    /// ranges the table leaves to the walk are unknown, merged with each other
    /// but with no known range, which stops short of them.
    #[test]
    fn ipv6_ranges_scope_by_64s_and_leave_walked_ones_unknown() {
        let key = |text| (u128::from(v6(text)) >> 64) as u64;
        let ranges = IspRanges::new(
            [
                (key("::"), None),
                (key("2001::"), Some(None)),
                (key("2408:8000::"), Some(Some(1))),
                (key("2408:8001::"), Some(Some(2))),
                (key("2408:8002::"), Some(Some(3))),
                (key("2408:8002:0:1::"), None),
                (key("2408:8002:0:2::"), None),
                (key("2408:8002:0:3::"), Some(Some(3))),
                (key("2408:8002:0:4::"), Some(Some(3))),
                (key("2408:8002:0:6::"), Some(Some(8))),
                (key("2408:8003::"), Some(None)),
            ],
            isp_of,
        );
        // Unknown (from ::), none, ISP 0 (two ASes), ISP 1, unknown (two
        // ranges), ISP 1 (two ranges), none (two ranges).
        assert_eq!(ranges.len(), 7);
        assert_eq!(ranges.get(v6("::1")), None);
        assert_eq!(ranges.get(v6("::ffff:1.2.3.4")), None);
        assert_eq!(ranges.get(v6("2001:0:ffff::")), Some((None, 16)));
        // Two ASes' /32s of ISP 0 make one /31.
        assert_eq!(ranges.get(v6("2408:8001:ab::")), Some((Some(IspId(0)), 31)));
        assert_eq!(ranges.get(v6("2408:8002::1")), Some((Some(IspId(1)), 64)));
        assert_eq!(ranges.get(v6("2408:8002:0:1:ffff::")), None);
        assert_eq!(ranges.get(v6("2408:8002:0:2::")), None);
        // 2408:8002:0:3::/64 and :4::/63: the /64 is cut off by the walked range.
        assert_eq!(
            ranges.get(v6("2408:8002:0:3::")),
            Some((Some(IspId(1)), 64))
        );
        assert_eq!(
            ranges.get(v6("2408:8002:0:5:1::")),
            Some((Some(IspId(1)), 63))
        );
        assert_eq!(ranges.get(v6("2408:8002:0:6::")), Some((None, 63)));
        assert_eq!(ranges.get(v6("ffff::")), Some((None, 1)));
    }

    /// On ranges cut at random, every answer holds for its whole block and for no
    /// wider one, checked against the ranges themselves; in IPv4 space and in
    /// the 64-bit keys of IPv6, with ranges of unknown ISP.
    #[test]
    fn every_block_is_one_isp_and_the_widest() {
        check_random_ranges::<u32>(0x9e37_79b9_7f4a_7c15, |random| random as u32, false);
        check_random_ranges::<u64>(0x2545_f491_4f6c_dd1d, |random| random, true);
    }

    /// A random check of [`IspRanges`] over keys of `K`, made from random bits by
    /// `key`; with `unknown`, some ranges' ISP is unknown.
    fn check_random_ranges<K>(seed: u64, key: impl Fn(u64) -> K, unknown: bool)
    where
        K: RangeKey + std::ops::Shl<u64, Output = K> + std::ops::Shr<u64, Output = K>,
        K: std::ops::Not<Output = K> + std::ops::BitAnd<Output = K> + std::ops::BitOr<Output = K>,
    {
        let bits = 8 * size_of::<K>() as u32;
        let mut state = seed;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let shift = u64::from(bits) * 5 / 8;
        let mut cuts: Vec<K> = (0..3000)
            .map(|_| key(next()) >> (next() % shift) << (next() % shift))
            .collect();
        cuts.push(K::ZERO);
        cuts.sort_unstable();
        cuts.dedup();
        // Some(asn), or None for an unknown ISP.
        let asns: Vec<Option<Option<u32>>> = cuts
            .iter()
            .map(|_| match next() % 6 {
                5 if unknown => None,
                asn => Some(Some(asn as u32 % 5)),
            })
            .collect();
        let ranges = IspRanges::new(cuts.iter().copied().zip(asns.iter().copied()), isp_of);
        // The reference: the ISP of the last input range starting at or before
        // `key`; `None` when unknown.
        let isp_at = |at: K| {
            let i = cuts.partition_point(|&c| c <= at) - 1;
            asns[i].map(|asn| asn.and_then(isp_of))
        };
        let all_one = |lo: K, hi: K, isp: Option<Option<IspId>>| {
            // Only the cuts inside can change the ISP.
            let from = cuts.partition_point(|&c| c <= lo);
            let to = cuts.partition_point(|&c| c <= hi);
            isp_at(lo) == isp && cuts[from..to].iter().all(|&c| isp_at(c) == isp)
        };
        let (mut known, mut unknowns) = (0, 0);
        for _ in 0..20_000 {
            let at = if next() % 2 == 0 {
                let cut = cuts[(next() as usize) % cuts.len()];
                match next() % 3 {
                    0 => cut.before().unwrap_or(K::MAX),
                    1 => cut,
                    _ => cut.after().unwrap_or(K::ZERO),
                }
            } else {
                key(next())
            };
            let Some((isp, prefix)) = ranges.get_key(at) else {
                assert_eq!(isp_at(at), None, "{at:?}");
                unknowns += 1;
                continue;
            };
            known += 1;
            assert_eq!(Some(isp), isp_at(at), "{at:?}");
            assert!(u32::from(prefix) <= bits, "{at:?}/{prefix}");
            let block = |prefix: u8| {
                let mask = match u32::from(prefix) {
                    0 => K::ZERO,
                    size => K::MAX << u64::from(bits - size),
                };
                (at & mask, at | !mask)
            };
            let (lo, hi) = block(prefix);
            assert!(all_one(lo, hi, Some(isp)), "{at:?}/{prefix}");
            if prefix > 0 {
                let (lo, hi) = block(prefix - 1);
                assert!(
                    !all_one(lo, hi, Some(isp)),
                    "{at:?}/{} is one ISP",
                    prefix - 1
                );
            }
        }
        assert!(known > 10_000, "{known}");
        assert_eq!(unknowns > 1_000, unknown, "{unknowns}");
    }
}
