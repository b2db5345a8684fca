//! Durability: a write-ahead log of deltas with group commit, snapshots and log truncation.
//!
//! The host appends each delta (local or merged) with [`Wal::append`], which only buffers; [`Wal::commit`]
//! writes the buffer and fsyncs once for the whole group, so the host batches commits by time and size and
//! acknowledges an update only after the commit that carries it. [`Wal::snapshot`] writes the full state
//! atomically and drops the segments it covers. [`Wal::open`] recovers: newest valid snapshot, then every
//! later record; a torn or corrupt tail is detected by length and CRC, cut, and reported, never trusted.
//!
//! On disk, in one directory: `wal-<seq>.log` segments of records `[0xD7][len u32][crc32 u32][delta]`, and
//! `snap-<seq>.bin` files `["DRSNAP01"][len u64][crc32 u32][state]` covering every segment below `<seq>`.
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::error::{Error, Result};
use crate::store::Store;

const RECORD_MAGIC: u8 = 0xD7;
const RECORD_HEADER: usize = 9;
const SNAPSHOT_MAGIC: &[u8; 8] = b"DRSNAP01";
const SNAPSHOT_HEADER: usize = 20;
/// Largest single record; a length beyond it marks a corrupt header rather than a huge allocation.
pub const MAX_RECORD_BYTES: usize = 256 << 20;

fn io(context: &str, path: &Path) -> impl FnOnce(std::io::Error) -> Error {
    let what = format!("{context} {}", path.display());
    move |e| Error::Storage(format!("{what}: {e}"))
}

fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("wal-{seq:016}.log"))
}

fn snapshot_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("snap-{seq:016}.bin"))
}

fn parse_seq(name: &str, prefix: &str, suffix: &str) -> Option<u64> {
    name.strip_prefix(prefix)?.strip_suffix(suffix)?.parse().ok()
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io("sync directory", dir))
}

/// What recovery found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Sequence number of the snapshot loaded (0: none).
    pub snapshot_seq: u64,
    /// Bytes of the snapshot loaded.
    pub snapshot_bytes: u64,
    /// Records replayed after it.
    pub records: u64,
    /// Bytes of records replayed.
    pub record_bytes: u64,
    /// Bytes cut from a torn or corrupt tail.
    pub truncated_bytes: u64,
    /// Records that failed their CRC or framing (each ends its segment's replay).
    pub corrupt_records: u64,
    /// Records that decoded but the store refused (reported, skipped).
    pub refused_records: u64,
    /// Snapshots skipped because their checksum failed.
    pub corrupt_snapshots: u64,
}

/// Counters for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WalStats {
    /// Records appended since open.
    pub records: u64,
    /// Bytes appended since open (with framing).
    pub bytes: u64,
    /// Group commits (each one fsync).
    pub commits: u64,
    /// Nanoseconds of the last commit's write + fsync.
    pub last_commit_ns: u64,
    /// Snapshots written.
    pub snapshots: u64,
    /// Bytes in the current segment.
    pub segment_bytes: u64,
}

/// The write-ahead log of one store.
#[derive(Debug)]
pub struct Wal {
    dir: PathBuf,
    file: File,
    seq: u64,
    pending: Vec<u8>,
    pending_records: usize,
    stats: WalStats,
    // Set by a failed write or fsync (the segment may now end in a torn record, and after a failed fsync the
    // kernel may have dropped the dirty pages while reporting later fsyncs as clean) and by any failed
    // snapshot (conservatively: only a failure between the rename and the switch to the new segment would
    // leave appends going where recovery skips them). Appending behind either would be unrecoverable, so the
    // log refuses every later commit; reopening cuts the torn tail.
    failed: bool,
}

