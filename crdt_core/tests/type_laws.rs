//! The lattice laws of each CRDT type on its own (the store-level laws in `laws.rs` cover them embedded):
//! merge is idempotent, commutative and associative for `LwwReg`, `PnCounter` and `OrSet`.
use crdt_core::{Dot, LwwReg, OrSet, PnCounter, Value};
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

/// Three replicas' sets after random adds and removes with occasional merges; one of them is returned.
fn orset() -> impl Strategy<Value = (OrSet, OrSet, OrSet)> {
    proptest::collection::vec((0usize..3, 0usize..3, 0u8..3), 0..14).prop_map(|ops| {
        let mut sets = [OrSet::new(), OrSet::new(), OrSet::new()];
        let mut next = [0u64; 3];
        for (r, e, op) in ops {
            let elem = ["a", "b", "c"][e];
            match op {
                0 | 1 => {
                    next[r] += 1;
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
}
