"""The TAP's offloads, end to end: the kernel hands the box a device's TCP
stream in segments of up to 64 KB (TSO) that the box cuts into frames, and
the box writes a peer's stream to the TAP as coalesced TSO segments that the
kernel cuts up again for a device that cannot take them."""

import hashlib
import re
import signal
import struct
import time

from site_ns import wait_for

SIZE = 8 << 20
TAP = "mb-tap0"

# Receives SIZE bytes on a TCP port and prints their sha256.
SINK = """
import hashlib, socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 9000)); s.listen(1)
c, _ = s.accept(); h = hashlib.sha256(); n = 0
while True:
    b = c.recv(1 << 16)
    if not b: break
    h.update(b); n += len(b)
print(n, h.hexdigest(), flush=True)
"""

# Sends SIZE bytes (a fixed pattern) to a TCP port.
SOURCE = """
import socket, sys
data = bytes((i * 7 + i // 251) & 0xff for i in range(1 << 16))
c = socket.create_connection((sys.argv[1], 9000), timeout=20)
for _ in range(int(sys.argv[2]) >> 16): c.sendall(data)
c.shutdown(socket.SHUT_WR); c.recv(1); c.close()
"""


# Turns TCP segmentation offload off on an interface (what `ethtool -K IF tso
# off` does, through the ethtool ioctl: ETHTOOL_STSO).
TSO_OFF = """
import ctypes, fcntl, socket, struct, sys
SIOCETHTOOL, ETHTOOL_STSO, ETHTOOL_GTSO = 0x8946, 0x1f, 0x1e
def call(cmd, data=0):
    val = ctypes.create_string_buffer(struct.pack("II", cmd, data))
    ifr = struct.pack("16sP", sys.argv[1].encode(), ctypes.addressof(val)) + bytes(16)
    fcntl.ioctl(socket.socket(), SIOCETHTOOL, ifr)
    return struct.unpack("II", val.raw[:8])[1]
call(ETHTOOL_STSO, 0)
print(call(ETHTOOL_GTSO))
"""


