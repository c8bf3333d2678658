"""WireGuard behaviour against a real peer (wireguard-go): endpoint learning
and roaming, persistent keepalive, unknown peers, peer changes that keep
other sessions."""

import json
import os
import re
import signal
import subprocess
import time

from site_ns import meshbridge_bin, sh, wait_for
from web_client import Http


def test_box_learns_and_follows_a_roaming_peer(site):
    ns, _, _ = site.add_device("dev")
    # The box does not know where the laptop is: it learns it from the handshake.
    text = site.config_text().replace('endpoint = "198.51.100.2:51820"\n', "")
    site.start_box(config=site.write_config(text))
    site.start_peer()
    assert site.udhcpc("dev")[0].returncode == 0
    ip = site.device_ip("dev")
    site.ping_until(site.peer, ip)
    assert site.ping(ns, "10.77.0.2")[0]
    # The laptop moves to another address (new Wi-Fi): the box follows.
    ul = f"{site.p}u1"
    site.run(site.peer, ["ip", "addr", "del", "198.51.100.2/24", "dev", ul])
    site.run(site.peer, ["ip", "addr", "add", "198.51.100.3/24", "dev", ul])
    site.ping_until(site.peer, ip, timeout=30)
    cap = site.tmp / "roam.pcap"
    tcpd = site.spawn(site.box, ["tcpdump", "--immediate-mode", "-Z", "root", "-U", "-i", f"{site.p}u0", "-nn",
                                 "-w", str(cap), "udp"])
    time.sleep(1)
    assert site.ping(ns, "10.77.0.2")[0]  # device -> laptop goes to the new address
    time.sleep(0.5)
    tcpd.send_signal(signal.SIGINT)
    tcpd.wait(timeout=5)
    seen = site.run(site.box, ["tcpdump", "-nn", "-r", str(cap)]).stdout
    assert "198.51.100.1.51820 > 198.51.100.3.51820" in seen, seen
    assert "> 198.51.100.2.51820" not in seen, seen


def test_persistent_keepalive_is_sent_when_idle(site):
    site.add_device("dev")
    text = site.config_text().replace("persistent_keepalive = 25", "persistent_keepalive = 2")
    site.start_box(config=site.write_config(text))
    site.start_peer()
    site.ping_until(site.peer, "10.77.0.1")
    cap = site.tmp / "ka.pcap"
    tcpd = site.spawn(site.box, ["tcpdump", "--immediate-mode", "-Z", "root", "-U", "-i", f"{site.p}u0", "-nn",
                                 "-w", str(cap), "udp and src host 198.51.100.1"])
    time.sleep(7.5)
    tcpd.send_signal(signal.SIGINT)
    tcpd.wait(timeout=5)
    seen = site.run(site.box, ["tcpdump", "-nn", "-r", str(cap)]).stdout
    # A keepalive is an empty data message: 32 bytes of UDP payload.
    keepalives = re.findall(r"UDP, length 32\b", seen)
    assert len(keepalives) >= 2, seen


def test_unknown_peer_gets_no_answer(site):
    site.add_device("dev")
    site.start_box()
    # A stranger with a key the box has no peer entry for.
    site.peer_key = sh(["wg", "genkey"]).stdout.strip()
    site.start_peer()
    ok, _ = site.ping(site.peer, "10.77.0.1", count=3, timeout=1)
    assert not ok
    assert "latest handshake" not in site.run(site.peer, ["wg", "show", site.peer_if]).stdout
    # The box counted and dropped the stranger's handshakes; it keeps running.
    assert site.box_proc.poll() is None


def _peer_handshake(site):
    """wireguard-go's latest handshake with the box (epoch seconds)."""
    out = site.run(site.peer, ["wg", "show", site.peer_if, "latest-handshakes"]).stdout.split()
    return int(out[1])


def _box_peer(site, name):
    cfg = str(site.tmp / "box.toml")
    st = json.loads(site.run(site.box, [meshbridge_bin(), "status", "--json", "--config", cfg]).stdout)
    return [p for p in st["peers"] if p["name"] == name][0]


