//! The async-io [`Backend`]: clock, timers, and connecting with async-tungstenite.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use async_tungstenite::WebSocketStream;
use async_tungstenite::smol::ConnectStream;
use runtimeuse_async::{Backend, ClientSettings, Error};

/// async-io as the generic client's [`Backend`]: the system clock, async-io's timers (which
/// run under async-std, smol or any executor) and async-tungstenite's stream over async-net
/// (futures-rustls for `wss://`).
#[derive(Debug)]
pub struct AsyncIo(());

impl Backend for AsyncIo {
    type Socket = WebSocketStream<ConnectStream>;
    type Timer = async_io::Timer;

    fn now() -> Instant {
        Instant::now()
    }

    fn timer(deadline: Instant) -> Self::Timer {
        async_io::Timer::at(deadline)
    }

    fn reset(timer: &mut Self::Timer, deadline: Instant) {
        timer.set_at(deadline);
    }

    fn poll_timer(timer: &mut Self::Timer, cx: &mut Context<'_>) -> Poll<()> {
        Pin::new(timer).poll(cx).map(|_| ())
    }

    async fn connect(settings: &ClientSettings) -> Result<Self::Socket, Error> {
        let (request, config) = settings.handshake()?;
        #[cfg(feature = "__rustls")]
        let (ws, _response) = async_tungstenite::smol::connect_async_with_tls_connector_and_config(
            request,
            Some(futures_rustls::TlsConnector::from(std::sync::Arc::new(
                settings.tls_config()?,
            ))),
            Some(config),
        )
        .await?;
        #[cfg(not(feature = "__rustls"))]
        let (ws, _response) =
            async_tungstenite::smol::connect_async_with_config(request, Some(config)).await?;
        Ok(ws)
    }
}
