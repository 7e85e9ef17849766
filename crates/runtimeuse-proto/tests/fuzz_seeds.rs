//! Replays the committed fuzz seeds (and any regression inputs found by fuzzing) through the
//! fuzz bodies, as a normal test.

use std::path::Path;

fn each_file(target: &str, body: fn(&[u8])) -> usize {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/seeds")
        .join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        body(&std::fs::read(&path).unwrap());
        n += 1;
    }
    n
}

#[test]
fn decode_seeds() {
    assert!(each_file("decode", runtimeuse_proto::fuzzing::decode) > 100);
}

#[test]
fn session_seeds() {
    assert!(each_file("session", runtimeuse_proto::fuzzing::session) > 50);
}

#[test]
fn runtime_session_seeds() {
    assert!(
        each_file(
            "runtime_session",
            runtimeuse_proto::fuzzing::runtime_session
        ) > 20
    );
}
