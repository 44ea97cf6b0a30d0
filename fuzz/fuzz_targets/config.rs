//! Reads arbitrary text as the CA's TOML configuration file and resolves it, asserting the
//! properties of `halyard_ca::fuzzing::config`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    halyard_ca::fuzzing::config(data);
});
