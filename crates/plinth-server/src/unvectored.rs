//! Connections that offer no vectored writes, so that HTTP/2 gathers small frames into one buffer
//! and sends many of them with one system call.
//!
//! h2 leaves a DATA frame's payload out of its write buffer when the connection takes vectored
//! writes and the payload is 256 bytes or more; such a frame then goes out alone, in a `writev`
//! of its own, before the next frame may be buffered. A watch event or a read carrying a
//! 256-byte value is such a frame: a put with 100 watchers on one connection cost 100 `writev`s,
//! and as many reads on the client's side. Told that the connection takes no vectored writes,
//! h2 copies payloads under 1 KiB into its 16 KiB buffer and writes what gathered in one go;
//! larger payloads still go out without a copy.

use axum::serve::Listener;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A listener whose connections are [`Unvectored`].
pub(crate) struct UnvectoredListener<L>(pub(crate) L);

impl<L: Listener> Listener for UnvectoredListener<L> {
    type Io = Unvectored<L::Io>;
    type Addr = L::Addr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (io, addr) = self.0.accept().await;
        (Unvectored(io), addr)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

/// A connection that reports no vectored writes (and so gets none).
pub(crate) struct Unvectored<T>(T);

impl<T: AsyncRead + Unpin> AsyncRead for Unvectored<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Unvectored<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn is_write_vectored(&self) -> bool {
        false
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}
