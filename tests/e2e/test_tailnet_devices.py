"""Every bridged device its own tailnet node (issue #13): with `[tailnet]
devices = "nodes"` three udhcpc devices (host names printer, tv, nas) become
three nodes in Headscale under those names, each device's DHCP lease is its
node's 100.x address, a real `tailscaled` laptop reaches each device by
address (ping, HTTP) and finds it by its MagicDNS name, and each device
reaches the laptop by name through the box's DNS. A restart and a SIGKILL of
the box bring back the same nodes with the same addresses (no duplicates).

Topology: test_tailnet_box.py's (Headscale, laptop, box on one underlay),
with three device namespaces on three bridge ports of the box. Needs the
pinned Go programs; SKIPS only when they are absent.
"""

import ipaddress
import json
import os
import shutil
import signal
from pathlib import Path

import pytest

import test_tailnet_control
from site_ns import meshbridge_bin, sh, wait_for
from test_tailnet_box import BoxTailnet, box_peer
from test_tailnet_control import require_gotools
from web_client import Http

NAMES = ("printer", "tv", "nas")
TAILNET = ipaddress.ip_network("100.64.0.0/10")

# Everyone may reach everyone; alice owns the devices' tags.
POLICY = """{
  "tagOwners": {"tag:device": ["alice@"], "tag:printer": ["alice@"]},
  "acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}]
}
"""

# Alice's laptop may reach the printer only; the devices may reach alice's
# nodes (so the laptop has tv and nas as peers, and nothing but their own
# nodes' filters keeps the laptop out).
POLICY_PRINTER_ONLY = """{
  "tagOwners": {"tag:device": ["alice@"], "tag:printer": ["alice@"]},
  "acls": [
    {"action": "accept", "src": ["alice@"], "dst": ["tag:printer:*"]},
    {"action": "accept", "src": ["tag:device", "tag:printer"], "dst": ["alice@:*"]}
  ]
}
"""


@pytest.fixture
def tn(tmp_path, monkeypatch):
    tools = require_gotools()
    test_tailnet_control.policy_in_database(monkeypatch)
    t = BoxTailnet(tmp_path, tools)
    t.devs = {}
    try:
        yield t
    finally:
        t.close()
        for ns in t.devs.values():
            shutil.rmtree(Path("/etc/netns") / ns, ignore_errors=True)


def add_devices(tn):
    """Three more device namespaces on three more bridge ports."""
    ports = []
    for i, name in enumerate(NAMES):
        ns = tn._ns(f"d{i}")
        port, ifn = f"{tn.p}p{i}", f"{tn.p}q{i}"
        sh(["ip", "link", "add", port, "type", "veth", "peer", "name", ifn])
        sh(["ip", "link", "set", port, "netns", tn.box])
        sh(["ip", "link", "set", ifn, "netns", ns])
        sh(["ip", "-n", tn.box, "link", "set", port, "up"])
        sh(["ip", "-n", ns, "link", "set", ifn, "up"])
        tn.run(ns, ["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"])
        tn.devs[name] = ns
        ports.append(port)
    return ports


def lease(tn, name):
    """udhcpc in the device's namespace, with its host name; returns
    (address, the script's bound line)."""
    f = tn.lease_in(tn.devs[name], f"{tn.p}q{NAMES.index(name)}", name)
    return f["ip"], f["line"]


def node_map(tn):
    return {n["given_name"] if n.get("given_name") else n["name"]: n for n in tn.nodes()}


def v4(node):
    return next(a for a in node["ip_addresses"] if "." in a)



def fetches(tn, addr):
    r = tn.run(tn.lap, ["curl", "-sf", "--max-time", "2", f"http://{addr}:8000/who.txt"], check=False)
    return r.returncode == 0


def tagged_key(tn):
    """The box's key: reusable and tagged (the devices' nodes use it too);
    alice, whom the policies name, is made first."""
    tn.auth_key()
    tn.set_policy(POLICY, "all")
    users = {u["name"]: u for u in tn.headscale("users", "list")}
    return tn.headscale("preauthkeys", "create", "--user", str(users["alice"]["id"]), "--reusable",
                        "--expiration", "24h", "--tags", "tag:device")["key"]


