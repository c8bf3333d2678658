"""A hostile remote box (SECURITY.md item 14): box B browses a "remote box"
whose DNS server answers with whatever an attacker likes — 300 instances
(more than the 256 kept), names with markup, NUL bytes and dots inside a
label, a 51 KB TXT record, an SRV target outside the remote's domain, an SRV
target that is box B's own mDNS name, addresses that are loopback or
multicast. Box B must stay up, announce at most what it keeps, never claim
its own name for someone else, never announce loopback/multicast addresses
or the oversized TXT, and keep answering its own bridge.

The hostile server is a small Python DNS responder on box A's mesh address
(port 5300); box A itself is only the way there."""

import json
import re
import time
from pathlib import Path

from site_ns import wait_for
from test_site_to_site import box_config, phone_avahi
from web_client import Http

HOSTILE = r"""
import socket, struct, sys
DOMAIN = [b"mesh", b"home", b"arpa"]
def enc(labels):
    return b"".join(bytes([len(l)]) + l for l in labels) + b"\0"
def parse_name(m, o):
    labels = []
    while m[o]:
        n = m[o]; labels.append(m[o + 1:o + 1 + n]); o += 1 + n
    return labels, o + 1
INSTANCES = [b"Real TV", b"Big TXT", b"Own name", b"Outside", b"Loopback", b"<img src=x onerror=alert(9)>"] + [
    (b"<script>alert(%d)</script>" % i) if i % 3 == 0 else
    (b"nul\0and.dot %d" % i) if i % 10 == 1 else
    (b"x" * 58 + b"%05d" % i)
    for i in range(1, 299)]
SVC = [b"_googlecast", b"_tcp"] + DOMAIN
def rr(labels, rtype, rdata, ttl=10):
    return enc(labels) + struct.pack("!HHIH", rtype, 1, ttl, len(rdata)) + rdata
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
while True:
    m, peer = s.recvfrom(4096)
    try:
        qid, = struct.unpack("!H", m[:2])
        labels, o = parse_name(m, 12)
        qtype, = struct.unpack("!H", m[o:o + 2])
    except Exception:
        continue
    question = m[12:o + 4]
    low = [l.lower() for l in labels]
    ans = []
    if qtype == 12 and low == [l.lower() for l in SVC]:
        ans = [rr(labels, 12, enc([i] + SVC)) for i in INSTANCES]
    elif qtype == 33 and low[1:] == [l.lower() for l in SVC]:
        inst = labels[0]
        target = {b"Own name": [b"meshbridge"] + DOMAIN, b"Outside": [b"evil", b"example"],
                  b"Loopback": [b"lo"] + DOMAIN}.get(inst, [b"tv"] + DOMAIN)
        ans = [rr(labels, 33, struct.pack("!HHH", 0, 0, 8009) + enc(target))]
    elif qtype == 16 and low[1:] == [l.lower() for l in SVC]:
        if labels[0] == b"Big TXT":
            data = b"".join(bytes([255]) + b"t" * 255 for _ in range(200))
        else:
            data = b"\x0dmd=Chromecast" + b"\x08fn=<b>&'"
        ans = [rr(labels, 16, data)]
    elif qtype == 1 and low[1:] == DOMAIN:
        addr = {b"tv": "10.77.1.50", b"meshbridge": "10.77.1.51", b"lo": "127.0.0.1"}.get(low[0])
        if addr:
            ans = [rr(labels, 1, socket.inet_aton(addr))]
        if low[0] == b"tv":
            ans.append(rr(labels, 1, socket.inet_aton("224.0.0.251")))
    hdr = struct.pack("!HHHHHH", qid, 0x8400, 1, len(ans), 0, 0)
    try:
        s.sendto(hdr + question + b"".join(ans), peer)
    except OSError as e:
        print("send:", e, flush=True)
"""


