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
    // StateDelta { format: 2 }
    assert_eq!(s.merge(&[0x08, 0x02]).unwrap_err(), Error::UnknownFormat(2));
    assert_eq!(s.merge(&[]).unwrap_err(), Error::UnknownFormat(0));
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
