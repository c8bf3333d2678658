"""A simulated site in network namespaces: the box, bridged devices, a remote
WireGuard peer. Every name carries a random prefix; everything is torn down
in `close()` (pytest fixtures call it, also on failure).

Topology (see ../shared/TESTBED.md):

    [dev*] --veth--> bridge in [box] (with meshbridge's TAP)
    [box]  --veth--> [peer]   underlay 198.51.100.0/24, peer runs wireguard-go
"""

import os
import re
import secrets
import signal
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def meshbridge_bin():
    env = os.environ.get("MESHBRIDGE_BIN")
    if env:
        return env
    for profile in ("release", "debug"):
        p = REPO / "target" / profile / "meshbridge"
        if p.exists():
            return str(p)
    raise RuntimeError("build meshbridge first (cargo build --release) or set MESHBRIDGE_BIN")


def sh(cmd, check=True, timeout=30, input=None):
    r = subprocess.run(cmd, shell=isinstance(cmd, str), capture_output=True, text=True, timeout=timeout, input=input)
    if check and r.returncode != 0:
        raise RuntimeError(f"command failed ({r.returncode}): {cmd}\nstdout: {r.stdout}\nstderr: {r.stderr}")
    return r


def avahi_browse(run, ns, pidfile, kind):
    """avahi-browse in `ns`, inside the mount namespace of the avahi daemon
    whose pid is in `pidfile`, resolved: [(name, host, address, port, txt)];
    `run` is a site's or tailnet's run(ns, cmd, ...)."""
    r = run(ns, ["sh", "-c", f"nsenter --mount=/proc/$(cat {pidfile})/ns/mnt avahi-browse -rtpk {kind}"],
            check=False, timeout=30)
    out = []
    for line in r.stdout.splitlines():
        f = line.split(";")
        if f[0] == "=" and f[2] == "IPv4":
            # avahi-browse -p escapes names (RFC 1035 \DDD); a real backslash would be \\.
            name = re.sub(r"\\(\d{3})", lambda m: chr(int(m.group(1))), f[3])
            out.append((name, f[6], f[7], f[8], f[9] if len(f) > 9 else ""))
    return out