def expected():
    data = bytes((i * 7 + i // 251) & 0xff for i in range(1 << 16))
    h = hashlib.sha256()
    for _ in range(SIZE >> 16):
        h.update(data)
    return f"{SIZE} {h.hexdigest()}"


def transfer(site, src_ns, sink_ns, sink_ip):
    out = site.tmp / f"sink-{sink_ns}.txt"
    site.spawn(sink_ns, ["python3", "-c", SINK, sink_ip], log=out)
    time.sleep(0.5)
    site.run(src_ns, ["python3", "-c", SOURCE, sink_ip, str(SIZE)], timeout=60)
    wait_for(lambda: out.exists() and out.read_text().strip() != "", what="the sink's digest")
    return out.read_text().strip()


def capture(site, ns, ifc, name):
    """tcpdump of TCP frames' lengths on `ifc` in `ns` (headers only)."""
    cap = site.tmp / f"{name}.pcap"
    p = site.spawn(ns, ["tcpdump", "--immediate-mode", "-Z", "root", "-U", "-s", "128", "-i", ifc, "-nn", "-w", str(cap), "tcp"])
    time.sleep(1)
    return p, cap


def frame_lengths(site, ns, p, cap):
    time.sleep(0.5)
    p.send_signal(signal.SIGINT)
    p.wait(timeout=5)
    out = site.run(ns, ["tcpdump", "-nn", "-e", "-r", str(cap)]).stdout
    return [int(m) for m in re.findall(r"length (\d+):", out)]


def setup(site):
    ns, port, dev_if = site.add_device("dev")
    site.start_box()
    site.start_peer()
    assert site.udhcpc("dev")[0].returncode == 0
    ip = site.device_ip("dev")
    site.ping_until(ns, "10.77.0.2")
    return ns, port, dev_if, ip


def test_a_devices_64k_tso_segments_reach_the_peer_intact(site):
    ns, _, _, _ = setup(site)
    tap, tap_cap = capture(site, site.box, TAP, "tap")
    assert transfer(site, ns, site.peer, "10.77.0.2") == expected()
    lengths = frame_lengths(site, site.box, tap, tap_cap)
    # The box read segments larger than one frame: the offload was in use,
    # and the box's segmentation is what delivered the bytes intact.
    assert max(lengths) > 1514, sorted(lengths)[-5:]


def test_coalesced_writes_reach_a_device_without_tso_as_frames(site):
    ns, port, dev_if, ip = setup(site)
    # The bridge port toward the device takes one segment at a time: the
    # kernel cuts the box's coalesced TSO writes into frames in software.
    assert site.run(site.box, ["python3", "-c", TSO_OFF, port]).stdout.strip() == "0"
    tap, tap_cap = capture(site, site.box, TAP, "tap")
    dev, dev_cap = capture(site, ns, dev_if, "dev")
    assert transfer(site, site.peer, ns, ip) == expected()
    to_tap = frame_lengths(site, site.box, tap, tap_cap)
    at_dev = frame_lengths(site, ns, dev, dev_cap)
    assert max(to_tap) > 1514, "the box coalesced frames into TSO writes"
    assert at_dev and max(at_dev) <= 1514, sorted(at_dev)[-5:]


# The TUN's offloads, through the exit node. Serves SIZE bytes to whoever
# connects (the "internet" host), so the peer can download through the box.
SERVE = """
import socket, sys
data = bytes((i * 7 + i // 251) & 0xff for i in range(1 << 16))
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 9000)); s.listen(1)
c, _ = s.accept()
for _ in range(int(sys.argv[2]) >> 16): c.sendall(data)
c.close()
"""

# Downloads from a TCP port until the sender closes; prints length and sha256.
FETCH = """
import hashlib, socket, sys
c = socket.create_connection((sys.argv[1], 9000), timeout=20); h = hashlib.sha256(); n = 0
while True:
    b = c.recv(1 << 16)
    if not b: break
    h.update(b); n += len(b)
print(n, h.hexdigest(), flush=True)
"""

TUN = "mb-host0"


def pcap_lengths(path):
    """The original length of every packet in a pcap file (whatever the link type)."""
    raw = path.read_bytes()
    order = "<" if raw[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    lengths, at = [], 24
    while at + 16 <= len(raw):
        incl, orig = struct.unpack(order + "II", raw[at + 8:at + 16])
        lengths.append(orig)
        at += 16 + incl
    return lengths


def stop_capture(p):
    time.sleep(0.5)
    p.send_signal(signal.SIGINT)
    p.wait(timeout=5)


def exit_setup(site):
    site.add_uplink()
    site.start_box(extra=f'[routing]\nuplink = "{site.uplink}"\nexit_node = true\n')
    site.start_peer(allowed_ips="0.0.0.0/0", routes=("10.77.1.0/24", "203.0.113.0/26"))
    site.ping_until(site.peer, "10.77.0.1")
    site.ping_until(site.peer, "203.0.113.10")


def test_through_the_exit_node_tun_segments_and_runs_carry_the_bytes_intact(site):
    exit_setup(site)
    # Upload: the box writes the peer's stream to its TUN as coalesced TSO
    # writes; the kernel forwards them and cuts them into packets for an
    # uplink that takes one segment at a time.
    assert site.run(site.box, ["python3", "-c", TSO_OFF, site.uplink]).stdout.strip() == "0"
    tun, tun_cap = capture(site, site.box, TUN, "tun-up")
    lan, lan_cap = capture(site, site.lan, f"{site.p}w1", "lan-up")
    assert transfer(site, site.peer, site.inet, "203.0.113.10") == expected()
    stop_capture(tun)
    stop_capture(lan)
    to_tun, at_lan = pcap_lengths(tun_cap), pcap_lengths(lan_cap)
    assert to_tun and max(to_tun) > 1420, "the box coalesced packets into TSO writes"
    assert at_lan and max(at_lan) <= 1514, sorted(at_lan)[-5:]

    # Download: the kernel hands the box the internet host's stream in
    # segments of up to 64 KB; the box cuts them into packets for the tunnel.
    site.spawn(site.inet, ["python3", "-c", SERVE, "203.0.113.10", str(SIZE)])
    time.sleep(0.5)
    tun, tun_cap = capture(site, site.box, TUN, "tun-down")
    r = site.run(site.peer, ["python3", "-c", FETCH, "203.0.113.10"], timeout=60)
    assert r.stdout.strip() == expected()
    stop_capture(tun)
    from_tun = pcap_lengths(tun_cap)
    assert from_tun and max(from_tun) > 1420, sorted(from_tun)[-5:]
