//! Datagrams in and out by the batch: on Linux one `recvmmsg` takes up to
//! [`BATCH`] queries and one `sendmmsg` sends their answers, where a system call per
//! datagram would cost as much as answering it. Elsewhere one datagram per call.
//!
//! The receive blocks (up to the socket's read timeout) only for the first datagram
//! and then takes what is already queued (`MSG_WAITFORONE`), so a lone query is
//! answered at once and never waits for a batch to fill. Buffers are made once per
//! worker and reused: nothing is allocated per query.

use std::io;
use std::net::{SocketAddr, UdpSocket};

/// Datagrams received or sent per system call at most. NSD and gdnsd batch about as
/// many; past a few dozen the saving per datagram is gone.
pub const BATCH: usize = 32;
/// Largest datagram: a query can be no larger.
const MAX_DATAGRAM: usize = 65_535;

/// Queries received by one call, in buffers of the largest datagram size.
pub struct Inbox {
    packets: Vec<Box<[u8]>>,
    lengths: [usize; BATCH],
    /// The sender of each, None if it cannot be answered (port 0: spoofed or
    /// broken).
    peers: [Option<SocketAddr>; BATCH],
    #[cfg(target_os = "linux")]
    headers: nix::sys::socket::MultiHeaders<nix::sys::socket::SockaddrStorage>,
}

/// Answers waiting to be sent, each with its destination.
pub struct Outbox {
    /// Answer buffers, reused; the first `len` hold answers.
    answers: Vec<Vec<u8>>,
    #[cfg(target_os = "linux")]
    destinations: Vec<rustix::net::SocketAddrAny>,
    #[cfg(not(target_os = "linux"))]
    destinations: Vec<SocketAddr>,
    len: usize,
}

impl Inbox {
    /// Buffers for one worker.
    pub fn new() -> Self {
        Self {
            // Zeroed allocations: only the pages a datagram touches become resident.
            packets: (0..BATCH)
                .map(|_| vec![0; MAX_DATAGRAM].into_boxed_slice())
                .collect(),
            lengths: [0; BATCH],
            peers: [None; BATCH],
            #[cfg(target_os = "linux")]
            headers: nix::sys::socket::MultiHeaders::preallocate(BATCH, None),
        }
    }

    /// Query `i` of the last receive and its sender, unless it cannot be answered.
    pub fn get(&self, i: usize) -> Option<(&[u8], SocketAddr)> {
        let peer = self.peers.get(i).copied().flatten()?;
        Some((&self.packets[i][..self.lengths[i]], peer))
    }

    /// Waits for a datagram, then takes those queued behind it, up to [`BATCH`];
    /// returns how many were received.
    #[cfg(target_os = "linux")]
    pub fn receive(&mut self, socket: &UdpSocket) -> io::Result<usize> {
        use std::io::IoSliceMut;
        use std::os::fd::AsRawFd;

        use nix::sys::socket::{MsgFlags, recvmmsg};

        let mut packets = self.packets.iter_mut();
        let mut slices: [[IoSliceMut<'_>; 1]; BATCH] = std::array::from_fn(|_| {
            [IoSliceMut::new(
                packets.next().map_or(&mut [][..], |packet| &mut packet[..]),
            )]
        });
        let messages = recvmmsg(
            socket.as_raw_fd(),
            &mut self.headers,
            slices.iter_mut(),
            MsgFlags::MSG_WAITFORONE,
            None,
        )?;
        let mut received = 0;
        for (i, message) in messages.enumerate() {
            self.lengths[i] = message.bytes;
            self.peers[i] = message.address.and_then(|a| answerable(&a));
            received = i + 1;
        }
        Ok(received)
    }

    /// Waits for one datagram.
    #[cfg(not(target_os = "linux"))]
    pub fn receive(&mut self, socket: &UdpSocket) -> io::Result<usize> {
        let (len, peer) = socket.recv_from(&mut self.packets[0])?;
        self.lengths[0] = len;
        self.peers[0] = (peer.port() != 0).then_some(peer);
        Ok(1)
    }
}

impl Outbox {
    /// Buffers for one worker.
    pub fn new() -> Self {
        Self {
            answers: (0..BATCH).map(|_| Vec::new()).collect(),
            destinations: Vec::with_capacity(BATCH),
            len: 0,
        }
    }

    /// Datagrams queued, at most [`BATCH`]: push no more before sending.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The buffer for the next answer; it is sent only once [`Outbox::push`]ed.
    pub fn next_buffer(&mut self) -> &mut Vec<u8> {
        &mut self.answers[self.len]
    }

    /// Queues the answer written into [`Outbox::next_buffer`] for `peer`.
    pub fn push(&mut self, peer: SocketAddr) {
        self.destinations.push(peer.into());
        self.len += 1;
    }

