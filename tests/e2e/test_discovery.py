"""Printers and Chromecasts discoverable from the mesh: a real IPP Everywhere
printer (ippeveprinter) announced by a real avahi-daemon on the bridge; a
WireGuard peer browses the box's domain with unicast DNS-SD (dig), finds it,
and prints to it with ipptool."""

import os
import signal
import time

from site_ns import sh, wait_for
from web_client import Http


def dig_short(site, ns, *args):
    r = site.run(ns, ["dig", "+time=2", "+tries=1", "+short", "@10.77.0.1", *args], check=False, timeout=20)
    return [l for l in r.stdout.split("\n") if l.strip()]


def test_peer_finds_the_printer_by_dns_sd_and_prints_to_it(site):
    ns, _, ifc = site.add_device("printer", ipv6=True)
    site.start_box()
    site.start_peer()
    assert site.udhcpc("printer", hostname="printer")[0].returncode == 0
    ip = site.device_ip("printer")
    printed = site.run_ipp_printer("printer")
    site.ping_until(site.peer, "10.77.0.1")
    # Domain enumeration points browsers at the domain (RFC 6763 §11).
    assert dig_short(site, site.peer, "b._dns-sd._udp.mesh.home.arpa", "PTR") == ["mesh.home.arpa."]
    # Browse: the printer appears (the box browses the bridge every minute and on each new lease;
    # avahi also announces on its own).
    inst = wait_for(lambda: dig_short(site, site.peer, "_ipp._tcp.mesh.home.arpa", "PTR"), timeout=40,
                    what="the printer in DNS-SD")
    assert inst == ["Office._ipp._tcp.mesh.home.arpa."], inst
    services = dig_short(site, site.peer, "_services._dns-sd._udp.mesh.home.arpa", "PTR")
    assert "_ipp._tcp.mesh.home.arpa." in services
    # AirPrint-style subtype browsing.
    assert dig_short(site, site.peer, "_universal._sub._ipp._tcp.mesh.home.arpa", "PTR") == inst or \
        dig_short(site, site.peer, "_print._sub._ipp._tcp.mesh.home.arpa", "PTR") == inst
    srv = dig_short(site, site.peer, "Office._ipp._tcp.mesh.home.arpa", "SRV")
    assert len(srv) == 1
    prio, weight, port, target = srv[0].split()
    assert port == "8631" and target == "printer.mesh.home.arpa.", srv
    txt = " ".join(dig_short(site, site.peer, "Office._ipp._tcp.mesh.home.arpa", "TXT"))
    assert "rp=ipp/print" in txt, txt
    assert dig_short(site, site.peer, target, "A") == [ip]
    # TTLs are capped: answers are a snapshot of the link.
    full = site.run(site.peer, ["dig", "+noall", "+answer", "@10.77.0.1", "_ipp._tcp.mesh.home.arpa", "PTR"]).stdout
    ttl = int(full.split()[1])
    assert ttl <= 10, full
    # Print a document to what was found.
    doc = site.tmp / "doc.txt"
    doc.write_text("Hello from the mesh\n")
    r = site.run(site.peer, ["ipptool", "-t", "-f", str(doc), "-d", "filetype=text/plain",
                             f"ipp://{target.rstrip('.')}:{port}/ipp/print".replace(target.rstrip("."), ip),
                             "print-job-and-wait.test"], check=False, timeout=90)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    wait_for(lambda: any(printed.iterdir()), timeout=30, what="the printer to record the job")


GOOGLECAST = """<?xml version="1.0" standalone='no'?>
<!DOCTYPE service-group SYSTEM "avahi-service.dtd">
<service-group>
  <name>Living Room TV</name>
  <service><type>_googlecast._tcp</type><port>8009</port>
    <txt-record>id=0123456789abcdef</txt-record><txt-record>fn=Living Room TV</txt-record>
  </service>
</service-group>
"""

SSH = """<?xml version="1.0" standalone='no'?>
<!DOCTYPE service-group SYSTEM "avahi-service.dtd">
<service-group>
  <name>tv shell</name>
  <service><type>_ssh._tcp</type><port>22</port></service>
</service-group>
"""


