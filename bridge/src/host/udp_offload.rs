//! UDP segmentation offload on the WireGuard socket: many datagrams per
//! system call.
//!
//! * Send (`UDP_SEGMENT`, Linux >= 4.18): consecutive datagrams to the same
//!   peer with the same size (the last one may be shorter) leave in one
//!   `sendmsg`; the kernel (or the NIC) cuts them apart. A peer that reads
//!   with `UDP_GRO` (current wireguard-go, tailscaled, this daemon) gets them
//!   back in one read.
//! * Receive (`UDP_GRO`, Linux >= 5.0): the kernel hands over a run of
//!   datagrams of one flow in one buffer, with their size in a control
//!   message; [`segments`] cuts them apart again. Each datagram then goes its
//!   own way (WireGuard, disco, STUN), in the order received.
//!
//! Both are probed at start and fall back to one datagram per call when the
//! kernel says no (`sendmsg` with `EIO`: the route's device cannot checksum
//! UDP, the kernel does not segment it then).
//!
//! The one module of this crate with `unsafe`: `sendmsg`/`recvmsg` with
//! control messages and two `setsockopt`s, which neither std, tokio nor
//! socket2 offer for UDP. Each block says what it relies on.
#![allow(unsafe_code)]

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;

use tokio::io::Interest;
use tokio::net::UdpSocket;

/// The kernel's limit on segments per `UDP_SEGMENT` send (`UDP_MAX_SEGMENTS`).
const MAX_SEGMENTS: usize = 64;
/// Bytes per `UDP_SEGMENT` send: the payload of one IP datagram, less headers.
const MAX_BYTES: usize = 65_000;

/// Cuts a buffer read with `UDP_GRO` into its datagrams: `seg` bytes each, the
/// last one possibly shorter. `seg == 0` (no control message) means one
/// datagram.
pub fn segments(buf: &[u8], seg: usize) -> impl Iterator<Item = &[u8]> {
    let seg = if seg == 0 { buf.len().max(1) } else { seg };
    buf.chunks(seg)
}

/// Datagrams to one destination collected for one `UDP_SEGMENT` send.
#[derive(Default)]
pub struct SendBatch {
    buf: Vec<u8>,
    to: Option<SocketAddr>,
    seg: usize,
    count: usize,
    /// A shorter datagram ended the batch (only the last may be shorter).
    closed: bool,
}

