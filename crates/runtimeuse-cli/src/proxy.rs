//! `runtimeuse proxy`: a transparent WebSocket proxy between any client and any runtime that
//! shows every frame on stderr and, with `--record DIR`, writes one JSON Lines transcript per
//! connection in the format of the project's golden transcripts (`shared/transcripts/README.md`).

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use clap::Args;
use futures_util::{SinkExt, StreamExt};
use runtimeuse_tokio::tokio_tungstenite::tungstenite::Message;
use runtimeuse_tokio::tokio_tungstenite::tungstenite::client::IntoClientRequest;
use runtimeuse_tokio::tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use runtimeuse_tokio::tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use runtimeuse_tokio::tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use runtimeuse_tokio::tokio_tungstenite::{self, WebSocketStream};
use serde_json::{Map, Value, json};
use tokio::net::{TcpListener, TcpStream};

/// `proxy`'s arguments.
#[derive(Debug, Args)]
pub(crate) struct ProxyArgs {
    /// Address to listen on (port 0 picks a free one; the port is printed on stdout).
    #[arg(long, default_value = "127.0.0.1:8081")]
    listen: String,
    /// The runtime's URL; each client's request path is appended when the URL has none.
    #[arg(long, value_name = "URL")]
    to: String,
    /// Write one transcript per connection into this directory.
    #[arg(long, value_name = "DIR")]
    record: Option<PathBuf>,
    /// A string replaced by `[REDACTED]` in the transcripts and the live view (repeatable).
    #[arg(long = "redact", value_name = "TEXT")]
    redact: Vec<String>,
    /// Do not show frames on stderr (set by the global `-q`).
    #[arg(skip)]
    pub(crate) quiet: bool,
}

/// Serves until Ctrl-C.
pub(crate) async fn proxy(args: ProxyArgs) -> Result<(), Box<dyn std::error::Error>> {
    if !args.to.starts_with("ws://") && !args.to.starts_with("wss://") {
        return Err(format!("--to {} is not a ws:// or wss:// URL", args.to).into());
    }
    if let Some(dir) = &args.record {
        std::fs::create_dir_all(dir)?;
    }
    let listener = TcpListener::bind(&args.listen).await?;
    let port = listener.local_addr()?.port();
    #[allow(clippy::print_stdout)]
    {
        println!(
            "runtimeuse proxy listening on port {port}, forwarding to {}",
            args.to
        );
    }
    let args = Arc::new(args);
    let next = Arc::new(AtomicU64::new(1));
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            accepted = listener.accept() => {
                let Ok((tcp, peer)) = accepted else { continue };
                let n = next.fetch_add(1, Ordering::Relaxed);
                let args = Arc::clone(&args);
                tokio::spawn(async move {
                    if let Err(e) = connection(tcp, n, &args).await {
                        tracing::warn!(%peer, error = %e, "proxied connection failed");
                    }
                });
            }
        }
    }
}

/// Where the frames of one connection go: the live view and the transcript.
struct Recorder {
    n: u64,
    seq: u64,
    t0: Instant,
    file: Option<std::io::BufWriter<std::fs::File>>,
    redact: Vec<String>,
    quiet: bool,
}

impl Recorder {
    fn redacted(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for s in self.redact.iter().filter(|s| !s.is_empty()) {
            out = out.replace(s.as_str(), "[REDACTED]");
        }
        out
    }

    /// Writes one record; `t_ms` is `null` for notes that are not frames.
    fn record(&mut self, dir: &str, kind: &str, fields: Map<String, Value>) {
        let t_ms = u64::try_from(self.t0.elapsed().as_millis()).unwrap_or(u64::MAX);
        let mut line = Map::new();
        line.insert("seq".into(), json!(self.seq));
        line.insert("t_ms".into(), json!(t_ms));
        line.insert("dir".into(), json!(dir));
        line.insert("kind".into(), json!(kind));
        line.extend(fields);
        self.seq += 1;
        if !self.quiet {
            let what = match line.get("text").and_then(Value::as_str) {
                Some(t) => serde_json::from_str::<Value>(t)
                    .ok()
                    .and_then(|v| {
                        v.get("message_type")
                            .and_then(Value::as_str)
                            .map(str::to_owned)
                    })
                    .unwrap_or_else(|| t.chars().take(60).collect()),
                None => line
                    .get("code")
                    .map(|c| format!("code {c}"))
                    .unwrap_or_default(),
            };
            let bytes = line
                .get("bytes")
                .map(|b| format!(" ({b} B)"))
                .unwrap_or_default();
            let mut err = std::io::stderr().lock();
            let _ = writeln!(err, "#{} +{t_ms}ms {dir} {kind} {what}{bytes}", self.n);
        }
        if let Some(f) = &mut self.file {
            let _ = writeln!(f, "{}", Value::Object(line));
            let _ = f.flush();
        }
    }

