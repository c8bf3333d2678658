"""WireGuard behaviour against a real peer (wireguard-go): endpoint learning
and roaming, persistent keepalive, unknown peers."""

import re
import signal
import time

from site_ns import sh


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
