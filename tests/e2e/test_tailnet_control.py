"""The tailnet control layer (crate `meshbridge-tailnet`, issue #12) against a
real Headscale and a real `tailscaled`, in network namespaces.

The Rust side is the `tailnet-probe` example: it fetches the control key,
does the ts2021 upgrade and Noise handshake, speaks HTTP/2 inside, registers
with a pre-auth key and streams the map, printing the netmap as JSON.

Topology (every name has a random prefix; everything is removed on teardown,
also when a test fails):

    [hs]  bridge 10.99.0.1/24: headscale (plain-HTTP control on :8080)
    [box] 10.99.0.10: tailnet-probe           [lap] 10.99.0.20: tailscaled

Needs the pinned Go programs (headscale v0.29.2, tailscale/tailscaled
v1.102.3) that `tests/gotools/build` builds into
~/.cache/meshbridge/gotools/<hash>/ (or $MB_GOTOOLS_DIR). The tests SKIP
(with that message) only when those binaries are absent; anything else that
goes wrong is a failure. The probe is built with cargo (or taken from
$TAILNET_PROBE_BIN).
"""

import hashlib
import json
import os
import secrets
import signal
import subprocess
import time
from pathlib import Path

import pytest

from site_ns import REPO, sh, wait_for

GOTOOLS = REPO / "tests" / "gotools"
NEEDED = ("headscale", "tailscaled", "tailscale")
CONTROL = "http://10.99.0.1:8080"


def gotools_dir():
    env = os.environ.get("MB_GOTOOLS_DIR")
    if env:
        return Path(env)
    if not (GOTOOLS / "go.mod").exists():
        return None
    key = hashlib.sha256((GOTOOLS / "go.mod").read_bytes() + (GOTOOLS / "go.sum").read_bytes()).hexdigest()[:16]
    return Path.home() / ".cache" / "meshbridge" / "gotools" / key


def _absent(msg):
    # tests/run builds the binaries and sets MB_REQUIRE_GOTOOLS=1: there, absent is a failure.
    if os.environ.get("MB_REQUIRE_GOTOOLS") == "1":
        pytest.fail(msg)
    pytest.skip(msg)


def require_gotools():
    d = gotools_dir()
    if d is None:
        _absent("gotools binaries absent: tests/gotools (the pinned go.mod) is not in this tree; set MB_GOTOOLS_DIR")
    missing = [b for b in NEEDED if not os.access(d / b, os.X_OK)]
    if missing:
        _absent(f"gotools binaries absent ({', '.join(missing)} not in {d}): run tests/gotools/build first")
    return d


def probe_bin():
    env = os.environ.get("TAILNET_PROBE_BIN")
    if env:
        return env
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    sh(["cargo", "build", "-q", "-p", "meshbridge-tailnet", "--example", "tailnet-probe"], timeout=1800)
    p = target / "debug" / "examples" / "tailnet-probe"
    assert p.exists(), f"cargo built no {p}"
    return str(p)


HEADSCALE_CONFIG = """\
server_url: {control}
listen_addr: 10.99.0.1:8080
metrics_listen_addr: 127.0.0.1:9090
grpc_listen_addr: 127.0.0.1:50443
grpc_allow_insecure: false
noise:
  private_key_path: {d}/noise_private.key
prefixes:
  v4: 100.64.0.0/10
  v6: fd7a:115c:a1e0::/48
  allocation: sequential
derp:
  server:
    enabled: false
  urls: []
  paths:
    - {d}/derpmap.yaml
  auto_update_enabled: false
disable_check_updates: true
database:
  type: sqlite
  sqlite:
    path: {d}/db.sqlite
    write_ahead_log: true
log:
  level: info
policy:
  mode: file
  path: ""
dns:
  magic_dns: true
  base_domain: tailnet.test
  override_local_dns: false
  nameservers:
    global: []
unix_socket: {d}/headscale.sock
unix_socket_permission: "0770"
logtail:
  enabled: false
"""


