//! The few rtnetlink requests the daemon makes (links, bridge ports,
//! addresses, routes), on a plain `NETLINK_ROUTE` socket.
//!
//! The daemon asks a dozen things of the kernel at start, on a route change
//! and at cleanup; a general netlink library parses every attribute of
//! every object kind there is, which cost about 0.3 MiB of a box's 4 MiB
//! binary. Here: requests built from the structs of `rtnetlink(7)`, and
//! replies read for the little the daemon needs (index, bridge, kind,
//! IPv4 addresses). [`Msg`] and [`parse_replies`] are pure (unit tests, fuzz
//! target `netlink_replies`); [`Socket`] does the I/O.

use std::io::{self, Read};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

pub const RTM_NEWLINK: u16 = 16;
pub const RTM_DELLINK: u16 = 17;
pub const RTM_GETLINK: u16 = 18;
pub const RTM_SETLINK: u16 = 19;
pub const RTM_NEWADDR: u16 = 20;
pub const RTM_GETADDR: u16 = 22;
pub const RTM_NEWROUTE: u16 = 24;

pub const NLM_F_REQUEST: u16 = 0x1;
pub const NLM_F_ACK: u16 = 0x4;
pub const NLM_F_DUMP: u16 = 0x300;
pub const NLM_F_REPLACE: u16 = 0x100;
pub const NLM_F_EXCL: u16 = 0x200;
pub const NLM_F_CREATE: u16 = 0x400;

const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const HDR: usize = 16;

pub const IFLA_ADDRESS: u16 = 1;
pub const IFLA_IFNAME: u16 = 3;
pub const IFLA_MASTER: u16 = 10;
pub const IFLA_LINKINFO: u16 = 18;
pub const IFLA_INFO_KIND: u16 = 1;
pub const IFA_ADDRESS: u16 = 1;
pub const IFA_LOCAL: u16 = 2;
pub const RTA_DST: u16 = 1;
pub const RTA_OIF: u16 = 4;
pub const IFF_UP: u32 = 1;

/// One request: the netlink header (filled in by [`Msg::finish`]), the
/// fixed struct of its kind, then attributes.
pub struct Msg {
    buf: Vec<u8>,
    kind: u16,
    flags: u16,
}

impl Msg {
    /// A request of `kind` with `flags` (besides REQUEST) and the fixed
    /// struct `fixed` (`ifinfomsg`, `ifaddrmsg`, `rtmsg`).
    pub fn new(kind: u16, flags: u16, fixed: &[u8]) -> Self {
        let mut buf = vec![0; HDR];
        buf.extend_from_slice(fixed);
        pad(&mut buf);
        Self { buf, kind, flags }
    }

    /// `ifinfomsg`: family 0, the interface index, flags and change mask.
    pub fn link(kind: u16, flags: u16, index: u32, ifi_flags: u32, change: u32) -> Self {
        let mut f = [0u8; 16];
        f[4..8].copy_from_slice(&index.to_ne_bytes());
        f[8..12].copy_from_slice(&ifi_flags.to_ne_bytes());
        f[12..16].copy_from_slice(&change.to_ne_bytes());
        Self::new(kind, flags, &f)
    }

    pub fn attr(mut self, kind: u16, data: &[u8]) -> Self {
        put_attr(&mut self.buf, kind, data);
        self
    }

    /// A nested attribute holding the attributes `inner` adds.
    pub fn nested(mut self, kind: u16, inner: &[(u16, &[u8])]) -> Self {
        let mut body = Vec::new();
        for (k, d) in inner {
            put_attr(&mut body, *k, d);
        }
        put_attr(&mut self.buf, kind, &body);
        self
    }

    /// The bytes to send, with sequence number `seq`.
    pub fn finish(mut self, seq: u32) -> Vec<u8> {
        let len = self.buf.len() as u32;
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        self.buf[4..6].copy_from_slice(&self.kind.to_ne_bytes());
        self.buf[6..8].copy_from_slice(&(self.flags | NLM_F_REQUEST).to_ne_bytes());
        self.buf[8..12].copy_from_slice(&seq.to_ne_bytes());
        self.buf
    }
}

fn pad(buf: &mut Vec<u8>) {
    buf.resize(buf.len().next_multiple_of(4), 0);
}

fn put_attr(buf: &mut Vec<u8>, kind: u16, data: &[u8]) {
    let len = (4 + data.len()) as u16;
    buf.extend_from_slice(&len.to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(data);
    pad(buf);
}

/// The attributes in `data`: (type without the nested/byte-order flags,
/// payload). Stops at the first one that does not fit.
pub fn attrs(mut data: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        let len = usize::from(u16::from_ne_bytes([*data.first()?, *data.get(1)?]));
        let kind = u16::from_ne_bytes([*data.get(2)?, *data.get(3)?]) & 0x3fff;
        if len < 4 || len > data.len() {
            return None;
        }
        let payload = &data[4..len];
        data = &data[len.next_multiple_of(4).min(data.len())..];
        Some((kind, payload))
    })
}

