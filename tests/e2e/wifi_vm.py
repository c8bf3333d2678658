"""A small VM for the Wi-Fi tests: Debian's kernel (it ships mac80211_hwsim,
which the host's kernel may lack) under qemu-system-x86_64, with an initramfs
holding the host's hostapd, wpa_supplicant, iw, iproute2, busybox (udhcpc),
wg/wireguard-go and the meshbridge binary under test.

The kernel .deb and the initramfs pieces that do not change between runs are
cached under ~/.cache/meshbridge/wifi-vm/, keyed by the package versions, so
a second run only packs meshbridge and the test script (a second cpio archive
appended to the cached one; the kernel unpacks both).

`run(files, timeout)` boots the VM, runs /test.sh (from `files`) and returns
the serial console output. The guest powers off when the script ends.
"""

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

CACHE = Path(os.environ.get("MB_WIFI_VM_CACHE", Path.home() / ".cache/meshbridge/wifi-vm"))

# Kernel modules the tests need (their dependencies are added from the
# modules' own `depends=` info). mac80211_hwsim is loaded by the test
# script, with its parameters.
MODULES = ["mac80211_hwsim", "ccm", "gcm", "cmac", "ctr", "bridge", "tun", "veth"]
# Host programs copied in, with the shared libraries ldd names.
PROGRAMS = ["hostapd", "hostapd_cli", "wpa_supplicant", "wpa_cli", "iw", "ip", "wg", "wireguard-go"]
# Packages whose versions key the cache.
PACKAGES = ["hostapd", "wpasupplicant", "iw", "iproute2", "busybox", "busybox-static", "libc6",
            "wireguard-go", "wireguard-tools", "libssl3", "libnl-3-200"]

INIT = r"""#!/bin/busybox sh
/bin/busybox mkdir -p /bbin /proc /sys /dev /run /tmp /var
/bin/busybox --install -s /bbin
export PATH=/usr/sbin:/usr/bin:/bbin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
ln -s /run /var/run
mkdir -p /run/netns /dev/net /etc
echo "root:x:0:0:root:/root:/bin/sh" > /etc/passwd
echo "root:x:0:" > /etc/group
for m in $(cat /modules.order); do insmod /lib/modules/$m.ko || echo "insmod $m failed"; done
ip link set lo up
echo "VM-UP"
sh /test.sh
echo "VM-DONE rc=$?"
poweroff -f
"""


def _sh(cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw).stdout


def _version(pkg):
    r = subprocess.run(["dpkg-query", "-W", "-f=${Version}", pkg], capture_output=True, text=True)
    return r.stdout.strip() if r.returncode == 0 else "none"


def kernel_deb():
    """The linux-image .deb that linux-image-amd64 depends on, downloaded once."""
    debs = CACHE / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    name = None
    r = subprocess.run(["apt-cache", "depends", "linux-image-amd64"], capture_output=True, text=True)
    for line in r.stdout.splitlines():
        line = line.strip()
        if line.startswith("Depends: linux-image-"):
            name = line.split()[-1]
    if name:
        have = sorted(debs.glob(f"{name}_*.deb"))
        if have:
            return have[-1]
        subprocess.run(["apt-get", "download", name], cwd=debs, check=True,
                       capture_output=True)
        have = sorted(debs.glob(f"{name}_*.deb"))
        if have:
            return have[-1]
    # No apt metadata (offline): the newest one downloaded before.
    have = sorted(debs.glob("linux-image-*.deb"))
    if not have:
        raise RuntimeError("no linux-image-amd64 package: run apt-get update")
    return have[-1]


def regdb_deb():
    """wireless-regdb: the kernel loads regulatory.db when hostapd sets the
    country; without it every hostapd start waits for a regulatory update
    that never comes. Optional: None if it cannot be had."""
    debs = CACHE / "debs"
    have = sorted(debs.glob("wireless-regdb_*.deb"))
    if not have:
        subprocess.run(["apt-get", "download", "wireless-regdb"], cwd=debs, capture_output=True)
        have = sorted(debs.glob("wireless-regdb_*.deb"))
    return have[-1] if have else None


class Cpio:
    """A newc cpio archive (what the kernel unpacks as initramfs)."""

    def __init__(self):
        self.out = bytearray()
        self.ino = 1
        self.dirs = set()

    def _entry(self, name, mode, data=b""):
        name_b = name.encode() + b"\0"
        fields = [self.ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name_b), 0]
        self.ino += 1
        hdr = b"070701" + b"".join(b"%08X" % f for f in fields)
        self.out += hdr + name_b
        self.out += b"\0" * (-len(self.out) % 4)
        self.out += data
        self.out += b"\0" * (-len(self.out) % 4)

    def dir(self, path):
        path = path.strip("/")
        parts = path.split("/")
        for i in range(1, len(parts) + 1):
            p = "/".join(parts[:i])
            if p and p not in self.dirs:
                self.dirs.add(p)
                self._entry(p, 0o40755)

    def file(self, path, data, mode=0o755):
        path = path.strip("/")
        if "/" in path:
            self.dir(path.rsplit("/", 1)[0])
        self._entry(path, 0o100000 | mode, data)

    def symlink(self, path, target):
        path = path.strip("/")
        if "/" in path:
            self.dir(path.rsplit("/", 1)[0])
        self._entry(path, 0o120777, target.encode())

    def bytes(self):
        self._entry("TRAILER!!!", 0)
        self.out += b"\0" * (-len(self.out) % 512)
        return bytes(self.out)


