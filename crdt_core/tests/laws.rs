//! The algebra is the spec: merge is idempotent, commutative and associative for every CRDT and for the
//! store; delta merge equals full-state merge; and every replica's value equals the sequential
//! specification of the operations it has seen (AntidoteDB style), not only the other replicas' values.
mod common;

use std::collections::BTreeSet;

use common::*;
use crdt_core::{Context, Dot, FieldValue, Store, Value};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use prost::Message;

fn cfg() -> ProptestConfig {
    ProptestConfig { cases: 160, ..ProptestConfig::default() }
}

fn ops(n: usize) -> impl Strategy<Value = Vec<Op>> {
    proptest::collection::vec(op(n), 1..40)
}

fn state(s: &Store) -> Vec<u8> {
    s.encode_state(None)
}

proptest! {
    #![proptest_config(cfg())]

    #[test]
    fn merge_is_idempotent(ops in ops(3)) {
        let (stores, _, _) = run(&ops, 3);
        for s in &stores {
            prop_assert_eq!(state(&joined(s, s)), state(s));
        }
    }

    #[test]
    fn merge_is_commutative(ops in ops(3)) {
        let (s, _, _) = run(&ops, 3);
        prop_assert_eq!(state(&joined(&s[0], &s[1])), state(&joined(&s[1], &s[0])));
        prop_assert_eq!(state(&joined(&s[1], &s[2])), state(&joined(&s[2], &s[1])));
    }

    #[test]
    fn merge_is_associative(ops in ops(3)) {
        let (s, _, _) = run(&ops, 3);
        let left = joined(&joined(&s[0], &s[1]), &s[2]);
        let right = joined(&s[0], &joined(&s[1], &s[2]));
        prop_assert_eq!(state(&left), state(&right));
    }

    /// Every delta, delivered in any order with duplicates, gives the state that full-state merges give.
    #[test]
    fn delta_merge_equals_full_state_merge(ops in ops(3), order in proptest::collection::vec(any::<usize>(), 0..80)) {
        let (stores, deltas, _) = run(&ops, 3);
        let mut by_state = replica(99);
        for s in &stores {
            by_state.merge(&s.encode_state(None)).unwrap();
        }
        let mut by_delta = replica(99);
        for &k in &order {
            if !deltas.is_empty() {
                by_delta.merge(&deltas[k % deltas.len()]).unwrap();
            }
        }
        for d in &deltas {
            by_delta.merge(d).unwrap();
        }
        // Deltas carry only local events, so also join what the Sync ops moved: it was all in the deltas.
        prop_assert_eq!(state(&by_delta), state(&by_state));
        // And the join of all deltas, as one message, is the same state again.
        let refs: Vec<&[u8]> = deltas.iter().map(Vec::as_slice).collect();
        let mut by_join = replica(99);
        by_join.merge(&crdt_core::join(&refs, Default::default()).unwrap()).unwrap();
        prop_assert_eq!(state(&by_join), state(&by_state));
    }

    /// Catch-up from a peer's version brings it to the sender's state joined with its own.
    #[test]
    fn catch_up_gives_what_the_peer_lacks(ops in ops(3), chunk in 64usize..4096) {
        let (s, _, _) = run(&ops, 3);
        let mut b = copy(&s[1]);
        let expected = state(&joined(&s[1], &s[0]));
        for msg in s[0].catch_up(&b.version(None), false, chunk).unwrap() {
            b.merge(&msg).unwrap();
        }
        prop_assert_eq!(state(&b), expected.clone());
        // Digest-driven: only the twins whose digests differ, in both directions.
        let mut c = copy(&s[1]);
        let differ = c.differing_twins(&s[0].digest()).unwrap();
        for msg in s[0].catch_up(&c.version(Some(&differ)), true, chunk).unwrap() {
            c.merge(&msg).unwrap();
        }
        prop_assert_eq!(state(&c), expected);
        prop_assert!(c.differing_twins(&joined(&s[1], &s[0]).digest()).unwrap().is_empty());
    }

    /// A catch-up cut into small messages splits big twins; every message fits unless it is one unit (a write
    /// group, counter or set) too big on its own, and after any prefix of the messages the receiver claims no
    /// event it does not hold: a twin whose context matches the sender's has the sender's state.
    #[test]
    fn a_split_catch_up_never_claims_what_it_has_not_delivered(ops in ops(3), chunk in 48usize..400) {
        let (s, _, _) = run(&ops, 3);
        let mut b = copy(&s[1]);
        let expected = joined(&s[1], &s[0]);
        for msg in s[0].catch_up(&b.version(None), false, chunk).unwrap() {
            if msg.len() > chunk {
                let decoded = crdt_core::pb::StateDelta::decode(msg.as_slice()).unwrap();
                let [part] = decoded.twins.as_slice() else {
                    return Err(TestCaseError::fail(format!("{} B over {chunk} with several twins", msg.len())));
                };
                let units = part.writes.len() + part.counters.len() + part.sets.len() + part.multi_values.len()
                    + usize::from(part.context.is_some());
                prop_assert_eq!(units, 1, "a message of {} B over {} holds more than one unit", msg.len(), chunk);
            }
            b.merge(&msg).unwrap();
            for twin in TWINS {
                if b.context(twin).is_some() && b.context(twin) == expected.context(twin) {
                    let names = [twin.to_owned()];
                    prop_assert_eq!(
                        b.encode_state(Some(&names)),
                        expected.encode_state(Some(&names)),
                        "twin {} claims a context it has not received", twin
                    );
                }
            }
        }
        prop_assert_eq!(state(&b), state(&expected));
    }

    /// Equal causal contexts imply equal state, whatever order deltas arrived in (tla/DotKernelSet.tla SEC):
    /// what lets anti-entropy skip every twin whose digest matches.
    #[test]
    fn equal_contexts_imply_equal_state(ops in proptest::collection::vec(op(3), 1..60)) {
        let (stores, _, _) = run(&ops, 3);
        for twin in TWINS {
            for a in &stores {
                for b in &stores {
                    if a.context(twin).is_some() && a.context(twin) == b.context(twin) {
                        let names = [twin.to_owned()];
                        let (sa, sb) = (joined(a, a), joined(b, b));
                        prop_assert_eq!(sa.encode_state(Some(&names)), sb.encode_state(Some(&names)), "twin {}", twin);
                    }
                }
            }
        }
    }

    /// Desired writes alone, delivered out of order: every replica matches the specification, and equal
    /// contexts imply equal state.
    #[test]
    fn desired_writes_match_the_spec_under_any_delivery(ops in proptest::collection::vec(desired_op(3), 1..30)) {
        let (stores, _, events) = run(&ops, 3);
        for a in &stores {
            check_spec(a, &events)?;
            for b in &stores {
                if a.context(TWINS[0]).is_some() && a.context(TWINS[0]) == b.context(TWINS[0]) {
                    prop_assert_eq!(state(a), state(b));
                }
            }
        }
    }

    /// Each replica's value equals the sequential specification of the events it has seen.
    #[test]
    fn every_replica_matches_the_sequential_spec(ops in ops(4)) {
        let (stores, _, events) = run(&ops, 4);
        for s in &stores {
            check_spec(s, &events)?;
        }
        // And after full exchange all replicas agree (and still match the spec).
        let mut all = replica(99);
        for s in &stores {
            all.merge(&s.encode_state(None)).unwrap();
        }
        check_spec(&all, &events)?;
    }
}

