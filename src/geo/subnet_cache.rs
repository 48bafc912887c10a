//! What the two tree walks found for recently seen client subnets, kept per thread.
//!
//! A lookup walks the City and the ASN trees, 24 to 40 levels each through 60 MB:
//! with clients spread over the address space nearly every level is a CPU cache
//! miss, and the walks are most of a decision. The client a decision is made for
//! is already cut to the ECS source cap (a /24 or /56 at most), so the same
//! resolver asking for the same subnet looks up the same address again and again.
//! This cache keeps the walks' result (City record offset, ASN, both network
//! prefixes) per exact address looked up, so a repeat costs one probe.
//!
//! Clients the compiled tables answer for skip the cache
//! ([`GeoDb::locate_networks_from_tables`]): a table lookup costs a few cache
//! lines, about what a probe here costs, and with clients spread over the address
//! space most probes missed anyway (40% hits on two million distinct /24s). That
//! is every IPv4 client, and every IPv6 client outside the /64s a tree splits
//! into longer networks and outside its IPv4 aliases; the cache is kept for
//! those, which still walk the trees.
//!
//! One cache per UDP worker thread: the answer path takes no lock and shares no
//! cache line.
//! Each entry is tagged with the generation of the databases it came from
//! ([`GeoDb::generation`]): new databases (a reload that opened them again) miss
//! every old entry without anyone having to clear it; a reload that kept the
//! databases keeps the entries, which are still right for them.
//!
//! Two ways per set, least recently used replaced: a burst of one-off subnets can
//! evict at most one of the two entries of a set, not a subnet asked for often.

use std::cell::RefCell;
use std::net::IpAddr;

use super::{GeoDb, Location};

/// Memory for the caches of all UDP workers together: 512 KiB, 16,384 client
/// subnets at 32 bytes each. Only subnets the tables do not answer for come
/// here (0.6% of the /56s of ASN.mmdb's IPv6 networks, and IPv6 clients in the
/// IPv4 aliases), next to the tables' 25 MB for IPv4 and 7.5 MB for IPv6. Split
/// evenly between the workers, so the total stays the same whatever
/// `dns.udp-threads` is.
pub const BUDGET_BYTES: usize = 512 << 10;

thread_local! {
    static CACHE: RefCell<Option<SubnetCache>> = const { RefCell::new(None) };
}

/// Gives this thread its own cache, its share of [`BUDGET_BYTES`] among `workers`
/// threads. Only the UDP workers have one: the other ways in (TCP, DoH, the
/// router) carry little of the load and look up directly.
pub fn enable_for_this_thread(workers: usize) {
    let sets = BUDGET_BYTES / std::mem::size_of::<[Entry; 2]>() / workers.max(1);
    // Rounded down to a power of two, so the share is never exceeded.
    let sets = 1 << sets.max(2).ilog2();
    CACHE.with(|cache| *cache.borrow_mut() = Some(SubnetCache::new(sets)));
}

/// Locates `ip` as [`GeoDb::locate_networks`] does, through this thread's cache if
/// it has one and the tables do not answer. Without `with_asn`, the ASN may be
/// left out (`None`, prefix 0), as [`GeoDb::locate_networks_from_tables`] does.
pub fn locate_networks(geo: &GeoDb, ip: IpAddr, with_asn: bool) -> Location {
    if let Some(location) = geo.locate_networks_from_tables(ip, with_asn) {
        return location;
    }
    CACHE.with(|cache| match cache.try_borrow_mut().as_deref_mut() {
        Ok(Some(cache)) => cache.locate(geo, ip),
        // No cache on this thread (or, never in practice, a lookup re-entered it).
        _ => geo.locate_networks(ip),
    })
}

/// A bounded, two-way set-associative map from an address looked up to what the
/// walks found for it.
#[derive(Debug)]
pub struct SubnetCache {
    /// The sets, the more recently used entry first. Empty until the first
    /// lookup, so a thread that never decides costs nothing.
    entries: Vec<[Entry; 2]>,
    sets: usize,
}

/// One cached lookup; 32 bytes.
#[derive(Debug, Clone, Copy, Default)]
struct Entry {
    /// The address looked up, an IPv4 one as its IPv4-mapped IPv6 form.
    addr: u128,
    /// [`GeoDb::generation`] of the databases; 0 (never a generation) is empty.
    generation: u32,
    /// `Location::city_record`, if `HAS_CITY_RECORD`.
    city_record: u32,
    /// `Location::asn`, if `HAS_ASN`.
    asn: u32,
    city_prefix: u8,
    asn_prefix: u8,
    flags: u8,
}

const HAS_CITY_RECORD: u8 = 1;
const HAS_ASN: u8 = 2;

impl SubnetCache {
    /// An empty cache of `sets` sets (at least two, rounded up to a power of two).
    pub fn new(sets: usize) -> Self {
        Self {
            entries: Vec::new(),
            sets: sets.max(2).next_power_of_two(),
        }
    }

    /// The walks' result for `ip`, from the cache or looked up and kept.
    pub fn locate(&mut self, geo: &GeoDb, ip: IpAddr) -> Location {
        if self.entries.is_empty() {
            self.entries = vec![[Entry::default(); 2]; self.sets];
        }
        let addr = match ip {
            IpAddr::V4(a) => u128::from(a.to_ipv6_mapped()),
            IpAddr::V6(a) => u128::from(a),
        };
        let generation = geo.generation();
        let set = self.set_of(addr);
        let [first, second] = &mut self.entries[set];
        if first.generation == generation && first.addr == addr {
            return first.location();
        }
        if second.generation == generation && second.addr == addr {
            std::mem::swap(first, second);
            return first.location();
        }
        let location = geo.locate_networks(ip);
        *second = *first;
        *first = Entry::new(addr, generation, &location);
        location
    }

