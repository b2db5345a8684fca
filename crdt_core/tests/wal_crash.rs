//! Crash consistency of the write-ahead log on a fault-injecting simulated disk: random schedules of
//! appends, group commits, snapshots (begun, then taken), clean closes, fsync failures and power cuts that
//! drop, tear, reorder or half-persist unsynced writes and directory operations.
//!
//! After every power cut: the log opens (a torn tail never stops it) and reports no damage (a crash is not
//! corruption); every record whose commit returned Ok is back; nothing that was never appended appears; aux
//! records come back in log order, each one appended since the last snapshot (called once its barrier
//! completed) began. After an
//! fsync error the log stays shut: no later commit succeeds, so nothing after it is acknowledged.
use std::collections::BTreeSet;

use crdt_core::{FieldValue, OnCorruption, Store, Value, Wal, WalOptions};
use proptest::prelude::*;

#[path = "support/simdisk.rs"]
mod simdisk;
use simdisk::{CrashMode, Rng, SimDisk};

#[derive(Debug, Clone)]
enum Op {
    Delta,
    Aux,
    Commit,
    BeginSnapshot,
    Snapshot,
    Close,
    FailSync,
    Crash(u8, u64),
    /// Die at the n-th fsync of a commit (0), snapshot (1), snapshot begin (2) or close (3), then crash.
    KillDuring(u8, u8, u8, u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        30 => Just(Op::Delta),
        10 => Just(Op::Aux),
        20 => Just(Op::Commit),
        3 => Just(Op::BeginSnapshot),
        5 => Just(Op::Snapshot),
        2 => Just(Op::Close),
        3 => Just(Op::FailSync),
        8 => (0u8..4, any::<u64>()).prop_map(|(m, s)| Op::Crash(m, s)),
        8 => (0u8..4, 0u8..5, 0u8..4, any::<u64>()).prop_map(|(a, n, m, s)| Op::KillDuring(a, n, m, s)),
    ]
}

fn store() -> Store {
    let mut s = Store::new(1, 500);
    s.set_manual_time(Some(1_700_000_000_000));
    s
}

fn field(k: u64) -> String {
    format!("k{k}")
}

/// The host's view: what it appended, what was acknowledged, what it got back.
#[derive(Default)]
struct Model {
    next: u64,
    appended: BTreeSet<u64>,
    /// Appended and not yet committed: (key, is_aux).
    pending: Vec<(u64, bool)>,
    acked_deltas: BTreeSet<u64>,
    acked_aux: BTreeSet<u64>,
    /// Aux records appended before this key were covered by a completed snapshot's barrier.
    aux_floor: u64,
    /// Key counter when the current snapshot was begun.
    begun_at: Option<u64>,
    /// A commit failed: the log must refuse everything until reopened.
    shut: bool,
}

impl Model {
    fn committed(&mut self, ok: bool) {
        let pending = std::mem::take(&mut self.pending);
        if ok {
            for (k, aux) in pending {
                if aux {
                    self.acked_aux.insert(k);
                } else {
                    self.acked_deltas.insert(k);
                }
            }
        } else {
            self.shut = true;
        }
    }
}

fn check(m: &Model, s: &Store, aux: &[Vec<u8>]) -> Result<(), TestCaseError> {
    for &k in &m.acked_deltas {
        prop_assert_eq!(
            s.get("t", &field(k)),
            Some(FieldValue::Register(Value::I64(k as i64))),
            "acknowledged k{} lost",
            k
        );
    }
    for (name, _) in s.fields("t").unwrap_or_default() {
        let k: u64 = name[1..].parse().unwrap();
        prop_assert!(m.appended.contains(&k), "k{} was never appended", k);
    }
    let keys: Vec<u64> = aux.iter().map(|a| String::from_utf8_lossy(a)[3..].parse().unwrap()).collect();
    prop_assert!(keys.windows(2).all(|w| w[0] < w[1]), "aux out of log order: {:?}", keys);
    for k in &keys {
        prop_assert!(m.appended.contains(k), "aux{} was never appended", k);
    }
    for &k in m.acked_aux.range(m.aux_floor..) {
        prop_assert!(keys.contains(&k), "acknowledged aux{} lost (floor {}): {:?}", k, m.aux_floor, keys);
    }
    Ok(())
}