impl Wal {
    /// Opens (or creates) the log in `dir` and recovers `store` from it: the newest valid snapshot, then every
    /// later record. A torn or corrupt tail of the last segment is truncated; corruption inside an earlier
    /// segment ends that segment's replay (later segments still replay: deltas join in any order).
    pub fn open(dir: &Path, store: &mut Store) -> Result<(Wal, Recovery)> {
        fs::create_dir_all(dir).map_err(io("create", dir))?;
        let mut segments = Vec::new();
        let mut snapshots = Vec::new();
        for entry in fs::read_dir(dir).map_err(io("list", dir))? {
            let name = entry.map_err(io("list", dir))?.file_name().to_string_lossy().into_owned();
            if let Some(s) = parse_seq(&name, "wal-", ".log") {
                segments.push(s);
            } else if let Some(s) = parse_seq(&name, "snap-", ".bin") {
                snapshots.push(s);
            }
        }
        segments.sort_unstable();
        snapshots.sort_unstable();
        let mut rec = Recovery::default();
        for &seq in snapshots.iter().rev() {
            match read_snapshot(&snapshot_path(dir, seq)) {
                Ok(state) => {
                    store.merge_trusted(&state)?;
                    rec.snapshot_seq = seq;
                    rec.snapshot_bytes = state.len() as u64;
                    break;
                }
                Err(_) => rec.corrupt_snapshots += 1,
            }
        }
        let live: Vec<u64> = segments.iter().copied().filter(|&s| s >= rec.snapshot_seq).collect();
        for (i, &seq) in live.iter().enumerate() {
            let last = i + 1 == live.len();
            replay_segment(&segment_path(dir, seq), store, last, &mut rec)?;
        }
        let seq = live.last().copied().unwrap_or(rec.snapshot_seq.max(1));
        let path = segment_path(dir, seq);
        let file = OpenOptions::new().create(true).append(true).open(&path).map_err(io("open", &path))?;
        let segment_bytes = file.metadata().map_err(io("stat", &path))?.len();
        sync_dir(dir)?;
        let stats = WalStats { segment_bytes, ..WalStats::default() };
        Ok((Wal { dir: dir.to_owned(), file, seq, pending: Vec::new(), pending_records: 0, stats, failed: false }, rec))
    }

    /// Frames one delta as a log record into `out` (for hosts that buffer outside the log, so appends never
    /// wait behind an fsync in progress).
    pub fn frame(delta: &[u8], out: &mut Vec<u8>) -> Result<()> {
        if delta.len() > MAX_RECORD_BYTES {
            return Err(Error::Limit(format!("log record of {} bytes", delta.len())));
        }
        out.push(RECORD_MAGIC);
        out.extend_from_slice(&(delta.len() as u32).to_le_bytes());
        out.extend_from_slice(&crc32fast::hash(delta).to_le_bytes());
        out.extend_from_slice(delta);
        Ok(())
    }

    /// Buffers one delta; durable after the next [`commit`](Self::commit).
    pub fn append(&mut self, delta: &[u8]) -> Result<()> {
        Self::frame(delta, &mut self.pending)?;
        self.pending_records += 1;
        Ok(())
    }

    /// Bytes buffered and not yet durable.
    pub fn pending_bytes(&self) -> usize {
        self.pending.len()
    }

    /// Records buffered and not yet durable.
    pub fn pending_records(&self) -> usize {
        self.pending_records
    }

    /// Writes everything buffered and fsyncs once (group commit). Returns the records made durable.
    pub fn commit(&mut self) -> Result<usize> {
        let pending = std::mem::take(&mut self.pending);
        let n = std::mem::take(&mut self.pending_records);
        self.write_framed(&pending, n)?;
        Ok(n)
    }

    /// Writes `records` already framed by [`frame`](Self::frame) and fsyncs once.
    pub fn write_framed(&mut self, framed: &[u8], records: usize) -> Result<()> {
        self.check_usable()?;
        if framed.is_empty() {
            return Ok(());
        }
        let start = Instant::now();
        let path = segment_path(&self.dir, self.seq);
        let written = self.file.write_all(framed).map_err(io("write", &path));
        let synced = written.and_then(|()| self.file.sync_data().map_err(io("fsync", &path)));
        self.failed = synced.is_err();
        synced?;
        self.stats.records += records as u64;
        self.stats.bytes += framed.len() as u64;
        self.stats.segment_bytes += framed.len() as u64;
        self.stats.commits += 1;
        self.stats.last_commit_ns = start.elapsed().as_nanos() as u64;
        Ok(())
    }

    /// Writes `state` (the store's full state, which includes everything logged so far) as a snapshot,
    /// starts a new segment, and deletes the segments and older snapshots it covers (one older snapshot is
    /// kept as a fallback should the newest be damaged later).
    pub fn snapshot(&mut self, state: &[u8]) -> Result<()> {
        self.commit()?;
        // A snapshot that fails halfway may leave the log pointing at a segment recovery would skip.
        let result = self.write_snapshot(state);
        self.failed = result.is_err();
        result
    }

    fn check_usable(&self) -> Result<()> {
        if self.failed {
            return Err(Error::Storage(format!(
                "the write-ahead log in {} failed earlier and accepts no more writes; restart the node to recover",
                self.dir.display()
            )));
        }
        Ok(())
    }

