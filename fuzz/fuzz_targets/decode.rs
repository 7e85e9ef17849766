//! Any bytes, decoded as a runtime frame and as a client frame: no panic, and round trips.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| runtimeuse_proto::fuzzing::decode(data));
