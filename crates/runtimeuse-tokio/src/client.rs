//! The tokio [`Backend`]: clock, timers, and connecting with tokio-tungstenite.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use crate::ReadAheadStream;
use runtimeuse_async::tungstenite::http::HeaderMap;
use runtimeuse_async::{Backend, ClientSettings, Error};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// tokio as the generic client's [`Backend`]: tokio's clock (so that `tokio::time::pause`
/// drives it), its timers, and tokio-tungstenite's stream (rustls for `wss://`).
#[derive(Debug)]
pub struct Tokio(());

impl Backend for Tokio {
    type Socket = WebSocketStream<MaybeTlsStream<ReadAheadStream<TcpStream>>>;
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

    async fn connect(
        settings: &ClientSettings,
        extra: &[(&'static str, String)],
    ) -> Result<(Self::Socket, HeaderMap), Error> {
        let (request, config) = settings.handshake_with(extra)?;
        let (host, port) = settings.host_and_port(&request)?;
        settings.require_tls(&request, cfg!(feature = "__rustls"))?;
        #[cfg(feature = "__rustls")]
        let connector =
            tokio_tungstenite::Connector::Rustls(std::sync::Arc::new(settings.tls_config()?));
        let tcp = TcpStream::connect((host.as_str(), port))
            .await
            .map_err(Error::Connect)?;
        tcp.set_nodelay(true).map_err(Error::Connect)?;
        let stream = ReadAheadStream::new(tcp);
        #[cfg(feature = "__rustls")]
        let (ws, response) = tokio_tungstenite::client_async_tls_with_config(
            request,
            stream,
            Some(config),
            Some(connector),
        )
        .await?;
        #[cfg(not(feature = "__rustls"))]
        let (ws, response) = tokio_tungstenite::client_async_with_config(
            request,
            MaybeTlsStream::Plain(stream),
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
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        // tungstenite's buffer is initialized already: this costs nothing there.
        let out = buf.initialize_unfilled();
        let n = std::task::ready!(self.get_mut().0.poll_read_with(out, |inner, into| {
            let mut into = ReadBuf::new(into);
            std::task::ready!(Pin::new(inner).poll_read(cx, &mut into))?;
            Poll::Ready(Ok(into.filled().len()))
        }))?;
        buf.advance(n);
        Poll::Ready(Ok(()))
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

    fn is_write_vectored(&self) -> bool {
        self.0.get_ref().is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(self.get_mut().0.get_mut()).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(self.get_mut().0.get_mut()).poll_shutdown(cx)
    }
}
