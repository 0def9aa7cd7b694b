//! The handshake deadline's witness: a connection wrapper that notes when the client's first
//! bytes (the HTTP/2 preface) have been read through it, so the connection's task can close a
//! connection that stayed silent past its deadline without timing hyper itself.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The HTTP/2 client connection preface, `PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n` (RFC 9113 §3.4): the
/// first bytes every HTTP/2 client sends, before anything else.
pub(crate) const HTTP2_PREFACE_LEN: usize = 24;

pin_project_lite::pin_project! {
    /// Passes everything through to `inner`, counting bytes read until `expected` have arrived.
    pub(crate) struct FirstBytes<IO> {
        #[pin]
        inner: IO,
        still_expected: usize,
        arrived: Arc<AtomicBool>,
    }
}

impl<IO> FirstBytes<IO> {
    /// Watches for the first `expected` bytes read from `inner`.
    pub(crate) fn new(inner: IO, expected: usize) -> Self {
        FirstBytes {
            inner,
            still_expected: expected,
            arrived: Arc::new(AtomicBool::new(expected == 0)),
        }
    }

    /// Becomes true once the expected bytes were read (by whoever reads the connection).
    pub(crate) fn arrived(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.arrived)
    }
}

impl<IO: AsyncRead> AsyncRead for FirstBytes<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let polled = this.inner.poll_read(cx, buf);
        if *this.still_expected > 0 {
            let read = buf.filled().len() - before;
            *this.still_expected = this.still_expected.saturating_sub(read);
            if *this.still_expected == 0 {
                this.arrived.store(true, Ordering::Release);
            }
        }
        polled
    }
}

impl<IO: AsyncWrite> AsyncWrite for FirstBytes<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn arrives_only_once_all_expected_bytes_were_read() {
        let (mut client, server) = tokio::io::duplex(64);
        let mut watched = FirstBytes::new(server, HTTP2_PREFACE_LEN);
        let arrived = watched.arrived();
        let mut buf = [0u8; 64];

        client.write_all(&[b'P'; 10]).await.unwrap();
        assert_eq!(watched.read(&mut buf).await.unwrap(), 10);
        assert!(!arrived.load(Ordering::Acquire));

        client.write_all(&[b'x'; 20]).await.unwrap();
        assert_eq!(watched.read(&mut buf).await.unwrap(), 20);
        assert!(arrived.load(Ordering::Acquire));
    }
}
