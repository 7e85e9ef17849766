//! A TCP proxy that cuts connections after a number of the runtime's data frames: for the
//! resumable-session tests. It forwards bytes untouched both ways (handshake headers, pings
//! and all), reading the runtime's WebSocket frames only to count them.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How a connection is cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cut {
    /// A TCP reset (as a crashed proxy or a load balancer's idle timeout does).
    Reset,
    /// A TCP close without a WebSocket close frame (1006 to both peers).
    Close,
}

/// The proxy; it stops when dropped (connections it forwards end with it).
#[derive(Debug)]
pub struct CutProxy {
    addr: std::net::SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl CutProxy {
    /// Proxies to `target` (`ws://host:port…`), cutting each of the first `times` connections
    /// just before the runtime's data frame number `after + 1` (0: before any).
    ///
    /// # Panics
    ///
    /// If no loopback port can be bound, or `target` has no `host:port`.
    pub async fn start(target: &str, after: u64, times: usize, cut: Cut) -> Self {
        Self::start_delayed(target, after, times, cut, std::time::Duration::ZERO).await
    }

    /// As [`start`](Self::start), and every connection after the first waits `delay` before
    /// it is forwarded (its handshake waits): a runtime that is unreachable for a while.
    ///
    /// # Panics
    ///
    /// As [`start`](Self::start).
    pub async fn start_delayed(
        target: &str,
        after: u64,
        times: usize,
        cut: Cut,
        delay: std::time::Duration,
    ) -> Self {
        let upstream = target
            .trim_start_matches("ws://")
            .split('/')
            .next()
            .expect("host:port")
            .to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            let mut served = 0;
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                let limit = (served < times).then_some(after);
                let wait = if served == 0 {
                    std::time::Duration::ZERO
                } else {
                    delay
                };
                served += 1;
                let upstream = upstream.clone();
                connections.spawn(async move {
                    tokio::time::sleep(wait).await;
                    forward(client, upstream, limit, cut).await;
                });
            }
        });
        Self { addr, task }
    }

    /// The `ws://` URL clients connect to.
    pub fn url(&self) -> String {
        format!("ws://{}", self.addr)
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn forward(client: TcpStream, upstream: String, limit: Option<u64>, cut: Cut) {
    let Ok(runtime) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = runtime.set_nodelay(true);
    let (mut client_read, mut client_write) = client.into_split();
    let (mut runtime_read, mut runtime_write) = runtime.into_split();
    let up = async {
        let _ = tokio::io::copy(&mut client_read, &mut runtime_write).await;
    };
    let down = async {
        let mut counter = Frames::default();
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let n = match runtime_read.read(&mut buf).await {
                Ok(0) | Err(_) => return true,
                Ok(n) => n,
            };
            let (pass, stop) = counter.feed(&buf[..n], limit);
            if client_write.write_all(&pass).await.is_err() {
                return true;
            }
            if stop {
                return false;
            }
        }
    };
    let ended = tokio::select! {
        () = up => true,
        ended = down => ended,
    };
    if !ended {
        let client = client_read.reunite(client_write).expect("the same socket");
        if cut == Cut::Reset {
            let _ = client.set_zero_linger();
        }
        drop(client);
    }
}

/// Counts the runtime's data frames in its byte stream.
#[derive(Debug, Default)]
struct Frames {
    /// The handshake's response has been passed.
    upgraded: bool,
    /// Bytes not yet passed on (an incomplete frame, or the response's head).
    pending: Vec<u8>,
    /// Data frames passed on.
    data: u64,
}

impl Frames {
    /// Takes more bytes; returns what may be passed on, and whether to cut now (the next data
    /// frame would be number `limit + 1`).
    fn feed(&mut self, bytes: &[u8], limit: Option<u64>) -> (Vec<u8>, bool) {
        self.pending.extend_from_slice(bytes);
        let mut pass = Vec::new();
        if !self.upgraded {
            let Some(end) = self.pending.windows(4).position(|w| w == b"\r\n\r\n") else {
                return (pass, false);
            };
            pass.extend(self.pending.drain(..end + 4));
            self.upgraded = true;
        }
        while let Some((len, data)) = frame(&self.pending) {
            if data && limit == Some(self.data) {
                return (pass, true);
            }
            pass.extend(self.pending.drain(..len));
            if data {
                self.data += 1;
            }
        }
        (pass, false)
    }
}

/// The length of the complete frame at the start of `b`, and whether it ends a data message
/// (text, binary, or the final continuation); `None` while incomplete.
fn frame(b: &[u8]) -> Option<(usize, bool)> {
    let (&first, &second) = (b.first()?, b.get(1)?);
    let opcode = first & 0x0f;
    let fin = first & 0x80 != 0;
    let mut at = 2;
    let len = match second & 0x7f {
        126 => {
            at += 2;
            u64::from(u16::from_be_bytes(b.get(2..4)?.try_into().ok()?))
        }
        127 => {
            at += 8;
            u64::from_be_bytes(b.get(2..10)?.try_into().ok()?)
        }
        n => u64::from(n),
    };
    if second & 0x80 != 0 {
        at += 4;
    }
    let total = at + usize::try_from(len).ok()?;
    (b.len() >= total).then_some((total, fin && matches!(opcode, 0..=2)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_counted_across_reads_and_cut_before_the_limit() {
        let mut f = Frames::default();
        let head = b"HTTP/1.1 101 Switching Protocols\r\n\r\n";
        let text = [0x81, 3, b'a', b'b', b'c'];
        let ping = [0x89, 1, b'x'];
        let mut stream = head.to_vec();
        stream.extend(text);
        stream.extend(ping);
        stream.extend(text);
        stream.extend(text);
        // Split mid-frame: nothing of an incomplete frame passes.
        let (pass, stop) = f.feed(&stream[..head.len() + 2], Some(2));
        assert_eq!((pass.len(), stop), (head.len(), false));
        let (pass, stop) = f.feed(&stream[head.len() + 2..], Some(2));
        assert!(stop);
        assert_eq!(
            pass.len(),
            text.len() * 2 + ping.len(),
            "two texts and the ping"
        );
        assert_eq!(frame(&[0x82, 126, 0, 200]), None);
        let mut long = vec![0x82, 126, 0, 200];
        long.extend(vec![0; 200]);
        assert_eq!(frame(&long), Some((204, true)));
    }
}
