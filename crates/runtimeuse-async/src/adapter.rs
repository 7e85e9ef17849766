//! What every adapter crate declares the same way, written once: [`adapter!`](crate::adapter).

/// Declares an adapter crate's names for the generic client over its [`Backend`](crate::Backend)
/// `$io`: the aliases `Client`, `ClientBuilder`, `Session` and `RequestEvents`, and
/// `ReadAheadStream`, the read-ahead wrapper of its socket (the adapter implements its
/// runtime's read and write traits for it, reading through
/// [`ReadAheadStream::poll_read_with`](runtimeuse_client_core::read_ahead::ReadAheadStream::poll_read_with)
/// on the wrapped [`read_ahead::ReadAheadStream`](runtimeuse_client_core::read_ahead::ReadAheadStream)).
/// For the adapter crates of this workspace (`runtimeuse-tokio`, `runtimeuse-async-std`).
#[macro_export]
macro_rules! adapter {
    ($io:ty) => {
        /// A client for one runtime URL (`ws://` or `wss://`). Cheap to clone; each call or
        /// [`session`](runtimeuse_async::Client::session) opens its own connection. See
        /// [`runtimeuse_async::Client`].
        pub type Client = $crate::Client<$io>;

        /// Builds a [`Client`] with non-default settings (headers, connect timeout, frame
        /// limit, root certificates, session config).
        pub type ClientBuilder = $crate::ClientBuilder<Client>;

        /// A persistent session over one connection: sequential queries and command batches,
        /// then a graceful [`close`](runtimeuse_async::Session::close). See
        /// [`runtimeuse_async::Session`].
        pub type Session = $crate::Session<$io>;

        /// The events of one request, as a
        /// [`Stream`](https://docs.rs/futures-util/0.3/futures_util/stream/trait.Stream.html).
        /// See [`runtimeuse_async::RequestEvents`].
        pub type RequestEvents<'a> = $crate::RequestEvents<'a, $io>;

        /// The client's socket under TLS and the WebSocket: reads go through a
        /// [`ReadAhead`](runtimeuse_client_core::read_ahead::ReadAhead), which reads 64 KiB at
        /// once while output streams in and keeps no buffer while the session is idle (the
        /// WebSocket itself reads 4 KiB at a time). Writes go straight through.
        #[derive(Debug)]
        pub struct ReadAheadStream<S>($crate::ReadAheadInner<S>);

        impl<S> ReadAheadStream<S> {
            /// Wraps `inner`.
            pub fn new(inner: S) -> Self {
                Self($crate::ReadAheadInner::new(inner))
            }

            /// The wrapped socket.
            pub fn get_ref(&self) -> &S {
                self.0.get_ref()
            }
        }
    };
}