/// The specification: registers hold the visible write with the greatest (stamp, writer, counter);
/// counters the sum of each writer's updates up to its newest visible one; an element is in a set iff some
/// visible add of it was neither removed nor superseded by a visible event that observed it; a multi-value
/// register holds the value of every visible write that no visible write or clear had seen, in write order.
fn check_spec(s: &Store, events: &[Event]) -> Result<(), TestCaseError> {
    let visible = |twin: usize, dot: Dot| s.context(TWINS[twin]).is_some_and(|c| c.contains(dot));
    for (t, twin) in TWINS.iter().enumerate() {
        for field in FIELDS {
            let best = events
                .iter()
                .filter_map(|e| match e {
                    Event::Register { twin, field: f, value, stamp, dot }
                        if *twin == t && f == field && visible(t, *dot) =>
                    {
                        Some(((*stamp, dot.replica, dot.counter), value.clone()))
                    }
                    _ => None,
                })
                .max_by(|a, b| a.0.cmp(&b.0))
                .map(|(_, v)| FieldValue::Register(v));
            prop_assert_eq!(s.get(twin, field), best, "register {}/{}", twin, field);
        }
        for (f, field) in COUNTERS.iter().enumerate() {
            // A counter delta ships its writer's running total, so seeing a writer's k-th update of a counter
            // means seeing all its earlier ones: visible = every update up to the writer's newest visible one.
            let ours = |e: &&Event| matches!(e, Event::Counter { twin, field, .. } if *twin == t && *field == f);
            let newest = |w: u64| {
                events
                    .iter()
                    .filter(ours)
                    .filter_map(|e| match e {
                        Event::Counter { dot, .. } if dot.replica == w && visible(t, *dot) => Some(dot.counter),
                        _ => None,
                    })
                    .max()
            };
            let seen: Vec<i64> = events
                .iter()
                .filter(ours)
                .filter_map(|e| match e {
                    Event::Counter { amount, dot, .. } if newest(dot.replica).is_some_and(|m| dot.counter <= m) => {
                        Some(*amount)
                    }
                    _ => None,
                })
                .collect();
            let expected = (!seen.is_empty()).then(|| FieldValue::Counter(seen.iter().sum()));
            prop_assert_eq!(s.get(twin, field), expected, "counter {}/{}", twin, field);
        }
        for (f, field) in SETS.iter().enumerate() {
            // A set delta carries the whole set but claims only its own events in the twin context, so a set
            // holds the effects of the events its own context has seen (tla/DotKernelSet.tla DotsMatchSpec),
            // which include every set event its twin context claims.
            let cc = set_context(s, twin, field);
            let mut killed: BTreeSet<Dot> = BTreeSet::new();
            let mut touched = false;
            for e in events {
                match e {
                    Event::Add { twin, field, dot, .. } | Event::Remove { twin, field, dot, .. }
                        if *twin == t && *field == f && visible(t, *dot) && !cc.contains(*dot) =>
                    {
                        prop_assert!(false, "set {}/{}: event {:?} claimed by the twin, unseen by the set", t, f, dot);
                    }
                    _ => {}
                }
                match e {
                    Event::Add { twin, field, superseded, dot, .. }
                        if *twin == t && *field == f && cc.contains(*dot) =>
                    {
                        killed.extend(superseded.iter().copied());
                        touched = true;
                    }
                    Event::Remove { twin, field, removed, dot, .. }
                        if *twin == t && *field == f && cc.contains(*dot) =>
                    {
                        killed.extend(removed.iter().copied());
                        touched = true;
                    }
                    _ => {}
                }
            }
            let present: BTreeSet<String> = events
                .iter()
                .filter_map(|e| match e {
                    Event::Add { twin, field, elem, dot, .. }
                        if *twin == t && *field == f && cc.contains(*dot) && !killed.contains(dot) =>
                    {
                        Some(ELEMS[*elem].to_owned())
                    }
                    _ => None,
                })
                .collect();
            let expected = touched.then(|| FieldValue::Set(present.into_iter().collect()));
            prop_assert_eq!(s.get(twin, field), expected, "set {}/{}", twin, field);
        }
        for (f, field) in DESIRED.iter().enumerate() {
            let seen_here: Vec<&Event> = events
                .iter()
                .filter(|e| matches!(e, Event::Desire { twin, field, dot, .. } if *twin == t && *field == f && visible(t, *dot)))
                .collect();
            let killed: BTreeSet<Dot> = seen_here
                .iter()
                .flat_map(|e| match e {
                    Event::Desire { seen, .. } => seen.clone(),
                    _ => vec![],
                })
                .collect();
            let mut present: Vec<(u64, Dot, Value)> = seen_here
                .iter()
                .filter_map(|e| match e {
                    Event::Desire { value: Some(v), stamp, rdot, .. } if !killed.contains(rdot) => {
                        Some((*stamp, *rdot, v.clone()))
                    }
                    _ => None,
                })
                .collect();
            present.sort_by_key(|p| (p.0, p.1));
            let expected =
                (!seen_here.is_empty()).then(|| FieldValue::MultiValue(present.iter().map(|p| p.2.clone()).collect()));
            prop_assert_eq!(s.get(twin, field), expected, "multi-value {}/{}", twin, field);
            let read: Vec<(u64, Dot, Value)> =
                s.desired(twin, field).unwrap_or_default().into_iter().map(|x| (x.stamp, x.dot, x.value)).collect();
            prop_assert_eq!(read, present, "multi-value siblings {}/{}", twin, field);
        }
    }
    Ok(())
}

