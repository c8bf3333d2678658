"""Issue #11, items 3 to 5: a bridged device attacks the box's DHCP server.

The attacker (dhcp_attacker.py) sends hand-built frames on a raw socket from
its own bridged namespace; the victims are real DHCP clients (busybox udhcpc)
on other bridged devices."""

import json
import re
import signal
import sys
import time
from pathlib import Path

from site_ns import meshbridge_bin, wait_for

ATTACKER = str(Path(__file__).parent / "dhcp_attacker.py")


def attack(site, *args, timeout=120):
    ns, _, ifc = site.devices["evil"]
    r = site.run(ns, [sys.executable, ATTACKER, ifc, *map(str, args)], timeout=timeout)
    return json.loads(r.stdout.strip().splitlines()[-1])


def status(site):
    cfg = str(site.tmp / "box.toml")
    r = site.run(site.box, [meshbridge_bin(), "status", "--json", "--config", cfg])
    return json.loads(r.stdout)


def device(site, ip):
    return [d for d in status(site)["devices"] if d.get("ip") == ip]


def mac_of(site, name):
    ns, _, ifc = site.devices[name]
    return site.run(ns, ["cat", f"/sys/class/net/{ifc}/address"]).stdout.strip()


def lines(out):
    return out.read_text().splitlines() if out.exists() else []


def start_client(site, name):
    """A udhcpc that stays running (and releases on exit); returns it and its address."""
    p, out = site.udhcpc(name, once=False, extra=["-R"])
    wait_for(lambda: any(l.startswith("bound") for l in lines(out)), timeout=30, what=f"{name} to bind")
    ip = re.search(r"ip=(\S+)", [l for l in lines(out) if l.startswith("bound")][-1]).group(1)
    return p, out, ip


def rss_kib(site):
    pid = site.box_proc.pid
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", text).group(1))


# ---- item 3 ------------------------------------------------------------------

def test_a_forged_offer_burst_does_not_switch_dhcp_off(site):
    site.add_device("evil")
    site.add_device("holder")
    site.add_device("dev")
    site.start_box(extra_dhcp='probe_interval = "5s"')
    p, out, ip = start_client(site, "holder")
    got = attack(site, "offers", 300)
    assert got["sent"] == 300
    time.sleep(1)
    # The lease holder renews (SIGUSR1 makes udhcpc renew now) ...
    before = len([l for l in lines(out) if l.startswith("renew")])
    p.send_signal(signal.SIGUSR1)
    wait_for(lambda: len([l for l in lines(out) if l.startswith("renew")]) > before, timeout=15,
             what="the lease holder's renewal to be answered")
    # ... and a new device still gets a lease from the box.
    r, out2 = site.udhcpc("dev", extra=["-t", "5", "-T", "2"])
    assert r.returncode == 0, r.stdout + r.stderr + site.box_log_text()[-2000:]
    assert any("serverid=10.77.1.1" in l for l in lines(out2) if l.startswith("bound"))
    assert "another DHCP server" not in site.box_log_text()
    (h,) = [h for h in status(site)["health"] if h["check"] == "dhcp"]
    assert h["ok"], h


def test_a_real_rogue_server_is_detected_and_named_by_mac(site):
    rogue, _, rogue_if = site.add_device("rogue")
    site.run(rogue, ["ip", "addr", "add", "192.168.50.1/24", "dev", rogue_if])
    site.spawn(rogue, ["dnsmasq", "--no-daemon", "--port=0", "--bind-interfaces", f"--interface={rogue_if}",
                       "--dhcp-range=192.168.50.100,192.168.50.150,1h", "--dhcp-authoritative",
                       f"--dhcp-leasefile={site.tmp}/rogue.leases", f"--pid-file={site.tmp}/rogue.pid"],
               log=site.tmp / "dnsmasq.log")
    rmac = mac_of(site, "rogue")
    site.start_box(extra_dhcp='probe_interval = "5s"')
    wait_for(lambda: f"another DHCP server (192.168.50.1) with MAC {rmac}" in site.box_log_text(), timeout=20,
             what="the log to name the rogue server's MAC")
    (h,) = [h for h in status(site)["health"] if h["check"] == "dhcp"]
    assert not h["ok"] and rmac in h["message"], h


