use std::fs;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::*;
use crate::value::Value;
use crate::FieldValue;

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

/// The filesystem, with fsyncs that fail on cue.
#[derive(Debug)]
struct Flaky {
    fs: FsStorage,
    fail: Arc<AtomicBool>,
}

impl Storage for Flaky {
    fn list(&mut self, dir: &str) -> std::io::Result<Vec<String>> {
        self.fs.list(dir)
    }
    fn read(&mut self, name: &str) -> std::io::Result<Vec<u8>> {
        self.fs.read(name)
    }
    fn create(&mut self, name: &str) -> std::io::Result<()> {
        self.fs.create(name)
    }
    fn append(&mut self, name: &str, data: &[u8]) -> std::io::Result<()> {
        self.fs.append(name, data)
    }
    fn sync(&mut self, name: &str) -> std::io::Result<()> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(std::io::Error::from_raw_os_error(5));
        }
        self.fs.sync(name)
    }
    fn truncate(&mut self, name: &str, len: u64) -> std::io::Result<()> {
        self.fs.truncate(name, len)
    }
    fn rename(&mut self, from: &str, to: &str) -> std::io::Result<()> {
        self.fs.rename(from, to)
    }
    fn remove(&mut self, name: &str) -> std::io::Result<()> {
        self.fs.remove(name)
    }
    fn create_dir(&mut self, dir: &str) -> std::io::Result<()> {
        self.fs.create_dir(dir)
    }
    fn remove_dir(&mut self, dir: &str) -> std::io::Result<()> {
        self.fs.remove_dir(dir)
    }
    fn sync_dir(&mut self, dir: &str) -> std::io::Result<()> {
        self.fs.sync_dir(dir)
    }
    fn describe(&self, name: &str) -> String {
        self.fs.describe(name)
    }
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    v.sort();
    v
}

fn quarantine_entries(dir: &Path) -> Vec<PathBuf> {
    let q = dir.join(quarantine::DIR);
    let mut v: Vec<PathBuf> = fs::read_dir(q).map(|r| r.flatten().map(|e| e.path()).collect()).unwrap_or_default();
    v.sort();
    v
}

/// `n` single-record groups setting `t.x` to 0..n, each committed.
fn write_groups(wal: &mut Wal, s: &mut Store, range: std::ops::Range<i64>) {
    for i in range {
        wal.append(&s.set("t", &format!("f{i}"), Value::I64(i)).unwrap()).unwrap();
        wal.commit().unwrap();
    }
}

#[test]
fn a_failed_fsync_refuses_every_later_commit_until_reopened() {
    let dir = tmp("failed");
    let fail = Arc::new(AtomicBool::new(false));
    let flaky = Flaky { fs: Wal::fs(&dir).unwrap(), fail: fail.clone() };
    let mut s = store();
    let (mut wal, _) = Wal::open_with(Box::new(flaky), &mut s, Options::default()).unwrap();
    wal.append(&s.set("t", "a", Value::I64(1)).unwrap()).unwrap();
    assert_eq!(wal.commit().unwrap(), 1);
    fail.store(true, Ordering::SeqCst);
    wal.append(&s.set("t", "b", Value::I64(2)).unwrap()).unwrap();
    assert!(matches!(wal.commit(), Err(Error::Storage(_))));
    // Even with the disk back, the log stays shut: it cannot know what the failed fsync left behind.
    fail.store(false, Ordering::SeqCst);
    wal.append(&s.set("t", "c", Value::I64(3)).unwrap()).unwrap();
    let err = wal.commit().unwrap_err().to_string();
    assert!(err.contains("failed earlier"), "{err}");
    assert!(wal.snapshot(&s).is_err());
    drop(wal);
    let mut r = store();
    let (mut wal, rec) = Wal::open(&dir, &mut r).unwrap();
    assert!(rec.records >= 1 && !rec.found_damage(), "{rec:?}");
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
    // A crash mid-write: half a group at the end.
    let seg = segments(&dir).pop().unwrap();
    let good = fs::metadata(&seg).unwrap().len();
    let mut torn = Vec::new();
    frame::encode(&mut torn, RecordKind::Delta, wal.next_seq(), 0, &s.set("t", "late", Value::F64(1.0)).unwrap());
    drop(wal);
    let mut f = fs::OpenOptions::new().append(true).open(&seg).unwrap();
    std::io::Write::write_all(&mut f, &torn[..torn.len() / 2]).unwrap();
    let mut r = store();
    let (mut wal, rec) = Wal::open(&dir, &mut r).unwrap();
    assert_eq!(rec.records, 100);
    assert_eq!(rec.truncated_bytes, (torn.len() / 2) as u64);
    assert!(!rec.found_damage() && !rec.loss_suspected, "{rec:?}");
    assert_eq!(fs::metadata(&seg).unwrap().len(), good);
    assert_eq!(r.fields("t").unwrap().len(), 100);
    // Appends continue after the good data.
    wal.append(&r.set("t", "late", Value::F64(1.0)).unwrap()).unwrap();
    wal.commit().unwrap();
    let mut again = store();
    let (_, rec) = Wal::open(&dir, &mut again).unwrap();
    assert_eq!((rec.records, rec.truncated_bytes), (101, 0));
}

