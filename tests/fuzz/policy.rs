//! The fuzzing policy every `fuzz_*` property test shares (included with `#[path]` by each
//! crate's fuzz test; it is not a test target itself), and the structure-aware mutations
//! those tests apply to valid inputs.
//!
//! - Case counts are fixed per target so CI does the same work every run; `PROPTEST_CASES=N`
//!   runs every target N cases instead (fuzzing longer, by hand or in a nightly job).
//! - The seed is fixed so a CI failure reproduces exactly; `PROPTEST_RNG_SEED=<u64>` explores
//!   other inputs. A failure prints the shrunk input; its fix adds that input as a named
//!   regression test, so no persistence files are written (a CI checkout is thrown away).
//!
//! cargo-fuzz needs a nightly toolchain; proptest runs on stable in `cargo test`.

#![allow(dead_code)]

use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};

/// The default seed ("health" in ASCII).
pub const SEED: u64 = 0x6865_616c_7468;

fn env_u64(key: &str) -> Option<u64> {
    std::env::var(key).ok().and_then(|v| v.trim().parse().ok())
}

/// The policy with `cases` cases unless `PROPTEST_CASES` says otherwise.
pub fn config(cases: u32) -> Config {
    Config {
        cases: env_u64("PROPTEST_CASES").map_or(cases, |c| c.min(u64::from(u32::MAX)) as u32),
        rng_seed: RngSeed::Fixed(env_u64("PROPTEST_RNG_SEED").unwrap_or(SEED)),
        failure_persistence: None,
        max_shrink_iters: 4096,
        ..Config::default()
    }
}

/// The policy with exactly `cases` cases, whatever `PROPTEST_CASES` says: for targets whose
/// cases are expensive (a megabyte of input each) and whose input space is small.
pub fn config_fixed(cases: u32) -> Config {
    Config {
        cases,
        ..config(cases)
    }
}

/// One edit of a valid input. Positions are taken modulo the input's length when applied.
#[derive(Debug, Clone)]
pub enum Mutation {
    /// Keep only the first bytes: a reply or file cut short.
    Truncate(usize),
    /// Replace one byte.
    Set(usize, u8),
    /// Flip one bit.
    FlipBit(usize, u8),
    /// Insert bytes.
    Insert(usize, Vec<u8>),
    /// Remove a run of bytes.
    Delete(usize, usize),
    /// Repeat a run of bytes (duplicated lines, keys, fields).
    Duplicate(usize, usize),
    /// Replace the number at or after a position by an extreme one: huge declared sizes,
    /// counts and values, negative or overflowing.
    ExtremeNumber(usize, &'static str),
}

const EXTREMES: [&str; 10] = [
    "0",
    "-1",
    "4294967296",
    "18446744073709551615",
    "99999999999999999999999",
    "1e308",
    "1e999",
    "-1e999",
    "nan",
    "2147483647",
];

pub fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), any::<u8>()).prop_map(|(p, b)| Mutation::Set(p, b)),
        (any::<usize>(), 0u8..8).prop_map(|(p, b)| Mutation::FlipBit(p, b)),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(p, b)| Mutation::Insert(p, b)),
        (any::<usize>(), 1usize..64).prop_map(|(p, n)| Mutation::Delete(p, n)),
        (any::<usize>(), 1usize..64).prop_map(|(p, n)| Mutation::Duplicate(p, n)),
        (any::<usize>(), prop::sample::select(EXTREMES.to_vec()))
            .prop_map(|(p, s)| Mutation::ExtremeNumber(p, s)),
    ]
}

/// Up to `max` mutations.
pub fn mutations(max: usize) -> impl Strategy<Value = Vec<Mutation>> {
    prop::collection::vec(mutation(), 1..=max)
}

pub fn apply(input: &[u8], mutations: &[Mutation]) -> Vec<u8> {
    let mut b = input.to_vec();
    for m in mutations {
        let at = |p: usize, len: usize| if len == 0 { 0 } else { p % len };
        match m {
            Mutation::Truncate(p) => {
                let k = p % (b.len() + 1);
                b.truncate(k);
            }
            Mutation::Set(p, v) if !b.is_empty() => {
                let k = at(*p, b.len());
                b[k] = *v;
            }
            Mutation::FlipBit(p, bit) if !b.is_empty() => {
                let k = at(*p, b.len());
                b[k] ^= 1 << bit;
            }
            Mutation::Insert(p, v) => {
                let k = p % (b.len() + 1);
                b.splice(k..k, v.iter().copied());
            }
            Mutation::Delete(p, n) if !b.is_empty() => {
                let k = at(*p, b.len());
                let end = (k + n).min(b.len());
                b.drain(k..end);
            }
            Mutation::Duplicate(p, n) if !b.is_empty() => {
                let k = at(*p, b.len());
                let end = (k + n).min(b.len());
                let run: Vec<u8> = b[k..end].to_vec();
                b.splice(end..end, run);
            }
            Mutation::ExtremeNumber(p, s) if !b.is_empty() => {
                let k = at(*p, b.len());
                // The next run of digits (with a sign or decimal point) from k, or k itself.
                let start = (k..b.len()).find(|&i| b[i].is_ascii_digit()).unwrap_or(k);
                let mut end = start;
                while end < b.len() && (b[end].is_ascii_digit() || b"+-.eE".contains(&b[end])) {
                    end += 1;
                }
                b.splice(start..end, s.bytes());
            }
            _ => {}
        }
    }
    b
}