# ---- item 4 ------------------------------------------------------------------

def test_forged_release_and_decline_do_not_end_anothers_lease(site):
    site.add_device("evil")
    vns, _, _ = site.add_device("victim")
    site.start_box()
    site.start_peer()
    p, out, ip = start_client(site, "victim")
    vmac = mac_of(site, "victim")
    site.ping_until(vns, "10.77.0.2")
    (d,) = device(site, ip)
    assert d["active"], d
    attack(site, "release", vmac, ip)
    time.sleep(1)
    d = device(site, ip)
    assert d and d[0]["active"], f"the victim's lease was ended by a forged message: {d}"
    assert site.ping(vns, "10.77.0.2", count=2)[0]
    assert "released" not in site.box_log_text() and "declined" not in site.box_log_text()


def test_discover_with_a_forged_chaddr_gets_no_offer(site):
    site.add_device("evil")
    site.start_box()
    got = attack(site, "forged-discover", 5)
    assert got["offers"] == 0, got


# ---- item 5 ------------------------------------------------------------------

RSS_BOUND_KIB = 64 * 1024  # the debug build; the release build is smaller


def test_discover_flood_from_random_macs_does_not_starve_known_devices(site):
    site.add_device("evil")
    hns, _, _ = site.add_device("holder")
    site.add_device("victim")
    site.add_device("newdev")
    site.start_box()
    site.start_peer()
    _, _, hip = start_client(site, "holder")
    vp, _, vip = start_client(site, "victim")
    vns = site.devices["victim"][0]
    site.ping_until(vns, "10.77.1.1")  # so its unicast RELEASE finds the box
    # The victim goes offline (its client releases the lease and stops).
    vp.send_signal(signal.SIGTERM)
    vp.wait(timeout=10)
    wait_for(lambda: not device(site, vip) or not device(site, vip)[0]["active"], timeout=10,
             what="the victim's lease to be released")
    rss0 = rss_kib(site)
    got = attack(site, "flood", 10000)
    rss1 = rss_kib(site)
    print(f"flood: {got}; box RSS {rss0} KiB before, {rss1} KiB after", file=sys.stderr)
    (site.tmp / "flood.json").write_text(json.dumps(dict(got, rss0_kib=rss0, rss1_kib=rss1)))
    assert got["sent"] == 10000
    # The box still answers a device with a lease (ping to the peer through it).
    assert site.ping(hns, "10.77.1.1", count=2)[0]
    assert site.ping(hns, "10.77.0.2", count=2)[0]
    # The victim comes back and gets its SAME address.
    r, out = site.udhcpc("victim", extra=["-t", "5", "-T", "2"])
    assert r.returncode == 0, r.stdout + r.stderr
    bound = [l for l in lines(out) if l.startswith("bound")][-1]
    assert f"ip={vip} " in bound, (vip, bound)
    # A new device gets a lease after the flood.
    r, out = site.udhcpc("newdev", extra=["-t", "8", "-T", "2"])
    assert r.returncode == 0, r.stdout + r.stderr
    nip = re.search(r"ip=(\S+)", [l for l in lines(out) if l.startswith("bound")][-1]).group(1)
    assert nip not in (hip, vip)
    # The holder's lease is intact and memory is bounded.
    assert device(site, hip)[0]["active"]
    assert rss1 < RSS_BOUND_KIB, (rss0, rss1)
    assert got["offers"] < 2000, got
    print(f"flood result: {json.dumps(dict(got, rss0_kib=rss0, rss1_kib=rss1))}")