def wait_for(pred, timeout=20.0, interval=0.2, what="condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


UDHCPC_SCRIPT = """#!/bin/sh
echo "$1 ip=$ip mask=$mask router=$router dns=$dns domain=$domain mtu=$mtu lease=$lease serverid=$serverid" >> "{out}"
case "$1" in
  deconfig) ip addr flush dev "$interface" ;;
  bound|renew)
    ip addr flush dev "$interface"
    ip addr add "$ip/$mask" dev "$interface"
    [ -n "$router" ] && ip route replace default via "$router" dev "$interface"
    ;;
esac
exit 0
"""

DHCLIENT_SCRIPT = """#!/bin/sh
env | grep -E '^(reason|new_|interface)' | sort | tr '\\n' ' ' >> "{out}"
echo >> "{out}"
case "$reason" in
  BOUND|RENEW|REBIND|REBOOT)
    ip addr flush dev "$interface"
    ip addr add "$new_ip_address/$new_subnet_mask" dev "$interface"
    [ -n "$new_routers" ] && ip route replace default via "$new_routers" dev "$interface"
    ;;
esac
exit 0
"""


class Site:
    def __init__(self, tmp: Path):
        self.p = "m" + secrets.token_hex(3)  # e.g. m1a2b3c: 7 chars, names stay <= 15
        self.tmp = Path(tmp)
        self.procs = []
        self.namespaces = []
        self.wg_ifaces = []
        self.box_proc = None
        self.box_log = self.tmp / "box.log"
        self.state_dir = self.tmp / "state"
        self.devices = {}
        self.box_key = sh(["wg", "genkey"]).stdout.strip()
        self.peer_key = sh(["wg", "genkey"]).stdout.strip()
        self.box_pub = sh(["wg", "pubkey"], input=self.box_key).stdout.strip()
        self.peer_pub = sh(["wg", "pubkey"], input=self.peer_key).stdout.strip()
        self.box = self._ns("box")
        self.peer = self._ns("peer")
        self._veth(f"{self.p}u0", self.box, f"{self.p}u1", self.peer)
        sh(["ip", "-n", self.box, "addr", "add", "198.51.100.1/24", "dev", f"{self.p}u0"])
        sh(["ip", "-n", self.peer, "addr", "add", "198.51.100.2/24", "dev", f"{self.p}u1"])

    # ---- plumbing -------------------------------------------------------
    def _ns(self, name):
        ns = f"{self.p}{name}"
        sh(["ip", "netns", "add", ns])
        self.namespaces.append(ns)
        sh(["ip", "-n", ns, "link", "set", "lo", "up"])
        return ns

    def _veth(self, a, ns_a, b, ns_b):
        sh(["ip", "link", "add", a, "type", "veth", "peer", "name", b])
        sh(["ip", "link", "set", a, "netns", ns_a])
        sh(["ip", "link", "set", b, "netns", ns_b])
        sh(["ip", "-n", ns_a, "link", "set", a, "up"])
        sh(["ip", "-n", ns_b, "link", "set", b, "up"])

    def run(self, ns, cmd, check=True, timeout=30):
        if isinstance(cmd, str):
            cmd = ["sh", "-c", cmd]
        return sh(["ip", "netns", "exec", ns] + cmd, check=check, timeout=timeout)

    def spawn(self, ns, cmd, log=None, env=None):
        logf = open(log or os.devnull, "ab")
        full_env = dict(os.environ, **(env or {}))
        p = subprocess.Popen(["ip", "netns", "exec", ns] + cmd, stdout=logf, stderr=subprocess.STDOUT, env=full_env,
                             start_new_session=True)
        self.procs.append(p)
        return p

    def close(self):
        procs = list(self.procs)
        if self.box_proc:
            procs.append(self.box_proc)
        for p in procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        for ns in self.namespaces:
            # Any process left in the namespace (e.g. a daemonised client) goes too.
            pids = sh(["ip", "netns", "pids", ns], check=False).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            sh(["ip", "netns", "del", ns], check=False)
        for ifc in self.wg_ifaces:
            try:
                os.unlink(f"/var/run/wireguard/{ifc}.sock")
            except FileNotFoundError:
                pass

    # ---- devices --------------------------------------------------------
    def add_device(self, name, ipv6=False):
        """A namespace whose veth is plugged into the box's bridge port list."""
        ns = self._ns(name)
        port = f"{self.p}{name[:3]}b"
        dev_if = f"{self.p}{name[:3]}d"
        if not ipv6:
            self.run(ns, ["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"])
            self.run(ns, ["sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1"])
        self._veth(port, self.box, dev_if, ns)
        self.devices[name] = (ns, port, dev_if)
        return ns, port, dev_if

    def udhcpc(self, name, hostname="printer", extra=None, once=True):
        ns, _, ifc = self.devices[name]
        out = self.tmp / f"{name}-udhcpc.out"
        script = self.tmp / f"{name}-udhcpc.sh"
        script.write_text(UDHCPC_SCRIPT.format(out=out))
        script.chmod(0o755)
        cmd = ["busybox", "udhcpc", "-f", "-i", ifc, "-s", str(script), "-x", f"hostname:{hostname}", "-t", "10", "-T", "2"]
        if once:
            cmd += ["-q", "-n"]
            r = self.run(ns, cmd + (extra or []), check=False, timeout=60)
            return r, out
        p = self.spawn(ns, cmd + (extra or []), log=self.tmp / f"{name}-udhcpc.log")
        return p, out

    def dhclient(self, name):
        ns, _, ifc = self.devices[name]
        out = self.tmp / f"{name}-dhclient.out"
        script = self.tmp / f"{name}-dhclient.sh"
        script.write_text(DHCLIENT_SCRIPT.format(out=out))
        script.chmod(0o755)
        r = self.run(ns, ["dhclient", "-1", "-4", "-cf", "/dev/null", "-lf", str(self.tmp / f"{name}.leases"),
                          "-pf", str(self.tmp / f"{name}-dhclient.pid"), "-sf", str(script), ifc],
                     check=False, timeout=60)
        # Without -d, dhclient returns once bound and stays in the background; close() kills it.
        return r, out

    def device_ip(self, name):
        ns, _, ifc = self.devices[name]
        out = self.run(ns, ["ip", "-4", "-o", "addr", "show", "dev", ifc]).stdout
        m = re.search(r"inet (\d+\.\d+\.\d+\.\d+)/", out)
        return m.group(1) if m else None

    # ---- mDNS devices (avahi, a real IPP printer) -------------------------
    def run_avahi_device(self, name, host_name, services_dir=None, then=None, dbus=True):
        """avahi-daemon (and optionally D-Bus and a program that needs it) in the
        device namespace, with a private /run so nothing touches the host."""
        ns, _, ifc = self.devices[name]
        d = self.tmp / f"{name}-avahi"
        d.mkdir(exist_ok=True)
        (d / "dbus.conf").write_text(
            '<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN" '
            '"http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">\n'
            "<busconfig><type>system</type><listen>unix:path=/run/dbus/system_bus_socket</listen>"
            '<policy context="default"><allow user="*"/><allow own="*"/><allow send_destination="*"/>'
            '<allow receive_sender="*"/></policy></busconfig>\n')
        (d / "avahi.conf").write_text(
            f"[server]\nhost-name={host_name}\nuse-ipv4=yes\nuse-ipv6=no\nallow-interfaces={ifc}\n"
            f"enable-dbus={'yes' if dbus else 'no'}\n[wide-area]\nenable-wide-area=no\n"
            "[publish]\npublish-workstation=no\npublish-hinfo=no\n[reflector]\n[rlimits]\n")
        svc = services_dir or (d / "services")
        Path(svc).mkdir(exist_ok=True)
        script = ["set -e", "mount -t tmpfs mbrun /run", "mkdir -p /run/dbus /run/avahi-daemon",
                  f"mount --bind {svc} /etc/avahi/services"]
        if dbus:
            script += [f"dbus-daemon --config-file={d}/dbus.conf --nofork --nopidfile &",
                       "for i in $(seq 50); do [ -S /run/dbus/system_bus_socket ] && break; sleep 0.1; done"]
        script += [f"avahi-daemon -f {d}/avahi.conf --no-drop-root --no-chroot --no-rlimits &"]
        if then:
            script += ["for i in $(seq 100); do [ -e /run/avahi-daemon/pid ] && break; sleep 0.1; done", "sleep 1", then]
        else:
            script += ["wait"]
        return self.spawn(ns, ["sh", "-c", "\n".join(script)], log=self.tmp / f"{name}-avahi.log")

    def run_ipp_printer(self, name="printer"):
        """A real IPP Everywhere printer, ippeveprinter "Office" on port 8631, announced by
        avahi in the device namespace `name`. Returns the directory each printed job is copied to."""
        spool = self.tmp / "spool"
        spool.mkdir()
        printed = self.tmp / "printed"
        printed.mkdir()
        cmd = self.tmp / "printcmd.sh"
        cmd.write_text(f'#!/bin/sh\ncp "$1" {printed}/\nexit 0\n')
        cmd.chmod(0o755)
        self.run_avahi_device(name, name, then=(
            f"exec ippeveprinter -p 8631 -d {spool} -c {cmd} -f application/pdf,image/jpeg,text/plain Office"))
        return printed

    # ---- the box --------------------------------------------------------
    def config_text(self, **over):
        ports = ", ".join(f'"{p}"' for (_, p, _) in self.devices.values())
        lease = over.get("lease_time", "1h")
        extra_dhcp = over.get("extra_dhcp", "")
        extra = over.get("extra", "")
        # Never touch the machine's own LEDs or watchdog: an empty board tree.
        (self.tmp / "board").mkdir(exist_ok=True)
        board = over.get("board", f'[board]\nroot = "{self.tmp / "board"}"\n')
        return f"""state_dir = "{self.state_dir}"
[mesh]
private_key = "{self.box_key}"
listen_port = 51820
address = "10.77.0.1/24"
[[mesh.peers]]
name = "laptop"
public_key = "{self.peer_pub}"
endpoint = "198.51.100.2:51820"
allowed_ips = ["10.77.0.2/32"]
persistent_keepalive = 25
[bridge]
name = "br-mesh"
ports = [{ports}]
[dhcp]
range = "10.77.1.100-10.77.1.200"
lease_time = "{lease}"
{extra_dhcp}
{extra}
{board}
"""

    def write_config(self, text=None, **over):
        path = self.tmp / "box.toml"
        path.write_text(text if text is not None else self.config_text(**over))
        return path

    def start_box(self, config=None, wait=True, **over):
        path = config or self.write_config(**over)
        self.box_proc = self.start_meshbridge(self.box, path, self.box_log, wait=wait)
        return self.box_proc

    def start_meshbridge(self, ns, path, log, wait=True):
        """Run meshbridge in `ns` with config `path`; wait until it is up."""
        offset = log.stat().st_size if log.exists() else 0
        logf = open(log, "ab")
        proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, meshbridge_bin(), "--config", str(path), "--log", "debug"],
            stdout=logf, stderr=subprocess.STDOUT, start_new_session=True, env=dict(os.environ, NO_COLOR="1"))
        if wait:
            def up():
                text = log.read_bytes()[offset:].decode(errors="replace")
                return " up: bridge" in text or proc.poll() is not None
            wait_for(up, what="meshbridge to come up")
            if proc.poll() is not None:
                raise AssertionError("meshbridge exited:\n" + log.read_text()[-3000:])
        return proc

    def _box_died(self):
        return self.box_proc.poll() is not None

    def stop_box(self, sig=signal.SIGTERM):
        p = self.box_proc
        os.killpg(p.pid, sig)
        rc = p.wait(timeout=15)
        self.box_proc = None
        return rc

    def box_log_text(self):
        return self.box_log.read_text()

    # ---- the peer ---------------------------------------------------------
    def start_peer(self, allowed_ips="10.77.0.0/16", routes=("10.77.1.0/24",), address6=None):
        ifc = f"{self.p}wg"
        self.wg_ifaces.append(ifc)
        keyfile = self.tmp / "peer.key"
        keyfile.write_text(self.peer_key + "\n")
        self.spawn(self.peer, ["wireguard-go", "-f", ifc], log=self.tmp / "wireguard-go.log")
        wait_for(lambda: Path(f"/var/run/wireguard/{ifc}.sock").exists(), what="wireguard-go socket")
        self.run(self.peer, ["wg", "set", ifc, "private-key", str(keyfile), "listen-port", "51820",
                             "peer", self.box_pub, "endpoint", "198.51.100.1:51820",
                             "allowed-ips", allowed_ips, "persistent-keepalive", "25"])
        self.run(self.peer, ["ip", "addr", "add", "10.77.0.2/24", "dev", ifc])
        if address6:
            self.run(self.peer, ["ip", "-6", "addr", "add", address6, "dev", ifc, "nodad"])
        self.run(self.peer, ["ip", "link", "set", ifc, "up"])
        for r in routes:
            self.run(self.peer, ["ip", "-6" if ":" in r else "-4", "route", "add", r, "dev", ifc])
        self.peer_if = ifc
        return ifc

    def start_peer_from_conf(self, conf_text, ns=None, suffix="wq"):
        """A wireguard-go peer (in `ns`, by default the peer namespace) brought up from a
        wg-quick file, as a phone or laptop would import it: `wg-quick strip` must accept
        the file; Address and routes for its AllowedIPs (except default routes) are set
        like wg-quick does. Returns the interface name."""
        ns = ns or self.peer
        ifc = f"{self.p}{suffix}"
        self.wg_ifaces.append(ifc)
        conf = self.tmp / f"{ifc}.conf"  # wg-quick takes the interface name from the file name
        conf.write_text(conf_text)
        conf.chmod(0o600)
        stripped = sh(["wg-quick", "strip", str(conf)]).stdout
        native = self.tmp / f"{ifc}.native.conf"
        native.write_text(stripped)
        native.chmod(0o600)
        self.spawn(ns, ["wireguard-go", "-f", ifc], log=self.tmp / f"wireguard-go-{suffix}.log")
        wait_for(lambda: Path(f"/var/run/wireguard/{ifc}.sock").exists(), what="wireguard-go socket")
        self.run(ns, ["wg", "setconf", ifc, str(native)])
        section, addrs, allowed = None, [], []
        for line in conf_text.splitlines():
            line = line.split("#", 1)[0].strip()
            if line.startswith("["):
                section = line.lower()
                continue
            key, _, value = line.partition("=")
            values = [v.strip() for v in value.split(",") if v.strip()]
            if section == "[interface]" and key.strip().lower() == "address":
                addrs += values
            elif section == "[peer]" and key.strip().lower() == "allowedips":
                allowed += values
        for a in addrs:
            self.run(ns, ["ip", "-6" if ":" in a else "-4", "addr", "add", a, "dev", ifc] + (["nodad"] if ":" in a else []))
        self.run(ns, ["ip", "link", "set", ifc, "up"])
        for r in allowed:
            if r.endswith("/0"):
                continue  # a real client would install a default route; the test namespace keeps its own
            self.run(ns, ["ip", "-6" if ":" in r else "-4", "route", "replace", r, "dev", ifc])
        return ifc

    # ---- home LAN and internet ------------------------------------------
    def add_uplink(self, ipv6=False):
        """box --{p}w0/w1--> [lan] home router + LAN host 192.168.1.1 --> [isp] --> [inet] 203.0.113.10.
        No NAT anywhere but in the box, so servers see who really talks to them."""
        self.lan = self._ns("lan")
        self.isp = self._ns("isp")
        self.inet = self._ns("inet")
        self.uplink = f"{self.p}w0"
        self._veth(self.uplink, self.box, f"{self.p}w1", self.lan)
        self._veth(f"{self.p}i0", self.lan, f"{self.p}i1", self.isp)
        self._veth(f"{self.p}n0", self.isp, f"{self.p}n1", self.inet)
        for ns, ifc, addr in [(self.box, self.uplink, "192.168.1.2/24"), (self.lan, f"{self.p}w1", "192.168.1.1/24"),
                              (self.lan, f"{self.p}i0", "192.0.2.2/24"), (self.isp, f"{self.p}i1", "192.0.2.1/24"),
                              (self.isp, f"{self.p}n0", "203.0.113.1/26"), (self.inet, f"{self.p}n1", "203.0.113.10/26")]:
            self.run(ns, ["ip", "addr", "add", addr, "dev", ifc])
        self.run(self.box, ["ip", "route", "add", "default", "via", "192.168.1.1"])
        self.run(self.lan, ["ip", "route", "add", "default", "via", "192.0.2.1"])
        self.run(self.isp, ["ip", "route", "add", "192.168.1.0/24", "via", "192.0.2.2"])
        self.run(self.inet, ["ip", "route", "add", "default", "via", "203.0.113.1"])
        for ns in (self.lan, self.isp):
            self.run(ns, ["sysctl", "-qw", "net.ipv4.ip_forward=1"])
        self.lan_log = self.tmp / "lan-http.log"
        self.inet_log = self.tmp / "inet-http.log"
        (self.tmp / "www-lan").mkdir()
        (self.tmp / "www-lan" / "index.html").write_text("home LAN host\n")
        (self.tmp / "www-inet").mkdir()
        (self.tmp / "www-inet" / "index.html").write_text("internet host\n")
        self.spawn(self.lan, ["python3", "-u", "-m", "http.server", "8000", "--bind", "192.168.1.1",
                              "--directory", str(self.tmp / "www-lan")], log=self.lan_log)
        self.spawn(self.inet, ["python3", "-u", "-m", "http.server", "8000", "--bind", "203.0.113.10",
                               "--directory", str(self.tmp / "www-inet")], log=self.inet_log)
        wait_for(lambda: self.run(self.isp, ["curl", "-s", "--max-time", "2", "http://203.0.113.10:8000/"],
                                  check=False).returncode == 0, what="internet host up")
        if ipv6:
            self._uplink_ipv6()
        return self.uplink

    def _uplink_ipv6(self):
        """The same chain with IPv6 (documentation prefix 2001:db8::/32), no NAT."""
        for ns, ifc, addr in [(self.box, self.uplink, "2001:db8:1::2/64"), (self.lan, f"{self.p}w1", "2001:db8:1::1/64"),
                              (self.lan, f"{self.p}i0", "2001:db8:2::2/64"), (self.isp, f"{self.p}i1", "2001:db8:2::1/64"),
                              (self.isp, f"{self.p}n0", "2001:db8:3::1/64"), (self.inet, f"{self.p}n1", "2001:db8:3::10/64")]:
            self.run(ns, ["ip", "-6", "addr", "add", addr, "dev", ifc, "nodad"])
        self.run(self.box, ["ip", "-6", "route", "add", "default", "via", "2001:db8:1::1"])
        self.run(self.lan, ["ip", "-6", "route", "add", "default", "via", "2001:db8:2::1"])
        self.run(self.isp, ["ip", "-6", "route", "add", "2001:db8:1::/64", "via", "2001:db8:2::2"])
        self.run(self.inet, ["ip", "-6", "route", "add", "default", "via", "2001:db8:3::1"])
        for ns in (self.lan, self.isp):
            self.run(ns, ["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"])
        self.inet6_log = self.tmp / "inet6-http.log"
        self.spawn(self.inet, ["python3", "-u", "-m", "http.server", "8000", "--bind", "2001:db8:3::10",
                               "--directory", str(self.tmp / "www-inet")], log=self.inet6_log)
        wait_for(lambda: self.run(self.isp, ["curl", "-s", "--max-time", "2", "http://[2001:db8:3::10]:8000/"],
                                  check=False).returncode == 0, what="IPv6 internet host up")

    def fetch(self, ns, url, timeout=3):
        r = self.run(ns, ["curl", "-s", "--max-time", str(timeout), url], check=False, timeout=timeout + 10)
        return r.stdout if r.returncode == 0 else None

    @staticmethod
    def clients_seen(log):
        """Client addresses in a python http.server log."""
        return re.findall(r"^([0-9a-fA-F.:]+) - - ", log.read_text(), flags=re.M) if log.exists() else []

    def ping(self, ns, addr, count=1, timeout=2, extra=None):
        r = self.run(ns, ["ping", "-n", "-c", str(count), "-W", str(timeout)] + (extra or []) + [addr], check=False,
                     timeout=count * timeout + 10)
        return r.returncode == 0, r.stdout + r.stderr

    def ping_until(self, ns, addr, timeout=20, extra=None):
        """A peer that just (re)started re-handshakes first: retry, don't sleep blindly."""
        return wait_for(lambda: self.ping(ns, addr, extra=extra)[0], timeout=timeout, what=f"ping {addr} from {ns}")
