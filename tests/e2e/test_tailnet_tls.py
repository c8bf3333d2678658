"""`https://` control URLs (issue #12): the real Headscale v0.29.2 serves its
control API over TLS (its `tls_cert_path` / `tls_key_path`) with a
certificate from a CA this test makes with openssl; the box does `GET /key`
and the ts2021 upgrade over TLS, verified against that CA (never falling back
to plaintext), and the real tailscaled v1.102.3 joins the same server with
`SSL_CERT_FILE` pointing to the CA.

* The box trusts the CA through `SSL_CERT_FILE` (as Go and OpenSSL honour
  it): it registers, the laptop sees it and reaches a bridged device
  through its approved route.
* The box does not trust the certificate: it does not register, `meshbridge
  status` (text and JSON) says the certificate is not trusted, it keeps
  retrying; once `[tailnet] ca_file` holds the right CA, the next attempt
  registers, without a restart.

Topology: test_tailnet_box.py's, Headscale on https://10.99.0.1:8444.
Needs the pinned Go programs and openssl; SKIPS only when the Go programs
are absent.
"""

import pytest

from site_ns import sh, wait_for
from test_tailnet_box import box_peer
from test_tailnet_control import nodes_named, require_gotools
from test_tailnet_login import LoginTailnet

CONTROL_TLS = "https://10.99.0.1:8444"

CA_CONFIG = """\
[req]
distinguished_name = dn
x509_extensions = v3_ca
prompt = no
[dn]
CN = {cn}
[v3_ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
"""

SERVER_EXT = """\
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = IP:10.99.0.1
authorityKeyIdentifier = keyid
"""


