//! Test support for the integration scenarios: the project's runtime served on a background
//! tokio runtime ([`Served`]), a mock model provider speaking the OpenAI and Anthropic
//! streaming formats ([`MockProvider`]), a minimal HTTP server on loopback that serves files and records
//! PUT uploads, a `wss://` echo runtime with a certificate made on the spot, and unique
//! temporary directories.
//!
//! The client scenarios themselves are written once, in `tests/shared/scenarios.rs`, and
//! included by the test file of each adapter (tokio, async-std, blocking), which first defines
//! the few words that differ between them: how a test runs, how a call is awaited, how a
//! callback is written.

#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use runtimeuse_runtime::{
    AgentHandler, AgentOptions, ModelAgent, Runtime, RuntimeHandle, RuntimeOptions, ScriptedHandler,
};

pub mod bench;
pub mod cut;
pub mod fault;
pub mod flood;
pub mod mock_provider;
pub use fault::{Fault, FaultProxy};
pub use mock_provider::{Api, MockProvider, Recorded, Reply, SIDE_MODEL, SseEvent, TOOL_RESULT};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// The project's runtime (scripted handler) on 127.0.0.1 (ephemeral port), served by a tokio
/// runtime of its own, so that clients of any kind (async on any executor, or blocking) can be
/// tested against it. Stopped when dropped.
#[derive(Debug)]
pub struct Served {
    /// `Some` until dropped.
    rt: Option<tokio::runtime::Runtime>,
    handle: Option<RuntimeHandle>,
}

impl Served {
    /// Serves a runtime with these options.
    ///
    /// # Panics
    ///
    /// If the tokio runtime cannot be built or no loopback port can be bound.
    pub fn start(options: RuntimeOptions) -> Self {
        Self::with_handler(ScriptedHandler, options)
    }

    /// Serves a runtime running `handler` with these options.
    ///
    /// # Panics
    ///
    /// If the tokio runtime cannot be built or no loopback port can be bound.
    pub fn with_handler(handler: impl AgentHandler, options: RuntimeOptions) -> Self {
        Self::serve_on(tokio_runtime(), handler, options)
    }

    /// Serves a runtime whose agent is a [`ModelAgent`] speaking `api` to a [`MockProvider`]
    /// that answers with `replies` (the agent's key is [`TEST_KEY`]). Returns both.
    ///
    /// # Panics
    ///
    /// If the tokio runtime cannot be built or no loopback port can be bound.
    pub fn model_agent(
        api: Api,
        replies: Vec<Reply>,
        agent: AgentOptions,
        options: RuntimeOptions,
    ) -> (Self, MockProvider) {
        let rt = tokio_runtime();
        let mock = on(&rt, MockProvider::start(replies));
        let agent = ModelAgent::new(api.provider(&mock).api_key(TEST_KEY), agent).expect("agent");
        (Self::serve_on(rt, agent, options), mock)
    }

    fn serve_on(
        rt: tokio::runtime::Runtime,
        handler: impl AgentHandler,
        options: RuntimeOptions,
    ) -> Self {
        let handle = on(&rt, async {
            Runtime::new(handler)
                .options(options)
                .bind("127.0.0.1:0")
                .await
                .expect("bind")
                .spawn()
        });
        Self {
            rt: Some(rt),
            handle: Some(handle),
        }
    }

    /// The runtime's `ws://` URL.
    ///
    /// # Panics
    ///
    /// After [`stop`](Self::stop).
    pub fn url(&self) -> String {
        self.handle.as_ref().expect("running").url()
    }

    /// Stops the runtime: its connections close at once (requests in flight are cancelled).
    pub fn stop(&mut self) {
        if let Some(h) = self.handle.take() {
            on(self.rt(), h.shutdown_within(std::time::Duration::ZERO));
        }
    }