    fn write_snapshot(&mut self, state: &[u8]) -> Result<()> {
        let next = self.seq + 1;
        let path = snapshot_path(&self.dir, next);
        let tmp = path.with_extension("tmp");
        {
            let mut f = File::create(&tmp).map_err(io("create", &tmp))?;
            f.write_all(SNAPSHOT_MAGIC).map_err(io("write", &tmp))?;
            f.write_all(&(state.len() as u64).to_le_bytes()).map_err(io("write", &tmp))?;
            f.write_all(&crc32fast::hash(state).to_le_bytes()).map_err(io("write", &tmp))?;
            f.write_all(state).map_err(io("write", &tmp))?;
            f.sync_all().map_err(io("fsync", &tmp))?;
        }
        fs::rename(&tmp, &path).map_err(io("rename", &tmp))?;
        let seg = segment_path(&self.dir, next);
        self.file = OpenOptions::new().create(true).append(true).open(&seg).map_err(io("open", &seg))?;
        sync_dir(&self.dir)?;
        self.seq = next;
        self.stats.snapshots += 1;
        self.stats.segment_bytes = 0;
        for entry in fs::read_dir(&self.dir).map_err(io("list", &self.dir))?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            // Keep the previous snapshot and the segment after it: the fallback should the newest snapshot
            // be damaged later.
            let stale = parse_seq(&name, "wal-", ".log").is_some_and(|s| s + 1 < next)
                || parse_seq(&name, "snap-", ".bin").is_some_and(|s| s + 1 < next);
            if stale {
                let _ = fs::remove_file(entry.path());
            }
        }
        sync_dir(&self.dir)
    }

    /// Counters.
    pub fn stats(&self) -> WalStats {
        self.stats
    }

    /// The log's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

fn read_snapshot(path: &Path) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    File::open(path).and_then(|mut f| f.read_to_end(&mut buf)).map_err(io("read", path))?;
    let bad = || Error::Storage(format!("snapshot {} is damaged", path.display()));
    if buf.len() < SNAPSHOT_HEADER || &buf[..8] != SNAPSHOT_MAGIC {
        return Err(bad());
    }
    let len = u64::from_le_bytes(buf[8..16].try_into().map_err(|_| bad())?) as usize;
    let crc = u32::from_le_bytes(buf[16..20].try_into().map_err(|_| bad())?);
    let state = buf.get(SNAPSHOT_HEADER..SNAPSHOT_HEADER.saturating_add(len)).ok_or_else(bad)?;
    if crc32fast::hash(state) != crc || buf.len() != SNAPSHOT_HEADER + len {
        return Err(bad());
    }
    Ok(state.to_vec())
}

