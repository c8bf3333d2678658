"""Faults (SECURITY.md items 11 and 12) against a running box: a setting that
keeps the daemon from starting is rolled back and the status says why; a
bridge port that is missing at start is picked up when it appears; a factory
reset ends on the first-start page; 100 SIGKILLs during lease traffic and
config edits leave every file either old or new; one bad lease entry costs
only that entry."""

import json
import os
import random
import signal
import subprocess
import threading
import time

from site_ns import meshbridge_bin, wait_for
from web_client import Http

BOX = "http://10.77.1.1"
PASSWORD = "correct horse battery"


def ups(site):
    return site.box_log_text().count(" up: bridge")


def status(site, config):
    r = site.run(site.box, [meshbridge_bin(), "status", "--json", "--config", str(config)], check=False)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def setup_web(site, ns):
    web = Http(site, ns, BOX)
    code = (site.state_dir / "setup-code").read_text().strip()
    assert web.setup(code, PASSWORD)[0] == 200
    return web


def test_taken_udp_port_is_rolled_back_and_the_status_says_why(site):
    site.add_device("dev")
    cfg = site.tmp / "box.toml"
    site.start_box()
    assert site.udhcpc("dev")[0].returncode == 0
    web = setup_web(site, site.devices["dev"][0])
    good = cfg.read_text()
    # Another program in the box holds UDP 51821.
    holder = site.spawn(site.box, ["python3", "-c", "import socket,time\n"
                                   "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
                                   "s.bind(('0.0.0.0',51821))\nprint('bound',flush=True)\ntime.sleep(600)"],
                        log=site.tmp / "holder.log")
    wait_for(lambda: "bound" in (site.tmp / "holder.log").read_text(), what="port holder")
    code, d = web.json("PUT", "/api/settings", {"mesh.listen_port": 51821})
    assert code == 200 and d["applied"] == "restart", d
    n = ups(site)
    code, d = web.json("POST", "/api/restart")
    assert code == 200, d
    # The start with 51821 fails; the daemon goes back to the last good config and serves.
    wait_for(lambda: ups(site) > n or site.box_proc.poll() is not None, timeout=40, what="the box up again")
    assert site.box_proc.poll() is None, "the box stopped:\n" + site.box_log_text()[-3000:]
    log = site.box_log_text()
    assert "51821" in log and "last config that started" in log, log[-3000:]
    st = status(site, cfg)
    assert st["box"]["listen_port"] == 51820
    rb = [h for h in st["health"] if h["check"] == "rollback"]
    assert rb and not rb[0]["ok"] and "mesh.listen_port" in rb[0]["message"] and "51821" in rb[0]["message"], st["health"]
    # The config file is the last good one again; the failed one is kept.
    assert cfg.read_text() == good
    assert "listen_port = 51821" in (site.state_dir / "failed.toml").read_text()
    # The box still serves: DHCP, and the page after a new login.
    assert site.udhcpc("dev")[0].returncode == 0
    web2 = Http(site, site.devices["dev"][0], BOX)
    assert web2.login(PASSWORD)[0] == 200
    code, st = web2.json("GET", "/api/status")
    assert code == 200 and any(h["check"] == "rollback" for h in st["health"])
    holder.kill()
    # A later good change that starts clears the note.
    code, d = web2.json("PUT", "/api/settings", {"mesh.listen_port": 51822})
    assert code == 200
    n = ups(site)
    web2.json("POST", "/api/restart")
    wait_for(lambda: ups(site) > n, timeout=40, what="restart")
    st = status(site, cfg)
    assert st["box"]["listen_port"] == 51822
    assert not any(h["check"] == "rollback" for h in st["health"]), st["health"]


def test_missing_bridge_port_is_not_fatal_and_is_picked_up_when_it_appears(site):
    site.add_device("dev")
    late_port = f"{site.p}latb"  # the name add_device("late") gives the box's end
    text = site.config_text().replace("ports = [", f'ports = ["{late_port}", ')
    cfg = site.write_config(text)
    site.start_box(config=cfg)
    st = status(site, cfg)
    bp = [h for h in st["health"] if h["check"] == "bridge_ports"]
    assert bp and late_port in bp[0]["message"], st["health"]
    assert site.udhcpc("dev")[0].returncode == 0, "the ports that exist are served"
    # The adapter is plugged in.
    site.add_device("late")
    wait_for(lambda: "master br-mesh" in site.run(site.box, ["ip", "-o", "link", "show", late_port]).stdout,
             timeout=15, what="the late port in the bridge")
    assert site.udhcpc("late", hostname="tv")[0].returncode == 0
    wait_for(lambda: not any(h["check"] == "bridge_ports" for h in status(site, cfg)["health"]),
             timeout=10, what="the health check to clear")
    # Unplugged and plugged again (a new interface with the same name): picked up again.
    site.run(site.box, ["ip", "link", "del", late_port])
    wait_for(lambda: any(h["check"] == "bridge_ports" for h in status(site, cfg)["health"]),
             timeout=10, what="the port to be reported missing")
    ns = site.devices["late"][0]
    site._veth(late_port, site.box, f"{site.p}latd", ns)
    wait_for(lambda: "master br-mesh" in site.run(site.box, ["ip", "-o", "link", "show", late_port]).stdout,
             timeout=15, what="the port back in the bridge")


