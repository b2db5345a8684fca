//! Snapshot files: the store's full state in chunks framed like log records, so damage to one chunk loses
//! that chunk only (recovery merges the others and falls back to an older snapshot for the rest), and a
//! snapshot can be verified piece by piece after it is written.
//!
//! `snap-<n>.bin` covers every log segment below `n`. Format 2: a file header (`DRSNAP02`), one `Chunk`
//! record per part of the state (seq and index = the chunk's number), then a `SnapshotEnd` record whose
//! payload is `[first seq of segment n u64][chunks u32][state bytes u64]`. Format 1 (still read):
//! `["DRSNAP01"][len u64][crc32][state]`.
use std::ops::Range;

use super::frame::{self, Item, RecordKind};
use crate::codec;
use crate::store::Limits;

/// Target size of one chunk: small enough that a damaged byte costs little, big enough that framing
/// and the writer table each chunk repeats stay negligible.
pub const CHUNK_BYTES: usize = 1 << 20;

/// Encodes a snapshot of `chunks` covering the log up to the record `first_seq` (exclusive).
pub(crate) fn encode(chunks: &[Vec<u8>], first_seq: u64) -> Vec<u8> {
    let total: usize = chunks.iter().map(Vec::len).sum();
    let mut out = Vec::with_capacity(total + (chunks.len() + 2) * frame::RECORD_HEADER + 64);
    out.extend_from_slice(&frame::file_header(frame::SNAPSHOT_MAGIC, 0));
    for (i, c) in chunks.iter().enumerate() {
        frame::encode(&mut out, RecordKind::Chunk, i as u64, i as u32, c);
    }
    let mut end = Vec::with_capacity(20);
    end.extend_from_slice(&first_seq.to_le_bytes());
    end.extend_from_slice(&(chunks.len() as u32).to_le_bytes());
    end.extend_from_slice(&(total as u64).to_le_bytes());
    let n = chunks.len();
    frame::encode(&mut out, RecordKind::SnapshotEnd, n as u64, n as u32, &end);
    out
}

/// What reading a snapshot file found.
#[derive(Debug, Default)]
pub(crate) struct SnapshotRead {
    /// The chunks that verify (byte ranges of the file).
    pub chunks: Vec<Range<usize>>,
    /// Every chunk present and verified, the end record too.
    pub complete: bool,
    /// The first record of the log after it (format 2, when the end record verifies).
    pub first_seq: Option<u64>,
    /// Chunks known to be damaged or missing.
    pub damaged_chunks: u64,
    /// Why the snapshot is not complete (empty when it is).
    pub problem: String,
    /// Bytes of state in the verified chunks.
    pub state_bytes: u64,
}

/// Reads a snapshot file (either format); never fails, it reports what it could verify.
pub(crate) fn read(b: &[u8]) -> SnapshotRead {
    if b.starts_with(frame::SNAPSHOT_MAGIC_V1) {
        return read_v1(b);
    }
    let mut r = SnapshotRead::default();
    let mut problems: Vec<String> = Vec::new();
    if frame::parse_file_header(b, frame::SNAPSHOT_MAGIC).is_none() {
        problems.push("damaged file header".into());
    }
    let mut end: Option<(u64, u64)> = None;
    let mut seen = 0u64;
    for item in frame::Scanner::new(b, frame::FILE_HEADER.min(b.len())) {
        match item {
            Item::Record { at, end: e, header } if header.kind == RecordKind::Chunk && end.is_none() => {
                r.chunks.push(at + frame::RECORD_HEADER..e);
                r.state_bytes += header.len as u64;
                seen += 1;
            }
            Item::Record { at, end: e, header } if header.kind == RecordKind::SnapshotEnd && header.len == 20 => {
                let p = &b[at + frame::RECORD_HEADER..e];
                let first = u64::from_le_bytes(p[..8].try_into().expect("8 bytes"));
                let chunks = u64::from(u32::from_le_bytes(p[8..12].try_into().expect("4 bytes")));
                end = Some((first, chunks));
            }
            Item::BadPayload { at, end: e, .. } | Item::Garbage { at, end: e } | Item::Cut { at, end: e, .. } => {
                problems.push(format!("bytes {at}..{e} do not verify"));
            }
            Item::Record { at, .. } => problems.push(format!("unexpected record at byte {at}")),
        }
    }
    match end {
        Some((first, chunks)) => {
            r.first_seq = Some(first);
            r.damaged_chunks = chunks.saturating_sub(seen);
            if chunks != seen && problems.is_empty() {
                problems.push(format!("{seen} of {chunks} chunks present"));
            }
        }
        None => {
            // Without the end record the number of chunks is unknown: at least one is missing or damaged.
            r.damaged_chunks = 1;
            problems.push("end record missing or damaged".into());
        }
    }
    r.complete = problems.is_empty();
    r.problem = problems.join("; ");
    r
}

fn read_v1(b: &[u8]) -> SnapshotRead {
    let mut r = SnapshotRead { damaged_chunks: 1, ..SnapshotRead::default() };
    let ok = b.len() >= 20 && {
        let len = u64::from_le_bytes(b[8..16].try_into().expect("8 bytes")) as usize;
        let crc = u32::from_le_bytes(b[16..20].try_into().expect("4 bytes"));
        b.len() == 20usize.saturating_add(len) && crc32fast::hash(&b[20..]) == crc
    };
    if ok {
        let whole = 20..b.len();
        r = SnapshotRead { chunks: vec![whole], complete: true, state_bytes: (b.len() - 20) as u64, ..r };
        r.damaged_chunks = 0;
    } else {
        r.problem = "format-1 snapshot fails its length or CRC check".into();
    }
    r
}

/// Verifies a snapshot as written: complete, covering `first_seq`, and every chunk decodes.
pub(crate) fn verify(b: &[u8], first_seq: u64, limits: Limits) -> Result<(), String> {
    let r = read(b);
    if !r.complete {
        return Err(r.problem);
    }
    if r.first_seq != Some(first_seq) {
        return Err(format!("covers the log up to {:?}, expected {first_seq}", r.first_seq));
    }
    for c in &r.chunks {
        codec::check_state(&b[c.clone()], limits).map_err(|e| format!("chunk at byte {}: {e}", c.start))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_damaged_chunk_costs_that_chunk_only() {
        let chunks = vec![b"aaaa".to_vec(), b"bbbb".to_vec(), b"cccc".to_vec()];
        let mut b = encode(&chunks, 77);
        let r = read(&b);
        assert!(r.complete, "{}", r.problem);
        assert_eq!((r.first_seq, r.chunks.len(), r.state_bytes), (Some(77), 3, 12));
        let second = r.chunks[1].start;
        b[second] ^= 1;
        let r = read(&b);
        assert!(!r.complete);
        assert_eq!((r.chunks.len(), r.damaged_chunks), (2, 1));
        assert_eq!(&b[r.chunks[1].clone()], b"cccc");
    }

    #[test]
    fn format_one_reads_whole_or_not_at_all() {
        let state = b"state bytes";
        let mut b = frame::SNAPSHOT_MAGIC_V1.to_vec();
        b.extend_from_slice(&(state.len() as u64).to_le_bytes());
        b.extend_from_slice(&crc32fast::hash(state).to_le_bytes());
        b.extend_from_slice(state);
        let r = read(&b);
        assert!(r.complete && r.first_seq.is_none());
        assert_eq!(&b[r.chunks[0].clone()], state);
        b[22] ^= 1;
        assert!(!read(&b).complete);
    }
}