    fn frame(&mut self, dir: &str, m: &Message) {
        let mut f = Map::new();
        let kind = match m {
            Message::Text(t) => {
                let text = self.redacted(t.as_str());
                f.insert("bytes".into(), json!(text.len()));
                f.insert("text".into(), json!(text));
                "text"
            }
            Message::Binary(b) => {
                f.insert("bytes".into(), json!(b.len()));
                f.insert("data_b64".into(), json!(base64(b)));
                "binary"
            }
            Message::Ping(b) | Message::Pong(b) => {
                f.insert("bytes".into(), json!(b.len()));
                f.insert("data_b64".into(), json!(base64(b)));
                f.insert("forwarded".into(), json!(false));
                if matches!(m, Message::Ping(_)) {
                    "ping"
                } else {
                    "pong"
                }
            }
            Message::Close(Some(c)) => {
                f.insert("code".into(), json!(u16::from(c.code)));
                f.insert("reason".into(), json!(self.redacted(c.reason.as_str())));
                "close"
            }
            Message::Close(None) => {
                f.insert("code".into(), Value::Null);
                f.insert("empty_payload".into(), json!(true));
                "close"
            }
            Message::Frame(_) => return,
        };
        self.record(dir, kind, f);
    }
}

/// Standard base64 with padding.
fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(A[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

type Ws = WebSocketStream<TcpStream>;

async fn connection(
    tcp: TcpStream,
    n: u64,
    args: &ProxyArgs,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let _ = tcp.set_nodelay(true);
    // No size limit on either leg, as the golden recorder.
    let config = WebSocketConfig::default()
        .max_message_size(None)
        .max_frame_size(None);
    let (client, opened) = accept(tcp, config).await?;
    let mut rec = Recorder {
        n,
        seq: 0,
        t0: opened.at,
        file: record_file(args, n)?,
        redact: args.redact.clone(),
        quiet: args.quiet,
    };
    let mut open = Map::new();
    open.insert(
        "path".into(),
        json!(rec.redacted(&without_token(&opened.path))),
    );
    open.insert(
        "client_request_headers".into(),
        Value::Object(opened.headers),
    );
    rec.record("meta", "open", open);
    let target = match args
        .to
        .split_once("://")
        .map(|(_, rest)| rest.contains('/'))
    {
        Some(true) => args.to.clone(),
        _ => format!("{}{}", args.to.trim_end_matches('/'), opened.path),
    };
    let mut upstream = target.as_str().into_client_request()?;
    for (name, value) in &opened.forward {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            upstream.headers_mut().append(name, value);
        }
    }
    let (runtime, _) =
        tokio_tungstenite::connect_async_with_config(upstream, Some(config), true).await?;
    relay(client, runtime, &mut rec).await;
    Ok(())
}

/// What the client's upgrade request said, for the transcript.
struct Opened {
    at: Instant,
    path: String,
    headers: Map<String, Value>,
    /// The client's headers to pass on to the runtime: its credentials (`Authorization`)
    /// and any header of its own, but not those of the WebSocket handshake itself.
    forward: Vec<(String, String)>,
}

/// Headers of the handshake itself, which the proxy's own connection to the runtime makes.
const HANDSHAKE_HEADERS: [&str; 8] = [
    "host",
    "connection",
    "upgrade",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-extensions",
    "sec-websocket-accept",
    "content-length",
];

/// Accepts the client's WebSocket, noting its path and the headers worth recording.
async fn accept(
    tcp: TcpStream,
    config: WebSocketConfig,
) -> Result<(Ws, Opened), Box<dyn std::error::Error + Send + Sync>> {
    let mut opened = None;
    // The shape of this callback (and its large error type) is tungstenite's.
    #[allow(clippy::result_large_err)]
    let callback = |request: &Request, response: Response| {
        let mut headers = Map::new();
        for name in [
            "User-Agent",
            "Sec-WebSocket-Version",
            "Sec-WebSocket-Extensions",
            "Sec-WebSocket-Protocol",
        ] {
            if let Some(v) = request.headers().get(name).and_then(|v| v.to_str().ok()) {
                headers.insert(name.into(), json!(v));
            }
        }
        let path = request
            .uri()
            .path_and_query()
            .map_or("/".to_owned(), |p| p.as_str().to_owned());
        let forward = request
            .headers()
            .iter()
            .filter(|(name, _)| !HANDSHAKE_HEADERS.contains(&name.as_str()))
            // Resumption (docs/resume.md) is between the client and the runtime over one
            // connection each; the proxy's two connections cannot carry it, so it is not asked.
            .filter(|(name, _)| !name.as_str().starts_with("runtimeuse-"))
            .filter_map(|(name, v)| Some((name.as_str().to_owned(), v.to_str().ok()?.to_owned())))
            .collect();
        opened = Some(Opened {
            at: Instant::now(),
            path,
            headers,
            forward,
        });
        Ok(response)
    };
    let client: Ws =
        tokio_tungstenite::accept_hdr_async_with_config(tcp, callback, Some(config)).await?;
    let opened = opened.ok_or("no upgrade request")?;
    Ok((client, opened))
}

/// The transcript file of connection `n`, under `--record`.
fn record_file(
    args: &ProxyArgs,
    n: u64,
) -> std::io::Result<Option<std::io::BufWriter<std::fs::File>>> {
    let Some(dir) = &args.record else {
        return Ok(None);
    };
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let name = dir.join(format!("{stamp}-{n}.jsonl"));
    Ok(Some(std::io::BufWriter::new(std::fs::File::create(name)?)))
}

/// Forwards frames both ways, recording each, until both sides are done.
async fn relay<S>(mut client: Ws, mut runtime: WebSocketStream<S>, rec: &mut Recorder)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (mut client_done, mut runtime_done) = (false, false);
    // Whether each side sent its close frame: a side whose stream ends after one ended the
    // connection properly; one that ends without takes the other side's connection with it.
    let (mut client_closed, mut runtime_closed) = (false, false);
    while !(client_done && runtime_done) {
        tokio::select! {
            m = client.next(), if !client_done => match m {
                Some(Ok(m)) => {
                    rec.frame("c2r", &m);
                    client_closed |= matches!(m, Message::Close(_));
                    if !runtime_done && forward(&mut runtime, m).await.is_err() {
                        runtime_done = true;
                    }
                }
                _ => {
                    client_done = true;
                    if !client_closed {
                        rec.record("meta", "tcp_closed_without_close_frame", side("c2r"));
                        runtime_done = true;
                    }
                }
            },
            m = runtime.next(), if !runtime_done => match m {
                Some(Ok(m)) => {
                    rec.frame("r2c", &m);
                    runtime_closed |= matches!(m, Message::Close(_));
                    if !client_done && forward(&mut client, m).await.is_err() {
                        client_done = true;
                    }
                }
                _ => {
                    runtime_done = true;
                    if !runtime_closed {
                        rec.record("meta", "tcp_closed_without_close_frame", side("r2c"));
                        client_done = true;
                    }
                }
            },
        }
    }
}

/// `path` with the value of a `token` query parameter masked: the transcript keeps no
/// credential.
fn without_token(path: &str) -> String {
    let Some((base, query)) = path.split_once('?') else {
        return path.to_owned();
    };
    let query: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some(("token", _)) => "token=[REDACTED]".to_owned(),
            _ => pair.to_owned(),
        })
        .collect();
    format!("{base}?{}", query.join("&"))
}

fn side(s: &str) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("side".into(), json!(s));
    m
}

/// Passes a data or close frame on unchanged; pings and pongs are answered by each leg.
async fn forward<S>(
    to: &mut WebSocketStream<S>,
    m: Message,
) -> Result<(), runtimeuse_tokio::tokio_tungstenite::tungstenite::Error>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    match m {
        Message::Text(_) | Message::Binary(_) => to.send(m).await,
        Message::Close(frame) => {
            let frame = frame.map(|f| CloseFrame {
                code: f.code,
                reason: f.reason,
            });
            to.send(Message::Close(frame)).await
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::base64;

    #[test]
    fn base64_as_rfc_4648() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }
}
