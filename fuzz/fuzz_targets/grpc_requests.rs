//! Decodes arbitrary bytes as each request the CA serves and runs the API's conversions,
//! asserting the properties of `halyard_ca::fuzzing::grpc_requests`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    halyard_ca::fuzzing::grpc_requests(data);
});