impl SendBatch {
    /// Appends `d` if it can go in the same send as what is queued; false if
    /// the batch must be sent first.
    pub fn push(&mut self, to: SocketAddr, d: &[u8]) -> bool {
        if self.count == 0 {
            self.buf.clear();
            self.buf.extend_from_slice(d);
            (self.to, self.seg, self.count, self.closed) = (Some(to), d.len(), 1, d.is_empty());
            return true;
        }
        if self.to != Some(to)
            || self.closed
            || self.count >= MAX_SEGMENTS
            || d.is_empty()
            || d.len() > self.seg
            || self.buf.len() + d.len() > MAX_BYTES
        {
            return false;
        }
        self.closed = d.len() < self.seg;
        self.buf.extend_from_slice(d);
        self.count += 1;
        true
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The queued datagrams: destination, the bytes, segment size, count.
    pub fn take(&mut self) -> Option<(SocketAddr, &[u8], usize, usize)> {
        let to = self.to.take()?;
        let count = std::mem::take(&mut self.count);
        Some((to, &self.buf, self.seg, count))
    }
}

/// The socket's offload state and the datagrams queued for one send.
pub struct UdpOffload {
    gso: bool,
    gro: bool,
    batch: SendBatch,
}

impl UdpOffload {
    /// Probes `UDP_SEGMENT` and turns on `UDP_GRO` on `sock`.
    pub fn new(sock: &UdpSocket) -> UdpOffload {
        let fd = sock.as_raw_fd();
        let one: libc::c_int = 1;
        let mut val: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: fd is the open socket `sock` borrows; the option values are
        // live c_ints with their true sizes.
        let (gso, gro) = unsafe {
            (
                libc::getsockopt(
                    fd,
                    libc::SOL_UDP,
                    libc::UDP_SEGMENT,
                    (&mut val as *mut libc::c_int).cast(),
                    &mut len,
                ) == 0,
                libc::setsockopt(
                    fd,
                    libc::SOL_UDP,
                    libc::UDP_GRO,
                    (&one as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                ) == 0,
            )
        };
        tracing::debug!("WireGuard socket: UDP GSO {gso}, GRO {gro}");
        UdpOffload {
            gso,
            gro,
            batch: SendBatch::default(),
        }
    }

    /// Offloads off: one datagram per call (for tests of the fallback).
    #[cfg(test)]
    fn plain() -> UdpOffload {
        UdpOffload {
            gso: false,
            gro: false,
            batch: SendBatch::default(),
        }
    }

    /// Sends `d` to `to`, or queues it to go with the next ones to the same
    /// peer: [`Self::flush`] sends what is queued (order is kept: a datagram
    /// that cannot join the queue sends the queue first).
    pub async fn queue(&mut self, sock: &UdpSocket, to: SocketAddr, d: &[u8]) -> io::Result<()> {
        if !self.gso {
            return sock.send_to(d, to).await.map(drop);
        }
        if self.batch.push(to, d) {
            return Ok(());
        }
        let r = self.flush(sock).await;
        self.batch.push(to, d);
        r
    }

    /// Sends the queued datagrams.
    pub async fn flush(&mut self, sock: &UdpSocket) -> io::Result<()> {
        let Some((to, data, seg, count)) = self.batch.take() else {
            return Ok(());
        };
        send(&mut self.gso, sock, to, data, seg, count).await
    }

    /// Reads one datagram, or with GRO a run of them: (bytes, source,
    /// segment size; 0 = one datagram).
    pub async fn recv(
        &self,
        sock: &UdpSocket,
        buf: &mut [u8],
    ) -> io::Result<(usize, SocketAddr, usize)> {
        loop {
            sock.readable().await?;
            match self.try_recv(sock, buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                r => return r,
            }
        }
    }

    /// [`Self::recv`] without waiting.
    pub fn try_recv(
        &self,
        sock: &UdpSocket,
        buf: &mut [u8],
    ) -> io::Result<(usize, SocketAddr, usize)> {
        if !self.gro {
            let (n, from) = sock.try_recv_from(buf)?;
            return Ok((n, from, 0));
        }
        let fd = sock.as_raw_fd();
        sock.try_io(Interest::READABLE, || {
            let mut ctrl = Ctrl([0; 64]);
            let mut iov = libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: buf.len(),
            };
            // SAFETY: recvmsg writes at most iov_len bytes into `buf`, at
            // most msg_controllen into `ctrl` and at most *len into the
            // address storage that try_init provides; all outlive the call.
            let (r, from) = unsafe {
                socket2::SockAddr::try_init(|storage, len| {
                    let mut msg: libc::msghdr = std::mem::zeroed();
                    msg.msg_name = storage.cast();
                    msg.msg_namelen = *len;
                    msg.msg_iov = &mut iov;
                    msg.msg_iovlen = 1;
                    msg.msg_control = ctrl.0.as_mut_ptr().cast();
                    msg.msg_controllen = ctrl.0.len() as _;
                    let n = libc::recvmsg(fd, &mut msg, 0);
                    if n < 0 {
                        return Err(io::Error::last_os_error());
                    }
                    *len = msg.msg_namelen;
                    Ok((n as usize, msg.msg_controllen as usize))
                })?
            };
            let (n, ctrl_len) = r;
            let from = from.as_socket().ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidData, "not an IP source address")
            })?;
            Ok((n, from, gro_size(&ctrl.0[..ctrl_len.min(ctrl.0.len())])))
        })
    }
}

/// Sends `data` (`count` datagrams of `seg` bytes, the last possibly
/// shorter) to `to`: one `UDP_SEGMENT` send if `gso`, else (or if the kernel
/// refuses it, which clears `gso`) one send per datagram.
async fn send(
    gso: &mut bool,
    sock: &UdpSocket,
    to: SocketAddr,
    data: &[u8],
    seg: usize,
    count: usize,
) -> io::Result<()> {
    if count > 1 && *gso {
        let r = loop {
            sock.writable().await?;
            match sock.try_io(Interest::WRITABLE, || send_gso(sock, to, data, seg)) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                r => break r,
            }
        };
        match r {
            Ok(()) => return Ok(()),
            // The route's device cannot do it (EIO), or the kernel
            // rejects the control message: one datagram per call from
            // now on, and these go out that way.
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EIO | libc::EINVAL | libc::ENOPROTOOPT)
                ) =>
            {
                tracing::info!("UDP segmentation offload off: {e}");
                *gso = false;
            }
            Err(e) => return Err(e),
        }
    }
    for d in segments(data, seg) {
        sock.send_to(d, to).await?;
    }
    Ok(())
}

