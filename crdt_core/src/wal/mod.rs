//! Durability: a write-ahead log of deltas with group commit, snapshots and log truncation, and a recovery
//! that never silently drops acknowledged data.
//!
//! The host appends each delta (local or merged) with [`Wal::append`] (and host payloads with
//! [`Wal::append_aux`]), which only buffers; [`Wal::commit`] writes the buffer and fsyncs once for the whole
//! group, so the host batches commits by time and size and acknowledges an update only after the commit that
//! carries it. [`Wal::snapshot`] starts a new segment, writes the full state, verifies it by reading it back,
//! and only then drops the oldest snapshots and the segments no kept snapshot needs.
//!
//! [`Wal::open`] recovers: the newest snapshot that verifies (chunks of damaged ones are merged too, older
//! snapshots fill in the rest), then every later record. A torn tail (crash mid-write) is cut, as before.
//! Damage in the middle of the log costs only the damaged records: recovery resynchronises at the next
//! record that verifies, counts what was lost from the sequence numbers, copies the damaged bytes to the
//! quarantine with a JSON report, and takes a fresh snapshot so the next start is clean — or, with
//! [`OnCorruption::Refuse`], refuses to open, naming the file, offset and damage.
//!
//! On disk, in one directory: `wal-<n>.log` segments, `snap-<n>.bin` snapshots covering every segment below
//! `n`, and `quarantine/`; formats in [`frame`] and `snapshot`. Every I/O goes through [`Storage`] (the
//! filesystem, or a simulated disk in tests).
use std::path::Path;
use std::time::Instant;

use crate::error::{Error, Result};
use crate::snapshot::StateChunks;
use crate::store::{Limits, Store};

pub mod frame;
pub mod quarantine;
mod recover;
mod snapshot;
pub mod storage;

pub use frame::{RecordKind, MAX_RECORD_BYTES};
pub use quarantine::Bounds;
pub use snapshot::CHUNK_BYTES as SNAPSHOT_CHUNK_BYTES;
pub use storage::{FsStorage, Storage};

/// What recovery does when it finds damage that is not a torn tail.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OnCorruption {
    /// Keep the valid records after the damage, quarantine the damaged bytes and report.
    #[default]
    Quarantine,
    /// Do not open; the error names the file, offset and what is damaged.
    Refuse,
}

/// How the log recovers and what it keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// Damage that is not a torn tail: quarantine or refuse.
    pub on_corruption: OnCorruption,
    /// Snapshot generations kept (each with the segments after it), at least 1.
    pub keep_snapshots: usize,
    /// Bounds of the quarantine directory.
    pub quarantine: Bounds,
}

impl Default for Options {
    fn default() -> Self {
        Options { on_corruption: OnCorruption::Quarantine, keep_snapshots: 2, quarantine: Bounds::default() }
    }
}

/// One damaged region of a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// The segment's file name.
    pub file: String,
    /// Where the damage starts.
    pub offset: u64,
    /// Bytes damaged.
    pub length: u64,
    /// What is wrong there.
    pub what: String,
    /// Records known lost here (from the sequence numbers on either side).
    pub records_missing: u64,
    /// Acknowledged data may have been lost here (junk between intact records is not a loss).
    pub loss: bool,
    /// The copy in the quarantine entry.
    pub copy: Option<String>,
}

/// A snapshot recovery could not use whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedSnapshot {
    /// Its file name.
    pub file: String,
    /// Its size.
    pub bytes: u64,
    /// What is wrong with it.
    pub what: String,
    /// Chunks damaged or missing (its other chunks were merged).
    pub chunks_damaged: u64,
    /// The copy in the quarantine entry.
    pub copy: Option<String>,
}

