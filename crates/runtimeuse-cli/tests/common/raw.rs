//! A raw client WebSocket, written frame by frame over std's `TcpStream`, so that tests can
//! send what no well-behaved library would and read as slowly (or not at all) as they like.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

pub(crate) const TEXT: u8 = 0x1;
pub(crate) const CLOSE: u8 = 0x8;
pub(crate) const PING: u8 = 0x9;

/// A raw client WebSocket.
pub(crate) struct RawWs(pub(crate) TcpStream);

impl RawWs {
    pub(crate) fn connect(port: u16) -> Self {
        Self::try_connect(port).unwrap()
    }

    pub(crate) fn try_connect(port: u16) -> std::io::Result<Self> {
        Self::try_connect_with(port, "")
    }

    /// A client that asks for a resumable session (docs/resume.md); it never acknowledges.
    pub(crate) fn connect_resumable(port: u16) -> Self {
        Self::try_connect_with(port, "runtimeuse-resume: 1\r\n").unwrap()
    }

    /// Connects with these extra header lines (each ending in CRLF).
    pub(crate) fn try_connect_with(port: u16, extra: &str) -> std::io::Result<Self> {
        let mut tcp = TcpStream::connect(("127.0.0.1", port))?;
        tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(
            tcp,
            "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
        )?;
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            tcp.read_exact(&mut byte)?;
            head.push(byte[0]);
        }
        if !head.starts_with(b"HTTP/1.1 101") {
            return Err(std::io::Error::other(
                String::from_utf8_lossy(&head).into_owned(),
            ));
        }
        Ok(Self(tcp))
    }

    /// Sends one masked frame (`len` overrides the length in the header).
    pub(crate) fn send(
        &mut self,
        opcode: u8,
        payload: &[u8],
        len: Option<u64>,
    ) -> std::io::Result<()> {
        let mut frame = vec![0x80 | opcode];
        let len = len.unwrap_or(payload.len() as u64);
        if len < 126 {
            frame.push(0x80 | len as u8);
        } else if len <= 0xffff {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&len.to_be_bytes());
        }
        let mask = [0x12, 0x34, 0x56, 0x78];
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.0.write_all(&frame)
    }

    /// Sends a text frame.
    pub(crate) fn text(&mut self, json: &str) {
        self.send(TEXT, json.as_bytes(), None).unwrap();
    }

    /// The next frame from the runtime: opcode and payload.
    pub(crate) fn read(&mut self) -> std::io::Result<(u8, Vec<u8>)> {
        read_frame(&mut self.0)
    }

    /// Reads until the runtime's close frame; its code.
    pub(crate) fn close_code(&mut self) -> u16 {
        loop {
            let (op, payload) = self.read().expect("a close frame before the end");
            if op == CLOSE {
                return u16::from_be_bytes([payload[0], payload[1]]);
            }
        }
    }
}

/// Reads one frame from `r`: opcode and payload.
pub(crate) fn read_frame(r: &mut impl Read) -> std::io::Result<(u8, Vec<u8>)> {
    let mut h = [0u8; 2];
    r.read_exact(&mut h)?;
    let mut len = u64::from(h[1] & 0x7f);
    if len == 126 {
        let mut b = [0u8; 2];
        r.read_exact(&mut b)?;
        len = u64::from(u16::from_be_bytes(b));
    } else if len == 127 {
        let mut b = [0u8; 8];
        r.read_exact(&mut b)?;
        len = u64::from_be_bytes(b);
    }
    let mut payload = vec![0; usize::try_from(len).unwrap()];
    r.read_exact(&mut payload)?;
    Ok((h[0] & 0x0f, payload))
}

/// A command batch running `command`, as the upstream client sends it.
pub(crate) fn commands(command: &str) -> String {
    serde_json::json!({
        "message_type": "command_execution_message",
        "source_id": null,
        "secrets_to_redact": [],
        "commands": [{"command": command, "cwd": null, "env": null}],
        "artifacts_dirs": null,
        "artifacts_ignore_content": null,
        "pre_execution_downloadables": null
    })
    .to_string()
}

/// Processes whose command line contains `marker` (other than this test's own).
pub(crate) fn processes_with(marker: &str) -> usize {
    processes_whose("cmdline", marker)
}

/// Processes whose environment holds `marker` (other than this test's own): what a process
/// started with a marked environment and all its children carry.
pub(crate) fn processes_with_env(marker: &str) -> usize {
    processes_whose("environ", marker)
}

/// Waits (at most `limit`) until `count` says no process is left: a killed process is gone
/// once the kernel has torn it down, a moment after the signal. Panics with `what` after.
pub(crate) fn wait_gone(count: impl Fn() -> usize, limit: Duration, what: &str) {
    let deadline = std::time::Instant::now() + limit;
    while count() > 0 {
        assert!(std::time::Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Processes whose `/proc/<pid>/<file>` contains `marker` (other than this test's own).
fn processes_whose(file: &str, marker: &str) -> usize {
    let me = std::process::id().to_string();
    std::fs::read_dir("/proc")
        .map(|dir| {
            dir.filter_map(Result::ok)
                .filter(|e| {
                    e.file_name()
                        .to_str()
                        .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()) && n != me)
                })
                .filter(|e| {
                    std::fs::read(e.path().join(file))
                        .is_ok_and(|c| String::from_utf8_lossy(&c).contains(marker))
                })
                .count()
        })
        .unwrap_or(0)
}
