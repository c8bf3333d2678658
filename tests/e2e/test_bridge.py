"""The foundation, end to end: a bridged device gets a mesh address from the
box and a real WireGuard peer (wireguard-go) reaches it, and back."""

import re
import signal
import time

from site_ns import wait_for


def bound_lines(out):
    return [l for l in out.read_text().splitlines() if l.startswith("bound") or l.startswith("renew")]


def test_udhcpc_gets_address_in_range_with_router_dns_domain_mtu(site):
    site.add_device("dev")
    site.start_box()
    r, out = site.udhcpc("dev", hostname="printer")
    assert r.returncode == 0, r.stdout + r.stderr
    line = bound_lines(out)[-1]
    ip = re.search(r"ip=(\S+)", line).group(1)
    assert 100 <= int(ip.split(".")[-1]) <= 200 and ip.startswith("10.77.1."), line
    assert "mask=24" in line and "router=10.77.1.1" in line and "dns=10.77.1.1" in line, line
    assert "domain=mesh.home.arpa" in line and "mtu=1420" in line and "lease=3600" in line, line
    # The lease is persisted with the client's hostname.
    leases = (site.state_dir / "leases.json").read_text()
    assert ip in leases and "printer" in leases


def test_dhcp_disabled_serves_no_lease_and_keeps_the_old_ones(site):
    """`dhcp.enabled = false`: a real udhcpc gets nothing from the box, and the
    leases handed out before are kept for when it is turned back on."""
    site.add_device("dev")
    site.start_box()
    r, out = site.udhcpc("dev", hostname="printer")
    assert r.returncode == 0, r.stdout + r.stderr
    ip = re.search(r"ip=(\S+)", bound_lines(out)[-1]).group(1)
    site.stop_box()
    site.start_box(extra_dhcp="enabled = false")
    before = len(bound_lines(out))
    r, out = site.udhcpc("dev", hostname="printer", extra=["-t", "3", "-T", "1"])
    assert r.returncode != 0, "udhcpc got a lease from a box with dhcp.enabled = false: " + r.stdout
    assert len(bound_lines(out)) == before
    assert ip in (site.state_dir / "leases.json").read_text()
    # Turned back on, the same device gets its old address again.
    site.stop_box()
    site.start_box()
    r, out = site.udhcpc("dev", hostname="printer")
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"ip={ip} " in bound_lines(out)[-1], bound_lines(out)[-1]


def test_dhclient_gets_address_in_range_with_router_dns_domain_mtu(site):
    site.add_device("dev")
    site.start_box()
    r, out = site.dhclient("dev")
    assert r.returncode == 0, r.stdout + r.stderr
    text = out.read_text()
    assert "reason=BOUND" in text, text
    assert re.search(r"new_ip_address=10\.77\.1\.(1\d\d|200)\b", text), text
    assert "new_routers=10.77.1.1" in text and "new_domain_name_servers=10.77.1.1" in text, text
    assert "new_domain_name=mesh.home.arpa" in text and "new_subnet_mask=255.255.255.0" in text, text
    assert "new_interface_mtu=1420" in text, text


def test_dhcpcd_arp_probe_is_not_answered_so_lease_is_not_declined(site):
    """RFC 5227: dhcpcd probes the offered address; answering would make it decline."""
    ns, _, ifc = site.add_device("dev")
    site.start_box()
    conf = site.tmp / "dhcpcd.conf"
    conf.write_text("option interface_mtu, domain_name_servers, domain_name\narp\nnoipv6rs\nipv4only\n")
    script = site.tmp / "dhcpcd.sh"
    script.write_text(f'#!/bin/sh\necho "$reason $new_ip_address" >> {site.tmp}/dhcpcd.out\n')
    script.chmod(0o755)
    site.spawn(ns, ["sh", "-c", f"mount -t tmpfs x /var/lib/dhcpcd 2>/dev/null; mount -t tmpfs x /run && "
                                f"exec dhcpcd -B -4 -f {conf} -c {script} {ifc}"], log=site.tmp / "dhcpcd.log")
    out = site.tmp / "dhcpcd.out"
    wait_for(lambda: out.exists() and "BOUND 10.77.1." in out.read_text(), timeout=40, what="dhcpcd to bind")
    assert "Declined" not in site.box_log_text() and "declined" not in site.box_log_text()


