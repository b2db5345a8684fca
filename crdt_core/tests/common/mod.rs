//! Shared generators and helpers of the integration tests: random operations on a few replicas, and the
//! bookkeeping the sequential specification needs (which event each operation was, what it observed).
#![allow(dead_code)]
use crdt_core::pb;
use crdt_core::{Context, Dot, Store, Value};
use proptest::prelude::*;
use prost::Message;

pub const TWINS: [&str; 2] = ["pump-1", "room-2"];
pub const FIELDS: [&str; 3] = ["temp", "mode", "rpm"];
pub const COUNTERS: [&str; 2] = ["starts", "faults"];
pub const SETS: [&str; 2] = ["tags", "alarms"];
pub const ELEMS: [&str; 3] = ["a", "b", "c"];
pub const DESIRED: [&str; 2] = ["setpoint", "valve"];

#[derive(Debug, Clone)]
pub enum Op {
    Set {
        r: usize,
        t: usize,
        f: usize,
        v: Value,
    },
    Batch {
        r: usize,
        items: Vec<(usize, usize, f64, i64)>,
    },
    Inc {
        r: usize,
        t: usize,
        f: usize,
        n: i64,
    },
    Add {
        r: usize,
        t: usize,
        f: usize,
        e: usize,
    },
    Remove {
        r: usize,
        t: usize,
        f: usize,
        e: usize,
    },
    /// A desired write (`v: None`: a clear) to a multi-value register.
    Desire {
        r: usize,
        t: usize,
        f: usize,
        v: Option<Value>,
    },
    /// Deliver the full state of `from` to `to`.
    Sync {
        from: usize,
        to: usize,
    },
    /// Deliver one earlier delta (by index into the log of deltas, modulo its length) to `to`.
    Deliver {
        delta: usize,
        to: usize,
    },
}

pub fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        (-1000i32..1000).prop_map(|x| Value::F64(f64::from(x) / 8.0)),
        (-5i64..5).prop_map(Value::I64),
        any::<bool>().prop_map(Value::Bool),
        "[a-z]{0,3}".prop_map(Value::Str),
        proptest::collection::vec(any::<u8>(), 0..3).prop_map(Value::Bytes),
    ]
}

pub fn op(replicas: usize) -> impl Strategy<Value = Op> {
    let r = 0..replicas;
    prop_oneof![
        4 => (r.clone(), 0..2usize, 0..3usize, value()).prop_map(|(r, t, f, v)| Op::Set { r, t, f, v }),
        2 => (r.clone(), proptest::collection::vec((0..2usize, 0..3usize, -50i32..50, 0i64..3), 1..5))
            .prop_map(|(r, items)| Op::Batch { r, items: items.into_iter().map(|(t, f, v, s)| (t, f, f64::from(v), s)).collect() }),
        2 => (r.clone(), 0..2usize, 0..2usize, -3i64..4).prop_map(|(r, t, f, n)| Op::Inc { r, t, f, n }),
        3 => (r.clone(), 0..2usize, 0..2usize, 0..3usize).prop_map(|(r, t, f, e)| Op::Add { r, t, f, e }),
        2 => (r.clone(), 0..2usize, 0..2usize, 0..3usize).prop_map(|(r, t, f, e)| Op::Remove { r, t, f, e }),
        3 => (r.clone(), 0..2usize, 0..2usize, proptest::option::weighted(0.85, value()))
            .prop_map(|(r, t, f, v)| Op::Desire { r, t, f, v }),
        2 => (r.clone(), r.clone()).prop_map(|(from, to)| Op::Sync { from, to }),
        3 => (any::<usize>(), r).prop_map(|(delta, to)| Op::Deliver { delta, to }),
    ]
}

