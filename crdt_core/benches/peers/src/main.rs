//! crdt_core against the `yrs`, `automerge` and `crdts` crates, same run, same machine:
//!   (a) 100k new numeric fields; (b) 1,000 sensors overwritten 1,000 times; (c) the catch-up after a peer
//!   missed 50 ticks of 1,000 sensors (bytes and time); (d) memory for 1M fields and for 10k twins x 20;
//!   (e) desired state: our multi-value register against our LWW register (and crdts' MVReg), one write per
//!   call (the API path, not ingest batches): writes/s, merges/s of the deltas at a peer, delta bytes, and
//!   memory per field. Memory runs each measurement in a fresh child process (RSS before and after). Prints a
//!   table with ratios.
//!
//! Workload notes: yrs = one Y.Map per twin, one transaction per batch/tick; automerge = one map object per
//! twin, one commit per batch/tick; crdts = the crate's `LWWReg` per field in a HashMap (the crate has no
//! delta support, so its catch-up is the full state, serialized with bincode).
use std::collections::HashMap;
use std::hint::black_box;
use std::time::Instant;

use automerge::transaction::Transactable;
use crdt_core::{Store, Value};
use yrs::updates::decoder::Decode;
use yrs::{Doc, Map, ReadTxn, StateVector, Transact, Update};

const N_NEW: usize = 100_000;
const SENSORS: usize = 1_000;
const OVERWRITES: usize = 1_000;
const MISSED: usize = 50;
const BIG: usize = 1_000_000;
const TWINS: usize = 10_000;
const PER_TWIN: usize = 20;
const REPS: usize = 5;
const DESIRED: usize = 1_000;
const DESIRED_REWRITES: usize = 100;
const DESIRED_MEM: usize = 100_000;

fn val(i: usize) -> f64 {
    20.0 + i as f64 * 0.013
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn timed<T>(f: impl FnOnce() -> T) -> (f64, T) {
    let t = Instant::now();
    let out = f();
    (t.elapsed().as_secs_f64(), out)
}

/// CPU time this thread has run, in seconds (the scheduler's own count, ns resolution).
fn thread_cpu_secs() -> f64 {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
    s.split_whitespace().next().and_then(|ns| ns.parse::<u64>().ok()).map_or(f64::NAN, |ns| ns as f64 * 1e-9)
}

/// Wall and CPU seconds of `f`.
fn both_timed(f: impl FnOnce()) -> (f64, f64) {
    let (t, c) = (Instant::now(), thread_cpu_secs());
    f();
    (t.elapsed().as_secs_f64(), thread_cpu_secs() - c)
}

fn rss_bytes() -> usize {
    let s = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    s.split_whitespace().nth(1).and_then(|p| p.parse::<usize>().ok()).unwrap_or(0) * 4096
}

fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("s{i}")).collect()
}

// ----- ours -----------------------------------------------------------------------------------------------

fn ours_store(id: u64) -> Store {
    let mut s = Store::new(id, 500);
    s.set_manual_time(Some(1_700_000_000_000));
    s
}

/// Writes `values` for fields `fids` of twin `tid` in one batch (the ingest path).
fn ours_tick(s: &mut Store, tid: u32, fids: &[u32], base: usize) -> Vec<u8> {
    let tids = vec![tid; fids.len()];
    let vals: Vec<f64> = (0..fids.len()).map(|i| val(base + i)).collect();
    let src = vec![0i64; fids.len()];
    s.write_batch(&tids, fids, &vals, &src).unwrap()
}

fn ours_setup(s: &mut Store, n: usize) -> (u32, Vec<u32>) {
    let tid = s.intern_twin("twin").unwrap();
    let fids = names(n).iter().map(|f| s.intern_field(f).unwrap()).collect();
    (tid, fids)
}

fn ours_new_fields() -> f64 {
    median(
        (0..REPS)
            .map(|_| {
                let mut s = ours_store(1);
                let (t, f) = ours_setup(&mut s, N_NEW);
                N_NEW as f64 / timed(|| black_box(ours_tick(&mut s, t, &f, 0))).0
            })
            .collect(),
    )
}

fn ours_overwrites() -> f64 {
    median((0..3).map(|_| ours_overwrite_run().0).collect())
}

