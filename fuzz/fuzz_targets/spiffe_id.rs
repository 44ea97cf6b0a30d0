//! Parses arbitrary bytes as a SPIFFE ID and asserts the round-trip properties of
//! `halyard_proto::fuzzing::spiffe_id_round_trip`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    halyard_proto::fuzzing::spiffe_id_round_trip(data);
});
