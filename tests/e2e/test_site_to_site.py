"""Cast and print from the other site (issue 15, parts 1 and 2): two boxes,
each with its own bridge, joined by static [mesh] peers. At site A a cast
receiver stand-in (avahi-publish of _googlecast._tcp with the TXT records a
Chromecast sends, and a TLS server on 8009 that hangs up on anyone outside
its own subnet, as real Chromecasts do) and a real IPP printer
(ippeveprinter); at site B a "phone" with its own avahi on box B's bridge.

Box B browses box A's DNS-SD discovery proxy and re-announces what it finds
by mDNS on its bridge: avahi-browse on the phone lists both; the phone
connects to the receiver (accepted thanks to box A's source NAT) and prints
with ipptool; when the receiver stops, it leaves the phone's browse within
the TTL. With the features off, none of this works.

Topology: the fixture's box namespace is box A (bridge 10.77.1.0/24, mesh
10.77.0.1); its "peer" namespace runs box B (bridge 10.78.1.0/24, mesh
10.78.0.1) on the underlay 198.51.100.0/24."""

import os
import signal
import time

from site_ns import avahi_browse, sh, wait_for
from web_client import Http

CAST_TXT = ["id=0123456789abcdef0123456789abcdef", "cd=0123456789ABCDEF0123456789ABCDEF", "rm=",
            "ve=05", "md=Chromecast", "ic=/setup/icon.png", "fn=Living Room TV", "ca=201221",
            "st=0", "bs=FA8FCA123456", "nf=1", "rs="]

# A TLS server on 8009 that, like a Chromecast, closes connections whose
# source is outside its own subnet; others get a greeting over TLS.
RECEIVER = r"""
import ipaddress, socket, ssl, subprocess, sys
cert, key, net, log = sys.argv[1:5]
net = ipaddress.ip_network(net)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 8009))
s.listen(8)
while True:
    c, (addr, port) = s.accept()
    with open(log, "a") as f:
        f.write(f"{addr}\n")
    if ipaddress.ip_address(addr) not in net:
        c.close()
        continue
    try:
        t = ctx.wrap_socket(c, server_side=True)
        t.sendall(b"hello from the receiver\n")
        t.close()
    except Exception as e:
        c.close()
"""

CLIENT = r"""
import socket, ssl, sys
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
try:
    with socket.create_connection((sys.argv[1], 8009), timeout=5) as s:
        with ctx.wrap_socket(s) as t:
            print(t.recv(100).decode().strip())
except Exception as e:
    print("failed:", type(e).__name__, e)
"""


def box_config(site, name, key, peer_pub, endpoint, mesh, bridge, rng, ports, peer_ips, listen, extra=""):
    (site.tmp / f"board-{name}").mkdir(exist_ok=True)
    quoted = ", ".join(f'"{p}"' for p in ports)
    return f"""state_dir = "{site.tmp / ('state-' + name)}"
[mesh]
private_key = "{key}"
listen_port = {listen}
address = "{mesh}"
[[mesh.peers]]
name = "other-box"
public_key = "{peer_pub}"
endpoint = "{endpoint}"
allowed_ips = {peer_ips}
persistent_keepalive = 25
[bridge]
name = "br-mesh"
ports = [{quoted}]
address = "{bridge}"
{extra}
[dhcp]
range = "{rng}"
lease_time = "1h"
[board]
root = "{site.tmp / ('board-' + name)}"
"""