/// Operations on one desired field only, delivered out of order or not at all: the runs where a delta shape
/// that needs causal delivery goes wrong (`tla/MVRegister.tla`, mutant `OneDotDelta`), found far more often
/// than among all operations.
pub fn desired_op(replicas: usize) -> impl Strategy<Value = Op> {
    let r = 0..replicas;
    prop_oneof![
        4 => (r.clone(), proptest::option::weighted(0.85, value())).prop_map(|(r, v)| Op::Desire { r, t: 0, f: 0, v }),
        4 => (any::<usize>(), r.clone()).prop_map(|(delta, to)| Op::Deliver { delta, to }),
        1 => (r.clone(), r).prop_map(|(from, to)| Op::Sync { from, to }),
    ]
}

/// A fresh replica with a frozen clock, so runs are deterministic.
pub fn replica(id: u64) -> Store {
    let mut s = Store::new(id, 500);
    s.set_manual_time(Some(1_700_000_000_000));
    s
}

/// The replicas' ids: not in index order, so writer tie-breaks are exercised.
pub const IDS: [u64; 5] = [30, 10, 20, 50, 40];

/// What one mutation was, for the sequential specification.
#[derive(Debug, Clone)]
pub enum Event {
    Register {
        twin: usize,
        field: String,
        value: Value,
        stamp: u64,
        dot: Dot,
    },
    Counter {
        twin: usize,
        field: usize,
        amount: i64,
        dot: Dot,
    },
    Add {
        twin: usize,
        field: usize,
        elem: usize,
        dot: Dot,
        superseded: Vec<Dot>,
    },
    Remove {
        twin: usize,
        field: usize,
        elem: usize,
        dot: Dot,
        removed: Vec<Dot>,
    },
    /// A multi-value write or clear: its twin dot, its register dot, and the register events it had seen.
    Desire {
        twin: usize,
        field: usize,
        value: Option<Value>,
        stamp: u64,
        dot: Dot,
        rdot: Dot,
        seen: Vec<Dot>,
    },
}

/// The dots named by a delta's context for `twin`.
pub fn delta_dots(delta: &[u8], twin: &str) -> Vec<Dot> {
    let msg = pb::StateDelta::decode(delta).expect("a delta the engine produced decodes");
    let mut out = Vec::new();
    for t in msg.twins.iter().filter(|t| t.twin == twin) {
        let c = t.context.clone().unwrap_or_default();
        for (&w, &m) in c.writers.iter().zip(&c.max) {
            out.extend((1..=m).map(|k| Dot::new(msg.replicas[w as usize], k)));
        }
        for (&w, &k) in c.cloud_writers.iter().zip(&c.cloud_counters) {
            out.push(Dot::new(msg.replicas[w as usize], k));
        }
    }
    out
}

