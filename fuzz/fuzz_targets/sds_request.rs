//! Sends arbitrary DiscoveryRequests and DeltaDiscoveryRequests to the agent's SDS service in
//! memory, asserting the properties of `halyard_agent::fuzzing::sds_request`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    halyard_agent::fuzzing::sds_request(data);
});
