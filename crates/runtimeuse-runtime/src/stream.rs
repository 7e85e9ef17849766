//! A connection's byte stream, boxed.

use tokio::io::{AsyncRead, AsyncWrite};

/// A connection's byte stream: TCP, or an in-memory one in tests. Boxed, so that a resuming
/// client's socket can be handed to the task that owns its session.
pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A boxed [`Io`].
pub(crate) type BoxIo = Box<dyn Io>;
