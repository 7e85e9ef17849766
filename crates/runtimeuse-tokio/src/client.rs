//! The tokio [`Backend`]: clock, timers, and connecting with tokio-tungstenite.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use runtimeuse_async::{Backend, ClientSettings, Error};
use tokio::net::TcpStream;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// tokio as the generic client's [`Backend`]: tokio's clock (so that `tokio::time::pause`
/// drives it), its timers, and tokio-tungstenite's stream (rustls for `wss://`).
#[derive(Debug)]
pub struct Tokio(());

impl Backend for Tokio {
    type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;
    type Timer = Pin<Box<tokio::time::Sleep>>;

    fn now() -> Instant {
        tokio::time::Instant::now().into_std()
    }

    fn timer(deadline: Instant) -> Self::Timer {
        Box::pin(tokio::time::sleep_until(deadline.into()))
    }

    fn reset(timer: &mut Self::Timer, deadline: Instant) {
        timer.as_mut().reset(deadline.into());
    }

    fn poll_timer(timer: &mut Self::Timer, cx: &mut Context<'_>) -> Poll<()> {
        timer.as_mut().poll(cx)
    }

    async fn connect(settings: &ClientSettings) -> Result<Self::Socket, Error> {
        let (request, config) = settings.handshake()?;
        #[cfg(feature = "__rustls")]
        let (ws, _response) = tokio_tungstenite::connect_async_tls_with_config(
            request,
            Some(config),
            true,
            Some(tokio_tungstenite::Connector::Rustls(std::sync::Arc::new(
                settings.tls_config()?,
            ))),
        )
        .await?;
        #[cfg(not(feature = "__rustls"))]
        let (ws, _response) =
            tokio_tungstenite::connect_async_with_config(request, Some(config), true).await?;
        Ok(ws)
    }
}