def test_factory_reset_restarts_to_the_first_start_page(site):
    # Factory reset only empties folders whose path names meshbridge.
    site.state_dir = site.tmp / "var-meshbridge"
    etc = site.tmp / "etc-meshbridge"
    etc.mkdir()
    site.add_device("dev")
    cfg = etc / "meshbridge.toml"
    cfg.write_text(site.config_text())
    site.start_box(config=cfg)
    assert site.udhcpc("dev")[0].returncode == 0
    ns = site.devices["dev"][0]
    setup_web(site, ns)
    assert (site.state_dir / "web-password").exists()
    n = ups(site)
    r = site.run(site.box, [meshbridge_bin(), "factory-reset", "--config", str(cfg)], check=False)
    assert r.returncode != 0 and "--yes" in r.stderr
    r = site.run(site.box, [meshbridge_bin(), "factory-reset", "--yes", "--config", str(cfg)], check=False)
    assert r.returncode == 0, r.stderr
    wait_for(lambda: ups(site) > n or site.box_proc.poll() is not None, timeout=40, what="the box up again")
    assert site.box_proc.poll() is None, "the service stopped:\n" + site.box_log_text()[-3000:]
    text = cfg.read_text()
    assert "laptop" not in text and site.box_key not in text, text
    assert "private_key" in text and site.devices["dev"][1] in text, "new key, the bridge port kept"
    assert not (site.state_dir / "web-password").exists()
    assert (site.state_dir / "setup-code").exists()
    # The device asks again (its lease is gone) and sees the first-start page.
    assert site.udhcpc("dev")[0].returncode == 0
    web = Http(site, ns, BOX)
    code, d = web.json("GET", "/api/status")
    assert code == 401 and d["setup_required"] is True, (code, d)
    assert setup_web(site, ns)


def test_one_bad_lease_entry_costs_only_that_entry(site):
    site.add_device("one")
    site.add_device("two")
    cfg = site.tmp / "box.toml"
    site.start_box()
    assert site.udhcpc("one", hostname="one")[0].returncode == 0
    assert site.udhcpc("two", hostname="two")[0].returncode == 0
    ip2 = site.device_ip("two")
    site.stop_box()
    leases = site.state_dir / "leases.json"
    db = json.loads(leases.read_text())
    assert len(db["leases"]) == 2
    for e in db["leases"]:
        if e["hostname"] == "one":
            e["ip"] = "10.77.1.999"
    leases.write_text(json.dumps(db))
    site.start_box()
    devices = status(site, cfg)["devices"]
    assert [d["ip"] for d in devices] == [ip2], devices
    assert "lease entry #" in site.box_log_text()
    assert not (site.state_dir / "leases.json.unreadable").exists()


# ---- item 12: 100 SIGKILLs ------------------------------------------------

def _check_files(site, cfg, key_file):
    """Every file the daemon writes is whole: parsed, not just present."""
    text = cfg.read_text()
    assert text.strip(), "config file empty"
    # The old or a new version: one of the values the edits write, whole.
    assert any(f'lease_time = "{v}"' in text for v in ("1m", "2m", "90s")), text
    r = subprocess.run([meshbridge_bin(), "--check-config", str(cfg)], capture_output=True, text=True)
    assert r.returncode == 0, (r.stderr, text)
    last_good = site.state_dir / "last-good.toml"
    if last_good.exists():
        lg = site.tmp / "check-last-good.toml"
        lg.write_text(last_good.read_text())
        r = subprocess.run([meshbridge_bin(), "--check-config", str(lg)], capture_output=True, text=True)
        assert r.returncode == 0, ("last-good.toml", r.stderr)
    leases = site.state_dir / "leases.json"
    if leases.exists():
        db = json.loads(leases.read_text())
        assert db["version"] == 1 and isinstance(db["leases"], list)
    pw = (site.state_dir / "web-password").read_text().strip()
    assert pw.startswith("$argon2id$v=19$") and pw.count("$") == 5, pw
    tokens = json.loads((site.state_dir / "web-tokens.json").read_text())
    assert [t["name"] for t in tokens] == ["churn"]
    assert len(key_file.read_text().strip()) == 44
    assert not (site.state_dir / "leases.json.unreadable").exists()


