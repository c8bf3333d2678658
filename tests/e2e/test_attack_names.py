"""Attacks on names, generated files and paths (SECURITY.md items 1, 2 and 9),
made against a running box from bridged namespaces:

* item 1: a bridged device's DHCP hostname or mDNS announcement cannot take
  the box's name, a peer's name, a well-known name (wpad) or another active
  device's name; a clash is served with a suffix (`printer-2`) and logged;
* item 2: the API refuses values with line breaks that would land in a
  generated wg-quick file, a QR code or a log line; `--check-config` too;
* item 9: a restored config cannot point its files outside the box's own
  folders, and the refusal never shows what such a file holds.
"""

import shutil
import socket
import struct
import tempfile
from pathlib import Path

from site_ns import meshbridge_bin, wait_for
from web_client import Http

BOX = "http://10.77.1.1"
PASSWORD = "correct horse battery"
DOMAIN = "mesh.home.arpa"


def short(site, ns, *args):
    r = site.run(ns, ["dig", "+time=2", "+tries=2", "+short", "@10.77.1.1", *args], check=False, timeout=20)
    return r.stdout.split()


def full(site, ns, *args):
    return site.run(ns, ["dig", "+time=2", "+tries=2", "@10.77.1.1", *args], check=False, timeout=20).stdout


def test_dhcp_hostnames_cannot_take_the_box_a_peer_wpad_or_a_taken_name(site):
    dev, _, _ = site.add_device("dev")
    evil, _, _ = site.add_device("evil")
    site.start_box()
    assert site.udhcpc("dev", hostname="printer")[0].returncode == 0
    dev_ip = site.device_ip("dev")
    box = ["10.77.0.1", "10.77.1.1"]
    # The attacker asks for the box's own name.
    assert site.udhcpc("evil", hostname="meshbridge")[0].returncode == 0
    evil_ip = site.device_ip("evil")
    assert sorted(short(site, dev, f"meshbridge.{DOMAIN}", "A")) == box
    assert short(site, dev, f"meshbridge-2.{DOMAIN}", "A") == [evil_ip]
    # ... then wpad (a browser's proxy auto-configuration), then a peer's name.
    assert site.udhcpc("evil", hostname="wpad")[0].returncode == 0
    assert "status: NXDOMAIN" in full(site, dev, f"wpad.{DOMAIN}", "A")
    assert sorted(short(site, dev, f"meshbridge.{DOMAIN}", "A")) == box
    assert site.udhcpc("evil", hostname="laptop")[0].returncode == 0
    assert short(site, dev, f"laptop.{DOMAIN}", "A") == ["10.77.0.2"]
    # Two devices called "printer": the first keeps the name, the second is printer-2.
    assert site.udhcpc("evil", hostname="printer")[0].returncode == 0
    assert site.device_ip("evil") == evil_ip
    assert short(site, dev, f"printer.{DOMAIN}", "A") == [dev_ip]
    assert short(site, dev, f"printer-2.{DOMAIN}", "A") == [evil_ip]
    assert short(site, dev, "-x", evil_ip) == [f"printer-2.{DOMAIN}."]
    # The first renewing keeps its name.
    assert site.udhcpc("dev", hostname="printer")[0].returncode == 0
    assert short(site, dev, f"printer.{DOMAIN}", "A") == [dev_ip]
    # Logged: the event at info without the name; the names at debug only.
    log = site.box_log_text()
    info = [l for l in log.splitlines() if "clashed with a taken or reserved name" in l]
    assert info and all("INFO" in l and "printer" not in l and evil_ip not in l for l in info), info
    assert any("DEBUG" in l and '"printer"' in l and "printer-2" in l for l in log.splitlines())


def mdns_response(records):
    """An unsolicited mDNS response (RFC 6762 §8.3) with A/AAAA records."""
    def name(n):
        return b"".join(bytes([len(p)]) + p.encode() for p in n.split(".")) + b"\0"
    body = b""
    for owner, rtype, rdata in records:
        body += name(owner) + struct.pack("!HHIH", rtype, 0x8001, 120, len(rdata)) + rdata
    return struct.pack("!HHHHHH", 0, 0x8400, 0, len(records), 0, 0) + body