def policy_in_database(monkeypatch):
    """Headscale keeps its ACL policy in its database (`policy.mode: database`)
    for the test that calls this: the test sets it with `set_policy`."""
    cfg = HEADSCALE_CONFIG.replace('mode: file\n  path: ""', "mode: database")
    assert "mode: database" in cfg
    monkeypatch.setattr(f"{__name__}.HEADSCALE_CONFIG", cfg)


DERPMAP = """\
regions:
  900:
    regionid: 900
    regioncode: tb
    regionname: testbed
    nodes:
      - name: 900a
        regionid: 900
        hostname: 10.99.0.1
        ipv4: 10.99.0.1
        ipv6: none
        stunport: 3478
        derpport: 8443
        insecurefortests: true
"""


class Tailnet:
    # The control URL; a subclass may serve Headscale over TLS
    # (test_tailnet_tls.py) by overriding these three.
    control = CONTROL

    def headscale_config_text(self):
        return HEADSCALE_CONFIG.format(control=self.control, d=self.hsdir)

    def health_cmd(self):
        return ["curl", "-sf", f"{self.control}/health"]

    def __init__(self, tmp: Path, tools: Path):
        self.p = "t" + secrets.token_hex(3)
        self.tmp = Path(tmp)
        self.tools = tools
        self.procs = []
        self.namespaces = []
        self.hs = self._ns("hs")
        self.box = self._ns("box")
        self.lap = self._ns("lap")
        br = f"{self.p}br"
        sh(["ip", "-n", self.hs, "link", "add", br, "type", "bridge"])
        sh(["ip", "-n", self.hs, "addr", "add", "10.99.0.1/24", "dev", br])
        sh(["ip", "-n", self.hs, "link", "set", br, "up"])
        for ns, tag, ip in ((self.box, "b", "10.99.0.10/24"), (self.lap, "l", "10.99.0.20/24")):
            a, b = f"{self.p}{tag}0", f"{self.p}{tag}1"
            sh(["ip", "link", "add", a, "type", "veth", "peer", "name", b])
            sh(["ip", "link", "set", a, "netns", ns])
            sh(["ip", "link", "set", b, "netns", self.hs])
            sh(["ip", "-n", self.hs, "link", "set", b, "master", br])
            sh(["ip", "-n", self.hs, "link", "set", b, "up"])
            sh(["ip", "-n", ns, "addr", "add", ip, "dev", a])
            sh(["ip", "-n", ns, "link", "set", a, "up"])
        self.hsdir = self.tmp / "headscale"
        self.hsdir.mkdir()
        (self.hsdir / "derpmap.yaml").write_text(DERPMAP)
        self.hs_config = self.hsdir / "config.yaml"
        self.hs_config.write_text(self.headscale_config_text())
        self.spawn(self.hs, [str(tools / "headscale"), "-c", str(self.hs_config), "serve"], self.tmp / "headscale.log")
        wait_for(lambda: self.run(self.box, self.health_cmd(), check=False).returncode == 0,
                 timeout=30, what="headscale to answer /health")

    def _ns(self, name):
        ns = f"{self.p}{name}"
        sh(["ip", "netns", "add", ns])
        self.namespaces.append(ns)
        sh(["ip", "-n", ns, "link", "set", "lo", "up"])
        return ns

    def run(self, ns, cmd, check=True, timeout=30):
        return sh(["ip", "netns", "exec", ns] + cmd, check=check, timeout=timeout)

    def spawn(self, ns, cmd, log, env=None):
        logf = open(log, "ab")
        p = subprocess.Popen(["ip", "netns", "exec", ns] + cmd, stdout=logf, stderr=subprocess.STDOUT,
                             env=dict(os.environ, **(env or {})), start_new_session=True)
        self.procs.append(p)
        return p

    def headscale(self, *args):
        r = self.run(self.hs, [str(self.tools / "headscale"), "-c", str(self.hs_config), *args, "-o", "json"])
        return json.loads(r.stdout)

    def set_policy(self, text, name):
        """Headscale's ACL policy (with `policy_in_database`): `headscale policy set`."""
        path = self.tmp / f"{name}.hujson"
        path.write_text(text)
        self.run(self.hs, [str(self.tools / "headscale"), "-c", str(self.hs_config), "policy", "set", "-f", str(path)])

    def auth_key(self, user="alice", reusable=True):
        users = {u["name"]: u for u in self.headscale("users", "list") or []}
        uid = users[user]["id"] if user in users else self.headscale("users", "create", user)["id"]
        args = ["preauthkeys", "create", "--user", str(uid), "--expiration", "24h"]
        if reusable:
            args.append("--reusable")
        return self.headscale(*args)["key"]

    def nodes(self):
        return self.headscale("nodes", "list") or []

    def probe(self, probe, state, auth_key, hostname="tbox", wait_peers=0, timeout=30):
        cmd = [probe, "--control", CONTROL, "--auth-key", auth_key, "--state", str(state),
               "--hostname", hostname, "--wait-peers", str(wait_peers), "--timeout", str(timeout)]
        r = self.run(self.box, cmd, check=False, timeout=timeout + 30)
        with open(self.tmp / "probe.log", "a") as f:
            f.write(f"$ {' '.join(cmd)}\nrc={r.returncode}\n{r.stderr}\n{r.stdout}\n")
        assert r.returncode == 0, f"probe failed ({r.returncode}):\n{r.stderr}\n{r.stdout}"
        return json.loads(r.stdout), r.stderr

    def tailscaled(self, name, auth_key):
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
                                  "--accept-dns=false", "--netfilter-mode=off"], timeout=60)
        return cli

    def ts_status(self, cli):
        return json.loads(self.run(self.lap, cli + ["status", "--json"]).stdout)

    def close(self):
        for p in self.procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        for ns in self.namespaces:
            for pid in sh(["ip", "netns", "pids", ns], check=False).stdout.split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            sh(["ip", "netns", "del", ns], check=False)


