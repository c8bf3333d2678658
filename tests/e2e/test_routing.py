"""Subnet router and exit node, both ways, with no leaks: real wireguard-go
peers, a home LAN and an "internet" host in namespaces, no NAT anywhere
but in the box, so the servers' logs show who really talked to them."""

import signal
import time

from site_ns import meshbridge_bin, sh, wait_for


def routing_config(site, **keys):
    lines = ["[routing]", f'uplink = "{site.uplink}"']
    for k, v in keys.items():
        if isinstance(v, bool):
            lines.append(f"{k} = {'true' if v else 'false'}")
        elif isinstance(v, list):
            lines.append(f"{k} = [{', '.join(repr(x).replace(chr(39), chr(34)) for x in v)}]")
        else:
            lines.append(f'{k} = "{v}"')
    return "\n".join(lines) + "\n"


def test_peer_reaches_home_lan_with_and_without_snat(site):
    site.add_device("dev")
    site.add_uplink()
    site.start_box(extra=routing_config(site, advertise_routes=["192.168.1.0/24"]))
    site.start_peer(allowed_ips="10.77.0.0/16,192.168.1.0/24", routes=("10.77.1.0/24", "192.168.1.0/24"))
    site.ping_until(site.peer, "10.77.0.1")
    page = wait_for(lambda: site.fetch(site.peer, "http://192.168.1.1:8000/"), what="LAN page through the box")
    assert page.startswith("home LAN host")
    assert site.clients_seen(site.lan_log)[-1] == "192.168.1.2"  # SNAT: the LAN sees the box
    # The peer reaches only the advertised prefix, not the internet behind it.
    site.run(site.peer, ["ip", "route", "add", "203.0.113.0/26", "dev", site.peer_if])
    site.run(site.peer, ["wg", "set", site.peer_if, "peer", site.box_pub, "allowed-ips", "0.0.0.0/0"])
    assert site.fetch(site.peer, "http://203.0.113.10:8000/", timeout=2) is None
    assert not site.clients_seen(site.inet_log) or "192.168.1.2" not in site.clients_seen(site.inet_log)

    # SNAT off: the LAN host needs a route back and sees the peer's own address.
    site.stop_box()
    site.run(site.lan, ["ip", "route", "add", "10.77.0.0/16", "via", "192.168.1.2"])
    site.start_box(extra=routing_config(site, advertise_routes=["192.168.1.0/24"], snat_subnet_routes=False))
    wait_for(lambda: site.fetch(site.peer, "http://192.168.1.1:8000/"), what="LAN page without SNAT")
    assert site.clients_seen(site.lan_log)[-1] == "10.77.0.2"


def test_exit_node_serves_internet_but_not_the_home_lan(site):
    site.add_device("dev")
    site.add_uplink()
    site.start_box(extra=routing_config(site, exit_node=True))
    # The peer sends everything to the box (AllowedIPs = 0.0.0.0/0); routes for the test hosts only,
    # so its own underlay keeps working.
    site.start_peer(allowed_ips="0.0.0.0/0", routes=("10.77.1.0/24", "203.0.113.0/26", "192.168.1.0/24"))
    site.ping_until(site.peer, "10.77.0.1")
    page = wait_for(lambda: site.fetch(site.peer, "http://203.0.113.10:8000/"), what="internet through the exit node")
    assert page.startswith("internet host")
    assert site.clients_seen(site.inet_log)[-1] == "192.168.1.2"  # the box's uplink address
    # The uplink has no IPv6 here: the box says the exit node is IPv4 only.
    assert "the exit node serves IPv4 only" in site.box_log_text()
    # Guest Wi-Fi default: the home LAN is off limits for exit traffic.
    assert site.fetch(site.peer, "http://192.168.1.1:8000/", timeout=2) is None
    assert site.clients_seen(site.lan_log) == []
    # With exit_node_allow_lan the LAN is reachable.
    site.stop_box()
    site.start_box(extra=routing_config(site, exit_node=True, exit_node_allow_lan=True))
    wait_for(lambda: site.fetch(site.peer, "http://192.168.1.1:8000/"), what="LAN with exit_node_allow_lan")


def test_exit_node_serves_ipv6_when_the_uplink_has_it(site):
    site.add_device("dev")
    site.add_uplink(ipv6=True)
    text = site.config_text(extra=routing_config(site, exit_node=True)).replace(
        'allowed_ips = ["10.77.0.2/32"]', 'allowed_ips = ["10.77.0.2/32", "fd77::2/128"]')
    site.start_box(config=site.write_config(text))
    assert "serves IPv6 (::/0) too" in site.box_log_text()
    site.start_peer(allowed_ips="0.0.0.0/0,::/0", routes=("10.77.1.0/24", "203.0.113.0/26", "2001:db8:3::/64"),
                    address6="fd77::2/64")
    site.ping_until(site.peer, "10.77.0.1")
    page = wait_for(lambda: site.fetch(site.peer, "http://[2001:db8:3::10]:8000/"), what="IPv6 internet via the exit node")
    assert page.startswith("internet host")
    assert site.clients_seen(site.inet6_log)[-1] == "2001:db8:1::2"  # masqueraded behind the uplink
    assert site.fetch(site.peer, "http://203.0.113.10:8000/") is not None  # IPv4 still works