/// One run of (b) for ours: (wall, CPU) rates.
fn ours_overwrite_run() -> (f64, f64) {
    let mut s = ours_store(1);
    let (t, f) = ours_setup(&mut s, SENSORS);
    ours_tick(&mut s, t, &f, 0);
    // The arrays an ingest batch arrives in: the ids fixed, the values refilled each tick.
    let (tids, src, mut vals) = (vec![t; SENSORS], vec![0i64; SENSORS], vec![0.0; SENSORS]);
    let (secs, cpu) = both_timed(|| {
        for r in 0..OVERWRITES {
            vals.iter_mut().enumerate().for_each(|(i, v)| *v = val(r * SENSORS + i));
            black_box(s.write_batch(&tids, &f, &vals, &src).unwrap());
        }
    });
    let n = (SENSORS * OVERWRITES) as f64;
    (n / secs, n / cpu)
}

fn ours_catch_up() -> (usize, f64) {
    let mut a = ours_store(1);
    let (t, f) = ours_setup(&mut a, SENSORS);
    ours_tick(&mut a, t, &f, 0);
    let mut b = ours_store(2);
    b.merge(&a.encode_state(None)).unwrap();
    for r in 1..=MISSED {
        ours_tick(&mut a, t, &f, r * SENSORS);
    }
    let secs = median(
        (0..REPS)
            .map(|_| {
                let mut peer = ours_store(2);
                peer.merge(&b.encode_state(None)).unwrap();
                timed(|| {
                    for m in a.catch_up(&peer.version(None), false, usize::MAX).unwrap() {
                        peer.merge(&m).unwrap();
                    }
                })
                .0
            })
            .collect(),
    );
    let bytes: usize = a.catch_up(&b.version(None), false, usize::MAX).unwrap().iter().map(Vec::len).sum();
    (bytes, secs)
}

// ----- yrs ------------------------------------------------------------------------------------------------

fn yrs_tick(doc: &Doc, map: &yrs::MapRef, keys: &[String], base: usize) {
    let mut txn = doc.transact_mut();
    for (i, k) in keys.iter().enumerate() {
        map.insert(&mut txn, k.as_str(), val(base + i));
    }
}

fn yrs_new_fields() -> f64 {
    let keys = names(N_NEW);
    median(
        (0..REPS)
            .map(|_| {
                let doc = Doc::new();
                let map = doc.get_or_insert_map("twin");
                N_NEW as f64 / timed(|| yrs_tick(&doc, &map, &keys, 0)).0
            })
            .collect(),
    )
}

fn yrs_overwrites() -> f64 {
    let keys = names(SENSORS);
    let doc = Doc::new();
    let map = doc.get_or_insert_map("twin");
    yrs_tick(&doc, &map, &keys, 0);
    let (secs, _) = timed(|| {
        for r in 0..OVERWRITES {
            yrs_tick(&doc, &map, &keys, r * SENSORS)
        }
    });
    (SENSORS * OVERWRITES) as f64 / secs
}

fn yrs_catch_up() -> (usize, f64) {
    let keys = names(SENSORS);
    let a = Doc::with_client_id(1);
    let map = a.get_or_insert_map("twin");
    yrs_tick(&a, &map, &keys, 0);
    let snapshot = a.transact().encode_state_as_update_v1(&StateVector::default());
    for r in 1..=MISSED {
        yrs_tick(&a, &map, &keys, r * SENSORS);
    }
    let mut bytes = 0;
    let secs = median(
        (0..REPS)
            .map(|_| {
                let b = Doc::with_client_id(2);
                b.get_or_insert_map("twin");
                b.transact_mut().apply_update(Update::decode_v1(&snapshot).unwrap()).unwrap();
                timed(|| {
                    let sv = b.transact().state_vector();
                    let delta = a.transact().encode_state_as_update_v1(&sv);
                    bytes = delta.len();
                    b.transact_mut().apply_update(Update::decode_v1(&delta).unwrap()).unwrap();
                })
                .0
            })
            .collect(),
    );
    (bytes, secs)
}

// ----- automerge ------------------------------------------------------------------------------------------

fn am_tick(doc: &mut automerge::AutoCommit, obj: &automerge::ObjId, keys: &[String], base: usize) {
    for (i, k) in keys.iter().enumerate() {
        doc.put(obj, k.as_str(), val(base + i)).unwrap();
    }
    doc.commit();
}

