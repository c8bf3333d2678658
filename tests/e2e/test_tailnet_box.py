"""The box as a tailnet node (issue #12): meshbridge with `[tailnet]` joins a
real Headscale with a pre-auth key, advertises its bridge subnet, and a
laptop running the real `tailscaled` reaches a bridged device over a direct
UDP path that disco (ping/pong) confirmed; the device reaches the laptop.

Topology (random prefix; torn down also on failure):

    [hs]  bridge 10.99.0.1/24: headscale (plain-HTTP control on :8080)
    [box] 10.99.0.10: meshbridge (UDP 41641)  [lap] 10.99.0.20: tailscaled
    [dev] --veth--> the box's bridge: udhcpc gets a 10.77.1.x lease

Same underlay, no NAT, no DERP server running (the DERP map names one that
never answers): every packet between laptop and box goes over the direct
path or not at all. Needs the pinned Go programs (see
test_tailnet_control.py); SKIPS only when they are absent.
"""

import json
import os
import signal
import subprocess
import time

import pytest

from site_ns import UDHCPC_SCRIPT, meshbridge_bin, sh, wait_for
from test_tailnet_control import Tailnet, nodes_named, require_gotools

BOX_PORT = 41641


class BoxTailnet(Tailnet):
    """The control test's namespaces plus a bridged device and meshbridge."""

    def __init__(self, tmp, tools):
        super().__init__(tmp, tools)
        self.dev = self._ns("dev")
        self.port, self.dev_if = f"{self.p}db", f"{self.p}dd"
        sh(["ip", "link", "add", self.port, "type", "veth", "peer", "name", self.dev_if])
        sh(["ip", "link", "set", self.port, "netns", self.box])
        sh(["ip", "link", "set", self.dev_if, "netns", self.dev])
        sh(["ip", "-n", self.box, "link", "set", self.port, "up"])
        sh(["ip", "-n", self.dev, "link", "set", self.dev_if, "up"])
        self.run(self.dev, ["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"])
        self.box_key = sh(["wg", "genkey"]).stdout.strip()
        self.state = self.tmp / "state"
        self.box_log = self.tmp / "box.log"
        self.box_proc = None

    def tailscaled_routes(self, name, auth_key):
        """tailscaled as in the control test, but with --accept-routes."""
        d = self.tmp / f"ts-{name}"
        d.mkdir()
        sock = d / "tailscaled.sock"
        env = {"TS_LOGS_DIR": str(d), "TS_NO_LOGS_NO_SUPPORT": "true", "TS_DISABLE_PORTMAPPER": "1"}
        self.spawn(self.lap, [str(self.tools / "tailscaled"), f"--tun={self.p}ts", f"--statedir={d}",
                              f"--state={d}/tailscaled.state", f"--socket={sock}", "--port=41641"],
                   self.tmp / f"tailscaled-{name}.log", env=env)
        wait_for(lambda: sock.exists(), timeout=20, what="tailscaled socket")
        cli = [str(self.tools / "tailscale"), f"--socket={sock}"]
        self.run(self.lap, cli + ["up", f"--login-server={self.control}", f"--auth-key={auth_key}", f"--hostname={name}",
                                  "--accept-dns=false", "--netfilter-mode=off", "--accept-routes"], timeout=60)
        return cli

    def write_config(self, auth_key, devices="routes", extra=""):
        (self.tmp / "board").mkdir(exist_ok=True)
        keyfile = self.tmp / "tailnet-authkey"
        keyfile.write_text(auth_key + "\n")
        keyfile.chmod(0o600)
        path = self.tmp / "box.toml"
        path.write_text(f"""state_dir = "{self.state}"
[mesh]
private_key = "{self.box_key}"
listen_port = {BOX_PORT}
address = "10.77.0.1/24"
[bridge]
name = "br-mesh"
ports = ["{self.port}"]
[dhcp]
range = "10.77.1.100-10.77.1.200"
[web]
enabled = false
[board]
root = "{self.tmp / 'board'}"
[tailnet]
control_url = "{self.control}"
auth_key_file = "{keyfile}"
hostname = "tbox"
devices = "{devices}"
{extra}""")
        return path

    def start_box(self, path):
        offset = self.box_log.stat().st_size if self.box_log.exists() else 0
        logf = open(self.box_log, "ab")
        self.box_proc = subprocess.Popen(
            ["ip", "netns", "exec", self.box, meshbridge_bin(), "--config", str(path), "--log", "debug"],
            stdout=logf, stderr=subprocess.STDOUT, start_new_session=True, env=dict(os.environ, NO_COLOR="1"))

        def up():
            text = self.box_log.read_bytes()[offset:].decode(errors="replace")
            return "tailnet: up as" in text or self.box_proc.poll() is not None

        wait_for(up, timeout=60, what="meshbridge to join the tailnet")
        assert self.box_proc.poll() is None, "meshbridge exited:\n" + self.box_log.read_text()[-3000:]

    def stop_box(self):
        os.killpg(self.box_proc.pid, signal.SIGTERM)
        rc = self.box_proc.wait(timeout=15)
        self.box_proc = None
        return rc

    def close(self):
        if self.box_proc and self.box_proc.poll() is None:
            self.procs.append(self.box_proc)
        super().close()

    def udhcpc(self):
        out = self.tmp / "dev-udhcpc.out"
        script = self.tmp / "dev-udhcpc.sh"
        script.write_text(UDHCPC_SCRIPT.format(out=out))
        script.chmod(0o755)
        r = self.run(self.dev, ["busybox", "udhcpc", "-f", "-i", self.dev_if, "-s", str(script), "-x",
                                "hostname:printer", "-t", "10", "-T", "2", "-q", "-n"], check=False, timeout=60)
        assert r.returncode == 0, r
        addr = self.run(self.dev, ["ip", "-4", "-o", "addr", "show", "dev", self.dev_if]).stdout
        return addr.split("inet ", 1)[1].split("/", 1)[0]

    def lease_in(self, ns, ifn, hostname):
        """udhcpc in `ns` on `ifn` with this host name: the last bound line's
        fields (ip, mask, router, dns, domain, ...) and the line itself."""
        out = self.tmp / f"{hostname}-udhcpc.out"
        script = self.tmp / f"{hostname}-udhcpc.sh"
        script.write_text(UDHCPC_SCRIPT.format(out=out))
        script.chmod(0o755)
        r = self.run(ns, ["busybox", "udhcpc", "-f", "-i", ifn, "-s", str(script), "-x", f"hostname:{hostname}",
                          "-t", "15", "-T", "2", "-q", "-n"], check=False, timeout=60)
        assert r.returncode == 0, (r, self.box_log.read_text()[-3000:])
        bound = [ln for ln in out.read_text().splitlines() if ln.startswith("bound")][-1]
        fields = dict(f.split("=", 1) for f in bound.split()[1:])
        fields["line"] = bound
        return fields

    def ping(self, ns, addr, timeout=40):
        def ok():
            return self.run(ns, ["ping", "-c", "1", "-W", "1", addr], check=False).returncode == 0

        wait_for(ok, timeout=timeout, interval=0.5, what=f"ping {addr} from {ns}")


