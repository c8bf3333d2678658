"""Site-to-site discovery between the meshbridge boxes of one tailnet (issue
#15, "or every box in the tailnet that runs meshbridge"): no
`[[discovery.remote]]` is configured. Each box says in its Hostinfo that it
runs a DNS-SD proxy (`Services: [{Proto: "udp", Port: 53, Description:
"meshbridge-dns-sd <domain>"}]`, App "meshbridge"); Headscale passes it on in
the peers' map; box B finds box A among its peers and browses box A's proxy
at box A's tailnet address, from its own tailnet address, then re-announces
what it finds by mDNS on its bridge.

* A printer stand-in on box A's bridge (avahi-publish of `_ipp._tcp`, an HTTP
  server on its port) appears in the browse of a phone on box B's bridge
  (the phone's own avahi), with its bridge address, which the phone reaches
  through the tailnet (box A's bridge route, approved); `meshbridge status`
  on box B lists box A as a remote found in the tailnet; the entry leaves the
  phone's browse within the TTL after avahi-publish stops.
* With `[discovery] tailnet_boxes = false` box B browses nobody and
  announces nothing, although box A's proxy has the printer.

Topology: test_tailnet_devices_sites.py's (Headscale, box A 10.99.0.10, box
B 10.99.0.11, a device namespace on each bridge), `devices = "routes"`; box A
serves the domain site-a.arpa, box B site-b.arpa (the domain browsed is the
one box A advertises). Needs the pinned Go programs; SKIPS only when absent.
"""

import json
import os
import signal
import time

from site_ns import Site, avahi_browse, meshbridge_bin, sh, wait_for
from test_tailnet_devices_sites import add_box_b, http_get, node_map, serve_http, tagged_key, tn, v4  # noqa: F401

ROUTES = {"tbox": "10.77.1.0/24", "tboxb": "10.78.1.0/24"}


def two_boxes(tn, discovery=""):
    """Box A (site-a.arpa) and box B (site-b.arpa) in one tailnet, both
    accepting routes, their bridge routes approved. Returns box B's
    namespace, the phone's namespace and interface, box B's config and log."""
    key = tagged_key(tn)
    cfg_a = tn.write_config(key, devices="routes", extra="accept_routes = true\n" + discovery)
    text = cfg_a.read_text()
    rng = 'range = "10.77.1.100-10.77.1.200"\n'
    assert rng in text
    cfg_a.write_text(text.replace(rng, rng + 'domain = "site-a.arpa"\n'))
    tn.start_box(cfg_a)
    # add_box_b copies box A's config (and swaps what must differ).
    for_b = tn.tmp / "a-for-b.toml"
    for_b.write_text(text.replace(rng, rng + 'domain = "site-b.arpa"\n'))
    boxb, devb, ifb, log_b = add_box_b(tn, for_b)
    nodes = wait_for(lambda: (m := node_map(tn)) and "tbox" in m and "tboxb" in m and m, timeout=30,
                     what="both boxes on headscale")
    for name, route in ROUTES.items():
        tn.headscale("nodes", "approve-routes", "-i", str(nodes[name]["id"]), "-r", route)
    return boxb, devb, ifb, tn.tmp / "boxb.toml", log_b, nodes


def avahi(tn, name, ns, ifn, then):
    tn.devices = getattr(tn, "devices", {})
    tn.devices[name] = (ns, None, ifn)
    return Site.run_avahi_device(tn, name, name, then=then)


def phone_avahi(tn, ns, ifn):
    avahi(tn, "phone", ns, ifn, f"echo $$ > {tn.tmp}/phone.avahi-pid; exec sleep 600")
    wait_for(lambda: (tn.tmp / "phone.avahi-pid").exists(), what="avahi on the phone")


def browse(tn, ns, kind):
    """avahi-browse on the phone, resolved: [(name, host, address, port, txt)]."""
    return avahi_browse(tn.run, ns, tn.tmp / "phone.avahi-pid", kind)


def status(tn, ns, cfg):
    r = tn.run(ns, [meshbridge_bin(), "status", "--json", "--config", str(cfg)], check=False)
    return json.loads(r.stdout) if r.returncode == 0 else {}


def printer_on_box_a(tn):
    """The printer stand-in on box A's bridge: its lease, an HTTP server on
    8631 and avahi-publish of Office._ipp._tcp."""
    got = tn.lease_in(tn.dev, tn.dev_if, "printer")
    ip = got["ip"]
    assert ip.startswith("10.77.1."), got["line"]
    serve_http(tn, tn.dev, ip, 8631, "printer")
    avahi(tn, "printer", tn.dev, tn.dev_if, "exec avahi-publish -s Office _ipp._tcp 8631 rp=ipp/print")
    return ip