#[test]
fn a_hole_in_the_final_group_is_torn_but_one_in_a_synced_group_is_a_loss() {
    // The final group: three records, the middle one never reached the disk while the last one did (a
    // reordered write). Not acknowledged, so not a loss: cut at the hole.
    let dir = tmp("hole");
    let mut s = store();
    let (mut wal, _) = Wal::open(&dir, &mut s).unwrap();
    write_groups(&mut wal, &mut s, 0..5);
    for i in 5..8 {
        wal.append(&s.set("t", &format!("f{i}"), Value::I64(i)).unwrap()).unwrap();
    }
    wal.commit().unwrap();
    drop(wal);
    let seg = segments(&dir).pop().unwrap();
    let mut b = fs::read(&seg).unwrap();
    let rec_len = (b.len() - frame::FILE_HEADER) / 8;
    let middle = frame::FILE_HEADER + 6 * rec_len;
    b[middle..middle + rec_len].fill(0);
    fs::write(&seg, &b).unwrap();
    let mut r = store();
    let (mut wal, rec) = Wal::open(&dir, &mut r).unwrap();
    assert!(!rec.found_damage() && !rec.loss_suspected, "{rec:?}");
    assert_eq!((rec.records, rec.unacked_dropped), (6, 1));
    assert_eq!(fs::metadata(&seg).unwrap().len() as usize, middle);
    // The same hole in a group that a later group follows was synced: a loss, the records after it kept.
    write_groups(&mut wal, &mut r, 6..8);
    wal.append(&r.set("t", "f99", Value::I64(99)).unwrap()).unwrap();
    wal.commit().unwrap();
    drop(wal);
    let mut b = fs::read(&seg).unwrap();
    b[middle + 30] ^= 0xFF; // record 7's payload
    fs::write(&seg, &b).unwrap();
    let mut again = store();
    let (_, rec) = Wal::open(&dir, &mut again).unwrap();
    assert!(rec.loss_suspected, "{rec:?}");
    assert_eq!((rec.records_skipped, rec.records_after_damage), (1, 2));
    assert_eq!(again.get("t", "f99"), Some(FieldValue::Register(Value::I64(99))));
    assert_eq!(again.get("t", "f6"), None);
}

#[test]
fn damage_mid_log_skips_one_record_keeps_the_rest_and_quarantines_it() {
    let dir = tmp("mid");
    let mut s = store();
    let (mut wal, _) = Wal::open(&dir, &mut s).unwrap();
    write_groups(&mut wal, &mut s, 0..40);
    wal.close().unwrap();
    drop(wal);
    let seg = segments(&dir).pop().unwrap();
    let mut b = fs::read(&seg).unwrap();
    let at = b.len() / 2;
    for x in &mut b[at..at + 4] {
        *x ^= 0xA5;
    }
    fs::write(&seg, &b).unwrap();
    let mut r = store();
    let (_, rec) = Wal::open(&dir, &mut r).unwrap();
    assert!(rec.loss_suspected && rec.fresh_snapshot, "{rec:?}");
    assert_eq!(rec.records_skipped, 1, "{rec:?}");
    assert_eq!(rec.records, 39);
    assert!(rec.records_after_damage >= 19, "{rec:?}");
    assert_eq!(r.fields("t").unwrap().len(), 39);
    // The damaged bytes and a report are in the quarantine.
    let entries = quarantine_entries(&dir);
    assert_eq!(entries.len(), 1);
    let report = fs::read_to_string(entries[0].join(quarantine::REPORT)).unwrap();
    assert!(report.contains("\"loss_suspected\":true") && report.contains("\"records_skipped\":1"), "{report}");
    let copy = rec.damage[0].copy.clone().unwrap();
    assert_eq!(fs::read(entries[0].join(&copy)).unwrap().len() as u64, rec.damage[0].length);
    // The fresh snapshot makes the next start clean.
    let mut again = store();
    let (_, rec) = Wal::open(&dir, &mut again).unwrap();
    assert!(!rec.found_damage(), "{rec:?}");
    assert_eq!(again.encode_state(None), r.encode_state(None));
    assert_eq!(quarantine_entries(&dir).len(), 1);
}