def laptop_and_box(tn, web=None):
    """The tailscaled laptop, then the box with devices = "nodes" and the
    three device ports (its page on `web` if given): (laptop cli, its
    tailnet address, the box's config)."""
    key = tagged_key(tn)
    cli = tn.tailscaled_routes("tlaptop", tn.auth_key())
    wait_for(lambda: tn.ts_status(cli).get("BackendState") == "Running", timeout=30, what="tailscaled Running")
    lap_ip = next(a for a in tn.ts_status(cli)["Self"]["TailscaleIPs"] if "." in a)
    ports = add_devices(tn)
    cfg = tn.write_config(key, devices="nodes")
    text = cfg.read_text().replace(f'ports = ["{tn.port}"]', "ports = [" + ", ".join(f'"{p}"' for p in ports) + "]")
    if web:
        assert "[web]\nenabled = false" in text
        text = text.replace("[web]\nenabled = false", f'[web]\nlisten = ["{web}"]')
    cfg.write_text(text)
    tn.start_box(cfg)
    return cli, lap_ip, cfg


def test_each_bridged_device_is_its_own_tailnet_node(tn):
    cli, lap_ip, cfg = laptop_and_box(tn)
    box = wait_for(lambda: node_map(tn).get("tbox"), timeout=30, what="the box on headscale")
    box_ip = v4(box)

    # 1. Three devices, three nodes named after them; each lease is its
    # node's tailnet address, with the box (its tailnet address) as router
    # and DNS server.
    addrs = {}
    for name in NAMES:
        addr, bound = lease(tn, name)
        assert ipaddress.ip_address(addr) in TAILNET, bound
        assert f"router={box_ip}" in bound and f"dns={box_ip}" in bound, bound
        addrs[name] = addr
    nodes = wait_for(lambda: (m := node_map(tn)) and all(n in m for n in NAMES) and m, timeout=30,
                     what="the device nodes on headscale")
    for name in NAMES:
        assert v4(nodes[name]) == addrs[name], (name, nodes[name], addrs)
        assert "tag:device" in (nodes[name].get("tags") or nodes[name].get("valid_tags") or
                                nodes[name].get("forced_tags") or []), nodes[name]
    assert len(set(addrs.values())) == 3

    # 2. The laptop reaches every device at its own address: ping and HTTP
    # (real TCP), and MagicDNS names each device after its node.
    for name, addr in addrs.items():
        (tn.tmp / f"www-{name}").mkdir()
        (tn.tmp / f"www-{name}" / "who.txt").write_text(f"I am the {name}\n")
        tn.spawn(tn.devs[name], ["python3", "-m", "http.server", "8000", "--bind", addr, "--directory",
                                 str(tn.tmp / f"www-{name}")], tn.tmp / f"http-{name}.log")
    for name, addr in addrs.items():
        tn.ping(tn.lap, addr)
        body = wait_for(lambda: (r := tn.run(tn.lap, ["curl", "-sf", "--max-time", "3", f"http://{addr}:8000/who.txt"],
                                             check=False)).returncode == 0 and r.stdout,
                        timeout=30, what=f"HTTP to the {name}")
        assert body == f"I am the {name}\n", body
        dig = ["dig", "+short", "+time=2", "+tries=1", "@100.100.100.100", f"{name}.tailnet.test", "A"]
        got = wait_for(lambda: tn.run(tn.lap, dig, check=False).stdout.split(), timeout=20,
                       what=f"{name}'s MagicDNS name on the laptop")
        assert got == [addr], got

    # Each device reaches the laptop by its name, through the box's DNS.
    for name, ns in tn.devs.items():
        etc = Path("/etc/netns") / ns
        etc.mkdir(parents=True, exist_ok=True)
        (etc / "resolv.conf").write_text(f"nameserver {box_ip}\n")
        got = wait_for(lambda: (r := tn.run(ns, ["getent", "ahostsv4", "tlaptop.tailnet.test"], check=False))
                       .returncode == 0 and r.stdout.split()[0], timeout=20, what=f"the laptop's name on the {name}")
        assert got == lap_ip, got
        tn.ping(ns, "tlaptop.tailnet.test")

    # `meshbridge status` lists the device nodes.
    st = json.loads(tn.run(tn.box, [meshbridge_bin(), "status", "--json", "--config", str(cfg)]).stdout)
    devs = {d["hostname"]: d for d in st["tailnet"]["devices"]}
    assert set(devs) == set(NAMES), devs
    assert all(devs[n]["address"] == addrs[n] and devs[n]["state"] == "logged-in" for n in NAMES), devs

    # 3. A policy that lets the laptop reach tag:printer only (the printer's
    # node tagged so by the admin): the printer answers, tv and nas do not
    # (real TCP; their nodes' filters in the box drop it), while all three
    # still reach the laptop.
    tn.headscale("nodes", "tag", "-i", str(nodes["printer"]["id"]), "-t", "tag:printer")
    tn.set_policy(POLICY_PRINTER_ONLY, "printer-only")
    wait_for(lambda: not fetches(tn, addrs["tv"]) and not fetches(tn, addrs["nas"]), timeout=30,
             what="tv and nas closed to the laptop")
    assert fetches(tn, addrs["printer"])
    for _ in range(3):
        assert not fetches(tn, addrs["tv"]) and not fetches(tn, addrs["nas"])
    for name in NAMES:
        tn.ping(tn.devs[name], lap_ip)
    tn.set_policy(POLICY, "all-again")
    wait_for(lambda: fetches(tn, addrs["tv"]), timeout=30, what="the tv open again")

    # 5. Restart, then SIGKILL: the same nodes with the same addresses, no
    # new ones; the devices renew their addresses and reach the laptop.
    ids = {n: nodes[n]["id"] for n in NAMES}
    count = len(tn.nodes())
    for how in ("restart", "kill"):
        if how == "restart":
            tn.stop_box()
        else:
            os.killpg(tn.box_proc.pid, signal.SIGKILL)
            tn.box_proc.wait(timeout=10)
        tn.start_box(cfg)
        for name in NAMES:
            addr, bound = lease(tn, name)
            assert addr == addrs[name], (how, name, bound)
        m = wait_for(lambda: (m := node_map(tn)) and all(m[n].get("online") for n in NAMES) and m,
                     timeout=40, what=f"the device nodes online after the {how}")
        assert {n: m[n]["id"] for n in NAMES} == ids, (how, m)
        assert len(tn.nodes()) == count, (how, tn.nodes())
        for name, addr in addrs.items():
            tn.ping(tn.lap, addr)
        tn.ping(tn.devs["printer"], lap_ip)

    # Forgetting a device logs its node out: the control server expires it
    # and it leaves the laptop's live peers; the others stay.
    def lap_peers():
        return {p.get("HostName") for p in (tn.ts_status(cli).get("Peer") or {}).values() if not p.get("Expired")}

    assert set(NAMES) <= lap_peers()
    mac = tn.run(tn.devs["nas"], ["cat", f"/sys/class/net/{tn.p}q2/address"]).stdout.strip()
    tn.run(tn.box, [meshbridge_bin(), "device", "forget", mac, "--config", str(cfg)])
    wait_for(lambda: "nas" not in lap_peers(), timeout=30, what="the nas gone from the laptop's peers")
    assert {"printer", "tv"} <= lap_peers(), lap_peers()
    tn.ping(tn.lap, addrs["printer"])
    nas = node_map(tn).get("nas")
    assert nas is None or nas.get("expiry"), nas
    wait_for(lambda: not list((tn.state / "tailnet-devices").glob(mac.replace(":", "") + "*")), timeout=20,
             what="the nas's keys deleted")


