"""Bad input changes nothing; --cleanup removes everything; key commands match wg."""

import signal
import subprocess

from site_ns import meshbridge_bin, sh


def links(site):
    return site.run(site.box, ["ip", "-o", "link"]).stdout


def test_bad_config_fails_clearly_and_leaves_no_links(site):
    site.add_device("dev")
    before = links(site)
    text = site.config_text().replace('range = "10.77.1.100-10.77.1.200"', 'range = "10.77.1.200-10.77.1.100"')
    path = site.write_config(text)
    r = site.run(site.box, [meshbridge_bin(), "--config", str(path)], check=False)
    assert r.returncode != 0
    assert "dhcp.range" in r.stderr and "comes after" in r.stderr, r.stderr
    assert links(site) == before
    r = site.run(site.box, [meshbridge_bin(), "--check-config", str(path)], check=False)
    assert r.returncode != 0 and "dhcp.range" in r.stderr
    good = site.write_config()
    r = site.run(site.box, [meshbridge_bin(), "--check-config", str(good)], check=False)
    assert r.returncode == 0, r.stderr


def test_bad_wg_quick_file_fails_clearly_and_leaves_no_links(site):
    site.add_device("dev")
    before = links(site)
    wg = site.tmp / "wg0.conf"
    wg.write_text(f"[Interface]\nPrivateKey = {site.box_key}\nAddress = 10.77.0.1/24\n\n[Peer]\nPublicKey = {site.peer_pub}\nAllowedIPs = 10.77.0.2/33\n")
    text = site.config_text()
    start = text.index("[mesh]")
    end = text.index("[bridge]")
    text = text[:start] + f'[mesh]\nwireguard_config = "{wg}"\n' + text[end:]
    path = site.write_config(text)
    r = site.run(site.box, [meshbridge_bin(), "--config", str(path)], check=False)
    assert r.returncode != 0
    assert "mesh.wireguard_config" in r.stderr and "line 7" in r.stderr and "AllowedIPs" in r.stderr, r.stderr
    assert links(site) == before
    # The same file, fixed, runs the box.
    wg.write_text(wg.read_text().replace("/33", "/32"))
    site.start_box(config=path)
    assert "br-mesh" in links(site)


def test_cleanup_after_crash_removes_bridge_and_releases_ports(site):
    _, port, _ = site.add_device("dev")
    site.start_box()
    assert "master br-mesh" in links(site)
    site.stop_box(signal.SIGKILL)
    assert "br-mesh" in links(site)
    cfg = site.tmp / "box.toml"
    r = site.run(site.box, [meshbridge_bin(), "--cleanup", "--config", str(cfg)], check=False)
    assert r.returncode == 0, r.stderr
    after = links(site)
    assert "br-mesh" not in after and "mb-tap0" not in after and "mb-host0" not in after
    assert port in after and "master" not in after
    assert not (site.state_dir / "installed.json").exists()
    # Idempotent: a second cleanup is a no-op.
    assert site.run(site.box, [meshbridge_bin(), "--cleanup", "--config", str(cfg)], check=False).returncode == 0


def test_normal_stop_leaves_nothing_behind_and_keeps_existing_bridge(site):
    _, port, _ = site.add_device("dev")
    # A bridge the user already had: meshbridge uses it and must not delete it.
    site.run(site.box, ["ip", "link", "add", "br-mesh", "type", "bridge"])
    site.start_box()
    assert site.stop_box(signal.SIGTERM) == 0
    after = links(site)
    assert "br-mesh" in after, "a pre-existing bridge is kept"
    assert "mb-tap0" not in after and "mb-host0" not in after
    assert "master br-mesh" not in after, "our port was released"
    assert site.run(site.box, ["cat", "/proc/sys/net/ipv4/conf/br-mesh/arp_ignore"]).stdout.strip() == "0"


def test_genkey_and_pubkey_match_wg():
    key = subprocess.run([meshbridge_bin(), "genkey"], capture_output=True, text=True, check=True).stdout.strip()
    assert len(key) == 44
    ours = subprocess.run([meshbridge_bin(), "pubkey"], input=key + "\n", capture_output=True, text=True, check=True).stdout.strip()
    theirs = sh(["wg", "pubkey"], input=key + "\n").stdout.strip()
    assert ours == theirs
    wgkey = sh(["wg", "genkey"]).stdout.strip()
    ours = subprocess.run([meshbridge_bin(), "pubkey"], input=wgkey, capture_output=True, text=True, check=True).stdout.strip()
    assert ours == sh(["wg", "pubkey"], input=wgkey).stdout.strip()
    bad = subprocess.run([meshbridge_bin(), "pubkey"], input="nope", capture_output=True, text=True)
    assert bad.returncode != 0 and "private key" in bad.stderr


def test_missing_bridge_port_is_named_and_a_stop_leaves_nothing(site):
    # A port that is missing at start (a USB adapter not plugged in) is not fatal
    # (SECURITY.md item 11): the box starts without it, names it, and a stop
    # still removes everything it installed.
    site.add_device("dev")
    before = links(site)
    text = site.config_text().replace("ports = [", 'ports = ["nosuchport0", ')
    path = site.write_config(text)
    site.start_box(config=path)
    assert "bridge port nosuchport0 is not in the bridge" in site.box_log_text()
    assert "master br-mesh" in links(site), "the port that exists is in the bridge"
    assert site.stop_box(signal.SIGTERM) == 0
    assert links(site) == before
    assert not (site.state_dir / "installed.json").exists()
