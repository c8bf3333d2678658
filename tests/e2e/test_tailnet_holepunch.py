"""Hole punching with call-me-maybe (issue #12): the box and the laptop each
sit behind a NAT namespace whose firewall drops unsolicited inbound UDP
(nftables masquerade + `ct state established` only), so a direct path only
opens when both sides ping each other at about the same time. The box has
traffic for the laptop (the bridged device pings it), which first goes over
DERP; the box sends a disco call-me-maybe with its endpoints over DERP and
pings the laptop's endpoints; the path becomes direct (the laptop's
`tailscale status` / `tailscale ping` say so) and the laptop logged the
box's call-me-maybe (tailscaled with magicsock debug logs).

The laptop learns the box's public endpoint from the netmap (the box sends
it with its home region) or first from the call-me-maybe, whichever arrives
first; tailscaled also sends its own call-me-maybe when it answers over
DERP. So this test checks the direct path and that the laptop got the
box's call, not which message opened the path (the unit test
`call_me_maybe_over_the_relay_punches_through_both_firewalls` isolates
that).

    [hs]  bridge 10.99.0.1/24: headscale, derper (region 900, STUN 3478)
    [bnat] 10.99.0.30 -- 192.168.10.1   [box] 192.168.10.2: meshbridge
    [lnat] 10.99.0.40 -- 192.168.20.1   [lap] 192.168.20.2: tailscaled
    [dev] --veth--> the box's bridge

SKIPS only when the pinned Go programs are absent.
"""

import pytest

import test_tailnet_control

from site_ns import sh, wait_for
from test_tailnet_box import BOX_PORT, box_peer
from test_tailnet_control import CONTROL, nodes_named, tailnet_in
from test_tailnet_derp import DerpTailnet

# Masquerade out; from outside only what answers a flow from inside. An
# unsolicited datagram for the NAT's own address is dropped in input (and
# counted), so its conntrack entry is never confirmed, as on a home router.
NAT = """table ip mbnat {{
  chain mbpost {{ type nat hook postrouting priority 100; oifname "{up}" masquerade; }}
  chain mbforward {{
    type filter hook forward priority 0; policy accept;
    iifname "{up}" ct state established,related accept
    iifname "{up}" drop
  }}
  chain mbinput {{
    type filter hook input priority 0; policy accept;
    iifname "{up}" ct state established,related accept
    iifname "{up}" meta l4proto udp counter drop
  }}
}}
"""


class NatTailnet(DerpTailnet):
    def __init__(self, tmp, tools):
        super().__init__(tmp, tools)
        self.bnat = self._ns("bnat")
        self.lnat = self._ns("lnat")
        br = f"{self.p}br"
        for ns, nat, tag, lan, pub in ((self.box, self.bnat, "b", "192.168.10", "10.99.0.30"),
                                       (self.lap, self.lnat, "l", "192.168.20", "10.99.0.40")):
            # The node's link now ends in its NAT namespace, not on the bridge.
            inner, node_if = f"{self.p}{tag}1", f"{self.p}{tag}0"
            sh(["ip", "-n", self.hs, "link", "set", inner, "netns", nat])
            self.run(nat, ["ip", "addr", "add", f"{lan}.1/24", "dev", inner])
            self.run(nat, ["ip", "link", "set", inner, "up"])
            self.run(ns, ["ip", "addr", "flush", "dev", node_if])
            self.run(ns, ["ip", "addr", "add", f"{lan}.2/24", "dev", node_if])
            self.run(ns, ["ip", "route", "add", "default", "via", f"{lan}.1"])
            up, up_peer = f"{self.p}{tag}u0", f"{self.p}{tag}u1"
            sh(["ip", "link", "add", up, "type", "veth", "peer", "name", up_peer])
            sh(["ip", "link", "set", up, "netns", nat])
            sh(["ip", "link", "set", up_peer, "netns", self.hs])
            sh(["ip", "-n", self.hs, "link", "set", up_peer, "master", br])
            sh(["ip", "-n", self.hs, "link", "set", up_peer, "up"])
            self.run(nat, ["ip", "addr", "add", f"{pub}/24", "dev", up])
            self.run(nat, ["ip", "link", "set", up, "up"])
            self.run(nat, ["sysctl", "-qw", "net.ipv4.ip_forward=1"])
            f = self.tmp / f"nat-{tag}.nft"
            f.write_text(NAT.format(up=up))
            self.run(nat, ["nft", "-f", str(f)])
        wait_for(lambda: self.run(self.box, ["curl", "-sf", f"{CONTROL}/health"], check=False).returncode == 0,
                 timeout=20, what="headscale through the box's NAT")

    def tailscaled_verbose(self, name, auth_key):
        """tailscaled as in test_tailnet_box, with --verbose=1 (for the
        magicsock debug lines)."""
        d = self.tmp / f"ts-{name}"
        d.mkdir()
        sock = d / "tailscaled.sock"
        env = {"TS_LOGS_DIR": str(d), "TS_NO_LOGS_NO_SUPPORT": "true", "TS_DISABLE_PORTMAPPER": "1"}
        self.lap_log = self.tmp / f"tailscaled-{name}.log"
        self.spawn(self.lap, [str(self.tools / "tailscaled"), f"--tun={self.p}ts", f"--statedir={d}",
                              f"--state={d}/tailscaled.state", f"--socket={sock}", "--port=41641", "--verbose=1"],
                   self.lap_log, env=env)
        wait_for(lambda: sock.exists(), timeout=20, what="tailscaled socket")
        cli = [str(self.tools / "tailscale"), f"--socket={sock}"]
        self.run(self.lap, cli + ["up", f"--login-server={CONTROL}", f"--auth-key={auth_key}", f"--hostname={name}",
                                  "--accept-dns=false", "--netfilter-mode=off", "--accept-routes"], timeout=60)
        return cli

    def dropped(self, nat):
        out = self.run(nat, ["nft", "list", "table", "ip", "mbnat"]).stdout
        return int(out.split("counter packets ", 1)[1].split()[0])


