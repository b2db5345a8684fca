//! Bounded mutation fuzzing of every decoder on stable Rust (CI runs it on each commit; the libFuzzer
//! target in `crdt_core/fuzz` explores further on nightly). Seeds are the golden vectors; each input is
//! mutated (bit flips, byte edits, truncation, insertion, splicing) and fed to `merge`, `catch_up` and
//! `differing_twins`. The properties: no panic, and a message that is refused changes nothing.
use crdt_core::{Error, Store};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*: deterministic, so a failure replays from the printed seed.
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

fn seeds() -> Vec<Vec<u8>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        let clean: String = text.split_whitespace().collect();
        out.push((0..clean.len()).step_by(2).map(|i| u8::from_str_radix(&clean[i..i + 2], 16).unwrap()).collect());
    }
    out
}

fn mutate(rng: &mut Rng, input: &[u8], seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut b = input.to_vec();
    for _ in 0..=rng.below(4) {
        match rng.below(6) {
            0 if !b.is_empty() => {
                let i = rng.below(b.len());
                b[i] ^= 1 << rng.below(8);
            }
            1 if !b.is_empty() => {
                let i = rng.below(b.len());
                b[i] = [0, 1, 0x7f, 0x80, 0xff][rng.below(5)];
            }
            2 => b.truncate(rng.below(b.len() + 1)),
            3 => {
                let i = rng.below(b.len() + 1);
                b.insert(i, rng.next() as u8);
            }
            4 => {
                let other = &seeds[rng.below(seeds.len())];
                let cut = rng.below(other.len() + 1);
                let at = rng.below(b.len() + 1);
                b.splice(at..at, other[..cut].iter().copied());
            }
            _ if !b.is_empty() => {
                b.remove(rng.below(b.len()));
            }
            _ => {}
        }
    }
    b
}

#[test]
fn mutated_messages_never_panic_and_refused_ones_change_nothing() {
    let iterations: usize = std::env::var("FUZZ_ITERS").ok().and_then(|v| v.parse().ok()).unwrap_or(30_000);
    let seed: u64 = std::env::var("FUZZ_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(0x5eed_d75d);
    println!("FUZZ_SEED={seed} FUZZ_ITERS={iterations}");
    let seeds = seeds();
    let mut rng = Rng(seed);
    let mut store = Store::new(7, 500);
    store.set_manual_time(Some(1_700_000_000_500));
    // A local desired field the seeds' registers merge into (or conflict with, by kind).
    store.desire("boiler-1", "setpoint", crdt_core::Value::F64(60.0)).unwrap();
    let (mut accepted, mut refused) = (0u32, 0u32);
    for i in 0..iterations {
        let base = &seeds[rng.below(seeds.len())];
        let input = mutate(&mut rng, base, &seeds);
        let before = store.encode_state(None);
        match store.merge(&input) {
            Ok(_) => accepted += 1,
            Err(e) => {
                refused += 1;
                assert!(
                    matches!(e, Error::Decode(_) | Error::UnknownFormat(_) | Error::Limit(_) | Error::ClockSkew { .. }),
                    "iteration {i}: unexpected error kind {e:?}"
                );
                assert_eq!(store.encode_state(None), before, "iteration {i}: a refused message changed the state");
            }
        }
        let _ = store.catch_up(&input, rng.below(2) == 0, 1 << 12);
        let _ = store.differing_twins(&input);
    }
    println!("accepted {accepted}, refused {refused}");
    assert!(refused > 0 && accepted > 0, "the mutator should produce both valid and invalid messages");
}

#[test]
fn oversized_messages_are_refused_before_decoding() {
    let mut s = Store::new(1, 500);
    s.set_limits(crdt_core::Limits { max_message_bytes: 16, ..Default::default() });
    let err = s.merge(&[0u8; 17]).unwrap_err();
    assert_eq!(err, Error::TooLarge { size: 17, limit: 16 });
}

#[test]
fn unknown_format_versions_are_refused() {
    let mut s = Store::new(1, 500);
    // StateDelta { format: 3 }
    assert_eq!(s.merge(&[0x08, 0x03]).unwrap_err(), Error::UnknownFormat(3));
    assert_eq!(s.merge(&[]).unwrap_err(), Error::UnknownFormat(0));
    // V2 is written, V1 still read (snapshots and logs from before V2).
    assert_eq!(s.merge(&[0x08, 0x02]), Ok(vec![]));
    assert_eq!(s.merge(&[0x08, 0x01]), Ok(vec![]));
}

#[test]
fn far_future_stamps_are_refused_by_the_clock_gate() {
    let mut a = Store::new(1, 500);
    a.set_manual_time(Some(1_000_000 + 3_600_000));
    let delta = a.set("t", "x", crdt_core::Value::F64(1.0)).unwrap();
    let mut b = Store::new(2, 500);
    b.set_manual_time(Some(1_000_000));
    let before = b.clock_high_water();
    assert!(matches!(b.merge(&delta), Err(Error::ClockSkew { .. })));
    assert_eq!(b.clock_high_water(), before);
    assert!(b.twins().is_empty());
}

/// Multi-value registers that no honest replica holds are refused whole (they would break the register's
/// bound of one sibling per writer, or its version-vector context), and change nothing.
#[test]
fn malformed_multi_value_registers_are_refused() {
    use crdt_core::pb;
    use prost::Message;
    let sibling =
        |writer: u32, counter: u64, value: Option<pb::sibling::Value>| pb::Sibling { writer, counter, stamp: 1, value };
    let f64v = |x: f64| Some(pb::sibling::Value::F64(x));
    let vv = |max: Vec<u64>| pb::Context { writers: (0..max.len() as u32).collect(), max, ..Default::default() };
    let cases: Vec<(&str, pb::Context, Vec<pb::Sibling>)> = vec![
        (
            "cloud",
            pb::Context { cloud_writers: vec![0], cloud_counters: vec![3], ..vv(vec![1]) },
            vec![sibling(0, 1, f64v(1.0))],
        ),
        ("not newest", vv(vec![2]), vec![sibling(0, 1, f64v(1.0))]),
        ("not seen", vv(vec![1]), vec![sibling(0, 2, f64v(1.0))]),
        ("one writer twice", vv(vec![2]), vec![sibling(0, 2, f64v(1.0)), sibling(0, 2, f64v(2.0))]),
        ("no value", vv(vec![1]), vec![sibling(0, 1, None)]),
        ("nan", vv(vec![1]), vec![sibling(0, 1, f64v(f64::NAN))]),
        ("writer outside the table", vv(vec![1]), vec![sibling(5, 1, f64v(1.0))]),
        ("counter 0", vv(vec![1]), vec![sibling(0, 0, f64v(1.0))]),
    ];
    let mut s = Store::new(7, 500);
    s.desire("t", "sp", crdt_core::Value::F64(0.5)).unwrap();
    let before = s.encode_state(None);
    for (what, context, siblings) in cases {
        let msg = pb::StateDelta {
            format: 1,
            replicas: vec![1, 2],
            twins: vec![pb::TwinState {
                twin: "t".into(),
                multi_values: vec![pb::MultiValueState { field: "sp".into(), context: Some(context), siblings }],
                ..Default::default()
            }],
        };
        let err = s.merge(&msg.encode_to_vec()).unwrap_err();
        assert!(matches!(err, Error::Decode(_)), "{what}: {err:?}");
        assert_eq!(s.encode_state(None), before, "{what}: a refused message changed the state");
    }
}