    /// Stops the runtime as a crash would: its connections drop without a close frame.
    pub fn kill(&mut self) {
        if let Some(h) = self.handle.take() {
            on(self.rt(), h.abort());
        }
    }

    /// Starts a [`FaultProxy`] in front of this runtime (on its tokio runtime).
    pub fn fault_proxy(&self, fault: Fault, after: usize) -> FaultProxy {
        on(self.rt(), FaultProxy::start(self.url(), fault, after))
    }

    /// Starts an [`HttpServer`] on this runtime's tokio runtime.
    pub fn http(&self, files: HashMap<String, Vec<u8>>) -> HttpServer {
        on(
            self.rt(),
            HttpServer::start(files, std::time::Duration::ZERO),
        )
    }

    /// An [`HttpServer`] that takes `put_delay` to finish each PUT after reading its body (a
    /// slow storage service): it records the upload and answers only then.
    pub fn slow_http(&self, put_delay: std::time::Duration) -> HttpServer {
        on(self.rt(), HttpServer::start(HashMap::new(), put_delay))
    }

    /// Starts a `wss://` runtime on this tokio runtime that answers every query with
    /// `tls:<prompt>`, with a fresh self-signed certificate for `localhost`. Returns its port
    /// and the certificate (DER).
    pub fn wss_echo(&self) -> (u16, Vec<u8>) {
        on(self.rt(), wss::echo_server())
    }

    fn rt(&self) -> &tokio::runtime::Runtime {
        self.rt.as_ref().expect("running until dropped")
    }
}

/// The API key the mock providers' agents use; tests check that it never reaches a client.
pub const TEST_KEY: &str = "sk-test-0123456789-do-not-leak";

fn tokio_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Runs `fut` to completion on `rt`, from any thread, inside another async runtime's task too
/// (tokio refuses a nested `block_on` on the same thread, so it runs on a scoped thread).
fn on<F>(rt: &tokio::runtime::Runtime, fut: F) -> F::Output
where
    F: std::future::Future + Send,
    F::Output: Send,
{
    std::thread::scope(|s| {
        s.spawn(|| rt.block_on(fut))
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e))
    })
}

