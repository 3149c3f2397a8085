//! A set of byte ranges: which parts of a changed file are held locally.

/// Sorted, non-overlapping, non-adjacent half-open ranges `[start, end)`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangeSet(Vec<(u64, u64)>);

impl RangeSet {
    /// The empty set.
    pub fn new() -> Self {
        RangeSet(Vec::new())
    }

    /// Adds `[a, b)`.
    pub fn insert(&mut self, a: u64, b: u64) {
        if a >= b {
            return;
        }
        let (mut a, mut b) = (a, b);
        let mut out = Vec::with_capacity(self.0.len() + 1);
        let mut placed = false;
        for &(s, e) in &self.0 {
            if e < a {
                out.push((s, e));
            } else if b < s {
                if !placed {
                    out.push((a, b));
                    placed = true;
                }
                out.push((s, e));
            } else {
                a = a.min(s);
                b = b.max(e);
            }
        }
        if !placed {
            out.push((a, b));
        }
        out.sort_unstable();
        self.0 = out;
    }

    /// Drops everything at or after `n`.
    pub fn truncate(&mut self, n: u64) {
        self.0.retain(|&(s, _)| s < n);
        if let Some(last) = self.0.last_mut() {
            last.1 = last.1.min(n);
        }
    }

    /// The parts of `[a, b)` not in the set.
    pub fn missing(&self, a: u64, b: u64) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        let mut pos = a;
        for &(s, e) in &self.0 {
            if e <= pos {
                continue;
            }
            if s >= b {
                break;
            }
            if s > pos {
                out.push((pos, s.min(b)));
            }
            pos = pos.max(e);
            if pos >= b {
                break;
            }
        }
        if pos < b {
            out.push((pos, b));
        }
        out
    }

    /// Serialized as `a-b,c-d` for the journal.
    pub fn encode(&self) -> String {
        self.0
            .iter()
            .map(|(a, b)| format!("{a}-{b}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Parses [`RangeSet::encode`]'s output; malformed parts are skipped.
    pub fn decode(s: &str) -> Self {
        let mut r = RangeSet::new();
        for part in s.split(',').filter(|p| !p.is_empty()) {
            if let Some((a, b)) = part.split_once('-') {
                if let (Ok(a), Ok(b)) = (a.parse(), b.parse()) {
                    r.insert(a, b);
                }
            }
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_merges_and_missing_complements() {
        let mut r = RangeSet::new();
        r.insert(10, 20);
        r.insert(30, 40);
        r.insert(20, 25);
        assert_eq!(r.0, vec![(10, 25), (30, 40)]);
        assert_eq!(r.missing(0, 50), vec![(0, 10), (25, 30), (40, 50)]);
        assert_eq!(r.missing(12, 22), vec![]);
        assert_eq!(r.missing(12, 35), vec![(25, 30)]);
        r.insert(5, 35);
        assert_eq!(r.0, vec![(5, 40)]);
        r.truncate(8);
        assert_eq!(r.0, vec![(5, 8)]);
        assert_eq!(RangeSet::decode(&r.encode()), r);
        r.insert(0, 0);
        assert_eq!(r.0, vec![(5, 8)]);
    }

    #[test]
    fn random_against_a_bitmap() {
        let mut x: u64 = 7;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..200 {
            let mut r = RangeSet::new();
            let mut bits = [false; 64];
            for _ in 0..10 {
                let a = next() % 64;
                let b = a + next() % (64 - a + 1);
                if next() % 4 == 0 {
                    r.truncate(a);
                    bits[a as usize..].iter_mut().for_each(|v| *v = false);
                } else {
                    r.insert(a, b);
                    bits[a as usize..b as usize]
                        .iter_mut()
                        .for_each(|v| *v = true);
                }
            }
            let miss = r.missing(0, 64);
            let mut got = [true; 64];
            for (a, b) in miss {
                got[a as usize..b as usize]
                    .iter_mut()
                    .for_each(|v| *v = false);
            }
            assert_eq!(got, bits);
        }
    }
}
