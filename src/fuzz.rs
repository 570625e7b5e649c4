//! Fuzz-case generation for the file parsers (used by `tests/fuzz_parsers.rs`).
//!
//! A case is a deterministic function of a 64-bit seed and a valid example of the format: either
//! seeded random bytes, or the example with one to four stacked mutations (truncation, bit
//! flips, byte insertions and deletions, overwrites with boundary values, duplicated chunks,
//! and insertions of format-specific tokens such as `NaN` or `99999999999`). A failing case is
//! reproduced from its seed alone with [`case`].
//!
//! The test suite runs a few thousand cases in total; `FAITHFUL_FUZZ_CASES=1000000` (read by
//! [`scaled_cases`]) runs about a million instead, shared between the parsers in the same
//! proportions, and `FAITHFUL_FUZZ_SEED` changes the base seed:
//!
//! ```text
//! FAITHFUL_FUZZ_CASES=1000000 cargo test --release --test fuzz_parsers -- --nocapture
//! ```

/// Environment variable with the total number of fuzz cases to run.
pub const CASES_VAR: &str = "FAITHFUL_FUZZ_CASES";
/// Environment variable with the base seed (default 0).
pub const SEED_VAR: &str = "FAITHFUL_FUZZ_SEED";

/// A small seeded generator (SplitMix64): fast, and the same on every platform.
#[derive(Clone, Debug)]
pub struct FuzzRng(u64);

impl FuzzRng {
    /// A generator whose whole sequence is fixed by `seed`.
    pub fn new(seed: u64) -> Self {
        FuzzRng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }

    /// `n` random bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}

/// The seed of case `index` of `parser`, from the base seed: distinct parsers and indices get
/// unrelated seeds.
pub fn seed_for(base: u64, parser: &str, index: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ base;
    for b in parser.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
    }
    FuzzRng::new(h ^ index.wrapping_mul(0x9e37_79b9_7f4a_7c15)).next_u64()
}

