"""The web page's API against a running box: first-boot setup with the setup
code, sessions, CSRF, login rate limiting, bearer tokens, validated settings,
backup and restore, peers from generated configs, devices, and the CLI."""

import json
import re
import time

from site_ns import meshbridge_bin, wait_for
from web_client import Http

BOX = "http://10.77.1.1"
PASSWORD = "correct horse battery"


def setup_code(site):
    return (site.state_dir / "setup-code").read_text().strip()


def dev_ns(site):
    return site.devices["dev"][0]


def test_first_boot_sessions_csrf_and_rate_limit(site):
    site.add_device("dev")
    site.start_box()
    assert site.udhcpc("dev", hostname="printer")[0].returncode == 0
    web = Http(site, dev_ns(site), BOX)
    # Before a password is set, every page leads to /setup and the API says so.
    for page in ["/", "/peers", "/system", "/login"]:
        code, headers, _ = web.request("GET", page)
        assert code == 303 and headers["location"] == "/setup", (page, code, headers)
    code, _, body = web.request("GET", "/setup")
    assert code == 200 and "<html" in body.lower()
    code, d = web.json("GET", "/api/status")
    assert code == 401 and d["setup_required"] is True
    # The setup code is in the state folder (root only); the log says where, not what.
    code_text = setup_code(site)
    assert code_text not in site.box_log_text()
    assert str(site.state_dir / "setup-code") in site.box_log_text()
    assert (site.state_dir / "setup-code").stat().st_mode & 0o777 == 0o600
    assert web.setup("AAAA-AAAA", PASSWORD)[0] == 401
    code, d = web.setup(code_text, "short")
    assert code == 422 and d["field"] == "password"
    code, d = web.setup(code_text.lower(), PASSWORD)
    assert code == 200, d
    assert not (site.state_dir / "setup-code").exists()
    assert (site.state_dir / "web-password").read_text().startswith("$argon2id$")
    _, headers, _ = web.request("POST", "/api/logout")
    # The cookie is HttpOnly and SameSite=Strict.
    code, headers, _ = web.request("POST", "/api/login", body={"password": PASSWORD})
    cookie = headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie, cookie
    web.login(PASSWORD)
    # The status has the bridged device with its hostname.
    code, st = web.json("GET", "/api/status")
    assert code == 200
    dev = [d for d in st["devices"] if d["hostname"] == "printer"]
    assert dev and dev[0]["active"] and dev[0]["last_seen_s"] is not None
    # State changes need the CSRF token.
    code, d = web.json("PUT", "/api/settings", {"dhcp.lease_time": "2h"}, csrf=False)
    assert code == 403
    code, d = web.json("PUT", "/api/settings", {"dhcp.lease_time": "2h"})
    assert code == 200 and d["applied"] == "live", d
    # Logged out: 401 again.
    assert web.json("POST", "/api/logout")[0] == 200
    assert web.json("GET", "/api/status")[0] == 401
    code, headers, _ = web.request("GET", "/")
    assert code == 303 and headers["location"] == "/login"
    # Wrong passwords: limited per address after 5 tries.
    codes = [web.login("wrong password")[0] for _ in range(6)]
    assert codes == [401] * 5 + [429], codes
    _, headers, _ = web.request("POST", "/api/login", body={"password": PASSWORD})
    assert int(headers["retry-after"]) > 0
    # The right password from this address waits too...
    assert web.login(PASSWORD)[0] == 429
    # ...but another address is not locked out: a mesh peer, on the box's mesh address.
    site.start_peer()
    site.ping_until(site.peer, "10.77.0.1")
    other = Http(site, site.peer, "http://10.77.0.1")
    assert other.login(PASSWORD)[0] == 200
    assert other.json("GET", "/api/status")[0] == 200
    # The page is not served on the uplink/underlay side.
    code, _, err = Http(site, site.peer, "http://198.51.100.1").request("GET", "/")
    assert code is None, "the web page must not answer on the underlay address"


