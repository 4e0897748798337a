//! Benchmark of definitions deltas (BENCHMARKS.md, "Definitions deltas").
//!
//! Generates a deterministic 1,000,000-record text signature database
//! (~100 MB), changes 0.5 % of its records (a mix of modified, inserted and
//! deleted ones), and measures the full object, the line delta and the zstd
//! delta: sizes, make time and apply time. Then the same for a 64 MiB binary
//! blob with 0.5 % of its 4 KiB blocks changed, with the zstd delta.
//!
//! Run: `cargo run --release -p tether-defs --example bench_delta`
//! (or `scripts/bench-defs-delta.sh`). Options: `--records N` (default
//! 1000000), `--binary-mib N` (default 64), `--change-permille N` (default 5).

use tether_defs::delta::{
    self, ContentKind, DeltaKind, apply_delta, compress_full, content_kind, decompress_full,
    make_delta,
};
use tokio::time::Instant;

/// A small deterministic generator (splitmix64): the same data on every run
/// and machine, so figures are comparable.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

const PLATFORMS: &[&str] = &[
    "Win", "Unix", "Osx", "Andr", "Doc", "Xls", "Pdf", "Html", "Js", "Email", "Multios",
];
const CATEGORIES: &[&str] = &[
    "Trojan",
    "Malware",
    "Downloader",
    "Exploit",
    "Phishing",
    "Dropper",
    "Coinminer",
    "Ransomware",
    "Spyware",
    "Worm",
    "Backdoor",
    "Packed",
];
const FAMILIES: &[&str] = &[
    "Agent",
    "Emotet",
    "Zbot",
    "Mirai",
    "Generic",
    "Qakbot",
    "Lokibot",
    "Formbook",
    "Remcos",
    "AgentTesla",
    "Gafgyt",
    "Ursnif",
    "Dridex",
    "Tofsee",
    "Nanocore",
    "Njrat",
    "Cobaltstrike",
];

/// One ClamAV-like extended signature record:
/// `Name-id-rev:target:offset:hexsig:flevel`, about 100 bytes.
fn record(rng: &mut Rng, id: u64) -> String {
    let mut sig = String::new();
    let hex_bytes = 16 + rng.below(24);
    for k in 0..hex_bytes {
        // Real signatures carry wildcards now and then.
        match rng.below(40) {
            0 if k > 0 => sig.push_str("??"),
            1 if k > 0 => sig.push_str(&format!("{{{}-{}}}", rng.below(4), 4 + rng.below(8))),
            _ => sig.push_str(&format!("{:02x}", rng.below(256))),
        }
    }
    let offset = match rng.below(4) {
        0 => "*".to_string(),
        1 => format!("EP+{}", rng.below(4096)),
        2 => format!("EOF-{}", rng.below(65536)),
        _ => format!("{}", rng.below(1 << 20)),
    };
    format!(
        "{}.{}.{}-{}-{}:{}:{}:{}:{}\n",
        rng.pick(PLATFORMS),
        rng.pick(CATEGORIES),
        rng.pick(FAMILIES),
        9_000_000 + id,
        rng.below(3),
        rng.below(8),
        offset,
        sig,
        60 + rng.below(40),
    )
}

/// The base database and a target with `permille`/1000 of its records
/// changed: a third modified, a third deleted, a third with a new record
/// inserted after them.
fn text_pair(records: u64, permille: u64) -> (Vec<u8>, Vec<u8>, u64) {
    let mut rng = Rng(0x7e7e_5eed);
    let lines: Vec<String> = (0..records).map(|id| record(&mut rng, id)).collect();
    let mut change = vec![0u8; lines.len()];
    let mut changed = 0;
    let wanted = records * permille / 1000;
    while changed < wanted {
        let at = rng.below(records) as usize;
        if change[at] == 0 {
            change[at] = 1 + (changed % 3) as u8;
            changed += 1;
        }
    }
    let mut next_id = records;
    let mut base = Vec::with_capacity(lines.iter().map(String::len).sum());
    let mut target = Vec::with_capacity(base.capacity() + 4096);
    for (line, what) in lines.iter().zip(&change) {
        base.extend_from_slice(line.as_bytes());
        match what {
            // Modified: a new revision of the record.
            1 => target.extend_from_slice(record(&mut rng, next_id).as_bytes()),
            // Deleted.
            2 => {}
            // Kept, and a new record inserted after it.
            3 => {
                target.extend_from_slice(line.as_bytes());
                target.extend_from_slice(record(&mut rng, next_id).as_bytes());
            }
            _ => target.extend_from_slice(line.as_bytes()),
        }
        if *what != 0 {
            next_id += 1;
        }
    }
    (base, target, changed)
}

const BLOCK: usize = 4096;

