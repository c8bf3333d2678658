"""Routes and exit nodes through the tailnet (issue #12, item 5): the box's
`[routing]` subnet route and exit node, advertised to a real Headscale and
approved there, carry a real `tailscaled` laptop's traffic to the box's home
LAN and out of its uplink; and the box's bridged device uses the laptop as
its exit node (`use_exit_node = "<host name>"`), with the kill switch.

Topology (random prefix; torn down also on failure), the tailnet of
test_tailnet_box.py plus an uplink like test_routing.py's:

    [hs]  bridge 10.99.0.1/24: headscale        [box] 10.99.0.10  [lap] 10.99.0.20
    [dev] --veth--> the box's bridge (udhcpc lease 10.77.1.x)
    [box] 192.168.1.2 --uplink--> [lan] home router + LAN host 192.168.1.1:8000
                                  [lan] 203.0.113.1 --> [inet] 203.0.113.10:8000
    [lap] 198.51.100.2 (masquerade) --> [inet] 198.51.100.1   (only test c)

No NAT anywhere but in the box (and the laptop in test c), so the servers'
logs show whose uplink the traffic really left from.
"""

import json
import re
import signal
import time

import pytest

from site_ns import meshbridge_bin, sh, wait_for
from test_tailnet_box import BoxTailnet, box_peer
from test_tailnet_control import CONTROL, nodes_named, require_gotools

LAN_HOST = "192.168.1.1"
INET_HOST = "203.0.113.10"
INET6_HOST = "2001:db8:3::10"


