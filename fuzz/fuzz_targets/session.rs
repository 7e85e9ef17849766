//! A client session driven by arbitrary operations: no panic, one terminal per request,
//! nothing after the end.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| runtimeuse_proto::fuzzing::session(data));
