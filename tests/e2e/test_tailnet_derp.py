"""DERP (issue #12): with UDP between the laptop and the box blocked, the
laptop (real `tailscaled`) still reaches the bridged device, and the device
the laptop, through a real `derper` (TLS, self-signed certificate marked
`InsecureForTests` in the DERP map); once UDP is unblocked, disco upgrades
the path to direct. The box learns its public endpoint by STUN to derper.

Topology as in test_tailnet_box.py, plus `derper` on 10.99.0.1:8443 (region
900) in the hs namespace. nftables in the box's namespace drops every UDP
datagram to and from the laptop (10.99.0.20), so the only way between them
is the TCP/TLS connection each keeps to the DERP server: the test fails if
the box's DERP client (TLS, login, relaying, disco over DERP) is broken.
SKIPS only when the pinned Go programs are absent.
"""

import pytest

from site_ns import wait_for
from test_tailnet_box import BOX_PORT, BoxTailnet, box_peer
from test_tailnet_control import nodes_named, tailnet_in

BLOCK = """table inet mbderp {
  chain input { type filter hook input priority 0; ip saddr 10.99.0.20 meta l4proto udp drop; }
  chain output { type filter hook output priority 0; ip daddr 10.99.0.20 meta l4proto udp drop; }
}
"""


class DerpTailnet(BoxTailnet):
    def start_derper(self):
        d = self.tmp / "derper"
        d.mkdir()
        self.spawn(self.hs, [str(self.tools / "derper"), "-c", str(d / "derper.key"), "-a", "10.99.0.1:8443",
                             "--http-port=-1", "--certmode=manual", f"--certdir={d}", "--hostname=10.99.0.1",
                             "--stun=true", "--stun-port=3478"], self.tmp / "derper.log")
        wait_for(lambda: self.run(self.box, ["curl", "-skf", "--max-time", "2", "https://10.99.0.1:8443/derp/probe"],
                                  check=False).returncode == 0, timeout=30, what="derper to answer")

    def block_udp(self):
        f = self.tmp / "block.nft"
        f.write_text(BLOCK)
        self.run(self.box, ["nft", "-f", str(f)])

    def unblock_udp(self):
        self.run(self.box, ["nft", "delete", "table", "inet", "mbderp"])


@pytest.fixture
def tn(tmp_path):
    yield from tailnet_in(DerpTailnet, tmp_path)


def test_udp_blocked_traffic_flows_over_derp_then_the_path_becomes_direct(tn):
    tn.start_derper()
    tn.block_udp()
    key = tn.auth_key()
    cli = tn.tailscaled_routes("tlaptop", key)
    wait_for(lambda: tn.ts_status(cli).get("BackendState") == "Running", timeout=30, what="tailscaled Running")
    lap_ip = next(a for a in tn.ts_status(cli)["Self"]["TailscaleIPs"] if "." in a)

    tn.start_box(tn.write_config(key))
    box = wait_for(lambda: (n := nodes_named(tn, "tbox")) and n[0].get("available_routes") and n,
                   timeout=30, what="the box on headscale with its route")
    wait_for(lambda: "DERP region 900 connected" in tn.box_log.read_text(), timeout=30,
             what="the box's DERP connection (TLS + login)")
    # STUN from the WireGuard socket to derper's port 3478: our endpoint as
    # the server sees it (no NAT here, so the box's own address and port).
    wait_for(lambda: f"tailnet: public endpoint 10.99.0.10:{BOX_PORT} (STUN)" in tn.box_log.read_text(),
             timeout=30, what="the box's public endpoint from STUN")
    tn.headscale("nodes", "approve-routes", "-i", str(box[0]["id"]), "-r", "10.77.1.0/24")
    wait_for(lambda: (p := box_peer(tn, cli)) and "10.77.1.0/24" in (p.get("PrimaryRoutes") or []),
             timeout=30, what="the approved route on the laptop")
    # The box reported region 900 as its home: the laptop relays to it there.
    assert box_peer(tn, cli).get("Relay") == "tb", box_peer(tn, cli)

    # 1. UDP blocked: ping and HTTP both ways go through DERP.
    dev_ip = tn.udhcpc()
    tn.ping(tn.lap, dev_ip, timeout=60)
    tn.spawn(tn.dev, ["python3", "-m", "http.server", "8000", "--bind", dev_ip, "--directory", str(tn.tmp)],
             tn.tmp / "http.log")
    (tn.tmp / "hello.txt").write_text("hello from the printer\n")

    def fetched():
        r = tn.run(tn.lap, ["curl", "-sf", "--max-time", "3", f"http://{dev_ip}:8000/hello.txt"], check=False)
        return r.returncode == 0 and r.stdout

    assert wait_for(fetched, timeout=30, what="HTTP from the device over DERP") == "hello from the printer\n"
    tn.ping(tn.dev, lap_ip)
    lap_http = tn.spawn(tn.lap, ["python3", "-m", "http.server", "8001", "--bind", lap_ip, "--directory",
                                 str(tn.tmp)], tn.tmp / "lap-http.log")

    def fetched_back():
        r = tn.run(tn.dev, ["curl", "-sf", "--max-time", "3", f"http://{lap_ip}:8001/hello.txt"], check=False)
        return r.returncode == 0 and r.stdout

    assert wait_for(fetched_back, timeout=30, what="HTTP from the laptop over DERP") == "hello from the printer\n"
    assert lap_http.poll() is None
    seen = box_peer(tn, cli)
    assert not seen.get("CurAddr"), f"no direct path while UDP is blocked: {seen}"
    assert "direct path to" not in tn.box_log.read_text()

    # 2. Unblocked: disco finds the direct path; the laptop says so.
    tn.unblock_udp()

    def direct():
        tn.run(tn.lap, ["ping", "-c", "1", "-W", "1", dev_ip], check=False)
        p = box_peer(tn, cli)
        return p and p.get("CurAddr") == f"10.99.0.10:{BOX_PORT}" and p

    wait_for(direct, timeout=60, interval=1, what="a direct path after unblocking")
    r = tn.run(tn.lap, cli + ["ping", "-c", "5", box[0]["ip_addresses"][0]], check=False, timeout=40)
    assert f"via 10.99.0.10:{BOX_PORT}" in r.stdout, r
    assert "direct path to" in tn.box_log.read_text()
    assert wait_for(fetched, timeout=20, what="HTTP over the direct path") == "hello from the printer\n"

    # 3. Blocked again: the direct path dies (no pongs), both sides fall back
    # to DERP and traffic flows on.
    tn.block_udp()
    wait_for(lambda: "stopped answering; relaying" in tn.box_log.read_text(), timeout=40,
             what="the box to give up the direct path")
    tn.ping(tn.lap, dev_ip, timeout=60)
    assert wait_for(fetched, timeout=30, what="HTTP over DERP again") == "hello from the printer\n"
    tn.ping(tn.dev, lap_ip)
