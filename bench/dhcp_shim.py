"""Turns perfdhcp's relayed DHCPv4 into directly connected clients on a link (bench/dhcp-load).

perfdhcp (DHCPv4) always acts as a relay agent: giaddr set, sent from port 67 to the server's port 67,
replies expected at giaddr:67. meshbridge serves the devices on its bridge and drops relayed requests
(dhcp/src/lib.rs), like a home router's DHCP. This shim sits in perfdhcp's namespace:

  perfdhcp -l 127.0.0.2 127.0.0.1  --UDP-->  shim (127.0.0.1:67)
      giaddr cleared, hops 0, broadcast flag set; sent on the link as an Ethernet broadcast frame from
      the client's MAC (chaddr), 0.0.0.0:68 -> 255.255.255.255:67, as a DHCP client sends it
  server's reply (UDP to port 68, captured on the link)  --> giaddr = 127.0.0.2 --> perfdhcp (127.0.0.2:67)

Both servers under test get exactly the same frames, so the shim's own cost (one Python process,
a few tens of microseconds per packet) is the same for both; it caps what can be measured at a few
thousand exchanges per second (bench/dhcp-load reports its CPU).

With ACK_LOG, the client MAC (chaddr) of every DHCPACK seen on the link is appended to that file, one
per line, so that bench/dhcp-load can check which clients the server acknowledged.

Usage: python3 dhcp_shim.py IFACE [ACK_LOG]    (in the client namespace, as root)
"""

import socket
import struct
import sys
import threading

ETH_P_IP = 0x0800
PACKET_OUTGOING = 4
PERF = ("127.0.0.2", 67)


def ip_checksum(hdr):
    s = sum(struct.unpack(f"!{len(hdr) // 2}H", hdr))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


def to_link(udp, raw, stop):
    """perfdhcp -> link."""
    ident = 0
    while not stop.is_set():
        try:
            msg = bytearray(udp.recv(4096))
        except OSError:
            return
        if len(msg) < 240 or msg[0] != 1:
            continue
        msg[3] = 0  # hops
        msg[10] |= 0x80  # broadcast flag: both servers answer by broadcast
        msg[24:28] = b"\0\0\0\0"  # giaddr
        chaddr = bytes(msg[28:34])
        ulen = 8 + len(msg)
        ident = (ident + 1) & 0xFFFF
        ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + ulen, ident, 0, 64, 17, 0,
                                   b"\0\0\0\0", b"\xff\xff\xff\xff"))
        ip[10:12] = struct.pack("!H", ip_checksum(bytes(ip)))
        frame = b"\xff" * 6 + chaddr + struct.pack("!H", ETH_P_IP) + bytes(ip) + \
            struct.pack("!HHHH", 68, 67, ulen, 0) + bytes(msg)
        try:
            raw.send(frame)
        except OSError:
            pass


def is_ack(msg):
    """Option 53 (message type) is 5 (DHCPACK)."""
    i = 240
    while i + 1 < len(msg):
        code = msg[i]
        if code == 0:
            i += 1
            continue
        if code == 255:
            return False
        n = msg[i + 1]
        if code == 53 and n == 1 and i + 2 < len(msg):
            return msg[i + 2] == 5
        i += 2 + n
    return False


def from_link(udp, raw, stop, ack_log=None):
    """link -> perfdhcp: server replies (UDP 67 -> 68)."""
    while not stop.is_set():
        try:
            frame, addr = raw.recvfrom(4096)
        except OSError:
            return
        if addr[2] == PACKET_OUTGOING or len(frame) < 14 + 20 + 8 + 240:
            continue
        if frame[12:14] != b"\x08\x00" or frame[23] != 17:
            continue
        ihl = (frame[14] & 0x0F) * 4
        u = 14 + ihl
        sport, dport = struct.unpack("!HH", frame[u:u + 4])
        if sport != 67 or dport != 68:
            continue
        msg = bytearray(frame[u + 8:])
        if len(msg) < 240 or msg[0] != 2:
            continue
        if ack_log is not None and is_ack(msg):
            ack_log.write(":".join(f"{b:02x}" for b in msg[28:34]) + "\n")
            ack_log.flush()
        msg[24:28] = socket.inet_aton(PERF[0])
        try:
            udp.sendto(bytes(msg), PERF)
        except OSError:
            pass


def main():
    ifc = sys.argv[1]
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    udp.bind(("127.0.0.1", 67))
    raw = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_IP))
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    raw.bind((ifc, ETH_P_IP))
    stop = threading.Event()
    # O_APPEND: bench/dhcp-load empties the file between runs.
    ack_log = open(sys.argv[2], "a", buffering=1) if len(sys.argv) > 2 else None
    t = threading.Thread(target=from_link, args=(udp, raw, stop, ack_log), daemon=True)
    t.start()
    print("shim ready", flush=True)
    to_link(udp, raw, stop)


if __name__ == "__main__":
    main()
