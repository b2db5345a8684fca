//! Snapshot files: the store's full state in chunks framed like log records, so damage to one chunk loses
//! that chunk only (recovery merges the others and falls back to an older snapshot for the rest), and a
//! snapshot can be verified piece by piece after it is written.
//!
//! `snap-<n>.bin` covers every log segment below `n`. Format 2: a file header (`DRSNAP02`), one `Chunk`
//! record per part of the state (seq and index = the chunk's number), then a `SnapshotEnd` record whose
//! payload is `[first seq of segment n u64][chunks u32][state bytes u64]`. Format 1 (still read):
//! `["DRSNAP01"][len u64][crc32][state]`.
//!
//! A snapshot is written ([`write`]), verified ([`verify_stored`]) and, when intact, recovered
//! ([`Stored`]) a record at a time, so none of them holds more than one chunk of it in memory; only a
//! damaged one is read whole, to salvage its good chunks around the damage ([`read`]).
use std::ops::Range;

use super::frame::{self, Header, Item, RecordKind};
use super::storage::Storage;
use crate::codec;
use crate::store::{Limits, Store};

/// Target size of one chunk: small enough that a damaged byte costs little, big enough that framing
/// and the writer table each chunk repeats stay negligible.
pub const CHUNK_BYTES: usize = 1 << 20;

/// The state's chunks, a step at a time (None once done): the writer holds one step at a time.
pub(crate) type ChunkSource<'a> = &'a mut dyn FnMut() -> Option<Vec<Vec<u8>>>;

/// Writes (and syncs) snapshot file `name` covering the log up to the record `first_seq` (exclusive),
/// appending each chunk as `next` yields it: the same bytes as [`encode`] of all the chunks at once.
pub(crate) fn write(
    storage: &mut dyn Storage,
    name: &str,
    first_seq: u64,
    next: ChunkSource<'_>,
) -> Result<(), String> {
    let failed = |s: &dyn Storage, e: std::io::Error| format!("write {}: {e}", s.describe(name));
    storage.create(name).map_err(|e| failed(storage, e))?;
    storage.append(name, &frame::file_header(frame::SNAPSHOT_MAGIC, 0)).map_err(|e| failed(storage, e))?;
    let mut record = Vec::new();
    let (mut chunks, mut total) = (0u32, 0u64);
    while let Some(parts) = next() {
        for part in parts {
            if part.len() > frame::MAX_RECORD_BYTES {
                return Err(format!("a snapshot chunk of {} bytes is larger than a record may be", part.len()));
            }
            record.clear();
            frame::encode(&mut record, RecordKind::Chunk, u64::from(chunks), chunks, &part);
            storage.append(name, &record).map_err(|e| failed(storage, e))?;
            chunks += 1;
            total += part.len() as u64;
        }
    }
    record.clear();
    frame::encode(
        &mut record,
        RecordKind::SnapshotEnd,
        u64::from(chunks),
        chunks,
        &end_payload(first_seq, chunks, total),
    );
    storage.append(name, &record).map_err(|e| failed(storage, e))?;
    storage.sync(name).map_err(|e| failed(storage, e))
}

fn end_payload(first_seq: u64, chunks: u32, total: u64) -> [u8; 20] {
    let mut end = [0u8; 20];
    end[..8].copy_from_slice(&first_seq.to_le_bytes());
    end[8..12].copy_from_slice(&chunks.to_le_bytes());
    end[12..].copy_from_slice(&total.to_le_bytes());
    end
}

/// A format-2 snapshot file read record by record. It stops (with why) at the first thing that does not
/// verify; [`read`] of the whole file then tells what can still be salvaged.
pub(crate) struct Stored<'a> {
    storage: &'a mut dyn Storage,
    name: &'a str,
    at: u64,
    chunks: u32,
    total: u64,
    /// The end record, once read and matched.
    pub end: Option<End>,
}

/// What a snapshot read whole to its end record says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct End {
    pub first_seq: u64,
    pub chunks: u32,
    pub state_bytes: u64,
}

impl<'a> Stored<'a> {
    /// Opens `name`; Err when its file header is not a format-2 snapshot's.
    pub fn open(storage: &'a mut dyn Storage, name: &'a str) -> Result<Self, String> {
        let head = storage
            .read_at(name, 0, frame::FILE_HEADER)
            .map_err(|e| format!("read {}: {e}", storage.describe(name)))?;
        if frame::parse_file_header(&head, frame::SNAPSHOT_MAGIC).is_none() {
            return Err("damaged file header".into());
        }
        Ok(Stored { storage, name, at: frame::FILE_HEADER as u64, chunks: 0, total: 0, end: None })
    }

