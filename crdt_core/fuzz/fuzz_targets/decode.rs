//! libFuzzer target: any bytes into every decoder of crdt_core. A panic is a bug (it would take the node
//! down across the FFI); a refused message must leave the store unchanged.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut store = crdt_core::Store::new(7, 500);
    store.set_manual_time(Some(1_700_000_000_500));
    store.set("seed", "x", crdt_core::Value::F64(1.0)).unwrap();
    store.desire("boiler-1", "setpoint", crdt_core::Value::F64(60.0)).unwrap();
    let before = store.encode_state(None);
    if store.merge(data).is_err() {
        assert_eq!(store.encode_state(None), before);
    }
    let _ = store.catch_up(data, false, 1 << 12);
    let _ = store.differing_twins(data);
});