#[test]
fn refuse_names_the_file_offset_and_damage_and_changes_nothing() {
    let dir = tmp("refuse");
    let mut s = store();
    let (mut wal, _) = Wal::open(&dir, &mut s).unwrap();
    write_groups(&mut wal, &mut s, 0..10);
    wal.close().unwrap();
    drop(wal);
    let seg = segments(&dir).pop().unwrap();
    let mut b = fs::read(&seg).unwrap();
    let at = frame::FILE_HEADER + 3 * (b.len() - frame::FILE_HEADER) / 11 + 2;
    b[at] ^= 1;
    fs::write(&seg, &b).unwrap();
    let options = Options { on_corruption: OnCorruption::Refuse, ..Options::default() };
    let err = Wal::open_with(Box::new(Wal::fs(&dir).unwrap()), &mut store(), options).unwrap_err().to_string();
    let name = seg.file_name().unwrap().to_string_lossy().into_owned();
    assert!(err.contains(&name) && err.contains("at byte") && err.contains("1 records lost"), "{err}");
    assert_eq!(fs::read(&seg).unwrap(), b, "refusing leaves the log as it was");
    assert!(quarantine_entries(&dir).is_empty());
}

#[test]
fn snapshots_verify_fall_back_and_report_what_they_cannot_cover() {
    let dir = tmp("snaps");
    let mut s = store();
    let (mut wal, _) = Wal::open(&dir, &mut s).unwrap();
    write_groups(&mut wal, &mut s, 0..10);
    assert!(wal.snapshot(&s).unwrap());
    write_groups(&mut wal, &mut s, 10..20);
    assert!(wal.snapshot(&s).unwrap());
    write_groups(&mut wal, &mut s, 20..25);
    assert!(wal.snapshot(&s).unwrap());
    assert_eq!(wal.stats().snapshots, 3);
    write_groups(&mut wal, &mut s, 25..30);
    wal.close().unwrap();
    drop(wal);
    let snaps: Vec<PathBuf> = {
        let mut v: Vec<PathBuf> = fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "bin"))
            .collect();
        v.sort();
        v
    };
    assert_eq!(snaps.len(), 2, "two generations kept");
    // The newest damaged: the older one and the segments after it cover everything.
    let mut b = fs::read(&snaps[1]).unwrap();
    b[frame::FILE_HEADER + frame::RECORD_HEADER + 5] ^= 1;
    fs::write(&snaps[1], &b).unwrap();
    let mut r = store();
    let (_, rec) = Wal::open(&dir, &mut r).unwrap();
    assert_eq!(rec.corrupt_snapshots, 1);
    assert!(!rec.loss_suspected, "{rec:?}");
    assert!(rec.found_damage() && rec.fresh_snapshot);
    assert_eq!(r.encode_state(None), s.encode_state(None));
}

#[test]
fn both_snapshots_damaged_loses_only_what_no_verified_chunk_or_record_holds() {
    let dir = tmp("both");
    let mut s = store();
    let (mut wal, _) = Wal::open(&dir, &mut s).unwrap();
    write_groups(&mut wal, &mut s, 0..10);
    assert!(wal.snapshot(&s).unwrap());
    write_groups(&mut wal, &mut s, 10..20);
    assert!(wal.snapshot(&s).unwrap());
    write_groups(&mut wal, &mut s, 20..30);
    wal.close().unwrap();
    drop(wal);
    for p in fs::read_dir(&dir).unwrap().flatten().map(|e| e.path()) {
        if p.extension().is_some_and(|x| x == "bin") {
            let mut b = fs::read(&p).unwrap();
            b[frame::FILE_HEADER + frame::RECORD_HEADER + 5] ^= 1; // the only chunk
            fs::write(&p, &b).unwrap();
        }
    }
    let mut r = store();
    let (_, rec) = Wal::open(&dir, &mut r).unwrap();
    assert_eq!(rec.corrupt_snapshots, 2);
    assert!(rec.loss_suspected, "{rec:?}");
    // Every record of the segments kept is back; what only the snapshots held is reported lost.
    for i in 10..30 {
        assert_eq!(r.get("t", &format!("f{i}")), Some(FieldValue::Register(Value::I64(i))), "f{i}");
    }
    let entries = quarantine_entries(&dir);
    let report = fs::read_to_string(entries[0].join(quarantine::REPORT)).unwrap();
    assert!(report.contains("snap-0000000000000002.bin") && report.contains("snap-0000000000000003.bin"), "{report}");
}

