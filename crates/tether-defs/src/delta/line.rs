//! The line (record) delta payload: a zstd-compressed stream of ops that
//! rebuild the target from the base's lines.
//!
//! Lines are split after each `\n`, which stays part of its line (so CRLF
//! lines keep their `\r`), and the last line may lack it. The ops:
//!
//! ```text
//! 0x00                           END: the stream is complete
//! 0x01 zigzag(start - cursor) n  COPY n >= 1 base lines from line `start`;
//!                                the cursor then moves to start + n
//! 0x02 len bytes                 INSERT len >= 1 literal bytes
//! ```
//!
//! All numbers are LEB128 varints. A COPY's start is written relative to
//! the end of the previous COPY, because between two edits the target
//! follows the base: most starts are then 0 or 1, which zstd squeezes to
//! almost nothing, where absolute line numbers would each cost 3 bytes.
//!
//! The diff is a greedy O(n) pass, not a minimal (Myers, O(ND)) diff: a hash
//! map from line content to its first base position finds where a target
//! line comes from, and a COPY run extends while the next base line equals
//! the next target line. For a record database, where records change,
//! appear and vanish but rarely move, greedy is as small as minimal.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};

use super::{DeltaError, FULL_LEVEL, STREAM_WINDOW_LOG, compress_stream};

const OP_END: u8 = 0x00;
const OP_COPY: u8 = 0x01;
const OP_INSERT: u8 = 0x02;

/// A COPY that jumps elsewhere in the base costs a tag and two varints
/// (3–8 bytes); a jump to fewer bytes than this is written as an INSERT.
const MIN_JUMP_BYTES: usize = 8;

/// Builds the compressed op stream that rebuilds `target` from `base`.
pub(super) fn make(base: &[u8], target: &[u8]) -> Result<Vec<u8>, DeltaError> {
    let base_lines = split_lines(base);
    let target_lines = split_lines(target);

    let mut first_at: HashMap<&[u8], usize> = HashMap::with_capacity(base_lines.len());
    for (at, line) in base_lines.iter().enumerate() {
        first_at.entry(line).or_insert(at);
    }

    let mut ops = Vec::new();
    // The base line after the last COPY: where the target most likely goes on.
    let mut cursor = 0usize;
    // Byte offset in `target` of line `i`, and where pending inserts began.
    let mut pos = 0usize;
    let mut insert_from = 0usize;
    let mut i = 0usize;
    while i < target_lines.len() {
        let line = target_lines[i];
        let start = if base_lines.get(cursor) == Some(&line) {
            Some(cursor)
        } else {
            first_at.get(line).copied()
        };
        let Some(start) = start else {
            pos += line.len();
            i += 1;
            continue;
        };
        let mut count = 0usize;
        let mut run_bytes = 0usize;
        while let (Some(b), Some(t)) = (base_lines.get(start + count), target_lines.get(i + count))
        {
            if b != t {
                break;
            }
            run_bytes += t.len();
            count += 1;
        }
        // `count >= 1`: line `start` equals line `i` by construction.
        if start != cursor && run_bytes < MIN_JUMP_BYTES {
            pos += line.len();
            i += 1;
            continue;
        }
        flush_insert(&mut ops, &target[insert_from..pos]);
        ops.push(OP_COPY);
        // Line counts fit in i64 on every platform Rust supports.
        put_varint(&mut ops, zigzag(start as i64 - cursor as i64));
        put_varint(&mut ops, count as u64);
        cursor = start + count;
        i += count;
        pos += run_bytes;
        insert_from = pos;
    }
    flush_insert(&mut ops, &target[insert_from..pos]);
    ops.push(OP_END);
    Ok(compress_stream(&ops, FULL_LEVEL))
}