class RoutesTailnet(BoxTailnet):
    """The box tailnet plus a home LAN and an "internet" host behind the box's uplink."""

    def __init__(self, tmp, tools):
        super().__init__(tmp, tools)
        self.lan = self._ns("lan")
        self.inet = self._ns("inet")
        self.uplink = f"{self.p}w0"
        self._veth(self.uplink, self.box, f"{self.p}w1", self.lan)
        self._veth(f"{self.p}i0", self.lan, f"{self.p}i1", self.inet)
        for ns, ifc, addr in [(self.box, self.uplink, "192.168.1.2/24"), (self.lan, f"{self.p}w1", "192.168.1.1/24"),
                              (self.lan, f"{self.p}i0", "203.0.113.1/26"), (self.inet, f"{self.p}i1", "203.0.113.10/26")]:
            self.run(ns, ["ip", "addr", "add", addr, "dev", ifc])
        self.run(self.box, ["ip", "route", "add", "default", "via", LAN_HOST])
        self.run(self.inet, ["ip", "route", "add", "default", "via", "203.0.113.1"])
        self.run(self.lan, ["sysctl", "-qw", "net.ipv4.ip_forward=1"])
        self.lan_log = self.tmp / "lan-http.log"
        self.inet_log = self.tmp / "inet-http.log"
        for name, text in (("www-lan", "home LAN host\n"), ("www-inet", "internet host\n")):
            (self.tmp / name).mkdir()
            (self.tmp / name / "index.html").write_text(text)
        self.spawn(self.lan, ["python3", "-u", "-m", "http.server", "8000", "--bind", LAN_HOST,
                              "--directory", str(self.tmp / "www-lan")], self.lan_log)
        self.spawn(self.inet, ["python3", "-u", "-m", "http.server", "8000", "--bind", INET_HOST,
                               "--directory", str(self.tmp / "www-inet")], self.inet_log)
        wait_for(lambda: self.fetch(self.lan, f"http://{INET_HOST}:8000/"), what="internet host up")

    def _veth(self, a, ns_a, b, ns_b):
        sh(["ip", "link", "add", a, "type", "veth", "peer", "name", b])
        sh(["ip", "link", "set", a, "netns", ns_a])
        sh(["ip", "link", "set", b, "netns", ns_b])
        self.run(ns_a, ["ip", "link", "set", a, "up"])
        self.run(ns_b, ["ip", "link", "set", b, "up"])

    def uplink_ipv6(self):
        """The same uplink chain with IPv6 (documentation prefix 2001:db8::/32), no NAT."""
        for ns, ifc, addr in [(self.box, self.uplink, "2001:db8:1::2/64"), (self.lan, f"{self.p}w1", "2001:db8:1::1/64"),
                              (self.lan, f"{self.p}i0", "2001:db8:3::1/64"), (self.inet, f"{self.p}i1", INET6_HOST + "/64")]:
            self.run(ns, ["ip", "-6", "addr", "add", addr, "dev", ifc, "nodad"])
        self.run(self.box, ["ip", "-6", "route", "add", "default", "via", "2001:db8:1::1"])
        self.run(self.inet, ["ip", "-6", "route", "add", "default", "via", "2001:db8:3::1"])
        self.run(self.lan, ["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"])
        self.inet6_log = self.tmp / "inet6-http.log"
        self.spawn(self.inet, ["python3", "-u", "-m", "http.server", "8000", "--bind", INET6_HOST,
                               "--directory", str(self.tmp / "www-inet")], self.inet6_log)
        wait_for(lambda: self.fetch(self.lan, f"http://[{INET6_HOST}]:8000/"), what="IPv6 internet host up")

    def laptop_internet(self):
        """The laptop's own way to the internet host, masqueraded: the
        internet host then sees 198.51.100.2 for traffic the laptop forwards."""
        lap_if = f"{self.p}x0"
        self._veth(lap_if, self.lap, f"{self.p}x1", self.inet)
        self.run(self.lap, ["ip", "addr", "add", "198.51.100.2/24", "dev", lap_if])
        self.run(self.inet, ["ip", "addr", "add", "198.51.100.1/24", "dev", f"{self.p}x1"])
        self.run(self.lap, ["ip", "route", "add", "203.0.113.0/26", "via", "198.51.100.1"])
        self.run(self.lap, ["sysctl", "-qw", "net.ipv4.ip_forward=1"])
        rules = self.tmp / "lap-nat.nft"
        rules.write_text(f"table ip {self.p}nat {{\n chain post {{ type nat hook postrouting priority srcnat;"
                         f" oifname \"{lap_if}\" masquerade; }}\n}}\n")
        self.run(self.lap, ["nft", "-f", str(rules)])

    def laptop(self, name, auth_key, *extra):
        """tailscaled in the laptop namespace with --accept-routes (and `extra` for `up`); returns (cli, process)."""
        d = self.tmp / f"ts-{name}"
        d.mkdir()
        sock = d / "tailscaled.sock"
        env = {"TS_LOGS_DIR": str(d), "TS_NO_LOGS_NO_SUPPORT": "true", "TS_DISABLE_PORTMAPPER": "1"}
        proc = self.spawn(self.lap, [str(self.tools / "tailscaled"), f"--tun={self.p}ts", f"--statedir={d}",
                                     f"--state={d}/tailscaled.state", f"--socket={sock}", "--port=41641"],
                          self.tmp / f"tailscaled-{name}.log", env=env)
        wait_for(lambda: sock.exists(), timeout=20, what="tailscaled socket")
        cli = [str(self.tools / "tailscale"), f"--socket={sock}"]
        self.run(self.lap, cli + ["up", f"--login-server={CONTROL}", f"--auth-key={auth_key}", f"--hostname={name}",
                                  "--accept-dns=false", "--netfilter-mode=off", "--accept-routes", *extra], timeout=60)
        wait_for(lambda: self.ts_status(cli).get("BackendState") == "Running", timeout=30, what="tailscaled Running")
        return cli, proc

    def routing_config(self, auth_key, routing):
        path = self.write_config(auth_key)
        path.write_text(path.read_text() + f'[routing]\nuplink = "{self.uplink}"\n{routing}')
        return path

    def fetch(self, ns, url, timeout=3):
        r = self.run(ns, ["curl", "-s", "--max-time", str(timeout), url], check=False, timeout=timeout + 10)
        return r.stdout if r.returncode == 0 else None

    @staticmethod
    def clients_seen(log):
        """Client addresses in a python http.server log, but the set-up's own check from the home router."""
        seen = re.findall(r"^([0-9a-fA-F.:]+) - - ", log.read_text(), flags=re.M) if log.exists() else []
        return [c for c in seen if c not in ("203.0.113.1", "2001:db8:3::1")]

    def registered_box(self, routes):
        """The box on Headscale once it advertised `routes`."""
        def seen():
            n = nodes_named(self, "tbox")
            return n and set(routes) <= set(n[0].get("available_routes") or []) and n[0]

        return wait_for(seen, timeout=30, what=f"the box on headscale advertising {routes}")

    def approve(self, node, *routes):
        self.headscale("nodes", "approve-routes", "-i", str(node["id"]), "-r", ",".join(routes))

    def exit_laptop(self, key):
        """The laptop with its own way to the internet host, offering an
        approved exit node: (cli, process, its node)."""
        self.laptop_internet()
        cli, proc = self.laptop("tlaptop", key, "--advertise-exit-node")
        lap = wait_for(lambda: (n := nodes_named(self, "tlaptop")) and "0.0.0.0/0" in (n[0].get("available_routes") or [])
                       and n[0], timeout=30, what="the laptop offering an exit node")
        self.approve(lap, "0.0.0.0/0", "::/0")
        return cli, proc, lap

    def internet_via_laptop(self):
        """The device fetches from the internet host, which sees the laptop, not the box's uplink."""
        page = wait_for(lambda: self.fetch(self.dev, f"http://{INET_HOST}:8000/"), timeout=40,
                        what="the internet host from the device via the laptop")
        assert page == "internet host\n"
        assert self.clients_seen(self.inet_log)[-1] == "198.51.100.2", "the internet sees the laptop, not the box's uplink"
        assert "192.168.1.2" not in self.clients_seen(self.inet_log)

    def capture_uplink(self):
        """tcpdump on the box's uplink from now on: (process, pcap path)."""
        cap = self.tmp / "box-uplink.pcap"
        tcpd = self.spawn(self.box, ["tcpdump", "--immediate-mode", "-Z", "root", "-U", "-i", self.uplink, "-nn", "-w",
                                     str(cap), "ip"], self.tmp / "tcpdump.log")
        time.sleep(1)
        return tcpd, cap

    def uplink_seen(self, tcpd, cap):
        """Stop the capture; what crossed the box's uplink, as text."""
        time.sleep(0.5)
        tcpd.send_signal(signal.SIGINT)
        tcpd.wait(timeout=5)
        return self.run(self.box, ["tcpdump", "-nn", "-r", str(cap)]).stdout


