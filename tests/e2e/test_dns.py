"""The box's DNS server, asked with dig: bridged devices by DHCP hostname,
peers by name, reverse lookups, forwarding to the uplink's resolver, and no
open resolver toward the uplink."""

from site_ns import wait_for


def dig(site, ns, server, *args):
    r = site.run(ns, ["dig", "+time=2", "+tries=2", f"@{server}", *args], check=False, timeout=20)
    return r.stdout


def short(site, ns, server, *args):
    return dig(site, ns, server, "+short", *args).split()


def test_devices_and_peers_resolve_by_name_and_address(site):
    dev, _, _ = site.add_device("dev")
    site.start_box()
    site.start_peer()
    assert site.udhcpc("dev", hostname="Office-Printer")[0].returncode == 0
    ip = site.device_ip("dev")
    assert short(site, dev, "10.77.1.1", "office-printer.mesh.home.arpa", "A") == [ip]
    assert short(site, dev, "10.77.1.1", "-x", ip) == ["office-printer.mesh.home.arpa."]
    assert short(site, dev, "10.77.1.1", "laptop.mesh.home.arpa", "A") == ["10.77.0.2"]
    assert sorted(short(site, dev, "10.77.1.1", "meshbridge.mesh.home.arpa", "A")) == ["10.77.0.1", "10.77.1.1"]
    assert "status: NXDOMAIN" in dig(site, dev, "10.77.1.1", "nobody.mesh.home.arpa", "A")
    # Unknown addresses in the box's own ranges are never asked upstream.
    assert "status: NXDOMAIN" in dig(site, dev, "10.77.1.1", "-x", "10.77.1.199")
    # A peer asks through the tunnel, at the box's mesh address.
    site.ping_until(site.peer, "10.77.0.1")
    assert short(site, site.peer, "10.77.0.1", "office-printer.mesh.home.arpa", "A") == [ip]
    # Over TCP too.
    assert short(site, site.peer, "10.77.0.1", "+tcp", "laptop.mesh.home.arpa", "A") == ["10.77.0.2"]


def test_other_names_are_forwarded_upstream_and_uplink_clients_are_refused(site):
    dev, _, _ = site.add_device("dev")
    site.add_uplink()
    # The home router's DNS: dnsmasq on 192.168.1.1 knows one "internet" name.
    site.spawn(site.lan, ["dnsmasq", "--no-daemon", "--no-resolv", "--no-hosts", "--listen-address=192.168.1.1",
                          "--bind-interfaces", "--address=/internet.example/203.0.113.10",
                          f"--pid-file={site.tmp}/lan-dns.pid"], log=site.tmp / "lan-dns.log")
    site.start_box(extra=f'[routing]\nuplink = "{site.uplink}"\n[dns]\nupstream = ["192.168.1.1"]\n')
    assert site.udhcpc("dev")[0].returncode == 0
    got = wait_for(lambda: short(site, dev, "10.77.1.1", "internet.example", "A"), what="forwarded answer")
    assert got == ["203.0.113.10"]
    # The upstream's own answer code comes back as it is (dnsmasq without upstreams refuses).
    assert "status: REFUSED" in dig(site, dev, "10.77.1.1", "nothing.internet-nope.example", "A")
    # A host on the uplink side that routes to the box gets nothing: no open resolver
    # (the box's nftables guard drops the uplink's packets to the bridge address;
    # SECURITY.md item 10).
    site.run(site.lan, ["ip", "route", "add", "10.77.1.0/24", "via", "192.168.1.2"])
    out = dig(site, site.lan, "10.77.1.1", "internet.example", "A")
    assert "no servers could be reached" in out and "203.0.113.10" not in out, out


def test_system_resolvers_learned_after_start_are_used(site):
    """Without dns.upstream the box forwards to the system's resolvers; on a Pi the
    uplink's DHCP often writes them only after meshbridge started."""
    import shutil
    from pathlib import Path
    dev, _, _ = site.add_device("dev")
    site.add_uplink()
    site.spawn(site.lan, ["dnsmasq", "--no-daemon", "--no-resolv", "--no-hosts", "--listen-address=192.168.1.1",
                          "--bind-interfaces", "--address=/internet.example/203.0.113.10",
                          f"--pid-file={site.tmp}/lan-dns.pid"], log=site.tmp / "lan-dns.log")
    # `ip netns exec` shows /etc/netns/<ns>/resolv.conf as the box's /etc/resolv.conf.
    etc = Path("/etc/netns") / site.box
    etc.mkdir(parents=True, exist_ok=True)
    conf = etc / "resolv.conf"
    conf.write_text("# no resolver yet\n")
    try:
        site.start_box(extra=f'[routing]\nuplink = "{site.uplink}"\n')
        assert "no upstream resolver yet" in site.box_log_text()
        assert site.udhcpc("dev")[0].returncode == 0
        assert "status: SERVFAIL" in dig(site, dev, "10.77.1.1", "internet.example", "A")
        with open(conf, "w") as f:  # in place: the bind mount keeps the same file
            f.write("nameserver 192.168.1.1\n")
        got = wait_for(lambda: short(site, dev, "10.77.1.1", "internet.example", "A"), timeout=30,
                       what="the late resolver to be used")
        assert got == ["203.0.113.10"]
        assert "DNS: forwarding to 192.168.1.1:53" in site.box_log_text()
    finally:
        shutil.rmtree(etc, ignore_errors=True)
