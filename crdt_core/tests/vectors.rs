//! Golden byte vectors: a fixed scenario's deltas, full state, version, digest and catch-up, compared byte
//! for byte with the files under `tests/vectors/`, so the wire format can never drift silently. After an
//! intended format change (with a new format version), regenerate with `UPDATE_GOLDEN=1 cargo test --test vectors`.
use std::path::PathBuf;

use crdt_core::{FieldValue, Store, Value};

fn scenario() -> Vec<(&'static str, Vec<u8>)> {
    let mut a = Store::new(0x0A, 500);
    let mut b = Store::new(0x0B, 500);
    a.set_manual_time(Some(1_700_000_000_000));
    b.set_manual_time(Some(1_700_000_000_250));
    let mut out = Vec::new();
    out.push(("register_f64", a.set("boiler-1", "temp", Value::F64(71.25)).unwrap()));
    let mixed = vec![
        ("mode".to_owned(), Value::Str("auto".into())),
        ("setpoint".to_owned(), Value::I64(-4)),
        ("enabled".to_owned(), Value::Bool(true)),
        ("blob".to_owned(), Value::Bytes(vec![0, 255, 7])),
    ];
    out.push(("register_mixed", a.set_many("boiler-1", mixed).unwrap()));
    let (t1, t2) = (b.intern_twin("room-1").unwrap(), b.intern_twin("room-2").unwrap());
    let (f1, f2) = (b.intern_field("temp_1").unwrap(), b.intern_field("humidity").unwrap());
    let batch = b
        .write_batch(&[t1, t1, t2], &[f1, f2, f1], &[21.5, 40.0, 19.75], &[1_699_999_999_000, 1_699_999_999_010, 0])
        .unwrap();
    out.push(("batch_source_stamped", batch));
    out.push(("counter", b.increment("boiler-1", "starts", 3).unwrap()));
    out.push(("set_add", b.add("boiler-1", "tags", "critical").unwrap()));
    for (_, d) in out.clone() {
        a.merge(&d).unwrap();
        b.merge(&d).unwrap();
    }
    out.push(("set_remove", a.remove("boiler-1", "tags", "critical").unwrap()));
    out.push(("version_b", b.version(None)));
    out.push(("catch_up_a_to_b", a.catch_up(&b.version(None), false, usize::MAX).unwrap().concat()));
    out.push(("full_state_a", a.encode_state(None)));
    out.push(("digest_a", a.digest()));
    out.extend(multi_value_scenario());
    out.extend(batch_ops_scenario());
    out
}

/// The multi-value register on its own (added with format V1's `multi_values`; the vectors above, from
/// before it, must not change): one write, a conflict after a partition, the write that resolves it, a clear.
fn multi_value_scenario() -> Vec<(&'static str, Vec<u8>)> {
    let mut a = Store::new(0x0A, 500);
    let mut b = Store::new(0x0B, 500);
    a.set_manual_time(Some(1_700_000_000_000));
    b.set_manual_time(Some(1_700_000_000_250));
    let single = a.desire("boiler-1", "setpoint", Value::F64(65.0)).unwrap();
    let other = b.desire("boiler-1", "setpoint", Value::Str("eco".into())).unwrap();
    a.merge(&other).unwrap();
    let conflict = a.encode_state(None);
    let resolved = a.desire("boiler-1", "setpoint", Value::I64(67)).unwrap();
    b.merge(&single).unwrap();
    b.merge(&resolved).unwrap();
    let clear = b.clear_desired("boiler-1", "setpoint").unwrap();
    vec![
        ("multi_value_single", single),
        ("multi_value_conflict", conflict),
        ("multi_value_resolved", resolved),
        ("multi_value_clear", clear),
    ]
}

/// A request's counter, set and desired events as one delta (`write_ops`), and with f64 readings
/// (`write_mixed`): added after the vectors above, which must not change.
fn batch_ops_scenario() -> Vec<(&'static str, Vec<u8>)> {
    use crdt_core::{FieldOps, FieldWrite};
    let mut c = Store::new(0x0C, 500);
    c.set_manual_time(Some(1_700_000_000_500));
    let ops = c
        .write_ops(&[
            FieldWrite::new("pump-2", "starts", FieldOps::Increments(vec![2, -1])),
            FieldWrite::new("boiler-1", "tags", FieldOps::Set(vec![(true, "hot".into()), (false, "cold".into())])),
            FieldWrite::new("pump-2", "rpm.desired", FieldOps::Desired(vec![Some(Value::F64(1450.0)), None])),
        ])
        .unwrap();
    let (t, f) = (c.intern_twin("pump-2").unwrap(), c.intern_field("flow").unwrap());
    let mixed = c
        .write_mixed(
            &[t],
            &[f],
            &[3.5],
            &[0],
            &[FieldWrite::new("pump-2", "rpm.desired", FieldOps::Desired(vec![Some(Value::I64(1500))]))],
        )
        .unwrap();
    vec![("batch_ops", ops), ("batch_mixed", mixed)]
}

fn golden(name: &str) -> Vec<u8> {
    let text = std::fs::read_to_string(dir().join(format!("{name}.hex"))).unwrap();
    let clean: String = text.split_whitespace().collect();
    (0..clean.len()).step_by(2).map(|i| u8::from_str_radix(&clean[i..i + 2], 16).unwrap()).collect()
}

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/vectors")
}