def test_bridged_device_uses_remote_exit_node_with_kill_switch(site):
    """Box B's bridged device goes out through box A; stop A and nothing leaks out of B's uplink."""
    site.add_uplink()
    # Box A: the exit node (site.box). Box B: a second meshbridge with its own device and uplink.
    boxb = site._ns("boxb")
    devb, port_b, devb_if = site._ns("devb"), f"{site.p}bb", f"{site.p}bd"
    site.run(devb, ["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"])
    site._veth(port_b, boxb, devb_if, devb)
    b_up = f"{site.p}b0"
    site._veth(b_up, boxb, f"{site.p}b1", site.isp)
    site.run(boxb, ["ip", "addr", "add", "203.0.113.66/26", "dev", b_up])
    site.run(site.isp, ["ip", "addr", "add", "203.0.113.65/26", "dev", f"{site.p}b1"])
    site.run(boxb, ["ip", "route", "add", "default", "via", "203.0.113.65"])
    key_b = sh(["wg", "genkey"]).stdout.strip()
    pub_b = sh(["wg", "pubkey"], input=key_b).stdout.strip()

    a_cfg = site.config_text(extra=routing_config(site, exit_node=True)) + f"""
[[mesh.peers]]
name = "box-b"
public_key = "{pub_b}"
allowed_ips = ["10.77.0.3/32", "10.77.2.0/24"]
"""
    site.start_box(config=site.write_config(a_cfg))
    b_cfg = site.tmp / "boxb.toml"
    b_cfg.write_text(f"""state_dir = "{site.tmp / 'state-b'}"
[mesh]
private_key = "{key_b}"
listen_port = 51820
address = "10.77.0.3/24"
[[mesh.peers]]
name = "home-box"
public_key = "{site.box_pub}"
endpoint = "192.168.1.2:51820"
allowed_ips = ["10.77.0.1/32", "10.77.1.0/24"]
persistent_keepalive = 5
[bridge]
name = "br-mesh"
ports = ["{port_b}"]
[dhcp]
range = "10.77.2.100-10.77.2.200"
[routing]
uplink = "{b_up}"
use_exit_node = "home-box"
""")
    b_log = site.tmp / "boxb.log"
    site.procs.append(site.start_meshbridge(boxb, b_cfg, b_log))
    site.devices["devb"] = (devb, port_b, devb_if)
    assert site.udhcpc("devb")[0].returncode == 0
    assert site.device_ip("devb").startswith("10.77.2.")
    wait_for(lambda: site.fetch(devb, "http://203.0.113.10:8000/"), timeout=30, what="internet via box A")
    assert site.clients_seen(site.inet_log)[-1] == "192.168.1.2", "the internet sees box A's uplink"

    # Stop box A. The device's internet traffic stops, and none of it leaves box B's uplink.
    cap = site.tmp / "b-uplink.pcap"
    tcpd = site.spawn(boxb, ["tcpdump", "--immediate-mode", "-Z", "root", "-U", "-i", b_up, "-nn", "-w", str(cap),
                             "ip and not udp port 51820"])
    time.sleep(1)
    seen_before = len(site.clients_seen(site.inet_log))
    site.stop_box(signal.SIGTERM)
    for _ in range(3):
        assert site.fetch(devb, "http://203.0.113.10:8000/", timeout=2) is None
        assert not site.ping(devb, "203.0.113.10", timeout=1)[0]
    time.sleep(0.5)
    tcpd.send_signal(signal.SIGINT)
    tcpd.wait(timeout=5)
    leaked = site.run(boxb, ["tcpdump", "-nn", "-r", str(cap)]).stdout
    assert "203.0.113.10" not in leaked and "10.77.2." not in leaked, leaked
    assert len(site.clients_seen(site.inet_log)) == seen_before
    # Mesh-side things on box B are unaffected: its device still reaches box B itself.
    assert site.ping(devb, "10.77.2.1")[0]


def ruleset(site):
    return site.run(site.box, ["nft", "list", "ruleset"]).stdout


def test_stop_and_cleanup_leave_no_rules_and_keep_an_existing_ruleset(site):
    site.add_device("dev")
    site.add_uplink()
    # A ruleset that was there before (like a Debian nftables.conf or OpenWrt's fw4).
    existing = ("table inet filter {\n chain input { type filter hook input priority filter; policy accept;"
                " tcp dport 2222 drop; }\n chain forward { type filter hook forward priority filter; policy accept; }\n}\n")
    path = site.tmp / "existing.nft"
    path.write_text(existing)
    site.run(site.box, ["nft", "-f", str(path)])
    before = ruleset(site)
    fwd_before = site.run(site.box, ["sysctl", "-n", "net.ipv4.ip_forward"]).stdout.strip()
    assert fwd_before == "0"
    site.start_box(extra=routing_config(site, advertise_routes=["192.168.1.0/24"], exit_node=True))
    during = ruleset(site)
    assert "table inet meshbridge" in during and "tcp dport 2222 drop" in during
    assert site.run(site.box, ["sysctl", "-n", "net.ipv4.ip_forward"]).stdout.strip() == "1"
    assert "IPv4 forwarding was off" in site.box_log_text()
    # Normal stop: everything of ours is gone, the rest unchanged.
    site.stop_box(signal.SIGTERM)
    assert ruleset(site) == before
    assert site.run(site.box, ["sysctl", "-n", "net.ipv4.ip_forward"]).stdout.strip() == "0"
    # Crash, then --cleanup: the same.
    site.start_box(extra=routing_config(site, exit_node=True))
    site.stop_box(signal.SIGKILL)
    assert "table inet meshbridge" in ruleset(site)
    r = site.run(site.box, [meshbridge_bin(), "--cleanup", "--config", str(site.tmp / "box.toml")], check=False)
    assert r.returncode == 0, r.stderr
    assert ruleset(site) == before
    assert site.run(site.box, ["sysctl", "-n", "net.ipv4.ip_forward"]).stdout.strip() == "0"
    routes = site.run(site.box, ["ip", "route"]).stdout
    assert "mb-host0" not in routes