#[test]
fn aux_records_come_back_in_log_order_and_survive_a_begun_snapshot() {
    let dir = tmp("aux");
    let mut s = store();
    let (mut wal, _) = Wal::open(&dir, &mut s).unwrap();
    wal.append_aux(b"before").unwrap();
    wal.append(&s.set("t", "a", Value::I64(1)).unwrap()).unwrap();
    wal.commit().unwrap();
    wal.begin_snapshot().unwrap();
    // Appended while the host makes its side log durable: must survive the snapshot's truncation.
    wal.append_aux(b"during").unwrap();
    wal.commit().unwrap();
    assert!(wal.snapshot(&s).unwrap());
    wal.append_aux(b"after").unwrap();
    wal.commit().unwrap();
    drop(wal);
    let mut r = store();
    let (mut wal, rec) = Wal::open(&dir, &mut r).unwrap();
    assert_eq!(rec.aux_records, 2);
    assert_eq!(wal.take_recovered_aux(), vec![b"during".to_vec(), b"after".to_vec()]);
    assert!(wal.take_recovered_aux().is_empty());
    assert_eq!(r.get("t", "a"), Some(FieldValue::Register(Value::I64(1))));
}

#[test]
fn a_snapshot_written_whole_by_an_older_build_still_recovers() {
    let dir = tmp("whole");
    let mut s = store();
    let (mut wal, _) = Wal::open(&dir, &mut s).unwrap();
    for t in 0..300 {
        wal.append(&s.set(&format!("twin-{t}"), "x", Value::I64(t)).unwrap()).unwrap();
    }
    wal.commit().unwrap();
    assert!(wal.snapshot(&s).unwrap());
    write_groups(&mut wal, &mut s, 0..3);
    drop(wal);
    // Rewrite it as the whole-state encoder did before snapshots were streamed (canonical order, one
    // writer table for every chunk, small chunks), covering the same records.
    let snap = fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "bin"))
        .unwrap();
    let first = snapshot::read(&fs::read(&snap).unwrap()).first_seq.unwrap();
    fs::write(&snap, snapshot::encode(&s.encode_state_chunks(1 << 10), first)).unwrap();
    let mut r = store();
    let (_, rec) = Wal::open(&dir, &mut r).unwrap();
    assert!(!rec.found_damage() && rec.snapshot_bytes > 1 << 10, "{rec:?}");
    assert_eq!(r.encode_state(None), s.encode_state(None));
}

#[test]
fn a_snapshot_that_does_not_verify_keeps_the_older_ones() {
    let dir = tmp("verify");
    let mut s = store();
    let (mut wal, _) = Wal::open(&dir, &mut s).unwrap();
    write_groups(&mut wal, &mut s, 0..5);
    assert!(wal.snapshot(&s).unwrap());
    write_groups(&mut wal, &mut s, 5..10);
    // A state that does not decode (as a bug or bad memory would produce).
    assert!(!wal.snapshot_with(|| vec![b"not a state".to_vec()]).unwrap());
    assert_eq!(wal.stats().failed_snapshots, 1);
    assert!(wal.last_snapshot_error().unwrap().contains("did not verify"));
    // Still usable, and nothing it needs was removed.
    write_groups(&mut wal, &mut s, 10..12);
    drop(wal);
    let mut r = store();
    let (_, rec) = Wal::open(&dir, &mut r).unwrap();
    assert!(!rec.found_damage(), "{rec:?}");
    assert_eq!(r.encode_state(None), s.encode_state(None));
}

fn golden_v1(dir: &Path) {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/wal_v1");
    fs::create_dir_all(dir).unwrap();
    for e in fs::read_dir(src).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(file) = name.strip_suffix(".hex") {
            let hex = fs::read_to_string(e.path()).unwrap();
            let bytes: Vec<u8> =
                (0..hex.trim().len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect();
            fs::write(dir.join(file), bytes).unwrap();
        }
    }
}