#[test]
fn overwrites_cost_no_memory_and_leave_no_tombstones() {
    let mut s = replica(1);
    s.set("t", "x", Value::F64(1.0)).unwrap();
    let first = s.encode_state(None).len();
    for i in 0..10_000 {
        s.set("t", "x", Value::F64(f64::from(i))).unwrap();
    }
    let after = s.encode_state(None).len();
    assert_eq!(s.stats().fields, 1);
    // Only the varint widths of the counter and stamp may grow, never per overwrite.
    assert!(after <= first + 8, "state grew from {first} to {after} bytes over 10k overwrites");
}

/// A desired field's size is bounded by its writers, not its history, even with its writes scattered among
/// the twin's other events (numbered with twin dots, they would pile up in its context's cloud).
#[test]
fn desired_rewrites_cost_no_memory_and_leave_no_tombstones() {
    let (mut a, mut b) = (replica(1), replica(2));
    b.merge(&a.desire("t", "sp", Value::F64(20.0)).unwrap()).unwrap();
    b.desire("t", "sp", Value::F64(21.0)).unwrap();
    a.merge(&b.encode_state(None)).unwrap();
    a.set("t", "x", Value::F64(-1.0)).unwrap();
    let first = a.encode_state(None).len();
    for i in 0..5_000 {
        a.set("t", "x", Value::F64(f64::from(i))).unwrap();
        let d = if i % 7 == 0 { a.clear_desired("t", "sp") } else { a.desire("t", "sp", Value::F64(f64::from(i))) };
        b.merge(&d.unwrap()).unwrap();
    }
    let after = a.encode_state(None).len();
    assert_eq!(a.stats().fields, 2);
    // Only the varint widths of counters may grow, never per write.
    assert!(after <= first + 8, "state grew from {first} to {after} bytes over 5k desired writes");
    assert_eq!(a.desired("t", "sp").unwrap().len(), 1);
    assert_eq!(b.get("t", "sp"), Some(FieldValue::MultiValue(vec![Value::F64(4999.0)])));
}