fn reopen(disk: &SimDisk) -> Result<(Wal, Store, Vec<Vec<u8>>), TestCaseError> {
    let mut s = store();
    let opened = Wal::open_with(Box::new(disk.clone()), &mut s, WalOptions::default());
    let (mut wal, rec) = opened.map_err(|e| TestCaseError::fail(format!("open after a crash failed: {e}")))?;
    prop_assert!(!rec.found_damage() && !rec.loss_suspected, "a crash reported as damage: {:?}", rec);
    let aux = wal.take_recovered_aux();
    Ok((wal, s, aux))
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let disk = SimDisk::new();
    let mut m = Model::default();
    let (mut wal, mut s, _) = reopen(&disk)?;
    for op in ops {
        match op {
            Op::Delta => {
                let k = m.next;
                m.next += 1;
                let d = s.set("t", &field(k), Value::I64(k as i64)).unwrap();
                wal.append(&d).unwrap();
                m.appended.insert(k);
                m.pending.push((k, false));
            }
            Op::Aux => {
                let k = m.next;
                m.next += 1;
                wal.append_aux(format!("aux{k}").as_bytes()).unwrap();
                m.appended.insert(k);
                m.pending.push((k, true));
            }
            Op::Commit => {
                let ok = wal.commit().is_ok();
                prop_assert!(!(m.shut && ok), "a commit succeeded after an fsync failure");
                m.committed(ok);
            }
            Op::BeginSnapshot => {
                let ok = wal.begin_snapshot().is_ok();
                prop_assert!(!(m.shut && ok), "a snapshot began after an fsync failure");
                if ok && m.begun_at.is_none() {
                    m.begun_at = Some(m.next);
                }
                m.committed(ok);
            }
            Op::Snapshot => {
                m.aux_floor = m.begun_at.unwrap_or(m.next); // the barrier completed (see KillDuring)
                let r = wal.snapshot(&s);
                prop_assert!(!(m.shut && r.is_ok()), "a snapshot succeeded after an fsync failure");
                m.committed(r.is_ok());
                if r.is_ok() {
                    m.begun_at = None;
                }
            }
            Op::Close => {
                let ok = wal.close().is_ok();
                m.committed(ok);
                drop(wal);
                disk.fail_next_sync(0); // an fsync error during open fails the open: not this test's subject
                let (w, r, aux) = reopen(&disk)?;
                check(&m, &r, &aux)?;
                (wal, s, m.shut, m.begun_at) = (w, r, false, None);
            }
            Op::FailSync => disk.fail_next_sync(1),
            Op::KillDuring(action, n, mode, seed) => {
                disk.die_at_sync(u32::from(n));
                let floor = m.begun_at.unwrap_or(m.next);
                let ok = match action {
                    0 => wal.commit().is_ok(),
                    1 => {
                        // Calling snapshot means the host's barrier completed: whatever the outcome, aux records
                        // appended before the snapshot began are the host's from here on.
                        m.aux_floor = floor;
                        wal.snapshot(&s).is_ok()
                    }
                    2 => wal.begin_snapshot().is_ok(),
                    _ => wal.close().is_ok(),
                };
                prop_assert!(!(m.shut && ok), "an operation succeeded after an fsync failure");
                m.committed(ok);
                if !disk.died() {
                    disk.die_at_sync(u32::MAX);
                }
                drop(wal);
                let mode = [CrashMode::DropAll, CrashMode::Torn, CrashMode::Sectors, CrashMode::KeepAll][mode as usize];
                disk.crash(mode, &mut Rng::new(seed));
                m.pending.clear();
                let (w, r, aux) = reopen(&disk)?;
                check(&m, &r, &aux)?;
                (wal, s, m.shut, m.begun_at) = (w, r, false, None);
            }
            Op::Crash(mode, seed) => {
                drop(wal);
                let mode = [CrashMode::DropAll, CrashMode::Torn, CrashMode::Sectors, CrashMode::KeepAll][mode as usize];
                disk.crash(mode, &mut Rng::new(seed));
                m.pending.clear();
                let (w, r, aux) = reopen(&disk)?;
                check(&m, &r, &aux)?;
                (wal, s, m.shut, m.begun_at) = (w, r, false, None);
            }
        }
    }
    drop(wal);
    disk.crash(CrashMode::DropAll, &mut Rng::new(0));
    m.pending.clear();
    let (_, r, aux) = reopen(&disk)?;
    check(&m, &r, &aux)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn no_acknowledged_record_is_lost_across_crashes(ops in prop::collection::vec(op(), 1..80)) {
        run(ops)?;
    }
}

