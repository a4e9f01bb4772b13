//! framehop's unwind-rule caches, made two-way set-associative.
//!
//! framehop caches the unwind rule of each code address it has seen, in a
//! table of 509 slots indexed by the address modulo 509. Two addresses of a
//! hot path that share a slot evict each other on every walk, and each such
//! miss parses CFI afresh: about 2,500 instructions, where a hit costs a
//! few dozen. With several caches and a hash picking one per address, a
//! pair still collides when the hash agrees too, and whether a given build
//! of a service has such a pair on its allocation path is luck: measured on
//! the `probe_cost` server, one pair in one build cost every heap sample
//! 10,000 instructions.
//!
//! Here each address has two candidate caches, and the slot goes to the
//! candidate that already holds it, else to an empty one: a pair that
//! shares a slot and a candidate is placed apart. framehop only says hit or
//! miss, so which address each slot holds is mirrored in `tags`.

use framehop::{CacheNative, MayAllocateDuringUnwind};

/// How many caches; a power of two. Each is about 16 KiB, allocated when
/// the unwinder is built and touched only where addresses land.
const CACHES: usize = 8;

/// framehop's slots per cache (`CACHE_ENTRY_COUNT` in its `rule_cache.rs`).
const SLOTS: usize = 509;

/// The caches and the address each slot of each was last given.
pub(super) struct RuleCaches {
    caches: [CacheNative<MayAllocateDuringUnwind>; CACHES],
    /// `tags[cache][slot]`: the address that slot was last given; 0 for none.
    tags: Box<[[u64; SLOTS]; CACHES]>,
}

impl RuleCaches {
    /// Empty caches.
    pub fn new() -> Self {
        Self {
            caches: std::array::from_fn(|_| CacheNative::new()),
            tags: Box::new([[0; SLOTS]; CACHES]),
        }
    }

    /// The cache to look `lookup_address` up in: the candidate whose slot
    /// holds it already, else one whose slot is empty, else the first
    /// (which then holds it).
    pub fn for_address(
        &mut self,
        lookup_address: u64,
    ) -> &mut CacheNative<MayAllocateDuringUnwind> {
        let slot = (lookup_address % SLOTS as u64) as usize;
        let [first, second] = candidates(lookup_address);
        let chosen = if self.tags[second][slot] == lookup_address
            || (self.tags[first][slot] != lookup_address && self.tags[second][slot] == 0)
        {
            second
        } else {
            first
        };
        self.tags[chosen][slot] = lookup_address;
        &mut self.caches[chosen]
    }
}

/// The two caches `lookup_address` may live in: two fields of a
/// multiplicative hash (independent of framehop's modulo-509 slot), made
/// distinct.
fn candidates(lookup_address: u64) -> [usize; 2] {
    const BITS: u32 = CACHES.trailing_zeros();
    let hash = lookup_address.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let first = (hash >> (u64::BITS - BITS)) as usize;
    let second = (hash >> (u64::BITS - 2 * BITS)) as usize & (CACHES - 1);
    let second = if second == first { first ^ 1 } else { second };
    [first, second]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Which cache each address is placed in, in order.
    fn placements(caches: &mut RuleCaches, addresses: &[u64]) -> Vec<usize> {
        addresses
            .iter()
            .map(|&a| {
                let chosen: *const _ = caches.for_address(a);
                caches
                    .caches
                    .iter()
                    .position(|c| std::ptr::eq(c, chosen))
                    .unwrap()
            })
            .collect()
    }

    #[test]
    fn a_pair_sharing_a_slot_and_a_candidate_is_placed_apart_and_stays() {
        // Addresses that share framehop's slot (modulo 509) and whose first
        // candidates agree.
        let base = 0x5555_0000_1234u64;
        let sharing: Vec<u64> = (1..10_000u64)
            .map(|i| base + i * SLOTS as u64)
            .filter(|&a| candidates(a)[0] == candidates(base)[0])
            .take(1)
            .chain([base])
            .collect();
        let mut caches = RuleCaches::new();
        let first = placements(&mut caches, &sharing);
        assert_ne!(first[0], first[1], "placed apart");
        for _ in 0..3 {
            assert_eq!(placements(&mut caches, &sharing), first, "and stay there");
        }
    }

    #[test]
    fn the_two_candidates_differ_and_spread_over_the_caches() {
        let mut used = std::collections::HashSet::new();
        for i in 0..256u64 {
            let [a, b] = candidates(0x5555_0000_1234 + i * SLOTS as u64 * 17);
            assert_ne!(a, b);
            used.insert(a);
        }
        assert_eq!(used.len(), CACHES);
    }
}
