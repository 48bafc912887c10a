//! The client listener's connections: `TCP_NODELAY`, and bodies stored in
//! sealed files (`sealed`) sent with `sendfile` rather than copied.
//!
//! hyper writes a response as its head and the body's own `Bytes`, in one
//! vectored write. [`Stream`] looks at each buffer of at least
//! [`sealed::SEAL_AT_LEAST`] bytes: one that lies in a sealed file goes out by
//! `sendfile` from that file, and whatever precedes it (the head) by a `sendmsg`
//! with `MSG_MORE`, so the head and the body's first bytes still share a
//! segment. Each call sends one of the two and reports how much it sent, as any
//! short write does; hyper calls again for the rest.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use super::sealed;

/// Accepts client connections for `axum::serve`.
#[derive(Debug)]
pub struct Listener(pub TcpListener);

impl axum::serve::Listener for Listener {
    type Io = Stream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Stream, SocketAddr) {
        let (tcp, peer) = axum::serve::Listener::accept(&mut self.0).await;
        (Stream(tcp), peer)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

/// A client connection that sends sealed bodies from their files.
#[derive(Debug)]
pub struct Stream(TcpStream);

impl Stream {
    /// Sets up an accepted connection (through `ListenerExt::tap_io`, which also
    /// gives handlers the peer address). Every response is written whole, at
    /// once: holding its last segment back until the previous one is
    /// acknowledged (Nagle) only delays it.
    pub fn configure(&mut self) {
        if let Err(e) = self.0.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY not set");
        }
    }

    /// Runs a non-blocking send once the socket is writable, waiting again
    /// whenever the kernel says it would block.
    fn poll_send(
        &self,
        cx: &mut Context<'_>,
        mut send: impl FnMut(&TcpStream) -> io::Result<usize>,
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.0.poll_write_ready(cx))?;
            match self.0.try_io(Interest::WRITABLE, || send(&self.0)) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                result => return Poll::Ready(result),
            }
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[io::IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let sealed = bufs.iter().enumerate().find_map(|(i, buf)| {
            (buf.len() >= sealed::SEAL_AT_LEAST)
                .then(|| sealed::find(buf))
                .flatten()
                .map(|region| (i, region))
        });
        match sealed {
            None => Pin::new(&mut self.0).poll_write_vectored(cx, bufs),
            Some((0, region)) => {
                let len = bufs[0].len();
                self.poll_send(cx, |tcp| {
                    let mut offset = region.offset;
                    Ok(rustix::fs::sendfile(
                        tcp,
                        &*region.file,
                        Some(&mut offset),
                        len,
                    )?)
                })
            }
            Some((i, _)) => {
                let head = &bufs[..i];
                self.poll_send(cx, |tcp| {
                    let flags = rustix::net::SendFlags::MORE | rustix::net::SendFlags::NOSIGNAL;
                    Ok(rustix::net::sendmsg(
                        tcp,
                        head,
                        &mut Default::default(),
                        flags,
                    )?)
                })
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}
