"""N DHCP clients with distinct MACs, each doing one full DORA on a link (bench/scale).

Run in the device namespace: python3 dhcp_clients.py IFACE N [MAC_PREFIX]
Prints "leases K of N" at the end. Clients go one after the other, each retrying its DISCOVER
for up to 5 s (meshbridge rate-limits MACs it does not know yet: dhcp/src/limit.rs)."""

import os
import socket
import struct
import sys
import time

ETH_P_IP = 0x0800
PACKET_OUTGOING = 4


def csum(b):
    s = sum(struct.unpack(f"!{len(b) // 2}H", b))
    s = (s >> 16) + (s & 0xFFFF)
    return ~(s + (s >> 16)) & 0xFFFF


def frame(mac, bootp):
    ulen = 8 + len(bootp)
    ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + ulen, 0, 0, 64, 17, 0, b"\0" * 4, b"\xff" * 4))
    ip[10:12] = struct.pack("!H", csum(bytes(ip)))
    return b"\xff" * 6 + mac + struct.pack("!H", ETH_P_IP) + bytes(ip) + struct.pack("!HHHH", 68, 67, ulen, 0) + bootp


def bootp(mac, xid, mtype, extra=b""):
    b = struct.pack("!BBBBIHH4s4s4s4s", 1, 1, 6, 0, xid, 0, 0x8000, b"\0" * 4, b"\0" * 4, b"\0" * 4, b"\0" * 4)
    b += mac + b"\0" * 10 + b"\0" * 192 + b"\x63\x82\x53\x63"
    b += bytes([53, 1, mtype]) + extra + b"\xff"
    return b + b"\0" * max(0, 300 - len(b))


def reply(raw, xid, want, deadline):
    """(yiaddr, server id) of the reply of type `want` for `xid`, or None."""
    while time.monotonic() < deadline:
        raw.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            f, addr = raw.recvfrom(4096)
        except socket.timeout:
            return None
        if addr[2] == PACKET_OUTGOING or len(f) < 282 or f[12:14] != b"\x08\x00" or f[23] != 17:
            continue
        u = 14 + (f[14] & 0x0F) * 4
        if struct.unpack("!H", f[u + 2:u + 4])[0] != 68:
            continue
        m = f[u + 8:]
        if m[0] != 2 or struct.unpack("!I", m[4:8])[0] != xid:
            continue
        opts, i, mtype, sid = m[240:], 0, None, None
        while i < len(opts) and opts[i] != 255:
            if opts[i] == 0:
                i += 1
                continue
            code, ln = opts[i], opts[i + 1]
            if code == 53:
                mtype = opts[i + 2]
            elif code == 54:
                sid = opts[i + 2:i + 6]
            i += 2 + ln
        if mtype == want:
            return m[16:20], sid
    return None


def main():
    ifc, n = sys.argv[1], int(sys.argv[2])
    prefix = bytes.fromhex(sys.argv[3]) if len(sys.argv) > 3 else b"\x02\xbe"
    raw = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_IP))
    raw.bind((ifc, ETH_P_IP))
    got = 0
    for k in range(n):
        mac = prefix + struct.pack("!I", k + 1)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            xid = struct.unpack("!I", os.urandom(4))[0]
            raw.send(frame(mac, bootp(mac, xid, 1)))
            offer = reply(raw, xid, 2, time.monotonic() + 0.3)
            if not offer:
                continue
            yiaddr, sid = offer
            extra = bytes([50, 4]) + yiaddr + (bytes([54, 4]) + sid if sid else b"")
            raw.send(frame(mac, bootp(mac, xid, 3, extra)))
            if reply(raw, xid, 5, time.monotonic() + 0.5):
                got += 1
                break
    print(f"leases {got} of {n}", flush=True)


if __name__ == "__main__":
    main()