@pytest.fixture
def tn(tmp_path):
    t = BoxTailnet(tmp_path, require_gotools())
    try:
        yield t
    finally:
        t.close()


def box_peer(tn, cli):
    st = tn.ts_status(cli)
    return next((p for p in (st.get("Peer") or {}).values() if p.get("HostName") == "tbox"), None)


def test_laptop_reaches_bridged_device_over_a_direct_path_and_back(tn):
    key = tn.auth_key()
    cli = tn.tailscaled_routes("tlaptop", key)
    wait_for(lambda: tn.ts_status(cli).get("BackendState") == "Running", timeout=30, what="tailscaled Running")
    lap_ip = next(a for a in tn.ts_status(cli)["Self"]["TailscaleIPs"] if "." in a)

    cfg = tn.write_config(key)
    r = tn.run(tn.box, [meshbridge_bin(), "--check-config", str(cfg)], check=False)
    assert r.returncode == 0 and "tailnet: control http://10.99.0.1:8080" in r.stdout, r

    tn.start_box(cfg)
    # 1. Registered: Headscale lists the box, with its bridge subnet advertised.
    box = wait_for(lambda: (n := nodes_named(tn, "tbox")) and n[0].get("available_routes") and n,
                   timeout=30, what="the box on headscale with its route")
    assert len(box) == 1, tn.nodes()
    assert box[0]["available_routes"] == ["10.77.1.0/24"], box
    keys = tn.state / "tailnet-keys.json"
    assert keys.stat().st_mode & 0o777 == 0o600
    node_key = box[0]["node_key"]
    wg_pub = sh(["wg", "pubkey"], input=tn.box_key).stdout.strip()
    import base64
    assert node_key == "nodekey:" + base64.b64decode(wg_pub).hex(), "the node key is the mesh's WireGuard key"

    # The laptop is a peer of the box (`meshbridge status`).
    def lap_in_status():
        r = tn.run(tn.box, [meshbridge_bin(), "status", "--json", "--config", str(cfg)], check=False)
        return r.returncode == 0 and [p for p in json.loads(r.stdout)["peers"] if p["name"] == "tlaptop"]

    (peer,) = wait_for(lap_in_status, timeout=30, what="the laptop in meshbridge status")
    assert f"{lap_ip}/32" in peer["allowed_ips"], peer

    # 2. The route, approved, becomes the box's primary route on the laptop.
    tn.headscale("nodes", "approve-routes", "-i", str(box[0]["id"]), "-r", "10.77.1.0/24")
    wait_for(lambda: (p := box_peer(tn, cli)) and "10.77.1.0/24" in (p.get("PrimaryRoutes") or []),
             timeout=30, what="the approved route on the laptop")

    # 3. A bridged device gets a lease; the laptop reaches it through the box.
    dev_ip = tn.udhcpc()
    assert dev_ip.startswith("10.77.1."), dev_ip
    tn.ping(tn.lap, dev_ip)
    http = tn.spawn(tn.dev, ["python3", "-m", "http.server", "8000", "--bind", dev_ip, "--directory", str(tn.tmp)],
                    tn.tmp / "http.log")
    (tn.tmp / "hello.txt").write_text("hello from the printer\n")

    def fetched():
        r = tn.run(tn.lap, ["curl", "-sf", "--max-time", "3", f"http://{dev_ip}:8000/hello.txt"], check=False)
        return r.returncode == 0 and r.stdout

    assert wait_for(fetched, timeout=20, what="HTTP from the device") == "hello from the printer\n"
    assert http.poll() is None

    # The path is direct (disco-confirmed UDP to the box's endpoint), not DERP.
    seen = box_peer(tn, cli)
    assert seen.get("CurAddr") == f"10.99.0.10:{BOX_PORT}", seen
    assert "direct path to" in tn.box_log.read_text()

    # 4. The device reaches the laptop's tailnet address; the laptop reaches
    # the box's own tailnet address (the box's host).
    tn.ping(tn.dev, lap_ip)
    box_ip = next(a for a in box[0]["ip_addresses"] if "." in a)
    tn.ping(tn.lap, box_ip)

    # 5. A restart is the same node, and traffic flows again.
    assert tn.stop_box() == 0
    tn.start_box(cfg)
    listed = nodes_named(tn, "tbox")
    assert len(listed) == 1 and listed[0]["node_key"] == node_key, tn.nodes()
    assert len(tn.nodes()) == 2, "the laptop and the box, no duplicate"
    tn.ping(tn.lap, dev_ip, timeout=60)
    tn.ping(tn.dev, lap_ip)

    # 6. SIGKILL (nothing cleaned up, keys as they were): still the same node.
    os.killpg(tn.box_proc.pid, signal.SIGKILL)
    tn.box_proc.wait(timeout=15)
    tn.box_proc = None
    tn.start_box(cfg)
    listed = nodes_named(tn, "tbox")
    assert len(listed) == 1 and listed[0]["node_key"] == node_key, tn.nodes()
    assert len(tn.nodes()) == 2
    tn.ping(tn.lap, dev_ip, timeout=60)
