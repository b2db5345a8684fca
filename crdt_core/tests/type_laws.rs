//! The lattice laws of each CRDT type on its own (the store-level laws in `laws.rs` cover them embedded):
//! merge is idempotent, commutative and associative for `LwwReg`, `PnCounter`, `OrSet` and `MvReg`.
use crdt_core::{Dot, LwwReg, MvReg, OrSet, PnCounter, Value};
use proptest::prelude::*;

/// A register write; one event (dot) writes one value, so the value is a function of the dot.
fn lww() -> impl Strategy<Value = LwwReg> {
    (1u64..4, 1u64..6).prop_map(|(r, c)| {
        let stamp = (c * 7 + r * 3) % 5;
        LwwReg::new(Value::I64((r * 10 + c) as i64), stamp, Dot::new(r, c))
    })
}

/// A counter built by a run of updates from three writers (each writer's counters increase).
fn counter() -> impl Strategy<Value = PnCounter> {
    proptest::collection::vec((1u64..4, -5i64..6), 0..8).prop_map(|ops| {
        let mut c = PnCounter::new();
        let mut next = [0u64; 4];
        for (r, n) in ops {
            next[r as usize] += 1;
            c.apply(Dot::new(r, next[r as usize]), n).unwrap();
        }
        c
    })
}

/// Three replicas' sets after random adds and removes with occasional merges. A set's events take its
/// twin's dots, so between two of one writer lie that writer's events of other fields (`gap` of them).
fn orset() -> impl Strategy<Value = (OrSet, OrSet, OrSet)> {
    proptest::collection::vec((0usize..3, 0usize..3, 0u8..3, 0u64..4), 0..14).prop_map(|ops| {
        let mut sets = [OrSet::new(), OrSet::new(), OrSet::new()];
        let mut next = [0u64; 3];
        for (r, e, op, gap) in ops {
            let elem = ["a", "b", "c"][e];
            match op {
                0 | 1 => {
                    next[r] += 1 + gap;
                    let dot = Dot::new(r as u64 + 1, next[r]);
                    if op == 0 {
                        sets[r].add(elem, dot)
                    } else {
                        sets[r].remove(elem, dot)
                    }
                }
                _ => {
                    let other = sets[(r + 1) % 3].clone();
                    sets[r].merge(&other);
                }
            }
        }
        let [a, b, c] = sets;
        (a, b, c)
    })
}

/// Three replicas' multi-value registers after random writes, clears and merges (whole-register deltas
/// delivered in any order, some twice, some never).
fn mvreg() -> impl Strategy<Value = [MvReg; 3]> {
    proptest::collection::vec((0usize..3, 0u8..5, 0usize..3), 0..16).prop_map(|ops| {
        let mut regs = [MvReg::new(), MvReg::new(), MvReg::new()];
        let mut sent: Vec<MvReg> = Vec::new();
        for (stamp, (r, op, k)) in ops.into_iter().enumerate() {
            match op {
                0 | 1 => {
                    regs[r].write(r as u64 + 1, Value::I64(stamp as i64), stamp as u64);
                    sent.push(regs[r].clone());
                }
                2 => {
                    regs[r].clear(r as u64 + 1);
                    sent.push(regs[r].clone());
                }
                3 => {
                    let other = regs[k].clone();
                    regs[r].merge(&other);
                }
                _ if !sent.is_empty() => {
                    let delta = sent[(k * 7 + stamp) % sent.len()].clone();
                    regs[r].merge(&delta);
                }
                _ => {}
            }
        }
        regs
    })
}

fn joined<T: Clone>(a: &T, b: &T, merge: impl Fn(&mut T, &T)) -> T {
    let mut x = a.clone();
    merge(&mut x, b);
    x
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn lww_register_laws(a in lww(), b in lww(), c in lww()) {
        let m = |x: &mut LwwReg, y: &LwwReg| x.merge(y);
        prop_assert_eq!(joined(&a, &a, m), a.clone());
        prop_assert_eq!(joined(&a, &b, m), joined(&b, &a, m));
        prop_assert_eq!(joined(&joined(&a, &b, m), &c, m), joined(&a, &joined(&b, &c, m), m));
    }

    #[test]
    fn pn_counter_laws(a in counter(), b in counter(), c in counter()) {
        let m = |x: &mut PnCounter, y: &PnCounter| { x.merge(y); };
        prop_assert_eq!(joined(&a, &a, m), a.clone());
        prop_assert_eq!(joined(&a, &b, m), joined(&b, &a, m));
        prop_assert_eq!(joined(&joined(&a, &b, m), &c, m), joined(&a, &joined(&b, &c, m), m));
    }

    #[test]
    fn or_set_laws((a, b, c) in orset()) {
        let m = |x: &mut OrSet, y: &OrSet| { x.merge(y); };
        prop_assert_eq!(joined(&a, &a, m), a.clone());
        prop_assert_eq!(joined(&a, &b, m), joined(&b, &a, m));
        prop_assert_eq!(joined(&joined(&a, &b, m), &c, m), joined(&a, &joined(&b, &c, m), m));
    }

    /// A set's context stays one range per writer, whatever gaps the twin's other fields leave between its
    /// events (tla/DotKernelSet.tla VersionVector): the set is bounded by its elements and writers.
    #[test]
    fn or_set_context_stays_a_version_vector((a, b, c) in orset()) {
        let all = joined(&joined(&a, &b, |x: &mut OrSet, y| { x.merge(y); }), &c, |x, y| { x.merge(y); });
        for s in [&a, &b, &c, &all] {
            prop_assert!(s.context().cloud().is_empty(), "{:?}", s);
            prop_assert!(s.context().ranges().len() <= 3);
        }
    }

    #[test]
    fn mv_register_laws([a, b, c] in mvreg()) {
        let m = |x: &mut MvReg, y: &MvReg| { x.merge(y); };
        prop_assert_eq!(joined(&a, &a, m), a.clone());
        prop_assert_eq!(joined(&a, &b, m), joined(&b, &a, m));
        prop_assert_eq!(joined(&joined(&a, &b, m), &c, m), joined(&a, &joined(&b, &c, m), m));
    }

    /// The register's bounds: its context is a version vector (no dot cloud, however deltas arrived), it
    /// holds at most one sibling per writer, each its writer's newest event; and equal contexts imply equal
    /// registers.
    #[test]
    fn mv_register_stays_bounded_and_its_context_decides_it([a, b, c] in mvreg()) {
        let all = joined(&joined(&a, &b, |x: &mut MvReg, y| { x.merge(y); }), &c, |x, y| { x.merge(y); });
        for r in [&a, &b, &c, &all] {
            prop_assert!(r.context().cloud().is_empty(), "{:?}", r);
            for s in r.siblings() {
                prop_assert_eq!(s.dot.counter, r.context().contiguous(s.dot.replica), "{:?}", r);
            }
        }
        for (x, y) in [(&a, &b), (&b, &c), (&a, &c), (&a, &all)] {
            if x.context() == y.context() {
                prop_assert_eq!(x, y);
            }
        }
    }
}