/// The story: two partitioned nodes write the same desired field; after the heal both intents are
/// visible everywhere (with writer and stamp) until a later write resolves them.
#[test]
fn partitioned_desired_writes_conflict_until_a_later_write() {
    let (mut a, mut b) = (replica(0xA), replica(0xB));
    a.set_manual_time(Some(1_000_000));
    b.set_manual_time(Some(1_000_200));
    let da = a.desire("hvac", "setpoint", Value::F64(21.0)).unwrap();
    let db = b.desire("hvac", "setpoint", Value::F64(23.5)).unwrap();
    a.merge(&db).unwrap();
    b.merge(&da).unwrap();
    let both = FieldValue::MultiValue(vec![Value::F64(21.0), Value::F64(23.5)]);
    assert_eq!(a.get("hvac", "setpoint"), Some(both.clone()));
    assert_eq!(b.get("hvac", "setpoint"), Some(both));
    let seen: Vec<(u64, u64)> =
        a.desired("hvac", "setpoint").unwrap().iter().map(|s| (s.dot.replica, s.stamp >> 16)).collect();
    assert_eq!(seen, [(0xA, 1_000_000), (0xB, 1_000_200)]);
    let resolve = a.desire("hvac", "setpoint", Value::F64(22.0)).unwrap();
    b.merge(&resolve).unwrap();
    assert_eq!(b.get("hvac", "setpoint"), Some(FieldValue::MultiValue(vec![Value::F64(22.0)])));
    assert_eq!(a.encode_state(None), b.encode_state(None));
}

#[test]
fn a_desired_field_keeps_its_kind() {
    let mut a = replica(1);
    a.set("t", "reported", Value::F64(1.0)).unwrap();
    a.desire("t", "wanted", Value::F64(1.0)).unwrap();
    let conflict = |e: crdt_core::Error| matches!(e, crdt_core::Error::TypeConflict { .. });
    assert!(conflict(a.desire("t", "reported", Value::F64(2.0)).unwrap_err()));
    assert!(conflict(a.clear_desired("t", "reported").unwrap_err()));
    assert!(conflict(a.set("t", "wanted", Value::F64(2.0)).unwrap_err()));
    assert!(conflict(a.add("t", "wanted", "x").unwrap_err()));
    let msg = a.increment("t", "wanted", 1).unwrap_err().to_string();
    assert!(msg.contains("is a multi-value register, not a counter"), "{msg}");
    assert!(matches!(a.desire("t", "w2", Value::F64(f64::NAN)), Err(crdt_core::Error::InvalidValue(_))));
    assert_eq!(a.desired("t", "reported"), None);
    assert_eq!(a.entry("t", "wanted"), None);
}

#[test]
fn remove_then_concurrent_add_keeps_the_add() {
    let (mut a, mut b) = (replica(1), replica(2));
    let add = a.add("t", "tags", "x").unwrap();
    b.merge(&add).unwrap();
    let rm = b.remove("t", "tags", "x").unwrap();
    let re_add = a.add("t", "tags", "x").unwrap();
    a.merge(&rm).unwrap();
    b.merge(&re_add).unwrap();
    assert_eq!(a.get("t", "tags"), Some(FieldValue::Set(vec!["x".into()])));
    assert_eq!(a.encode_state(None), b.encode_state(None));
}