/// Replays one segment into `store`. Stops at the first record whose framing or CRC fails; in the last
/// segment the file is truncated there (a torn write from a crash), so appends continue after good data.
fn replay_segment(path: &Path, store: &mut Store, last: bool, rec: &mut Recovery) -> Result<()> {
    let mut file = OpenOptions::new().read(true).write(true).open(path).map_err(io("open", path))?;
    let mut buf = Vec::new();
    file.read_to_end(&mut buf).map_err(io("read", path))?;
    let mut at = 0usize;
    let good_end = loop {
        let Some(header) = buf.get(at..at + RECORD_HEADER) else {
            break at;
        };
        let len = u32::from_le_bytes([header[1], header[2], header[3], header[4]]) as usize;
        let crc = u32::from_le_bytes([header[5], header[6], header[7], header[8]]);
        let payload = buf.get(at + RECORD_HEADER..at + RECORD_HEADER + len);
        match payload {
            Some(p) if header[0] == RECORD_MAGIC && len <= MAX_RECORD_BYTES && crc32fast::hash(p) == crc => {
                match store.merge_trusted(p) {
                    Ok(_) => {
                        rec.records += 1;
                        rec.record_bytes += p.len() as u64;
                    }
                    Err(_) => rec.refused_records += 1,
                }
                at += RECORD_HEADER + len;
            }
            Some(_) => {
                rec.corrupt_records += 1;
                break at;
            }
            // A record that runs past the end: torn by a crash mid-write.
            None => break at,
        }
    };
    if good_end < buf.len() {
        if last {
            rec.truncated_bytes += (buf.len() - good_end) as u64;
            file.set_len(good_end as u64).map_err(io("truncate", path))?;
            file.seek(SeekFrom::End(0)).map_err(io("seek", path))?;
            file.sync_all().map_err(io("fsync", path))?;
        } else {
            rec.truncated_bytes += (buf.len() - good_end) as u64;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::Value;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("drsdtp-wal-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    fn store() -> Store {
        let mut s = Store::new(1, 500);
        s.set_manual_time(Some(1_700_000_000_000));
        s
    }

    #[test]
    fn a_failed_write_refuses_every_later_commit_until_reopened() {
        let dir = tmp("failed");
        let mut s = store();
        let (mut wal, _) = Wal::open(&dir, &mut s).unwrap();
        wal.append(&s.set("t", "a", Value::I64(1)).unwrap()).unwrap();
        assert_eq!(wal.commit().unwrap(), 1);
        // The disk goes away under the log: a handle that cannot be written.
        let seg = segment_path(&dir, 1);
        wal.file = File::open(&seg).unwrap();
        wal.append(&s.set("t", "b", Value::I64(2)).unwrap()).unwrap();
        assert!(matches!(wal.commit(), Err(Error::Storage(_))));
        // Even with a good handle back, the log stays shut: it cannot know what the failed write left behind.
        wal.file = OpenOptions::new().append(true).open(&seg).unwrap();
        wal.append(&s.set("t", "c", Value::I64(3)).unwrap()).unwrap();
        let err = wal.commit().unwrap_err().to_string();
        assert!(err.contains("failed earlier"), "{err}");
        assert!(wal.snapshot(&s.encode_state(None)).is_err());
        drop(wal);
        let mut r = store();
        let (mut wal, rec) = Wal::open(&dir, &mut r).unwrap();
        assert_eq!(rec.records, 1);
        wal.append(&r.set("t", "d", Value::I64(4)).unwrap()).unwrap();
        assert_eq!(wal.commit().unwrap(), 1);
    }

    #[test]
    fn committed_records_survive_and_a_torn_tail_is_cut() {
        let dir = tmp("torn");
        let mut s = store();
        let (mut wal, rec) = Wal::open(&dir, &mut s).unwrap();
        assert_eq!(rec, Recovery::default());
        for i in 0..100 {
            wal.append(&s.set("t", &format!("f{i}"), Value::F64(f64::from(i))).unwrap()).unwrap();
        }
        assert_eq!(wal.commit().unwrap(), 100);
        // A crash mid-write: half a record at the end.
        let d = s.set("t", "late", Value::F64(1.0)).unwrap();
        wal.append(&d).unwrap();
        let partial = wal.pending[..wal.pending.len() / 2].to_vec();
        drop(wal);
        let seg = segment_path(&dir, 1);
        OpenOptions::new().append(true).open(&seg).unwrap().write_all(&partial).unwrap();
        let mut r = store();
        let (mut wal, rec) = Wal::open(&dir, &mut r).unwrap();
        assert_eq!(rec.records, 100);
        assert_eq!(rec.truncated_bytes, partial.len() as u64);
        assert_eq!(r.fields("t").unwrap().len(), 100);
        // Appends continue after the good data.
        wal.append(&d).unwrap();
        wal.commit().unwrap();
        let mut again = store();
        let (_, rec) = Wal::open(&dir, &mut again).unwrap();
        assert_eq!((rec.records, rec.truncated_bytes), (101, 0));
    }

    #[test]
    fn a_corrupt_record_ends_replay_and_snapshots_truncate_the_log() {
        let dir = tmp("corrupt");
        let mut s = store();
        let (mut wal, _) = Wal::open(&dir, &mut s).unwrap();
        for i in 0..10 {
            wal.append(&s.set("t", "x", Value::I64(i)).unwrap()).unwrap();
            wal.commit().unwrap();
        }
        wal.snapshot(&s.encode_state(None)).unwrap();
        for i in 10..20 {
            wal.append(&s.set("t", "x", Value::I64(i)).unwrap()).unwrap();
        }
        wal.commit().unwrap();
        wal.snapshot(&s.encode_state(None)).unwrap();
        assert!(!segment_path(&dir, 1).exists(), "two snapshots later the first segment is gone");
        for i in 20..30 {
            wal.append(&s.set("t", "x", Value::I64(i)).unwrap()).unwrap();
        }
        wal.commit().unwrap();
        let seg = segment_path(&dir, 3);
        let mut bytes = fs::read(&seg).unwrap();
        let n = bytes.len();
        bytes[n - 3] ^= 0xFF;
        fs::write(&seg, &bytes).unwrap();
        let mut r = store();
        let (_, rec) = Wal::open(&dir, &mut r).unwrap();
        assert_eq!(rec.snapshot_seq, 3);
        assert_eq!((rec.records, rec.corrupt_records), (9, 1));
        assert_eq!(r.get("t", "x"), Some(crate::FieldValue::Register(Value::I64(28))));
        // A damaged newest snapshot falls back to the previous one and the segments after it.
        let snap = snapshot_path(&dir, 3);
        let mut b = fs::read(&snap).unwrap();
        b[25] ^= 1;
        fs::write(&snap, b).unwrap();
        let mut f = store();
        let (_, rec) = Wal::open(&dir, &mut f).unwrap();
        assert_eq!((rec.snapshot_seq, rec.corrupt_snapshots), (2, 1));
        assert_eq!(f.get("t", "x"), Some(crate::FieldValue::Register(Value::I64(28))));
    }
}