def make_ca(d, name):
    """A CA (key and self-signed certificate) in d/<name>.{key,pem}."""
    cfg = d / f"{name}.cnf"
    cfg.write_text(CA_CONFIG.format(cn=f"meshbridge test {name}"))
    sh(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", str(d / f"{name}.key"), "-out", str(d / f"{name}.pem"), "-days", "2", "-config", str(cfg)])
    return d / f"{name}.pem"


def make_server_cert(d, ca):
    """A server certificate for IP 10.99.0.1 signed by `ca`: d/server.{key,pem}."""
    cfg = d / "server-req.cnf"
    cfg.write_text(CA_CONFIG.format(cn="10.99.0.1"))
    ext = d / "server.ext"
    ext.write_text(SERVER_EXT)
    sh(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", str(d / "server.key"), "-out", str(d / "server.csr"), "-config", str(cfg)])
    sh(["openssl", "x509", "-req", "-in", str(d / "server.csr"), "-CA", str(ca), "-CAkey", str(ca.with_suffix(".key")),
        "-CAcreateserial", "-out", str(d / "server.pem"), "-days", "2", "-extfile", str(ext)])
    return d / "server.pem", d / "server.key"


class TlsTailnet(LoginTailnet):
    control = CONTROL_TLS

    def headscale_config_text(self):
        self.ca = make_ca(self.hsdir, "ca")
        self.other_ca = make_ca(self.hsdir, "other-ca")
        cert, key = make_server_cert(self.hsdir, self.ca)
        text = super().headscale_config_text()
        assert "listen_addr: 10.99.0.1:8080" in text
        text = text.replace("listen_addr: 10.99.0.1:8080", "listen_addr: 10.99.0.1:8444")
        return text + f"tls_cert_path: {cert}\ntls_key_path: {key}\n"

    def health_cmd(self):
        return ["curl", "-sf", "--cacert", str(self.ca), f"{self.control}/health"]


@pytest.fixture
def tn(tmp_path):
    t = TlsTailnet(tmp_path, require_gotools())
    try:
        yield t
    finally:
        t.close()


def test_the_box_joins_an_https_headscale_and_the_laptop_reaches_a_device_through_it(tn, monkeypatch):
    # Headscale answers only over TLS: plaintext HTTP on its port fails.
    r = tn.run(tn.box, ["curl", "-s", "--max-time", "5", "http://10.99.0.1:8444/health"], check=False)
    assert "HTTP request to an HTTPS server" in r.stdout, r
    # The laptop (tailscaled) and the box trust the test CA through SSL_CERT_FILE.
    monkeypatch.setenv("SSL_CERT_FILE", str(tn.ca))
    key = tn.auth_key()
    cli = tn.tailscaled_routes("laptop", key)
    wait_for(lambda: tn.ts_status(cli).get("BackendState") == "Running", timeout=40, what="tailscaled Running")

    path = tn.write_config(key)
    assert f'control_url = "{CONTROL_TLS}"' in path.read_text()
    tn.start_box(path)
    t = tn.wait_state(path, "logged-in", timeout=30)
    assert t["control_url"] == CONTROL_TLS and t["error"] is None, t
    box = wait_for(lambda: (n := nodes_named(tn, "tbox")) and n[0].get("available_routes") and n,
                   timeout=30, what="the box on headscale with its route")
    assert len(box) == 1, tn.nodes()
    log = tn.box_log.read_text()
    assert "not trusted" not in log and "TLS to" not in log, log[-3000:]

    # The laptop sees the box, its approved route, and reaches a bridged device through it.
    wait_for(lambda: box_peer(tn, cli), timeout=30, what="the box in the laptop's tailscale status")
    tn.headscale("nodes", "approve-routes", "-i", str(box[0]["id"]), "-r", "10.77.1.0/24")
    wait_for(lambda: (p := box_peer(tn, cli)) and "10.77.1.0/24" in (p.get("PrimaryRoutes") or []),
             timeout=30, what="the approved route on the laptop")
    dev_ip = tn.udhcpc()
    tn.ping(tn.lap, dev_ip)
    box_ip = next(a for a in box[0]["ip_addresses"] if "." in a)
    tn.ping(tn.lap, box_ip)


def test_an_untrusted_certificate_keeps_the_box_out_with_the_reason_in_status_until_ca_file_names_the_ca(
        tn, monkeypatch):
    """No SSL_CERT_FILE, `ca_file` holds another CA: the system bundle and
    that CA do not vouch for Headscale's certificate. The box does not
    register, says why in `meshbridge status` and its log, and retries with
    backoff; with the right CA in `ca_file` it joins without a restart."""
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    key = tn.auth_key()
    ca_file = tn.tmp / "hs-ca.pem"
    ca_file.write_text(tn.other_ca.read_text())
    path = tn.write_config(key)
    text = path.read_text()
    path.write_text(text.replace('hostname = "tbox"\n', f'hostname = "tbox"\nca_file = "{ca_file}"\n'))
    tn.start_box_no_wait(path)
    t = tn.wait_state(path, "error", timeout=30)
    assert "not trusted" in t["error"] and "10.99.0.1:8444" in t["error"], t
    assert "GET /key" in t["error"], "the first request already fails: nothing is sent in the clear"
    assert "tailnet.ca_file" in t["error"], "the error says what to do"
    human = tn.cli(path, "status").stdout
    assert "Tailnet: error" in human and "not trusted" in human, human
    # It keeps trying (backoff), never registers, never panics.
    wait_for(lambda: tn.box_log.read_text().count("certificate is not trusted") >= 3, timeout=30,
             what="three failed attempts")
    assert tn.box_proc.poll() is None
    assert "panicked" not in tn.box_log.read_text()
    assert not nodes_named(tn, "tbox"), tn.nodes()
    assert tn.tailnet_status(path)["state"] == "error"

    # The right CA: the next attempt joins (the file is read at each attempt).
    ca_file.write_text(tn.ca.read_text())
    t = tn.wait_state(path, "logged-in", timeout=75)
    assert t["error"] is None, t
    wait_for(lambda: tn.tailnet_status(path)["addresses"], timeout=20, what="the box's tailnet addresses")
    assert len(nodes_named(tn, "tbox")) == 1, tn.nodes()
    assert tn.box_proc.poll() is None, "no restart"
