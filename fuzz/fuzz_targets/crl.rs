//! Signs CRLs of arbitrary revoked entries and reads them back, asserting the properties of
//! `halyard_ca::fuzzing::crl`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    halyard_ca::fuzzing::crl(data);
});