def test_peer_reaches_device_and_device_reaches_peer_all_encrypted(site):
    ns, _, _ = site.add_device("dev")
    site.start_box()
    site.start_peer()
    r, _ = site.udhcpc("dev")
    assert r.returncode == 0
    ip = site.device_ip("dev")
    (site.tmp / "www").mkdir()
    (site.tmp / "www" / "index.html").write_text("hello from the printer SECRET-MARKER-42\n")
    site.spawn(ns, ["python3", "-m", "http.server", "8080", "--bind", ip, "--directory", str(site.tmp / "www")])
    # Capture everything on the box's underlay while traffic flows.
    cap = site.tmp / "underlay.pcap"
    tcpd = site.spawn(site.box, ["tcpdump", "--immediate-mode", "-Z", "root", "-U", "-i", f"{site.p}u0", "-nn", "-w", str(cap), "ip"])
    time.sleep(1)
    site.ping_until(site.peer, ip)
    wait_for(lambda: site.run(site.peer, ["curl", "-s", "--max-time", "3", f"http://{ip}:8080/index.html"],
                              check=False).stdout.startswith("hello from the printer"), what="HTTP from peer")
    ok, text = site.ping(ns, "10.77.0.2", count=2)
    assert ok, text
    # The box's own mesh address answers too (host side through the TUN).
    assert site.ping(site.peer, "10.77.0.1")[0]
    time.sleep(0.5)
    tcpd.send_signal(signal.SIGINT)
    tcpd.wait(timeout=5)
    raw = cap.read_bytes()
    assert len(raw) > 1000
    assert b"SECRET-MARKER-42" not in raw and b"hello from the printer" not in raw
    summary = site.run(site.box, ["tcpdump", "-nn", "-r", str(cap)]).stdout
    lines = [l for l in summary.splitlines() if l.strip()]
    assert lines
    # Every IPv4 packet on the underlay is WireGuard UDP: no ICMP, no TCP in clear.
    for l in lines:
        assert "UDP" in l and (".51820 " in l or ".51820:" in l), l


def test_restart_and_sigkill_device_renews_and_keeps_address(site):
    ns, port, ifc = site.add_device("dev")
    site.start_box()
    site.start_peer()
    p, out = site.udhcpc("dev", once=False)
    wait_for(lambda: out.exists() and bound_lines(out), what="first lease")
    ip = site.device_ip("dev")
    for how in (signal.SIGTERM, signal.SIGKILL):
        site.stop_box(how)
        if how == signal.SIGKILL:
            # The bridge was left behind by the crash; the new daemon adopts it.
            assert "br-mesh" in site.run(site.box, ["ip", "link"]).stdout
        site.start_box()
        before = len(bound_lines(out))
        p.send_signal(signal.SIGUSR1)  # busybox udhcpc: renew now
        wait_for(lambda: len(bound_lines(out)) > before, what="renewal")
        assert f"ip={ip} " in bound_lines(out)[-1], bound_lines(out)[-1]
        site.ping_until(site.peer, ip)


def test_two_devices_get_different_addresses_and_reach_each_other_locally(site):
    a, _, _ = site.add_device("dva")
    b, _, _ = site.add_device("dvb")
    site.start_box()
    assert site.udhcpc("dva", hostname="tv")[0].returncode == 0
    assert site.udhcpc("dvb", hostname="console")[0].returncode == 0
    ia, ib = site.device_ip("dva"), site.device_ip("dvb")
    assert ia and ib and ia != ib
    ok, text = site.ping(a, ib, count=2)
    assert ok, text
    ok, text = site.ping(b, ia, count=1)
    assert ok, text