# Everyone may reach everyone; the box's bridge route is approved when it is
# advertised (a later `approve-routes` would send the laptop a full map).
POLICY = """{
  "acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}],
  "autoApprovers": {"routes": {"10.77.1.0/24": ["alice@"]}}
}
"""


@pytest.fixture
def tn(tmp_path, monkeypatch):
    policy = tmp_path / "policy.hujson"
    policy.write_text(POLICY)
    cfg = test_tailnet_control.HEADSCALE_CONFIG.replace('path: ""', f'path: "{policy}"')
    assert cfg != test_tailnet_control.HEADSCALE_CONFIG
    monkeypatch.setattr(test_tailnet_control, "HEADSCALE_CONFIG", cfg)
    yield from tailnet_in(NatTailnet, tmp_path)


def test_call_me_maybe_punches_through_two_stateful_nats_and_the_path_becomes_direct(tn):
    tn.start_derper()
    key = tn.auth_key()
    cli = tn.tailscaled_verbose("tlaptop", key)
    wait_for(lambda: tn.ts_status(cli).get("BackendState") == "Running", timeout=30, what="tailscaled Running")
    # The magicsock debug lines ("got call-me-maybe") for the rest of the test.
    tn.run(tn.lap, cli + ["debug", "component-logs", "magicsock"])
    lap_ip = next(a for a in tn.ts_status(cli)["Self"]["TailscaleIPs"] if "." in a)

    tn.start_box(tn.write_config(key))
    # Both learn their NAT's public endpoint by STUN.
    wait_for(lambda: f"tailnet: public endpoint 10.99.0.30:{BOX_PORT} (STUN)" in tn.box_log.read_text(),
             timeout=30, what="the box's public endpoint behind its NAT")
    wait_for(lambda: "DERP region 900 connected" in tn.box_log.read_text(), timeout=30, what="the box on DERP")
    box = nodes_named(tn, "tbox")
    wait_for(lambda: (p := box_peer(tn, cli)) and "10.77.1.0/24" in (p.get("PrimaryRoutes") or []),
             timeout=30, what="the approved route on the laptop")
    seen = box_peer(tn, cli)
    assert not seen.get("CurAddr"), seen

    # Traffic from the box's side: the bridged device pings the laptop.
    tn.udhcpc()

    def direct():
        tn.run(tn.dev, ["ping", "-c", "1", "-W", "1", lap_ip], check=False)
        p = box_peer(tn, cli)
        return p and p.get("CurAddr") == f"10.99.0.30:{BOX_PORT}" and p

    wait_for(direct, timeout=60, interval=1, what="a direct path through both NATs")
    assert "call-me-maybe to" in tn.box_log.read_text(), "the box sent call-me-maybe over DERP"
    assert "got call-me-maybe" in tn.lap_log.read_text(), "the laptop got the box's call-me-maybe"
    wait_for(lambda: "direct path to" in tn.box_log.read_text(), timeout=20, what="the box's direct path")
    r = tn.run(tn.lap, cli + ["ping", "-c", "5", box[0]["ip_addresses"][0]], check=False, timeout=40)
    assert f"via 10.99.0.30:{BOX_PORT}" in r.stdout, r
    tn.ping(tn.dev, lap_ip)
    # The firewalls were in the way: pings that arrived before the other
    # side had sent were dropped.
    assert tn.dropped(tn.bnat) + tn.dropped(tn.lnat) > 0