/// What recovery found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Number of the complete snapshot recovery started from (0: none).
    pub snapshot_seq: u64,
    /// Bytes of state loaded from snapshots.
    pub snapshot_bytes: u64,
    /// Records replayed after it (deltas and aux records).
    pub records: u64,
    /// Bytes of records replayed.
    pub record_bytes: u64,
    /// Bytes cut from a torn tail.
    pub truncated_bytes: u64,
    /// Damaged regions in the middle of the log (not torn tails).
    pub corrupt_records: u64,
    /// Records that decoded but the store refused (reported, skipped).
    pub refused_records: u64,
    /// Snapshots rejected (damaged: chunks that verify were still merged).
    pub corrupt_snapshots: u64,
    /// Records known lost in the middle of the log.
    pub records_skipped: u64,
    /// Valid records recovered after the first damage.
    pub records_after_damage: u64,
    /// Bytes copied to the quarantine.
    pub bytes_quarantined: u64,
    /// Acknowledged data may have been lost.
    pub loss_suspected: bool,
    /// Aux records recovered (see [`Wal::take_recovered_aux`]).
    pub aux_records: u64,
    /// Records of a torn final group left out (never acknowledged: their commit did not complete).
    pub unacked_dropped: u64,
    /// Quarantine entries (or their copies) dropped to keep the quarantine within its bounds.
    pub quarantine_dropped: u64,
    /// A snapshot was taken at once because recovery went past damage.
    pub fresh_snapshot: bool,
    /// The quarantine entry written (relative to the log directory).
    pub quarantine: Option<String>,
    /// Damage in the segments.
    pub damage: Vec<Damage>,
    /// Snapshots rejected.
    pub rejected_snapshots: Vec<RejectedSnapshot>,
}

impl Recovery {
    /// Damage that is not a torn tail: quarantined (or refused).
    pub fn found_damage(&self) -> bool {
        !self.damage.is_empty() || !self.rejected_snapshots.is_empty()
    }

    /// One line per problem: file, offset, what.
    pub fn describe(&self) -> String {
        let mut lines: Vec<String> = self
            .rejected_snapshots
            .iter()
            .map(|s| format!("snapshot {}: {} ({} chunks damaged)", s.file, s.what, s.chunks_damaged))
            .collect();
        lines.extend(self.damage.iter().map(|d| {
            format!(
                "{} at byte {} ({} bytes): {}{}",
                d.file,
                d.offset,
                d.length,
                d.what,
                if d.records_missing > 0 { format!("; {} records lost", d.records_missing) } else { String::new() }
            )
        }));
        lines.join("; ")
    }
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
    /// Snapshots written and verified.
    pub snapshots: u64,
    /// Snapshots that failed to write or verify (the older ones were kept).
    pub failed_snapshots: u64,
    /// Bytes in the current segment.
    pub segment_bytes: u64,
}

/// Records waiting for a group commit: kinds and payloads, framed when they are written (so the sequence
/// numbers and group positions are those of the commit that writes them).
#[derive(Debug, Default, Clone)]
pub struct Batch {
    data: Vec<u8>,
    records: Vec<(RecordKind, usize)>,
}

impl Batch {
    /// Adds one record.
    pub fn push(&mut self, kind: RecordKind, payload: &[u8]) -> Result<()> {
        if payload.len() > MAX_RECORD_BYTES {
            return Err(Error::Limit(format!("log record of {} bytes", payload.len())));
        }
        self.data.extend_from_slice(payload);
        self.records.push((kind, payload.len()));
        Ok(())
    }

    /// Records held.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Nothing held.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Bytes once framed.
    pub fn bytes(&self) -> usize {
        self.data.len() + self.records.len() * frame::RECORD_HEADER
    }

    fn iter(&self) -> impl Iterator<Item = (RecordKind, &[u8])> {
        let mut at = 0;
        self.records.iter().map(move |&(kind, len)| {
            at += len;
            (kind, &self.data[at - len..at])
        })
    }
}

fn segment_name(n: u64) -> String {
    format!("wal-{n:016}.log")
}

fn snapshot_name(n: u64) -> String {
    format!("snap-{n:016}.bin")
}