proptest! {
    #![proptest_config(cfg())]

    /// Reading the twins page by page, each page starting after the last name of the previous one, gives
    /// exactly the sorted listing (filtered by prefix): nothing skipped, nothing twice.
    #[test]
    fn twins_pages_concatenate_to_the_listing(
        names in proptest::collection::btree_set("[ab]{1,4}", 0..40),
        prefix in "[ab]{0,2}",
        limit in 1usize..6,
    ) {
        let mut s = replica(1);
        for name in &names {
            s.set(name, "x", Value::I64(1)).unwrap();
        }
        let mut paged: Vec<String> = Vec::new();
        loop {
            let page = s.twins_page(paged.last().map(String::as_str), &prefix, limit);
            prop_assert!(page.len() <= limit);
            let done = page.len() < limit;
            paged.extend(page);
            if done {
                break;
            }
        }
        let expected: Vec<String> = s.twins().into_iter().filter(|t| t.starts_with(prefix.as_str())).collect();
        prop_assert_eq!(paged, expected);
        prop_assert!(s.twins_page(None, "", 0).is_empty());
    }
}

/// A field's version names its state across replicas: equal after an exchange, new after every event of
/// that field (also one that brings back an earlier value), unchanged by the twin's other fields.
#[test]
fn field_versions_name_a_fields_state_on_every_replica() {
    let (mut a, mut b) = (replica(1), replica(2));
    let versions = |s: &Store| s.field_versions("t").unwrap().into_iter().collect::<std::collections::BTreeMap<_, _>>();
    a.set("t", "meta.site", Value::Str("north".into())).unwrap();
    a.add("t", "tags", "x").unwrap();
    a.desire("t", "sp", Value::F64(20.0)).unwrap();
    a.increment("t", "n", 2).unwrap();
    b.merge(&a.encode_state(None)).unwrap();
    let first = versions(&a);
    assert_eq!(first.keys().map(String::as_str).collect::<Vec<_>>(), ["meta.site", "n", "sp", "tags"]);
    assert_eq!(versions(&b), first);
    a.set("t", "x", Value::F64(1.0)).unwrap(); // another field: these keep their versions
    let mut seen: BTreeSet<u64> = first.values().copied().collect();
    for (field, op) in [("tags", 0), ("tags", 1), ("sp", 2), ("sp", 3), ("sp", 4), ("n", 5), ("meta.site", 6)] {
        let before = versions(&a);
        match op {
            0 => a.remove("t", "tags", "x"),
            1 => a.add("t", "tags", "x"), // the same elements as at first, a new state all the same
            2 => a.clear_desired("t", "sp"),
            3 => a.desire("t", "sp", Value::F64(20.0)),
            4 => b.desire("t", "sp", Value::F64(21.0)).and_then(|d| a.merge(&d).map(|_| d)), // a conflict
            5 => a.increment("t", "n", -2),
            _ => a.set("t", "meta.site", Value::Str("north".into())),
        }
        .unwrap();
        let after = versions(&a);
        for (name, version) in &after {
            if name == field {
                assert!(seen.insert(*version), "{field}: op {op} gave a version seen before");
            } else if name != "x" {
                assert_eq!(before.get(name), Some(version), "{name} moved with {field}");
            }
        }
    }
    b.merge(&a.encode_state(None)).unwrap();
    assert_eq!(versions(&b), versions(&a));
}

fn set_op(s: &mut Store, add: bool, element: &str) -> Vec<u8> {
    if add { s.add("t", "s", element) } else { s.remove("t", "s", element) }.unwrap()
}

proptest! {
    #![proptest_config(cfg())]

    /// A request's adds and removes of one set applied in one call (`set_ops`, one delta) give the state
    /// the calls one by one give, on the origin and on a peer that saw any of the set's earlier deltas;
    /// and the one delta is the join of the one-by-one deltas.
    #[test]
    fn batched_set_ops_equal_sequential_ones(
        before in proptest::collection::vec((any::<bool>(), 0u8..4), 0..10),
        batch in proptest::collection::vec((any::<bool>(), 0u8..4), 1..30),
        peer_saw in proptest::collection::vec(any::<bool>(), 10),
    ) {
        let (mut one, mut many) = (replica(1), replica(1));
        let mut earlier = Vec::new();
        for &(add, e) in &before {
            earlier.push(set_op(&mut one, add, &format!("e{e}")));
            set_op(&mut many, add, &format!("e{e}"));
        }
        let deltas: Vec<Vec<u8>> = batch.iter().map(|&(add, e)| set_op(&mut one, add, &format!("e{e}"))).collect();
        let names: Vec<(bool, String)> = batch.iter().map(|&(add, e)| (add, format!("e{e}"))).collect();
        let ops: Vec<(bool, &str)> = names.iter().map(|(add, e)| (*add, e.as_str())).collect();
        let batched = many.set_ops("t", "s", &ops).unwrap();
        prop_assert_eq!(state(&one), state(&many));
        let (mut by_each, mut by_batch) = (replica(2), replica(2));
        for (d, _) in earlier.iter().zip(&peer_saw).filter(|(_, saw)| **saw) {
            by_each.merge(d).unwrap();
            by_batch.merge(d).unwrap();
        }
        for d in &deltas {
            by_each.merge(d).unwrap();
        }
        by_batch.merge(&batched).unwrap();
        prop_assert_eq!(state(&by_each), state(&by_batch));
        let refs: Vec<&[u8]> = deltas.iter().map(Vec::as_slice).collect();
        let (mut by_join, mut by_one) = (replica(3), replica(3));
        by_join.merge(&crdt_core::join(&refs, Default::default()).unwrap()).unwrap();
        by_one.merge(&batched).unwrap();
        prop_assert_eq!(state(&by_join), state(&by_one));
    }
}