def test_settings_tokens_backup_and_restore(site):
    site.add_device("dev")
    site.start_box()
    assert site.udhcpc("dev", hostname="printer")[0].returncode == 0
    web = Http(site, dev_ns(site), BOX)
    assert web.setup(setup_code(site), PASSWORD)[0] == 200
    cfg = site.tmp / "box.toml"
    # A bearer token works without a session or CSRF token.
    code, t = web.json("POST", "/api/tokens", {"name": "ci"})
    assert code == 200 and t["token"].startswith("mbt_")
    api = Http(site, dev_ns(site), BOX)
    assert api.json("GET", "/api/status")[0] == 401
    api.token = t["token"]
    assert api.json("GET", "/api/status", cookies=False)[0] == 200
    bad = Http(site, dev_ns(site), BOX)
    bad.token = "mbt_not-a-token"
    assert bad.json("GET", "/api/status", cookies=False)[0] == 401
    # Invalid values: 422 naming the field, and the file is untouched.
    before = cfg.read_bytes()
    for change, field in [({"dhcp.range": "10.77.1.200-10.77.1.100"}, "dhcp.range"),
                          ({"dhcp.lease_time": "forever"}, "dhcp.lease_time"),
                          ({"mesh.listen_port": 70000}, "mesh.listen_port"),
                          ({"web.listen": ["not an address"]}, "web.listen"),
                          ({"dhcp.range": "10.77.1.100-10.77.1.150", "discovery.services": ["ipp"]}, "discovery.services"),
                          ({"mesh.private_key": "x"}, "mesh.private_key")]:
        code, d = api.json("PUT", "/api/settings", change, cookies=False)
        assert code == 422 and d["field"] == field, (change, code, d)
    assert cfg.read_bytes() == before, "a refused change must not touch the file"
    code, s = api.json("GET", "/api/settings", cookies=False)
    assert s["dhcp.range"] == "10.77.1.100-10.77.1.200"
    # A valid change is applied live and written (comments kept).
    cfg.write_text("# my notes\n" + cfg.read_text())
    code, d = api.json("PUT", "/api/settings", {"dhcp.range": "10.77.1.120-10.77.1.130", "dhcp.lease_time": "2h"},
                       cookies=False)
    assert code == 200 and d["applied"] == "live", d
    text = cfg.read_text()
    assert "# my notes" in text and 'range = "10.77.1.120-10.77.1.130"' in text and 'lease_time = "2h"' in text
    # The device kept its address through the change (this request came from it); when
    # it asks again it moves into the new pool.
    assert site.udhcpc("dev", hostname="printer")[0].returncode == 0
    new_ip = site.device_ip("dev")
    assert 120 <= int(new_ip.split(".")[-1]) <= 130, new_ip
    # Backup: the whole config with the key; 401 without auth.
    assert Http(site, dev_ns(site), BOX).request("GET", "/api/backup")[0] == 401
    code, headers, backup = api.request("GET", "/api/backup", cookies=False)
    assert code == 200 and "attachment" in headers["content-disposition"]
    assert site.box_key in backup and "10.77.1.120-10.77.1.130" in backup
    # Change something, then restore the backup: the box restarts with the old settings.
    assert api.json("PUT", "/api/settings", {"dhcp.lease_time": "3h"}, cookies=False)[0] == 200
    code, d = api.json("POST", "/api/restore", raw="[mesh]\nlisten_port = 'x'\n", cookies=False)
    assert code == 422 and d["field"], d
    ups = site.box_log_text().count(" up: bridge")
    code, d = api.json("POST", "/api/restore", raw=backup, cookies=False)
    assert code == 200 and d["applied"] == "restart", d
    wait_for(lambda: site.box_log_text().count(" up: bridge") > ups, timeout=30, what="restart after restore")
    assert site.box_proc.poll() is None, "the same process restarted itself"
    wait_for(lambda: api.json("GET", "/api/status", cookies=False)[0] == 200, timeout=20, what="API after restart")
    code, _, again = api.request("GET", "/api/backup", cookies=False)
    strip = lambda t: "\n".join(l for l in t.splitlines() if not l.startswith("# meshbridge backup"))
    assert strip(again) == strip(backup), "restore round-trips"
    # Settings that need a restart say so.
    code, d = api.json("PUT", "/api/settings", {"mesh.listen_port": 51821}, cookies=False)
    assert code == 200 and d["applied"] == "restart"
    code, st = api.json("GET", "/api/status", cookies=False)
    assert st["box"]["listen_port"] == 51820
    assert any(h["check"] == "restart" and not h["ok"] for h in st["health"])
    # Logs are there and filterable.
    code, logs = api.json("GET", "/api/logs?filter=listen_port", cookies=False)
    assert code == 200 and logs["lines"] and all("listen_port" in l for l in logs["lines"]), logs
    code, logs = api.json("GET", "/api/logs", cookies=False)
    assert any(" up: bridge" in l for l in logs["lines"]) and len(logs["lines"]) <= 500