fn parse_n(name: &str, prefix: &str, suffix: &str) -> Option<u64> {
    name.strip_prefix(prefix)?.strip_suffix(suffix)?.parse().ok()
}

/// The write-ahead log of one store.
#[derive(Debug)]
pub struct Wal {
    storage: Box<dyn Storage>,
    options: Options,
    /// The segment appended to.
    seg: u64,
    /// Sequence number of the next record written.
    next_seq: u64,
    pending: Batch,
    scratch: Vec<u8>,
    stats: WalStats,
    // Set by a failed write or fsync (the segment may now end in a torn record, and after a failed fsync the
    // kernel may have dropped the dirty pages while reporting later fsyncs as clean) and by a failed segment
    // switch. Appending behind either would be unrecoverable, so the log refuses every later commit;
    // reopening cuts the torn tail.
    failed: Option<String>,
    /// A segment started by [`begin_snapshot`](Self::begin_snapshot) and the first record it holds.
    snapshot_base: Option<(u64, u64)>,
    /// Snapshots rejected at open (quarantined): dropped by the next snapshot's clean-up.
    bad_snapshots: Vec<u64>,
    limits: Limits,
    recovered_aux: Vec<Vec<u8>>,
    last_snapshot_error: Option<String>,
}

impl Wal {
    /// Opens (or creates) the log in `dir` on the filesystem with the default [`Options`] and recovers `store`.
    pub fn open(dir: &Path, store: &mut Store) -> Result<(Wal, Recovery)> {
        Wal::open_with(Box::new(Wal::fs(dir)?), store, Options::default())
    }

    /// The filesystem storage of a log directory.
    pub fn fs(dir: &Path) -> Result<FsStorage> {
        FsStorage::new(dir).map_err(|e| Error::Storage(format!("create {}: {e}", dir.display())))
    }