def routes_tailnet(tmp_path):
    t = RoutesTailnet(tmp_path, require_gotools())
    try:
        yield t
    finally:
        t.close()


@pytest.fixture
def rt(tmp_path):
    yield from routes_tailnet(tmp_path)


def test_laptop_reaches_the_home_lan_through_the_boxs_approved_subnet_route(rt):
    key = rt.auth_key()
    cli, _ = rt.laptop("tlaptop", key)
    rt.start_box(rt.routing_config(key, 'advertise_routes = ["192.168.1.0/24"]\n'))
    box = rt.registered_box(["10.77.1.0/24", "192.168.1.0/24"])
    assert not {"0.0.0.0/0", "::/0"} & set(box["available_routes"]), "no exit node offered"
    # Advertised but not approved: the laptop has no way to the home LAN.
    assert rt.fetch(rt.lap, f"http://{LAN_HOST}:8000/", timeout=2) is None
    rt.approve(box, "10.77.1.0/24", "192.168.1.0/24")
    wait_for(lambda: (p := box_peer(rt, cli)) and "192.168.1.0/24" in (p.get("PrimaryRoutes") or []),
             timeout=30, what="the approved home-LAN route on the laptop")
    page = wait_for(lambda: rt.fetch(rt.lap, f"http://{LAN_HOST}:8000/"), timeout=40,
                    what="the LAN host from the laptop through the box")
    assert page == "home LAN host\n"
    # The LAN host sees the box's uplink address (the subnet router SNATs).
    assert rt.clients_seen(rt.lan_log)[-1] == "192.168.1.2"
    # A subnet route is not an exit node: the internet behind the box stays out of reach.
    assert rt.fetch(rt.lap, f"http://{INET_HOST}:8000/", timeout=2) is None
    assert rt.clients_seen(rt.inet_log) == []