fn expected_v1(s: &Store) {
    assert!(s.fields("pump-1").unwrap().len() >= 17);
    assert_eq!(s.get("pump-1", "f14"), Some(FieldValue::Register(Value::F64(14.0))));
    assert_eq!(s.get("pump-1", "starts"), Some(FieldValue::Counter(3)));
    // Its set records are state format V1's (the set's context claimed as the twin's): replayed as written.
    let tags = (10..15).map(|i| format!("t{i}")).collect();
    assert_eq!(s.get("pump-1", "tags"), Some(FieldValue::Set(tags)));
}

#[test]
fn a_format_one_log_recovers_and_upgrades_in_place() {
    let dir = tmp("golden");
    golden_v1(&dir);
    let mut s = store();
    let (mut wal, rec) = Wal::open(&dir, &mut s).unwrap();
    assert!(!rec.found_damage(), "{rec:?}");
    assert_eq!(rec.snapshot_seq, 2);
    expected_v1(&s);
    // New records go to a new format-2 segment; the old files keep working until a snapshot drops them.
    wal.append(&s.set("pump-1", "new", Value::I64(1)).unwrap()).unwrap();
    wal.commit().unwrap();
    drop(wal);
    assert!(dir.join("wal-0000000000000003.log").exists());
    let mut r = store();
    let (mut wal, rec) = Wal::open(&dir, &mut r).unwrap();
    assert!(!rec.found_damage(), "{rec:?}");
    expected_v1(&r);
    assert!(wal.snapshot(&r).unwrap());
    assert!(wal.snapshot(&r).unwrap());
    drop(wal);
    assert!(!dir.join("wal-0000000000000001.log").exists() && !dir.join("snap-0000000000000002.bin").exists());
    let mut again = store();
    Wal::open(&dir, &mut again).unwrap();
    assert_eq!(again.encode_state(None), r.encode_state(None));
}

#[test]
fn a_format_one_log_damaged_mid_file_keeps_the_records_after_it() {
    let dir = tmp("golden-mid");
    golden_v1(&dir);
    let seg = dir.join("wal-0000000000000002.log");
    let mut b = fs::read(&seg).unwrap();
    b[100] ^= 0xFF;
    fs::write(&seg, &b).unwrap();
    let mut s = store();
    let (_, rec) = Wal::open(&dir, &mut s).unwrap();
    assert!(rec.loss_suspected && rec.records_after_damage > 0, "{rec:?}");
    // The last record (the counter) lies after the damage and is back.
    assert_eq!(s.get("pump-1", "starts"), Some(FieldValue::Counter(3)));
}

#[test]
fn the_quarantine_stays_within_its_bounds() {
    let dir = tmp("bounds");
    let options = Options { quarantine: Bounds { max_entries: 2, max_bytes: 1 << 20 }, ..Options::default() };
    let mut s = store();
    for round in 0..4 {
        let (mut wal, _) = Wal::open_with(Box::new(Wal::fs(&dir).unwrap()), &mut s, options).unwrap();
        if round == 2 {
            // An operator acknowledged the first entry.
            let first = quarantine_entries(&dir).remove(0);
            fs::write(first.join(quarantine::ACCEPTED), "{}").unwrap();
        }
        write_groups(&mut wal, &mut s, round * 10..round * 10 + 10);
        wal.close().unwrap();
        drop(wal);
        let seg = segments(&dir).pop().unwrap();
        let mut b = fs::read(&seg).unwrap();
        let at = b.len() / 2;
        b[at] ^= 0xFF;
        fs::write(&seg, &b).unwrap();
    }
    let (_, rec) = Wal::open_with(Box::new(Wal::fs(&dir).unwrap()), &mut s, options).unwrap();
    assert_eq!(rec.quarantine_dropped, 1, "{rec:?}");
    let entries = quarantine_entries(&dir);
    let holding =
        |e: &PathBuf| fs::read_dir(e).unwrap().flatten().any(|f| f.path().extension().is_some_and(|x| x == "bin"));
    // The acknowledged entry is gone; the oldest unacknowledged one lost its copies but keeps its report, so
    // the node stays not ready until an operator has seen it.
    assert_eq!(entries.len(), 3, "{entries:?}");
    assert!(entries.iter().all(|e| e.join(quarantine::REPORT).exists() && !e.join(quarantine::ACCEPTED).exists()));
    assert_eq!(entries.iter().filter(|e| holding(e)).count(), 2);
    assert!(!holding(&entries[0]));
}