/// What the replies to one request said.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Replies {
    /// The messages that answered (type, body after the netlink header).
    pub messages: Vec<(u16, Vec<u8>)>,
    /// The request is answered: an ACK, an error or the end of a dump.
    pub done: bool,
    /// The kernel's error (a positive errno), if it refused.
    pub error: Option<i32>,
}

/// Reads one datagram of replies into `out`: messages for sequence number
/// `seq` only (anything else on the socket is not ours).
pub fn parse_replies(mut data: &[u8], seq: u32, out: &mut Replies) {
    while data.len() >= HDR && !out.done {
        let len = u32::from_ne_bytes([data[0], data[1], data[2], data[3]]) as usize;
        if len < HDR || len > data.len() {
            return;
        }
        let kind = u16::from_ne_bytes([data[4], data[5]]);
        let s = u32::from_ne_bytes([data[8], data[9], data[10], data[11]]);
        let body = &data[HDR..len];
        data = &data[len.next_multiple_of(4).min(data.len())..];
        if s != seq {
            continue;
        }
        match kind {
            NLMSG_ERROR => {
                let code = body
                    .get(..4)
                    .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                    .unwrap_or(-libc::EPROTO);
                out.done = true;
                // Errors come as negative errnos; anything else is garbled.
                if code != 0 {
                    out.error = Some(match code.checked_neg() {
                        Some(e) if e > 0 => e,
                        _ => libc::EPROTO,
                    });
                }
            }
            NLMSG_DONE => out.done = true,
            _ => out.messages.push((kind, body.to_vec())),
        }
    }
}

/// A link as the daemon sees it.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    /// The bridge (or bond) it is a port of.
    pub master: Option<u32>,
    /// `IFLA_INFO_KIND`: "bridge", "tun", "veth", ...
    pub kind: Option<String>,
}

/// An `RTM_NEWLINK` body (`ifinfomsg` + attributes).
pub fn parse_link(body: &[u8]) -> Option<Link> {
    let index = u32::from_ne_bytes(body.get(4..8)?.try_into().ok()?);
    let mut link = Link {
        index,
        ..Link::default()
    };
    for (kind, data) in attrs(body.get(16..)?) {
        match kind {
            IFLA_MASTER if data.len() >= 4 => {
                let m = u32::from_ne_bytes([data[0], data[1], data[2], data[3]]);
                link.master = (m != 0).then_some(m);
            }
            IFLA_LINKINFO => {
                for (k, d) in attrs(data) {
                    if k == IFLA_INFO_KIND {
                        let name = d.split(|b| *b == 0).next().unwrap_or_default();
                        link.kind = Some(String::from_utf8_lossy(name).into_owned());
                    }
                }
            }
            _ => {}
        }
    }
    Some(link)
}

/// The IPv4 addresses (with prefix length) of interface `index` in an
/// `RTM_NEWADDR` body (`ifaddrmsg` + attributes).
pub fn parse_addr_v4(body: &[u8], index: u32) -> Option<(std::net::Ipv4Addr, u8)> {
    let (family, prefix) = (*body.first()?, *body.get(1)?);
    let idx = u32::from_ne_bytes(body.get(4..8)?.try_into().ok()?);
    if family != libc::AF_INET as u8 || idx != index {
        return None;
    }
    let mut found = None;
    for (kind, data) in attrs(body.get(8..)?) {
        if let (IFA_LOCAL | IFA_ADDRESS, Ok(a)) = (kind, <[u8; 4]>::try_from(data)) {
            // IFA_LOCAL is the interface's own address where both differ
            // (point-to-point links).
            if kind == IFA_LOCAL || found.is_none() {
                found = Some(std::net::Ipv4Addr::from(a));
            }
        }
    }
    Some((found?, prefix))
}

/// A `NETLINK_ROUTE` socket. Requests are rare and answered at once, so a
/// call blocks (at most [`TIMEOUT`]) rather than going through the runtime.
/// Unbound and unconnected: the kernel gives it a port on the first send,
/// and a send without an address goes to the kernel.
pub struct Socket {
    sock: socket2::Socket,
    seq: AtomicU32,
}

/// How long to wait for the kernel's answer.
const TIMEOUT: Duration = Duration::from_secs(5);

impl Socket {
    pub fn open() -> io::Result<Self> {
        let sock = socket2::Socket::new(
            socket2::Domain::from(libc::AF_NETLINK),
            socket2::Type::RAW,
            Some(socket2::Protocol::from(libc::NETLINK_ROUTE)),
        )?;
        sock.set_read_timeout(Some(TIMEOUT))?;
        Ok(Self {
            sock,
            seq: AtomicU32::new(1),
        })
    }

