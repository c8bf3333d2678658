"""Device nodes across sites and in discovery (issue #13): with `[tailnet]
devices = "nodes"`,

* two boxes at two sites, each with a bridged udhcpc device, in one tailnet:
  each device's lease is its own node's 100.x address, and the device on box
  A reaches the device on box B (ping, HTTP, by address and by MagicDNS name
  through its box's DNS), and back;
* a device announcing `_ipp._tcp` by mDNS (avahi) is browsed by a
  `tailscaled` laptop through the box's DNS-SD proxy at the box's tailnet
  address: the SRV target's A record is the device's tailnet address, which
  the laptop reaches directly (TCP to the announced port).

Topology: test_tailnet_box.py's (Headscale, laptop, box A at 10.99.0.10 on
one underlay, a device on box A's bridge); the two-site test adds box B at
10.99.0.11 (its own bridge subnet, state dir, WireGuard port) with its own
device. Needs the pinned Go programs; SKIPS only when they are absent.
"""

import ipaddress
import os
import shutil
import subprocess
from pathlib import Path

import pytest

import test_tailnet_control
from site_ns import Site, meshbridge_bin, sh, wait_for
from test_tailnet_box import BoxTailnet
from test_tailnet_control import require_gotools

TAILNET = ipaddress.ip_network("100.64.0.0/10")

# Everyone may reach everyone (the boxes' DNS on port 53 included); alice
# owns the devices' tag.
POLICY = """{
  "tagOwners": {"tag:device": ["alice@"]},
  "acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}]
}
"""


@pytest.fixture
def tn(tmp_path, monkeypatch):
    tools = require_gotools()
    test_tailnet_control.policy_in_database(monkeypatch)
    t = BoxTailnet(tmp_path, tools)
    t.etc = [Path("/etc/netns") / t.dev]
    try:
        yield t
    finally:
        t.close()
        for d in t.etc:
            shutil.rmtree(d, ignore_errors=True)


def tagged_key(tn):
    """Policy set, and the boxes' key: reusable and tagged (the device nodes
    use it too; Headscale takes their tags from it)."""
    tn.auth_key()  # creates alice, whom the policy names
    path = tn.tmp / "policy.hujson"
    path.write_text(POLICY)
    tn.run(tn.hs, [str(tn.tools / "headscale"), "-c", str(tn.hs_config), "policy", "set", "-f", str(path)])
    users = {u["name"]: u for u in tn.headscale("users", "list")}
    return tn.headscale("preauthkeys", "create", "--user", str(users["alice"]["id"]), "--reusable",
                        "--expiration", "24h", "--tags", "tag:device")["key"]


def node_map(tn):
    return {n["given_name"] if n.get("given_name") else n["name"]: n for n in tn.nodes()}


def v4(node):
    return next(a for a in node["ip_addresses"] if "." in a)


def swap(text, old, new):
    assert old in text, (old, text)
    return text.replace(old, new)


def lease(tn, ns, ifn, hostname):
    return tn.lease_in(ns, ifn, hostname)


def use_box_dns(tn, ns, dns):
    etc = Path("/etc/netns") / ns
    etc.mkdir(parents=True, exist_ok=True)
    (etc / "resolv.conf").write_text(f"nameserver {dns}\n")
    if etc not in tn.etc:
        tn.etc.append(etc)


def resolve(tn, ns, name):
    r = tn.run(ns, ["getent", "ahostsv4", name], check=False)
    return r.returncode == 0 and r.stdout.split()[0]


def http_get(tn, ns, url):
    r = tn.run(ns, ["curl", "-sf", "--max-time", "3", url], check=False)
    return r.returncode == 0 and r.stdout


def serve_http(tn, ns, addr, port, who):
    www = tn.tmp / f"www-{who}"
    www.mkdir()
    (www / "who.txt").write_text(f"I am the {who}\n")
    tn.spawn(ns, ["python3", "-m", "http.server", str(port), "--bind", addr, "--directory", str(www)],
             tn.tmp / f"http-{who}.log")


