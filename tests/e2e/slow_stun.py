"""A STUN server (RFC 8489 binding requests only) that answers after a delay
read from a file, for tests that need one region to look far away: the
kernel of the test machine has no sch_netem, so `tc netem` cannot delay.

    python3 slow_stun.py IP PORT DELAY_FILE

DELAY_FILE holds the delay in milliseconds (re-read for every request).
The answer carries XOR-MAPPED-ADDRESS (IPv4) of the request's source.
"""

import heapq
import select
import socket
import struct
import sys
import time

MAGIC = 0x2112A442


def answer(req, src):
    if len(req) < 20 or req[0:2] != b"\x00\x01" or struct.unpack("!I", req[4:8])[0] != MAGIC:
        return None
    ip = socket.inet_aton(src[0])
    xip = bytes(a ^ b for a, b in zip(ip, struct.pack("!I", MAGIC)))
    attr = struct.pack("!HHBBH", 0x0020, 8, 0, 1, src[1] ^ (MAGIC >> 16)) + xip
    return struct.pack("!HHI", 0x0101, len(attr), MAGIC) + req[8:20] + attr


def main():
    ip, port, delay_file = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((ip, port))
    due = []
    while True:
        timeout = max(0.0, due[0][0] - time.monotonic()) if due else None
        r, _, _ = select.select([s], [], [], timeout)
        if r:
            req, src = s.recvfrom(2048)
            resp = answer(req, src)
            if resp:
                try:
                    ms = float(open(delay_file).read().strip() or 0)
                except (OSError, ValueError):
                    ms = 0.0
                heapq.heappush(due, (time.monotonic() + ms / 1000, resp, src))
        now = time.monotonic()
        while due and due[0][0] <= now:
            _, resp, src = heapq.heappop(due)
            s.sendto(resp, src)


if __name__ == "__main__":
    main()