def test_100_sigkills_during_lease_traffic_and_edits_lose_nothing(site):
    names = ["d1", "d2", "d3"]
    for n in names:
        site.add_device(n)
    key_file = site.tmp / "box.key"
    key_file.write_text(site.box_key + "\n")
    key_file.chmod(0o600)
    text = site.config_text(lease_time="1m", extra_dhcp='persist_interval = "0s"')
    text = text.replace(f'private_key = "{site.box_key}"', f'private_key_file = "{key_file}"')
    cfg = site.write_config(text)
    site.start_box(config=cfg)
    # The page's admin password and an API token (the writers under test).
    assert site.udhcpc("d1")[0].returncode == 0
    web = setup_web(site, site.devices["d1"][0])
    code, t = web.json("POST", "/api/tokens", {"name": "churn"})
    assert code == 200
    token = t["token"]
    # Lease traffic: each device takes a lease and releases it, under changing MACs.
    for i, n in enumerate(names):
        ns, _, ifc = site.devices[n]
        script = site.tmp / f"{n}-churn.sh"
        script.write_text("#!/bin/sh\nexit 0\n")
        script.chmod(0o755)
        macs = " ".join(f"02:fa:{i:02x}:00:00:{j:02x}" for j in range(8))
        loop = (f"while true; do for m in {macs}; do ip link set {ifc} down; ip link set {ifc} address $m; "
                f"ip link set {ifc} up; busybox udhcpc -q -n -R -t 2 -T 1 -i {ifc} -s {script} -x hostname:{n} "
                f">/dev/null 2>&1; done; done")
        site.spawn(ns, ["sh", "-c", loop])
    # Config edits (live settings) and password changes through the API, from the box itself.
    api = Http(site, site.box, BOX)
    api.token = token
    stop = threading.Event()
    edits = {"ok": 0, "pw": 0}
    passwords = [PASSWORD, "another good password"]

    def churn():
        i = 0
        while not stop.is_set():
            i += 1
            body = {"dhcp.lease_time": random.choice(["1m", "2m", "90s"]),
                    "mesh.endpoint": f"198.51.100.1:{51820 + i % 50}"}
            code, _ = api.json("PUT", "/api/settings", body, cookies=False)
            if code == 200:
                edits["ok"] += 1
            time.sleep(0.02)

    def one_password_change(client):
        code, _ = client.json("POST", "/api/password",
                              {"current": passwords[0], "password": passwords[1]}, cookies=False)
        if code in (200, 422):  # 422: a kill came after the write, before the answer
            passwords.reverse()
        if code == 200:
            edits["pw"] += 1
        return code

    threads = [threading.Thread(target=churn, daemon=True)]
    for th in threads:
        th.start()
    rng = random.Random(int(os.environ.get("MB_FAULT_SEED", "12")))
    kills = 0
    started = time.monotonic()
    try:
        sync_pw = Http(site, site.box, BOX)
        sync_pw.token = token
        for k in range(100):
            if k % 20 == 19:
                # A password change runs to its end (argon2 twice: seconds in a debug build)...
                for _ in range(2):
                    if one_password_change(sync_pw) == 200:
                        break
            elif k % 20 == 5:
                # ...and another is cut off by the next kill, wherever it is.
                threading.Thread(target=one_password_change, args=(sync_pw,), daemon=True).start()
            time.sleep(rng.uniform(0.05, 0.5))
            site.stop_box(signal.SIGKILL)
            kills += 1
            _check_files(site, cfg, key_file)
            site.start_box(config=cfg)
    finally:
        stop.set()
        for th in threads:
            th.join(timeout=30)
    took = time.monotonic() - started
    # The box is whole at the end: serves leases, and the files are what it says.
    _check_files(site, cfg, key_file)
    leases = site.state_dir / "leases.json"
    before = leases.stat().st_mtime_ns
    wait_for(lambda: leases.stat().st_mtime_ns != before, timeout=20, what="lease traffic after the last start")
    print(f"\n{kills} SIGKILLs in {took:.0f} s; {edits['ok']} settings saved, {edits['pw']} password changes; "
          f"{len(json.loads((site.state_dir / 'leases.json').read_text())['leases'])} leases in the file at the end")
    assert kills == 100 and edits["ok"] > 50 and edits["pw"] > 0, edits