/// Bit rot on the simulated disk (not a crash): the refuse policy stops at it, the default keeps the
/// records after it.
#[test]
fn damage_on_the_simulated_disk_is_reported_not_taken_for_a_crash() {
    let disk = SimDisk::new();
    let mut s = store();
    let (mut wal, _) = Wal::open_with(Box::new(disk.clone()), &mut s, WalOptions::default()).unwrap();
    for k in 0..30u64 {
        wal.append(&s.set("t", &field(k), Value::I64(k as i64)).unwrap()).unwrap();
        wal.commit().unwrap();
    }
    drop(wal);
    let (name, mut bytes) = disk.files().into_iter().find(|(n, _)| n.starts_with("wal-")).unwrap();
    let at = bytes.len() / 3;
    bytes[at] ^= 0x40;
    disk.poke(&name, bytes);
    let refuse = WalOptions { on_corruption: OnCorruption::Refuse, ..WalOptions::default() };
    let err = Wal::open_with(Box::new(disk.clone()), &mut store(), refuse).unwrap_err().to_string();
    assert!(err.contains(&name), "{err}");
    let mut r = store();
    let (_, rec) = Wal::open_with(Box::new(disk.clone()), &mut r, WalOptions::default()).unwrap();
    assert!(rec.loss_suspected && rec.records_skipped == 1 && rec.records == 29, "{rec:?}");
    let files = disk.files();
    assert!(files.keys().any(|n| n.starts_with("quarantine/") && n.ends_with("/report.json")), "{:?}", files.keys());
}

/// Bounded mutation fuzzing of the log's readers (segments and snapshots, both formats' framing): whatever
/// the damage, open never panics; with the default policy it opens, and the refuse policy refuses exactly
/// when the default one found damage.
#[test]
fn mutated_logs_never_panic_and_refuse_exactly_when_damage_is_found() {
    let base = SimDisk::new();
    let mut s = store();
    let (mut wal, _) = Wal::open_with(Box::new(base.clone()), &mut s, WalOptions::default()).unwrap();
    for k in 0..60u64 {
        wal.append(&s.set("t", &field(k), Value::I64(k as i64)).unwrap()).unwrap();
        if k % 3 == 0 {
            wal.append_aux(format!("aux{k}").as_bytes()).unwrap();
            wal.commit().unwrap();
        }
        if k % 25 == 24 {
            assert!(wal.snapshot(&s).unwrap());
        }
    }
    wal.close().unwrap();
    drop(wal);
    let files = base.files();
    let names: Vec<&String> = files.keys().collect();
    let mut rng = Rng::new(7);
    for i in 0..400 {
        let disk = SimDisk::new();
        let mut setup = disk.clone();
        for (name, content) in &files {
            crdt_core::Storage::create(&mut setup, name).unwrap();
            crdt_core::Storage::append(&mut setup, name, content).unwrap();
        }
        for _ in 0..=rng.below(3) {
            let name = names[rng.below(names.len())];
            let mut b = disk.files()[name.as_str()].clone();
            match rng.below(4) {
                0 if !b.is_empty() => {
                    let at = rng.below(b.len());
                    b[at] ^= 1 << rng.below(8);
                }
                1 if !b.is_empty() => {
                    let at = rng.below(b.len());
                    let end = (at + 1 + rng.below(64)).min(b.len());
                    b[at..end].fill(0);
                }
                2 => b.truncate(rng.below(b.len() + 1)),
                _ => {
                    let at = rng.below(b.len() + 1);
                    b.insert(at, rng.next() as u8);
                }
            }
            disk.poke(name, b);
        }
        let copy = SimDisk::new();
        let mut setup = copy.clone();
        for (name, content) in disk.files() {
            crdt_core::Storage::create(&mut setup, &name).unwrap();
            crdt_core::Storage::append(&mut setup, &name, &content).unwrap();
        }
        let refuse = WalOptions { on_corruption: OnCorruption::Refuse, ..WalOptions::default() };
        let refused = Wal::open_with(Box::new(copy), &mut store(), refuse).is_err();
        let (_, rec) = Wal::open_with(Box::new(disk), &mut store(), WalOptions::default())
            .unwrap_or_else(|e| panic!("iteration {i}: open failed: {e}"));
        assert_eq!(refused, rec.found_damage(), "iteration {i}: {rec:?}");
    }
}
