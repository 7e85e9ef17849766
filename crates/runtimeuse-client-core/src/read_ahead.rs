//! Read-ahead under the WebSocket: large reads while data streams in, no buffer while idle.
//!
//! tungstenite reads at most its read buffer size at a time (4 KiB in these clients, so that an
//! idle session costs little), which under a flood of output means one system call per 4 KiB.
//! [`ReadAhead`] sits between it and the socket. While reads come back full, it reads
//! [`READ_AHEAD`] bytes at once into a buffer of its own and serves the small reads from it;
//! once a read comes back short (the stream went quiet), it reads straight into the caller's
//! buffer again. Whenever its buffer is drained and the socket has nothing more (or the stream
//! went quiet), the buffer goes to a spare slot of the thread, so an idle connection keeps none
//! and the next burst on the thread does not allocate again. The adapters wrap their socket
//! types in it; the logic is here, once, over a read function.

use std::io::{self, Read, Write};
use std::task::{Poll, ready};

/// Bytes read at once while data streams in.
pub const READ_AHEAD: usize = 64 << 10;

/// The read-ahead state of one connection. See the [module docs](self).
#[derive(Debug, Default)]
pub struct ReadAhead {
    /// The read-ahead buffer; empty (no allocation) unless streaming.
    buf: Vec<u8>,
    /// Bytes of `buf` already handed out, and bytes read into it.
    pos: usize,
    end: usize,
    /// Whether the last read came back full: the next goes into `buf`.
    streaming: bool,
}

impl ReadAhead {
    /// A connection's state: nothing buffered, nothing allocated.
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes buffered and not handed out yet.
    pub fn buffered(&self) -> usize {
        self.end - self.pos
    }

    /// Bytes held by the read-ahead buffer (0 while idle).
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// Fills `out` from the buffer, or else with one call of `read` on the socket (into `out`
    /// itself, or into the read-ahead buffer while streaming). Returns the bytes put in `out`;
    /// 0 only at the end of the stream (or for an empty `out`). Nothing is lost on `Pending`
    /// or an error (a blocking read's timeout included); either hands the buffer, empty then,
    /// to the thread's spare.
    ///
    /// # Errors
    ///
    /// Those of `read`.
    pub fn poll_read(
        &mut self,
        out: &mut [u8],
        mut read: impl FnMut(&mut [u8]) -> Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        if self.pos < self.end {
            return Poll::Ready(Ok(self.hand_out(out)));
        }
        if out.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if !self.streaming || out.len() >= READ_AHEAD {
            let n = ready!(read(out))?;
            // A full read: more is probably waiting.
            self.streaming = n == out.len();
            return Poll::Ready(Ok(n));
        }
        if self.buf.len() < READ_AHEAD {
            self.buf = spare::take();
        }
        let n = match read(&mut self.buf) {
            Poll::Ready(Ok(n)) => n,
            // Nothing to read for now (or a blocking read timed out, or failed): a session
            // that waits keeps no buffer. Nothing is lost: the buffer was drained. The next
            // read takes the thread's spare again, and a short one ends the streaming.
            other => {
                spare::give_back(std::mem::take(&mut self.buf));
                return other;
            }
        };
        // Worth going on only if this read brought more than a direct one could have.
        self.streaming = n > out.len();
        self.pos = 0;
        self.end = n;
        Poll::Ready(Ok(self.hand_out(out)))
    }

    /// Copies buffered bytes into `out`; frees the buffer once drained, unless streaming.
    fn hand_out(&mut self, out: &mut [u8]) -> usize {
        let n = out.len().min(self.end - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        if self.pos == self.end {
            self.pos = 0;
            self.end = 0;
            if !self.streaming {
                spare::give_back(std::mem::take(&mut self.buf));
            }
        }
        n
    }
}

/// One spare read-ahead buffer per thread. A connection that goes quiet leaves its buffer here
/// and the next one to stream on the thread takes it: a flood that keeps catching up with the
/// sender (quiet for a moment, then streaming again) does not allocate and zero 64 KiB each
/// time, and idle connections keep none (a thread keeps at most one).
mod spare {
    use std::cell::RefCell;

    use super::READ_AHEAD;

    thread_local! {
        static SPARE: RefCell<Option<Vec<u8>>> = const { RefCell::new(None) };
    }

