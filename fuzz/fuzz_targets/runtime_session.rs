//! A runtime session driven by arbitrary client frames and runtime calls: no panic, nothing
//! after the end, no secret in any frame.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| runtimeuse_proto::fuzzing::runtime_session(data));
