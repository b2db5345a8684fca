//! Replay of the log's segments into the store, telling a torn tail from damage in the middle.
//!
//! Records carry their sequence number and their position in their group commit. A group is written and
//! fsynced before the next one starts, and a segment is complete before the next segment is created, so
//! only the last group of the last segment can hold unsynced bytes after a crash. Hence:
//! - damage in that final group (a hole, even with valid records of the same group after it, as a reordered
//!   write leaves) or after it is a torn write: cut there, not a loss (nothing in it was acknowledged);
//! - damage anywhere else is damage to synced data: the records after it are kept, the sequence numbers on
//!   either side say exactly how many records were lost (none: only junk bytes), and the bytes are
//!   quarantined. A clean close appends a `Close` record, so after one even the last data group is checked.
//!
//! Records are applied to the store group by group, once a later group shows the group is not the final one
//! (or the final group is settled), so a record recovery cuts is never half-applied.
use std::ops::Range;

use super::frame::{self, Header, Item, ItemV1, RecordKind};
use super::{Damage, Recovery};
use crate::store::Store;

/// A damaged region while replay is under way.
#[derive(Debug, Clone)]
pub(crate) struct Region {
    pub file: String,
    pub at: usize,
    pub end: usize,
    pub what: String,
    pub missing: u64,
    pub loss: bool,
    pub torn: bool,
}

#[derive(Debug)]
struct Held {
    kind: RecordKind,
    seq: u64,
    at: usize,
    payload: Range<usize>,
    regions_before: usize,
}

/// Replay state across segments.
pub(crate) struct Replay<'s> {
    store: &'s mut Store,
    pub rec: Recovery,
    /// Sequence number of the last record seen (None: unknown, e.g. after format-1 records).
    pub last: Option<u64>,
    held: Vec<Held>,
    /// Settled records of the current segment, applied when it ends.
    ready: Vec<Held>,
    held_group: u64,
    hole: Option<usize>,
    pending: Vec<usize>,
    pub regions: Vec<Region>,
    /// Applied records counted by how many regions preceded them (for "recovered after the damage").
    after: Vec<u64>,
    pub aux: Vec<Vec<u8>>,
    /// Where to cut the last segment (bytes to keep), when its tail is torn.
    pub cut: Option<usize>,
    /// The last segment replayed is format 2 with a good header: appends may continue in it.
    pub appendable: bool,
    /// Bytes of the last segment holding its final group (the records kept of it).
    pub final_group: Option<Range<usize>>,
}