    /// Sends `msg` and collects the answer: the messages that came back, or
    /// the kernel's error.
    pub fn request(&self, msg: Msg) -> io::Result<Vec<(u16, Vec<u8>)>> {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        self.sock.send(&msg.finish(seq))?;
        let mut out = Replies::default();
        let mut buf = vec![0u8; 32 * 1024];
        while !out.done {
            let n = match (&self.sock).read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            parse_replies(&buf[..n], seq, &mut out);
        }
        match out.error {
            Some(errno) => Err(io::Error::from_raw_os_error(errno)),
            None => Ok(out.messages),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(kind: u16, seq: u32, body: &[u8]) -> Vec<u8> {
        let mut m = Msg::new(kind, 0, body).finish(seq);
        // Replies carry no REQUEST flag; the parser does not look.
        m[6..8].copy_from_slice(&0u16.to_ne_bytes());
        m
    }

    #[test]
    fn a_request_has_its_header_struct_and_padded_attributes() {
        let m = Msg::link(
            RTM_NEWLINK,
            NLM_F_CREATE | NLM_F_EXCL | NLM_F_ACK,
            0,
            IFF_UP,
            IFF_UP,
        )
        .attr(IFLA_IFNAME, b"br-x\0")
        .nested(IFLA_LINKINFO, &[(IFLA_INFO_KIND, b"bridge")])
        .finish(7);
        assert_eq!(
            u32::from_ne_bytes(m[0..4].try_into().unwrap()) as usize,
            m.len()
        );
        assert_eq!(u16::from_ne_bytes([m[4], m[5]]), RTM_NEWLINK);
        assert_eq!(
            u16::from_ne_bytes([m[6], m[7]]),
            NLM_F_REQUEST | NLM_F_CREATE | NLM_F_EXCL | NLM_F_ACK
        );
        assert_eq!(u32::from_ne_bytes(m[8..12].try_into().unwrap()), 7);
        assert_eq!(m.len() % 4, 0);
        let got: Vec<_> = attrs(&m[32..]).map(|(k, d)| (k, d.to_vec())).collect();
        assert_eq!(got[0], (IFLA_IFNAME, b"br-x\0".to_vec()));
        assert_eq!(got[1].0, IFLA_LINKINFO);
        let inner: Vec<_> = attrs(&got[1].1).collect();
        assert_eq!(inner, vec![(IFLA_INFO_KIND, &b"bridge"[..])]);
    }

    #[test]
    fn replies_give_the_link_the_error_and_skip_other_requests() {
        let link = Msg::link(RTM_NEWLINK, 0, 12, IFF_UP, 0)
            .attr(IFLA_MASTER, &5u32.to_ne_bytes())
            .nested(IFLA_LINKINFO, &[(IFLA_INFO_KIND, b"tun\0")])
            .finish(0);
        let mut data = reply(RTM_NEWLINK, 99, &link[HDR..]);
        data.extend(reply(RTM_NEWLINK, 3, &link[HDR..]));
        data.extend(reply(NLMSG_ERROR, 3, &0i32.to_ne_bytes()));
        let mut out = Replies::default();
        parse_replies(&data, 3, &mut out);
        assert!(out.done && out.error.is_none());
        assert_eq!(out.messages.len(), 1);
        let l = parse_link(&out.messages[0].1).unwrap();
        assert_eq!(
            l,
            Link {
                index: 12,
                master: Some(5),
                kind: Some("tun".into())
            }
        );

        let mut out = Replies::default();
        parse_replies(
            &reply(NLMSG_ERROR, 4, &(-libc::ENODEV).to_ne_bytes()),
            4,
            &mut out,
        );
        assert_eq!((out.done, out.error), (true, Some(libc::ENODEV)));
        // Cut short: nothing read, nothing done.
        let mut out = Replies::default();
        parse_replies(&data[..20], 99, &mut out);
        assert_eq!(out, Replies::default());
    }

    #[test]
    fn an_address_reply_gives_the_interfaces_ipv4_address() {
        let mut fixed = [0u8; 8];
        fixed[0] = libc::AF_INET as u8;
        fixed[1] = 24;
        fixed[4..8].copy_from_slice(&3u32.to_ne_bytes());
        let body = &Msg::new(RTM_NEWADDR, 0, &fixed)
            .attr(IFA_ADDRESS, &[192, 168, 1, 2])
            .attr(IFA_LOCAL, &[192, 168, 1, 2])
            .finish(0)[HDR..];
        assert_eq!(parse_addr_v4(body, 3), Some(([192, 168, 1, 2].into(), 24)));
        assert_eq!(parse_addr_v4(body, 4), None);
        assert_eq!(parse_addr_v4(&body[..6], 3), None);
    }
}