    /// Opens the log on `storage` and recovers `store` from it (see the module documentation). On error the
    /// store may hold part of the log.
    pub fn open_with(mut storage: Box<dyn Storage>, store: &mut Store, options: Options) -> Result<(Wal, Recovery)> {
        let names = list(storage.as_mut(), "")?;
        for name in names.iter().filter(|n| n.ends_with(".tmp")) {
            let _ = storage.remove(name); // a snapshot that never got renamed into place
        }
        let mut segments: Vec<u64> = names.iter().filter_map(|n| parse_n(n, "wal-", ".log")).collect();
        let mut snapshots: Vec<u64> = names.iter().filter_map(|n| parse_n(n, "snap-", ".bin")).collect();
        segments.sort_unstable();
        snapshots.sort_unstable();

        // Snapshots, newest first, until one is complete; the verified chunks of damaged ones are merged too
        // (joins are idempotent: an older state under a newer one changes nothing).
        let mut rec = Recovery::default();
        let mut copies = Vec::new();
        let mut bad = Vec::new();
        let mut base: Option<(u64, Option<u64>)> = None;
        let mut highest_first = 0u64;
        for &n in snapshots.iter().rev() {
            let name = snapshot_name(n);
            // An intact snapshot is merged a chunk at a time; only a damaged one is read whole, to salvage it.
            if let Some((end, bytes, refused)) = snapshot::merge_stored(storage.as_mut(), &name, store) {
                rec.snapshot_bytes += bytes;
                rec.refused_records += refused;
                highest_first = highest_first.max(end.first_seq);
                base = Some((n, Some(end.first_seq)));
                break;
            }
            let bytes = read(storage.as_mut(), &name)?;
            let read = snapshot::read(&bytes);
            for c in &read.chunks {
                match store.merge_trusted(&bytes[c.clone()]) {
                    Ok(()) => rec.snapshot_bytes += c.len() as u64,
                    Err(_) => rec.refused_records += 1,
                }
            }
            highest_first = highest_first.max(read.first_seq.unwrap_or(0));
            if read.complete {
                base = Some((n, read.first_seq));
                break;
            }
            rec.corrupt_snapshots += 1;
            rec.rejected_snapshots.push(RejectedSnapshot {
                file: name.clone(),
                bytes: bytes.len() as u64,
                what: read.problem,
                chunks_damaged: read.damaged_chunks,
                copy: None,
            });
            copies.push((
                quarantine::Copy { name, bytes },
                quarantine::Target::Snapshot(rec.rejected_snapshots.len() - 1),
            ));
            bad.push(n);
        }
        let from = base.map_or(0, |(n, _)| n);
        rec.snapshot_seq = from;
        let live: Vec<u64> = segments.iter().copied().filter(|&s| s >= from).collect();
        // Without a complete snapshot the state before the oldest segment is only in damaged snapshots.
        let history_gap = base.is_none() && !bad.is_empty() && live.first() != Some(&1);

        let mut replay = recover::Replay::new(store, rec, base.and_then(|(_, first)| first).map(|f| f - 1));
        let mut last_bytes = Vec::new();
        for (i, &n) in live.iter().enumerate() {
            let name = segment_name(n);
            let bytes = read(storage.as_mut(), &name)?;
            replay.segment(&name, &bytes, i + 1 == live.len());
            last_bytes = bytes;
        }
        let regions: Vec<recover::Region> = replay.regions.iter().filter(|r| !r.torn).cloned().collect();
        let mut rec = std::mem::take(&mut replay.rec);
        rec.damage = replay.damage();
        rec.corrupt_records = rec.damage.len() as u64;
        rec.records_skipped = rec.damage.iter().filter(|d| d.loss).map(|d| d.records_missing).sum();
        rec.records_after_damage = replay.records_after_damage();
        // A rejected snapshot covered records up to its first record: the log must reach that far.
        let short = replay.last.is_some_and(|l| l + 1 < highest_first);
        rec.loss_suspected = history_gap || short || rec.damage.iter().any(|d| d.loss);
        let last_seen = replay.last.unwrap_or(0);
        let (cut, appendable, final_group) = (replay.cut, replay.appendable, replay.final_group.clone());
        let aux = std::mem::take(&mut replay.aux);
        drop(replay);

        if rec.found_damage() && options.on_corruption == OnCorruption::Refuse {
            return Err(Error::Storage(format!(
                "the write-ahead log in {} is damaged and wal.on_corruption = \"refuse\": {}{}",
                storage.describe(""),
                rec.describe(),
                if rec.loss_suspected { " (acknowledged data may be lost)" } else { "" }
            )));
        }
        if let Some(&n) = live.last() {
            let name = segment_name(n);
            if let Some(cut) = cut.filter(|&c| c < last_bytes.len()) {
                storage.truncate(&name, cut as u64).map_err(io("truncate", storage.as_ref(), &name))?;
            }
            // The final group (or, in a segment without records, its header) was read as it is, possibly from
            // the page cache only: after a failed fsync the kernel may drop those pages and report later fsyncs
            // clean. Writing it again makes what recovery trusted durable before anything is appended after it,
            // and the directory sync makes the segment's own name durable.
            let kept = cut.unwrap_or(last_bytes.len());
            let header_only = appendable && kept == frame::FILE_HEADER;
            let rewrite = final_group.or_else(|| header_only.then_some(0..frame::FILE_HEADER));
            if let Some(group) = rewrite {
                let s = &mut storage;
                s.truncate(&name, group.start as u64)
                    .and_then(|()| s.append(&name, &last_bytes[group.clone()]))
                    .and_then(|()| s.sync(&name))
                    .and_then(|()| s.sync_dir(""))
                    .map_err(io("rewrite the last group of", storage.as_ref(), &name))?;
            }
        }
        if rec.found_damage() {
            for (i, d) in rec.damage.iter().enumerate() {
                if d.length > 0 {
                    let r = &regions[i];
                    let bytes = read(storage.as_mut(), &r.file)?;
                    let region = bytes.get(r.at..r.end).unwrap_or_default().to_vec();
                    let name = format!("{}@{}+{}.bin", r.file, r.at, r.end - r.at);
                    copies.push((quarantine::Copy { name, bytes: region }, quarantine::Target::Damage(i)));
                }
            }
            quarantine::write_entry(storage.as_mut(), &mut rec, copies, options.quarantine, "quarantine")
                .map_err(io("write the quarantine", storage.as_ref(), quarantine::DIR))?;
        }

        let next_seq = (last_seen + 1).max(highest_first).max(1);
        let mut wal = Wal {
            storage,
            options,
            seg: live.last().copied().unwrap_or(from.max(1)),
            next_seq,
            pending: Batch::default(),
            scratch: Vec::new(),
            stats: WalStats::default(),
            failed: None,
            snapshot_base: None,
            bad_snapshots: bad,
            limits: store.limits(),
            recovered_aux: aux,
            last_snapshot_error: None,
        };
        if appendable && cut != Some(0) {
            wal.stats.segment_bytes = cut.unwrap_or(last_bytes.len()) as u64;
        } else {
            // No segment yet, a format-1 one, or one whose header never became durable: start a new one.
            let n = match live.last() {
                Some(&n) if cut == Some(0) => n,
                Some(&n) => n + 1,
                None => from.max(1),
            };
            wal.start_segment(n)?;
        }
        if rec.found_damage() {
            // The damaged segment is no longer needed once the state is in a snapshot: the next start is clean.
            // Aux records recovered from it are carried into the new segment first.
            wal.begin_snapshot()?;
            for a in wal.recovered_aux.clone() {
                wal.append_aux(&a)?;
            }
            rec.fresh_snapshot = wal.snapshot(store)?;
        }
        Ok((wal, rec))
    }

