//! The examples print a failure for a person: the message and its causes, never the `Debug`
//! form. Each example, built by `cargo test` beside this test, is run against a closed port.

use std::process::Command;

/// The built example `name` (in `target/<profile>/examples/`, beside this test's `deps/`).
fn example(name: &str) -> Command {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap().join("examples");
    Command::new(dir.join(name))
}

#[test]
fn examples_print_errors_with_their_causes_not_debug() {
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ws://127.0.0.1:{}", closed.local_addr().unwrap().port());
    drop(closed);
    for name in ["quickstart", "blocking", "async_std"] {
        let out = example(name).env("RUNTIMEUSE_URL", &url).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{name}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.starts_with("error: "), "{name}: {err}");
        assert!(err.contains("caused by: "), "{name}: {err}");
        assert!(
            !err.contains("Error {") && !err.contains("Connect("),
            "{name}: {err}"
        );
    }
}
