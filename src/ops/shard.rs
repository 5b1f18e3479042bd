//! `backup --shard I/N`: which users one of N agents backs up.
//!
//! A user belongs to shard `1 + (h mod N)`, where `h` is the first 8 bytes, big-endian, of
//! the SHA-256 of the user name's bytes. The hash is fixed (never Rust's randomized hasher),
//! so every agent, host and maildump version puts a user in the same shard as long as N
//! stays the same; changing N starts new namespaces (`shard-I-of-N`), hence new chains.

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::ops::statedir::Namespace;

/// Shard `index` of `count` (1 <= index <= count).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    index: u64,
    count: u64,
}

impl Shard {
    /// Parse `I/N`.
    ///
    /// # Errors
    /// [`Error::Usage`] naming the value: not two numbers, N = 0, or I outside 1..=N.
    pub fn parse(s: &str) -> Result<Shard> {
        let bad = |why: &str| Error::Usage(format!("--shard {s:?}: {why}"));
        let (i, n) = s
            .split_once('/')
            .ok_or_else(|| bad("expected I/N, e.g. 2/4"))?;
        let num = |v: &str| {
            if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad("expected I/N with whole numbers, e.g. 2/4"));
            }
            v.parse::<u64>().map_err(|_| bad("number too large"))
        };
        let (index, count) = (num(i)?, num(n)?);
        if count == 0 {
            return Err(bad("N must be at least 1"));
        }
        if index == 0 || index > count {
            return Err(bad("I must be between 1 and N"));
        }
        Ok(Shard { index, count })
    }

    /// Its number, 1-based.
    pub fn index(&self) -> u64 {
        self.index
    }

    /// How many shards there are.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The shard (1-based) `user` belongs to among `count`.
    pub fn of(user: &str, count: u64) -> u64 {
        let d = Sha256::digest(user.as_bytes());
        let mut first = [0u8; 8];
        first.copy_from_slice(&d[..8]);
        1 + u64::from_be_bytes(first) % count.max(1)
    }

    /// Whether `user` is in this shard.
    pub fn holds(&self, user: &str) -> bool {
        Shard::of(user, self.count) == self.index
    }

    /// The namespace its agent writes into a state directory: `shard-I-of-N`.
    pub fn namespace(&self) -> Namespace {
        Namespace::named(&format!("shard-{}-of-{}", self.index, self.count))
            .expect("shard-I-of-N is a valid namespace name")
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_accepts_i_of_n_and_refuses_the_rest() {
        let s = Shard::parse("2/4").unwrap();
        assert_eq!((s.index(), s.count()), (2, 4));
        assert_eq!(s.namespace().name(), Some("shard-2-of-4"));
        for bad in [
            "0/2", "3/2", "1/0", "a/b", "1", "", "/2", "1/", "-1/2", "+1/2", "1/2/3",
        ] {
            assert!(
                matches!(Shard::parse(bad), Err(Error::Usage(_))),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn the_hash_is_fixed_and_every_user_is_in_exactly_one_shard() {
        // SHA-256("alice") starts 2bd806c97f0e00af: 0x2bd806c97f0e00af mod 4 = 3 -> shard 4.
        assert_eq!(Shard::of("alice", 4), 4);
        assert_eq!(Shard::of("alice", 1), 1);
        for u in ["alice", "bob", "carol", "dave", "x@example.org"] {
            let holding: Vec<u64> = (1..=3)
                .filter(|&i| Shard::parse(&format!("{i}/3")).unwrap().holds(u))
                .collect();
            assert_eq!(holding.len(), 1, "{u}: {holding:?}");
        }
    }
}