fn am_doc() -> (automerge::AutoCommit, automerge::ObjId) {
    let mut doc = automerge::AutoCommit::new();
    let obj = doc.put_object(automerge::ROOT, "twin", automerge::ObjType::Map).unwrap();
    doc.commit();
    (doc, obj)
}

fn am_new_fields() -> f64 {
    let keys = names(N_NEW);
    median(
        (0..3)
            .map(|_| {
                let (mut doc, obj) = am_doc();
                N_NEW as f64 / timed(|| am_tick(&mut doc, &obj, &keys, 0)).0
            })
            .collect(),
    )
}

fn am_overwrites() -> f64 {
    // automerge is ~100x slower here; 100 rounds keep the run short, the rate is per write either way.
    let rounds = 100;
    let keys = names(SENSORS);
    let (mut doc, obj) = am_doc();
    am_tick(&mut doc, &obj, &keys, 0);
    let (secs, _) = timed(|| {
        for r in 0..rounds {
            am_tick(&mut doc, &obj, &keys, r * SENSORS)
        }
    });
    (SENSORS * rounds) as f64 / secs
}

fn am_catch_up() -> (usize, f64) {
    let keys = names(SENSORS);
    let (mut a, obj) = am_doc();
    am_tick(&mut a, &obj, &keys, 0);
    let base = a.fork();
    let mut base = base;
    let heads = base.get_heads();
    for r in 1..=MISSED {
        am_tick(&mut a, &obj, &keys, r * SENSORS);
    }
    let mut bytes = 0;
    let secs = median(
        (0..3)
            .map(|_| {
                let mut b = base.fork();
                timed(|| {
                    let delta = a.save_after(&heads);
                    bytes = delta.len();
                    b.load_incremental(&delta).unwrap();
                })
                .0
            })
            .collect(),
    );
    (bytes, secs)
}

// ----- crdts ----------------------------------------------------------------------------------------------

type CrdtsTwin = HashMap<String, crdts::LWWReg<f64, (u64, u64)>>;

fn crdts_tick(twin: &mut CrdtsTwin, keys: &[String], base: usize, stamp: u64) {
    for (i, k) in keys.iter().enumerate() {
        twin.entry(k.clone()).or_default().update(val(base + i), (stamp, 1));
    }
}

fn crdts_new_fields() -> f64 {
    let keys = names(N_NEW);
    median(
        (0..REPS)
            .map(|_| {
                let mut t = CrdtsTwin::new();
                N_NEW as f64 / timed(|| crdts_tick(&mut t, &keys, 0, 1)).0
            })
            .collect(),
    )
}

fn crdts_overwrites() -> f64 {
    let keys = names(SENSORS);
    let mut t = CrdtsTwin::new();
    crdts_tick(&mut t, &keys, 0, 1);
    let (secs, _) = timed(|| {
        for r in 0..OVERWRITES {
            crdts_tick(&mut t, &keys, r * SENSORS, r as u64 + 2)
        }
    });
    (SENSORS * OVERWRITES) as f64 / secs
}

/// The same overwrites, capturing each tick's updates as the ops a crdts user ships to replicate (the
/// crate's registers, serialized with bincode): the work comparable to producing our deltas.
fn crdts_overwrites_with_ops() -> f64 {
    crdts_overwrite_run().0
}

/// One run of the above: (wall, CPU) rates.
fn crdts_overwrite_run() -> (f64, f64) {
    let keys = names(SENSORS);
    let mut t = CrdtsTwin::new();
    crdts_tick(&mut t, &keys, 0, 1);
    let (secs, cpu) = both_timed(|| {
        for r in 0..OVERWRITES {
            let mut ops: Vec<(&str, crdts::LWWReg<f64, (u64, u64)>)> = Vec::with_capacity(keys.len());
            for (i, k) in keys.iter().enumerate() {
                let reg = t.entry(k.clone()).or_default();
                reg.update(val(r * SENSORS + i), (r as u64 + 2, 1));
                ops.push((k.as_str(), reg.clone()));
            }
            black_box(bincode::serialize(&ops).unwrap());
        }
    });
    let n = (SENSORS * OVERWRITES) as f64;
    (n / secs, n / cpu)
}

/// The ceilings: a plain `HashMap` overwrite loop, and the same map used as an LWW register (stamp and
/// writer compared before the store), keyed by the names as a user of a map holds them. Neither replicates.
fn map_overwrites(lww: bool) -> f64 {
    median((0..3).map(|_| map_overwrite_run(lww).0).collect())
}

