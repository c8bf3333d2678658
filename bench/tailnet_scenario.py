"""bench/run's "tailnet" scenario (issue #12): a laptop running the real
`tailscaled` reaches a bridged device through the box over a direct path,
with the box as meshbridge (joined to the tailnet, its bridge subnet
advertised and approved) and, as the anchor a user would pick instead, the
box as a `tailscaled` subnet router in front of a kernel bridge.

    [hs]   bridge 10.99.0.1/24: headscale (plain-HTTP control), no DERP server
    [lap]  10.99.0.20: tailscaled --accept-routes, iperf3 -s on its tailnet address
    [box]  10.99.0.10: meshbridge [tailnet], bridge 10.77.1.0/24 (device by DHCP)
    [abox] 10.99.0.30: tailscaled --advertise-routes=10.78.1.0/24, kernel bridge
           10.78.1.1/24, ip_forward=1 (device static 10.78.1.100)

Both boxes are in the same tailnet at once with different subnets, so runs
alternate between them without tearing anything down. The namespace
harness is the one the end-to-end tests use (tests/e2e/test_tailnet_*.py);
the Go programs are the pinned ones `tests/gotools/build` builds."""

import json
import os
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "e2e"))

from test_tailnet_control import CONTROL, NEEDED, Tailnet, gotools_dir  # noqa: E402
from site_ns import UDHCPC_SCRIPT, sh, wait_for  # noqa: E402

BOX_PORT = 41641


def tools():
    """The pinned Go programs, built (or found in the cache) first."""
    d = gotools_dir()
    if d is None or any(not os.access(d / b, os.X_OK) for b in NEEDED):
        sh([str(REPO / "tests" / "gotools" / "build")], timeout=3600)
        d = gotools_dir()
    return d


class TailnetBed(Tailnet):
    """Headscale, the laptop, both boxes and their devices."""

    def __init__(self, tmp, tools_dir):
        Path(tmp).mkdir(parents=True, exist_ok=True)
        try:
            self._setup(tmp, tools_dir)
        except BaseException:
            self.close()  # namespaces and processes made so far
            raise

    def _setup(self, tmp, tools_dir):
        # The base class appends to these as it goes: a failure half-way
        # still leaves close() a list of what to remove.
        self.procs, self.namespaces = [], []
        super().__init__(tmp, tools_dir)
        self.abox = self._ns("abox")
        a, b = f"{self.p}a0", f"{self.p}a1"
        sh(["ip", "link", "add", a, "type", "veth", "peer", "name", b])
        sh(["ip", "link", "set", a, "netns", self.abox])
        sh(["ip", "link", "set", b, "netns", self.hs])
        sh(["ip", "-n", self.hs, "link", "set", b, "master", f"{self.p}br"])
        sh(["ip", "-n", self.hs, "link", "set", b, "up"])
        sh(["ip", "-n", self.abox, "addr", "add", "10.99.0.30/24", "dev", a])
        sh(["ip", "-n", self.abox, "link", "set", a, "up"])
        self.key = self.auth_key()
        self.lap_cli = self.tailscaled_in(self.lap, "blaptop", ["--accept-routes"])
        wait_for(lambda: self.status(self.lap, self.lap_cli).get("BackendState") == "Running", timeout=60,
                 what="the laptop's tailscaled Running")
        self.lap_ip = next(a for a in self.status(self.lap, self.lap_cli)["Self"]["TailscaleIPs"] if "." in a)
        self.spawn(self.lap, ["iperf3", "-s", "-p", "5201", "-B", self.lap_ip], self.tmp / "iperf3-server.log")

    def tailscaled_in(self, ns, name, up_args):
        d = self.tmp / f"ts-{name}"
        d.mkdir()
        sock = d / "tailscaled.sock"
        env = {"TS_LOGS_DIR": str(d), "TS_NO_LOGS_NO_SUPPORT": "true", "TS_DISABLE_PORTMAPPER": "1"}
        proc = self.spawn(ns, [str(self.tools / "tailscaled"), f"--tun={self.p}{name[:3]}", f"--statedir={d}",
                               f"--state={d}/tailscaled.state", f"--socket={sock}", "--port=41641"],
                          self.tmp / f"tailscaled-{name}.log", env=env)
        wait_for(lambda: sock.exists(), timeout=30, what=f"{name}'s tailscaled socket")
        cli = [str(self.tools / "tailscale"), f"--socket={sock}"]
        self.run(ns, cli + ["up", f"--login-server={CONTROL}", f"--auth-key={self.key}", f"--hostname={name}",
                            "--accept-dns=false", "--netfilter-mode=off", *up_args], timeout=90)
        cli_proc = (cli, proc)
        return cli_proc

    def status(self, ns, cli_proc):
        return json.loads(self.run(ns, cli_proc[0] + ["status", "--json"]).stdout)

    def node(self, name):
        return wait_for(lambda: [n for n in self.nodes() if n.get("given_name") == name or n.get("name") == name],
                        timeout=60, what=f"{name} on headscale")[0]

    def approve(self, name, route):
        node = self.node(name)
        self.headscale("nodes", "approve-routes", "-i", str(node["id"]), "-r", route)

        def primary():
            for p in (self.status(self.lap, self.lap_cli).get("Peer") or {}).values():
                if p.get("HostName") == name and route in (p.get("PrimaryRoutes") or []):
                    return p
            return None
        wait_for(primary, timeout=60, what=f"{route} via {name} on the laptop")

    def direct(self, name):
        """The laptop's path to `name` is a direct UDP address, not DERP."""
        for p in (self.status(self.lap, self.lap_cli).get("Peer") or {}).values():
            if p.get("HostName") == name:
                return p.get("CurAddr") or None
        return None