impl Drop for Served {
    fn drop(&mut self) {
        self.stop();
        // Without waiting (tokio forbids a blocking drop inside another runtime's task).
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// Serves a runtime with default options.
pub fn served() -> Served {
    Served::start(RuntimeOptions::default())
}

mod wss {
    use std::sync::Arc;

    use runtimeuse_tokio::proto::runtime::RuntimeEvent;
    use runtimeuse_tokio::proto::{QueryResult, ResultData};
    use runtimeuse_tokio::server::{RuntimeConnection, ServerConfig};
    use tokio_rustls::TlsAcceptor;
    use tokio_rustls::rustls;

    pub(crate) async fn echo_server() -> (u16, Vec<u8>) {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("cert");
        let der = cert.cert.der().to_vec();
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("tls versions")
            .with_no_client_auth()
            .with_single_cert(vec![der.clone().into()], key)
            .expect("certificate");
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    // An untrusting client aborts the TLS handshake: nothing to serve.
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let Ok(mut conn) =
                        RuntimeConnection::accept(tls, ServerConfig::default()).await
                    else {
                        return;
                    };
                    while let Some(event) = conn.next_event().await {
                        let answered = match event {
                            RuntimeEvent::Invocation { invocation, .. } => {
                                let text = format!("tls:{}", invocation.user_prompt);
                                let result = QueryResult::new(
                                    ResultData::Text(text),
                                    serde_json::Value::Null,
                                );
                                conn.session().finish_query(&result)
                            }
                            RuntimeEvent::EndSession => conn.session().confirm_end_session(),
                            _ => Ok(()),
                        };
                        if answered.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (port, der)
    }
}

/// A PUT the server received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upload {
    /// The request path.
    pub path: String,
    /// The `Content-Type` header.
    pub content_type: Option<String>,
    /// The body.
    pub body: Vec<u8>,
}

/// A tiny HTTP/1.1 server on 127.0.0.1 (ephemeral port): GET serves `files`, PUT records an
/// [`Upload`]. It stops when dropped.
#[derive(Debug)]
pub struct HttpServer {
    /// The bound address.
    pub addr: SocketAddr,
    uploads: Arc<Mutex<Vec<Upload>>>,
    task: tokio::task::JoinHandle<()>,
}

impl HttpServer {
    /// Starts the server with these files (path -> body), taking `put_delay` over each PUT.
    ///
    /// # Panics
    ///
    /// If no loopback port can be bound.
    pub async fn start(files: HashMap<String, Vec<u8>>, put_delay: std::time::Duration) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let uploads = Arc::new(Mutex::new(Vec::new()));
        let files = Arc::new(files);
        let u = Arc::clone(&uploads);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (files, u) = (Arc::clone(&files), Arc::clone(&u));
                tokio::spawn(async move {
                    let _ = serve(stream, &files, &u, put_delay).await;
                });
            }
        });
        Self {
            addr,
            uploads,
            task,
        }
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// How many uploads to `path` were received so far.
    pub fn uploads_to(&self, path: &str) -> usize {
        self.uploads
            .lock()
            .map_or(0, |u| u.iter().filter(|u| u.path == path).count())
    }

    /// The upload to `path` received so far, without waiting. The server records an upload
    /// once it has read the whole body, before it answers the PUT.
    pub fn uploaded(&self, path: &str) -> Option<Upload> {
        self.uploads
            .lock()
            .ok()
            .and_then(|u| u.iter().find(|u| u.path == path).cloned())
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(
    stream: tokio::net::TcpStream,
    files: &HashMap<String, Vec<u8>>,
    uploads: &Mutex<Vec<Upload>>,
    put_delay: std::time::Duration,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream);
    let request = read_request(&mut reader).await?;
    let content_type = request.header("content-type").map(str::to_owned);
    let (method, path, body) = (request.method, request.path, request.body);
    let mut stream = reader.into_inner();
    match (method.as_str(), files.get(&path)) {
        ("GET", Some(file)) => {
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                file.len()
            );
            stream.write_all(head.as_bytes()).await?;
            stream.write_all(file).await?;
        }
        ("PUT", _) => {
            tokio::time::sleep(put_delay).await;
            if let Ok(mut u) = uploads.lock() {
                u.push(Upload {
                    path,
                    content_type,
                    body,
                });
            }
            stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                .await?;
        }
        _ => {
            stream
                .write_all(
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                )
                .await?;
        }
    }
    stream.shutdown().await
}

/// An HTTP/1.1 request as the test servers read it.
#[derive(Debug)]
pub(crate) struct HttpRequest {
    pub(crate) method: String,
    pub(crate) path: String,
    /// Names in lower case.
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

impl HttpRequest {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Reads one request: its line, its headers and a `Content-Length` body.
pub(crate) async fn read_request(
    reader: &mut BufReader<tokio::net::TcpStream>,
) -> std::io::Result<HttpRequest> {
    let mut line = String::new();
    reader.read_line(&mut line).await?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_owned();
    let path = parts.next().unwrap_or("").to_owned();
    let mut headers = Vec::new();
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).await?;
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
    }
    let length = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body).await?;
    Ok(HttpRequest {
        method,
        path,
        headers,
        body,
    })
}

/// A new empty directory under the system's temporary directory.
///
/// # Panics
///
/// If it cannot be created.
pub fn temp_dir(label: &str) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "runtimeuse-{label}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// The README's Rust snippets, compiled as doctests (`cargo test --doc`), so that they cannot
/// drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeDoctests;

/// The same for the tokio crate's README.
#[cfg(doctest)]
#[doc = include_str!("../../runtimeuse-tokio/README.md")]
struct TokioReadmeDoctests;
