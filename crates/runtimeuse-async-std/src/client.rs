//! The async-io [`Backend`]: clock, timers, and connecting with async-tungstenite.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use crate::ReadAheadStream;
use async_tungstenite::WebSocketStream;
use async_tungstenite::smol::ClientStream;
use futures_io::{AsyncRead, AsyncWrite};
use runtimeuse_async::tungstenite::http::HeaderMap;
use runtimeuse_async::{Backend, ClientSettings, Error};

/// async-io as the generic client's [`Backend`]: the system clock, async-io's timers (which
/// run under async-std, smol or any executor) and async-tungstenite's stream over async-net
/// (futures-rustls for `wss://`).
#[derive(Debug)]
pub struct AsyncIo(());

impl Backend for AsyncIo {
    type Socket = WebSocketStream<ClientStream<ReadAheadStream<async_net::TcpStream>>>;
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

    async fn connect(
        settings: &ClientSettings,
        extra: &[(&'static str, String)],
    ) -> Result<(Self::Socket, HeaderMap), Error> {
        let (request, config) = settings.handshake_with(extra)?;
        let (host, port) = settings.host_and_port(&request)?;
        settings.require_tls(&request, cfg!(feature = "__rustls"))?;
        #[cfg(feature = "__rustls")]
        let connector = Some(futures_rustls::TlsConnector::from(std::sync::Arc::new(
            settings.tls_config()?,
        )));
        #[cfg(not(feature = "__rustls"))]
        let connector = None;
        let tcp = async_net::TcpStream::connect((host.as_str(), port))
            .await
            .map_err(Error::Connect)?;
        // Small frames go out at once (async-tungstenite's own connect leaves Nagle on).
        tcp.set_nodelay(true).map_err(Error::Connect)?;
        let (ws, response) = async_tungstenite::smol::client_async_tls_with_connector_and_config(
            request,
            ReadAheadStream::new(tcp),
            connector,
            Some(config),
        )
        .await?;
        Ok((ws, response.into_parts().0.headers))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ReadAheadStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        self.get_mut()
            .0
            .poll_read_with(out, |inner, into| Pin::new(inner).poll_read(cx, into))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ReadAheadStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(self.get_mut().0.get_mut()).poll_write(cx, data)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(self.get_mut().0.get_mut()).poll_write_vectored(cx, bufs)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(self.get_mut().0.get_mut()).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(self.get_mut().0.get_mut()).poll_close(cx)
    }
}
