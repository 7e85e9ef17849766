//! The lines of an agent's output (Claude Code's stream-json events, ACP's JSON-RPC
//! messages), each bounded.

use tokio::io::{AsyncRead, AsyncReadExt};

/// The longest line read; a longer one is skipped (and logged).
const MAX_LINE: usize = 64 << 20;

/// Lines of a byte stream, each at most [`MAX_LINE`] bytes (a longer one is skipped).
pub(crate) struct Lines<R> {
    inner: R,
    buf: Vec<u8>,
    /// Bytes of `buf` already searched for a newline.
    searched: usize,
    /// Skipping the rest of a line that was too long.
    skipping: bool,
    done: bool,
}

impl<R: AsyncRead + Unpin> Lines<R> {
    pub(crate) fn new(inner: R) -> Self {
        Self {
            inner,
            buf: Vec::new(),
            searched: 0,
            skipping: false,
            done: false,
        }
    }

    pub(crate) async fn next(&mut self) -> Option<Vec<u8>> {
        loop {
            if let Some(i) = self.buf[self.searched..].iter().position(|&b| b == b'\n') {
                let end = self.searched + i;
                let line: Vec<u8> = self.buf.drain(..=end).take(end).collect();
                self.searched = 0;
                if std::mem::take(&mut self.skipping) {
                    continue;
                }
                return Some(line);
            }
            self.searched = self.buf.len();
            if self.buf.len() > MAX_LINE {
                tracing::warn!(limit = MAX_LINE, "an agent's line too long; skipped");
                self.buf.clear();
                self.searched = 0;
                self.skipping = true;
            }
            if self.done {
                let last = std::mem::take(&mut self.buf);
                self.searched = 0;
                let skipped = std::mem::take(&mut self.skipping);
                return (!last.is_empty() && !skipped).then_some(last);
            }
            let mut chunk = [0u8; 16 * 1024];
            match self.inner.read(&mut chunk).await {
                Ok(0) | Err(_) => self.done = true,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lines_are_split_and_bounded() {
        let data: &[u8] = b"one\ntwo\n\nthree";
        let mut lines = Lines::new(data);
        let mut got = Vec::new();
        while let Some(l) = lines.next().await {
            got.push(String::from_utf8(l).unwrap());
        }
        assert_eq!(got, ["one", "two", "", "three"]);
        assert!(lines.next().await.is_none(), "and nothing after the end");
    }
}