@pytest.fixture(scope="module")
def probe():
    require_gotools()
    return probe_bin()


def tailnet_in(cls, tmp_path):
    """The body of a tailnet fixture: `yield from tailnet_in(Tailnet, tmp_path)` gives the test a
    `cls` (Tailnet or a subclass) with the pinned Go programs and closes it afterwards."""
    t = cls(tmp_path, require_gotools())
    try:
        yield t
    finally:
        t.close()


@pytest.fixture
def tailnet(tmp_path, probe):
    yield from tailnet_in(Tailnet, tmp_path)


def nodes_named(tailnet, name):
    return [n for n in tailnet.nodes() if n.get("given_name") == name or n.get("name") == name]


def test_probe_registers_with_preauth_key_and_headscale_lists_it(tailnet, probe, tmp_path):
    key = tailnet.auth_key()
    nm, log = tailnet.probe(probe, tmp_path / "box-state", key)
    assert "register (with auth key: true, followup: false)" in log
    me = nm["self"]
    assert me["name"] == "tbox.tailnet.test", me
    assert any(a.startswith("100.64.") and a.endswith("/32") for a in me["addresses"]), me
    assert any(a.startswith("fd7a:115c:a1e0:") for a in me["addresses"]), me
    assert nm["derp_regions"] == [900], "the DERP map from derpmap.yaml reached the probe"
    assert nm["magic_dns"] is True
    assert "tailnet.test" in nm["dns_domains"], "MagicDNS search domain"
    assert nm["domain"] == "10.99.0.1", "Headscale names the tailnet after its server URL's host"
    listed = nodes_named(tailnet, "tbox")
    assert len(listed) == 1, tailnet.nodes()
    assert listed[0]["node_key"] == me["node_key"]
    assert listed[0]["machine_key"] == me["machine_key"]
    assert sorted(listed[0]["ip_addresses"]) == sorted(a.split("/")[0] for a in me["addresses"])
    keyfile = tmp_path / "box-state" / "tailnet-keys.json"
    assert keyfile.stat().st_mode & 0o777 == 0o600