def two_sites(site, snat=True, remote=True, printer=True, b_uplink=None):
    """Box A (with the receiver and the printer) and box B (with the phone).
    `b_uplink` (True/False): box B also has an uplink to a LAN with a host
    (site.devices["lanhost"]) and `announce_on_uplink` set so."""
    tv, _, _ = site.add_device("tv")
    if printer:
        site.add_device("printer", ipv6=True)
    a_ports = [p for (_, p, _) in site.devices.values()]
    # The phone, on box B's bridge (box B runs in the fixture's peer namespace).
    phone = site._ns("phone")
    site._veth(f"{site.p}phb", site.peer, f"{site.p}phd", phone)
    site.devices["phone"] = (phone, f"{site.p}phb", f"{site.p}phd")
    a_extra = "" if snat else "snat_from_mesh = false"
    a_text = box_config(site, "a", site.box_key, site.peer_pub, "198.51.100.2:51820", "10.77.0.1/24",
                        "10.77.1.1/24", "10.77.1.100-10.77.1.200", a_ports, '["10.78.0.0/16"]', 51820, a_extra)
    b_extra = ""
    b_disc = '[discovery]\n[[discovery.remote]]\nname = "home"\nserver = "10.77.0.1"\n' if remote else ""
    if b_uplink is not None:
        lan = site._ns("blan")
        up, host_if = f"{site.p}bw0", f"{site.p}bw1"
        site._veth(up, site.peer, host_if, lan)
        site.run(site.peer, ["ip", "addr", "add", "192.168.7.2/24", "dev", up])
        site.run(lan, ["ip", "addr", "add", "192.168.7.1/24", "dev", host_if])
        site.devices["lanhost"] = (lan, up, host_if)
        b_extra = f'[routing]\nuplink = "{up}"'
        b_disc = b_disc.replace("[discovery]\n", f"[discovery]\nannounce_on_uplink = {str(b_uplink).lower()}\n")
    b_text = box_config(site, "b", site.peer_key, site.box_pub, "198.51.100.1:51820", "10.78.0.1/24",
                        "10.78.1.1/24", "10.78.1.100-10.78.1.200", [f"{site.p}phb"], '["10.77.0.0/16"]', 51820,
                        b_extra) + b_disc
    site.start_box(config=site.write_config(text=a_text))
    b_cfg = site.tmp / "boxb.toml"
    b_cfg.write_text(b_text)
    b_log = site.tmp / "boxb.log"
    site.procs.append(site.start_meshbridge(site.peer, b_cfg, b_log))
    assert site.udhcpc("tv", hostname="tv")[0].returncode == 0
    assert site.udhcpc("phone", hostname="phone")[0].returncode == 0
    tv_ip = site.device_ip("tv")
    phone_ip = site.device_ip("phone")
    assert tv_ip.startswith("10.77.1.") and phone_ip.startswith("10.78.1."), (tv_ip, phone_ip)
    # The receiver: a TLS server on 8009 and its mDNS announcement.
    cert, key = site.tmp / "tv.crt", site.tmp / "tv.key"
    site.run(tv, ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=tv",
                  "-keyout", str(key), "-out", str(cert)])
    (site.tmp / "receiver.py").write_text(RECEIVER)
    (site.tmp / "client.py").write_text(CLIENT)
    site.receiver_log = site.tmp / "receiver-peers.log"
    site.spawn(tv, ["python3", "-u", str(site.tmp / "receiver.py"), str(cert), str(key), "10.77.1.0/24",
                    str(site.receiver_log)], log=site.tmp / "receiver.log")
    txt = " ".join(f"'{t}'" for t in CAST_TXT)
    site.run_avahi_device("tv", "tv", then=f"exec avahi-publish -s 'Living Room TV' _googlecast._tcp 8009 {txt}")
    return tv_ip, phone_ip, b_log


def start_printer(site):
    assert site.udhcpc("printer", hostname="printer")[0].returncode == 0
    return site.run_ipp_printer("printer")


def phone_avahi(site):
    phone = site.devices["phone"][0]
    site.run_avahi_device("phone", "phone", then=f"echo $$ > {site.tmp}/phone.avahi-pid; exec sleep 600")
    wait_for(lambda: (site.tmp / "phone.avahi-pid").exists(), what="avahi on the phone")
    return phone


def lanhost_avahi(site):
    lan = site.devices["lanhost"][0]
    site.run_avahi_device("lanhost", "lanhost", then=f"echo $$ > {site.tmp}/lanhost.avahi-pid; exec sleep 600")
    wait_for(lambda: (site.tmp / "lanhost.avahi-pid").exists(), what="avahi on the LAN host")
    return lan


def browse(site, kind, who="phone"):
    """avahi-browse on the phone (or `who`), resolved: [(name, host, address, port, txt)]."""
    return avahi_browse(site.run, site.devices[who][0], site.tmp / f"{who}.avahi-pid", kind)


def connect(site, ns, addr):
    return site.run(ns, ["python3", str(site.tmp / "client.py"), addr], check=False, timeout=30).stdout.strip()


