//! The byte stream under plinth's HTTP/2 connections, the server's and the SDK's alike.
//!
//! h2 leaves a DATA frame's payload out of its write buffer when the connection takes vectored
//! writes and the payload is 256 bytes or more; such a frame then goes out alone, in a `writev`
//! of its own, before the next frame may be buffered. A watch event, a read or a put carrying a
//! 256-byte value is such a frame: a put fanned out to 100 watchers on one connection cost 100
//! `writev`s, and a client with 16 puts in flight on a connection wrote each with its own.
//! Told that the connection takes no vectored writes, h2 copies payloads under 1 KiB into its
//! 16 KiB buffer and writes what gathered in one go; larger payloads still go out uncopied.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A connection that reports no vectored writes (and so gets none).
#[derive(Debug)]
pub struct Unvectored<T>(pub T);

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
