//! What the client needs of an async runtime: a clock, a resettable timer and the WebSocket
//! stream type it connects with.

use std::future::{Future, poll_fn};
use std::pin::pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::{Sink, Stream};
use tungstenite::http::HeaderMap;
use tungstenite::{Error as WsError, Message};

use crate::{ClientSettings, Error};

/// An async runtime's clock, timer and sockets, as the generic client uses them.
///
/// `runtimeuse-tokio` and `runtimeuse-async-std` each implement it once; applications use their
/// type aliases ([`Session`](crate::Session) of the right backend) and never name this trait.
pub trait Backend: Send + Sync + Sized + 'static {
    /// The connected WebSocket (tokio-tungstenite's or async-tungstenite's stream).
    type Socket: Stream<Item = Result<Message, WsError>>
        + Sink<Message, Error = WsError>
        + Unpin
        + Send
        + 'static;
    /// A timer that fires once at an instant and can be moved.
    type Timer: Unpin + Send + 'static;

    /// The current instant (the runtime's clock, so that a paused test clock drives it).
    fn now() -> Instant;
    /// A timer firing at `deadline`.
    fn timer(deadline: Instant) -> Self::Timer;
    /// Moves `timer` to fire at `deadline` (also after it fired).
    fn reset(timer: &mut Self::Timer, deadline: Instant);
    /// Polls `timer`: ready once its deadline passed.
    fn poll_timer(timer: &mut Self::Timer, cx: &mut Context<'_>) -> Poll<()>;

    /// Connects to `settings.url` (TCP, TLS for `wss://`, the WebSocket handshake with the
    /// settings' headers and limits, and the `extra` headers;
    /// [`ClientSettings::handshake_with`] builds the request). Returns the socket and the
    /// headers of the handshake's response. The connect timeout is applied by the caller.
    fn connect(
        settings: &ClientSettings,
        extra: &[(&'static str, String)],
    ) -> impl Future<Output = Result<(Self::Socket, HeaderMap), Error>> + Send;
}

/// Runs `fut` for at most `limit`: `None` if the limit passed first.
pub async fn timeout<B: Backend, F: Future>(limit: Duration, fut: F) -> Option<F::Output> {
    let mut fut = pin!(fut);
    // A limit too far away to be an instant is no limit.
    let Some(deadline) = B::now().checked_add(limit) else {
        return Some(fut.await);
    };
    let mut timer = B::timer(deadline);
    poll_fn(|cx| {
        if let Poll::Ready(out) = fut.as_mut().poll(cx) {
            return Poll::Ready(Some(out));
        }
        B::poll_timer(&mut timer, cx).map(|()| None)
    })
    .await
}