def test_phone_at_site_b_casts_and_prints_to_site_a_devices_found_by_mdns(site):
    tv_ip, phone_ip, b_log = two_sites(site)
    printed = start_printer(site)
    printer_ip = site.device_ip("printer")
    phone = phone_avahi(site)
    site.ping_until(phone, tv_ip, timeout=30)

    # The phone's own mDNS browser lists the receiver, with the remote device's address and TXT.
    cast = wait_for(lambda: browse(site, "_googlecast._tcp"), timeout=60, what="the receiver on the phone")
    name, host, addr, port, txt = cast[0]
    assert name == "Living Room TV" and addr == tv_ip and port == "8009", cast
    assert "md=Chromecast" in txt and "fn=Living Room TV" in txt, txt
    assert host.endswith(".local"), host
    # And the printer, as IPP, with its TXT (rp=ipp/print).
    ipp = wait_for(lambda: browse(site, "_ipp._tcp"), timeout=60, what="the printer on the phone")
    assert ipp[0][0] == "Office" and ipp[0][2] == printer_ip and ipp[0][3] == "8631", ipp
    assert "rp=ipp/print" in ipp[0][4], ipp

    # Casting: the receiver sees box A's bridge address, inside its subnet, and talks.
    assert connect(site, phone, addr) == "hello from the receiver"
    seen = site.receiver_log.read_text().split()
    assert seen and seen[-1] == "10.77.1.1", seen

    # Printing to what the phone found.
    doc = site.tmp / "doc.txt"
    doc.write_text("Hello from site B\n")
    r = site.run(phone, ["ipptool", "-t", "-f", str(doc), "-d", "filetype=text/plain",
                         f"ipp://{ipp[0][2]}:{ipp[0][3]}/ipp/print", "print-job-and-wait.test"],
                 check=False, timeout=120)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    wait_for(lambda: any(printed.iterdir()), timeout=30, what="the printer to record the job")

    # For people who cannot use mDNS: box B's Discovery page (seen from the phone) lists the
    # remote printer with its IPP URI and an AirPrint profile, and the receiver as from box "home".
    web = Http(site, phone, "http://10.78.1.1")
    assert web.setup((site.tmp / "state-b" / "setup-code").read_text().strip(), "site to site pw")[0] == 200
    code, d = web.json("GET", "/api/discovery")
    assert code == 200, d
    office = [x for x in d["services"] if x["instance"] == "Office" and x["type"] == "_ipp._tcp"]
    assert office and office[0]["site"] == "home", d["services"]
    assert office[0]["uri"] == f"ipp://{printer_ip}:8631/ipp/print", office
    tv_entry = [x for x in d["services"] if x["type"] == "_googlecast._tcp"]
    assert tv_entry and tv_entry[0]["site"] == "home" and tv_entry[0]["addr"] == tv_ip, tv_entry
    code, headers, profile = web.request("GET", "/api/discovery/airprint.mobileconfig?service=Office")
    assert code == 200 and headers["content-type"] == "application/x-apple-aspen-config", (code, headers)
    assert "<string>com.apple.airprint</string>" in profile and f"<string>{printer_ip}</string>" in profile
    assert "<integer>8631</integer>" in profile and "<string>ipp/print</string>" in profile
    assert web.request("GET", "/api/discovery/airprint.mobileconfig?service=Living%20Room%20TV")[0] == 404

    # The receiver stops announcing: it leaves the phone's browse within the TTL (10 s here).
    tv = site.devices["tv"][0]
    stopped = 0
    for pid in sh(["ip", "netns", "pids", tv]).stdout.split():
        try:
            if open(f"/proc/{pid}/cmdline", "rb").read().startswith(b"avahi-publish"):
                os.kill(int(pid), signal.SIGTERM)
                stopped += 1
        except (FileNotFoundError, ProcessLookupError):
            pass
    assert stopped == 1
    t0 = time.monotonic()
    wait_for(lambda: browse(site, "_googlecast._tcp") == [], timeout=30, what="the receiver to leave the phone")
    assert time.monotonic() - t0 <= 20
    # The printer is still there.
    assert browse(site, "_ipp._tcp")
    assert "site-to-site discovery: browsing box \"home\"" in b_log.read_text()


def test_without_snat_and_remote_discovery_the_phone_finds_nothing_and_is_refused(site):
    tv_ip, phone_ip, _ = two_sites(site, snat=False, remote=False, printer=False)
    phone = phone_avahi(site)
    site.ping_until(phone, tv_ip, timeout=30)
    # Reachable, but the receiver hangs up: the source is outside its subnet.
    out = connect(site, phone, tv_ip)
    assert out.startswith("failed"), out
    assert site.receiver_log.read_text().split()[-1] == phone_ip
    # And nothing is announced on box B's bridge.
    time.sleep(10)
    assert browse(site, "_googlecast._tcp") == []


def test_announce_on_uplink_puts_the_remote_services_on_box_bs_uplink_lan_too(site):
    """`[discovery] announce_on_uplink = true`: box B says the remote
    receiver on its uplink as well; a host on that LAN (its own avahi) lists
    it. The phone on the bridge sees it either way."""
    tv_ip, _, b_log = two_sites(site, printer=False, b_uplink=True)
    phone_avahi(site)
    lanhost_avahi(site)
    cast = wait_for(lambda: browse(site, "_googlecast._tcp"), timeout=60, what="the receiver on the phone")
    assert cast[0][0] == "Living Room TV" and cast[0][2] == tv_ip, cast
    on_lan = wait_for(lambda: browse(site, "_googlecast._tcp", who="lanhost"), timeout=60,
                      what="the receiver on box B's uplink LAN")
    name, host, addr, port, txt = on_lan[0]
    assert (name, addr, port) == ("Living Room TV", tv_ip, "8009"), on_lan
    assert "md=Chromecast" in txt and host.endswith(".local"), on_lan


def test_without_announce_on_uplink_the_uplink_lan_sees_nothing(site):
    tv_ip, _, _ = two_sites(site, printer=False, b_uplink=False)
    phone_avahi(site)
    lanhost_avahi(site)
    cast = wait_for(lambda: browse(site, "_googlecast._tcp"), timeout=60, what="the receiver on the phone")
    assert cast[0][2] == tv_ip, cast
    # Announced on the bridge for a while now; the uplink LAN still has nothing.
    time.sleep(5)
    assert browse(site, "_googlecast._tcp", who="lanhost") == []