def test_laptop_uses_the_box_as_its_approved_exit_node(rt):
    """IPv4 and IPv6 (the uplink has both): the laptop's 100.64 and fd7a: sources, masqueraded."""
    rt.uplink_ipv6()
    key = rt.auth_key()
    cli, _ = rt.laptop("tlaptop", key)
    rt.start_box(rt.routing_config(key, "exit_node = true\n"))
    assert "serves IPv6 (::/0) too" in rt.box_log.read_text()
    box = rt.registered_box(["10.77.1.0/24", "0.0.0.0/0", "::/0"])
    box_ip = next(a for a in box["ip_addresses"] if "." in a)
    rt.approve(box, "10.77.1.0/24", "0.0.0.0/0", "::/0")
    wait_for(lambda: (p := box_peer(rt, cli)) and p.get("ExitNodeOption"), timeout=30,
             what="the box offered as an exit node on the laptop")
    # Before the laptop picks it, the internet host is out of its reach.
    assert rt.fetch(rt.lap, f"http://{INET_HOST}:8000/", timeout=2) is None
    rt.run(rt.lap, cli + ["set", f"--exit-node={box_ip}"])
    page = wait_for(lambda: rt.fetch(rt.lap, f"http://{INET_HOST}:8000/"), timeout=40,
                    what="the internet host from the laptop through the box's exit node")
    assert page == "internet host\n"
    # It left masqueraded behind the box's uplink.
    assert rt.clients_seen(rt.inet_log)[-1] == "192.168.1.2"
    page = wait_for(lambda: rt.fetch(rt.lap, f"http://[{INET6_HOST}]:8000/"), timeout=20,
                    what="the IPv6 internet host from the laptop through the box's exit node")
    assert page == "internet host\n"
    assert rt.clients_seen(rt.inet6_log)[-1] == "2001:db8:1::2"
    # Guest Wi-Fi default (exit_node_allow_lan = false): the home LAN stays closed.
    assert rt.fetch(rt.lap, f"http://{LAN_HOST}:8000/", timeout=2) is None
    assert rt.clients_seen(rt.lan_log) == []


def test_bridged_device_uses_the_laptop_as_exit_node_with_kill_switch(rt):
    """`use_exit_node = "tlaptop"`: the device's internet goes via the laptop's
    approved exit node, not the box's own uplink; with the laptop gone, none
    of it leaks out of the box's uplink."""
    key = rt.auth_key()
    cli, lap_proc, lap = rt.exit_laptop(key)
    cfg = rt.routing_config(key, 'use_exit_node = "tlaptop"\n')
    r = rt.run(rt.box, [meshbridge_bin(), "--check-config", str(cfg)], check=False)
    assert r.returncode == 0, r
    rt.start_box(cfg)
    box = rt.registered_box(["10.77.1.0/24"])
    # The laptop takes the devices' packets from the box only from its approved bridge subnet.
    rt.approve(box, "10.77.1.0/24")
    wait_for(lambda: (p := box_peer(rt, cli)) and "10.77.1.0/24" in (p.get("PrimaryRoutes") or []),
             timeout=30, what="the box's bridge route on the laptop")
    wait_for(lambda: "goes via the exit node" in rt.box_log.read_text(), timeout=30,
             what="the box to pick the laptop as exit node")
    dev_ip = rt.udhcpc()
    assert dev_ip.startswith("10.77.1."), dev_ip
    rt.internet_via_laptop()

    # The laptop's tailscaled stops: the device's internet stops, and none
    # of it leaves through the box's uplink.
    tcpd, cap = rt.capture_uplink()
    seen_before = len(rt.clients_seen(rt.inet_log))
    lap_proc.send_signal(signal.SIGTERM)
    lap_proc.wait(timeout=15)
    for _ in range(3):
        assert rt.fetch(rt.dev, f"http://{INET_HOST}:8000/", timeout=2) is None
        r = rt.run(rt.dev, ["ping", "-n", "-c", "1", "-W", "1", INET_HOST], check=False)
        assert r.returncode != 0, r
    # The laptop leaves the tailnet (deleted on Headscale): the box has no
    # exit node at all now, and still nothing goes out of its own uplink.
    rt.run(rt.hs, [str(rt.tools / "headscale"), "-c", str(rt.hs_config), "nodes", "delete", "-i", str(lap["id"]),
                   "--force"])
    wait_for(lambda: "names no node of the tailnet" in rt.box_log.read_text(), timeout=30,
             what="the box to learn that its exit node is gone")
    for _ in range(3):
        assert rt.fetch(rt.dev, f"http://{INET_HOST}:8000/", timeout=2) is None
    leaked = rt.uplink_seen(tcpd, cap)
    assert INET_HOST not in leaked and "10.77.1." not in leaked, leaked
    assert len(rt.clients_seen(rt.inet_log)) == seen_before
    # The device still reaches the box itself.
    assert rt.run(rt.dev, ["ping", "-n", "-c", "1", "-W", "2", "10.77.1.1"], check=False).returncode == 0


@pytest.fixture
def rt_db(tmp_path, monkeypatch):
    """`rt` with Headscale's policy in its database (tagged keys for device nodes)."""
    import test_tailnet_control
    test_tailnet_control.policy_in_database(monkeypatch)
    yield from routes_tailnet(tmp_path)


