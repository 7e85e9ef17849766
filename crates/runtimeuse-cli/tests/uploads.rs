//! Artifact uploads of the real binary: a command batch's result goes out only once the PUT it
//! asked for has finished, a 1 GB artifact is streamed from disk (the runtime's memory stays
//! small), and a failed upload is said in a query's result.

// The tests print what they measured, for the record.
#![allow(clippy::print_stderr)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod common;
use common::Serve;
use common::raw::{RawWs, TEXT};

/// A PUT target on loopback that reads and discards each body, then records the path, the
/// bytes and when it finished, and answers 200.
struct Sink {
    port: u16,
    finished: Arc<Mutex<Vec<(String, u64, Instant)>>>,
}

impl Sink {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let finished = Arc::new(Mutex::new(Vec::new()));
        let record = Arc::clone(&finished);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let record = Arc::clone(&record);
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(stream);
                    let mut line = String::new();
                    reader.read_line(&mut line).unwrap();
                    let path = line.split_whitespace().nth(1).unwrap_or("").to_owned();
                    let mut length = 0u64;
                    loop {
                        let mut header = String::new();
                        reader.read_line(&mut header).unwrap();
                        if header.trim_end().is_empty() {
                            break;
                        }
                        if let Some((name, value)) = header.split_once(':')
                            && name.eq_ignore_ascii_case("content-length")
                        {
                            length = value.trim().parse().unwrap();
                        }
                    }
                    let read =
                        std::io::copy(&mut reader.by_ref().take(length), &mut std::io::sink())
                            .unwrap();
                    record.lock().unwrap().push((path, read, Instant::now()));
                    let mut stream = reader.into_inner();
                    let _ = stream.write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    );
                });
            }
        });
        Self { port, finished }
    }
}

/// Runs `request` (JSON) on `ws`, answering each artifact upload request with a URL under
/// `base`; the terminal frame's JSON and when it arrived.
fn run_answering_uploads(
    ws: &mut RawWs,
    request: &str,
    base: &str,
) -> (serde_json::Value, Instant) {
    ws.text(request);
    loop {
        let (op, payload) = ws.read().expect("a frame");
        assert_eq!(op, TEXT);
        let v: serde_json::Value = serde_json::from_slice(&payload).unwrap();
        match v["message_type"].as_str().unwrap() {
            "artifact_upload_request_message" => ws.text(
                &serde_json::json!({
                    "message_type": "artifact_upload_response_message",
                    "filename": v["filename"], "filepath": v["filepath"],
                    "presigned_url": format!("{base}/{}", v["filename"].as_str().unwrap()),
                    "content_type": "application/octet-stream"
                })
                .to_string(),
            ),
            "result_message" | "command_execution_result_message" | "error_message" => {
                return (v, Instant::now());
            }
            _ => {}
        }
    }
}

fn batch(command: &str, dir: &std::path::Path) -> String {
    serde_json::json!({
        "message_type": "command_execution_message", "source_id": null, "secrets_to_redact": [],
        "commands": [{"command": command, "cwd": null, "env": null}],
        "artifacts_dirs": [dir.display().to_string()], "artifacts_ignore_content": null,
        "pre_execution_downloadables": null
    })
    .to_string()
}

fn scratch(name: &str) -> std::path::PathBuf {
    let dir =
        std::env::temp_dir().join(format!("runtimeuse-uploads-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn a_1_gb_artifact_is_streamed_and_uploaded_before_the_result() {
    let rt = Serve::start(&[], &[]);
    let sink = Sink::start();
    let dir = scratch("big");
    let mut ws = RawWs::connect(rt.port);
    ws.0.set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    let idle = rt.rss_kb();
    let file = dir.join("big.bin");
    let request = batch(&format!("truncate -s 1G {}", file.display()), &dir);
    let base = format!("http://127.0.0.1:{}", sink.port);
    let (peak, (terminal, at)) = std::thread::scope(|s| {
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let sampler = {
            let done = Arc::clone(&done);
            let rt = &rt;
            s.spawn(move || {
                let mut peak = rt.rss_kb();
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    peak = peak.max(rt.rss_kb());
                    std::thread::sleep(Duration::from_millis(20));
                }
                peak
            })
        };
        let outcome = run_answering_uploads(&mut ws, &request, &base);
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        (sampler.join().unwrap(), outcome)
    });
    assert_eq!(
        terminal["message_type"], "command_execution_result_message",
        "{terminal}"
    );
    let finished = sink.finished.lock().unwrap().clone();
    assert_eq!(finished.len(), 1, "{finished:?}");
    let (path, bytes, put_done) = &finished[0];
    assert_eq!((path.as_str(), *bytes), ("/big.bin", 1 << 30));
    assert!(*put_done <= at, "the result came before the PUT finished");
    eprintln!("1 GB upload: runtime RSS {idle} kB idle, peak {peak} kB");
    assert!(peak < idle + 64 * 1024, "RSS {idle} kB -> {peak} kB");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_failed_upload_is_said_in_the_query_result() {
    let rt = Serve::start(&[], &[]);
    let dir = scratch("failed");
    let mut ws = RawWs::connect(rt.port);
    // A port nobody listens on: the PUT is refused.
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://127.0.0.1:{}", closed.local_addr().unwrap().port());
    drop(closed);
    let file = dir.join("note.txt");
    let query = serde_json::json!({
        "message_type": "invocation_message", "source_id": null, "system_prompt": "",
        "user_prompt": format!("WRITE_FILE:{} hello", file.display()), "model": "m",
        "output_format_json_schema_str": null, "secrets_to_redact": [], "agent_env": null,
        "artifacts_dirs": [dir.display().to_string()], "artifacts_ignore_content": null,
        "pre_agent_invocation_commands": null, "post_agent_invocation_commands": null,
        "pre_agent_downloadables": null
    })
    .to_string();
    let (terminal, _) = run_answering_uploads(&mut ws, &query, &base);
    assert_eq!(terminal["message_type"], "result_message", "{terminal}");
    let errors = terminal["metadata"]["artifact_upload_errors"]
        .as_array()
        .expect("errors");
    assert_eq!(errors.len(), 1, "{terminal}");
    assert!(
        errors[0].as_str().unwrap().contains("note.txt"),
        "{terminal}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