def test_a_hostile_remote_box_cannot_flood_spoof_or_take_names(site):
    phone = site._ns("phone")
    site._veth(f"{site.p}phb", site.peer, f"{site.p}phd", phone)
    site.devices["phone"] = (phone, f"{site.p}phb", f"{site.p}phd")
    a_text = box_config(site, "a", site.box_key, site.peer_pub, "198.51.100.2:51820", "10.77.0.1/24",
                        "10.77.1.1/24", "10.77.1.100-10.77.1.200", [], '["10.78.0.0/16"]', 51820)
    b_text = box_config(site, "b", site.peer_key, site.box_pub, "198.51.100.1:51820", "10.78.0.1/24",
                        "10.78.1.1/24", "10.78.1.100-10.78.1.200", [f"{site.p}phb"], '["10.77.0.0/16"]',
                        51820) + '[discovery]\n[[discovery.remote]]\nname = "evil"\nserver = "10.77.0.1:5300"\n'
    site.start_box(config=site.write_config(text=a_text))
    (site.tmp / "hostile.py").write_text(HOSTILE)
    site.spawn(site.box, ["python3", "-u", str(site.tmp / "hostile.py"), "10.77.0.1", "5300"],
               log=site.tmp / "hostile.log")
    b_cfg = site.tmp / "boxb.toml"
    b_cfg.write_text(b_text)
    b_log = site.tmp / "boxb.log"
    b = site.start_meshbridge(site.peer, b_cfg, b_log)
    site.procs.append(b)
    assert site.udhcpc("phone", hostname="phone")[0].returncode == 0
    phone_avahi(site)

    # The sane services are announced (listing only: resolving hundreds takes avahi too long).
    tv = wait_for(lambda: "Real TV" in browse_names(site), timeout=60, what="the remote's sane service on the phone")
    assert tv
    time.sleep(8)  # several browse rounds of the whole hostile answer
    assert b.poll() is None, b_log.read_text()[-3000:]
    assert "panicked" not in b_log.read_text()
    names = browse_names(site)
    # At most what is kept (256 instances per remote box), never the oversized TXT,
    # never an SRV outside the remote's domain or on a loopback host.
    assert 0 < len(names) <= 256, len(names)
    assert "Big TXT" not in names and "Outside" not in names and "Loopback" not in names
    assert any("<script>" in n for n in names)
    # The host's multicast address is dropped; its sane one is what the phone resolves.
    assert wait_for(lambda: resolve(site, "tv.local"), timeout=30, what="tv.local") == ["tv.local", "10.77.1.50"]
    # Box B's own name stays box B's: the remote's "meshbridge" host is announced as meshbridge-2.
    assert wait_for(lambda: resolve(site, "meshbridge.local"), timeout=30, what="meshbridge.local") == \
        ["meshbridge.local", "10.78.1.1"]
    assert wait_for(lambda: resolve(site, "meshbridge-2.local"), timeout=30, what="meshbridge-2.local") == \
        ["meshbridge-2.local", "10.77.1.51"]
    # Box B still serves its bridge: DHCP again, its page answers, the names are data in JSON.
    assert site.udhcpc("phone", hostname="phone")[0].returncode == 0
    web = Http(site, phone, "http://10.78.1.1")
    assert web.setup((site.tmp / "state-b" / "setup-code").read_text().strip(), "hostile remote pw")[0] == 200
    def remote_services():
        code, d = web.json("GET", "/api/discovery")
        assert code == 200
        return [x for x in d["services"] if x.get("site") == "evil"]
    # What is announced churns as the attacker's oversized answers get lost and records run out;
    # wait for a moment where the markup-named and the renamed service are both announced.
    def both():
        remote = remote_services()
        names = [x["instance"] for x in remote]
        return remote if "Own name" in names and any("<script>" in n for n in names) else None
    remote = wait_for(both, timeout=40, what="the remote's services announced")
    assert 0 < len(remote) <= 256
    assert {x["addr"] for x in remote} <= {"10.77.1.50", "10.77.1.51"}, {x["addr"] for x in remote}
    own = [x for x in remote if x["instance"] == "Own name"]
    assert own and own[0]["host"] == "meshbridge-2.local", own
    # The Discovery page in a real browser: the names are text, nothing runs.
    browser = Path(__file__).parent / "browser"
    def page():
        r = site.run(phone, ["node", str(browser / "discovery.mjs"), "http://10.78.1.1", "hostile remote pw"],
                     check=False, timeout=120)
        assert r.returncode == 0, r.stderr[-2000:]
        seen = json.loads(r.stdout.strip().splitlines()[-1])
        assert seen["login"] == 200, seen
        assert seen["dialogs"] == 0 and seen["scripts"] == 0 and seen["imgs"] == 0, seen
        assert not seen["page_errors"], seen
        return seen if "<script>alert(" in seen["text"] and "<img src=x onerror=alert(9)>" in seen["text"] else None
    seen = wait_for(page, timeout=90, interval=1, what="the hostile names shown as text on the page")
    assert seen["cast_notes"] > 0, seen


def browse_names(site):
    """Instance names avahi-browse lists on the phone (not resolved)."""
    phone = site.devices["phone"][0]
    r = site.run(phone, ["sh", "-c", f"nsenter --mount=/proc/$(cat {site.tmp}/phone.avahi-pid)/ns/mnt "
                                     "avahi-browse -tpk _googlecast._tcp"], check=False, timeout=60)
    out = set()
    for line in r.stdout.splitlines():
        f = line.split(";")
        if f[0] == "+" and len(f) > 3 and f[2] == "IPv4":
            out.add(re.sub(r"\\(\d{3})", lambda m: chr(int(m.group(1))), f[3]))
    return out


def resolve(site, name):
    phone = site.devices["phone"][0]
    r = site.run(phone, ["sh", "-c", f"nsenter --mount=/proc/$(cat {site.tmp}/phone.avahi-pid)/ns/mnt "
                                     f"avahi-resolve -4 -n {name}"], check=False, timeout=30)
    return r.stdout.split()