def test_static_cast_service_appears_and_goes_away_filtered_and_opt_out(site):
    ns, _, _ = site.add_device("tv")
    site.add_device("hidden")
    site.start_box(extra='[discovery]\nopt_out = ["hidden-tv"]\n')
    site.start_peer()
    assert site.udhcpc("tv", hostname="tv")[0].returncode == 0
    assert site.udhcpc("hidden", hostname="hidden-tv")[0].returncode == 0
    tv_services = site.tmp / "tv-services"
    tv_services.mkdir()
    (tv_services / "cast.service").write_text(GOOGLECAST)
    (tv_services / "ssh.service").write_text(SSH)
    hidden_services = site.tmp / "hidden-services"
    hidden_services.mkdir()
    (hidden_services / "cast.service").write_text(GOOGLECAST.replace("Living Room TV", "Bedroom TV"))
    site.run_avahi_device("tv", "tv", services_dir=tv_services, dbus=False)
    site.run_avahi_device("hidden", "hidden-tv", services_dir=hidden_services, dbus=False)
    site.ping_until(site.peer, "10.77.0.1")
    inst = wait_for(lambda: dig_short(site, site.peer, "_googlecast._tcp.mesh.home.arpa", "PTR"), timeout=40,
                    what="the cast service")
    assert inst == ["Living\\032Room\\032TV._googlecast._tcp.mesh.home.arpa."], inst  # the opted-out one is absent
    txt = " ".join(dig_short(site, site.peer, "Living\\032Room\\032TV._googlecast._tcp.mesh.home.arpa", "TXT"))
    assert "id=0123456789abcdef" in txt, txt
    # A type outside the allow list never appears.
    assert dig_short(site, site.peer, "_ssh._tcp.mesh.home.arpa", "PTR") == []
    assert "_ssh" not in " ".join(dig_short(site, site.peer, "_services._dns-sd._udp.mesh.home.arpa", "PTR"))
    # The discovery page: what the bridge announces, what is exposed, the line for WireGuard configs.
    web = Http(site, site.peer, "http://10.77.0.1")
    assert web.setup((site.state_dir / "setup-code").read_text().strip(), "discovery test pw")[0] == 200
    code, d = web.json("GET", "/api/discovery")
    assert code == 200 and d["wg_line"] == "DNS = 10.77.0.1, mesh.home.arpa", d
    seen = {(x["instance"], x["type"]): x for x in d["services"]}
    living = seen[("Living Room TV", "_googlecast._tcp")]
    assert living["exposed"] and living["device"] == "tv" and living["port"] == 8009, living
    assert not seen[("Bedroom TV", "_googlecast._tcp")]["exposed"], "opted out"
    assert not [x for x in d["services"] if x["type"] == "_ssh._tcp" and x["exposed"]]
    # The allow list from Settings applies at once: without _googlecast the TV is gone, and back.
    services = web.json("GET", "/api/settings")[1]["discovery.services"]
    code, r = web.json("PUT", "/api/settings", {"discovery.services": [x for x in services if x != "_googlecast._tcp"]})
    assert code == 200 and r["applied"] == "live", r
    assert dig_short(site, site.peer, "_googlecast._tcp.mesh.home.arpa", "PTR") == []
    assert "_googlecast" not in (site.tmp / "box.toml").read_text().split("[discovery]")[1].split("opt_out")[0] \
        or "services" in (site.tmp / "box.toml").read_text()
    assert web.json("PUT", "/api/settings", {"discovery.services": services})[0] == 200
    assert wait_for(lambda: dig_short(site, site.peer, "_googlecast._tcp.mesh.home.arpa", "PTR"), timeout=15,
                    what="the cast service back")
    # Goodbye: removing the service makes avahi withdraw it (TTL 0); it leaves DNS within the capped TTL.
    (tv_services / "cast.service").unlink()
    for pid in sh(["ip", "netns", "pids", ns]).stdout.split():
        try:
            if b"avahi-daemon" in open(f"/proc/{pid}/cmdline", "rb").read():
                os.kill(int(pid), signal.SIGHUP)
        except (FileNotFoundError, ProcessLookupError):
            pass
    t0 = time.monotonic()
    wait_for(lambda: dig_short(site, site.peer, "_googlecast._tcp.mesh.home.arpa", "PTR") == [], timeout=15,
             what="the cast service to go away")
    assert time.monotonic() - t0 <= 12


def avahi_resolve(site, ns, name):
    r = site.run(ns, ["sh", "-c", f"nsenter --mount=/proc/$(cat {site.tmp}/{ns}.avahi-pid)/ns/mnt "
                                  f"avahi-resolve -4 -n {name}"], check=False, timeout=20)
    return r.stdout.split()


