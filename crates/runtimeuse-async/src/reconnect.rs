//! The async client's side of resumable sessions: reconnecting within the runtime's grace
//! period. The bookkeeping is `runtimeuse_client_core::resume`; this module connects.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::StreamExt;
use runtimeuse_client_core::resume::{Attempt, ResumeToken, Resumption};
use runtimeuse_proto::SessionState;

use crate::backend::{Backend, timeout};
use crate::connect::connect;
use crate::options::BoxFuture;
use crate::{ClientSettings, Error};

/// A resumable session's client side: the bookkeeping, the settings to reconnect with, and
/// the reconnection in progress.
pub(crate) struct Resuming<B: Backend> {
    pub(crate) state: Resumption,
    settings: Arc<ClientSettings>,
    attempt: Option<BoxFuture<Attempt<B::Socket>>>,
}

impl<B: Backend> Resuming<B> {
    pub(crate) fn new(state: Resumption, settings: Arc<ClientSettings>) -> Self {
        Self {
            state,
            settings,
            attempt: None,
        }
    }

    /// Polls the reconnection: `Ready(Ok(..))` once one resumed the session, `Ready(Err(..))`
    /// once the session is gone (refused, or the grace period over).
    /// A resume token of the session with the request layer's `state`.
    pub(crate) fn token(&mut self, state: SessionState) -> ResumeToken {
        self.state.token(&self.settings.url, state)
    }

    pub(crate) fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Result<(B::Socket, u64), Error>> {
        loop {
            if let Some(attempt) = &mut self.attempt {
                let outcome = std::task::ready!(attempt.as_mut().poll(cx));
                self.attempt = None;
                match outcome {
                    Attempt::Resumed(socket, count) => return Poll::Ready(Ok((socket, count))),
                    Attempt::Refused(refusal) => {
                        tracing::info!(
                            why = refusal.token(),
                            "the runtime refused to resume the session"
                        );
                        return Poll::Ready(Err(Error::ConnectionClosed));
                    }
                    Attempt::Failed(e) => self.state.failed(&e),
                }
            }
            let Some(wait) = self.state.next_attempt(B::now()) else {
                tracing::info!(grace = ?self.state.grace(), "no reconnection within the grace period");
                return Poll::Ready(Err(Error::ConnectionClosed));
            };
            let settings = Arc::clone(&self.settings);
            let headers = self.state.resume_headers();
            self.attempt = Some(Box::pin(attempt::<B>(settings, headers, wait)));
        }
    }
}

/// One reconnection, after `wait`.
pub(crate) async fn attempt<B: Backend>(
    settings: Arc<ClientSettings>,
    headers: [(&'static str, String); 2],
    wait: Duration,
) -> Attempt<B::Socket> {
    if !wait.is_zero() {
        timeout::<B, _>(wait, std::future::pending::<()>()).await;
    }
    let mut socket = match connect::<B>(&settings, &headers).await {
        Ok((socket, _)) => socket,
        Err(e) => return Attempt::from_error(e),
    };
    // The runtime's first frame is its count of the client's frames.
    match timeout::<B, _>(settings.connect_timeout, socket.next()).await {
        Some(Some(first)) => Attempt::from_first_frame(socket, first),
        _ => Attempt::Failed(Error::ConnectionClosed),
    }
}