    fn set_of(&self, addr: u128) -> usize {
        // Fibonacci hashing of both halves: the bits a /24 or /56 leaves are zero,
        // the multiply spreads the rest over the top bits, which are kept.
        let folded = ((addr >> 64) as u64).rotate_left(29) ^ addr as u64;
        let hash = folded.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        (hash >> (64 - self.sets.trailing_zeros())) as usize & (self.sets - 1)
    }
}

impl Entry {
    fn new(addr: u128, generation: u32, location: &Location) -> Self {
        let mut flags = 0;
        if location.city_record.is_some() {
            flags |= HAS_CITY_RECORD;
        }
        if location.asn.is_some() {
            flags |= HAS_ASN;
        }
        Self {
            addr,
            generation,
            city_record: location.city_record.unwrap_or(0),
            asn: location.asn.unwrap_or(0),
            city_prefix: location.city_prefix,
            asn_prefix: location.asn_prefix,
            flags,
        }
    }

    fn location(&self) -> Location {
        Location {
            city_record: (self.flags & HAS_CITY_RECORD != 0).then_some(self.city_record),
            asn: (self.flags & HAS_ASN != 0).then_some(self.asn),
            city_prefix: self.city_prefix,
            asn_prefix: self.asn_prefix,
            ..Location::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geo::build::Source;

    const SOURCE: &str = "\
cities:
  - network: 1.0.16.0/24
    country: JP
    continent: AS
    latitude: 35.6895
    longitude: 139.6917
  - network: 2003:c9:f400::/38
    country: DE
    continent: EU
    latitude: 50.1273
    longitude: 8.6895
asns:
  - network: 1.0.0.0/16
    asn: 2519
  - network: 2003::/23
    asn: 3320
";

    fn geo(source: &str) -> GeoDb {
        let source = Source::parse(source).expect("source");
        GeoDb::from_bytes(
            Some(source.city_database().expect("city")),
            Some(source.asn_database().expect("asn")),
        )
        .expect("databases")
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("address")
    }

    /// Found, partly found and unknown addresses of both families read back from
    /// the cache as the databases give them, on the first lookup and on repeats.
    #[test]
    fn hits_return_what_the_databases_say() {
        let geo = geo(SOURCE);
        let mut cache = SubnetCache::new(4);
        let addresses = [
            "1.0.16.0",
            "1.0.17.0",
            "9.9.9.0",
            "2003:c9:f400::",
            "2003:1::",
            "::1",
        ];
        for _ in 0..3 {
            for addr in addresses {
                assert_eq!(
                    cache.locate(&geo, ip(addr)),
                    geo.locate_networks(ip(addr)),
                    "{addr}"
                );
            }
        }
        let tokyo = cache.locate(&geo, ip("1.0.16.0"));
        assert_eq!(
            std::mem::size_of::<[Entry; 2]>(),
            64,
            "the budget assumes it"
        );
        assert!(tokyo.city_record.is_some());
        assert_eq!(
            (tokyo.asn, tokyo.city_prefix, tokyo.asn_prefix),
            (Some(2519), 24, 16)
        );
    }

    /// Databases opened again (a reload that read them anew) are never answered
    /// from entries of the old ones, even for the same address.
    #[test]
    fn new_databases_miss_old_entries() {
        let old = geo(SOURCE);
        let mut cache = SubnetCache::new(1 << 10);
        assert_eq!(cache.locate(&old, ip("1.0.16.0")).asn, Some(2519));
        let new = geo(&SOURCE.replace("asn: 2519", "asn: 64500"));
        assert_ne!(old.generation(), new.generation());
        assert_eq!(cache.locate(&new, ip("1.0.16.0")).asn, Some(64500));
        assert_eq!(cache.locate(&old, ip("1.0.16.0")).asn, Some(2519));
    }

    /// A set keeps its two most recently used addresses: a third evicts the
    /// least recent one only, and every answer stays right.
    #[test]
    fn a_set_evicts_its_least_recently_used_entry() {
        let geo = geo(SOURCE);
        let mut cache = SubnetCache::new(2);
        let mut same_set = Vec::new();
        let first = ip("1.0.16.0");
        let target = cache.set_of(u128::from(ip_v6(first)));
        for third in 0..=255_u8 {
            let addr = IpAddr::from([1, 0, third, 0]);
            if cache.set_of(u128::from(ip_v6(addr))) == target {
                same_set.push(addr);
            }
        }
        let [a, b, c] = same_set[..3] else {
            panic!("three addresses of one set among 256");
        };
        for addr in [a, b, a, c] {
            assert_eq!(cache.locate(&geo, addr), geo.locate_networks(addr));
        }
        let kept: Vec<u128> = cache.entries[target].iter().map(|e| e.addr).collect();
        assert_eq!(kept, [u128::from(ip_v6(c)), u128::from(ip_v6(a))]);
    }

    fn ip_v6(addr: IpAddr) -> std::net::Ipv6Addr {
        match addr {
            IpAddr::V4(a) => a.to_ipv6_mapped(),
            IpAddr::V6(a) => a,
        }
    }
}