/// A control message buffer, aligned for `cmsghdr`.
#[repr(C, align(8))]
struct Ctrl([u8; 64]);

/// The `UDP_GRO` control message's segment size, 0 if there is none.
fn gro_size(ctrl: &[u8]) -> usize {
    let hdr = std::mem::size_of::<libc::cmsghdr>();
    let mut at = 0;
    while ctrl.len() >= at + hdr {
        // SAFETY: `hdr` bytes at `at` are in bounds (checked above); the
        // read is unaligned-safe.
        let c: libc::cmsghdr = unsafe { std::ptr::read_unaligned(ctrl[at..].as_ptr().cast()) };
        let len = c.cmsg_len as usize;
        if len < hdr || at + len > ctrl.len() {
            break;
        }
        let data = &ctrl[at + cmsg_align(hdr)..at + len];
        if c.cmsg_level == libc::SOL_UDP && c.cmsg_type == libc::UDP_GRO {
            // The kernel puts an int (the segment size) there.
            if let Some(b) = data.get(..4) {
                return i32::from_ne_bytes([b[0], b[1], b[2], b[3]]).max(0) as usize;
            }
        }
        at += cmsg_align(len);
    }
    0
}

const fn cmsg_align(len: usize) -> usize {
    let a = std::mem::size_of::<usize>();
    (len + a - 1) & !(a - 1)
}

