//! Consistent hashing with bounded load (Mirrokni, Thorup, Zadimoghaddam 2018; the
//! "CHLB" of HAProxy and Skipper).
//!
//! Every node owns `points` positions on a 64-bit ring (xxh3 of `"<node>#<i>"`). A key
//! hashes to a position and belongs to the first node clockwise from it. With bounded
//! load, a node may hold at most `⌈c · (in-flight + 1) / n⌉` requests (the `+ 1` is the
//! request being placed); a key whose node is full walks on clockwise to the next node
//! under that capacity, skipping nodes it has already looked at (a bitset). Adding or
//! removing a node moves only the keys whose positions it owns.

use xxhash_rust::xxh3::xxh3_64;

/// A set of node indexes (at most [`MAX_NODES`]).
pub type NodeSet = u64;

/// Most nodes one upstream may have (one bit each in a [`NodeSet`]).
pub const MAX_NODES: usize = 64;

/// The bit of node `i`.
pub fn bit(i: usize) -> NodeSet {
    1u64 << i
}

/// The ring of one upstream's nodes.
#[derive(Debug, Clone)]
pub struct Ring {
    /// (position, node index), sorted by position.
    points: Vec<(u64, u8)>,
}

/// Where a key went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    /// The node chosen.
    pub node: usize,
    /// Whether it is not the key's first eligible node (the owner was over capacity).
    pub spilled: bool,
}

/// The hash of a key, as placed on the ring.
pub fn key_hash(key: &[u8]) -> u64 {
    xxh3_64(key)
}

impl Ring {
    /// A ring of `nodes` (their stable names, e.g. URLs) with `points` positions each.
    pub fn new<S: AsRef<str>>(nodes: &[S], points: usize) -> Ring {
        let mut all = Vec::with_capacity(nodes.len() * points);
        for (i, name) in nodes.iter().enumerate().take(MAX_NODES) {
            for p in 0..points {
                let at = xxh3_64(format!("{}#{p}", name.as_ref()).as_bytes());
                all.push((at, i as u8));
            }
        }
        all.sort_unstable();
        Ring { points: all }
    }

    /// The node for `hash` among `eligible`, given each node's in-flight count (`load`)
    /// and the load factor `c` (≥ 1). `None` only when no node is eligible.
    pub fn place(
        &self,
        hash: u64,
        eligible: NodeSet,
        load: impl Fn(usize) -> usize,
        c: f64,
    ) -> Option<Placement> {
        if eligible == 0 || self.points.is_empty() {
            return None;
        }
        let n = eligible.count_ones() as usize;
        let mut total = 0usize;
        let mut rest = eligible;
        while rest != 0 {
            let i = rest.trailing_zeros() as usize;
            total += load(i);
            rest &= rest - 1;
        }
        let capacity = (c * (total + 1) as f64 / n as f64).ceil() as usize;
        let start = self.points.partition_point(|&(at, _)| at < hash);
        let mut seen: NodeSet = 0;
        let mut first = None;
        for k in 0..self.points.len() {
            let node = self.points[(start + k) % self.points.len()].1 as usize;
            let b = bit(node);
            if eligible & b == 0 || seen & b != 0 {
                continue;
            }
            seen |= b;
            first.get_or_insert(node);
            if load(node) < capacity {
                return Some(Placement {
                    node,
                    spilled: first != Some(node),
                });
            }
            if seen == eligible {
                break;
            }
        }
        // Unreachable with c ≥ 1 (some node is always under the mean), kept total.
        first.map(|node| Placement {
            node,
            spilled: false,
        })
    }

    /// The key's owner when nothing is loaded (for tests and tools).
    pub fn owner(&self, hash: u64, eligible: NodeSet) -> Option<usize> {
        self.place(hash, eligible, |_| 0, 1.0).map(|p| p.node)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("http://10.0.0.{i}:8081")).collect()
    }

    fn all(n: usize) -> NodeSet {
        (1u64 << n) - 1
    }

    #[test]
    fn keys_spread_over_the_nodes() {
        let ring = Ring::new(&names(3), 100);
        let mut count = [0usize; 3];
        for k in 0..30_000 {
            let owner = ring.owner(key_hash(format!("P{k:07}").as_bytes()), all(3));
            count[owner.unwrap()] += 1;
        }
        for c in count {
            assert!((7_000..13_000).contains(&c), "uneven spread {count:?}");
        }
    }

    #[test]
    fn adding_a_node_moves_only_its_share() {
        let three = Ring::new(&names(3), 100);
        let four = Ring::new(&names(4), 100);
        let mut moved = 0;
        for k in 0..20_000 {
            let h = key_hash(format!("P{k:07}").as_bytes());
            let before = three.owner(h, all(3)).unwrap();
            let after = four.owner(h, all(4)).unwrap();
            if before != after {
                assert_eq!(after, 3, "a key moved between two old nodes");
                moved += 1;
            }
        }
        // About a quarter of the keys move to the new node, none elsewhere.
        assert!((3_500..6_500).contains(&moved), "{moved}");
    }

    #[test]
    fn removing_a_node_moves_only_its_keys() {
        let ring = Ring::new(&names(3), 100);
        for k in 0..5_000 {
            let h = key_hash(format!("P{k:07}").as_bytes());
            let owner = ring.owner(h, all(3)).unwrap();
            let without_1 = ring.owner(h, all(3) & !bit(1)).unwrap();
            if owner != 1 {
                assert_eq!(owner, without_1, "a key not on node 1 moved");
            } else {
                assert_ne!(without_1, 1);
            }
        }
    }

    #[test]
    fn a_hot_key_spills_clockwise_once_its_node_is_over_capacity() {
        let ring = Ring::new(&names(3), 100);
        let h = key_hash(b"HOT");
        let owner = ring.owner(h, all(3)).unwrap();
        let next = ring.owner(h, all(3) & !bit(owner)).unwrap();
        // Owner busy with 4, others idle: capacity ⌈1.25·5/3⌉ = 3 → the next node.
        let load = |i: usize| if i == owner { 4 } else { 0 };
        let p = ring.place(h, all(3), load, 1.25).unwrap();
        assert_eq!(
            p,
            Placement {
                node: next,
                spilled: true
            }
        );
        // Owner at 2 with the others at 1 each: capacity ⌈1.25·5/3⌉ = 3 → stays.
        let load = |i: usize| if i == owner { 2 } else { 1 };
        let p = ring.place(h, all(3), load, 1.25).unwrap();
        assert_eq!(
            p,
            Placement {
                node: owner,
                spilled: false
            }
        );
        // No node is ever above capacity after a placement, whatever the loads.
        let mut loads = [0usize; 3];
        for _ in 0..1_000 {
            let p = ring.place(h, all(3), |i| loads[i], 1.25).unwrap();
            loads[p.node] += 1;
            let total: usize = loads.iter().sum();
            let cap = (1.25 * total as f64 / 3.0).ceil() as usize;
            assert!(loads.iter().all(|&l| l <= cap), "{loads:?} cap {cap}");
        }
    }

    #[test]
    fn ineligible_nodes_are_skipped_and_an_empty_set_places_nothing() {
        let ring = Ring::new(&names(3), 100);
        for k in 0..1_000 {
            let h = key_hash(format!("K{k}").as_bytes());
            assert_ne!(ring.owner(h, bit(0) | bit(2)), Some(1));
        }
        assert_eq!(ring.owner(1, 0), None);
    }
}