def test_mdns_announcements_cannot_change_the_box_names(site):
    dev, _, _ = site.add_device("dev")
    evil, _, _ = site.add_device("evil")
    site.start_box()
    site.start_peer()
    assert site.udhcpc("dev", hostname="printer")[0].returncode == 0
    assert site.udhcpc("evil", hostname="evil")[0].returncode == 0
    evil_ip = site.device_ip("evil")
    bad6 = socket.inet_pton(socket.AF_INET6, "fd00::bad")
    pkt = mdns_response([
        ("meshbridge.local", 28, bad6),
        ("meshbridge.local", 1, socket.inet_aton(evil_ip)),
        ("laptop.local", 28, bad6),
        ("wpad.local", 1, socket.inet_aton(evil_ip)),
        ("printer.local", 28, bad6),
        ("evil.local", 28, bad6),  # its own name: fine
    ])
    sender = site.tmp / "mdns_send.py"
    sender.write_text(
        "import socket, sys\n"
        "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        "s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(sys.argv[1]))\n"
        "s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 255)\n"
        "s.bind((sys.argv[1], 5353))\n"
        f"s.sendto(bytes.fromhex('{pkt.hex()}'), ('224.0.0.251', 5353))\n")

    def announce():
        site.run(evil, ["python3", str(sender), evil_ip])

    # The device's own name shows that the box took the announcement in.
    def own_seen():
        announce()
        return short(site, dev, f"evil.{DOMAIN}", "AAAA") == ["fd00::bad"]
    wait_for(own_seen, timeout=20, interval=1, what="the box to cache the announcement")
    assert sorted(short(site, dev, f"meshbridge.{DOMAIN}", "A")) == ["10.77.0.1", "10.77.1.1"]
    assert short(site, dev, f"meshbridge.{DOMAIN}", "AAAA") == []
    assert short(site, dev, f"laptop.{DOMAIN}", "AAAA") == []
    assert short(site, dev, f"wpad.{DOMAIN}", "A") == []
    assert short(site, dev, f"printer.{DOMAIN}", "AAAA") == []
    # A peer asking through the tunnel sees the same.
    site.ping_until(site.peer, "10.77.0.1")
    r = site.run(site.peer, ["dig", "+short", "@10.77.0.1", f"meshbridge.{DOMAIN}", "AAAA"], check=False)
    assert r.stdout.strip() == "", r.stdout


def logged_in(site, ns):
    web = Http(site, ns, BOX)
    code = (site.state_dir / "setup-code").read_text().strip()
    assert web.setup(code, PASSWORD)[0] == 200
    return web