def add_program(cpio, src, dest=None, seen=None):
    """Copy a program and the shared libraries ldd lists."""
    src = os.path.realpath(src)
    cpio.file(dest or src, Path(src).read_bytes())
    out = subprocess.run(["ldd", src], capture_output=True, text=True).stdout
    for line in out.splitlines():
        parts = line.split()
        lib = None
        if "=>" in parts and len(parts) >= 3 and parts[2].startswith("/"):
            lib = parts[2]
        elif parts and parts[0].startswith("/"):
            lib = parts[0]
        if lib and (seen is None or lib not in seen):
            if seen is not None:
                seen.add(lib)
            real = os.path.realpath(lib)
            cpio.file(real, Path(real).read_bytes())
            # /lib64/ld-linux-x86-64.so.2 and /lib/x86_64-linux-gnu/libc.so.6: the names
            # binaries ask for; with usrmerge /lib is /usr/lib.
            names = {lib}
            if lib.startswith("/lib/") or lib.startswith("/lib64/"):
                names.add("/usr" + lib)
            for n in sorted(names - {real}):
                cpio.symlink(n, real)


def _module_deps(kdir, name, index, acc):
    if name in acc:
        return
    path = index.get(name)
    if path is None:
        raise RuntimeError(f"kernel module {name} not in the kernel package")
    data = path.read_bytes()
    deps = []
    i = data.find(b"\0depends=")
    if i >= 0:
        end = data.index(b"\0", i + 1)
        deps = [d for d in data[i + 9:end].decode().split(",") if d]
    for d in deps:
        _module_deps(kdir, d, index, acc)
    if name not in acc:
        acc.append(name)


def base(deb):
    """The cached kernel and base initramfs for this kernel and these packages."""
    src = Path(__file__).read_bytes()
    regdb = regdb_deb()
    key = hashlib.sha256(
        (deb.name + "|" + (regdb.name if regdb else "-") + "|"
         + "|".join(f"{p}={_version(p)}" for p in PACKAGES)).encode() + src
    ).hexdigest()[:16]
    d = CACHE / key
    if (d / "base.cpio").exists() and (d / "vmlinuz").exists():
        return d
    d.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as t:
        _sh(["dpkg-deb", "-x", str(deb), t])
        vmlinuz = next(Path(t, "boot").glob("vmlinuz-*"))
        kdir = next(Path(t, "lib/modules").iterdir())
        index = {}
        for ko in kdir.rglob("*.ko"):
            index[ko.stem.replace("-", "_")] = ko
        order = []
        for m in MODULES:
            _module_deps(kdir, m, index, order)
        c = Cpio()
        for p in ["bbin", "proc", "sys", "dev", "run", "tmp", "etc", "root", "lib/modules"]:
            c.dir(p)
        c.file("init", INIT.encode())
        seen = set()
        # Debian's busybox (dynamic) or busybox-static: either, with its libraries.
        add_program(c, shutil.which("busybox"), "bin/busybox", seen)
        for prog in PROGRAMS:
            path = shutil.which(prog) or shutil.which(prog, path="/usr/sbin:/sbin")
            if not path:
                raise RuntimeError(f"{prog} is not installed (scripts/deps.sh installs it)")
            name = os.path.basename(path)
            add_program(c, path, f"usr/sbin/{name}", seen)
        for m in order:
            c.file(f"lib/modules/{m}.ko", index[m].read_bytes(), 0o644)
        if regdb:
            r = Path(t, "regdb")
            _sh(["dpkg-deb", "-x", str(regdb), str(r)])
            fw = r / "lib/firmware"
            for src_name, name in [("regulatory.db-debian", "regulatory.db"),
                                   ("regulatory.db.p7s-debian", "regulatory.db.p7s")]:
                if (fw / src_name).exists():
                    c.file(f"lib/firmware/{name}", (fw / src_name).read_bytes(), 0o644)
        # mac80211_hwsim is loaded by the test, with its radio count.
        c.file("modules.order", "\n".join(m for m in order if m != "mac80211_hwsim").encode() + b"\n", 0o644)
        tmp = d / "base.cpio.tmp"
        tmp.write_bytes(c.bytes())
        shutil.copy(vmlinuz, d / "vmlinuz.tmp")
        os.replace(d / "vmlinuz.tmp", d / "vmlinuz")
        os.replace(tmp, d / "base.cpio")
    return d


def run(files, timeout=300, memory="1024M", log=None):
    """Boot the VM with `files` ({guest path: bytes | (host path)}) added and
    return its console output. `/test.sh` is run; programs given as host
    paths are copied with their libraries."""
    d = base(kernel_deb())
    with tempfile.TemporaryDirectory() as t:
        c = Cpio()
        for path, data in files.items():
            if isinstance(data, Path):
                add_program(c, str(data), path)
            else:
                c.file(path, data if isinstance(data, bytes) else data.encode())
        initrd = Path(t, "initrd.cpio")
        with open(initrd, "wb") as f:
            f.write((d / "base.cpio").read_bytes())
            f.write(c.bytes())
        cmd = [
            "qemu-system-x86_64", "-machine", "q35", "-m", memory, "-smp", "2",
            "-nographic", "-no-reboot", "-nodefaults", "-serial", "stdio",
            "-kernel", str(d / "vmlinuz"), "-initrd", str(initrd),
            "-append", "console=ttyS0 quiet panic=-1 rdinit=/init",
        ]
        if os.access("/dev/kvm", os.R_OK | os.W_OK) and os.environ.get("MB_WIFI_VM_KVM") == "1":
            cmd[1:1] = ["-enable-kvm", "-cpu", "host"]
        else:
            cmd[1:1] = ["-accel", "tcg,thread=multi", "-cpu", "max"]
        console = Path(log) if log else Path(t, "console.log")
        with open(console, "wb") as f:
            p = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            try:
                p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
                f.write(b"\nVM-TIMEOUT\n")
        return console.read_text(errors="replace")