    fn record(&mut self) -> Result<(Header, Vec<u8>), String> {
        let at = self.at;
        let read = |s: &mut dyn Storage, from: u64, len: usize| {
            s.read_at(self.name, from, len).map_err(|e| format!("read {}: {e}", s.describe(self.name)))
        };
        let head = read(self.storage, at, frame::RECORD_HEADER)?;
        let header = frame::parse_header(&head).ok_or_else(|| format!("bytes from {at} do not verify"))?;
        let payload = read(self.storage, at + frame::RECORD_HEADER as u64, header.len)?;
        if payload.len() != header.len || crc32fast::hash(&payload) != header.crc {
            return Err(format!("the record at byte {at} does not verify"));
        }
        self.at += (frame::RECORD_HEADER + header.len) as u64;
        Ok((header, payload))
    }

    /// The next chunk (its byte offset and its state), or None after a verified end record that matches
    /// the chunks read and ends the file (then [`end`](Self::end) holds it).
    pub fn next_chunk(&mut self) -> Result<Option<(u64, Vec<u8>)>, String> {
        let at = self.at;
        let (header, payload) = self.record()?;
        match header.kind {
            RecordKind::Chunk if header.seq == u64::from(self.chunks) => {
                self.chunks += 1;
                self.total += payload.len() as u64;
                Ok(Some((at + frame::RECORD_HEADER as u64, payload)))
            }
            RecordKind::SnapshotEnd if payload.len() == 20 => {
                let end = End {
                    first_seq: u64::from_le_bytes(payload[..8].try_into().expect("8 bytes")),
                    chunks: u32::from_le_bytes(payload[8..12].try_into().expect("4 bytes")),
                    state_bytes: u64::from_le_bytes(payload[12..].try_into().expect("8 bytes")),
                };
                if (end.chunks, end.state_bytes) != (self.chunks, self.total) {
                    return Err(format!("{} of {} chunks present", self.chunks, end.chunks));
                }
                let after = self.storage.read_at(self.name, self.at, 1).map_err(|e| e.to_string())?;
                if !after.is_empty() {
                    return Err(format!("bytes after the end record at {}", self.at));
                }
                self.end = Some(end);
                Ok(None)
            }
            _ => Err(format!("unexpected record at byte {at}")),
        }
    }
}

/// Verifies snapshot file `name` as written, a chunk at a time: complete, covering `first_seq`, and every
/// chunk decodes.
pub(crate) fn verify_stored(
    storage: &mut dyn Storage,
    name: &str,
    first_seq: u64,
    limits: Limits,
) -> Result<(), String> {
    let mut stored = Stored::open(storage, name)?;
    while let Some((at, chunk)) = stored.next_chunk()? {
        codec::check_state(&chunk, limits).map_err(|e| format!("chunk at byte {at}: {e}"))?;
    }
    match stored.end {
        Some(end) if end.first_seq == first_seq => Ok(()),
        end => Err(format!("covers the log up to {:?}, expected {first_seq}", end.map(|e| e.first_seq))),
    }
}

/// Merges an intact format-2 snapshot into `store` a chunk at a time. Returns what its end record says and
/// the bytes merged and chunks the store refused, or None when anything does not verify (the caller then
/// reads it whole: chunks merged here are merged again, which joins make harmless).
pub(crate) fn merge_stored(storage: &mut dyn Storage, name: &str, store: &mut Store) -> Option<(End, u64, u64)> {
    let mut stored = Stored::open(storage, name).ok()?;
    let (mut bytes, mut refused) = (0u64, 0u64);
    while let Some((_, chunk)) = stored.next_chunk().ok()? {
        match store.merge_trusted(&chunk) {
            Ok(()) => bytes += chunk.len() as u64,
            Err(_) => refused += 1,
        }
    }
    Some((stored.end?, bytes, refused))
}