    /// Buffers one delta; durable after the next [`commit`](Self::commit). Returns its sequence number.
    pub fn append(&mut self, delta: &[u8]) -> Result<u64> {
        self.pending.push(RecordKind::Delta, delta)?;
        Ok(self.next_seq + self.pending.len() as u64 - 1)
    }

    /// Buffers one host payload, durable with the same group commit as deltas; recovery hands it back in log
    /// order ([`take_recovered_aux`](Self::take_recovered_aux)) instead of merging it.
    pub fn append_aux(&mut self, payload: &[u8]) -> Result<u64> {
        self.pending.push(RecordKind::Aux, payload)?;
        Ok(self.next_seq + self.pending.len() as u64 - 1)
    }

    /// The aux records recovery found, in log order (once; later calls return nothing).
    pub fn take_recovered_aux(&mut self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.recovered_aux)
    }

    /// Sequence number the next record written gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Bytes buffered and not yet durable.
    pub fn pending_bytes(&self) -> usize {
        self.pending.bytes()
    }

    /// Records buffered and not yet durable.
    pub fn pending_records(&self) -> usize {
        self.pending.len()
    }

    /// Writes everything buffered and fsyncs once (group commit). Returns the records made durable.
    pub fn commit(&mut self) -> Result<usize> {
        let batch = std::mem::take(&mut self.pending);
        self.write_batch(&batch)?;
        Ok(batch.len())
    }

    /// Writes `batch` as one group and fsyncs once (for hosts that buffer outside the log, so appends never
    /// wait behind an fsync in progress). Its records get the next sequence numbers, in order.
    pub fn write_batch(&mut self, batch: &Batch) -> Result<()> {
        self.check_usable()?;
        if batch.is_empty() {
            return Ok(());
        }
        let start = Instant::now();
        self.scratch.clear();
        for (i, (kind, payload)) in batch.iter().enumerate() {
            frame::encode(&mut self.scratch, kind, self.next_seq + i as u64, i as u32, payload);
        }
        let name = segment_name(self.seg);
        let written = self.storage.append(&name, &self.scratch).and_then(|()| self.storage.sync(&name));
        if let Err(e) = written {
            return Err(self.fail(format!("write or fsync {}: {e}", self.storage.describe(&name))));
        }
        self.next_seq += batch.len() as u64;
        self.stats.records += batch.len() as u64;
        self.stats.bytes += self.scratch.len() as u64;
        self.stats.segment_bytes += self.scratch.len() as u64;
        self.stats.commits += 1;
        self.stats.last_commit_ns = start.elapsed().as_nanos() as u64;
        Ok(())
    }

    /// Commits, then starts a new segment: records appended from here on survive the snapshot that follows
    /// (which covers only the segments before this one). A host with its own side log makes it durable
    /// between this call and [`snapshot`](Self::snapshot). Calling it again before the snapshot does nothing.
    pub fn begin_snapshot(&mut self) -> Result<()> {
        self.commit()?;
        if self.snapshot_base.is_none() {
            self.start_segment(self.seg + 1)?;
            self.snapshot_base = Some((self.seg, self.next_seq));
        }
        Ok(())
    }

    /// Snapshots `store`, streamed to disk a chunk at a time (see [`snapshot_from`](Self::snapshot_from)).
    pub fn snapshot(&mut self, store: &Store) -> Result<bool> {
        let mut cursor = StateChunks::new(SNAPSHOT_CHUNK_BYTES);
        self.snapshot_from(&mut || cursor.next(store))
    }

    /// Snapshots the chunks `encode` returns at once (see [`snapshot_from`](Self::snapshot_from)).
    pub fn snapshot_with(&mut self, encode: impl FnOnce() -> Vec<Vec<u8>>) -> Result<bool> {
        let mut once = Some(encode);
        self.snapshot_from(&mut || once.take().map(|f| f()))
    }

    /// Begins a snapshot unless one was begun, commits, then writes the state a step at a time as `next`
    /// yields it (None once done; every step must include everything appended before the snapshot began,
    /// which a store that only grows does, however much it changed since: see [`crate::snapshot`]). Memory
    /// stays at one step. It then verifies the file by reading it back a chunk at a time, and only then
    /// removes the snapshots and segments beyond `keep_snapshots` generations. Returns false (counted in
    /// `failed_snapshots`, older snapshots kept, the log still usable) when the snapshot could not be
    /// written or did not verify; an error only when the log itself failed.
    pub fn snapshot_from(&mut self, next: &mut dyn FnMut() -> Option<Vec<Vec<u8>>>) -> Result<bool> {
        self.begin_snapshot()?;
        let (n, first) = self.snapshot_base.take().expect("begun above");
        match self.install_snapshot(n, first, next) {
            Ok(()) => {
                self.stats.snapshots += 1;
                self.last_snapshot_error = None;
                self.clean_up();
                Ok(true)
            }
            Err(why) => {
                self.stats.failed_snapshots += 1;
                self.last_snapshot_error = Some(why);
                Ok(false)
            }
        }
    }

    /// Why the last snapshot failed (None once one succeeds).
    pub fn last_snapshot_error(&self) -> Option<&str> {
        self.last_snapshot_error.as_deref()
    }

    /// Commits and appends a `Close` record: the next open knows everything before it was durable, so even
    /// damage in the last group of data is reported rather than taken for a torn write. The log accepts
    /// nothing after it.
    pub fn close(&mut self) -> Result<()> {
        let mut batch = std::mem::take(&mut self.pending);
        batch.push(RecordKind::Close, &[])?;
        self.write_batch(&batch)?;
        self.failed = Some("the write-ahead log is closed".into());
        Ok(())
    }

    /// Counters.
    pub fn stats(&self) -> WalStats {
        self.stats
    }

    /// The log's directory (or what the storage calls it).
    pub fn location(&self) -> String {
        self.storage.describe("")
    }

    fn check_usable(&self) -> Result<()> {
        match &self.failed {
            None => Ok(()),
            Some(why) => Err(Error::Storage(format!(
                "the write-ahead log in {} failed earlier and accepts no more writes ({why}); restart the node to \
                 recover",
                self.storage.describe("")
            ))),
        }
    }

    fn fail(&mut self, why: String) -> Error {
        self.failed = Some(why.clone());
        Error::Storage(why)
    }

    /// Creates segment `n` (header durable, directory entry too) and appends there from now on.
    fn start_segment(&mut self, n: u64) -> Result<()> {
        self.check_usable()?;
        let name = segment_name(n);
        let header = frame::file_header(frame::SEGMENT_MAGIC, self.next_seq);
        let s = &mut self.storage;
        let created = s
            .create(&name)
            .and_then(|()| s.append(&name, &header))
            .and_then(|()| s.sync(&name))
            .and_then(|()| s.sync_dir(""));
        if let Err(e) = created {
            return Err(self.fail(format!("start segment {}: {e}", self.storage.describe(&name))));
        }
        self.seg = n;
        self.stats.segment_bytes = header.len() as u64;
        Ok(())
    }

    /// Writes, syncs, reads back and verifies snapshot `n` (a chunk at a time), then renames it into place.
    /// A crash before the rename leaves a `.tmp` file that the next open removes.
    fn install_snapshot(
        &mut self,
        n: u64,
        first: u64,
        next: &mut dyn FnMut() -> Option<Vec<Vec<u8>>>,
    ) -> std::result::Result<(), String> {
        let name = snapshot_name(n);
        let tmp = format!("{name}.tmp");
        let s = self.storage.as_mut();
        let written = snapshot::write(s, &tmp, first, next)
            .and_then(|()| {
                snapshot::verify_stored(s, &tmp, first, self.limits)
                    .map_err(|why| format!("{} did not verify: {why}", s.describe(&tmp)))
            })
            .and_then(|()| s.rename(&tmp, &name).map_err(|e| format!("rename {}: {e}", s.describe(&tmp))))
            .and_then(|()| s.sync_dir("").map_err(|e| format!("sync {}: {e}", s.describe(""))));
        if written.is_err() {
            let _ = s.remove(&tmp);
        }
        written
    }

    /// Keeps the newest `keep_snapshots` good snapshots and the segments from the oldest of them on.
    /// Failures are ignored: what is left over is removed next time.
    fn clean_up(&mut self) {
        let Ok(names) = self.storage.list("") else { return };
        let mut snaps: Vec<u64> = names
            .iter()
            .filter_map(|n| parse_n(n, "snap-", ".bin"))
            .filter(|n| !self.bad_snapshots.contains(n))
            .collect();
        snaps.sort_unstable_by(|a, b| b.cmp(a));
        snaps.truncate(self.options.keep_snapshots.max(1));
        let Some(&oldest) = snaps.last() else { return };
        for name in &names {
            let stale = parse_n(name, "wal-", ".log").is_some_and(|s| s < oldest)
                || parse_n(name, "snap-", ".bin").is_some_and(|s| !snaps.contains(&s));
            if stale {
                let _ = self.storage.remove(name);
            }
        }
        self.bad_snapshots.clear();
        let _ = self.storage.sync_dir("");
    }
}

fn io<'a>(what: &'a str, storage: &'a dyn Storage, name: &'a str) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |e| Error::Storage(format!("{what} {}: {e}", storage.describe(name)))
}

fn read(storage: &mut dyn Storage, name: &str) -> Result<Vec<u8>> {
    storage.read(name).map_err(|e| Error::Storage(format!("read {}: {e}", storage.describe(name))))
}

fn list(storage: &mut dyn Storage, dir: &str) -> Result<Vec<String>> {
    storage.list(dir).map_err(|e| Error::Storage(format!("list {}: {e}", storage.describe(dir))))
}

#[cfg(test)]
mod tests;