def add_box_b(tn, cfg_a):
    """Box B: its own namespace on the Headscale underlay (10.99.0.11), its
    own bridge port with a device namespace; its config is box A's with
    another key, state dir, WireGuard port, host name and bridge subnet."""
    boxb, devb = tn._ns("boxb"), tn._ns("devb")
    a, b = f"{tn.p}c0", f"{tn.p}c1"
    sh(["ip", "link", "add", a, "type", "veth", "peer", "name", b])
    sh(["ip", "link", "set", a, "netns", boxb])
    sh(["ip", "link", "set", b, "netns", tn.hs])
    sh(["ip", "-n", tn.hs, "link", "set", b, "master", f"{tn.p}br"])
    sh(["ip", "-n", tn.hs, "link", "set", b, "up"])
    sh(["ip", "-n", boxb, "addr", "add", "10.99.0.11/24", "dev", a])
    sh(["ip", "-n", boxb, "link", "set", a, "up"])
    port, ifn = f"{tn.p}eb", f"{tn.p}ed"
    sh(["ip", "link", "add", port, "type", "veth", "peer", "name", ifn])
    sh(["ip", "link", "set", port, "netns", boxb])
    sh(["ip", "link", "set", ifn, "netns", devb])
    sh(["ip", "-n", boxb, "link", "set", port, "up"])
    sh(["ip", "-n", devb, "link", "set", ifn, "up"])
    tn.run(devb, ["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"])
    (tn.tmp / "board-b").mkdir()
    text = cfg_a.read_text()
    text = swap(text, f'state_dir = "{tn.state}"', f'state_dir = "{tn.tmp / "state-b"}"')
    text = swap(text, f'private_key = "{tn.box_key}"', f'private_key = "{sh(["wg", "genkey"]).stdout.strip()}"')
    text = swap(text, "listen_port = 41641", "listen_port = 41642")
    text = swap(text, 'address = "10.77.0.1/24"', 'address = "10.78.0.1/24"')
    text = swap(text, f'ports = ["{tn.port}"]', f'ports = ["{port}"]')
    text = swap(text, 'range = "10.77.1.100-10.77.1.200"', 'range = "10.78.1.100-10.78.1.200"')
    text = swap(text, f'root = "{tn.tmp / "board"}"', f'root = "{tn.tmp / "board-b"}"')
    text = swap(text, 'hostname = "tbox"', 'hostname = "tboxb"')
    cfg_b = tn.tmp / "boxb.toml"
    cfg_b.write_text(text)
    log = tn.tmp / "boxb.log"
    proc = subprocess.Popen(["ip", "netns", "exec", boxb, meshbridge_bin(), "--config", str(cfg_b), "--log", "debug"],
                            stdout=open(log, "ab"), stderr=subprocess.STDOUT, start_new_session=True,
                            env=dict(os.environ, NO_COLOR="1"))
    tn.procs.append(proc)
    wait_for(lambda: "tailnet: up as" in log.read_text() or proc.poll() is not None, timeout=60,
             what="box B to join the tailnet")
    assert proc.poll() is None, "box B exited:\n" + log.read_text()[-3000:]
    return boxb, devb, ifn, log


def test_device_on_box_a_reaches_device_on_box_b_through_the_tailnet(tn):
    key = tagged_key(tn)
    cfg_a = tn.write_config(key, devices="nodes")
    tn.start_box(cfg_a)
    _, devb, ifb, _ = add_box_b(tn, cfg_a)
    boxes = wait_for(lambda: (m := node_map(tn)) and "tbox" in m and "tboxb" in m and m, timeout=30,
                     what="both boxes on headscale")
    box_ip = {"a": v4(boxes["tbox"]), "b": v4(boxes["tboxb"])}

    # Each device's lease is its own node's tailnet address; router and DNS
    # are its box's tailnet address.
    devs = {"a": (tn.dev, tn.dev_if, "printer"), "b": (devb, ifb, "scanner")}
    addr = {}
    for site, (ns, ifn, name) in devs.items():
        got = lease(tn, ns, ifn, name)
        assert ipaddress.ip_address(got["ip"]) in TAILNET and got["mask"] == "10", got["line"]
        assert got["router"] == box_ip[site] and got["dns"] == box_ip[site], (got["line"], box_ip)
        addr[site] = got["ip"]
        use_box_dns(tn, ns, got["dns"])
    nodes = wait_for(lambda: (m := node_map(tn)) and "printer" in m and "scanner" in m and m, timeout=30,
                     what="the device nodes on headscale")
    assert v4(nodes["printer"]) == addr["a"] and v4(nodes["scanner"]) == addr["b"], (nodes, addr)
    assert len(set(addr.values()) | set(box_ip.values())) == 4
    assert len(tn.nodes()) == 4, "two boxes, two devices, nothing else"

    # A reaches B and B reaches A: ping and HTTP by address, then by MagicDNS
    # name through its own box's DNS.
    serve_http(tn, tn.dev, addr["a"], 8000, "printer")
    serve_http(tn, devb, addr["b"], 8000, "scanner")
    for src, dst in (("a", "b"), ("b", "a")):
        ns, dst_name = devs[src][0], devs[dst][2]
        tn.ping(ns, addr[dst])
        body = wait_for(lambda: http_get(tn, ns, f"http://{addr[dst]}:8000/who.txt"), timeout=20,
                        what=f"HTTP from site {src} to the {dst_name}")
        assert body == f"I am the {dst_name}\n", body
        fqdn = f"{dst_name}.tailnet.test"
        got = wait_for(lambda: resolve(tn, ns, fqdn), timeout=20, what=f"{fqdn} on site {src}")
        assert got == addr[dst], got
        assert http_get(tn, ns, f"http://{fqdn}:8000/who.txt") == f"I am the {dst_name}\n"
        tn.ping(ns, fqdn)


