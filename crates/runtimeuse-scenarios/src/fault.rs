//! A fault-injection proxy: a WebSocket proxy on 127.0.0.1 between a client and a runtime that
//! forwards frames both ways and, after the runtime's first `after` data frames, does one
//! [`Fault`] to the client.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// What the proxy does to the client once the runtime's first `after` frames went through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Drops both TCP connections, with no close frame.
    Cut,
    /// Sends the client a close frame (1001, going away) and drops the connections.
    Close,
    /// Forwards nothing more, but keeps reading the client, so that its pings are answered: a
    /// wedged runtime behind a healthy proxy.
    Stall,
    /// Neither reads nor writes the client's socket again, pings included: a frozen peer.
    Freeze,
    /// Sends the client a frame that is not JSON, then goes on forwarding.
    NonJson,
    /// Sends the client a message of an unknown type, then goes on forwarding.
    UnknownType,
}

impl Fault {
    /// Every fault.
    pub const ALL: [Fault; 6] = [
        Fault::Cut,
        Fault::Close,
        Fault::Stall,
        Fault::Freeze,
        Fault::NonJson,
        Fault::UnknownType,
    ];
}

/// The proxy; it stops (and drops its connections) when dropped.
#[derive(Debug)]
pub struct FaultProxy {
    addr: std::net::SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// Proxies to the runtime at `target` (a `ws://` URL), doing `fault` after `after` frames.
    ///
    /// # Panics
    ///
    /// If no loopback port can be bound.
    pub async fn start(target: String, fault: Fault, after: usize) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((tcp, _)) = listener.accept().await {
                connections.spawn(proxy(tcp, target.clone(), fault, after));
            }
        });
        Self { addr, task }
    }

    /// The `ws://` URL clients connect to.
    pub fn url(&self) -> String {
        format!("ws://{}", self.addr)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn proxy(tcp: tokio::net::TcpStream, target: String, fault: Fault, after: usize) {
    let Ok(mut client) = tokio_tungstenite::accept_async(tcp).await else {
        return;
    };
    let Ok((mut runtime, _)) = tokio_tungstenite::connect_async(target.as_str()).await else {
        return;
    };
    let mut forwarded = 0;
    loop {
        tokio::select! {
            m = client.next() => match m {
                Some(Ok(m @ (Message::Text(_) | Message::Binary(_) | Message::Close(_)))) => {
                    if runtime.send(m).await.is_err() {
                        return;
                    }
                }
                Some(Ok(_)) => {}
                _ => return,
            },
            m = runtime.next() => match m {
                Some(Ok(m @ (Message::Text(_) | Message::Binary(_)))) => {
                    if forwarded == after {
                        let injected = match fault {
                            Fault::NonJson => Some("this is not JSON {"),
                            Fault::UnknownType => {
                                Some(r#"{"message_type":"mystery_message","detail":"from the proxy"}"#)
                            }
                            _ => None,
                        };
                        match injected {
                            Some(text) => {
                                if client.send(Message::text(text)).await.is_err() {
                                    return;
                                }
                            }
                            None => return act(fault, client).await,
                        }
                    }
                    forwarded += 1;
                    if client.send(m).await.is_err() {
                        return;
                    }
                }
                Some(Ok(Message::Close(c))) => {
                    let _ = client.send(Message::Close(c)).await;
                    return;
                }
                Some(Ok(_)) => {}
                _ => return,
            },
        }
    }
}

type ClientWs = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

async fn act(fault: Fault, mut client: ClientWs) {
    match fault {
        Fault::Cut => {}
        Fault::Close => {
            let frame = CloseFrame {
                code: CloseCode::Away,
                reason: "proxy going away".into(),
            };
            let _ = client.send(Message::Close(Some(frame))).await;
            let _ = client.flush().await;
        }
        Fault::Stall => {
            // Reading answers the client's pings; nothing is forwarded.
            while let Some(Ok(_)) = client.next().await {}
        }
        Fault::Freeze => {
            // Hold the socket, untouched, until the proxy is dropped (or a minute passes).
            tokio::time::sleep(Duration::from_secs(60)).await;
            drop(client);
        }
        Fault::NonJson | Fault::UnknownType => {}
    }
}
