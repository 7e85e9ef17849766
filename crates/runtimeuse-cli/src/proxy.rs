//! `runtimeuse proxy`: a transparent WebSocket proxy between any client and any runtime that
//! shows every frame on stderr and, with `--record DIR`, writes one JSON Lines transcript per
//! connection in the format of the project's golden transcripts (`shared/transcripts/README.md`).

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use futures_util::{SinkExt, StreamExt};
use runtimeuse_proto::resume;
use runtimeuse_tokio::tokio_tungstenite::tungstenite::Message;
use runtimeuse_tokio::tokio_tungstenite::tungstenite::client::IntoClientRequest;
use runtimeuse_tokio::tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use runtimeuse_tokio::tokio_tungstenite::tungstenite::http::{HeaderMap, HeaderName, HeaderValue};
use runtimeuse_tokio::tokio_tungstenite::tungstenite::protocol::{
    CloseFrame, Role, WebSocketConfig,
};
use runtimeuse_tokio::tokio_tungstenite::{self, MaybeTlsStream, WebSocketStream};
use serde_json::{Map, Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::client::Failure;

/// `proxy`'s arguments.
#[derive(Debug, Args)]
pub(crate) struct ProxyArgs {
    /// Address to listen on (port 0 picks a free one; the port is printed on stdout).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8081")]
    listen: String,
    /// The runtime's URL; each client's request path is appended when the URL has none.
    #[arg(long, value_name = "URL")]
    to: String,
    /// Write one transcript per connection into this directory [default: none, no
    /// transcripts].
    #[arg(long, value_name = "DIR")]
    record: Option<PathBuf>,
    /// A string replaced by `[REDACTED]` in the transcripts and the live view (repeatable).
    #[arg(long = "redact", value_name = "TEXT")]
    redact: Vec<String>,
    /// Cut each connection after the runtime's N-th data frame through it, as a flaky
    /// network or a load balancer does: both TCP connections end without a close frame. A
    /// resumable session resumes through the proxy. `kill -USR1` the proxy to cut every open
    /// connection at once [default: never].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    cut_after: Option<u64>,
    /// How `--cut-after` and SIGUSR1 cut: `reset` (a TCP reset) or `close` (a TCP close).
    #[arg(long, value_name = "HOW", default_value = "reset", value_parser = ["reset", "close"])]
    cut: String,
    /// Do not show frames on stderr (set by the global `-q`).
    #[arg(skip)]
    pub(crate) quiet: bool,
}

/// Serves until Ctrl-C.
pub(crate) async fn proxy(args: ProxyArgs) -> Result<(), Failure> {
    if !args.to.starts_with("ws://") && !args.to.starts_with("wss://") {
        return Err(Failure::usage(format!(
            "--to {} is not a ws:// or wss:// URL",
            args.to
        )));
    }
    if let Some(dir) = &args.record {
        std::fs::create_dir_all(dir).map_err(|e| {
            Failure::system(format!("cannot create --record {}: {e}", dir.display()))
        })?;
    }
    let listener = TcpListener::bind(&args.listen)
        .await
        .map_err(|e| Failure::cannot_listen(&args.listen, &e))?;
    let port = listener
        .local_addr()
        .map_err(|e| Failure::system(format!("cannot read the listening address: {e}")))?
        .port();
    #[allow(clippy::print_stdout)]
    {
        println!(
            "runtimeuse proxy listening on port {port}, forwarding to {}",
            args.to
        );
    }
    let args = Arc::new(args);
    let next = Arc::new(AtomicU64::new(1));
    // SIGUSR1 cuts every open connection: each relay watches this count.
    let (cuts, cut_now) = tokio::sync::watch::channel(0u64);
    let mut usr1 = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1())
        .map_err(|e| Failure::system(format!("cannot watch SIGUSR1: {e}")))?;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            Some(()) = usr1.recv() => {
                tracing::info!("SIGUSR1: cutting every open connection");
                cuts.send_modify(|n| *n += 1);
            }
            accepted = listener.accept() => {
                let Ok((tcp, peer)) = accepted else { continue };
                let n = next.fetch_add(1, Ordering::Relaxed);
                let args = Arc::clone(&args);
                let cut_now = cut_now.clone();
                tokio::spawn(async move {
                    if let Err(e) = connection(tcp, n, &args, cut_now).await {
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
                None => match line.get("code") {
                    Some(c) => format!("code {c}"),
                    // A resumable session's acknowledgement (`docs/resume.md`), by its count.
                    None => line
                        .get("ack")
                        .map(|n| format!("ack {n}"))
                        .unwrap_or_default(),
                },
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
                let ack = resume::parse_ack(b);
                let forwarded = matches!(m, Message::Ping(_)) && ack.is_some();
                f.insert("forwarded".into(), json!(forwarded));
                if let Some(n) = ack {
                    f.insert("ack".into(), json!(n));
                }
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
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The longest upgrade request the proxy reads.
const MAX_HEAD: usize = 16 << 10;

async fn connection(
    mut tcp: TcpStream,
    n: u64,
    args: &ProxyArgs,
    cut_now: tokio::sync::watch::Receiver<u64>,
) -> Result<(), BoxError> {
    let _ = tcp.set_nodelay(true);
    // No size limit on either leg, as the golden recorder.
    let config = WebSocketConfig::default()
        .max_message_size(None)
        .max_frame_size(None);
    let (opened, rest) = match read_upgrade(&mut tcp).await {
        Ok(read) => read,
        Err(e) => {
            respond(&mut tcp, 400, &[], &format!("{e}\n")).await;
            return Err(e);
        }
    };
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
        Value::Object(opened.headers.clone()),
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
    let (runtime, response) =
        match tokio_tungstenite::connect_async_with_config(upstream, Some(config), true).await {
            Ok(connected) => connected,
            Err(tokio_tungstenite::tungstenite::Error::Http(refused)) => {
                // The runtime's refusal (a token, a resumption) reaches the client as it is.
                let status = refused.status().as_u16();
                let body = refused
                    .body()
                    .as_deref()
                    .map(String::from_utf8_lossy)
                    .unwrap_or_default();
                let mut note = Map::new();
                note.insert("status".into(), json!(status));
                rec.record("meta", "refused", note);
                respond(&mut tcp, status, &ours(refused.headers()), &body).await;
                return Ok(());
            }
            Err(e) => {
                respond(&mut tcp, 502, &[], "the runtime cannot be reached\n").await;
                return Err(e.into());
            }
        };
    // The runtime's answer to the upgrade, with its resumption headers, to the client.
    let mut head = format!(
        "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Accept: {}\r\n",
        derive_accept_key(opened.key.as_bytes())
    );
    for (name, value) in ours(response.headers()) {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    tcp.write_all(head.as_bytes()).await?;
    let client = WebSocketStream::from_partially_read(tcp, rest, Role::Server, Some(config)).await;
    let cut = Cutter {
        after: args.cut_after,
        reset: args.cut == "reset",
        now: cut_now,
    };
    if relay(client, runtime, &mut rec, cut).await == Relayed::Cut {
        rec.record("meta", "cut", Map::new());
    }
    Ok(())
}

/// The client's upgrade request, read off its socket: what to record and pass on, and the
/// bytes after it.
async fn read_upgrade(tcp: &mut TcpStream) -> Result<(Opened, Vec<u8>), BoxError> {
    let mut buf = Vec::with_capacity(1024);
    let end = loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        if buf.len() >= MAX_HEAD {
            return Err(format!("an upgrade request longer than {MAX_HEAD} bytes").into());
        }
        let mut chunk = [0u8; 2048];
        let read = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut chunk))
            .await
            .map_err(|_| "no upgrade request within 10 s")??;
        if read == 0 {
            return Err("the connection ended before its upgrade request".into());
        }
        buf.extend_from_slice(&chunk[..read]);
    };
    let mut parsed = [httparse::EMPTY_HEADER; 64];
    let mut request = httparse::Request::new(&mut parsed);
    request.parse(&buf[..end])?;
    let path = request.path.unwrap_or("/").to_owned();
    let value = |h: &httparse::Header<'_>| String::from_utf8_lossy(h.value).into_owned();
    let key = (request.headers.iter())
        .find(|h| h.name.eq_ignore_ascii_case("sec-websocket-key"))
        .map(value)
        .ok_or("not a WebSocket upgrade (no Sec-WebSocket-Key)")?;
    let mut headers = Map::new();
    for name in [
        "User-Agent",
        "Sec-WebSocket-Version",
        "Sec-WebSocket-Extensions",
        "Sec-WebSocket-Protocol",
    ] {
        if let Some(h) = request
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
        {
            headers.insert(name.into(), json!(value(h)));
        }
    }
    let forward = (request.headers.iter())
        .filter(|h| !HANDSHAKE_HEADERS.contains(&h.name.to_ascii_lowercase().as_str()))
        .map(|h| (h.name.to_owned(), value(h)))
        .collect();
    let opened = Opened {
        at: Instant::now(),
        path,
        headers,
        forward,
        key,
    };
    Ok((opened, buf[end..].to_vec()))
}

/// The runtime's own response headers (`runtimeuse-*`: resumption), to pass on.
fn ours(headers: &HeaderMap) -> Vec<(String, String)> {
    (headers.iter())
        .filter(|(name, _)| name.as_str().starts_with("runtimeuse-"))
        .filter_map(|(name, v)| Some((name.as_str().to_owned(), v.to_str().ok()?.to_owned())))
        .collect()
}

/// Answers the client's upgrade request with a plain HTTP response and closes.
async fn respond(tcp: &mut TcpStream, status: u16, headers: &[(String, String)], body: &str) {
    let reason = match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        409 => "Conflict",
        410 => "Gone",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Refused",
    };
    let mut head = format!(
        "HTTP/1.1 {status} {reason}\r\nConnection: close\r\nContent-Type: text/plain; \
         charset=utf-8\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    head.push_str(body);
    let _ = tcp.write_all(head.as_bytes()).await;
    let _ = tcp.shutdown().await;
}

/// What the client's upgrade request said, for the transcript.
struct Opened {
    at: Instant,
    path: String,
    headers: Map<String, Value>,
    /// The client's headers to pass on to the runtime: its credentials (`Authorization`),
    /// its resumption headers, and any header of its own, but not those of the WebSocket
    /// handshake itself.
    forward: Vec<(String, String)>,
    /// Its `Sec-WebSocket-Key`.
    key: String,
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

/// When a connection is cut (`--cut-after`, SIGUSR1).
struct Cutter {
    after: Option<u64>,
    /// A TCP reset rather than a close.
    reset: bool,
    /// Bumped by SIGUSR1.
    now: tokio::sync::watch::Receiver<u64>,
}

/// How a relay ended.
#[derive(Debug, PartialEq, Eq)]
enum Relayed {
    /// Both sides are done.
    Ended,
    /// The proxy cut both connections.
    Cut,
}

/// Forwards frames both ways, recording each, until both sides are done or the connection is
/// cut.
async fn relay(
    mut client: Ws,
    mut runtime: WebSocketStream<MaybeTlsStream<TcpStream>>,
    rec: &mut Recorder,
    mut cut: Cutter,
) -> Relayed {
    let (mut client_done, mut runtime_done) = (false, false);
    // Whether each side sent its close frame: a side whose stream ends after one ended the
    // connection properly; one that ends without takes the other side's connection with it.
    let (mut client_closed, mut runtime_closed) = (false, false);
    // The runtime's data frames passed to the client.
    let mut passed = 0u64;
    cut.now.mark_unchanged();
    while !(client_done && runtime_done) {
        let cut_now = tokio::select! {
            Ok(()) = cut.now.changed() => true,
            m = client.next(), if !client_done => match m {
                Some(Ok(m)) => {
                    rec.frame("c2r", &m);
                    client_closed |= matches!(m, Message::Close(_));
                    if !runtime_done && forward(&mut runtime, m).await.is_err() {
                        runtime_done = true;
                    }
                    false
                }
                _ => {
                    client_done = true;
                    if !client_closed {
                        rec.record("meta", "tcp_closed_without_close_frame", side("c2r"));
                        runtime_done = true;
                    }
                    false
                }
            },
            m = runtime.next(), if !runtime_done => match m {
                Some(Ok(m)) => {
                    let data = matches!(m, Message::Text(_) | Message::Binary(_));
                    if data && cut.after == Some(passed) {
                        true
                    } else {
                        passed += u64::from(data);
                        rec.frame("r2c", &m);
                        runtime_closed |= matches!(m, Message::Close(_));
                        if !client_done && forward(&mut client, m).await.is_err() {
                            client_done = true;
                        }
                        false
                    }
                }
                _ => {
                    runtime_done = true;
                    if !runtime_closed {
                        rec.record("meta", "tcp_closed_without_close_frame", side("r2c"));
                        client_done = true;
                    }
                    false
                }
            },
        };
        if cut_now {
            // Both connections end without a close frame: to each peer, the other vanished.
            if cut.reset {
                let _ = client.get_ref().set_zero_linger();
                if let MaybeTlsStream::Plain(tcp) = runtime.get_ref() {
                    let _ = tcp.set_zero_linger();
                }
            }
            return Relayed::Cut;
        }
    }
    Relayed::Ended
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

/// Passes a data or close frame on unchanged, and an acknowledgement ping of a resumable
/// session (`docs/resume.md`); other pings and pongs are answered by each leg.
async fn forward<S>(
    to: &mut WebSocketStream<S>,
    m: Message,
) -> Result<(), runtimeuse_tokio::tokio_tungstenite::tungstenite::Error>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    match m {
        Message::Text(_) | Message::Binary(_) => to.send(m).await,
        Message::Ping(payload) if resume::parse_ack(&payload).is_some() => {
            to.send(Message::Ping(payload)).await
        }
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