/// Runs `ops` on fresh replicas. Returns the replicas, every delta produced, and the event log.
pub fn run(ops: &[Op], n: usize) -> (Vec<Store>, Vec<Vec<u8>>, Vec<Event>) {
    let mut stores: Vec<Store> = IDS[..n].iter().map(|&id| replica(id)).collect();
    let mut deltas: Vec<Vec<u8>> = Vec::new();
    let mut events = Vec::new();
    for op in ops {
        match op {
            Op::Set { r, t, f, v } => {
                let d = stores[*r].set(TWINS[*t], FIELDS[*f], v.clone()).unwrap();
                let e = stores[*r].entry(TWINS[*t], FIELDS[*f]).unwrap();
                let dot = *delta_dots(&d, TWINS[*t]).last().unwrap();
                assert_eq!(e.dot, dot, "a local write always wins locally");
                events.push(Event::Register {
                    twin: *t,
                    field: FIELDS[*f].into(),
                    value: v.clone(),
                    stamp: e.stamp,
                    dot,
                });
                deltas.push(d);
            }
            Op::Batch { r, items } => {
                let s = &mut stores[*r];
                let tids: Vec<u32> = items.iter().map(|i| s.intern_twin(TWINS[i.0]).unwrap()).collect();
                let fids: Vec<u32> = items.iter().map(|i| s.intern_field(FIELDS[i.1]).unwrap()).collect();
                let vals: Vec<f64> = items.iter().map(|i| i.2).collect();
                // Source times slightly in the past (0 means "stamp with the clock").
                let src: Vec<i64> =
                    items.iter().map(|i| if i.3 == 0 { 0 } else { 1_699_999_999_000 + i.3 * 100 }).collect();
                let d = s.write_batch(&tids, &fids, &vals, &src).unwrap();
                // One event per twin; per field the item that wins inside the batch (newest source time,
                // the later item on a tie) is what the event wrote.
                let mut winners: Vec<(usize, usize, f64, u64)> = Vec::new();
                for (k, item) in items.iter().enumerate() {
                    // Clock stamps are newer than every source time used here (those lie in the past).
                    let stamp = if src[k] > 0 { (src[k] as u64) << 16 } else { u64::MAX };
                    match winners.iter_mut().find(|w| w.0 == item.0 && w.1 == item.1) {
                        Some(w) if stamp >= w.3 => *w = (item.0, item.1, item.2, stamp),
                        Some(_) => {}
                        None => winners.push((item.0, item.1, item.2, stamp)),
                    }
                }
                for (t, f, v, stamp) in winners {
                    let next = s.context(TWINS[t]).unwrap().next_dot(IDS[*r]);
                    let dot = Dot::new(next.replica, next.counter - 1);
                    let stamp = if stamp < u64::MAX {
                        stamp
                    } else {
                        let e = s.entry(TWINS[t], FIELDS[f]).unwrap();
                        assert_eq!(e.dot, dot, "a clock-stamped reading always wins locally");
                        e.stamp
                    };
                    events.push(Event::Register { twin: t, field: FIELDS[f].into(), value: Value::F64(v), stamp, dot });
                }
                deltas.push(d);
            }
            Op::Inc { r, t, f, n } => {
                let d = stores[*r].increment(TWINS[*t], COUNTERS[*f], *n).unwrap();
                let dot = *delta_dots(&d, TWINS[*t]).last().unwrap();
                events.push(Event::Counter { twin: *t, field: *f, amount: *n, dot });
                deltas.push(d);
            }
            Op::Add { r, t, f, e } => {
                let superseded = set_dots(&stores[*r], TWINS[*t], SETS[*f], ELEMS[*e]);
                let dot = stores[*r].context(TWINS[*t]).map_or(Dot::new(IDS[*r], 1), |c| c.next_dot(IDS[*r]));
                let d = stores[*r].add(TWINS[*t], SETS[*f], ELEMS[*e]).unwrap();
                assert_eq!(set_dots(&stores[*r], TWINS[*t], SETS[*f], ELEMS[*e]), vec![dot]);
                events.push(Event::Add { twin: *t, field: *f, elem: *e, dot, superseded });
                deltas.push(d);
            }
            Op::Remove { r, t, f, e } => {
                let removed = set_dots(&stores[*r], TWINS[*t], SETS[*f], ELEMS[*e]);
                let dot = stores[*r].context(TWINS[*t]).map_or(Dot::new(IDS[*r], 1), |c| c.next_dot(IDS[*r]));
                let d = stores[*r].remove(TWINS[*t], SETS[*f], ELEMS[*e]).unwrap();
                events.push(Event::Remove { twin: *t, field: *f, elem: *e, dot, removed });
                deltas.push(d);
            }
            Op::Desire { r, t, f, v } => {
                let (seen, _) = mv_dots(&stores[*r], TWINS[*t], DESIRED[*f]);
                let d = match v {
                    Some(v) => stores[*r].desire(TWINS[*t], DESIRED[*f], v.clone()).unwrap(),
                    None => stores[*r].clear_desired(TWINS[*t], DESIRED[*f]).unwrap(),
                };
                let dots = delta_dots(&d, TWINS[*t]);
                assert_eq!(dots.len(), 1, "a desired write claims its own twin event only");
                let (after, siblings) = mv_dots(&stores[*r], TWINS[*t], DESIRED[*f]);
                let fresh: Vec<Dot> = after.iter().copied().filter(|x| !seen.contains(x)).collect();
                let [rdot] = fresh[..] else { panic!("one new register event, got {fresh:?}") };
                assert_eq!(siblings, if v.is_some() { vec![rdot] } else { vec![] });
                let stamp = stores[*r].desired(TWINS[*t], DESIRED[*f]).unwrap().first().map_or(0, |s| s.stamp);
                events.push(Event::Desire { twin: *t, field: *f, value: v.clone(), stamp, dot: dots[0], rdot, seen });
                deltas.push(d);
            }
            Op::Sync { from, to } => {
                let state = stores[*from].encode_state(None);
                stores[*to].merge(&state).unwrap();
            }
            Op::Deliver { delta, to } => {
                if !deltas.is_empty() {
                    let d = deltas[delta % deltas.len()].clone();
                    stores[*to].merge(&d).unwrap();
                }
            }
        }
    }
    (stores, deltas, events)
}

