//! The CI smoke of every fuzz target, on stable: each body runs over its
//! checked-in seed corpus (`fuzz/corpus/<target>/`, which also keeps every
//! input that once crashed) and then over a few thousand deterministic
//! mutations of those seeds. A failure names the target and prints the
//! input in hex, ready to save as a corpus file.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;

/// Mutated inputs per target: ten thousand keeps the whole smoke within
/// seconds in a debug build.
const MUTATIONS: usize = 10_000;

fn corpus(target: &str) -> Vec<Vec<u8>> {
    corpus_files(target)
        .into_iter()
        .map(|(_, data)| data)
        .collect()
}

fn corpus_files(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("the seed corpus {} is missing: {e}", dir.display()))
        .map(|e| e.expect("a corpus entry").path())
        .collect();
    // Sorted, so the mutations are the same on every machine.
    paths.sort();
    paths
        .iter()
        .map(|p| {
            let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
            (
                name.unwrap_or_default(),
                std::fs::read(p).expect("a readable seed"),
            )
        })
        .collect()
}

/// xorshift64*: deterministic and dependency-free.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

/// One to four libFuzzer-like edits: flip a bit, set an interesting byte,
/// insert or delete a run, truncate, or splice in another seed's tail.
fn mutate(rng: &mut Rng, seeds: &[Vec<u8>], input: &mut Vec<u8>) {
    const INTERESTING: [u8; 8] = [0x00, 0x01, 0x7f, 0x80, 0xff, b'\n', b'"', b'0'];
    for _ in 0..=rng.below(4) {
        let len = input.len();
        match rng.below(6) {
            0 if len > 0 => {
                let i = rng.below(len);
                input[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                input[i] = INTERESTING[rng.below(INTERESTING.len())];
            }
            2 => {
                let i = rng.below(len + 1);
                let n = 1 + rng.below(16);
                let byte = (rng.next() & 0xff) as u8;
                input.splice(i..i, std::iter::repeat_n(byte, n));
            }
            3 if len > 0 => {
                let i = rng.below(len);
                let n = 1 + rng.below(len - i);
                input.drain(i..i + n.min(16));
            }
            4 if len > 0 => input.truncate(rng.below(len)),
            _ => {
                let other = &seeds[rng.below(seeds.len())];
                let from = rng.below(other.len() + 1);
                let at = rng.below(len + 1);
                input.truncate(at);
                input.extend_from_slice(&other[from..]);
            }
        }
    }
}

fn run(target: &str, body: tether_fuzz::Body, input: &[u8]) -> bool {
    let Ok(accepted) = catch_unwind(AssertUnwindSafe(|| body(input))) else {
        let hex: String = input.iter().map(|b| format!("{b:02x}")).collect();
        panic!("fuzz target {target} panicked on input (hex): {hex}");
    };
    accepted
}

fn smoke(name: &str) {
    let (_, body) = tether_fuzz::TARGETS
        .iter()
        .find(|(n, _)| *n == name)
        .expect("a known target");
    let seeds = corpus(name);
    assert!(!seeds.is_empty(), "the seed corpus of {name} is empty");
    for seed in &seeds {
        run(name, *body, seed);
    }
    let mut rng = Rng(0x7e7e_5eed ^ name.len() as u64);
    for _ in 0..MUTATIONS {
        let mut input = seeds[rng.below(seeds.len())].clone();
        mutate(&mut rng, &seeds, &mut input);
        run(name, *body, &input);
    }
}

#[test]
fn x509_chain() {
    smoke("x509_chain");
}

#[test]
fn proxy_reply() {
    smoke("proxy_reply");
}

#[test]
fn proxy_header() {
    smoke("proxy_header");
}

#[test]
fn delta_apply() {
    smoke("delta_apply");
}

#[test]
fn bundle_import() {
    smoke("bundle_import");
}

#[test]
fn defs_bundle_import() {
    smoke("defs_bundle_import");
}

#[test]
fn api_bodies() {
    smoke("api_bodies");
}

#[test]
fn ocsp_request() {
    smoke("ocsp_request");
}

#[test]
fn csr_check() {
    smoke("csr_check");
}

#[test]
fn deploy_spec() {
    smoke("deploy_spec");
}

/// The seeds are worth their name: each is accepted by the production code
/// all the way (a parsed chain, an applied delta, a valid bundle, a body
/// that passes validation), so mutations start from deep inside the
/// parsers. A seed that a format change broke fails here; rerun
/// tests/seeds.rs.
#[test]
fn every_seed_is_accepted() {
    for (name, body) in tether_fuzz::TARGETS {
        for (file, data) in corpus_files(name) {
            if file.starts_with("seed-") {
                assert!(run(name, *body, &data), "{name}/{file} is refused");
            }
        }
    }
}

/// Every target has a test above, so a new target cannot skip the smoke.
#[test]
fn every_target_is_smoked() {
    let source = include_str!("smoke.rs");
    for (name, _) in tether_fuzz::TARGETS {
        assert!(
            source.contains(&format!("smoke(\"{name}\")")),
            "fuzz target {name} has no smoke test"
        );
    }
}