def test_second_run_with_the_same_state_is_the_same_node(tailnet, probe, tmp_path):
    key = tailnet.auth_key()
    first, _ = tailnet.probe(probe, tmp_path / "box-state", key)
    second, log = tailnet.probe(probe, tmp_path / "box-state", key)
    assert "register (with auth key: false, followup: false)" in log, "a registered node refreshes without the key"
    assert second["self"] == first["self"]
    listed = nodes_named(tailnet, "tbox")
    assert len(listed) == 1, f"duplicate nodes: {tailnet.nodes()}"
    assert len(tailnet.nodes()) == 1
    # A fresh state directory is a new machine, hence a new node.
    third, _ = tailnet.probe(probe, tmp_path / "other-state", key, hostname="tbox2")
    assert third["self"]["node_key"] != first["self"]["node_key"]
    assert len(tailnet.nodes()) == 2


def test_single_use_key_still_lets_the_registered_node_back_in(tailnet, probe, tmp_path):
    key = tailnet.auth_key(reusable=False)
    first, _ = tailnet.probe(probe, tmp_path / "box-state", key)
    # Forget that we registered: the same machine key re-registers with the
    # used single-use key; Headscale updates the node in place.
    keyfile = tmp_path / "box-state" / "tailnet-keys.json"
    state = json.loads(keyfile.read_text())
    state["registered_with"] = None
    keyfile.write_text(json.dumps(state))
    again, log = tailnet.probe(probe, tmp_path / "box-state", key)
    assert "register (with auth key: true, followup: false)" in log
    assert again["self"] == first["self"]
    assert len(tailnet.nodes()) == 1
    # A new machine with the used key is refused.
    r = tailnet.run(tailnet.box, [probe, "--control", CONTROL, "--auth-key", key, "--state",
                                  str(tmp_path / "new-state"), "--hostname", "tbox3", "--timeout", "20"], check=False)
    assert r.returncode == 2, r
    assert "refused" in r.stderr, r.stderr
    assert len(tailnet.nodes()) == 1


def test_probe_netmap_has_the_tailscaled_peer_and_tailscale_sees_the_box(tailnet, probe, tmp_path):
    key = tailnet.auth_key()
    cli = tailnet.tailscaled("tlaptop", key)
    status = wait_for(lambda: (s := tailnet.ts_status(cli)) and s.get("BackendState") == "Running" and s,
                      timeout=30, what="tailscaled Running")
    # tailscaled has found its endpoints (then it tells the control server).
    wait_for(lambda: any(a.startswith("10.99.0.20:") for a in tailnet.ts_status(cli)["Self"].get("Addrs") or []),
             timeout=30, what="tailscaled endpoints")
    time.sleep(1)
    lap_self = status["Self"]
    nm, _ = tailnet.probe(probe, tmp_path / "box-state", key, wait_peers=1, timeout=60)
    peers = {p["name"]: p for p in nm["peers"]}
    assert "tlaptop.tailnet.test" in peers, nm["peers"]
    lap = peers["tlaptop.tailnet.test"]
    assert lap["node_key"] == lap_self["PublicKey"]
    assert sorted(a.split("/")[0] for a in lap["addresses"]) == sorted(lap_self["TailscaleIPs"])
    assert set(lap["addresses"]) <= set(lap["allowed_ips"])
    assert lap["disco_key"] and lap["disco_key"].startswith("discokey:")
    assert lap["online"] is True
    assert any(e.startswith("10.99.0.20:") for e in lap["endpoints"]), lap["endpoints"]

    # And the other way round: the laptop's map has the box, with our keys
    # and addresses.
    me = nm["self"]

    def box_in_status():
        st = tailnet.ts_status(cli)
        return [p for p in (st.get("Peer") or {}).values() if p.get("HostName") == "tbox"]

    seen = wait_for(box_in_status, timeout=30, what="the box in tailscale status")
    assert seen[0]["PublicKey"] == me["node_key"]
    assert sorted(seen[0]["TailscaleIPs"]) == sorted(a.split("/")[0] for a in me["addresses"])