def test_api_refuses_line_breaks_that_would_land_in_generated_files(site):
    dev, _, _ = site.add_device("dev")
    site.start_box()
    assert site.udhcpc("dev", hostname="printer")[0].returncode == 0
    web = logged_in(site, dev)
    cfg = site.tmp / "box.toml"
    before = cfg.read_bytes()
    pub = site.peer_pub
    for endpoint in ["vpn.example.org\nPostUp=touch /tmp/pwned:51820",
                     "vpn.example.org\nPostUp=id:51820",
                     f"x:1\n[Peer]\nPublicKey = {pub}\nAllowedIPs = 0.0.0.0/0\nEndpoint = 203.0.113.9:51820",
                     "vpn.example.org\t:51820"]:
        code, d = web.json("PUT", "/api/settings", {"mesh.endpoint": endpoint})
        assert code in (400, 422) and d["field"] == "mesh.endpoint", (endpoint, code, d)
        assert "\n" not in d["error"], d
        assert cfg.read_bytes() == before, "a refused change must not touch the file"
    # A peer with a hostile name, and a device renamed with a line break: refused, file untouched.
    code, d = web.json("POST", "/api/peers", {"name": "phone\n[Peer]", "endpoint": "198.51.100.1:51820"})
    assert code in (400, 422) and d["field"] == "name", d
    code, d = web.json("POST", "/api/peers", {"name": "phone", "endpoint": "vpn.example.org\nPostUp=id:51820"})
    assert code in (400, 422) and d["field"] == "endpoint", d
    mac = [x for x in web.json("GET", "/api/status")[1]["devices"] if x["hostname"] == "printer"][0]["mac"]
    for name in ["tv\nDNS = 203.0.113.9", "tv\r\nfake log line", "meshbridge", "wpad", "laptop"]:
        code, d = web.json("PUT", f"/api/devices/{mac}", {"name": name})
        assert code in (400, 422) and d["field"] == "name", (name, code, d)
    assert cfg.read_bytes() == before
    # A good endpoint still works, and the generated peer file is one key per line.
    assert web.json("PUT", "/api/settings", {"mesh.endpoint": "vpn.example.org:51820"})[0] == 200
    code, d = web.json("POST", "/api/peers", {"name": "phone"})
    assert code == 200, d
    assert "Endpoint = vpn.example.org:51820\n" in d["config"] and "PostUp" not in d["config"]
    # --check-config on a hand-edited file with such a value fails and names the key.
    for key, text in [
        ("mesh.endpoint", site.config_text().replace("[mesh]", '[mesh]\nendpoint = "vpn.example.org\\nPostUp=id:51820"', 1)),
        ("mesh.peers[0].name", site.config_text().replace('name = "laptop"', 'name = "laptop\\n[Peer]"')),
    ]:
        bad = site.tmp / "bad.toml"
        bad.write_text(text)
        r = site.run(site.box, [meshbridge_bin(), "--check-config", str(bad)], check=False)
        assert r.returncode != 0 and key in r.stderr, (key, r.stderr)


def test_restore_cannot_point_files_outside_the_box_nor_show_them(site):
    dev, _, _ = site.add_device("dev")
    site.start_box()
    assert site.udhcpc("dev", hostname="printer")[0].returncode == 0
    web = logged_in(site, dev)
    cfg = site.tmp / "box.toml"
    before = cfg.read_bytes()
    code, _, backup = web.request("GET", "/api/backup")
    assert code == 200
    # A secret outside the config's folder and the state dir (like /etc/shadow).
    outside = Path(tempfile.mkdtemp(prefix="mb-secret-"))
    try:
        secret = outside / "shadow"
        secret.write_text("root:$y$j9T$SECRETSALT$SECRETHASHVALUE:19000:0:99999:7:::\n")
        secret.chmod(0o600)
        hostile = (f'state_dir = "{site.state_dir}"\n[mesh]\nwireguard_config = "{secret}"\n'
                   '[bridge]\nports = []\n[dhcp]\nrange = "10.77.1.100-10.77.1.200"\n')
        code, d = web.json("POST", "/api/restore", raw=hostile)
        assert code in (400, 422), (code, d)
        assert "SECRET" not in str(d) and d["field"] == "mesh.wireguard_config", d
        assert cfg.read_bytes() == before
        # A valid backup with the key kept in a file elsewhere, or the API socket elsewhere.
        for line, key in [(f'private_key_file = "{secret}"', "mesh.private_key_file")]:
            text = backup.replace("[mesh]\n", "[mesh]\n" + line + "\n", 1)
            text = "\n".join(l for l in text.splitlines() if not l.startswith("private_key ="))
            code, d = web.json("POST", "/api/restore", raw=text)
            assert code in (400, 422) and d["field"] == key and "SECRET" not in str(d), (key, code, d)
        text = backup.replace("[mesh]\n", f'[api]\nsocket = "{outside / "api.sock"}"\n[mesh]\n', 1)
        code, d = web.json("POST", "/api/restore", raw=text)
        assert code in (400, 422) and d["field"] == "api.socket", (code, d)
        assert cfg.read_bytes() == before
        # The box is still up and the unchanged backup still restores.
        ups = site.box_log_text().count(" up: bridge")
        assert web.json("POST", "/api/restore", raw=backup)[0] == 200
        wait_for(lambda: site.box_log_text().count(" up: bridge") > ups, timeout=30, what="restart after restore")
        assert "SECRET" not in site.box_log_text()
    finally:
        shutil.rmtree(outside, ignore_errors=True)