def test_box_answers_for_meshbridge_local_on_bridge_and_uplink_and_two_boxes_differ(site):
    dev, _, _ = site.add_device("dev", ipv6=True)
    site.add_uplink()
    # Put the uplink on a bridge in the home router, so a second box can join the segment.
    lbr = f"{site.p}lbr"
    site.run(site.lan, ["ip", "addr", "del", "192.168.1.1/24", "dev", f"{site.p}w1"])
    site.run(site.lan, ["ip", "link", "add", lbr, "type", "bridge"])
    site.run(site.lan, ["ip", "link", "set", f"{site.p}w1", "master", lbr])
    site.run(site.lan, ["ip", "addr", "add", "192.168.1.1/24", "dev", lbr])
    site.run(site.lan, ["ip", "link", "set", lbr, "up"])
    boxb = site._ns("boxb")
    site._veth(f"{site.p}x0", boxb, f"{site.p}x1", site.lan)
    site.run(site.lan, ["ip", "link", "set", f"{site.p}x1", "master", lbr])
    site.run(boxb, ["ip", "addr", "add", "192.168.1.3/24", "dev", f"{site.p}x0"])

    site.start_box(extra=f'[routing]\nuplink = "{site.uplink}"\nbridge_internet = false\n')
    assert site.udhcpc("dev")[0].returncode == 0
    key_b = sh(["wg", "genkey"]).stdout.strip()
    b_cfg = site.tmp / "boxb.toml"
    b_cfg.write_text(f"""state_dir = "{site.tmp / 'state-b'}"
[mesh]
private_key = "{key_b}"
listen_port = 51821
address = "10.78.0.1/24"
[bridge]
name = "br-mesh"
[dhcp]
range = "10.78.1.100-10.78.1.200"
[routing]
uplink = "{site.p}x0"
bridge_internet = false
[web]
listen = ["0.0.0.0:8080"]
""")
    b_log = site.tmp / "boxb.log"
    time.sleep(2)  # box A has claimed its name; box B comes second
    site.procs.append(site.start_meshbridge(boxb, b_cfg, b_log))
    wait_for(lambda: "this box is meshbridge-2.local on the uplink" in b_log.read_text(), timeout=15,
             what="box B to settle on another name")
    assert "this box is meshbridge.local on the uplink" in site.box_log_text()
    assert "this box is meshbridge.local on the bridge" in site.box_log_text()

    # Real mDNS resolvers (avahi) find the box from the bridge and from the uplink.
    site.devices["lan"] = (site.lan, None, lbr)
    for who in ("dev", "lan"):
        site.run_avahi_device(who, f"resolver-{who}", then=f"echo $$ > {site.tmp}/{site.devices[who][0]}.avahi-pid; exec sleep 600")
    wait_for(lambda: (site.tmp / f"{dev}.avahi-pid").exists() and (site.tmp / f"{site.lan}.avahi-pid").exists(),
             what="avahi in both namespaces")
    assert wait_for(lambda: avahi_resolve(site, dev, "meshbridge.local"), timeout=20, what="resolve from the bridge") == \
        ["meshbridge.local", "10.77.1.1"]
    assert wait_for(lambda: avahi_resolve(site, site.lan, "meshbridge.local"), timeout=20, what="resolve from the uplink") == \
        ["meshbridge.local", "192.168.1.2"]
    assert wait_for(lambda: avahi_resolve(site, site.lan, "meshbridge-2.local"), timeout=20, what="box B") == \
        ["meshbridge-2.local", "192.168.1.3"]
    # The web page is announced as _http._tcp where it is served: box A's on the bridge
    # only (its page is not on the uplink), box B's on the uplink too (it listens everywhere).
    on_bridge = wait_for(lambda: [l for l in avahi_browse_http(site, dev) if l[3] == "meshbridge"],
                         timeout=20, what="the web page browsed from the bridge")
    assert on_bridge[0][7:9] == ["10.77.1.1", "80"] and "path=/" in on_bridge[0][9], on_bridge
    on_lan = wait_for(lambda: [l for l in avahi_browse_http(site, site.lan) if l[3] == "meshbridge-2"],
                      timeout=20, what="box B's page browsed from the uplink")
    assert on_lan[0][7:9] == ["192.168.1.3", "8080"], on_lan
    assert site.fetch(site.lan, "http://192.168.1.3:8080/setup") is not None
    assert not [l for l in avahi_browse_http(site, site.lan) if l[3] == "meshbridge"], \
        "box A does not announce a page it does not serve on the uplink"


def avahi_browse_http(site, ns):
    r = site.run(ns, ["sh", "-c", f"nsenter --mount=/proc/$(cat {site.tmp}/{ns}.avahi-pid)/ns/mnt "
                                  f"avahi-browse -rtpk _http._tcp"], check=False, timeout=30)
    return [l.split(";") for l in r.stdout.splitlines() if l.startswith("=") and ";IPv4;" in l]