#[test]
fn batched_set_ops_check_every_element_first() {
    let mut s = replica(1);
    s.add("t", "s", "a").unwrap();
    let before = state(&s);
    let long = "x".repeat(100_000);
    assert!(s.set_ops("t", "s", &[(true, "b"), (true, long.as_str())]).is_err());
    assert!(s.set_ops("t", "s", &[]).is_err());
    assert_eq!(state(&s), before);
}

/// Bursts of writes to a twin's other fields between its set's events, on several replicas, with deltas
/// delivered in any order (some never) and full-state syncs.
fn interleaved_ops(n: usize) -> impl Strategy<Value = Vec<Op>> {
    let burst = (0..n, 1usize..60, 0..FIELDS.len()).prop_map(|(r, k, f)| {
        (0..k).map(|i| Op::Set { r, t: 0, f: (f + i) % FIELDS.len(), v: Value::F64(i as f64) }).collect()
    });
    let add = (0..n, 0..SETS.len(), 0..ELEMS.len()).prop_map(|(r, f, e)| vec![Op::Add { r, t: 0, f, e }]);
    let remove = (0..n, 0..SETS.len(), 0..ELEMS.len()).prop_map(|(r, f, e)| vec![Op::Remove { r, t: 0, f, e }]);
    let deliver = (any::<usize>(), 0..n).prop_map(|(delta, to)| vec![Op::Deliver { delta, to }]);
    let sync = (0..n, 0..n).prop_map(|(from, to)| vec![Op::Sync { from, to }]);
    proptest::collection::vec(prop_oneof![3 => burst, 3 => add, 1 => remove, 3 => deliver, 1 => sync], 1..40)
        .prop_map(|v: Vec<Vec<Op>>| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// A set's context is one range per writer that wrote it, however many writes of the twin's other fields
    /// fall between its events (tla/DotKernelSet.tla VersionVector), so its deltas stay small; and with the
    /// set's context kept apart from the twin's, no replica takes those writes as seen before it holds them
    /// (OtherWritesKept: the sequential spec below checks every register against the twin context).
    #[test]
    fn set_context_stays_bounded_by_its_writers(ops in interleaved_ops(3)) {
        let (stores, deltas, events) = run(&ops, 3);
        for s in &stores {
            check_spec(s, &events)?;
            for field in SETS {
                let cc = set_context(s, TWINS[0], field);
                prop_assert!(cc.cloud().is_empty(), "set {} keeps gaps: {:?}", field, cc);
                prop_assert!(cc.ranges().len() <= 3);
            }
        }
        for d in &deltas {
            let msg = crdt_core::pb::StateDelta::decode(d.as_slice()).unwrap();
            if !msg.twins.iter().any(|t| !t.sets.is_empty()) {
                continue;
            }
            // Three elements with at most one add dot per writer each, three writers, one twin dot: the size
            // is bounded by the set, not by the thousands of writes of other fields made meanwhile.
            prop_assert!(d.len() <= 160, "a set delta of {} B", d.len());
        }
        let mut all = replica(99);
        for s in &stores {
            all.merge(&s.encode_state(None)).unwrap();
        }
        check_spec(&all, &events)?;
    }
}

/// The figure of the README's former known limitation: an add's delta after 1,000 writes of a number on the
/// same twin is the size of the first add's (it was 45 B and then 5.9 KB).
#[test]
fn a_set_delta_does_not_grow_with_its_twins_other_writes() {
    let (mut a, mut b) = (replica(1), replica(2));
    let alone = a.add("t", "tags", "a").unwrap();
    b.merge(&alone).unwrap();
    let mut last = Vec::new();
    for i in 0..1_000 {
        b.merge(&a.set("t", "n", Value::F64(f64::from(i))).unwrap()).unwrap();
        last = a.add("t", "tags", ["a", "b"][i as usize % 2]).unwrap();
        if i % 7 != 0 {
            b.merge(&last).unwrap(); // some deltas lost: the last one brings the set whole
        }
    }
    // The twin dot's varint grows from 1 to 2 bytes, and two elements are present rather than one.
    assert!(last.len() <= alone.len() + 16, "{} B alone, {} B after 1,000 interleaved writes", alone.len(), last.len());
    b.merge(&last).unwrap();
    assert_eq!(b.get("t", "tags"), Some(FieldValue::Set(vec!["a".into(), "b".into()])));
    assert_eq!(b.get("t", "n"), Some(FieldValue::Register(Value::F64(999.0))));
    assert_eq!(set_context(&b, "t", "tags"), Context::from_parts([(1, 2001)], []));
    // The twin context claims only what arrived (the lost adds' dots are gaps until a catch-up), and never
    // a write of the number that did not.
    for msg in a.catch_up(&b.version(None), false, usize::MAX).unwrap() {
        b.merge(&msg).unwrap();
    }
    assert_eq!(b.context("t"), a.context("t"));
    assert_eq!(b.encode_state(None), a.encode_state(None));
}

/// One field's ops of a batch (`crdt_core::FieldWrite`): twin 0 or 1, a counter, set or desired field of
/// two each (so the batch's own kinds never conflict), 1-3 events.
fn field_write() -> impl Strategy<Value = crdt_core::FieldWrite> {
    use crdt_core::{FieldOps, FieldWrite};
    let twin = 0..2usize;
    let named = |kind: &'static str, t: usize, f: usize| (TWINS[t].to_owned(), format!("{kind}{f}"));
    prop_oneof![
        (twin.clone(), 0..2usize, proptest::collection::vec(-3i64..4, 1..4)).prop_map(move |(t, f, a)| {
            let (t, f) = named("c", t, f);
            FieldWrite::new(t, f, FieldOps::Increments(a))
        }),
        (twin.clone(), 0..2usize, proptest::collection::vec((any::<bool>(), 0u8..3), 1..4)).prop_map(
            move |(t, f, ops)| {
                let (t, f) = named("s", t, f);
                FieldWrite::new(t, f, FieldOps::Set(ops.into_iter().map(|(a, e)| (a, format!("e{e}"))).collect()))
            }
        ),
        (twin, 0..2usize, proptest::collection::vec(proptest::option::weighted(0.8, value()), 1..4)).prop_map(
            move |(t, f, v)| {
                let (t, f) = named("d", t, f);
                FieldWrite::new(t, f, FieldOps::Desired(v))
            }
        ),
    ]
}

const TWINS: [&str; 2] = ["t1", "t0"];

/// The single calls `write_ops` stands for, each with its delta.
fn each_call(s: &mut Store, w: &crdt_core::FieldWrite) -> Vec<Vec<u8>> {
    let (t, f) = (w.twin.as_str(), w.field.as_str());
    match &w.ops {
        crdt_core::FieldOps::Increments(a) => a.iter().map(|&n| s.increment(t, f, n).unwrap()).collect(),
        crdt_core::FieldOps::Set(ops) => {
            let refs: Vec<(bool, &str)> = ops.iter().map(|(a, e)| (*a, e.as_str())).collect();
            vec![s.set_ops(t, f, &refs).unwrap()]
        }
        crdt_core::FieldOps::Desired(values) => values
            .iter()
            .map(|v| match v {
                Some(v) => s.desire(t, f, v.clone()).unwrap(),
                None => s.clear_desired(t, f).unwrap(),
            })
            .collect(),
    }
}

proptest! {
    #![proptest_config(cfg())]

    /// A request's counter, set and desired events in one batch (`write_ops`, one delta) give the state
    /// the calls one by one give, byte for byte, after any earlier history (a peer's events merged too);
    /// the one delta is the join of theirs, byte for byte; a peer that saw any of the earlier deltas
    /// ends where the single deltas take it; and merging the batch delta with a concurrent replica's is
    /// idempotent and commutative.
    #[test]
    fn batched_field_ops_equal_sequential_ones(
        before in proptest::collection::vec(field_write(), 0..6),
        theirs in proptest::collection::vec(field_write(), 0..4),
        batch in proptest::collection::vec(field_write(), 1..10),
        peer_saw in proptest::collection::vec(any::<bool>(), 12),
        readings in proptest::collection::vec((0..2usize, 0..4usize), 1..8),
    ) {
        let mut peer = replica(2);
        let their_deltas: Vec<Vec<u8>> = theirs.iter().flat_map(|w| each_call(&mut peer, w)).collect();
        let (mut one, mut many) = (replica(1), replica(1));
        let mut earlier = Vec::new();
        for w in &before {
            earlier.extend(each_call(&mut one, w));
            each_call(&mut many, w);
        }
        for d in &their_deltas {
            one.merge(d).unwrap();
            many.merge(d).unwrap();
        }
        let deltas: Vec<Vec<u8>> = batch.iter().flat_map(|w| each_call(&mut one, w)).collect();
        let batched = many.write_ops(&batch).unwrap();
        prop_assert_eq!(state(&one), state(&many));
        let refs: Vec<&[u8]> = deltas.iter().map(Vec::as_slice).collect();
        prop_assert_eq!(&batched, &crdt_core::join(&refs, Default::default()).unwrap());
        let (mut by_each, mut by_batch) = (replica(3), replica(3));
        for (d, _) in earlier.iter().zip(&peer_saw).filter(|(_, saw)| **saw) {
            by_each.merge(d).unwrap();
            by_batch.merge(d).unwrap();
        }
        for d in &deltas {
            by_each.merge(d).unwrap();
        }
        by_batch.merge(&batched).unwrap();
        prop_assert_eq!(state(&by_each), state(&by_batch));
        // With f64 readings in front (`write_mixed`): the state of `write_batch` then the calls, and a
        // delta that takes a peer where their deltas do.
        let (mut mixed, mut apart) = (replica(1), replica(1));
        for s in [&mut mixed, &mut apart] {
            for w in &before {
                each_call(s, w);
            }
            for d in &their_deltas {
                s.merge(d).unwrap();
            }
        }
        let rows: Vec<(u32, u32)> = readings.iter().map(|&(t, f)| {
            (mixed.intern_twin(TWINS[t]).unwrap(), mixed.intern_field(&format!("r{f}")).unwrap())
        }).collect();
        let (tids, fids): (Vec<u32>, Vec<u32>) = rows.iter().copied().unzip();
        let values: Vec<f64> = (0..rows.len()).map(|i| i as f64).collect();
        let zeros = vec![0i64; rows.len()];
        let one_delta = mixed.write_mixed(&tids, &fids, &values, &zeros, &batch).unwrap();
        let (atids, afids): (Vec<u32>, Vec<u32>) = readings.iter().map(|&(t, f)| {
            (apart.intern_twin(TWINS[t]).unwrap(), apart.intern_field(&format!("r{f}")).unwrap())
        }).unzip();
        let mut apart_deltas = vec![apart.write_batch(&atids, &afids, &values, &zeros).unwrap()];
        apart_deltas.extend(batch.iter().flat_map(|w| each_call(&mut apart, w)));
        prop_assert_eq!(state(&mixed), state(&apart));
        let (mut by_one, mut by_parts) = (replica(5), replica(5));
        by_one.merge(&one_delta).unwrap();
        apart_deltas.iter().for_each(|d| _ = by_parts.merge(d).unwrap());
        prop_assert_eq!(state(&by_one), state(&by_parts));
        let concurrent = peer.write_ops(&batch).unwrap();
        let (mut ab, mut ba) = (replica(4), replica(4));
        for d in [&batched, &concurrent, &batched] {
            ab.merge(d).unwrap();
        }
        for d in [&concurrent, &batched, &concurrent] {
            ba.merge(d).unwrap();
        }
        prop_assert_eq!(state(&ab), state(&ba));
    }
}

/// A bad op anywhere in a batch changes nothing: the batch's own kinds conflicting, an overflow, a
/// non-finite desired value.
#[test]
fn batched_field_ops_check_every_op_first() {
    use crdt_core::{FieldOps, FieldWrite};
    let mut s = replica(1);
    s.add("t", "s", "a").unwrap();
    let before = state(&s);
    let good = FieldWrite::new("t", "s", FieldOps::Set(vec![(true, "b".into())]));
    for bad in [
        FieldWrite::new("t", "s", FieldOps::Increments(vec![1])),
        FieldWrite::new("u", "n", FieldOps::Increments(vec![i64::MAX, 1])),
        FieldWrite::new("u", "d", FieldOps::Desired(vec![Some(Value::F64(f64::INFINITY))])),
    ] {
        assert!(s.write_ops(&[good.clone(), bad]).is_err());
        assert_eq!(state(&s), before);
    }
}