class TailnetSite:
    """What bench/run's measure() needs: bed, label, box/peer namespaces,
    the box's process, the iperf3 client namespace and server address."""

    def __init__(self, bed, label, box_ns, dev_tag):
        self.bed, self.label, self.box = bed, label, box_ns
        self.peer = bed.lap
        self.dev = bed._ns(f"d{dev_tag}")
        self.port, self.dev_if = f"{bed.p}{dev_tag}p", f"{bed.p}{dev_tag}d"
        sh(["ip", "link", "add", self.port, "type", "veth", "peer", "name", self.dev_if])
        sh(["ip", "link", "set", self.port, "netns", self.box])
        sh(["ip", "link", "set", self.dev_if, "netns", self.dev])
        sh(["ip", "-n", self.box, "link", "set", self.port, "up"])
        sh(["ip", "-n", self.dev, "link", "set", self.dev_if, "up"])
        bed.run(self.dev, ["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"])
        self.client, self.server = self.dev, bed.lap_ip
        self.box_proc = None
        self.log = bed.tmp / f"{label}.log"

    def reachable(self, timeout=60):
        wait_for(lambda: self.bed.run(self.dev, ["ping", "-n", "-c", "1", "-W", "1", self.server],
                                      check=False).returncode == 0,
                 timeout=timeout, interval=0.3, what=f"{self.label}: device -> laptop ping")
        wait_for(lambda: self.bed.run(self.peer, ["ping", "-n", "-c", "1", "-W", "1", self.dev_ip],
                                      check=False).returncode == 0,
                 timeout=timeout, interval=0.3, what=f"{self.label}: laptop -> device ping")


