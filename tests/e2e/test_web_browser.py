"""The web page in a real browser: headless Chromium (Debian's `chromium`) driven by
playwright-core (tests/e2e/browser/web.mjs), run inside the bridged device's network
namespace against the box's page on its bridge gateway address, like a person with a
laptop plugged into the box's LAN port.

One box and one browser run serve all tests of this module: the run goes through first
boot (setup code), logout/login, Status, Devices, Peers (add a peer), Settings, Discovery
and System, and saves screenshots (desktop and 390x844 phone) to $MB_ARTIFACTS/web or
tests/e2e/artifacts/web. The tests then check what the browser saw, and the peer config
it got: its QR code decodes (zbarimg) to the same text, `wg-quick strip` accepts it, and
a wireguard-go peer brought up from it pings the box through the tunnel.
"""

import json
import os
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from site_ns import Site, sh, wait_for

HERE = Path(__file__).resolve().parent
BROWSER = HERE / "browser"
PASSWORD = "correct horse battery"
PAGES = ["status", "devices", "peers", "settings", "discovery", "system"]


def artifacts_dir():
    d = Path(os.environ.get("MB_ARTIFACTS") or HERE / "artifacts") / "web"
    d.mkdir(parents=True, exist_ok=True)
    return d


def _missing_tools():
    missing = [t for t in ("node", "zbarimg", "wg-quick", "wireguard-go") if not shutil.which(t)]
    if not Path(os.environ.get("CHROMIUM", "/usr/bin/chromium")).exists():
        missing.append("chromium")
    if not (BROWSER / "node_modules" / "playwright-core").exists():
        missing.append("playwright-core (npm ci in tests/e2e/browser)")
    return missing


@pytest.fixture(scope="module")
def web(tmp_path_factory):
    missing = _missing_tools()
    if missing:
        pytest.fail("missing for the browser tests (scripts/deps.sh installs them): " + ", ".join(missing))
    site = Site(tmp_path_factory.mktemp("web"))
    try:
        ns, _, dev_if = site.add_device("dev")
        site.start_box()
        r, out = site.udhcpc("dev", hostname="printer")
        assert r.returncode == 0, r.stdout + r.stderr
        ip = site.device_ip("dev")
        m = re.search(r"router=(\d+\.\d+\.\d+\.\d+)", out.read_text())
        gateway = m.group(1) if m else "10.77.1.1"
        mac = re.search(r"link/ether ([0-9a-f:]{17})", site.run(ns, ["ip", "link", "show", dev_if]).stdout).group(1)
        code_file = site.state_dir / "setup-code"
        wait_for(code_file.exists, what="the setup code file")
        code = code_file.read_text().strip()
        base = f"http://{gateway}/"
        wait_for(lambda: site.fetch(ns, base + "api/session") is not None, what=f"the web page on {base}")
        outdir = artifacts_dir()
        for old in outdir.glob("*.png"):
            old.unlink()
        opts = {"password": PASSWORD, "peer_name": "phone", "peer_endpoint": "198.51.100.1:51820",
                "device_hostname": "printer", "device_name": "Office printer",  # a display name, as in web/API.md
                "bad_dhcp_range": "10.77.1.200-10.77.1.100"}
        r = site.run(ns, ["node", str(BROWSER / "web.mjs"), base, code, str(outdir), json.dumps(opts)],
                     check=False, timeout=400)
        (outdir / "web-run.json").write_text(r.stdout)
        assert r.returncode == 0 and r.stdout.strip(), f"web.mjs failed ({r.returncode}):\n{r.stderr[-3000:]}"
        res = json.loads(r.stdout)
        yield SimpleNamespace(site=site, res=res, steps=res["steps"], out=outdir, ns=ns, ip=ip, mac=mac, base=base)
    finally:
        site.close()


def step(w, name):
    s = w.steps.get(name)
    assert s is not None, f"step {name} did not run: {w.res['errors']}"
    assert s["ok"], (f"step {name} failed at {s.get('url')}:\n{s.get('error')}\n"
                     f"the page showed: {s.get('page_errors_shown')}\nbox log tail:\n{w.site.box_log_text()[-2000:]}")
    return s


def test_first_boot_every_page_leads_to_set_password(web):
    s = step(web, "first_boot_redirects")
    assert set(s["landed"].values()) == {"/setup"}, s["landed"]
    wrong = step(web, "setup_wrong_code")
    assert wrong["error"] and wrong["path"] == "/setup"
    done = step(web, "setup")
    assert done["path"] == "/" and done["nav_visible"]
    # The setup code is for one use only: the page no longer asks for it.
    r = web.site.run(web.ns, ["curl", "-s", web.base + "api/session"])
    assert json.loads(r.stdout)["setup_required"] is False


