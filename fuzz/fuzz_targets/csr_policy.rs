//! Parses arbitrary bytes as a CSR under the default key policy and signs what is accepted,
//! asserting the properties of `halyard_ca::fuzzing::csr_policy`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    halyard_ca::fuzzing::csr_policy(data);
});