class MeshbridgeTailnetSite(TailnetSite):
    def start(self, binary):
        b = self.bed
        box_key = sh(["wg", "genkey"]).stdout.strip()
        keyfile = b.tmp / "tailnet-authkey"
        keyfile.write_text(b.key + "\n")
        keyfile.chmod(0o600)
        (b.tmp / "board").mkdir(exist_ok=True)
        conf = b.tmp / "box.toml"
        conf.write_text(f"""state_dir = "{b.tmp / 'state'}"
[mesh]
private_key = "{box_key}"
listen_port = {BOX_PORT}
address = "10.77.0.1/24"
[bridge]
name = "br-mesh"
ports = ["{self.port}"]
[dhcp]
range = "10.77.1.100-10.77.1.200"
lease_time = "1h"
[web]
enabled = false
[board]
root = "{b.tmp / 'board'}"
[tailnet]
control_url = "{CONTROL}"
auth_key_file = "{keyfile}"
hostname = "bbox"
devices = "routes"
""")
        self.box_proc = b.spawn(self.box, [str(binary), "--config", str(conf), "--log", "info"], self.log,
                                env={"NO_COLOR": "1"})
        wait_for(lambda: "tailnet: up as" in self.log.read_text(errors="replace") or self.box_proc.poll() is not None,
                 timeout=90, what="meshbridge to join the tailnet")
        if self.box_proc.poll() is not None:
            raise RuntimeError("meshbridge exited:\n" + self.log.read_text(errors="replace")[-3000:])
        b.approve("bbox", "10.77.1.0/24")
        script = b.tmp / "udhcpc.sh"
        script.write_text(UDHCPC_SCRIPT.format(out=b.tmp / "udhcpc.out"))
        script.chmod(0o755)
        r = b.run(self.dev, ["busybox", "udhcpc", "-f", "-q", "-n", "-t", "10", "-T", "2", "-i", self.dev_if,
                             "-s", str(script), "-x", "hostname:bench"], check=False, timeout=60)
        m = re.search(r"inet (\d+\.\d+\.\d+\.\d+)/",
                      b.run(self.dev, ["ip", "-4", "-o", "addr", "show", "dev", self.dev_if]).stdout)
        if r.returncode != 0 or not m:
            raise RuntimeError(f"udhcpc got no lease from meshbridge:\n{r.stdout}{r.stderr}")
        self.dev_ip = m.group(1)
        self.reachable()
        path = wait_for(lambda: b.direct("bbox"), timeout=60, what="a direct path laptop <-> meshbridge")
        return path


class TailscaledTailnetSite(TailnetSite):
    def start(self):
        b = self.bed
        br = f"{b.p}abr"
        for cmd in (["ip", "link", "add", br, "type", "bridge"], ["ip", "link", "set", self.port, "master", br],
                    ["ip", "addr", "add", "10.78.1.1/24", "dev", br], ["ip", "link", "set", br, "up"],
                    ["sysctl", "-qw", "net.ipv4.ip_forward=1"]):
            b.run(self.box, cmd)
        cli, self.box_proc = b.tailscaled_in(self.box, "abox", ["--advertise-routes=10.78.1.0/24",
                                                                "--snat-subnet-routes=false"])
        b.approve("abox", "10.78.1.0/24")
        b.run(self.dev, ["ip", "addr", "add", "10.78.1.100/24", "dev", self.dev_if])
        b.run(self.dev, ["ip", "route", "add", "default", "via", "10.78.1.1"])
        self.dev_ip = "10.78.1.100"
        self.reachable()
        return wait_for(lambda: b.direct("abox"), timeout=60, what="a direct path laptop <-> tailscaled box")


def build(tmp, binary, log):
    """Both sites up and reachable over direct paths; returns (bed, mb, an)."""
    bed = TailnetBed(tmp, tools())
    try:
        mb = MeshbridgeTailnetSite(bed, "meshbridge", bed.box, "m")
        path = mb.start(binary)
        log(f"meshbridge in the tailnet (pid {mb.box_proc.pid}), device {mb.dev_ip} by DHCP, laptop path {path}")
        an = TailscaledTailnetSite(bed, "anchor", bed.abox, "a")
        path = an.start()
        log(f"anchor tailscaled subnet router up (pid {an.box_proc.pid}), laptop path {path}")
        return bed, mb, an
    except BaseException:
        bed.close()
        raise


def versions(tools_dir):
    r = sh([str(tools_dir / "tailscaled"), "--version"], check=False)
    return "tailscaled " + ((r.stdout or r.stderr).splitlines() or ["?"])[0].strip()