/// The base seed: `FAITHFUL_FUZZ_SEED` if set and numeric, else 0.
pub fn base_seed() -> u64 {
    std::env::var(SEED_VAR)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// Number of cases for one parser whose default share is `default` of a suite that runs
/// `default_total` cases by default: `default`, or the same share of `FAITHFUL_FUZZ_CASES`
/// when that is set (at least 1).
pub fn scaled_cases(default: usize, default_total: usize) -> usize {
    match std::env::var(CASES_VAR)
        .ok()
        .and_then(|s| s.trim().parse::<u128>().ok())
    {
        Some(total) => {
            let share = total * default as u128 / default_total.max(1) as u128;
            share.clamp(1, usize::MAX as u128) as usize
        }
        None => default,
    }
}

/// Byte values at the edges of common ranges, and JSON/TOML/XML/CSV syntax.
const INTERESTING_BYTES: &[u8] = &[
    0x00, 0x01, 0x7f, 0x80, 0xff, 0xfe, b'0', b'9', b'-', b'"', b'\'', b'{', b'}', b'[', b']',
    b',', b';', b'<', b'>', b'/', b'=', b'\n', b'\\', b'.', b'e',
];

/// Integers at the edges of common ranges, written little- or big-endian over 4 or 8 bytes.
const INTERESTING_INTS: &[u64] = &[
    0,
    1,
    0x7f,
    0xff,
    0xffff,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
    0x1_0000_0000,
    0x7fff_ffff_ffff_ffff,
    u64::MAX,
];

/// Tokens worth inserting into any text format.
const TEXT_TOKENS: &[&str] = &[
    "NaN",
    "nan",
    "inf",
    "-inf",
    "1e309",
    "-1",
    "0",
    "99999999999",
    "18446744073709551616",
    "4294967296",
    "null",
    "true",
    "\"\"",
    "[]",
    "{}",
    "\u{feff}",
    "\u{10ffff}",
    "\\u0000",
    "&#0;",
    "<!--",
    "]]>",
    "M",
];

/// The input of the case with this `seed`: random bytes one time in ten, else `valid`
/// mutated. `tokens` are format-specific strings that may be inserted (besides a built-in
/// list of numbers and syntax).
pub fn case(seed: u64, valid: &[u8], tokens: &[&str]) -> Vec<u8> {
    let mut rng = FuzzRng::new(seed);
    if rng.below(10) == 0 {
        let n = rng.below(2 * valid.len().max(16) + 1);
        return rng.bytes(n);
    }
    let mut data = valid.to_vec();
    // mostly one mutation, so that many cases stay close enough to the format to reach the
    // checks behind its syntax
    let rounds = match rng.below(8) {
        0..=3 => 1,
        4 | 5 => 2,
        _ => 3 + rng.below(2),
    };
    for _ in 0..rounds {
        mutate(&mut rng, &mut data, tokens);
    }
    data
}

/// Numbers that replace a number of a text format (syntax stays valid, values do not).
const NUMBERS: &[&str] = &[
    "0",
    "1",
    "-1",
    "2",
    "3",
    "7",
    "0.5",
    "1.5",
    "-0.0",
    "1e-300",
    "1e309",
    "65",
    "4096",
    "99999999999",
    "4294967296",
    "18446744073709551615",
    "18446744073709551616",
    "9223372036854775807",
];

/// Applies one randomly chosen mutation to `data`.
pub fn mutate(rng: &mut FuzzRng, data: &mut Vec<u8>, tokens: &[&str]) {
    let len = data.len();
    match rng.below(11) {
        0 => data.truncate(rng.below(len + 1)),
        9 | 10 => replace_number(rng, data),
        1 => {
            for _ in 0..1 + rng.below(8) {
                if !data.is_empty() {
                    let i = rng.below(data.len());
                    data[i] ^= 1 << rng.below(8);
                }
            }
        }
        2 => {
            let at = rng.below(len + 1);
            let n = 1 + rng.below(16);
            let bytes = rng.bytes(n);
            data.splice(at..at, bytes);
        }
        3 => {
            if len > 0 {
                let at = rng.below(len);
                let n = (1 + rng.below(16)).min(len - at);
                data.drain(at..at + n);
            }
        }
        4 => {
            if len > 0 {
                let i = rng.below(len);
                data[i] = INTERESTING_BYTES[rng.below(INTERESTING_BYTES.len())];
            }
        }
        5 => overwrite_int(rng, data),
        6 => {
            if len > 0 {
                let from = rng.below(len);
                let n = (1 + rng.below(64)).min(len - from);
                let chunk = data[from..from + n].to_vec();
                let at = rng.below(len + 1);
                data.splice(at..at, chunk);
            }
        }
        _ => {
            let pick = rng.below(TEXT_TOKENS.len() + tokens.len());
            let tok = if pick < TEXT_TOKENS.len() {
                TEXT_TOKENS[pick]
            } else {
                tokens[pick - TEXT_TOKENS.len()]
            };
            let at = rng.below(len + 1);
            data.splice(at..at, tok.bytes());
        }
    }
}

/// Replaces one run of ASCII digits (a number of a text format) by a boundary number; inserts
/// one at a random place when there is none.
fn replace_number(rng: &mut FuzzRng, data: &mut Vec<u8>) {
    let runs: Vec<(usize, usize)> = {
        let mut runs = Vec::new();
        let mut i = 0;
        while i < data.len() {
            if data[i].is_ascii_digit() {
                let start = i;
                while i < data.len() && (data[i].is_ascii_digit() || data[i] == b'.') {
                    i += 1;
                }
                runs.push((start, i));
            } else {
                i += 1;
            }
        }
        runs
    };
    let number = NUMBERS[rng.below(NUMBERS.len())].bytes();
    if runs.is_empty() {
        let at = rng.below(data.len() + 1);
        data.splice(at..at, number);
    } else {
        let (a, b) = runs[rng.below(runs.len())];
        data.splice(a..b, number);
    }
}

/// Overwrites 4 or 8 bytes at a random place with a boundary integer (either byte order).
fn overwrite_int(rng: &mut FuzzRng, data: &mut [u8]) {
    let width = if rng.below(2) == 0 { 4 } else { 8 };
    if data.len() < width {
        return;
    }
    let v = INTERESTING_INTS[rng.below(INTERESTING_INTS.len())];
    let bytes = if rng.below(2) == 0 {
        v.to_le_bytes()
    } else {
        v.to_be_bytes()
    };
    let at = rng.below(data.len() - width + 1);
    let src = if rng.below(2) == 0 {
        &bytes[..width]
    } else {
        &bytes[8 - width..]
    };
    data[at..at + width].copy_from_slice(src);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cases_are_reproducible_from_their_seed_and_vary_between_seeds() {
        let valid = b"{\"layout\": \"4,M\", \"num_classes\": 3}";
        assert_eq!(case(42, valid, &[]), case(42, valid, &[]));
        let distinct: std::collections::BTreeSet<Vec<u8>> =
            (0..200).map(|s| case(s, valid, &["X"])).collect();
        assert!(
            distinct.len() > 150,
            "only {} distinct cases",
            distinct.len()
        );
        assert!(distinct.iter().any(|c| c.len() < valid.len()));
        assert!(distinct.iter().any(|c| c.len() > valid.len()));
        assert_ne!(seed_for(0, "a", 1), seed_for(0, "b", 1));
        assert_ne!(seed_for(0, "a", 1), seed_for(0, "a", 2));
    }

    #[test]
    fn generator_draws_stay_in_range() {
        let mut r = FuzzRng::new(7);
        assert!((0..1000).all(|_| r.below(3) < 3));
        assert_eq!(r.below(0), 0);
        assert_eq!(r.bytes(5).len(), 5);
        // empty inputs survive every mutation
        for s in 0..500 {
            let mut d = Vec::new();
            mutate(&mut FuzzRng::new(s), &mut d, &["tok"]);
        }
    }
}