/// One run of the above: (wall, CPU) rates.
fn map_overwrite_run(lww: bool) -> (f64, f64) {
    let keys = names(SENSORS);
    let mut m: HashMap<String, (f64, u64, u64)> = keys.iter().map(|k| (k.clone(), (0.0, 0, 0))).collect();
    let (secs, cpu) = both_timed(|| {
        for r in 0..OVERWRITES {
            let stamp = r as u64 + 2;
            for (i, k) in keys.iter().enumerate() {
                let Some(reg) = m.get_mut(k.as_str()) else { continue };
                if !lww || (stamp, 1) >= (reg.1, reg.2) {
                    *reg = (val(r * SENSORS + i), stamp, 1);
                }
            }
            black_box(&m);
        }
    });
    let n = (SENSORS * OVERWRITES) as f64;
    (n / secs, n / cpu)
}

/// The goals of (b) as paired ratios: `PAIRS` rounds, each running ours, crdts+ops and the LWW map once
/// back to back, so a burst of load from other processes falls on all three alike; the ratio of a round is
/// taken on the thread's CPU time (time the scheduler gave the machine to others does not count) and on
/// wall time. Returns the medians: ours, crdts+ops and LWW-map CPU rates, ours/crdts+ops and ours/LWW-map
/// (CPU), and the same two ratios on wall time.
fn overwrite_pairs() -> [f64; 7] {
    const PAIRS: usize = 7;
    let runs: Vec<[(f64, f64); 3]> =
        (0..PAIRS).map(|_| [ours_overwrite_run(), crdts_overwrite_run(), map_overwrite_run(true)]).collect();
    let m = |f: &dyn Fn(&[(f64, f64); 3]) -> f64| median(runs.iter().map(f).collect());
    [
        m(&|r| r[0].1),
        m(&|r| r[1].1),
        m(&|r| r[2].1),
        m(&|r| r[0].1 / r[1].1),
        m(&|r| r[0].1 / r[2].1),
        m(&|r| r[0].0 / r[1].0),
        m(&|r| r[0].0 / r[2].0),
    ]
}

fn crdts_catch_up() -> (usize, f64) {
    use crdts::CvRDT;
    let keys = names(SENSORS);
    let mut a = CrdtsTwin::new();
    crdts_tick(&mut a, &keys, 0, 1);
    let b0 = a.clone();
    for r in 1..=MISSED {
        crdts_tick(&mut a, &keys, r * SENSORS, r as u64 + 1);
    }
    let mut bytes = 0;
    let secs = median(
        (0..REPS)
            .map(|_| {
                let mut b = b0.clone();
                timed(|| {
                    let full = bincode::serialize(&a).unwrap();
                    bytes = full.len();
                    let got: CrdtsTwin = bincode::deserialize(&full).unwrap();
                    for (k, v) in got {
                        b.entry(k).or_default().merge(v);
                    }
                })
                .0
            })
            .collect(),
    );
    (bytes, secs)
}

// ----- desired state: multi-value vs LWW register -------------------------------------------------------

/// One write per call to `DESIRED` fields of one twin, `DESIRED_REWRITES` times: writes/s, then the merge of
/// every delta at a peer (merges/s), and the mean delta size.
fn ours_desired(multi: bool) -> (f64, f64, f64) {
    let names = names(DESIRED);
    let mut runs = Vec::new();
    for _ in 0..REPS {
        let mut a = ours_store(1);
        let mut deltas = Vec::with_capacity(DESIRED * DESIRED_REWRITES);
        let (w, _) = timed(|| {
            for r in 0..DESIRED_REWRITES {
                for (i, f) in names.iter().enumerate() {
                    let v = Value::F64(val(r * DESIRED + i));
                    deltas.push(if multi { a.desire("hvac", f, v) } else { a.set("hvac", f, v) }.unwrap());
                }
            }
        });
        let mut b = ours_store(2);
        let (m, _) = timed(|| {
            for d in &deltas {
                b.merge(d).unwrap();
            }
        });
        assert_eq!(a.encode_state(None), b.encode_state(None));
        let bytes = deltas.iter().map(Vec::len).sum::<usize>() as f64 / deltas.len() as f64;
        runs.push((deltas.len() as f64 / w, deltas.len() as f64 / m, bytes));
    }
    (median(runs.iter().map(|r| r.0).collect()), median(runs.iter().map(|r| r.1).collect()), runs[0].2)
}