/// One `sendmsg` of `data` to `to` with a `UDP_SEGMENT` control message.
fn send_gso(sock: &UdpSocket, to: SocketAddr, data: &[u8], seg: usize) -> io::Result<()> {
    let seg = u16::try_from(seg).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let addr = socket2::SockAddr::from(to);
    let hdr = std::mem::size_of::<libc::cmsghdr>();
    let data_at = cmsg_align(hdr);
    let mut ctrl = Ctrl([0; 64]);
    let ctrl_len = cmsg_align(data_at + 2);
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    // SAFETY: `ctrl` (64 bytes, 8-aligned) holds the cmsghdr and its u16
    // (at most 16 + 8 bytes); sendmsg only reads the iovec's bytes
    // (`data`), the address and the control buffer, all alive for the call.
    let n = unsafe {
        let mut c: libc::cmsghdr = std::mem::zeroed();
        c.cmsg_len = (data_at + 2) as _;
        c.cmsg_level = libc::SOL_UDP;
        c.cmsg_type = libc::UDP_SEGMENT;
        let p: *mut u8 = ctrl.0.as_mut_ptr();
        std::ptr::write_unaligned(p.cast::<libc::cmsghdr>(), c);
        std::ptr::write_unaligned(p.add(data_at).cast::<u16>(), seg);
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_name = addr.as_ptr() as *mut libc::c_void;
        msg.msg_namelen = addr.len();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = p.cast();
        msg.msg_controllen = ctrl_len as _;
        libc::sendmsg(sock.as_raw_fd(), &msg, 0)
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_cut_a_gro_buffer_into_its_datagrams() {
        let buf: Vec<u8> = (0..250u8).collect();
        let parts: Vec<&[u8]> = segments(&buf, 100).collect();
        assert_eq!(parts, vec![&buf[..100], &buf[100..200], &buf[200..]]);
        assert_eq!(segments(&buf, 0).count(), 1);
        assert_eq!(segments(&[], 0).count(), 0);
    }

    #[test]
    fn a_batch_takes_equal_datagrams_to_one_peer_and_one_shorter_last() {
        let (a, b): (SocketAddr, SocketAddr) = (
            "192.0.2.1:51820".parse().unwrap(),
            "192.0.2.2:51820".parse().unwrap(),
        );
        let mut s = SendBatch::default();
        assert!(s.push(a, &[1; 100]));
        assert!(s.push(a, &[2; 100]));
        assert!(!s.push(b, &[3; 100]), "another peer");
        assert!(!s.push(a, &[3; 101]), "longer than the segment size");
        assert!(s.push(a, &[3; 60]));
        assert!(!s.push(a, &[4; 60]), "nothing after a shorter one");
        let (to, data, seg, count) = s.take().unwrap();
        assert_eq!((to, data.len(), seg, count), (a, 260, 100, 3));
        assert!(s.is_empty());
        assert!(s.push(b, &[5; 10]));
        for _ in 1..MAX_SEGMENTS {
            assert!(s.push(b, &[5; 10]));
        }
        assert!(!s.push(b, &[5; 10]), "at most {MAX_SEGMENTS} segments");
        let mut big = SendBatch::default();
        assert!(big.push(a, &[0; 1500]));
        let fits = MAX_BYTES / 1500 - 1;
        for _ in 0..fits {
            assert!(big.push(a, &[0; 1500]));
        }
        assert!(!big.push(a, &[0; 1500]), "at most {MAX_BYTES} bytes");
    }

    async fn pair() -> (UdpSocket, UdpSocket, SocketAddr) {
        let tx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let rx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let to = rx.local_addr().unwrap();
        (tx, rx, to)
    }

    fn datagrams() -> Vec<Vec<u8>> {
        (0..5u8)
            .map(|i| vec![i; if i == 4 { 333 } else { 1200 }])
            .collect()
    }

    async fn send_all(off: &mut UdpOffload, tx: &UdpSocket, to: SocketAddr, sent: &[Vec<u8>]) {
        for d in sent {
            off.queue(tx, to, d).await.unwrap();
        }
        off.flush(tx).await.unwrap();
    }

    async fn recv_all(off: &UdpOffload, rx: &UdpSocket, want: usize) -> (Vec<Vec<u8>>, usize) {
        let (mut got, mut reads) = (Vec::new(), 0);
        let mut buf = vec![0u8; 65536];
        while got.len() < want {
            let (n, _, seg) =
                tokio::time::timeout(std::time::Duration::from_secs(5), off.recv(rx, &mut buf))
                    .await
                    .expect("datagrams arrive")
                    .unwrap();
            reads += 1;
            got.extend(segments(&buf[..n], seg).map(<[u8]>::to_vec));
        }
        (got, reads)
    }

    /// Sent in one UDP_SEGMENT call, read back with UDP_GRO (loopback
    /// coalesces): the same datagrams in the same order, in fewer reads.
    #[tokio::test]
    async fn gso_send_and_gro_receive_keep_datagrams_and_order() {
        let (tx, rx, to) = pair().await;
        let (mut txo, rxo) = (UdpOffload::new(&tx), UdpOffload::new(&rx));
        assert!(txo.gso && rxo.gro, "the test kernel has UDP GSO and GRO");
        let sent = datagrams();
        send_all(&mut txo, &tx, to, &sent).await;
        assert!(txo.gso, "the send did not fall back");
        let (got, reads) = recv_all(&rxo, &rx, sent.len()).await;
        assert_eq!(got, sent);
        assert!(
            reads < sent.len(),
            "GRO read several datagrams at once ({reads} reads)"
        );
    }

    /// A receiver without GRO gets each datagram of a GSO send on its own
    /// (the kernel segments them), and a sender without GSO sends them one
    /// by one to a GRO receiver.
    #[tokio::test]
    async fn gso_to_a_plain_receiver_and_plain_to_gro() {
        let (tx, rx, to) = pair().await;
        let (mut txo, plain) = (UdpOffload::new(&tx), UdpOffload::plain());
        let sent = datagrams();
        send_all(&mut txo, &tx, to, &sent).await;
        let (got, reads) = recv_all(&plain, &rx, sent.len()).await;
        assert_eq!((got, reads), (sent.clone(), sent.len()));

        let (tx, rx, to) = pair().await;
        let (mut plain, rxo) = (UdpOffload::plain(), UdpOffload::new(&rx));
        send_all(&mut plain, &tx, to, &sent).await;
        let (got, _) = recv_all(&rxo, &rx, sent.len()).await;
        assert_eq!(got, sent);
    }
}
