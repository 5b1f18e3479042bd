//! The short fuzz pass of every fuzz target (`maildump::fuzzing`): each seed of
//! `fuzz/corpus/<target>/` and a fixed number of deterministic mutations of them. The long
//! campaigns (libFuzzer, coverage-guided) are `fuzz/run.sh`; every crash they find is
//! added to the corpus here and so becomes a regression test.

use std::path::{Path, PathBuf};

/// Mutated inputs per target, beyond the seeds.
const MUTATIONS: usize = 10_000;

/// Mutated inputs for the archive targets, which read a whole archive per input.
const ARCHIVE_MUTATIONS: usize = 2_000;

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target)
}

/// xorshift64: deterministic, so a failing input is found again by the same run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// One mutation of `seed` (`other` is another seed, for splicing), like libFuzzer's basic
/// mutators: flip bits, set bytes to interesting values, insert, delete, duplicate,
/// truncate, splice.
fn mutate(rng: &mut Rng, seed: &[u8], other: &[u8]) -> Vec<u8> {
    let mut m = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        let len = m.len();
        match rng.below(8) {
            0 if len > 0 => {
                let i = rng.below(len);
                m[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                m[i] = [0, 0xff, 0x7f, 0x80, b'\n', b' ', b':', b'%', b'.', b'/'][rng.below(10)];
            }
            2 => {
                let i = rng.below(len + 1);
                m.insert(i, rng.next() as u8);
            }
            3 if len > 0 => {
                let i = rng.below(len);
                let n = rng.below(len - i).max(1);
                m.drain(i..i + n);
            }
            4 if len > 0 => {
                let i = rng.below(len);
                let n = rng.below(len - i).clamp(1, 64);
                let chunk = m[i..i + n].to_vec();
                let at = rng.below(len + 1);
                m.splice(at..at, chunk);
            }
            5 => m.truncate(rng.below(len + 1)),
            6 if !other.is_empty() => {
                let cut = rng.below(len + 1);
                let from = rng.below(other.len());
                m.truncate(cut);
                m.extend_from_slice(&other[from..]);
            }
            _ if len >= 8 => {
                // A little-endian number field set to a boundary value.
                let i = rng.below(len - 7);
                let v: u64 = [0, 1, u64::MAX, u64::from(u32::MAX), 1 << 31, 1 << 40][rng.below(6)];
                m[i..i + 8].copy_from_slice(&v.to_le_bytes());
            }
            _ => m.push(rng.next() as u8),
        }
    }
    m
}

fn seeds(target: &str) -> Vec<Vec<u8>> {
    let dir = corpus_dir(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files.iter().map(|p| std::fs::read(p).unwrap()).collect()
}

/// Run `f` on `input`; on a panic, keep the input in `target/fuzz-failures/` for
/// `fuzz/run.sh --reproduce` and fail naming it.
fn run_one(target: &str, f: fn(&[u8]), input: &[u8], n: usize) {
    if std::panic::catch_unwind(|| f(input)).is_err() {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fuzz-failures");
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(format!("{target}-{n}"));
        std::fs::write(&p, input).unwrap();
        panic!(
            "fuzz target {target} failed on input {n}, kept in {}",
            p.display()
        );
    }
}

#[test]
fn every_fuzz_target_survives_its_corpus_and_mutations() {
    let mut ran = Vec::new();
    for &(target, f) in maildump::fuzzing::TARGETS {
        let seeds = seeds(target);
        assert!(!seeds.is_empty(), "fuzz target {target} has no seed corpus");
        for (n, s) in seeds.iter().enumerate() {
            run_one(target, f, s, n);
        }
        let rounds = if target.starts_with("archive_") && target != "archive_json" {
            ARCHIVE_MUTATIONS
        } else {
            MUTATIONS
        };
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ target.len() as u64);
        for n in 0..rounds {
            let seed = &seeds[rng.below(seeds.len())];
            let other = &seeds[rng.below(seeds.len())];
            let input = mutate(&mut rng, seed, other);
            run_one(target, f, &input, seeds.len() + n);
        }
        ran.push((target, seeds.len(), rounds));
    }
    assert_eq!(ran.len(), maildump::fuzzing::TARGETS.len());
    assert!(ran.len() >= 14, "{ran:?}");
}