impl<'s> Replay<'s> {
    pub fn new(store: &'s mut Store, rec: Recovery, last: Option<u64>) -> Replay<'s> {
        Replay {
            store,
            rec,
            last,
            held: Vec::new(),
            ready: Vec::new(),
            held_group: 0,
            hole: None,
            pending: Vec::new(),
            regions: Vec::new(),
            after: Vec::new(),
            aux: Vec::new(),
            cut: None,
            appendable: false,
            final_group: None,
        }
    }

    fn region(&mut self, file: &str, at: usize, end: usize, what: String) -> usize {
        self.regions.push(Region { file: file.to_owned(), at, end, what, missing: 0, loss: false, torn: false });
        let i = self.regions.len() - 1;
        self.pending.push(i);
        i
    }

    /// Replays one segment file (format 2 or 1); `last_segment` settles its final group and torn tail.
    pub fn segment(&mut self, name: &str, b: &[u8], last_segment: bool) {
        self.cut = None;
        self.appendable = false;
        let first = frame::parse_file_header(b, frame::SEGMENT_MAGIC);
        match first {
            Some(first) => {
                self.appendable = true;
                self.segment_start(name, first);
            }
            None if looks_v1(b) => return self.segment_v1(name, b, last_segment),
            None if last_segment && b.len() < frame::FILE_HEADER => {
                // Created by a crash before its header was durable: it holds nothing.
                self.cut = Some(0);
                return self.finish(name, b, true);
            }
            None => {
                self.region(name, 0, frame::FILE_HEADER.min(b.len()), "damaged segment header".into());
            }
        }
        for item in frame::Scanner::new(b, frame::FILE_HEADER.min(b.len())) {
            match item {
                Item::Record { at, end, header } => self.record(name, at, at + frame::RECORD_HEADER..end, header),
                Item::BadPayload { at, end, header } => {
                    let what = format!("record {} ({:?}) fails its payload CRC", header.seq, header.kind);
                    self.region(name, at, end, what);
                }
                Item::Garbage { at, end } => {
                    self.region(name, at, end, "bytes that hold no verifiable record".into());
                }
                Item::Cut { at, end, header } => {
                    self.region(name, at, end, format!("record {} cut short", header.seq));
                }
            }
        }
        self.finish(name, b, last_segment);
    }

    /// A segment's header names its first record: records between the last one seen and it are missing.
    fn segment_start(&mut self, name: &str, first: u64) {
        match self.last {
            Some(l) if first > l + 1 => {
                let r = self.pending.first().copied().unwrap_or_else(|| {
                    self.region(name, 0, 0, format!("records {}..{} missing before this segment", l + 1, first - 1))
                });
                self.regions[r].missing += first - l - 1;
                self.regions[r].loss = true;
            }
            Some(_) => {}
            // Damage at the end of a format-1 segment: how many records it cost is unknown.
            None => self.pending.iter().for_each(|&p| self.regions[p].loss = true),
        }
        self.pending.clear();
        self.last = Some(first.saturating_sub(1));
    }

    fn record(&mut self, name: &str, at: usize, payload: Range<usize>, h: Header) {
        if matches!(h.kind, RecordKind::Chunk | RecordKind::SnapshotEnd) {
            self.region(name, at, payload.end, format!("unexpected {:?} record in a segment", h.kind));
            return;
        }
        let group = h.group();
        if !self.held.is_empty() && group != self.held_group {
            self.settle(false);
        }
        if let Some(l) = self.last {
            if h.seq <= l {
                self.region(name, at, payload.end, format!("record {} repeats an earlier sequence number", h.seq));
                return;
            }
            let expected = l + 1;
            if h.seq > expected {
                let missing = h.seq - expected;
                let earlier = group.saturating_sub(expected).min(missing);
                let r = self.pending.first().copied().unwrap_or_else(|| {
                    self.region(name, at, at, format!("records {}..{} missing", expected, h.seq - 1))
                });
                self.regions[r].missing += missing;
                if earlier > 0 {
                    self.regions[r].loss = true;
                } else if self.hole.is_none() {
                    // Records of this record's own group are missing: a torn final group, or a loss once a
                    // later group shows this one was synced.
                    self.hole = Some(r);
                }
            }
        }
        if self.held.is_empty() {
            self.held_group = group;
        }
        self.pending.clear();
        self.held.push(Held { kind: h.kind, seq: h.seq, at, payload, regions_before: self.regions.len() });
        self.last = Some(h.seq);
    }

    /// Settles the held group. As the log's final group a hole in it is torn (cut there); otherwise the
    /// group was synced and the hole is a loss. The held records are applied at the end of their segment.
    fn settle(&mut self, last: bool) {
        if last {
            self.final_group = None;
        }
        if let Some(h) = self.hole.take() {
            if last {
                let cut = self.regions[h].at;
                let keep = self.held.iter().take_while(|r| r.at < cut).count();
                self.rec.unacked_dropped += (self.held.len() - keep) as u64;
                self.held.truncate(keep);
                self.cut = Some(cut);
                // Numbering continues after the last record kept (the ones cut were never durable).
                self.last = Some(self.held.last().map_or(self.held_group.saturating_sub(1), |r| r.seq));
            } else {
                self.regions[h].loss = true;
            }
        }
        if let (true, Some(first), Some(end)) = (last, self.held.first(), self.held.last()) {
            self.final_group = Some(first.at..end.payload.end);
        }
        self.ready.append(&mut self.held);
    }

    /// End of a segment: settle its last group, classify what follows the last record, apply the records.
    fn finish(&mut self, name: &str, b: &[u8], last_segment: bool) {
        if last_segment {
            // Damage after the last record of the last segment: a torn tail. Damage left over from an
            // earlier segment was synced (a segment is complete before the next one is created): a loss of
            // unknown size.
            let (torn, earlier): (Vec<usize>, Vec<usize>) =
                self.pending.drain(..).partition(|&p| self.regions[p].file == name);
            earlier.into_iter().for_each(|p| self.regions[p].loss = true);
            if let Some(&first) = torn.first() {
                let at = self.regions[first].at;
                self.cut = Some(self.cut.map_or(at, |c| c.min(at)));
            }
            self.settle(true);
            if let Some(cut) = self.cut {
                for r in self.regions.iter_mut().filter(|r| r.file == name && r.at >= cut) {
                    r.torn = true;
                    r.loss = false;
                }
                self.rec.truncated_bytes += (b.len() - cut) as u64;
            }
        } else {
            self.settle(false);
        }
        for r in std::mem::take(&mut self.ready) {
            self.apply(b, &r);
        }
    }

    fn apply(&mut self, b: &[u8], r: &Held) {
        let payload = &b[r.payload.clone()];
        match r.kind {
            RecordKind::Delta => match self.store.merge_trusted(payload) {
                Ok(()) => {
                    self.rec.records += 1;
                    self.rec.record_bytes += payload.len() as u64;
                }
                Err(_) => self.rec.refused_records += 1,
            },
            RecordKind::Aux => {
                self.rec.records += 1;
                self.rec.aux_records += 1;
                self.rec.record_bytes += payload.len() as u64;
                self.aux.push(payload.to_vec());
            }
            _ => return,
        }
        if r.regions_before > 0 {
            if self.after.len() < r.regions_before {
                self.after.resize(r.regions_before, 0);
            }
            self.after[r.regions_before - 1] += 1;
        }
    }

    fn segment_v1(&mut self, name: &str, b: &[u8], last_segment: bool) {
        for item in frame::scan_v1(b) {
            match item {
                ItemV1::Record { at, end } => {
                    // Format 1 has no sequence numbers: damage followed by good records may have cost any
                    // number of records.
                    self.pending.drain(..).for_each(|p| self.regions[p].loss = true);
                    let r = Held {
                        kind: RecordKind::Delta,
                        seq: 0,
                        at,
                        payload: frame::v1_payload_range(at, end),
                        regions_before: self.regions.len(),
                    };
                    self.apply(b, &r);
                    self.last = None;
                }
                ItemV1::Garbage { at, end } => {
                    self.region(name, at, end, "format-1 bytes that hold no verifiable record".into());
                }
            }
        }
        if last_segment {
            if let Some(&first) = self.pending.first() {
                let at = self.regions[first].at;
                self.pending.drain(..).for_each(|p| self.regions[p].torn = true);
                self.cut = Some(at);
                self.rec.truncated_bytes += (b.len() - at) as u64;
            }
        }
    }

    /// Records recovered after the first damage that is not a torn tail.
    pub fn records_after_damage(&self) -> u64 {
        let Some(first) = self.regions.iter().position(|r| !r.torn) else { return 0 };
        self.after.iter().skip(first).sum()
    }

    /// The damage found, torn tails left out.
    pub fn damage(&self) -> Vec<Damage> {
        self.regions
            .iter()
            .filter(|r| !r.torn)
            .map(|r| Damage {
                file: r.file.clone(),
                offset: r.at as u64,
                length: (r.end - r.at) as u64,
                what: r.what.clone(),
                records_missing: r.missing,
                loss: r.loss,
                copy: None,
            })
            .collect()
    }
}

/// A file without a format-2 header is format 1 if it is empty or starts like a format-1 record (a
/// format-2 segment starts with its header's magic, never with a record).
fn looks_v1(b: &[u8]) -> bool {
    b.first().is_none_or(|&x| x == 0xD7)
}