/// The dots keeping `elem` in a set, read from the canonical encoding of the twin.
pub fn set_dots(s: &Store, twin: &str, field: &str, elem: &str) -> Vec<Dot> {
    let msg = pb::StateDelta::decode(s.encode_state(Some(&[twin.to_owned()])).as_slice()).unwrap();
    let mut out: Vec<Dot> = msg
        .twins
        .iter()
        .flat_map(|t| t.sets.iter().filter(|x| x.field == field))
        .flat_map(|x| x.elements.iter().filter(|e| e.element == elem))
        .flat_map(|e| e.writers.iter().zip(&e.counters).map(|(&w, &c)| Dot::new(msg.replicas[w as usize], c)))
        .collect();
    out.sort();
    out
}

/// A set's own context (not its twin's: see `orset`), read from the canonical encoding of the twin.
pub fn set_context(s: &Store, twin: &str, field: &str) -> Context {
    let msg = pb::StateDelta::decode(s.encode_state(Some(&[twin.to_owned()])).as_slice()).unwrap();
    let mut cc = Context::new();
    for x in msg.twins.iter().flat_map(|t| t.sets.iter().filter(|x| x.field == field)) {
        let c = x.context.clone().unwrap_or_default();
        let ranges = c.writers.iter().zip(&c.max).map(|(&w, &m)| (msg.replicas[w as usize], m));
        let cloud = c.cloud_writers.iter().zip(&c.cloud_counters).map(|(&w, &k)| Dot::new(msg.replicas[w as usize], k));
        cc.union(&Context::from_parts(ranges, cloud));
    }
    cc
}

/// A multi-value register's context (every register event seen, as dots) and its siblings' dots, read from
/// the canonical encoding of the twin.
pub fn mv_dots(s: &Store, twin: &str, field: &str) -> (Vec<Dot>, Vec<Dot>) {
    let msg = pb::StateDelta::decode(s.encode_state(Some(&[twin.to_owned()])).as_slice()).unwrap();
    let (mut cc, mut siblings) = (Vec::new(), Vec::new());
    for m in msg.twins.iter().flat_map(|t| t.multi_values.iter().filter(|m| m.field == field)) {
        let c = m.context.clone().unwrap_or_default();
        assert!(c.cloud_writers.is_empty(), "a register's context is a version vector");
        for (&w, &max) in c.writers.iter().zip(&c.max) {
            cc.extend((1..=max).map(|k| Dot::new(msg.replicas[w as usize], k)));
        }
        siblings.extend(m.siblings.iter().map(|x| Dot::new(msg.replicas[x.writer as usize], x.counter)));
    }
    (cc, siblings)
}

/// A copy of a store, made by joining its full state into an empty replica with the same id.
pub fn copy(s: &Store) -> Store {
    let mut c = replica(s.replica());
    c.merge(&s.encode_state(None)).unwrap();
    c
}

/// `a ⊔ b` as a new store.
pub fn joined(a: &Store, b: &Store) -> Store {
    let mut c = copy(a);
    c.merge(&b.encode_state(None)).unwrap();
    c
}