def dig_a(tn, ns, src, server, *args):
    r = tn.run(ns, ["dig", "+time=2", "+tries=1", "+short", "-b", src, f"@{server}", *args], check=False, timeout=20)
    return [ln for ln in r.stdout.splitlines() if ln.strip() and not ln.startswith(";")] if r.returncode == 0 else []


def test_phone_at_box_b_finds_the_printer_at_box_a_found_among_the_tailnet_peers(tn):
    boxb, devb, ifb, cfg_b, log_b, nodes = two_boxes(tn)
    box_a_ip = v4(nodes["tbox"])
    phone = tn.lease_in(devb, ifb, "phone")
    assert phone["ip"].startswith("10.78.1."), phone["line"]
    printer_ip = printer_on_box_a(tn)
    phone_avahi(tn, devb, ifb)

    # Box B found box A in its netmap (by its Hostinfo) and browses it at
    # its tailnet address, in the domain box A advertised.
    wait_for(lambda: f'browsing tailnet box "tbox.' in log_b.read_text(), timeout=40,
             what="box B to find box A among its tailnet peers")
    assert f"at {box_a_ip}:53 (domain site-a.arpa)" in log_b.read_text()

    ipp = wait_for(lambda: browse(tn, devb, "_ipp._tcp"), timeout=60, what="the printer on the phone")
    name, host, addr, port, txt = ipp[0]
    assert (name, addr, port) == ("Office", printer_ip, "8631"), ipp
    assert "rp=ipp/print" in txt and host.endswith(".local"), ipp
    # The address is one the phone reaches (box A's bridge route, through the tailnet).
    body = wait_for(lambda: http_get(tn, devb, f"http://{addr}:{port}/who.txt"), timeout=40,
                    what="HTTP from the phone to the announced address")
    assert body == "I am the printer\n", body

    # `meshbridge status` on box B: box A, from the tailnet, with one service.
    remotes = wait_for(lambda: status(tn, boxb, cfg_b).get("discovery_remotes"), timeout=20,
                       what="the remotes in box B's status")
    assert len(remotes) == 1, remotes
    r = remotes[0]
    assert r["name"].startswith("tbox.") and r["source"] == "tailnet", r
    assert r["server"] == f"{box_a_ip}:53" and r["domain"] == "site-a.arpa" and r["services"] >= 1, r
    assert r["replies"] > 0, r
    text = tn.run(boxb, [meshbridge_bin(), "status", "--config", str(cfg_b)]).stdout
    assert "discovery remote (tailnet) site-a.arpa" in text, text

    # The printer stops announcing: it leaves the phone's browse within the TTL.
    stopped = 0
    for pid in sh(["ip", "netns", "pids", tn.dev]).stdout.split():
        try:
            if open(f"/proc/{pid}/cmdline", "rb").read().startswith(b"avahi-publish"):
                os.kill(int(pid), signal.SIGTERM)
                stopped += 1
        except (FileNotFoundError, ProcessLookupError):
            pass
    assert stopped == 1
    t0 = time.monotonic()
    wait_for(lambda: browse(tn, devb, "_ipp._tcp") == [], timeout=40, what="the printer to leave the phone")
    assert time.monotonic() - t0 <= 25


def test_with_tailnet_boxes_off_nothing_is_browsed_or_announced(tn):
    boxb, devb, ifb, cfg_b, log_b, nodes = two_boxes(tn, discovery="[discovery]\ntailnet_boxes = false\n")
    box_a_ip, box_b_ip = v4(nodes["tbox"]), v4(nodes["tboxb"])
    tn.lease_in(devb, ifb, "phone")
    printer_on_box_a(tn)
    phone_avahi(tn, devb, ifb)
    # Box A's proxy has the printer, and box B may ask it from its tailnet
    # address: the switch, not the path, keeps box B quiet.
    ptr = wait_for(lambda: dig_a(tn, boxb, box_b_ip, box_a_ip, "_ipp._tcp.site-a.arpa", "PTR"), timeout=40,
                   what="the printer in box A's DNS-SD proxy, asked from box B")
    assert ptr == ["Office._ipp._tcp.site-a.arpa."], ptr
    time.sleep(12)
    assert browse(tn, devb, "_ipp._tcp") == []
    assert "browsing tailnet box" not in log_b.read_text()
    st = status(tn, boxb, cfg_b)
    assert st and not st.get("discovery_remotes"), st