def test_generated_peer_config_reaches_the_box_and_devices(site):
    site.add_device("dev")
    site.start_box(extra_dhcp='domain = "office.test"')
    assert site.udhcpc("dev", hostname="printer")[0].returncode == 0
    dev_ip = site.device_ip("dev")
    web = Http(site, dev_ns(site), BOX)
    assert web.setup(setup_code(site), PASSWORD)[0] == 200
    code, d = web.json("POST", "/api/peers", {"name": "phone", "endpoint": "198.51.100.1:51820"})
    assert code == 200, d
    conf = d["config"]
    assert d["qr_svg"].lstrip().startswith("<?xml") and "<svg" in d["qr_svg"]
    assert "DNS = 10.77.0.1, office.test" in conf
    assert "Endpoint = 198.51.100.1:51820" in conf
    assert re.search(r"AllowedIPs = 10\.77\.0\.0/24, 10\.77\.1\.0/24", conf), conf
    private = re.search(r"PrivateKey = (\S+)", conf).group(1)
    # The private key is never stored on the box.
    for f in [site.tmp / "box.toml"] + list(site.state_dir.iterdir()):
        if f.is_file():
            assert private not in f.read_text(errors="replace"), f
    assert web.json("POST", "/api/peers", {"name": "phone"})[0] == 409
    assert web.json("POST", "/api/peers", {"name": "bad name!"})[1]["field"] == "name"
    # A WireGuard client brought up from that file reaches the box and the printer, and the box's DNS.
    site.start_peer_from_conf(conf)
    site.ping_until(site.peer, "10.77.0.1")
    site.ping_until(site.peer, dev_ip)
    r = site.run(site.peer, ["dig", "+short", "@10.77.0.1", "printer.office.test"], check=False)
    assert r.stdout.strip() == dev_ip, r.stdout
    r = site.run(site.peer, ["dig", "+short", "@10.77.0.1", "phone.office.test"], check=False)
    assert r.stdout.strip().startswith("10.77.0."), r.stdout
    # Disable: no traffic; enable: back.
    assert web.json("PUT", "/api/peers/phone", {"enabled": False})[0] == 200
    time.sleep(1)
    assert not site.ping(site.peer, "10.77.0.1", count=2)[0]
    st = web.json("GET", "/api/status")[1]
    assert [p for p in st["peers"] if p["name"] == "phone"][0]["enabled"] is False
    assert web.json("PUT", "/api/peers/phone", {"enabled": True})[0] == 200
    site.ping_until(site.peer, "10.77.0.1", timeout=30)
    # Devices: rename (a DNS name), pin, forget.
    st = web.json("GET", "/api/status")[1]
    mac = [x for x in st["devices"] if x["hostname"] == "printer"][0]["mac"]
    code, d = web.json("PUT", f"/api/devices/{mac}", {"name": "!!!"})
    assert code == 422 and d["field"] == "name"
    assert web.json("PUT", f"/api/devices/{mac}", {"name": "Office printer", "pin": True})[0] == 200
    r = site.run(site.peer, ["dig", "+short", "@10.77.0.1", "office-printer.office.test"], check=False)
    assert r.stdout.strip() == dev_ip
    dev = [x for x in web.json("GET", "/api/status")[1]["devices"] if x["mac"] == mac][0]
    assert dev["name"] == "Office printer" and dev["pinned"]
    assert f'ip = "{dev_ip}"' in (site.tmp / "box.toml").read_text()
    assert web.json("PUT", "/api/devices/02:00:00:00:00:99", {"name": "x"})[0] == 404
    # The admin is on the mesh (forgetting a device ends its lease: it has to ask again).
    remote = Http(site, site.peer, "http://10.77.0.1")
    assert remote.login(PASSWORD)[0] == 200
    assert remote.json("DELETE", f"/api/devices/{mac}")[0] == 200
    assert not [x for x in remote.json("GET", "/api/status")[1]["devices"] if x["mac"] == mac]
    assert mac not in (site.tmp / "box.toml").read_text()
    r = site.run(site.peer, ["dig", "+short", "@10.77.0.1", "office-printer.office.test"], check=False)
    assert r.stdout.strip() == ""
    # Remove the peer: it is gone from the file and the mesh (asked from the box itself:
    # the phone is the mesh-side caller and the printer was just forgotten).
    local = Http(site, site.box, BOX)
    assert local.login(PASSWORD)[0] == 200
    assert local.json("DELETE", "/api/peers/phone")[0] == 200
    assert "phone" not in (site.tmp / "box.toml").read_text()
    assert local.json("DELETE", "/api/peers/phone")[0] == 404
    assert not site.ping(site.peer, "10.77.0.1", count=2)[0]