    /// A buffer of [`READ_AHEAD`] bytes: the thread's spare, or a new one.
    pub(super) fn take() -> Vec<u8> {
        SPARE
            .try_with(|s| s.borrow_mut().take())
            .ok()
            .flatten()
            .unwrap_or_else(|| vec![0; READ_AHEAD])
    }

    /// Keeps `buf` as the thread's spare if it has none; frees it otherwise.
    pub(super) fn give_back(buf: Vec<u8>) {
        if buf.len() != READ_AHEAD {
            return;
        }
        let _ = SPARE.try_with(|s| {
            let mut spare = s.borrow_mut();
            if spare.is_none() {
                *spare = Some(buf);
            }
        });
    }
}

/// A socket whose reads go through a [`ReadAhead`]; writes go straight through. It is the
/// blocking client's socket as it is (`Read` and `Write`); the async adapters wrap it to
/// implement their runtime's traits with [`poll_read_with`](Self::poll_read_with).
#[derive(Debug)]
pub struct ReadAheadStream<S> {
    inner: S,
    ahead: ReadAhead,
}

impl<S> ReadAheadStream<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            ahead: ReadAhead::new(),
        }
    }

    /// The wrapped socket.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped socket, to write to it.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// [`ReadAhead::poll_read`] with `read` reading the wrapped socket.
    ///
    /// # Errors
    ///
    /// Those of `read`.
    pub fn poll_read_with(
        &mut self,
        out: &mut [u8],
        mut read: impl FnMut(&mut S, &mut [u8]) -> Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        let Self { inner, ahead } = self;
        ahead.poll_read(out, |into| read(inner, into))
    }
}

impl<S: Read> Read for ReadAheadStream<S> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        match self.poll_read_with(out, |inner, into| Poll::Ready(inner.read(into))) {
            Poll::Ready(result) => result,
            // A blocking read is always ready.
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

impl<S: Write> Write for ReadAheadStream<S> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.inner.write(data)
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        self.inner.write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A socket holding `data`, handing out at most `chunk` bytes per read, and counting reads.
    struct Socket {
        data: Vec<u8>,
        at: usize,
        chunk: usize,
        reads: usize,
    }

    impl Socket {
        fn new(data: Vec<u8>, chunk: usize) -> Self {
            Self {
                data,
                at: 0,
                chunk,
                reads: 0,
            }
        }

        fn read(&mut self, buf: &mut [u8]) -> Poll<io::Result<usize>> {
            self.reads += 1;
            let n = buf.len().min(self.chunk).min(self.data.len() - self.at);
            buf[..n].copy_from_slice(&self.data[self.at..self.at + n]);
            self.at += n;
            Poll::Ready(Ok(n))
        }
    }

    fn read_all(ahead: &mut ReadAhead, socket: &mut Socket, out_len: usize) -> Vec<u8> {
        let mut got = Vec::new();
        let mut out = vec![0; out_len];
        loop {
            let Poll::Ready(Ok(n)) = ahead.poll_read(&mut out, |b| socket.read(b)) else {
                panic!("the socket never fails here");
            };
            if n == 0 {
                return got;
            }
            got.extend_from_slice(&out[..n]);
        }
    }

    #[test]
    fn a_stream_arrives_whole_and_in_order_in_few_reads() {
        let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
        let mut socket = Socket::new(data.clone(), usize::MAX);
        let mut ahead = ReadAhead::new();
        assert_eq!(read_all(&mut ahead, &mut socket, 8 << 10), data);
        // One 8 KiB read, then 64 KiB ones: 17 reads (and the one at the end) instead of 123.
        assert!(socket.reads <= 20, "{} reads", socket.reads);
        assert_eq!(ahead.capacity(), 0, "freed at the end of the stream");
    }

    #[test]
    fn short_reads_go_straight_to_the_caller_and_keep_no_buffer() {
        let data = vec![7u8; 10_000];
        // The socket has 100 bytes at a time: like a session's occasional frames.
        let mut socket = Socket::new(data.clone(), 100);
        let mut ahead = ReadAhead::new();
        let mut out = vec![0; 8 << 10];
        for _ in 0..10 {
            let Poll::Ready(Ok(n)) = ahead.poll_read(&mut out, |b| socket.read(b)) else {
                panic!("ready");
            };
            assert_eq!(n, 100);
            assert_eq!(ahead.capacity(), 0);
        }
        assert_eq!(read_all(&mut ahead, &mut socket, 8 << 10).len(), 9_000);
    }

