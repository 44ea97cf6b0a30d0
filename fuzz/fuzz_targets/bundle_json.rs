//! Reads arbitrary bytes as a SPIFFE bundle (JWK set) and writes it back, asserting the
//! properties of `halyard_proto::fuzzing::bundle_json_round_trip`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    halyard_proto::fuzzing::bundle_json_round_trip(data);
});