fn hex(b: &[u8]) -> String {
    let mut s: String =
        b.iter().map(|x| format!("{x:02x}")).collect::<Vec<_>>().chunks(32).map(|c| c.concat() + "\n").collect();
    if s.is_empty() {
        s.push('\n');
    }
    s
}

#[test]
fn encodings_match_the_golden_vectors() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    for (name, bytes) in scenario() {
        let path = dir().join(format!("{name}.hex"));
        if update {
            std::fs::write(&path, hex(&bytes)).unwrap();
            continue;
        }
        let golden = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(hex(&bytes), golden, "{name} drifted from {}", path.display());
    }
}

#[test]
fn golden_full_state_decodes_to_the_expected_twins() {
    let bytes = golden("full_state_a");
    let mut s = Store::new(99, 500);
    s.set_manual_time(Some(1_700_000_000_000));
    s.merge(&bytes).unwrap();
    assert_eq!(s.twins(), vec!["boiler-1", "room-1", "room-2"]);
    assert_eq!(s.get("boiler-1", "temp"), Some(FieldValue::Register(Value::F64(71.25))));
    assert_eq!(s.get("boiler-1", "mode"), Some(FieldValue::Register(Value::Str("auto".into()))));
    assert_eq!(s.get("boiler-1", "setpoint"), Some(FieldValue::Register(Value::I64(-4))));
    assert_eq!(s.get("boiler-1", "blob"), Some(FieldValue::Register(Value::Bytes(vec![0, 255, 7]))));
    assert_eq!(s.get("boiler-1", "starts"), Some(FieldValue::Counter(3)));
    assert_eq!(s.get("boiler-1", "tags"), Some(FieldValue::Set(vec![])));
    assert_eq!(s.get("room-1", "humidity"), Some(FieldValue::Register(Value::F64(40.0))));
    assert_eq!(s.entry("room-1", "temp_1").unwrap().stamp >> 16, 1_699_999_999_000);
}

#[test]
fn golden_multi_value_vectors_decode_to_the_conflict_and_its_resolution() {
    let mut s = Store::new(99, 500);
    s.set_manual_time(Some(1_700_000_000_000));
    s.merge(&golden("multi_value_conflict")).unwrap();
    let conflict = FieldValue::MultiValue(vec![Value::F64(65.0), Value::Str("eco".into())]);
    assert_eq!(s.get("boiler-1", "setpoint"), Some(conflict));
    let writers: Vec<u64> = s.desired("boiler-1", "setpoint").unwrap().iter().map(|x| x.dot.replica).collect();
    assert_eq!(writers, [0x0A, 0x0B]);
    s.merge(&golden("multi_value_resolved")).unwrap();
    assert_eq!(s.get("boiler-1", "setpoint"), Some(FieldValue::MultiValue(vec![Value::I64(67)])));
    s.merge(&golden("multi_value_clear")).unwrap();
    assert_eq!(s.get("boiler-1", "setpoint"), Some(FieldValue::MultiValue(vec![])));
}

/// Format V1's set vectors (`tests/golden/format_v1`, the encodings before sets' contexts covered their
/// writers' other twin dots; still read, so snapshots and logs written then still load): they decode to
/// the same fields, and join with V2 events of the same set as the events themselves would.
#[test]
fn format_v1_set_vectors_still_load_and_join_v2_events() {
    let v1 = |name: &str| {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/golden/format_v1/{name}.hex"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let clean: String = text.split_whitespace().collect();
        (0..clean.len()).step_by(2).map(|i| u8::from_str_radix(&clean[i..i + 2], 16).unwrap()).collect::<Vec<u8>>()
    };
    let (add, remove, full) = (v1("set_add"), v1("set_remove"), v1("full_state_a"));
    assert_eq!((add[0], add[1]), (0x08, 0x01), "a V1 message");
    let mut s = Store::new(99, 500);
    s.set_manual_time(Some(1_700_000_000_000));
    s.merge(&full).unwrap();
    assert_eq!(s.get("boiler-1", "tags"), Some(FieldValue::Set(vec![])));
    assert_eq!(s.get("boiler-1", "starts"), Some(FieldValue::Counter(3)));
    assert_eq!(s.get("room-1", "humidity"), Some(FieldValue::Register(Value::F64(40.0))));
    // A V1 add (replica 0x0B's "critical"), then a V2 add on top by another replica, delivered to a third
    // with the V1 remove (0x0A's, which saw only "critical") before or after: "spare" survives either way.
    let mut c = Store::new(0x0C, 500);
    c.set_manual_time(Some(1_700_000_000_500));
    c.merge(&add).unwrap();
    assert_eq!(c.get("boiler-1", "tags"), Some(FieldValue::Set(vec!["critical".into()])));
    let spare = c.add("boiler-1", "tags", "spare").unwrap();
    assert_eq!((spare[0], spare[1]), (0x08, 0x02), "a V2 message");
    let (mut before, mut after) = (Store::new(0x0D, 500), Store::new(0x0D, 500));
    before.merge(&remove).unwrap();
    before.merge(&spare).unwrap();
    after.merge(&spare).unwrap();
    after.merge(&remove).unwrap();
    for s in [&before, &after] {
        assert_eq!(s.get("boiler-1", "tags"), Some(FieldValue::Set(vec!["spare".into()])));
    }
    assert_eq!(before.encode_state(None), after.encode_state(None));
    c.merge(&remove).unwrap();
    assert_eq!(c.get("boiler-1", "tags"), Some(FieldValue::Set(vec!["spare".into()])));
}