def run_avahi(tn, name, host_name, then):
    """site_ns.Site.run_avahi_device on the box test's device namespace."""
    tn.devices = {name: (tn.dev, tn.port, tn.dev_if)}
    return Site.run_avahi_device(tn, name, host_name, then=then)


def test_laptop_browsing_ipp_through_the_box_gets_the_devices_tailnet_address(tn):
    key = tagged_key(tn)
    cli = tn.tailscaled_routes("tlaptop", key)
    wait_for(lambda: tn.ts_status(cli).get("BackendState") == "Running", timeout=30, what="tailscaled Running")
    cfg = tn.write_config(key, devices="nodes")
    tn.start_box(cfg)
    box = wait_for(lambda: node_map(tn).get("tbox"), timeout=30, what="the box on headscale")
    box_ip = v4(box)

    got = lease(tn, tn.dev, tn.dev_if, "printer")
    dev_ip, domain = got["ip"], got["domain"]
    assert ipaddress.ip_address(dev_ip) in TAILNET and got["dns"] == box_ip, got["line"]
    printer = wait_for(lambda: node_map(tn).get("printer"), timeout=30, what="the printer's node on headscale")
    assert v4(printer) == dev_ip, (printer, dev_ip)
    # The printer: avahi announces Office._ipp._tcp on port 8631 (an HTTP
    # server stands in for its IPP port).
    serve_http(tn, tn.dev, dev_ip, 8631, "printer")
    run_avahi(tn, "printer", "printer", "exec avahi-publish -s Office _ipp._tcp 8631 rp=ipp/print")

    def dig(*args):
        r = tn.run(tn.lap, ["dig", "+time=2", "+tries=1", "+short", f"@{box_ip}", *args], check=False, timeout=20)
        return [ln for ln in r.stdout.splitlines() if ln.strip() and not ln.startswith(";")] if r.returncode == 0 else []

    # Browse through the box's DNS at its tailnet address (once the laptop
    # has a path to the box, the first queries may time out).
    inst = wait_for(lambda: dig(f"_ipp._tcp.{domain}", "PTR"), timeout=40, what="the printer in DNS-SD")
    assert inst == [f"Office._ipp._tcp.{domain}."], inst
    assert dig(f"b._dns-sd._udp.{domain}", "PTR") == [f"{domain}."]
    assert "rp=ipp/print" in " ".join(dig(f"Office._ipp._tcp.{domain}", "TXT"))
    srv = dig(f"Office._ipp._tcp.{domain}", "SRV")
    assert len(srv) == 1, srv
    _, _, port, target = srv[0].split()
    assert port == "8631", srv
    a = dig(target, "A")
    assert a == [dev_ip], ("the box's DNS-SD proxy answers the SRV target", target, a, "the device's tailnet address",
                           dev_ip)
    # The address it got is one the laptop reaches directly: TCP to the port.
    body = wait_for(lambda: http_get(tn, tn.lap, f"http://{a[0]}:{port}/who.txt"), timeout=30,
                    what="TCP from the laptop to the announced address and port")
    assert body == "I am the printer\n", body