WEB = "10.99.0.10:8088"
PASSWORD = "correct horse battery"


def test_the_devices_page_moves_a_device_behind_the_box_or_out_of_the_tailnet(tn):
    """The Devices page in headless Chromium shows each device's tailnet name,
    address and state, and its switch: tv set "behind the box" and nas "not
    in the tailnet" lose their nodes (logged out, gone from the laptop's
    peers); at their next lease they get bridge addresses; the laptop reaches
    tv through the box's subnet route, while nas and the laptop cannot reach
    each other (nas still reaches the box); the printer stays its own node.
    A restart brings no node back for them."""
    browser = Path(__file__).resolve().parent / "browser"
    if not (browser / "node_modules" / "playwright-core").exists() or not shutil.which("node"):
        pytest.fail("missing for the browser tests (scripts/deps.sh installs them): node, playwright-core")
    cli, lap_ip, cfg = laptop_and_box(tn, web=WEB)
    box = wait_for(lambda: node_map(tn).get("tbox"), timeout=30, what="the box on headscale")
    addrs = {name: lease(tn, name)[0] for name in NAMES}
    assert all(ipaddress.ip_address(a) in TAILNET for a in addrs.values()), addrs
    wait_for(lambda: (m := node_map(tn)) and all(m.get(n, {}).get("online") for n in NAMES), timeout=40,
             what="the device nodes online")
    macs = {n: tn.run(tn.devs[n], ["cat", f"/sys/class/net/{tn.p}q{i}/address"]).stdout.strip()
            for i, n in enumerate(NAMES)}

    http = Http(tn, tn.box, f"http://{WEB}")
    assert http.setup((tn.state / "setup-code").read_text().strip(), PASSWORD)[0] == 200
    r = tn.run(tn.box, ["node", str(browser / "devices.mjs"), f"http://{WEB}", PASSWORD, str(tn.tmp),
                        f"{macs['tv']}=behind", f"{macs['nas']}=off"], check=False, timeout=150)
    assert r.returncode == 0 and r.stdout.strip(), r.stderr[-3000:]
    res = json.loads(r.stdout)
    assert res["ok"] and not res["page_errors"], res
    printer = res["before"][macs["printer"]]
    assert printer["name"].startswith("printer.") and printer["address"] == addrs["printer"], res
    assert printer["state"] == "online" and printer["mode"] == "node" and printer["tags_field"] == 1, res
    assert set(res["confirmations"]) == {macs["tv"], macs["nas"]}, res
    puts = [q for q in res["requests"] if q["method"] == "PUT"]
    assert len(puts) == 2 and all(q["path"].startswith("/api/devices/") for q in puts), res
    saved = cfg.read_text()
    assert 'tailnet = "behind"' in saved and 'tailnet = "off"' in saved, saved

    # Their nodes are logged out: gone from the laptop's live peers.
    def lap_peers():
        return {p.get("HostName") for p in (tn.ts_status(cli).get("Peer") or {}).values() if not p.get("Expired")}

    wait_for(lambda: not {"tv", "nas"} & lap_peers(), timeout=30, what="tv and nas gone from the laptop's peers")
    assert "printer" in lap_peers()
    st = json.loads(tn.run(tn.box, [meshbridge_bin(), "status", "--json", "--config", str(cfg)]).stdout)
    assert {d["hostname"] for d in st["tailnet"]["devices"]} == {"printer"}, st["tailnet"]["devices"]
    modes = {d["mac"]: d.get("tailnet") for d in st["devices"]}
    assert modes[macs["tv"]] == "behind" and modes[macs["nas"]] == "off" and modes[macs["printer"]] == "node", modes

    # At their next lease: bridge addresses, the box's bridge address their router.
    bridge = ipaddress.ip_network("10.77.1.0/24")
    moved = {}
    for name in ("tv", "nas"):
        f = tn.lease_in(tn.devs[name], f"{tn.p}q{NAMES.index(name)}", name)
        assert ipaddress.ip_address(f["ip"]) in bridge and f["router"] == "10.77.1.1", f["line"]
        moved[name] = f["ip"]
    # Behind the box: the laptop reaches tv through the box's subnet route, and back.
    tn.headscale("nodes", "approve-routes", "-i", str(box["id"]), "-r", "10.77.1.0/24")
    wait_for(lambda: (p := box_peer(tn, cli)) and "10.77.1.0/24" in (p.get("PrimaryRoutes") or []),
             timeout=30, what="the box's route on the laptop")
    tn.ping(tn.lap, moved["tv"])
    tn.ping(tn.devs["tv"], lap_ip)
    # Not in the tailnet: nas and the laptop never reach each other, through
    # the same route; nas still reaches the box.
    tn.ping(tn.devs["nas"], "10.77.1.1")
    for _ in range(3):
        assert tn.run(tn.lap, ["ping", "-c", "1", "-W", "1", moved["nas"]], check=False).returncode != 0
        assert tn.run(tn.devs["nas"], ["ping", "-c", "1", "-W", "1", lap_ip], check=False).returncode != 0
    tn.ping(tn.lap, addrs["printer"])

    # A restart: no node comes back for them, the printer's does.
    count = len(tn.nodes())
    tn.stop_box()
    tn.start_box(cfg)
    assert lease(tn, "printer")[0] == addrs["printer"]
    wait_for(lambda: node_map(tn).get("printer", {}).get("online"), timeout=40, what="the printer's node back")
    assert len(tn.nodes()) == count, tn.nodes()
    assert not {"tv", "nas"} & lap_peers(), lap_peers()
