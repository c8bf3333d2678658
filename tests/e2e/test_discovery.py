"""Printers and Chromecasts discoverable from the mesh: a real IPP Everywhere
printer (ippeveprinter) announced by a real avahi-daemon on the bridge; a
WireGuard peer browses the box's domain with unicast DNS-SD (dig), finds it,
and prints to it with ipptool."""

import os
import signal
import time

from site_ns import sh, wait_for


def dig_short(site, ns, *args):
    r = site.run(ns, ["dig", "+time=2", "+tries=1", "+short", "@10.77.0.1", *args], check=False, timeout=20)
    return [l for l in r.stdout.split("\n") if l.strip()]


def test_peer_finds_the_printer_by_dns_sd_and_prints_to_it(site):
    ns, _, ifc = site.add_device("printer", ipv6=True)
    site.start_box()
    site.start_peer()
    assert site.udhcpc("printer", hostname="printer")[0].returncode == 0
    ip = site.device_ip("printer")
    spool = site.tmp / "spool"
    spool.mkdir()
    printed = site.tmp / "printed"
    printed.mkdir()
    cmd = site.tmp / "printcmd.sh"
    cmd.write_text(f'#!/bin/sh\ncp "$1" {printed}/\nexit 0\n')
    cmd.chmod(0o755)
    site.run_avahi_device("printer", "printer", then=(
        f"exec ippeveprinter -p 8631 -d {spool} -c {cmd} -f application/pdf,image/jpeg,text/plain Office"))
    site.ping_until(site.peer, "10.77.0.1")
    # Domain enumeration points browsers at the domain (RFC 6763 §11).
    assert dig_short(site, site.peer, "b._dns-sd._udp.mesh.home.arpa", "PTR") == ["mesh.home.arpa."]
    # Browse: the printer appears (the box browses the bridge every minute and on each new lease;
    # avahi also announces on its own).
    inst = wait_for(lambda: dig_short(site, site.peer, "_ipp._tcp.mesh.home.arpa", "PTR"), timeout=40,
                    what="the printer in DNS-SD")
    assert inst == ["Office._ipp._tcp.mesh.home.arpa."], inst
    services = dig_short(site, site.peer, "_services._dns-sd._udp.mesh.home.arpa", "PTR")
    assert "_ipp._tcp.mesh.home.arpa." in services
    # AirPrint-style subtype browsing.
    assert dig_short(site, site.peer, "_universal._sub._ipp._tcp.mesh.home.arpa", "PTR") == inst or \
        dig_short(site, site.peer, "_print._sub._ipp._tcp.mesh.home.arpa", "PTR") == inst
    srv = dig_short(site, site.peer, "Office._ipp._tcp.mesh.home.arpa", "SRV")
    assert len(srv) == 1
    prio, weight, port, target = srv[0].split()
    assert port == "8631" and target == "printer.mesh.home.arpa.", srv
    txt = " ".join(dig_short(site, site.peer, "Office._ipp._tcp.mesh.home.arpa", "TXT"))
    assert "rp=ipp/print" in txt, txt
    assert dig_short(site, site.peer, target, "A") == [ip]
    # TTLs are capped: answers are a snapshot of the link.
    full = site.run(site.peer, ["dig", "+noall", "+answer", "@10.77.0.1", "_ipp._tcp.mesh.home.arpa", "PTR"]).stdout
    ttl = int(full.split()[1])
    assert ttl <= 10, full
    # Print a document to what was found.
    doc = site.tmp / "doc.txt"
    doc.write_text("Hello from the mesh\n")
    r = site.run(site.peer, ["ipptool", "-t", "-f", str(doc), "-d", "filetype=text/plain",
                             f"ipp://{target.rstrip('.')}:{port}/ipp/print".replace(target.rstrip("."), ip),
                             "print-job-and-wait.test"], check=False, timeout=90)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    wait_for(lambda: any(printed.iterdir()), timeout=30, what="the printer to record the job")


GOOGLECAST = """<?xml version="1.0" standalone='no'?>
<!DOCTYPE service-group SYSTEM "avahi-service.dtd">
<service-group>
  <name>Living Room TV</name>
  <service><type>_googlecast._tcp</type><port>8009</port>
    <txt-record>id=0123456789abcdef</txt-record><txt-record>fn=Living Room TV</txt-record>
  </service>
</service-group>
"""

SSH = """<?xml version="1.0" standalone='no'?>
<!DOCTYPE service-group SYSTEM "avahi-service.dtd">
<service-group>
  <name>tv shell</name>
  <service><type>_ssh._tcp</type><port>22</port></service>
</service-group>
"""


def test_static_cast_service_appears_and_goes_away_filtered_and_opt_out(site):
    ns, _, _ = site.add_device("tv")
    site.add_device("hidden")
    site.start_box(extra='[discovery]\nopt_out = ["hidden-tv"]\n')
    site.start_peer()
    assert site.udhcpc("tv", hostname="tv")[0].returncode == 0
    assert site.udhcpc("hidden", hostname="hidden-tv")[0].returncode == 0
    tv_services = site.tmp / "tv-services"
    tv_services.mkdir()
    (tv_services / "cast.service").write_text(GOOGLECAST)
    (tv_services / "ssh.service").write_text(SSH)
    hidden_services = site.tmp / "hidden-services"
    hidden_services.mkdir()
    (hidden_services / "cast.service").write_text(GOOGLECAST.replace("Living Room TV", "Bedroom TV"))
    site.run_avahi_device("tv", "tv", services_dir=tv_services, dbus=False)
    site.run_avahi_device("hidden", "hidden-tv", services_dir=hidden_services, dbus=False)
    site.ping_until(site.peer, "10.77.0.1")
    inst = wait_for(lambda: dig_short(site, site.peer, "_googlecast._tcp.mesh.home.arpa", "PTR"), timeout=40,
                    what="the cast service")
    assert inst == ["Living\\032Room\\032TV._googlecast._tcp.mesh.home.arpa."], inst  # the opted-out one is absent
    txt = " ".join(dig_short(site, site.peer, "Living\\032Room\\032TV._googlecast._tcp.mesh.home.arpa", "TXT"))
    assert "id=0123456789abcdef" in txt, txt
    # A type outside the allow list never appears.
    assert dig_short(site, site.peer, "_ssh._tcp.mesh.home.arpa", "PTR") == []
    assert "_ssh" not in " ".join(dig_short(site, site.peer, "_services._dns-sd._udp.mesh.home.arpa", "PTR"))
    # Goodbye: removing the service makes avahi withdraw it (TTL 0); it leaves DNS within the capped TTL.
    (tv_services / "cast.service").unlink()
    for pid in sh(["ip", "netns", "pids", ns]).stdout.split():
        try:
            if b"avahi-daemon" in open(f"/proc/{pid}/cmdline", "rb").read():
                os.kill(int(pid), signal.SIGHUP)
        except (FileNotFoundError, ProcessLookupError):
            pass
    t0 = time.monotonic()
    wait_for(lambda: dig_short(site, site.peer, "_googlecast._tcp.mesh.home.arpa", "PTR") == [], timeout=15,
             what="the cast service to go away")
    assert time.monotonic() - t0 <= 12
