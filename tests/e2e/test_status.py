"""`meshbridge status` talks to the running daemon over its unix socket."""

import json
import os
import stat

from site_ns import meshbridge_bin


def test_status_shows_peers_devices_and_health(site):
    site.add_device("dev")
    site.start_box()
    site.start_peer()
    assert site.udhcpc("dev", hostname="printer")[0].returncode == 0
    ip = site.device_ip("dev")
    site.ping_until(site.peer, ip)
    cfg = str(site.tmp / "box.toml")
    r = site.run(site.box, [meshbridge_bin(), "status", "--config", cfg], check=False)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "10.77.0.1" in out and "this box" in out
    assert "laptop" in out and "online, handshake" in out and "198.51.100.2:51820" in out
    assert ip in out and "printer" in out and "bridged, lease expires in" in out
    r = site.run(site.box, [meshbridge_bin(), "status", "--json", "--config", cfg], check=False)
    s = json.loads(r.stdout)
    assert s["box"]["public_key"] == site.box_pub
    (peer,) = s["peers"]
    assert peer["name"] == "laptop" and peer["online"] and peer["rx_bytes"] > 0
    assert peer["public_key"] == site.peer_pub
    dev = [d for d in s["devices"] if d["ip"] == ip][0]
    assert dev["hostname"] == "printer" and dev["active"] and 3500 < dev["expires_in_s"] <= 3600
    assert sorted(h["check"] for h in s["health"]) == ["clock", "dhcp", "uplink"], s["health"]
    assert all(h["ok"] for h in s["health"] if h["check"] != "uplink"), s["health"]
    # This box has no default route: the uplink check says so, with what to do.
    (up,) = [h for h in s["health"] if h["check"] == "uplink"]
    assert not up["ok"] and "No uplink" in up["message"]
    # The socket is root's only.
    sock = site.state_dir / "meshbridge.sock"
    assert stat.S_IMODE(os.stat(sock).st_mode) == 0o600
    # A stopped daemon: a clear error, not a hang.
    site.stop_box()
    r = site.run(site.box, [meshbridge_bin(), "status", "--config", cfg], check=False)
    assert r.returncode != 0 and "is meshbridge running" in r.stderr