/// Rebuilds at most `result_len` bytes from `base` and the compressed op
/// stream `payload`.
pub(super) fn apply(base: &[u8], payload: &[u8], result_len: usize) -> Result<Vec<u8>, DeltaError> {
    let starts = line_starts(base);
    let line_count = starts.len() - 1;

    let mut decoder = zstd::stream::read::Decoder::with_buffer(payload)
        .map_err(|e| DeltaError::corrupt(format!("line ops: zstd: {e}")))?;
    decoder
        .window_log_max(STREAM_WINDOW_LOG)
        .map_err(|e| DeltaError::corrupt(format!("line ops: zstd: {e}")))?;
    let mut ops = OpReader {
        inner: BufReader::new(decoder),
    };

    let mut out = Vec::new();
    out.try_reserve_exact(result_len)
        .map_err(|_| DeltaError::TooLarge {
            limit: result_len as u64,
        })?;
    let mut cursor = 0usize;
    loop {
        match ops.byte()? {
            OP_END => break,
            OP_COPY => {
                let delta = unzigzag(ops.varint()?);
                let count = ops.varint()?;
                let start = i128::from(delta) + cursor as i128;
                let end = start + i128::from(count);
                if count == 0 || start < 0 || end > line_count as i128 {
                    return Err(DeltaError::corrupt(format!(
                        "COPY of lines {start}..{end} outside the base's {line_count} lines"
                    )));
                }
                // In bounds of `starts` (len line_count + 1), checked above.
                let (start, end) = (start as usize, end as usize);
                let bytes = &base[starts[start]..starts[end]];
                check_room(&out, bytes.len(), result_len)?;
                out.extend_from_slice(bytes);
                cursor = end;
            }
            OP_INSERT => {
                let len = ops.varint()?;
                if len == 0 {
                    return Err(DeltaError::corrupt("empty INSERT"));
                }
                let len = usize::try_from(len).unwrap_or(usize::MAX);
                check_room(&out, len, result_len)?;
                let at = out.len();
                // Within the capacity reserved above: no reallocation.
                out.resize(at + len, 0);
                ops.fill(&mut out[at..])?;
            }
            other => {
                return Err(DeltaError::corrupt(format!(
                    "unknown line op 0x{other:02x}"
                )));
            }
        }
    }
    if ops
        .inner
        .fill_buf()
        .map(|rest| !rest.is_empty())
        .unwrap_or(true)
    {
        return Err(DeltaError::corrupt("data after the END op"));
    }
    Ok(out)
}

/// Refuses output past the header's announced length: the payload then
/// disagrees with its own header.
fn check_room(out: &[u8], more: usize, result_len: usize) -> Result<(), DeltaError> {
    if more > result_len - out.len() {
        return Err(DeltaError::corrupt(format!(
            "the ops rebuild more than the {result_len} bytes the header announced"
        )));
    }
    Ok(())
}

fn flush_insert(ops: &mut Vec<u8>, bytes: &[u8]) {
    if bytes.is_empty() {
        return;
    }
    ops.push(OP_INSERT);
    put_varint(ops, bytes.len() as u64);
    ops.extend_from_slice(bytes);
}

/// The lines of `data`, each with its `\n`; the last may lack it.
fn split_lines(data: &[u8]) -> Vec<&[u8]> {
    data.split_inclusive(|&b| b == b'\n').collect()
}

