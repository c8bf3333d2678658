"""Home DERP region by latency (issue #12): the DERP map has two regions, each
a real `derper` (TLS, self-signed, `InsecureForTests`) with its own STUN
port, one made slower. The box measures each region by STUN from its
WireGuard socket, makes the faster one its home, connects to it and reports
it to Headscale (Hostinfo.NetInfo.PreferredDERP): the laptop's `tailscale
status` shows that region as the box's relay. Swapping the delays moves the
box (hysteresis lets a move through when the new region is clearly faster).

Topology as in test_tailnet_derp.py, plus a second derper on 10.99.0.2
(region 901, DERP :8444) beside the first on 10.99.0.1 (region 900, DERP
:8443), both in the hs namespace. The test machine's kernel has no sch_netem
(`tc qdisc ... netem` is refused), so the delay is made where the box
measures it: each region's STUN port is `slow_stun.py` (a STUN responder
that answers after the delay in a file) instead of derper's own STUN.
SKIPS only when the pinned Go programs are absent.
"""

import json
import time
from pathlib import Path

import pytest

import test_tailnet_control
from site_ns import meshbridge_bin, wait_for
from test_tailnet_box import BoxTailnet, box_peer
from test_tailnet_control import tailnet_in

TWO_REGIONS = """\
regions:
  900:
    regionid: 900
    regioncode: ra
    regionname: testbed-a
    nodes:
      - name: 900a
        regionid: 900
        hostname: 10.99.0.1
        ipv4: 10.99.0.1
        ipv6: none
        stunport: 3480
        derpport: 8443
        insecurefortests: true
  901:
    regionid: 901
    regioncode: rb
    regionname: testbed-b
    nodes:
      - name: 901a
        regionid: 901
        hostname: 10.99.0.2
        ipv4: 10.99.0.2
        ipv6: none
        stunport: 3481
        derpport: 8444
        insecurefortests: true
"""

DELAY_MS = 80


class TwoDerpTailnet(BoxTailnet):
    def __init__(self, tmp, tools):
        super().__init__(tmp, tools)
        self.run(self.hs, ["ip", "addr", "add", "10.99.0.2/24", "dev", f"{self.p}br"])

    def start_derper(self, ip, port, stun):
        d = self.tmp / f"derper-{ip}"
        d.mkdir()
        self.spawn(self.hs, [str(self.tools / "derper"), "-c", str(d / "derper.key"), "-a", f"{ip}:{port}",
                             "--http-port=-1", "--certmode=manual", f"--certdir={d}", f"--hostname={ip}",
                             "--stun=false"], self.tmp / f"derper-{ip}.log")
        delay = self.tmp / f"delay-{ip}"
        delay.write_text("0\n")
        self.spawn(self.hs, ["python3", str(Path(__file__).with_name("slow_stun.py")), ip, str(stun), str(delay)],
                   self.tmp / f"stun-{ip}.log")
        wait_for(lambda: self.run(self.box, ["curl", "-skf", "--max-time", "2", f"https://{ip}:{port}/derp/probe"],
                                  check=False).returncode == 0, timeout=30, what=f"derper {ip} to answer")

    def delay_to(self, ip, ms=DELAY_MS):
        """STUN answers of the region at `ip` take `ms` milliseconds; the
        other region's none."""
        for other in ("10.99.0.1", "10.99.0.2"):
            (self.tmp / f"delay-{other}").write_text(f"{ms if other == ip else 0}\n")

    def box_status(self, cfg):
        r = self.run(self.box, [meshbridge_bin(), "status", "--json", "--config", str(cfg)], check=False)
        return r.returncode == 0 and json.loads(r.stdout).get("tailnet")


@pytest.fixture
def tn(tmp_path, monkeypatch):
    monkeypatch.setattr(test_tailnet_control, "DERPMAP", TWO_REGIONS)
    yield from tailnet_in(TwoDerpTailnet, tmp_path)


def latency(status, region):
    return next((r.get("latency_ms") for r in status.get("derp_regions") or [] if r["id"] == region), None)


def test_home_derp_is_the_faster_region_and_moves_when_latencies_swap(tn):
    tn.start_derper("10.99.0.1", 8443, 3480)
    tn.start_derper("10.99.0.2", 8444, 3481)
    tn.delay_to("10.99.0.1")

    key = tn.auth_key()
    cli = tn.tailscaled_routes("tlaptop", key)
    wait_for(lambda: tn.ts_status(cli).get("BackendState") == "Running", timeout=30, what="tailscaled Running")
    cfg = tn.write_config(key)
    tn.start_box(cfg)

    # 1. Region 901 is faster: the box's home, connected, and in status.
    def measured(home):
        s = tn.box_status(cfg)
        return s and s.get("derp_home") == home and latency(s, 900) and latency(s, 901) and s

    s = wait_for(lambda: measured(901), timeout=30, what="home region 901 in meshbridge status")
    assert latency(s, 900) > 70, s["derp_regions"]
    assert latency(s, 901) < 30, s["derp_regions"]
    assert [r["code"] for r in s["derp_regions"]] == ["ra", "rb"], s
    wait_for(lambda: "DERP region 901 connected" in tn.box_log.read_text(), timeout=30,
             what="the box's DERP connection to region 901")
    text = tn.run(tn.box, [meshbridge_bin(), "status", "--config", str(cfg)]).stdout
    assert "Home DERP region: 901 (rb)" in text, text
    assert "DERP latency: 900 " in text, text
    # Reported to Headscale: the laptop relays to the box through region 901.
    wait_for(lambda: (p := box_peer(tn, cli)) and p.get("Relay") == "rb", timeout=30,
             what="the laptop to see the box's home region rb")

    # 2. Swapped: region 900 is the faster one now; the box moves (a round
    # every 20 s; hysteresis lets an 80 ms difference through).
    tn.delay_to("10.99.0.2")
    s = wait_for(lambda: measured(900), timeout=90, interval=1, what="home region to move to 900")
    assert latency(s, 901) > 70, s["derp_regions"]
    wait_for(lambda: "DERP region 900 connected" in tn.box_log.read_text(), timeout=30,
             what="the box's DERP connection to region 900")
    wait_for(lambda: (p := box_peer(tn, cli)) and p.get("Relay") == "ra", timeout=30,
             what="the laptop to see the box's home region ra")

    # 3. Near-equal regions (no delay at all): no flapping back, over two
    # more rounds.
    tn.delay_to("10.99.0.1", 0)
    time.sleep(45)
    s = tn.box_status(cfg)
    assert s["derp_home"] == 900 and latency(s, 901) < 30, s
    assert tn.box_log.read_text().count("tailnet: home DERP region 900") == 1, "moved once, no flapping"
    assert tn.box_log.read_text().count("tailnet: home DERP region 901") == 1, "901 first, directly"