/// Encodes a snapshot of `chunks` covering the log up to the record `first_seq` (exclusive), whole: what
/// [`write`] writes a chunk at a time (kept as the reference the tests compare it with).
#[cfg(test)]
pub(crate) fn encode(chunks: &[Vec<u8>], first_seq: u64) -> Vec<u8> {
    let total: usize = chunks.iter().map(Vec::len).sum();
    let mut out = Vec::with_capacity(total + (chunks.len() + 2) * frame::RECORD_HEADER + 64);
    out.extend_from_slice(&frame::file_header(frame::SNAPSHOT_MAGIC, 0));
    for (i, c) in chunks.iter().enumerate() {
        frame::encode(&mut out, RecordKind::Chunk, i as u64, i as u32, c);
    }
    let n = chunks.len();
    frame::encode(
        &mut out,
        RecordKind::SnapshotEnd,
        n as u64,
        n as u32,
        &end_payload(first_seq, n as u32, total as u64),
    );
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

#[cfg(test)]
mod tests {
    use super::super::storage::FsStorage;
    use super::*;
    use crate::snapshot::StateChunks;
    use crate::value::Value;

    fn storage(name: &str) -> FsStorage {
        let d = std::env::temp_dir().join(format!("drsdtp-snapshot-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        FsStorage::new(&d).unwrap()
    }

    fn store(twins: usize) -> Store {
        let mut s = Store::new(3, 500);
        s.set_manual_time(Some(1_700_000_000_000));
        for t in 0..twins {
            let values: Vec<(String, Value)> =
                (0..10).map(|f| (format!("f{f}"), Value::F64(f64::from(f) + t as f64))).collect();
            s.set_many(&format!("twin-{t}"), values).unwrap();
        }
        s
    }

    /// Writes `s` streamed in chunks of `budget` bytes; returns the chunks as they were yielded.
    fn stream(st: &mut dyn Storage, s: &Store, budget: usize, first: u64) -> Vec<Vec<u8>> {
        let mut cursor = StateChunks::new(budget);
        let mut seen = Vec::new();
        let mut next = || {
            let step = cursor.next(s)?;
            seen.extend(step.iter().cloned());
            Some(step)
        };
        write(st, "snap.tmp", first, &mut next).unwrap();
        seen
    }

    #[test]
    fn a_streamed_snapshot_is_the_format_two_file_and_merges_back_a_chunk_at_a_time() {
        let mut st = storage("stream");
        let s = store(2_000);
        let chunks = stream(&mut st, &s, 16 << 10, 42);
        assert!(chunks.len() > 10 && chunks.iter().all(|c| c.len() <= 16 << 10), "{} chunks", chunks.len());
        // Byte for byte what the whole-file encoder writes: readers of format 2 read it unchanged.
        let file = st.read("snap.tmp").unwrap();
        assert_eq!(file, encode(&chunks, 42));
        assert!(read(&file).complete);
        verify_stored(&mut st, "snap.tmp", 42, s.limits()).unwrap();
        assert!(verify_stored(&mut st, "snap.tmp", 41, s.limits()).unwrap_err().contains("expected 41"));
        let mut back = Store::new(4, 500);
        let (end, bytes, refused) = merge_stored(&mut st, "snap.tmp", &mut back).unwrap();
        assert_eq!((end.first_seq, end.chunks as usize, refused), (42, chunks.len(), 0));
        assert_eq!(bytes, chunks.iter().map(|c| c.len() as u64).sum::<u64>());
        assert_eq!(back.encode_state(None), s.encode_state(None));
    }

    #[test]
    fn a_damaged_or_cut_streamed_snapshot_is_refused_whole_and_salvaged_from_the_file() {
        let mut st = storage("damaged");
        let s = store(500);
        let chunks = stream(&mut st, &s, 8 << 10, 7);
        let good = st.read("snap.tmp").unwrap();
        let r = read(&good);
        // One flipped byte in the second chunk.
        let mut bad = good.clone();
        bad[r.chunks[1].start + 3] ^= 1;
        std::fs::write(st.describe("snap.tmp"), &bad).unwrap();
        assert!(verify_stored(&mut st, "snap.tmp", 7, s.limits()).unwrap_err().contains("does not verify"));
        assert!(merge_stored(&mut st, "snap.tmp", &mut Store::new(4, 500)).is_none());
        assert_eq!(read(&bad).chunks.len(), chunks.len() - 1);
        // Cut mid-chunk, as a crash while writing leaves it: no end record.
        std::fs::write(st.describe("snap.tmp"), &good[..r.chunks[2].start + 10]).unwrap();
        assert!(verify_stored(&mut st, "snap.tmp", 7, s.limits()).is_err());
        assert!(merge_stored(&mut st, "snap.tmp", &mut Store::new(4, 500)).is_none());
        // Bytes after the end record.
        let mut long = good.clone();
        long.push(0);
        std::fs::write(st.describe("snap.tmp"), &long).unwrap();
        assert!(verify_stored(&mut st, "snap.tmp", 7, s.limits()).unwrap_err().contains("after the end record"));
    }

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