/// A binary signature blob: records of a 16-byte header (magic, id, type,
/// length) and a payload that mixes random bytes with a small alphabet, so
/// it compresses partly, like real binary databases. The target has
/// `permille`/1000 of its 4 KiB blocks changed: most rewritten in place,
/// some inserted and some deleted (which shifts everything after them).
fn binary_pair(mib: usize, permille: u64) -> (Vec<u8>, Vec<u8>, u64) {
    let mut rng = Rng(0xb1_0b5eed);
    let size = mib << 20;
    let mut base = Vec::with_capacity(size + 256);
    let mut id = 0u32;
    while base.len() < size {
        let len = 32 + rng.below(160) as usize;
        base.extend_from_slice(b"TSIG");
        base.extend_from_slice(&id.to_le_bytes());
        base.extend_from_slice(&(rng.below(12) as u32).to_le_bytes());
        base.extend_from_slice(&(len as u32).to_le_bytes());
        for _ in 0..len {
            let r = rng.next();
            base.push(if r & 3 == 0 {
                (r >> 8) as u8
            } else {
                b"\x00\x01\xff\x90MZPE"[(r >> 8) as usize % 8]
            });
        }
        id += 1;
    }
    base.truncate(size);
    let blocks = size / BLOCK;
    let wanted = (blocks as u64 * permille / 1000).max(1);
    let mut change = vec![0u8; blocks];
    let mut changed = 0;
    while changed < wanted {
        let at = rng.below(blocks as u64) as usize;
        if change[at] == 0 {
            // 70 % rewritten, 15 % deleted, 15 % with a new block inserted.
            change[at] = match changed % 20 {
                0..=13 => 1,
                14..=16 => 2,
                _ => 3,
            };
            changed += 1;
        }
    }
    let fresh = |rng: &mut Rng| -> Vec<u8> {
        (0..BLOCK / 8)
            .flat_map(|_| rng.next().to_le_bytes())
            .collect()
    };
    let mut target = Vec::with_capacity(size + BLOCK * 64);
    for (block, what) in base.chunks(BLOCK).zip(&change) {
        match what {
            1 => target.extend_from_slice(&fresh(&mut rng)),
            2 => {}
            3 => {
                target.extend_from_slice(block);
                target.extend_from_slice(&fresh(&mut rng));
            }
            _ => target.extend_from_slice(block),
        }
    }
    (base, target, changed)
}

struct Row {
    content: &'static str,
    kind: String,
    size: usize,
    make_s: f64,
    apply_s: f64,
}

fn mb(bytes: usize) -> f64 {
    bytes as f64 / 1e6
}

fn measure_delta(content: &'static str, kind: DeltaKind, base: &[u8], target: &[u8]) -> Row {
    let started = Instant::now();
    let delta = make_delta(kind, base, target).expect("make_delta");
    let make_s = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let out = apply_delta(base, &delta, target.len() as u64).expect("apply_delta");
    let apply_s = started.elapsed().as_secs_f64();
    assert!(
        out == target,
        "the {} delta did not rebuild the target",
        kind.as_str()
    );
    Row {
        content,
        kind: kind.as_str().to_string(),
        size: delta.len(),
        make_s,
        apply_s,
    }
}

fn measure_full(content: &'static str, target: &[u8]) -> Row {
    let started = Instant::now();
    let packed = compress_full(target);
    let make_s = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let out = decompress_full(&packed, target.len() as u64).expect("decompress_full");
    // The agent checks the signed hash of a full download too.
    let _ = delta::sha256_hex(&out);
    let apply_s = started.elapsed().as_secs_f64();
    assert!(out == target, "the full object did not round-trip");
    Row {
        content,
        kind: format!("full (zstd -{})", delta::FULL_LEVEL),
        size: packed.len(),
        make_s,
        apply_s,
    }
}

fn arg(args: &[String], name: &str, default: u64) -> u64 {
    args.iter()
        .position(|a| a == name)
        .and_then(|at| args.get(at + 1))
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name} takes a number, not {v:?}"))
        })
        .unwrap_or(default)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let records = arg(&args, "--records", 1_000_000);
    let binary_mib = arg(&args, "--binary-mib", 64) as usize;
    let permille = arg(&args, "--change-permille", 5);

    let (base, target, changed) = text_pair(records, permille);
    assert_eq!(content_kind(&target), ContentKind::Text);
    println!(
        "text: {records} records, {:.1} MB base, {:.1} MB target, {changed} records changed ({:.1} %)",
        mb(base.len()),
        mb(target.len()),
        changed as f64 / records as f64 * 100.0
    );
    let mut rows = vec![measure_full("text", &target)];
    rows.push(measure_delta("text", DeltaKind::Line, &base, &target));
    rows.push(measure_delta("text", DeltaKind::Zstd, &base, &target));
    let text_full = rows[0].size;
    drop((base, target));

    let (base, target, changed) = binary_pair(binary_mib, permille);
    assert_eq!(content_kind(&target), ContentKind::Binary);
    println!(
        "binary: {:.1} MB base, {:.1} MB target, {changed} of {} 4 KiB blocks changed",
        mb(base.len()),
        mb(target.len()),
        base.len() / BLOCK
    );
    rows.push(measure_full("binary", &target));
    rows.push(measure_delta("binary", DeltaKind::Zstd, &base, &target));
    let binary_full = rows[3].size;

    println!();
    println!("| content | object | size | % of compressed full | make | apply |");
    println!("|---|---|---|---|---|---|");
    for row in &rows {
        let full = if row.content == "text" {
            text_full
        } else {
            binary_full
        };
        println!(
            "| {} | {} | {:.3} MB | {:.2} % | {:.2} s | {:.3} s |",
            row.content,
            row.kind,
            mb(row.size),
            row.size as f64 / full as f64 * 100.0,
            row.make_s,
            row.apply_s,
        );
    }
    println!();
    println!("apply = apply_delta (both sha256 checks included) or decompress_full + sha256.");
}