def test_forged_source_address_gets_nothing_through(site):
    ns, _, ifc = site.add_device("dev")
    site.start_box()
    site.start_peer()
    assert site.udhcpc("dev")[0].returncode == 0
    site.ping_until(ns, "10.77.0.2")
    forged = "10.77.1.150"
    site.run(ns, ["ip", "addr", "add", f"{forged}/32", "dev", ifc])
    cap = site.tmp / "peer.pcap"
    tcpd = site.spawn(site.peer, ["tcpdump", "--immediate-mode", "-Z", "root", "-U", "-i", site.peer_if, "-nn", "-w", str(cap), "icmp"], log=site.tmp / "tcpdump.log")
    time.sleep(1)
    ok, _ = site.ping(ns, "10.77.0.2", count=3, timeout=1, extra=["-I", forged])
    assert not ok
    # A legitimate ping right after still works: the path is up, only the forgery died.
    assert site.ping(ns, "10.77.0.2")[0]
    time.sleep(0.5)
    tcpd.send_signal(signal.SIGINT)
    tcpd.wait(timeout=5)
    seen = site.run(site.peer, ["tcpdump", "-nn", "-r", str(cap)]).stdout
    assert forged not in seen, seen
    assert "10.77.1.1" in seen  # the legitimate ping was captured, so the capture worked


def test_large_packets_from_a_1500_byte_device(site):
    """Devices ignore the DHCP MTU: DF packets get ICMP frag-needed, others are fragmented, SYNs clamped."""
    ns, _, ifc = site.add_device("dev")
    site.start_box()
    site.start_peer()
    assert site.udhcpc("dev")[0].returncode == 0
    ip = site.device_ip("dev")
    site.run(ns, ["ip", "link", "set", ifc, "mtu", "1500"])
    site.ping_until(ns, "10.77.0.2")
    ok, text = site.ping(ns, "10.77.0.2", extra=["-s", "1472", "-M", "do"])
    assert not ok and "mtu = 1420" in text, text
    ok, text = site.ping(ns, "10.77.0.2", extra=["-s", "1472", "-M", "dont"])
    assert ok, text
    # A bulk TCP transfer from the device with MSS clamped on the way.
    blob = site.tmp / "www"
    blob.mkdir()
    (blob / "big.bin").write_bytes(bytes(range(256)) * 8192)
    site.spawn(ns, ["python3", "-m", "http.server", "8080", "--bind", ip, "--directory", str(blob)])
    cap = site.tmp / "syn.pcap"
    tcpd = site.spawn(site.peer, ["tcpdump", "--immediate-mode", "-Z", "root", "-U", "-i", site.peer_if, "-nn", "-w", str(cap),
                                  "tcp[tcpflags] & tcp-syn != 0"])
    time.sleep(1)
    got = wait_for(lambda: site.run(site.peer, ["sh", "-c", f"curl -s --max-time 10 http://{ip}:8080/big.bin | wc -c"],
                                    check=False).stdout.strip() == str(256 * 8192), what="2 MiB download")
    assert got
    time.sleep(0.5)
    tcpd.send_signal(signal.SIGINT)
    tcpd.wait(timeout=5)
    syns = site.run(site.peer, ["tcpdump", "-nn", "-r", str(cap)]).stdout
    mss = [int(m) for m in re.findall(r"mss (\d+)", syns)]
    assert mss and max(mss) <= 1380, syns