/// The same with crdts' MVReg per field: write (read context, op, apply), the op serialized with bincode as
/// what a user would ship; then each op deserialized and applied at a peer.
fn crdts_desired() -> (f64, f64, f64) {
    use crdts::CmRDT;
    type Reg = crdts::MVReg<f64, u64>;
    let names = names(DESIRED);
    let mut runs = Vec::new();
    for _ in 0..REPS {
        let mut a: HashMap<String, Reg> = HashMap::new();
        let mut ops: Vec<(usize, Vec<u8>)> = Vec::with_capacity(DESIRED * DESIRED_REWRITES);
        let (w, _) = timed(|| {
            for r in 0..DESIRED_REWRITES {
                for (i, f) in names.iter().enumerate() {
                    let reg = a.entry(f.clone()).or_default();
                    let op = reg.write(val(r * DESIRED + i), reg.read().derive_add_ctx(1));
                    reg.apply(op.clone());
                    ops.push((i, bincode::serialize(&op).unwrap()));
                }
            }
        });
        let mut b: HashMap<String, Reg> = HashMap::new();
        let (m, _) = timed(|| {
            for (i, op) in &ops {
                let op: crdts::mvreg::Op<f64, u64> = bincode::deserialize(op).unwrap();
                b.entry(names[*i].clone()).or_default().apply(op);
            }
        });
        let bytes = ops.iter().map(|o| o.1.len()).sum::<usize>() as f64 / ops.len() as f64;
        runs.push((ops.len() as f64 / w, ops.len() as f64 / m, bytes));
    }
    (median(runs.iter().map(|r| r.0).collect()), median(runs.iter().map(|r| r.1).collect()), runs[0].2)
}

// ----- memory (child processes) ---------------------------------------------------------------------------

/// RSS growth while building the data structure; the input key names are built before the first reading
/// and kept alive, so every library is charged only for its own copy.
fn memory_child(what: &str) -> f64 {
    let big_names = names(if what.ends_with("-big") { BIG } else { PER_TWIN });
    let twin_names: Vec<String> = (0..TWINS).map(|t| format!("twin-{t}")).collect();
    let before = rss_bytes();
    let per = match what {
        "ours-big" => {
            // Ingested as the node does: batches of 10,000 readings, each batch's names interned with it (a
            // million ids held outside the store would be 4 B per field that no peer is charged for).
            let mut s = ours_store(1);
            let t = s.intern_twin("twin").unwrap();
            for chunk in big_names.chunks(10_000) {
                let f: Vec<u32> = chunk.iter().map(|n| s.intern_field(n).unwrap()).collect();
                ours_tick(&mut s, t, &f, 0);
            }
            let r = (rss_bytes() - before) as f64 / BIG as f64;
            black_box(&s);
            r
        }
        "ours-twins" => {
            let mut s = ours_store(1);
            let fids: Vec<u32> = big_names.iter().map(|f| s.intern_field(f).unwrap()).collect();
            for (t, name) in twin_names.iter().enumerate() {
                let tid = s.intern_twin(name).unwrap();
                ours_tick(&mut s, tid, &fids, t);
            }
            let r = (rss_bytes() - before) as f64 / TWINS as f64;
            black_box(&s);
            r
        }
        "ours-overwrite" => {
            let mut s = ours_store(1);
            let (t, f) = ours_setup(&mut s, SENSORS);
            ours_tick(&mut s, t, &f, 0);
            let mid = rss_bytes();
            let state0 = s.encode_state(None).len();
            for r in 0..OVERWRITES {
                ours_tick(&mut s, t, &f, r * SENSORS);
            }
            let grown = (s.encode_state(None).len() as f64 - state0 as f64) / (SENSORS * OVERWRITES) as f64;
            let rss = (rss_bytes() as f64 - mid as f64) / (SENSORS * OVERWRITES) as f64;
            println!("{grown} {rss}");
            return 0.0;
        }
        "ours-desired" | "ours-set" | "ours-conflict" => {
            // DESIRED_MEM fields of one twin written one call each (a conflict: a second writer's concurrent
            // value in each, merged).
            let fields = names(DESIRED_MEM);
            let mut s = ours_store(1);
            let before = rss_bytes();
            for f in &fields {
                if what == "ours-set" {
                    s.set("hvac", f, Value::F64(21.0)).unwrap();
                } else {
                    s.desire("hvac", f, Value::F64(21.0)).unwrap();
                }
                if what == "ours-conflict" {
                    // A fresh writer per field, dropped at once: only `s` keeps memory.
                    let mut other = ours_store(2);
                    s.merge(&other.desire("hvac", f, Value::F64(23.5)).unwrap()).unwrap();
                }
            }
            let r = (rss_bytes() - before) as f64 / DESIRED_MEM as f64;
            black_box(&s);
            drop(fields);
            r
        }
        "yrs-big" | "yrs-twins" => {
            let mut docs = Vec::new();
            let twins = if what == "yrs-big" { 1 } else { TWINS };
            let keys = &big_names;
            for _ in 0..twins {
                let d = Doc::new();
                let m = d.get_or_insert_map("twin");
                for chunk in keys.chunks(10_000) {
                    yrs_tick(&d, &m, chunk, 0);
                }
                docs.push(d);
            }
            (rss_bytes() - before) as f64 / if twins == 1 { BIG } else { TWINS } as f64
        }
        "automerge-big" | "automerge-twins" => {
            let mut docs = Vec::new();
            let twins = if what == "automerge-big" { 1 } else { TWINS };
            let keys = &big_names;
            for _ in 0..twins {
                let (mut d, o) = am_doc();
                for chunk in keys.chunks(10_000) {
                    am_tick(&mut d, &o, chunk, 0);
                }
                docs.push(d);
            }
            (rss_bytes() - before) as f64 / if twins == 1 { BIG } else { TWINS } as f64
        }
        "crdts-big" | "crdts-twins" => {
            let mut docs = Vec::new();
            let twins = if what == "crdts-big" { 1 } else { TWINS };
            let keys = &big_names;
            for _ in 0..twins {
                let mut t = CrdtsTwin::new();
                crdts_tick(&mut t, keys, 0, 1);
                docs.push(t);
            }
            (rss_bytes() - before) as f64 / if twins == 1 { BIG } else { TWINS } as f64
        }
        _ => panic!("unknown memory scenario {what}"),
    };
    println!("{per}");
    per
}

