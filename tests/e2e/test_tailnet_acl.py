"""The tailnet's rules and names on the box (issue #12): the packet filter
Headscale compiles from its policy is enforced by meshbridge on traffic from
tailnet peers into the bridge, statefully (the device's own flows come
back); the box's DNS answers the tailnet's MagicDNS names to bridged devices.

Same topology as test_tailnet_box.py (Headscale, a `tailscaled` laptop, the
box, a udhcpc device on the bridge), with Headscale's policy in its database
(`policy.mode: database`, set with `headscale policy set -f FILE`).
"""

import json
import re
import shutil
import time
from pathlib import Path

import pytest

import test_tailnet_control
from site_ns import meshbridge_bin, wait_for
from test_tailnet_box import BoxTailnet, box_peer
from test_tailnet_control import require_gotools

# The device may reach alice's nodes; nothing may reach the device.
POLICY_DEVICE_OUT_ONLY = """{
  "acls": [
    {"action": "accept", "src": ["10.77.1.0/24"], "dst": ["alice@:*"]}
  ]
}
"""

# As above, and alice's nodes may reach the bridge on TCP 8000 (ICMP follows
# any open port, as in Tailscale's filter) and the box's DNS.
POLICY_LAPTOP_TO_DEVICE_8000 = """{
  "acls": [
    {"action": "accept", "src": ["10.77.1.0/24"], "dst": ["alice@:*"]},
    {"action": "accept", "src": ["alice@"], "dst": ["10.77.1.0/24:8000", "10.77.1.1:53"]}
  ]
}
"""


@pytest.fixture
def tn(tmp_path, monkeypatch):
    tools = require_gotools()
    test_tailnet_control.policy_in_database(monkeypatch)
    t = BoxTailnet(tmp_path, tools)
    try:
        yield t
    finally:
        t.close()
        shutil.rmtree(Path("/etc/netns") / t.dev, ignore_errors=True)



def reaches(tn, ns, url):
    r = tn.run(ns, ["curl", "-sf", "--max-time", "2", url], check=False)
    return r.returncode == 0


def pings(tn, ns, addr):
    return tn.run(ns, ["ping", "-c", "1", "-W", "1", addr], check=False).returncode == 0


def never(pred, seconds, what):
    end = time.time() + seconds
    while time.time() < end:
        assert not pred(), what
        time.sleep(0.5)