def test_cli_peer_add_remove_and_set_password(site):
    site.add_device("dev")
    site.start_box()
    assert site.udhcpc("dev", hostname="printer")[0].returncode == 0
    cfg = str(site.tmp / "box.toml")
    r = site.run(site.box, [meshbridge_bin(), "peer", "add", "tablet", "--config", cfg,
                            "--endpoint", "198.51.100.1:51820"], check=False)
    assert r.returncode == 0, r.stderr
    assert "\u2580" in r.stdout or "\u2584" in r.stdout or "\u2588" in r.stdout, "a QR code in text blocks"
    assert "[Interface]" in r.stdout and "PrivateKey = " in r.stdout
    st = json.loads(site.run(site.box, [meshbridge_bin(), "status", "--json", "--config", cfg]).stdout)
    assert any(p["name"] == "tablet" for p in st["peers"])
    r = site.run(site.box, [meshbridge_bin(), "peer", "add", "tablet", "--config", cfg], check=False)
    assert r.returncode != 0 and "exists" in r.stderr
    r = site.run(site.box, [meshbridge_bin(), "peer", "remove", "tablet", "--config", cfg], check=False)
    assert r.returncode == 0, r.stderr
    st = json.loads(site.run(site.box, [meshbridge_bin(), "status", "--json", "--config", cfg]).stdout)
    assert not any(p["name"] == "tablet" for p in st["peers"])
    r = site.run(site.box, [meshbridge_bin(), "peer", "remove", "tablet", "--config", cfg], check=False)
    assert r.returncode != 0 and "no peer" in r.stderr
    # set-password from the console: the page then takes the new one, old sessions end.
    web = Http(site, dev_ns(site), BOX)
    assert web.setup(setup_code(site), PASSWORD)[0] == 200
    assert web.json("GET", "/api/status")[0] == 200
    r = site.run(site.box, f"echo 'console password 1' | {meshbridge_bin()} set-password --config {cfg}", check=False)
    assert r.returncode == 0, r.stderr
    assert web.json("GET", "/api/status")[0] == 401
    assert web.login(PASSWORD)[0] == 401
    assert web.login("console password 1")[0] == 200
    r = site.run(site.box, f"echo short | {meshbridge_bin()} set-password --config {cfg}", check=False)
    assert r.returncode != 0 and "8 characters" in r.stderr


def test_tailnet_login_needs_a_session_csrf_a_good_key_and_a_tailnet(site):
    """`POST /api/tailnet/login` on a box without `[tailnet]`: 401 without a
    session, 403 without the CSRF token, 422 for a bad key (checked before
    anything else happens), 409 for a good one (no tailnet to join); the
    logout likewise 409. The box keeps running."""
    site.add_device("dev")
    site.start_box()
    assert site.udhcpc("dev", hostname="printer")[0].returncode == 0
    web = Http(site, dev_ns(site), BOX)
    code, d = web.json("POST", "/api/tailnet/login", {"auth_key": "hskey-auth-x"})
    assert code == 401, d
    assert web.setup(setup_code(site), PASSWORD)[0] == 200
    code, d = web.json("POST", "/api/tailnet/login", {"auth_key": "hskey-auth-x"}, csrf=False)
    assert code == 403, d
    code, d = web.json("POST", "/api/tailnet/login", {"auth_key": "two words"})
    assert code == 422 and d["field"] == "auth_key" and "two words" not in d["error"], d
    code, d = web.json("POST", "/api/tailnet/login", {"auth_key": "hskey-auth-x"})
    assert code == 409 and "not in a tailnet" in d["error"], d
    code, d = web.json("POST", "/api/tailnet/login", {})
    assert code == 409, d
    assert web.json("POST", "/api/tailnet/logout", {})[0] == 409
    assert "hskey-auth-x" not in site.box_log_text()
    assert web.json("GET", "/api/status")[0] == 200