fn memory(what: &str) -> String {
    let out = std::process::Command::new(std::env::current_exe().unwrap()).arg(what).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn mem(what: &str) -> f64 {
    memory(what).parse().unwrap_or(f64::NAN)
}

fn main() {
    if std::env::args().nth(1).as_deref() == Some("profile-merge") {
        // Recovery-shaped: many deltas of 1,000 twins x 1 field each, merged into a fresh store.
        let mut a = ours_store(1);
        let tids: Vec<u32> = (0..1000).map(|t| a.intern_twin(&format!("twin-{t}")).unwrap()).collect();
        let f = a.intern_field("s0").unwrap();
        let fids = vec![f; 1000];
        let src = vec![0i64; 1000];
        let deltas: Vec<Vec<u8>> = (0..2000)
            .map(|r| {
                a.write_batch(&tids, &fids, &(0..1000).map(|i| val(r * 1000 + i)).collect::<Vec<_>>(), &src).unwrap()
            })
            .collect();
        let mut b = ours_store(2);
        let (secs, _) = timed(|| {
            for d in &deltas {
                b.merge_trusted(d).unwrap();
            }
        });
        println!("{} entries/s, {} B per delta", 2e6 / secs, deltas[0].len());
        return;
    }
    if std::env::args().nth(1).as_deref() == Some("profile-new") {
        println!("{}", ours_new_fields());
        return;
    }
    if std::env::args().nth(1).as_deref() == Some("profile-overwrites") {
        let runs: Vec<(f64, f64)> = (0..5).map(|_| ours_overwrite_run()).collect();
        println!("{:?}", runs.iter().map(|r| (r.0 / 1e6, r.1 / 1e6)).collect::<Vec<_>>());
        return;
    }
    if std::env::args().nth(1).as_deref() == Some("overwrites") {
        // (b)'s goals alone, as `make bench` measures them.
        let [ours, ops, lww, r_ops, r_lww, w_ops, w_lww] = overwrite_pairs();
        println!(
            "ours {ours:.0}/s, crdts+ops {ops:.0}/s, HashMapLWW {lww:.0}/s (CPU time): {r_ops:.2}x crdts+ops, \
             {r_lww:.2}x LWW map (wall time: {w_ops:.2}x, {w_lww:.2}x)"
        );
        return;
    }
    if std::env::args().nth(1).as_deref() == Some("desired") {
        desired_section();
        return;
    }
    if let Some(what) = std::env::args().nth(1) {
        memory_child(&what);
        return;
    }
    println!("crdt_core vs yrs 0.28.1, automerge 0.12.0, crdts 7.3.2 (medians; higher rate / lower bytes is better)\n");
    let a = [
        ("crdt_core", ours_new_fields()),
        ("yrs", yrs_new_fields()),
        ("automerge", am_new_fields()),
        ("crdts", crdts_new_fields()),
    ];
    println!("(a) 100k new numeric fields, one batch (writes/s)");
    for (n, r) in a {
        println!("    {n:<10} {r:>14.0}   ours/this = {:>6.1}x", a[0].1 / r);
    }
    let b = [
        ("crdt_core", ours_overwrites()),
        ("yrs", yrs_overwrites()),
        ("automerge", am_overwrites()),
        ("crdts", crdts_overwrites()),
        ("crdts+ops", crdts_overwrites_with_ops()),
        ("HashMap", map_overwrites(false)),
        ("HashMapLWW", map_overwrites(true)),
    ];
    println!("(b) 1,000 sensors x 1,000 overwrites, one batch/txn per tick (writes/s; ours, yrs and automerge");
    println!("    also produce the delta to replicate; bare crdts does not, crdts+ops serializes its updates)");
    for (n, r) in b {
        println!("    {n:<10} {r:>14.0}   ours/this = {:>6.1}x", b[0].1 / r);
    }
    let [ours_cpu, ops_cpu, lww_cpu, r_ops, r_lww, w_ops, w_lww] = overwrite_pairs();
    println!(
        "    goals (issue 13), medians of 7 paired runs on CPU time (ours {ours_cpu:.0}, crdts+ops {ops_cpu:.0}, \
         HashMapLWW {lww_cpu:.0} writes/s), wall time in brackets:\n    ours/crdts+ops {r_ops:.2}x ({w_ops:.2}x; \
         >= 2), ours/HashMapLWW {r_lww:.2}x ({w_lww:.2}x; >= 0.67: within 1.5x)"
    );
    let best_peer_b = b[1..5].iter().map(|x| x.1).fold(0.0, f64::max);
    let best_with_delta = [b[1].1, b[2].1, b[4].1].into_iter().fold(0.0, f64::max);
    println!(
        "    vs best peer crate: {:.1}x; vs best peer that also yields replication data: {:.1}x (target 10x)",
        b[0].1 / best_peer_b,
        b[0].1 / best_with_delta
    );
    let c = [
        ("crdt_core", ours_catch_up()),
        ("yrs", yrs_catch_up()),
        ("automerge", am_catch_up()),
        ("crdts", crdts_catch_up()),
    ];
    println!("(c) catch-up after missing 50 ticks of 1,000 sensors: bytes, time to compute and apply");
    for (n, (bytes, secs)) in c {
        println!(
            "    {n:<10} {bytes:>10} B {:>10.2} ms   bytes this/ours = {:>6.1}x",
            secs * 1e3,
            bytes as f64 / c[0].1 .0 as f64
        );
    }
    println!("(d) memory (RSS growth, fresh process each)");
    let big = [
        ("crdt_core", mem("ours-big")),
        ("yrs", mem("yrs-big")),
        ("automerge", mem("automerge-big")),
        ("crdts", mem("crdts-big")),
    ];
    println!("    1M numeric fields, bytes per field (target <= 48):");
    for (n, r) in big {
        println!("      {n:<10} {r:>8.1}   this/ours = {:>5.1}x", r / big[0].1);
    }
    let tw = [
        ("crdt_core", mem("ours-twins")),
        ("yrs", mem("yrs-twins")),
        ("automerge", mem("automerge-twins")),
        ("crdts", mem("crdts-twins")),
    ];
    println!("    10k twins x 20 fields, bytes per twin (target <= 1200):");
    for (n, r) in tw {
        println!("      {n:<10} {r:>8.0}   this/ours = {:>5.1}x", r / tw[0].1);
    }
    let ow = memory("ours-overwrite");
    let mut parts = ow.split_whitespace().map(|x| x.parse::<f64>().unwrap_or(f64::NAN));
    println!(
        "    crdt_core growth per overwrite (1M overwrites): state {:.4} B, RSS {:.4} B (target 0)",
        parts.next().unwrap_or(f64::NAN),
        parts.next().unwrap_or(f64::NAN)
    );
    desired_section();
    // The issue-13 rows for `make bench` (benches/run_all.py); the shape is benches/bench_report.py's.
    let rows = [
        // The paired medians: ours as the peer's median rate times the median ratio (as bench_core's by-name row).
        Row::ratio(
            "core overwrites, deltas captured, vs crdts+ops",
            ops_cpu * r_ops,
            "writes/s",
            ops_cpu,
            "crdts+ops",
            2.0,
        ),
        Row::ratio(
            "core overwrites vs a plain HashMap LWW loop",
            lww_cpu * r_lww,
            "writes/s",
            lww_cpu,
            "HashMap LWW",
            0.67,
        ),
        Row::value("bytes per numeric field", big[0].1, "B", big[3].1, "crdts", 48.0),
        Row::value("bytes per 20-field twin", tw[0].1, "B", tw[3].1, "crdts", 1200.0),
    ];
    emit_rows(&rows);
}

/// One result row of benches/bench_report.py: a goal on the value (at most `target`) or on the ratio to the
/// baseline (at least `target`).
struct Row {
    measure: &'static str,
    value: f64,
    unit: &'static str,
    baseline: f64,
    baseline_name: &'static str,
    goal: String,
    met: bool,
}

impl Row {
    fn ratio(
        measure: &'static str,
        value: f64,
        unit: &'static str,
        base: f64,
        name: &'static str,
        at_least: f64,
    ) -> Row {
        let goal = format!(">= {at_least}x {name}");
        Row { measure, value, unit, baseline: base, baseline_name: name, goal, met: value / base >= at_least }
    }

    fn value(
        measure: &'static str,
        value: f64,
        unit: &'static str,
        base: f64,
        name: &'static str,
        at_most: f64,
    ) -> Row {
        let goal = format!("<= {at_most} {unit}");
        Row { measure, value, unit, baseline: base, baseline_name: name, goal, met: value <= at_most }
    }
}

/// Appends `{"bench": "peers", "rows": [...]}` as one line to `$BENCH_JSON_OUT` when it is set.
fn emit_rows(rows: &[Row]) {
    let Ok(path) = std::env::var("BENCH_JSON_OUT") else { return };
    let num = |x: f64| if x.is_finite() { format!("{x}") } else { "null".to_string() };
    let rows: Vec<String> = rows
        .iter()
        .map(|r| {
            format!(
                r#"{{"measure":"{}","value":{},"unit":"{}","baseline":{},"baseline_name":"{}","ratio":{},"goal":"{}","met":{}}}"#,
                r.measure,
                num(r.value),
                r.unit,
                num(r.baseline),
                r.baseline_name,
                num(r.value / r.baseline),
                r.goal,
                r.met
            )
        })
        .collect();
    let line = format!("{{\"bench\":\"peers\",\"rows\":[{}]}}\n", rows.join(","));
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(&path).expect("BENCH_JSON_OUT");
    std::io::Write::write_all(&mut file, line.as_bytes()).expect("BENCH_JSON_OUT");
}

/// (e), also on its own: `cargo run --release -- desired`.
fn desired_section() {
    let e = [("LWW set", ours_desired(false)), ("MV desire", ours_desired(true)), ("crdts MVReg", crdts_desired())];
    println!("(e) desired state: 1,000 fields x 100 rewrites, one write per call (LWW = ours, for reference)");
    for (n, (w, m, bytes)) in e {
        println!(
            "    {n:<12} {w:>10.0} writes/s {m:>10.0} merges/s {bytes:>6.1} B/delta   LWW/this: write {:>4.1}x, merge {:>4.1}x",
            e[0].1 .0 / w,
            e[0].1 .1 / m
        );
    }
    println!(
        "    memory per field (100k fields, one writer): LWW {:.0} B, MV {:.0} B, MV in a 2-writer conflict {:.0} B",
        mem("ours-set"),
        mem("ours-desired"),
        mem("ours-conflict")
    );
}

#[allow(dead_code)]
fn _uses(_: Value) {}