/// Byte offset of each line of `data`, plus `data.len()` last, so line `k`
/// is `data[starts[k]..starts[k + 1]]`. Agrees with [`split_lines`].
fn line_starts(data: &[u8]) -> Vec<usize> {
    let mut starts = vec![0];
    starts.extend(
        data.iter()
            .enumerate()
            .filter(|&(at, &b)| b == b'\n' && at + 1 < data.len())
            .map(|(at, _)| at + 1),
    );
    if !data.is_empty() {
        starts.push(data.len());
    }
    starts
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads ops from the decompressed stream; the end of the stream before the
/// END op means the delta was cut short.
struct OpReader<R> {
    inner: R,
}

impl<R: Read> OpReader<R> {
    fn byte(&mut self) -> Result<u8, DeltaError> {
        let mut b = [0u8; 1];
        self.fill(&mut b)?;
        Ok(b[0])
    }

    /// A LEB128 u64 of at most 10 bytes, refusing overflow.
    fn varint(&mut self) -> Result<u64, DeltaError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            let bits = u64::from(b & 0x7f);
            if shift == 63 && bits > 1 {
                return Err(DeltaError::corrupt("varint overflows 64 bits"));
            }
            v |= bits << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(DeltaError::corrupt("varint longer than 10 bytes"))
    }

    fn fill(&mut self, buf: &mut [u8]) -> Result<(), DeltaError> {
        self.inner.read_exact(buf).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                DeltaError::corrupt("the line ops end before their END op")
            } else {
                DeltaError::corrupt(format!("line ops: zstd: {e}"))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn read_varint(bytes: &[u8]) -> Result<u64, DeltaError> {
        OpReader { inner: bytes }.varint()
    }

    #[test]
    fn varint_edges() {
        for v in [
            0,
            1,
            127,
            128,
            300,
            u64::from(u32::MAX),
            u64::MAX - 1,
            u64::MAX,
        ] {
            let mut buf = Vec::new();
            put_varint(&mut buf, v);
            assert_eq!(read_varint(&buf).expect("own encoding"), v);
        }
        // 2^64 does not fit: the tenth byte may carry one bit only.
        let over = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02];
        assert!(matches!(
            read_varint(&over),
            Err(DeltaError::Corrupt { .. })
        ));
        let too_long = [0x80; 11];
        assert!(matches!(
            read_varint(&too_long),
            Err(DeltaError::Corrupt { .. })
        ));
        assert!(matches!(
            read_varint(&[0x80]),
            Err(DeltaError::Corrupt { .. })
        ));
        assert!(matches!(read_varint(&[]), Err(DeltaError::Corrupt { .. })));
    }

    #[test]
    fn line_starts_agree_with_split() {
        for data in [
            &b""[..],
            b"\n",
            b"a",
            b"a\n",
            b"a\nb",
            b"a\r\nb\r\n",
            b"\n\n\nx",
        ] {
            let starts = line_starts(data);
            let lines: Vec<&[u8]> = starts.windows(2).map(|w| &data[w[0]..w[1]]).collect();
            assert_eq!(lines, split_lines(data), "{data:?}");
        }
    }

    #[test]
    fn unchanged_target_is_one_copy() {
        let base: Vec<u8> = (0..1000)
            .flat_map(|i| format!("record-{i}\n").into_bytes())
            .collect();
        let payload = make(&base, &base).expect("make");
        let ops = zstd::decode_all(&payload[..]).expect("own stream");
        // COPY, zigzag(0), varint(1000) = 2 bytes, END.
        assert_eq!(ops, [OP_COPY, 0, 0xe8, 0x07, OP_END]);
    }

    proptest! {
        #[test]
        fn varint_round_trips(v in any::<u64>()) {
            let mut buf = Vec::new();
            put_varint(&mut buf, v);
            prop_assert_eq!(read_varint(&buf).expect("own encoding"), v);
        }

        #[test]
        fn zigzag_round_trips(v in any::<i64>()) {
            prop_assert_eq!(unzigzag(zigzag(v)), v);
        }

        #[test]
        fn varint_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..16)) {
            let _ = read_varint(&bytes);
        }

        #[test]
        fn line_starts_match_split(data in proptest::collection::vec(prop_oneof![Just(b'\n'), Just(b'a'), any::<u8>()], 0..64)) {
            let starts = line_starts(&data);
            let lines: Vec<&[u8]> = starts.windows(2).map(|w| &data[w[0]..w[1]]).collect();
            prop_assert_eq!(lines, split_lines(&data));
        }
    }
}
