//! Test support for the integration scenarios: a minimal HTTP server on loopback that serves
//! files and records PUT uploads, and unique temporary directories.

#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

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
/// [`Upload`] and notifies waiters. It stops when dropped.
#[derive(Debug)]
pub struct HttpServer {
    /// The bound address.
    pub addr: SocketAddr,
    uploads: Arc<Mutex<Vec<Upload>>>,
    notify: Arc<tokio::sync::Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl HttpServer {
    /// Starts the server with these files (path -> body).
    ///
    /// # Panics
    ///
    /// If no loopback port can be bound.
    pub async fn start(files: HashMap<String, Vec<u8>>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let uploads = Arc::new(Mutex::new(Vec::new()));
        let notify = Arc::new(tokio::sync::Notify::new());
        let files = Arc::new(files);
        let (u, n) = (Arc::clone(&uploads), Arc::clone(&notify));
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (files, u, n) = (Arc::clone(&files), Arc::clone(&u), Arc::clone(&n));
                tokio::spawn(async move {
                    let _ = serve(stream, &files, &u, &n).await;
                });
            }
        });
        Self {
            addr,
            uploads,
            notify,
            task,
        }
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Waits until an upload to `path` arrives, and returns it.
    pub async fn upload(&self, path: &str) -> Upload {
        loop {
            let notified = self.notify.notified();
            if let Some(u) = self
                .uploads
                .lock()
                .ok()
                .and_then(|u| u.iter().find(|u| u.path == path).cloned())
            {
                return u;
            }
            notified.await;
        }
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
    notify: &tokio::sync::Notify,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).await?;
    let mut parts = line.split_whitespace();
    let (method, path) = (
        parts.next().unwrap_or("").to_owned(),
        parts.next().unwrap_or("").to_owned(),
    );
    let mut length = 0;
    let mut content_type = None;
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).await?;
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            match name.to_ascii_lowercase().as_str() {
                "content-length" => length = value.trim().parse().unwrap_or(0),
                "content-type" => content_type = Some(value.trim().to_owned()),
                _ => {}
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).await?;
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
            if let Ok(mut u) = uploads.lock() {
                u.push(Upload {
                    path,
                    content_type,
                    body,
                });
            }
            notify.notify_waiters();
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