def test_headscale_policy_decides_what_reaches_the_bridged_device_and_magicdns_names_resolve(tn):
    key = tn.auth_key()  # creates user alice, whom the policies name
    tn.set_policy(POLICY_DEVICE_OUT_ONLY, "out-only")
    cli = tn.tailscaled_routes("tlaptop", key)
    wait_for(lambda: tn.ts_status(cli).get("BackendState") == "Running", timeout=30, what="tailscaled Running")
    lap_ip = next(a for a in tn.ts_status(cli)["Self"]["TailscaleIPs"] if "." in a)

    box_cfg = tn.write_config(key)
    tn.start_box(box_cfg)
    box = wait_for(lambda: (n := test_tailnet_control.nodes_named(tn, "tbox")) and n[0].get("available_routes") and n,
                   timeout=30, what="the box on headscale with its route")
    tn.headscale("nodes", "approve-routes", "-i", str(box[0]["id"]), "-r", "10.77.1.0/24")
    wait_for(lambda: (p := box_peer(tn, cli)) and "10.77.1.0/24" in (p.get("PrimaryRoutes") or []),
             timeout=30, what="the approved route on the laptop")

    dev_ip = tn.udhcpc()
    (tn.tmp / "hello.txt").write_text("hello from the printer\n")
    for port in (8000, 8001):
        tn.spawn(tn.dev, ["python3", "-m", "http.server", str(port), "--bind", dev_ip, "--directory", str(tn.tmp)],
                 tn.tmp / f"http-{port}.log")
    url = f"http://{dev_ip}:{{}}/hello.txt"

    # 1. The device's own flows to the laptop work, and their answers come
    # back through the filter: by the MagicDNS name, resolved by the box
    # (the resolver its DHCP lease named).
    lease = (tn.tmp / "dev-udhcpc.out").read_text()
    resolver = lease.rsplit(" dns=", 1)[1].split()[0]
    assert resolver == "10.77.1.1", lease
    etc = Path("/etc/netns") / tn.dev
    etc.mkdir(parents=True, exist_ok=True)
    (etc / "resolv.conf").write_text(f"nameserver {resolver}\n")
    name = "tlaptop.tailnet.test"
    got = wait_for(lambda: (r := tn.run(tn.dev, ["getent", "ahostsv4", name], check=False)).returncode == 0
                   and r.stdout.split()[0], timeout=20, what=f"{name} to resolve on the device")
    assert got == lap_ip, got
    tn.ping(tn.dev, name)
    tn.ping(tn.dev, lap_ip)
    # The box's own tailnet name too; unknown tailnet names are NXDOMAIN.
    box_ip = next(a for a in box[0]["ip_addresses"] if "." in a)
    r = tn.run(tn.dev, ["getent", "ahostsv4", "tbox.tailnet.test"], check=False)
    assert r.returncode == 0 and r.stdout.split()[0] == box_ip, r
    assert tn.run(tn.dev, ["getent", "ahostsv4", "nobody.tailnet.test"], check=False).returncode != 0
    # Reverse lookups of tailnet addresses give their MagicDNS names.
    ptr = tn.run(tn.dev, ["dig", "+short", "+time=2", "+tries=1", "@10.77.1.1", "-x", lap_ip], check=False)
    assert ptr.stdout.split() == ["tlaptop.tailnet.test."], ptr

    # 2. Nothing may reach the device: ping and HTTP from the laptop fail
    # (while the laptop has the route and a direct path to the box).
    assert (box_peer(tn, cli) or {}).get("CurAddr"), "a direct path to the box"
    never(lambda: pings(tn, tn.lap, dev_ip) or reaches(tn, tn.lap, url.format(8000)), 8,
          "the laptop reached the device against the policy")

    # 3. The laptop may reach the device's port 8000 (and ping it); port
    # 8001 stays closed.
    tn.set_policy(POLICY_LAPTOP_TO_DEVICE_8000, "to-8000")
    wait_for(lambda: reaches(tn, tn.lap, url.format(8000)), timeout=30, what="HTTP :8000 from the laptop")
    tn.ping(tn.lap, dev_ip)
    assert not reaches(tn, tn.lap, url.format(8001)), "port 8001 is not in the policy"
    # The box counted what it dropped (logged at the map update).
    denied = re.findall(r"tailnet: \d+ filter rule\(s\), \d+ tracked flow\(s\), (\d+) packet\(s\) denied",
                        tn.box_log.read_text())
    assert denied and int(denied[-1]) > 0, denied
    # ...and `meshbridge status` says so.
    r = tn.run(tn.box, [meshbridge_bin(), "status", "--json", "--config", str(box_cfg)])
    filt = json.loads(r.stdout)["tailnet"]
    assert filt["filter_denied"] >= int(denied[-1]) > 0 and filt["filter_flows"] > 0, filt
    tn.ping(tn.dev, name)
    # The laptop resolves the device's name through the box's DNS.
    domain = lease.rsplit(" domain=", 1)[1].split()[0]
    dig = ["dig", "+short", "+time=2", "+tries=1", "@10.77.1.1", f"printer.{domain}", "A"]
    got = wait_for(lambda: tn.run(tn.lap, dig, check=False).stdout.split(), timeout=20,
                   what="the device's name from the laptop")
    assert got == [dev_ip], got
    # And through the box's own tailnet address (where a split-DNS route for
    # the box's domain points), once the policy lets the laptop reach it.
    dig_box = ["dig", "+short", "+time=2", "+tries=1", f"@{box_ip}", f"printer.{domain}", "A"]
    r = tn.run(tn.lap, dig_box, check=False)
    assert r.returncode != 0 and "timed out" in r.stdout, ("the policy does not open the box's port 53", r)
    tn.set_policy(POLICY_LAPTOP_TO_DEVICE_8000.replace('"10.77.1.1:53"', f'"10.77.1.1:53", "{box_ip}:53"'),
               "to-8000-dns")
    got = wait_for(lambda: (r := tn.run(tn.lap, dig_box, check=False)).returncode == 0 and r.stdout.split(),
                   timeout=20, what="the device's name from the box's tailnet address")
    assert got == [dev_ip], got

    # 4. Back to the first policy: the device is closed again.
    tn.set_policy(POLICY_DEVICE_OUT_ONLY, "out-only-again")
    wait_for(lambda: not reaches(tn, tn.lap, url.format(8000)), timeout=30, what="the device closed again")
    tn.ping(tn.dev, lap_ip)