def test_a_device_node_uses_the_exit_node_as_itself_with_kill_switch(rt_db):
    """`devices = "nodes"` and `use_exit_node = "tlaptop"`: the device's own
    node (not the box's) sends its internet to the laptop's exit node, so the
    internet host sees the laptop; with the laptop gone nothing of it leaves
    the box's own uplink."""
    from test_tailnet_devices import tagged_key
    rt = rt_db
    key = tagged_key(rt)
    cli, lap_proc, _ = rt.exit_laptop(rt.auth_key())
    cfg = rt.write_config(key, devices="nodes")
    cfg.write_text(cfg.read_text() + f'[routing]\nuplink = "{rt.uplink}"\nuse_exit_node = "tlaptop"\n')
    rt.start_box(cfg)
    dev_ip = rt.udhcpc()
    assert dev_ip.startswith("100."), dev_ip
    dev = wait_for(lambda: (n := nodes_named(rt, "printer")) and n[0].get("online") and n[0], timeout=40,
                   what="the device's node online")
    assert dev_ip in dev["ip_addresses"], dev
    rt.internet_via_laptop()

    tcpd, cap = rt.capture_uplink()
    seen_before = len(rt.clients_seen(rt.inet_log))
    lap_proc.send_signal(signal.SIGTERM)
    lap_proc.wait(timeout=15)
    for _ in range(3):
        assert rt.fetch(rt.dev, f"http://{INET_HOST}:8000/", timeout=2) is None
    leaked = rt.uplink_seen(tcpd, cap)
    assert INET_HOST not in leaked and dev_ip not in leaked, leaked
    assert len(rt.clients_seen(rt.inet_log)) == seen_before


def test_accept_routes_gives_bridged_devices_other_nodes_approved_subnet_routes(rt):
    """The laptop's approved subnet route (198.51.100.0/24) becomes a route
    for the bridged device with `accept_routes = true`, and is not used with
    `accept_routes = false` (only the laptop's own addresses)."""
    rt.laptop_internet()
    key = rt.auth_key()
    cli, _ = rt.laptop("tlaptop", key, "--advertise-routes=198.51.100.0/24")
    lap = wait_for(lambda: (n := nodes_named(rt, "tlaptop")) and n[0].get("available_routes") and n[0],
                   timeout=30, what="the laptop advertising its subnet")
    rt.approve(lap, "198.51.100.0/24")
    lap_ip = next(a for a in lap["ip_addresses"] if "." in a)

    def start(accept):
        cfg = rt.write_config(key)
        cfg.write_text(cfg.read_text().replace('hostname = "tbox"\n',
                                               f'hostname = "tbox"\naccept_routes = {"true" if accept else "false"}\n'))
        rt.start_box(cfg)
        return cfg

    def lap_allowed_ips(cfg):
        r = rt.run(rt.box, [meshbridge_bin(), "status", "--json", "--config", str(cfg)], check=False)
        peers = [p for p in json.loads(r.stdout)["peers"] if p["name"] == "tlaptop"] if r.returncode == 0 else []
        return peers and peers[0]["allowed_ips"]

    cfg = start(False)
    box = rt.registered_box(["10.77.1.0/24"])
    # The laptop takes the device's packets from the box only from its approved bridge subnet.
    rt.approve(box, "10.77.1.0/24")
    wait_for(lambda: (p := box_peer(rt, cli)) and "10.77.1.0/24" in (p.get("PrimaryRoutes") or []),
             timeout=30, what="the box's bridge route on the laptop")
    dev_ip = rt.udhcpc()
    assert dev_ip.startswith("10.77.1."), dev_ip
    rt.ping(rt.dev, lap_ip)
    allowed = wait_for(lambda: lap_allowed_ips(cfg), timeout=30, what="the laptop in meshbridge status")
    assert "198.51.100.0/24" not in allowed, allowed
    r = rt.run(rt.dev, ["ping", "-n", "-c", "2", "-W", "1", "198.51.100.1"], check=False)
    assert r.returncode != 0, "accept_routes = false: the laptop's subnet is not a route\n" + r.stdout

    assert rt.stop_box() == 0
    cfg = start(True)
    wait_for(lambda: "198.51.100.0/24" in (lap_allowed_ips(cfg) or []), timeout=30,
             what="the laptop's subnet route in meshbridge status")
    rt.ping(rt.dev, "198.51.100.1", timeout=40)