    /// Sends every queued answer and empties the outbox. An answer that cannot be
    /// sent is dropped, as a datagram lost on the way would be; the others still go.
    #[cfg(target_os = "linux")]
    pub fn send(&mut self, socket: &UdpSocket) {
        use std::io::IoSlice;

        use rustix::net::{MMsgHdr, SendAncillaryBuffer, SendFlags, sendmmsg};

        let count = self.len;
        let mut next = 0;
        while next < count {
            let pending = count - next;
            let answers = &self.answers[next..count];
            let destinations = &self.destinations[next..count];
            let slices: [[IoSlice<'_>; 1]; BATCH] =
                std::array::from_fn(|i| [IoSlice::new(answers.get(i).map_or(&[][..], |a| &a[..]))]);
            let mut controls: [SendAncillaryBuffer<'_, '_, '_>; BATCH] =
                std::array::from_fn(|_| SendAncillaryBuffer::default());
            // Every header is filled (past `pending`, with the last destination) so
            // that they make one array; only the first `pending` are sent.
            let mut i = 0;
            let mut headers = controls.each_mut().map(|control| {
                let header =
                    MMsgHdr::new_with_addr(&destinations[i.min(pending - 1)], &slices[i], control);
                i += 1;
                header
            });
            match sendmmsg(socket, &mut headers[..pending], SendFlags::empty()) {
                Ok(sent) => next += sent.max(1),
                Err(rustix::io::Errno::INTR) => {}
                Err(error) => {
                    tracing::debug!(%error, peer = ?destinations[0], "UDP send failed");
                    next += 1;
                }
            }
        }
        self.clear();
    }

    /// Sends every queued answer, one call each, and empties the outbox.
    #[cfg(not(target_os = "linux"))]
    pub fn send(&mut self, socket: &UdpSocket) {
        for (answer, peer) in self.answers[..self.len].iter().zip(&self.destinations) {
            if let Err(error) = socket.send_to(answer, peer) {
                tracing::debug!(%error, %peer, "UDP send failed");
            }
        }
        self.clear();
    }

    fn clear(&mut self) {
        self.destinations.clear();
        self.len = 0;
    }
}

impl Default for Inbox {
    fn default() -> Self {
        Self::new()
    }
}

impl Default for Outbox {
    fn default() -> Self {
        Self::new()
    }
}

/// A sender's address, if it can be answered: port 0 cannot, such a source is
/// spoofed or broken.
#[cfg(target_os = "linux")]
fn answerable(address: &nix::sys::socket::SockaddrStorage) -> Option<SocketAddr> {
    let addr = if let Some(v4) = address.as_sockaddr_in() {
        SocketAddr::V4((*v4).into())
    } else {
        SocketAddr::V6((*address.as_sockaddr_in6()?).into())
    };
    (addr.port() != 0).then_some(addr)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Datagrams queued from two senders of each family come in batches of at most
    /// [`BATCH`], in order, and every answer goes back to its own sender.
    #[test]
    fn batches_in_order_and_answers_to_each_sender() {
        for local in ["127.0.0.1:0", "[::1]:0"] {
            let server = UdpSocket::bind(local).expect("server socket");
            server
                .set_read_timeout(Some(Duration::from_secs(5)))
                .expect("timeout");
            let to = server.local_addr().expect("address");
            let clients: Vec<UdpSocket> = (0..2)
                .map(|_| {
                    let client = UdpSocket::bind(local).expect("client socket");
                    client
                        .set_read_timeout(Some(Duration::from_secs(5)))
                        .expect("timeout");
                    client
                })
                .collect();
            let total = BATCH + 8;
            for n in 0..total {
                clients[n % 2].send_to(&[n as u8], to).expect("send");
            }
            let (mut inbox, mut outbox) = (Inbox::new(), Outbox::new());
            let mut sizes = Vec::new();
            let mut seen = Vec::new();
            while seen.len() < total {
                let received = inbox.receive(&server).expect("receive");
                sizes.push(received);
                for (packet, peer) in (0..received).filter_map(|i| inbox.get(i)) {
                    seen.push(packet[0]);
                    let answer = outbox.next_buffer();
                    answer.clear();
                    answer.extend_from_slice(&[packet[0], 0xAA]);
                    outbox.push(peer);
                }
                outbox.send(&server);
            }
            assert!(sizes.iter().all(|n| (1..=BATCH).contains(n)), "{sizes:?}");
            if cfg!(target_os = "linux") {
                assert_eq!(sizes[0], BATCH, "{local}: everything queued is taken");
            }
            assert_eq!(seen, (0..total as u8).collect::<Vec<_>>(), "{local}");
            for (i, client) in clients.iter().enumerate() {
                let mut buf = [0; 16];
                for n in (i..total).step_by(2) {
                    let (len, from) = client.recv_from(&mut buf).expect("an answer");
                    assert_eq!((&buf[..len], from), (&[n as u8, 0xAA][..], to), "{local}");
                }
            }
        }
    }
}