def test_logout_then_login(web):
    s = step(web, "logout_login")
    assert s["after_logout"] == "/login" and s["protected_path"] == "/login"
    assert s["wrong_password_error"]
    assert s["after_login"] not in ("/login", "/setup")


def test_bridged_device_appears_on_status_with_its_hostname(web):
    s = step(web, "status_device")
    row = s["device_row"]
    assert "printer" in row and web.ip in row and web.mac in row.lower(), row
    assert re.search(r"in \d+ (min|h)", row), row  # lease expiry, e.g. "in 59 min"
    # The configured peer "laptop" has a row with its live traffic graph; health checks are shown.
    assert "laptop" in s["peers_text"] and s["sparklines"] >= 1 and s["polylines"] >= 2, s
    assert s["health_items"] >= 1


def test_devices_rename_and_pin(web):
    s = step(web, "devices")
    assert s["renamed"] and s["pinned_after_reload"]


def test_added_peer_qr_decodes_to_its_config_and_the_peer_pings_the_box(web):
    s = step(web, "add_peer")
    conf = s["conf"]
    assert "[Interface]" in conf and "PrivateKey" in conf and "Endpoint = 198.51.100.1:51820" in conf, conf
    assert s["filename"].endswith(".conf") and s["href_is_blob"] and s["download_matches"]
    assert "only" in s["warning"] and "private key" in s["warning"]
    assert s["listed"] == 1 and s["duplicate_error"]
    qr = web.out / "peer-qr.png"
    decoded = sh(["zbarimg", "--raw", "-q", str(qr)]).stdout
    assert decoded.rstrip("\n") == conf.rstrip("\n"), f"QR: {decoded!r}\npage: {conf!r}"
    # The private key is shown once and never stored on the box.
    priv = re.search(r"PrivateKey\s*=\s*(\S+)", conf).group(1)
    for f in [web.site.tmp / "box.toml", *web.site.state_dir.rglob("*")]:
        if f.is_file():
            assert priv not in f.read_text(errors="replace"), f"private key of the new peer found in {f}"
    # A phone/laptop imports it: wg-quick accepts the file, and the tunnel reaches the box.
    web.site.start_peer_from_conf(decoded)
    web.site.ping_until(web.site.peer, "10.77.0.1", timeout=30)
    # ... and the bridged device behind it.
    web.site.ping_until(web.site.peer, web.ip, timeout=10)


def test_settings_invalid_dhcp_range_shows_error_next_to_field(web):
    s = step(web, "settings_invalid_range")
    assert s["error"] and s["invalid_class"] == 1
    # Only the changed key was sent.
    assert [json.loads(b) for b in s["sent_bodies"]] == [{"dhcp.range": "10.77.1.200-10.77.1.100"}]
    ok = step(web, "settings_save")
    assert ok["message"] and not ok["field_errors"]
    assert [json.loads(b) for b in ok["sent_bodies"]] == [{"dhcp.lease_time": "2h"}]


def test_discovery_and_system_pages(web):
    d = step(web, "discovery")
    assert d["wg_line"] and "DNS" in d["wg_line"]
    s = step(web, "system")
    assert s["log_lines"] > 0 and s["filtered_all_match"]
    assert "state_dir" in Path(s["backup_file"]).read_text()
    assert s["token_prefix"] and s["token_listed"] == 1


def test_screenshots_of_every_page_and_phone_layout(web):
    names = ["login", "setup", "settings-error"] + PAGES + [f"{p}-phone" for p in PAGES]
    for n in names:
        f = web.out / f"{n}.png"
        assert f.exists() and f.stat().st_size > 1000, f
        assert f.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f
    s = step(web, "phone_screenshots")
    # Nothing is wider than a 390 px phone screen.
    assert s["scroll_widths"] and all(w <= 390 for w in s["scroll_widths"].values()), s["scroll_widths"]


def test_no_script_errors_and_csrf_on_every_change(web):
    assert web.res["page_errors"] == [], web.res["page_errors"]
    changes = [r for r in web.res["requests"] if r["path"] not in ("/api/login", "/api/setup")]
    assert changes and all(r["csrf"] for r in changes), changes


def test_peer_disable_and_remove_stick(web):
    s = step(web, "peer_toggle_remove")
    assert s["disabled_after_reload"] and s["gone_after_reload"]


def test_password_change_checks_the_current_one(web):
    s = step(web, "password_change")
    assert s["wrong_current_error"] and s["path_after_wrong"] == "/system", s
    assert s["logged_in_after"]


def test_restore_backup_then_restart(web):
    s = step(web, "restore_and_restart")
    assert not s["restore_error"], s
    assert "restarted" in s["banner"].lower(), s
    # The box came back with its peers (the backup included the peer added on the page).
    assert "laptop" in s["peers_after"] and "phone" in s["peers_after"], s