def test_another_dhcp_server_on_the_bridge_stops_our_offers_until_it_is_gone(site):
    """A box must never fight the home router's DHCP server."""
    rogue, _, rogue_if = site.add_device("rogue")
    site.run(rogue, ["ip", "addr", "add", "192.168.50.1/24", "dev", rogue_if])
    dnsmasq = site.spawn(rogue, ["dnsmasq", "--no-daemon", "--port=0", "--bind-interfaces", f"--interface={rogue_if}",
                                 "--dhcp-range=192.168.50.100,192.168.50.150,1h", "--dhcp-authoritative",
                                 f"--dhcp-leasefile={site.tmp}/rogue.leases", f"--pid-file={site.tmp}/rogue.pid",
                                 "--log-dhcp"], log=site.tmp / "dnsmasq.log")
    site.add_device("dev")
    site.start_box(extra_dhcp='probe_interval = "5s"')
    wait_for(lambda: "another DHCP server (192.168.50.1)" in site.box_log_text(), timeout=15,
             what="the box to notice the other server")
    r, out = site.udhcpc("dev")
    assert r.returncode == 0
    line = bound_lines(out)[-1]
    assert "serverid=192.168.50.1" in line and "ip=192.168.50." in line, line
    # Take the other server away: meshbridge serves again by itself.
    dnsmasq.terminate()
    dnsmasq.wait(timeout=5)
    wait_for(lambda: "serving addresses again" in site.box_log_text(), timeout=40, what="the box to resume")
    r, out = site.udhcpc("dev")
    assert r.returncode == 0
    line = bound_lines(out)[-1]
    assert "serverid=10.77.1.1" in line and "ip=10.77.1." in line, line


def test_arp_only_for_routed_addresses_never_for_probes_and_gratuitous_on_start(site):
    ns, _, ifc = site.add_device("dev")
    cap = site.tmp / "arp.pcap"
    tcpd = site.spawn(ns, ["tcpdump", "--immediate-mode", "-Z", "root", "-U", "-i", ifc, "-nn", "-w", str(cap), "arp"])
    time.sleep(1)
    site.start_box()
    time.sleep(3)  # RFC 5227 announcements: two, 2 s apart
    tcpd.send_signal(signal.SIGINT)
    tcpd.wait(timeout=5)
    seen = site.run(ns, ["tcpdump", "-nn", "-r", str(cap)]).stdout
    assert len(re.findall(r"who-has 10\.77\.1\.1 .*tell 10\.77\.1\.1", seen)) >= 2, seen
    assert site.udhcpc("dev")[0].returncode == 0
    ip = site.device_ip("dev")

    def arping(target, *extra):
        r = site.run(ns, ["arping", "-c", "2", "-w", "3", "-I", ifc, *extra, target], check=False, timeout=10)
        return r.returncode, r.stdout

    rc, out = arping("10.77.1.1")
    assert rc == 0 and "02:6d:62" in out.lower(), out  # the box's gateway
    rc, out = arping("10.77.0.2")
    assert rc == 0, out  # a mesh destination the box routes
    rc, out = arping("10.77.1.150")
    assert rc != 0, out  # in the pool, not leased: never answered
    rc, out = arping("192.0.2.55")
    assert rc != 0, out  # not routed: never answered
    # Duplicate address detection (sender 0.0.0.0) for the device's own lease: silence.
    rc, out = arping(ip, "-D")
    assert rc == 0, out  # arping -D exits 0 when nobody answered


def test_dhcp_is_never_served_outside_the_bridge(site):
    site.add_device("dev")
    site.start_box()
    assert site.udhcpc("dev")[0].returncode == 0  # the bridge side is served
    # The box's underlay (uplink) side: a client there gets nothing.
    r = site.run(site.peer, ["busybox", "udhcpc", "-f", "-q", "-n", "-t", "3", "-T", "1", "-i", f"{site.p}u1",
                             "-s", "/bin/true"], check=False, timeout=30)
    assert r.returncode != 0, r.stdout + r.stderr
    assert "lease of" not in (r.stdout + r.stderr)


def test_coalesced_lease_writes_still_reach_disk_on_stop(site):
    """dhcp.persist_interval spares a router's flash; a clean stop still writes everything."""
    site.add_device("dva")
    site.add_device("dvb")
    site.start_box(extra_dhcp='persist_interval = "1h"')
    assert site.udhcpc("dva", hostname="first")[0].returncode == 0
    leases = site.state_dir / "leases.json"
    wait_for(lambda: leases.exists() and "first" in leases.read_text(), what="the first write")
    assert site.udhcpc("dvb", hostname="second")[0].returncode == 0
    time.sleep(3)
    assert "second" not in leases.read_text(), "the second change waits for the interval"
    site.stop_box()
    assert "second" in leases.read_text() and "first" in leases.read_text()
