"""Simulated site for `sim/run` (see there). Uses the same namespace harness
as the end-to-end tests, so what you see here is what the tests check."""

import argparse
import json
import signal
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "e2e"))
from site_ns import Site, meshbridge_bin, wait_for  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--once", action="store_true", help="run the checks, print the summary and tear down")
    ap.add_argument("--for", dest="duration", type=float, default=None, help="keep the site up this many seconds")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="meshbridge-sim-"))
    site = Site(tmp)
    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
    failures = []

    def check(name, ok, detail=""):
        print(f"  [{'ok' if ok else 'FAIL'}] {name}{(': ' + detail) if detail else ''}")
        if not ok:
            failures.append(name)

    try:
        print(f">> site prefix {site.p}: namespaces {site.box} (the box), {site.peer} (remote laptop)")
        printer_ns, _, printer_if = site.add_device("printer", ipv6=True)
        # The box's uplink: its default route points at the underlay (the "internet" side).
        site.run(site.box, ["ip", "route", "add", "default", "via", "198.51.100.2"])
        print(f">> starting meshbridge ({meshbridge_bin()}) in {site.box}")
        site.start_box()
        site.start_peer()
        print(">> the printer asks for an address (busybox udhcpc)")
        r, out = site.udhcpc("printer", hostname="office-printer")
        lines = [l for l in out.read_text().splitlines() if l.startswith("bound")]
        check("printer got a lease from the box", r.returncode == 0 and bool(lines), lines[-1] if lines else r.stderr)
        ip = site.device_ip("printer")
        www = tmp / "www"
        www.mkdir()
        (www / "index.html").write_text("<h1>Office printer</h1>\n")
        site.spawn(printer_ns, ["python3", "-m", "http.server", "80", "--bind", ip, "--directory", str(www)])
        try:
            site.ping_until(site.peer, ip, timeout=20)
            check(f"laptop pings the printer at {ip} over WireGuard", True)
        except AssertionError as e:
            check(f"laptop pings the printer at {ip}", False, str(e))
        try:
            page = wait_for(lambda: site.run(site.peer, ["curl", "-s", "--max-time", "3", f"http://{ip}/"],
                                             check=False).stdout, timeout=15, what="the printer's page")
            check("laptop fetches the printer's web page", "Office printer" in page, page.strip())
        except AssertionError as e:
            check("laptop fetches the printer's web page", False, str(e))
        check("printer reaches the laptop", site.ping(printer_ns, "10.77.0.2")[0])
        # A real IPP Everywhere printer announced over mDNS; the laptop finds it through the box's DNS.
        spool, printed = tmp / "spool", tmp / "printed"
        spool.mkdir()
        printed.mkdir()
        cmd = tmp / "printcmd.sh"
        cmd.write_text(f'#!/bin/sh\ncp "$1" {printed}/\nexit 0\n')
        cmd.chmod(0o755)
        site.run_avahi_device("printer", "office-printer", then=(
            f"exec ippeveprinter -p 8631 -d {spool} -c {cmd} -f application/pdf,text/plain 'Office Printer'"))
        dig = lambda *a: [l for l in site.run(site.peer, ["dig", "+short", "+time=2", "@10.77.0.1", *a],
                                              check=False).stdout.splitlines() if l.strip()]
        try:
            found = wait_for(lambda: dig("_ipp._tcp.mesh.home.arpa", "PTR"), timeout=40, what="DNS-SD")
            check("laptop finds the printer by DNS-SD (dig _ipp._tcp.mesh.home.arpa PTR)", True, found[0])
            srv = dig(found[0], "SRV")
            check("the printer's SRV record", bool(srv), srv[0] if srv else "")
            doc = tmp / "hello.txt"
            doc.write_text("Hello from the mesh!\n")
            r = site.run(site.peer, ["ipptool", "-t", "-f", str(doc), "-d", "filetype=text/plain",
                                     f"ipp://{ip}:8631/ipp/print", "print-job-and-wait.test"], check=False, timeout=90)
            check("laptop prints a page to it over the mesh (ipptool)", r.returncode == 0 and bool(list(printed.iterdir())))
        except AssertionError as e:
            check("laptop finds the printer by DNS-SD", False, str(e))
        # The box's own web page, from the laptop over the mesh: first start asks for the setup code.
        code = (site.state_dir / "setup-code").read_text().strip()
        r = site.run(site.peer, ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code} %{redirect_url}", "--max-time", "5",
                                 "http://10.77.0.1/"], check=False)
        check("laptop opens the box's web page (first start: set a password)", r.stdout.strip() == "303 http://10.77.0.1/setup",
              r.stdout.strip())
        status = site.run(site.box, [meshbridge_bin(), "status", "--config", str(tmp / "box.toml")], check=False).stdout
        check("laptop pings the box itself (10.77.0.1)", site.ping(site.peer, "10.77.0.1")[0])
        wg = site.run(site.peer, ["wg", "show", site.peer_if], check=False).stdout
        leases = json.loads((site.state_dir / "leases.json").read_text())

        print("\n== What to look at ==")
        print("meshbridge status (run in the box):")
        print("   " + status.strip().replace("\n", "\n   "))
        print(f"meshbridge log:         {site.box_log}")
        print(f"leases (state_dir):     {site.state_dir / 'leases.json'}")
        for l in leases.get("leases", []):
            print(f"   {l.get('ip')}  {l.get('hostname')}  {l.get('mac')}")
        print(f"the laptop's WireGuard view (wg show {site.peer_if}):")
        print("   " + wg.strip().replace("\n", "\n   "))
        print(f"the box's web page:     http://10.77.0.1/ from the laptop, http://10.77.1.1/ from the printer's side")
        print(f"   setup code {code} (in {site.state_dir / 'setup-code'}); a browser in the laptop's namespace:")
        print(f"   ip netns exec {site.peer} chromium --headless=new --no-sandbox --screenshot=/tmp/box.png http://10.77.0.1/")
        print("Try it yourself:")
        print(f"   ip netns exec {site.peer} ping {ip}")
        print(f"   ip netns exec {site.peer} curl http://{ip}/")
        print(f"   ip netns exec {site.peer} dig @10.77.0.1 _ipp._tcp.mesh.home.arpa PTR")
        print(f"   ip netns exec {site.box} {meshbridge_bin()} status --config {tmp / 'box.toml'}")
        print(f"   ip netns exec {site.box} ip -d link show br-mesh")
        print(f"   ip netns exec {site.box} tcpdump -ni {site.p}u0      # only WireGuard UDP on the underlay")
        print(f"   tail -f {site.box_log}")
        if failures:
            print(f"\n{len(failures)} check(s) FAILED: {', '.join(failures)}")
        else:
            print("\nAll checks passed.")
        if not args.once:
            deadline = time.monotonic() + args.duration if args.duration else None
            print("The site stays up: Ctrl-C to tear it down." if not deadline else
                  f"The site stays up for {args.duration:.0f} s.")
            try:
                while not stop["now"] and (deadline is None or time.monotonic() < deadline):
                    time.sleep(0.5)
            except KeyboardInterrupt:
                pass
    finally:
        print(">> tearing down the site")
        site.close()
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
