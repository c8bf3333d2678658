"""bench/run's "devices" scenario (issue #13): N bridged devices (each a veth
into the box's bridge and `busybox udhcpc` in a namespace of its own) become
N tailnet nodes of their own on one meshbridge box, in a real Headscale.

    [hs]   bridge 10.99.0.1/24: headscale (plain-HTTP control)
    [lap]  10.99.0.20: tailscaled (the anchor: one node as a program of its own)
    [box]  10.99.0.10: meshbridge [tailnet] devices = "nodes", N bridge ports
    [d0..] udhcpc -x hostname:devNN on each port

Measured: the time from starting the N DHCP clients until every device holds
its node's 100.x address and Headscale lists every device node online; the
daemon's RSS with the box's own node only and with the N device nodes (the
difference per device node); the daemon's idle CPU over 30 s with the N
nodes; and, as the anchor, the laptop's `tailscaled` (one node with the same
N + 1 peers) over the same 30 s."""

import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "e2e"))

import test_tailnet_control  # noqa: E402
from site_ns import UDHCPC_SCRIPT, sh, wait_for  # noqa: E402

POLICY = """{
  "tagOwners": {"tag:device": ["alice@"]},
  "acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}]
}
"""

TICK = os.sysconf("SC_CLK_TCK")


def rss_kib(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def cpu_ticks(pid):
    """utime + stime of every thread of `pid`."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def run(tmp, binary, n, log):
    """Build the site, measure, tear down; returns the figures."""
    test_tailnet_control.HEADSCALE_CONFIG = test_tailnet_control.HEADSCALE_CONFIG.replace(
        'mode: file\n  path: ""', "mode: database")
    os.environ["MESHBRIDGE_BIN"] = str(binary)
    import tailnet_scenario
    tools = tailnet_scenario.tools()
    from test_tailnet_box import BoxTailnet
    tmp = Path(tmp) / "devices"
    tmp.mkdir(parents=True, exist_ok=True)
    tn = BoxTailnet(tmp, tools)
    try:
        tn.auth_key()
        pol = tmp / "policy.hujson"
        pol.write_text(POLICY)
        tn.run(tn.hs, [str(tools / "headscale"), "-c", str(tn.hs_config), "policy", "set", "-f", str(pol)])
        users = {u["name"]: u for u in tn.headscale("users", "list")}
        key = tn.headscale("preauthkeys", "create", "--user", str(users["alice"]["id"]), "--reusable",
                           "--expiration", "24h", "--tags", "tag:device")["key"]
        cli = tn.tailscaled_routes("tlaptop", tn.auth_key())
        wait_for(lambda: tn.ts_status(cli).get("BackendState") == "Running", timeout=60, what="tailscaled")
        ts_proc = next(p for p in tn.procs if any("tailscaled" in str(a) and "--tun" in " ".join(map(str, p.args))
                                                  for a in p.args))
        ports, devs = [], []
        for i in range(n):
            ns = tn._ns(f"d{i}")
            port, ifn = f"{tn.p}p{i}", f"{tn.p}q{i}"
            sh(["ip", "link", "add", port, "type", "veth", "peer", "name", ifn])
            sh(["ip", "link", "set", port, "netns", tn.box])
            sh(["ip", "link", "set", ifn, "netns", ns])
            sh(["ip", "-n", tn.box, "link", "set", port, "up"])
            sh(["ip", "-n", ns, "link", "set", ifn, "up"])
            ports.append(port)
            devs.append((ns, ifn, f"dev{i:02d}"))
        cfg = tn.write_config(key, devices="nodes")
        cfg.write_text(cfg.read_text().replace(f'ports = ["{tn.port}"]',
                                               "ports = [" + ", ".join(f'"{p}"' for p in ports) + "]"))
        tn.start_box(cfg)
        pid = tn.box_proc.pid
        wait_for(lambda: any(x.get("given_name") == "tbox" and x.get("online") for x in tn.nodes()), timeout=60,
                 what="the box online")
        time.sleep(5)
        rss_box_only = rss_kib(pid)
        log(f"devices: box node only: RSS {rss_box_only} KiB; starting {n} DHCP clients")
        t0 = time.monotonic()
        clients = []
        for ns, ifn, name in devs:
            out = tmp / f"{name}.out"
            script = tmp / f"{name}.sh"
            script.write_text(UDHCPC_SCRIPT.format(out=out))
            script.chmod(0o755)
            clients.append((out, subprocess.Popen(
                ["ip", "netns", "exec", ns, "busybox", "udhcpc", "-f", "-i", ifn, "-s", str(script), "-x",
                 f"hostname:{name}", "-t", "30", "-T", "3", "-q", "-n"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)))

        def leased():
            ok = 0
            for out, p in clients:
                if out.exists() and " ip=100." in out.read_text():
                    ok += 1
            return ok

        def online():
            names = {x.get("given_name"): x for x in tn.nodes()}
            return sum(1 for _, _, name in devs if names.get(name, {}).get("online"))

        def done():
            got = (leased(), online())
            log(f"devices: {got[0]} leased, {got[1]} online")
            return got == (n, n)

        wait_for(done, timeout=300, interval=1,
                 what=f"{n} devices with their node addresses, {n} nodes online")
        took = time.monotonic() - t0
        for _, p in clients:
            p.wait(timeout=30)
        log(f"devices: {n} nodes online and leased after {took:.1f} s")
        time.sleep(20)  # netmap churn settles
        rss_all = rss_kib(pid)
        c0, a0, w0 = cpu_ticks(pid), cpu_ticks(ts_proc.pid), time.monotonic()
        time.sleep(30)
        c1, a1, w1 = cpu_ticks(pid), cpu_ticks(ts_proc.pid), time.monotonic()
        if os.environ.get("MB_PERF"):
            data = tmp / "perf.data"
            graph = ["--call-graph", "dwarf"] if os.environ.get("MB_PERF") == "dwarf" else ["-g"]
            sh(["perf", "record", "-F", "499", *graph, "-o", str(data), "-p", str(pid), "--", "sleep", "15"],
               check=False, timeout=60)
            rep = sh(["perf", "report", "-i", str(data), "--no-children", "--stdio", "--percent-limit", "2"],
                     check=False, timeout=120)
            log("perf (idle daemon):\n" + rep.stdout[:8000])
        idle = (c1 - c0) / TICK / (w1 - w0) * 100
        anchor_idle = (a1 - a0) / TICK / (w1 - w0) * 100
        return {
            "n": n, "took": took, "rss_box_only": rss_box_only, "rss_all": rss_all,
            "per_node_kib": (rss_all - rss_box_only) / n, "idle_pct": idle,
            "anchor_rss": rss_kib(ts_proc.pid), "anchor_idle_pct": anchor_idle,
            "versions": tailnet_scenario.versions(tools),
        }
    except BaseException:
        if tn.box_log.exists():
            log("last lines of the box log:\n" + "\n".join(tn.box_log.read_text(errors="replace").splitlines()[-30:]))
        raise
    finally:
        tn.close()
        log("devices: namespaces, processes and sockets removed")


def markdown(res, ctx):
    r = res
    per_node_mb = r["per_node_kib"] / 1024
    return f"""## {r['n']} bridged devices as tailnet nodes of their own (`bench/run --scenario devices`)

Command: `{ctx['cmdline']}` (as root, from the repository root), {ctx['date']}, on {ctx['mach']['nproc']} x
{ctx['mach']['cpu']}; {ctx['versions']}. The section between the `bench/run devices` markers is rewritten
by each run of this scenario.

{r['n']} devices (veths into the box's bridge, `busybox udhcpc -x hostname:devNN` each in its own
namespace) start their DHCP clients at once on a meshbridge box with `[tailnet] devices = "nodes"`
in a real Headscale. The anchor is what one node costs as a program of its own: the laptop's
`tailscaled` (same tailnet, the same {r['n'] + 1} peers), measured over the same 30 s.

| figure | meshbridge | anchor (one `tailscaled`) | budget |
|---|---:|---:|---:|
| time until all {r['n']} devices hold their node's address and all {r['n']} nodes are online | {r['took']:.1f} s | - | - |
| daemon RSS, box node only | {r['rss_box_only'] / 1024:.1f} MiB | - | - |
| daemon RSS with {r['n']} device nodes | {r['rss_all'] / 1024:.1f} MiB | {r['anchor_rss'] / 1024:.1f} MiB (1 node) | - |
| RSS per device node | {per_node_mb:.2f} MiB | {r['anchor_rss'] / 1024:.1f} MiB | 0.5 MB |
| idle CPU, whole daemon ({r['n']} device nodes + the box's) | {r['idle_pct']:.2f} % of a core | {r['anchor_idle_pct']:.2f} % (1 node) | < 1 % |
| idle CPU per node | {r['idle_pct'] / (r['n'] + 1):.3f} % | {r['anchor_idle_pct']:.3f} % | - |
"""