class TailscaledBoxBox:
    """bench/run's "boxbox" scenario with `tailscaled` at both ends: two subnet routers in one
    tailnet (each `--advertise-routes` its bridge, `--accept-routes` the other's, no SNAT), a device
    behind each, over a direct path between the boxes. What measure() needs, as TailnetSite."""

    def __init__(self, bed, label="tailscaled"):
        self.bed, self.label = bed, label
        self.box = bed.abox
        # the second box, on headscale's bridge like the others
        self.peer = bed._ns("cbox")
        a, b = f"{bed.p}c0", f"{bed.p}c1"
        sh(["ip", "link", "add", a, "type", "veth", "peer", "name", b])
        sh(["ip", "link", "set", a, "netns", self.peer])
        sh(["ip", "link", "set", b, "netns", bed.hs])
        sh(["ip", "-n", bed.hs, "link", "set", b, "master", f"{bed.p}br"])
        sh(["ip", "-n", bed.hs, "link", "set", b, "up"])
        sh(["ip", "-n", self.peer, "addr", "add", "10.99.0.40/24", "dev", a])
        sh(["ip", "-n", self.peer, "link", "set", a, "up"])
        self.devs, self.ports = [], []
        for tag, box in (("x", self.box), ("y", self.peer)):
            dev = bed._ns(f"d{tag}")
            port, dev_if = f"{bed.p}{tag}p", f"{bed.p}{tag}d"
            sh(["ip", "link", "add", port, "type", "veth", "peer", "name", dev_if])
            sh(["ip", "link", "set", port, "netns", box])
            sh(["ip", "link", "set", dev_if, "netns", dev])
            sh(["ip", "-n", box, "link", "set", port, "up"])
            sh(["ip", "-n", dev, "link", "set", dev_if, "up"])
            bed.run(dev, ["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"])
            self.devs.append((dev, dev_if))
            self.ports.append(port)
        self.client, self.server = self.devs[0][0], "10.78.2.100"
        self.box_proc, self.box_procs = None, []
        self.log = bed.tmp / f"{label}.log"

    def box_pids(self):
        return [p.pid for p in self.box_procs]

    def start(self):
        b = self.bed
        for i, (box, name) in enumerate(((self.box, "abox"), (self.peer, "cbox"))):
            net = i + 1
            br = f"{b.p}{name[0]}br"
            for cmd in (["ip", "link", "add", br, "type", "bridge"], ["ip", "link", "set", self.ports[i], "master", br],
                        ["ip", "addr", "add", f"10.78.{net}.1/24", "dev", br], ["ip", "link", "set", br, "up"],
                        ["sysctl", "-qw", "net.ipv4.ip_forward=1"]):
                b.run(box, cmd)
            cli, proc = b.tailscaled_in(box, name, [f"--advertise-routes=10.78.{net}.0/24", "--accept-routes",
                                                    "--snat-subnet-routes=false"])
            self.box_procs.append(proc)
            if i == 0:
                self.cli = cli
            b.approve(name, f"10.78.{net}.0/24")
            dev, dev_if = self.devs[i]
            b.run(dev, ["ip", "addr", "add", f"10.78.{net}.100/24", "dev", dev_if])
            b.run(dev, ["ip", "route", "add", "default", "via", f"10.78.{net}.1"])
        self.box_proc = self.box_procs[0]
        b.spawn(self.devs[1][0], ["iperf3", "-s", "-p", "5201"], b.tmp / "iperf3-boxbox-server.log")
        self.reachable()
        return wait_for(self.direct, timeout=60, what="a direct path between the two tailscaled boxes")

    def direct(self):
        st = self.bed.status(self.box, (self.cli, None))
        for p in (st.get("Peer") or {}).values():
            if p.get("HostName") == "cbox":
                return p.get("CurAddr") or None
        return None

    def reachable(self, timeout=60):
        wait_for(lambda: self.bed.run(self.client, ["ping", "-n", "-c", "1", "-W", "1", self.server],
                                      check=False).returncode == 0,
                 timeout=timeout, interval=0.3, what=f"{self.label}: device A -> device B ping")
        wait_for(lambda: ":5201" in self.bed.run(self.devs[1][0], ["ss", "-ltn"], check=False).stdout,
                 timeout=timeout, what="iperf3 server on device B")


def build_boxbox(tmp, log):
    """Headscale and two tailscaled subnet routers with a device each; returns (bed, site)."""
    bed = TailnetBed(tmp, tools())
    try:
        site = TailscaledBoxBox(bed)
        path = site.start()
        log(f"tailscaled at both ends up (pids {site.box_pids()}), path between the boxes {path}")
        return bed, site
    except BaseException:
        bed.close()
        raise