def test_peer_changes_from_the_page_and_cli_keep_live_sessions(site):
    """A bridged device pings the laptop while the admin adds, disables,
    enables and removes other peers, and while the laptop's own entry is
    edited (endpoint, allowed IPs, keepalive: written to the file by hand,
    applied with the next change from the page): nothing is lost and the
    laptop's handshake is not redone (the mesh applies a peer set by key and
    updates an edited peer in place)."""
    ns, _, _ = site.add_device("dev")
    site.start_box()
    site.start_peer()
    # The laptop has a second underlay address its entry will move to.
    site.run(site.peer, ["ip", "addr", "add", "198.51.100.3/24", "dev", f"{site.p}u1"])
    assert site.udhcpc("dev")[0].returncode == 0
    site.ping_until(ns, "10.77.0.2")
    web = Http(site, ns, "http://10.77.1.1")
    code = (site.state_dir / "setup-code").read_text().strip()
    assert web.setup(code, "correct horse battery")[0] == 200
    hs = _peer_handshake(site)
    assert _box_peer(site, "laptop")["online"]
    cfg = site.tmp / "box.toml"
    log = site.tmp / "ping.log"
    ping = site.spawn(ns, ["ping", "-n", "-i", "0.1", "-c", "70", "-W", "1", "10.77.0.2"], log=log)
    time.sleep(1)
    r = site.run(site.box, [meshbridge_bin(), "peer", "add", "tablet", "--config", str(cfg),
                            "--endpoint", "198.51.100.1:51820"], check=False)
    assert r.returncode == 0, r.stderr
    time.sleep(0.5)
    assert web.json("PUT", "/api/peers/tablet", {"enabled": False})[0] == 200
    time.sleep(0.5)
    assert web.json("PUT", "/api/peers/tablet", {"enabled": True})[0] == 200
    time.sleep(0.5)
    code, d = web.json("POST", "/api/peers", {"name": "phone", "endpoint": "198.51.100.1:51820"})
    assert code == 200, d
    time.sleep(0.5)
    r = site.run(site.box, [meshbridge_bin(), "peer", "remove", "tablet", "--config", str(cfg)], check=False)
    assert r.returncode == 0, r.stderr
    time.sleep(0.5)
    # The laptop's own entry changes; the next change from the page applies it.
    text = cfg.read_text()
    edited = (text.replace('endpoint = "198.51.100.2:51820"', 'endpoint = "198.51.100.3:51820"', 1)
                  .replace('allowed_ips = ["10.77.0.2/32"]', 'allowed_ips = ["10.77.0.2/32", "10.77.8.0/24"]', 1)
                  .replace("persistent_keepalive = 25", "persistent_keepalive = 20", 1))
    assert edited != text
    cfg.write_text(edited)
    assert web.json("PUT", "/api/peers/phone", {"enabled": False})[0] == 200
    assert ping.wait(timeout=30) == 0, log.read_text()
    out = log.read_text()
    assert " 0% packet loss" in out, out
    laptop = _box_peer(site, "laptop")
    # (The endpoint is not checked: the box follows the laptop's replies, from either address.)
    assert "10.77.8.0/24" in laptop["allowed_ips"], laptop
    assert _peer_handshake(site) == hs, "the laptop's session was redone"
    assert laptop["online"] and laptop["last_handshake_s"] >= 5, laptop
    # Traffic now goes to the new endpoint, over the same session.
    assert site.ping(ns, "10.77.0.2", count=3)[0]
    assert _peer_handshake(site) == hs


def test_an_endpoint_name_is_resolved_off_the_loop_and_followed_once_it_resolves(site):
    """The laptop's endpoint is a host name that does not resolve yet (dynamic
    DNS not updated): the box starts anyway, keeps trying in the background,
    and sends its handshake as soon as the name has an address."""
    site.add_device("dev")
    # The box gets its own /etc/hosts (a private mount namespace, nothing on the host changes).
    hosts = site.tmp / "hosts"
    hosts.write_text("127.0.0.1 localhost\n")
    text = site.config_text().replace('endpoint = "198.51.100.2:51820"', 'endpoint = "laptop.mbtest.invalid:51820"')
    path = site.write_config(text)
    logf = open(site.box_log, "ab")
    site.box_proc = subprocess.Popen(
        ["ip", "netns", "exec", site.box, "unshare", "-m", "--propagation", "private", "sh", "-c",
         f"mount --bind {hosts} /etc/hosts && exec {meshbridge_bin()} --config {path} --log debug"],
        stdout=logf, stderr=subprocess.STDOUT, start_new_session=True, env=dict(os.environ, NO_COLOR="1"))
    wait_for(lambda: " up: bridge" in site.box_log_text() or site.box_proc.poll() is not None, what="box up")
    assert site.box_proc.poll() is None, site.box_log_text()[-3000:]
    cap = site.tmp / "dns.pcap"
    tcpd = site.spawn(site.box, ["tcpdump", "--immediate-mode", "-Z", "root", "-U", "-i", f"{site.p}u0", "-nn",
                                 "-w", str(cap), "udp and dst host 198.51.100.2"])
    time.sleep(3)

    def sent():
        return site.run(site.box, ["tcpdump", "-nn", "-r", str(cap)], check=False).stdout

    assert "198.51.100.2.51820" not in sent(), "nothing to send to before the name resolves"
    with open(hosts, "a") as f:  # the same file (inode): the bind mount sees it
        f.write("198.51.100.2 laptop.mbtest.invalid\n")
    # Unresolved names are retried every 10 s: the handshake initiation (148 bytes) follows.
    wait_for(lambda: re.search(r"198\.51\.100\.1\.51820 > 198\.51\.100\.2\.51820: UDP, length 148", sent()),
             timeout=25, what="a handshake to the resolved address")
    tcpd.send_signal(signal.SIGINT)
    tcpd.wait(timeout=5)
    site.start_peer()
    assert site.udhcpc("dev")[0].returncode == 0
    site.ping_until(site.devices["dev"][0], "10.77.0.2")