def test_map_stream_delivers_the_peer_added_and_removed_deltas(tailnet, probe, tmp_path):
    """The probe stays on the stream while a tailscaled node joins and is then
    deleted on Headscale: the peer count goes 0 -> 1 -> 0 through deltas."""
    key = tailnet.auth_key()
    out, err = tmp_path / "probe.out", tmp_path / "probe.err"
    cmd = ["ip", "netns", "exec", tailnet.box, probe, "--control", CONTROL, "--auth-key", key,
           "--state", str(tmp_path / "box-state"), "--hostname", "tbox", "--expect-peers", "0,1,0", "--timeout", "120"]
    with open(out, "wb") as o, open(err, "wb") as e:
        proc = subprocess.Popen(cmd, stdout=o, stderr=e, start_new_session=True)
    tailnet.procs.append(proc)
    wait_for(lambda: "map update, 0 peers" in err.read_text(), timeout=30, what="the probe's first map")
    tailnet.tailscaled("tlaptop", key)
    wait_for(lambda: "map update, 1 peers" in err.read_text(), timeout=60, what="the laptop added by a delta")
    lap = nodes_named(tailnet, "tlaptop")
    assert len(lap) == 1, tailnet.nodes()
    tailnet.run(tailnet.hs, [str(tailnet.tools / "headscale"), "-c", str(tailnet.hs_config), "nodes", "delete",
                             "-i", str(lap[0]["id"]), "--force"])
    assert proc.wait(timeout=90) == 0, err.read_text()
    nm = json.loads(out.read_text())
    assert nm["peers"] == [], nm
    log = err.read_text()
    assert "changed 1" in log, "the laptop arrived as PeersChanged, not a full map"
    assert "removed 1" in log, "the deletion arrived as PeersRemoved"
    assert nm["stats"]["messages"] >= 3, nm["stats"]
    assert nm["self"]["name"] == "tbox.tailnet.test"


def test_interactive_login_without_auth_key(tailnet, probe, tmp_path):
    """No auth key: the probe shows Headscale's login URL and waits (Followup);
    an admin registers that auth ID to a user; the probe gets in."""
    tailnet.auth_key()  # creates the user
    out, err = tmp_path / "probe.out", tmp_path / "probe.err"
    cmd = ["ip", "netns", "exec", tailnet.box, probe, "--control", CONTROL, "--state", str(tmp_path / "box-state"),
           "--hostname", "tbox", "--timeout", "60"]
    with open(out, "wb") as o, open(err, "wb") as e:
        proc = subprocess.Popen(cmd, stdout=o, stderr=e, start_new_session=True)
    tailnet.procs.append(proc)
    line = wait_for(lambda: next((l for l in err.read_text().splitlines() if "log in at" in l), None),
                    timeout=30, what="the login URL")
    url = line.split("log in at ", 1)[1].strip()
    assert url.startswith(f"{CONTROL}/register/"), url
    assert "followup: true" in wait_for(lambda: "followup: true" in err.read_text() and err.read_text(),
                                        timeout=10, what="the followup request")
    assert not tailnet.nodes(), "not registered before the login"
    tailnet.headscale("auth", "register", "--auth-id", url.rsplit("/", 1)[1], "--user", "alice")
    assert proc.wait(timeout=60) == 0, err.read_text()
    nm = json.loads(out.read_text())
    listed = nodes_named(tailnet, "tbox")
    assert len(listed) == 1 and listed[0]["node_key"] == nm["self"]["node_key"], tailnet.nodes()
    # The keys are now registered: the next run gets in without key or login.
    again, log = tailnet.probe(probe, tmp_path / "box-state", "")
    assert "log in at" not in log and again["self"] == nm["self"]


def expiry_seconds(node):
    """Headscale's CLI prints the protobuf timestamp as {"seconds": N, ...};
    None when the node does not expire."""
    e = node.get("expiry")
    return int(e.get("seconds", 0)) if isinstance(e, dict) and e.get("seconds") else None