    #[test]
    fn the_buffer_is_freed_once_the_stream_goes_quiet() {
        // A burst (full reads), then the socket trickles.
        let mut socket = Socket::new(vec![1u8; 300_000], usize::MAX);
        let mut ahead = ReadAhead::new();
        let mut out = vec![0; 8 << 10];
        let mut read = |ahead: &mut ReadAhead, socket: &mut Socket| match ahead
            .poll_read(&mut out, |b| socket.read(b))
        {
            Poll::Ready(Ok(n)) => n,
            _ => panic!("ready"),
        };
        for _ in 0..4 {
            read(&mut ahead, &mut socket);
        }
        assert!(ahead.capacity() >= READ_AHEAD, "streaming");
        socket.chunk = 50;
        // Drain what is buffered, then one short read ends the streaming.
        while ahead.buffered() > 0 {
            read(&mut ahead, &mut socket);
        }
        assert_eq!(read(&mut ahead, &mut socket), 50);
        assert_eq!(read(&mut ahead, &mut socket), 50);
        assert_eq!(ahead.capacity(), 0, "idle again: no buffer");
    }

    #[test]
    fn the_stream_reads_and_writes_through() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 241) as u8).collect();
        let mut stream = ReadAheadStream::new(io::Cursor::new(data.clone()));
        let mut got = Vec::new();
        let mut out = vec![0; 8 << 10];
        loop {
            let n = stream.read(&mut out).unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&out[..n]);
        }
        assert_eq!(got, data);
        let mut sink = ReadAheadStream::new(Vec::new());
        sink.write_all(b"through").unwrap();
        sink.flush().unwrap();
        assert_eq!(sink.get_ref(), b"through");
    }

    #[test]
    fn a_stream_that_pauses_frees_the_buffer_while_it_waits() {
        let mut socket = Socket::new(vec![3u8; 200_000], usize::MAX);
        let mut ahead = ReadAhead::new();
        let mut out = vec![0; 4 << 10];
        let mut got = 0;
        // Stream until everything is read, as a flood does.
        while got < 200_000 {
            let Poll::Ready(Ok(n)) = ahead.poll_read(&mut out, |b| socket.read(b)) else {
                panic!("ready");
            };
            got += n;
        }
        assert!(ahead.capacity() >= READ_AHEAD, "still streaming");
        // Then the socket has nothing more for now.
        assert!(ahead.poll_read(&mut out, |_| Poll::Pending).is_pending());
        assert_eq!(ahead.capacity(), 0, "an idle session keeps no buffer");
        // The same for a blocking read that times out, after another burst.
        socket.data.extend_from_slice(&[5u8; 100_000]);
        while socket.at < socket.data.len() || ahead.buffered() > 0 {
            let _ = ahead.poll_read(&mut out, |b| socket.read(b));
        }
        assert!(ahead.capacity() >= READ_AHEAD, "streaming again");
        let timed_out = ahead.poll_read(&mut out, |_| {
            Poll::Ready(Err(io::Error::from(io::ErrorKind::WouldBlock)))
        });
        assert!(matches!(timed_out, Poll::Ready(Err(_))));
        assert_eq!(ahead.capacity(), 0);
        // More data later, a little: the streaming ends, and the buffer goes back.
        socket.data.extend_from_slice(&[4u8; 100]);
        let Poll::Ready(Ok(n)) = ahead.poll_read(&mut out, |b| socket.read(b)) else {
            panic!("ready");
        };
        assert_eq!((n, ahead.capacity()), (100, 0));
        assert_eq!(&out[..n], &[4u8; 100][..]);
    }

    #[test]
    fn pending_and_errors_change_nothing() {
        let mut ahead = ReadAhead::new();
        let mut out = [0u8; 16];
        assert!(ahead.poll_read(&mut out, |_| Poll::Pending).is_pending());
        let failed = ahead.poll_read(&mut out, |_| {
            Poll::Ready(Err(io::Error::from(io::ErrorKind::ConnectionReset)))
        });
        assert!(matches!(failed, Poll::Ready(Err(_))));
        assert_eq!((ahead.buffered(), ahead.capacity()), (0, 0));
        assert!(matches!(
            ahead.poll_read(&mut [], |_| panic!("no read for an empty buffer")),
            Poll::Ready(Ok(0))
        ));
    }
}