def test_logout_expires_the_node_and_the_auth_key_brings_it_back(tailnet, probe, tmp_path):
    key = tailnet.auth_key()
    first, _ = tailnet.probe(probe, tmp_path / "box-state", key)
    assert expiry_seconds(nodes_named(tailnet, "tbox")[0]) is None, "no expiry before logout"
    r = tailnet.run(tailnet.box, [probe, "--control", CONTROL, "--state", str(tmp_path / "box-state"), "--logout"],
                    check=False)
    assert r.returncode == 0, r.stderr
    node = nodes_named(tailnet, "tbox")[0]
    assert expiry_seconds(node) is not None and expiry_seconds(node) <= time.time(), node
    # Logged out: the key file no longer says "registered", so the next run
    # uses the auth key; Headscale renews the same node in place.
    again, log = tailnet.probe(probe, tmp_path / "box-state", key)
    assert "with auth key: true" in log
    assert again["self"] == first["self"]
    assert len(tailnet.nodes()) == 1
    node = nodes_named(tailnet, "tbox")[0]
    assert expiry_seconds(node) is None or expiry_seconds(node) > time.time(), node


def test_endpoints_routes_and_home_derp_reach_headscale_and_the_peer(tailnet, probe, tmp_path):
    """What the box says about itself in its map request (endpoint, advertised
    subnet route, home DERP region) reaches Headscale and the tailscaled peer;
    an approved route becomes the box's primary route in the peer's map."""
    key = tailnet.auth_key()
    cli = tailnet.tailscaled("tlaptop", key)
    wait_for(lambda: tailnet.ts_status(cli).get("BackendState") == "Running", timeout=30, what="tailscaled Running")
    err = tmp_path / "probe.err"
    cmd = ["ip", "netns", "exec", tailnet.box, probe, "--control", CONTROL, "--auth-key", key,
           "--state", str(tmp_path / "box-state"), "--hostname", "tbox", "--endpoint", "10.99.0.10:41641",
           "--advertise-routes", "10.77.1.0/24", "--home-derp", "900", "--wait-peers", "99", "--timeout", "60"]
    with open(tmp_path / "probe.out", "wb") as o, open(err, "wb") as e:
        proc = subprocess.Popen(cmd, stdout=o, stderr=e, start_new_session=True)
    tailnet.procs.append(proc)
    wait_for(lambda: "map update, 1 peers" in err.read_text(), timeout=30, what="the probe's map")

    box = wait_for(lambda: nodes_named(tailnet, "tbox"), what="the box on headscale")[0]
    assert box.get("available_routes") == ["10.77.1.0/24"], box
    assert not box.get("approved_routes"), box

    def box_peer():
        return next((p for p in (tailnet.ts_status(cli).get("Peer") or {}).values() if p.get("HostName") == "tbox"), None)

    def box_in_laptop_netmap():
        nm = json.loads(tailnet.run(tailnet.lap, cli + ["debug", "netmap"]).stdout)
        return next((p for p in nm.get("Peers") or [] if p.get("Name", "").startswith("tbox.")), None)

    node = wait_for(lambda: (n := box_in_laptop_netmap()) and "10.99.0.10:41641" in (n.get("Endpoints") or []) and n,
                    timeout=30, what="our endpoint in the laptop's netmap")
    assert node["HomeDERP"] == 900, node
    seen = wait_for(lambda: (p := box_peer()) and p.get("Online") and p, timeout=30, what="the box online")
    assert seen["Relay"] == "tb", "the laptop sees our home DERP region (900, code tb)"
    assert proc.poll() is None, err.read_text()
    assert "10.77.1.0/24" not in (seen.get("PrimaryRoutes") or [])

    tailnet.headscale("nodes", "approve-routes", "-i", str(box["id"]), "-r", "10.77.1.0/24")
    seen = wait_for(lambda: (p := box_peer()) and "10.77.1.0/24" in (p.get("PrimaryRoutes") or []) and p,
                    timeout=30, what="the approved route in the laptop's map")
    assert "10.77.1.0/24" in seen["AllowedIPs"]
    proc.terminate()
