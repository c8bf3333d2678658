"""The tailnet's control lifecycle on the box (issue #12), against the real
Headscale v0.29.2 and tailscaled v1.102.3: interactive login (no auth key:
the login URL in `meshbridge status`, the log and the web API, approved on
Headscale), the tailnet section of the status (state, name, addresses,
peers online / direct), and logout (`meshbridge tailnet logout` and `POST
/api/tailnet/logout`): Headscale expires the node, the tailnet's peers leave
the mesh, and the next start is the same node again (no duplicate).

Topology: test_tailnet_box.py's (Headscale in [hs], the box at 10.99.0.10,
a laptop running tailscaled at 10.99.0.20, a bridged device namespace).
Needs the pinned Go programs; SKIPS only when they are absent.
"""

import json
import time

import pytest

from site_ns import meshbridge_bin, wait_for
from test_tailnet_box import BOX_PORT, BoxTailnet, box_peer
from test_tailnet_control import CONTROL, nodes_named, require_gotools
from web_client import Http

WEB = "10.99.0.10:8088"
PASSWORD = "correct horse battery"


class LoginTailnet(BoxTailnet):
    def write_config(self, auth_key):
        """The box's config; no auth key (None): interactive login. The web
        page listens on the underlay address so the test can ask it."""
        (self.tmp / "board").mkdir(exist_ok=True)
        auth = ""
        if auth_key is not None:
            keyfile = self.tmp / "tailnet-authkey"
            keyfile.write_text(auth_key + "\n")
            keyfile.chmod(0o600)
            auth = f'auth_key_file = "{keyfile}"\n'
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
listen = ["{WEB}"]
[board]
root = "{self.tmp / 'board'}"
[tailnet]
control_url = "{self.control}"
{auth}hostname = "tbox"
devices = "routes"
""")
        return path

    def start_box_no_wait(self, path):
        """Start meshbridge; wait only for its API socket."""
        import os
        import subprocess
        logf = open(self.box_log, "ab")
        self.box_proc = subprocess.Popen(
            ["ip", "netns", "exec", self.box, meshbridge_bin(), "--config", str(path), "--log", "debug"],
            stdout=logf, stderr=subprocess.STDOUT, start_new_session=True, env=dict(os.environ, NO_COLOR="1"))
        wait_for(lambda: self.status_json(path) is not None or self.box_proc.poll() is not None,
                 timeout=30, what="meshbridge's API")
        assert self.box_proc.poll() is None, "meshbridge exited:\n" + self.box_log.read_text()[-3000:]

    def cli(self, path, *args, check=True):
        return self.run(self.box, [meshbridge_bin(), *args, "--config", str(path)], check=check, timeout=40)

    def status_json(self, path):
        r = self.cli(path, "status", "--json", check=False)
        return json.loads(r.stdout) if r.returncode == 0 else None

    def tailnet_status(self, path):
        s = self.status_json(path)
        return (s or {}).get("tailnet")

    def wait_state(self, path, state, timeout=60):
        return wait_for(lambda: (t := self.tailnet_status(path)) and t["state"] == state and t,
                        timeout=timeout, what=f"tailnet state {state}")

    def web(self):
        http = Http(self, self.box, f"http://{WEB}")
        code = (self.state / "setup-code").read_text().strip()
        assert http.setup(code, PASSWORD)[0] == 200
        return http


@pytest.fixture
def tn(tmp_path):
    t = LoginTailnet(tmp_path, require_gotools())
    try:
        yield t
    finally:
        t.close()


def laptop_in(t):
    return next((p for p in t["peers"] if p["name"].split(".")[0] == "laptop"), None)


def expiry_seconds(node):
    e = node.get("expiry")
    return int(e.get("seconds", 0)) if isinstance(e, dict) and e.get("seconds") else None


def test_without_auth_key_status_shows_the_login_url_until_the_admin_approves(tn):
    """No auth key: `meshbridge status` (text and JSON), the log and the web
    API show Headscale's login URL, the box is not a node yet; once the
    admin registers that auth ID, the box is logged in, online in
    `headscale nodes list`, and its status lists the laptop online, direct."""
    lap_key = tn.auth_key()  # creates the user alice
    path = tn.write_config(None)
    tn.start_box_no_wait(path)
    t = tn.wait_state(path, "needs-login", timeout=30)
    url = t["login_url"]
    assert url.startswith(f"{CONTROL}/register/"), t
    assert t["control_url"] == CONTROL and t["hostname"] == "tbox" and not t["addresses"], t
    text = tn.cli(path, "status").stdout
    assert "Tailnet: needs login" in text and url in text, text
    assert f"log in at {url}" in tn.box_log.read_text()
    web = tn.web()
    code, s = web.json("GET", "/api/status")
    assert code == 200 and s["tailnet"]["state"] == "needs-login" and s["tailnet"]["login_url"] == url, s
    # Still waiting a while later (the follow-up holds), not a node yet.
    time.sleep(3)
    assert tn.tailnet_status(path)["state"] == "needs-login"
    assert not nodes_named(tn, "tbox"), tn.nodes()

    tn.headscale("auth", "register", "--auth-id", url.rsplit("/", 1)[1], "--user", "alice")
    t = tn.wait_state(path, "logged-in", timeout=30)
    assert t["login_url"] is None, t
    wait_for(lambda: tn.tailnet_status(path)["addresses"], timeout=20, what="the box's tailnet addresses")
    listed = nodes_named(tn, "tbox")
    assert len(listed) == 1, tn.nodes()
    wait_for(lambda: nodes_named(tn, "tbox")[0].get("online"), timeout=20, what="headscale to list tbox online")
    node = nodes_named(tn, "tbox")[0]
    t = tn.tailnet_status(path)
    assert node["ip_addresses"][0] in " ".join(t["addresses"]), (node, t)
    assert t["name"] and t["name"].startswith("tbox."), t

    # A laptop joins: the box's status (CLI and web) lists it online, then,
    # once they talk (as with Tailscale, idle peers are not pinged), direct.
    tn.tailscaled_routes("laptop", lap_key)
    wait_for(lambda: (p := laptop_in(tn.tailnet_status(path))) and p["online"], timeout=40,
             what="the laptop online in the box's status")
    tn.ping(tn.lap, node["ip_addresses"][0])
    t = wait_for(lambda: (t := tn.tailnet_status(path)) and (p := laptop_in(t)) and p["online"] and p["direct"] and t,
                 timeout=40, what="the laptop online with a direct path in the box's status")
    assert laptop_in(t)["direct"].startswith("10.99.0.20:"), t
    text = tn.cli(path, "status").stdout
    assert "1 tailnet peer(s), 1 online, 1 direct" in text, text
    code, s = web.json("GET", "/api/status")
    assert code == 200 and laptop_in(s["tailnet"])["online"] is True, s


def test_logout_expires_the_node_drops_the_peers_and_the_next_start_is_the_same_node(tn):
    key = tn.auth_key()
    lap_key = tn.auth_key()
    path = tn.write_config(key)
    tn.start_box(path)
    tn.tailscaled_routes("laptop", lap_key)
    t = wait_for(lambda: (t := tn.tailnet_status(path)) and laptop_in(t) and t, timeout=30, what="the laptop in status")
    lap_wg_key = None
    s = tn.status_json(path)
    lap_mesh = [p for p in s["peers"] if p["name"] == "laptop"]
    assert lap_mesh, s["peers"]
    lap_wg_key = lap_mesh[0]["public_key"]
    first = nodes_named(tn, "tbox")
    assert len(first) == 1 and expiry_seconds(first[0]) is None, first

    r = tn.cli(path, "tailnet", "logout")
    assert "logged out of" in r.stdout, r
    t = tn.tailnet_status(path)
    assert t["state"] == "logged-out" and t["error"] is None, t
    assert t["peers"] == [] and t["addresses"] == [], t
    s = tn.status_json(path)
    assert all(p["public_key"] != lap_wg_key for p in s["peers"]), "the tailnet's peers left the mesh"
    assert "Tailnet: logged out" in tn.cli(path, "status").stdout
    node = nodes_named(tn, "tbox")[0]
    assert expiry_seconds(node) is not None and expiry_seconds(node) <= time.time() + 1, node
    # A second logout is refused: nothing to log out.
    r = tn.cli(path, "tailnet", "logout", check=False)
    assert r.returncode != 0 and "logged out" in r.stderr, r
    # The key file no longer says "registered" (the machine key stays).
    keys = json.loads((tn.state / "tailnet-keys.json").read_text())
    assert keys.get("registered_with") is None and keys["machine_key"], keys.keys()

    # The next start registers again: the same node (same ID), renewed, online; no duplicate.
    tn.stop_box()
    tn.start_box(path)
    tn.wait_state(path, "logged-in", timeout=30)
    again = nodes_named(tn, "tbox")
    assert len(again) == 1 and again[0]["id"] == first[0]["id"], tn.nodes()
    assert expiry_seconds(again[0]) is None or expiry_seconds(again[0]) > time.time(), again
    wait_for(lambda: nodes_named(tn, "tbox")[0].get("online"), timeout=20, what="tbox online again")
    wait_for(lambda: laptop_in(tn.tailnet_status(path)), timeout=30, what="the laptop back in status")

    # The web API's logout does the same.
    web = tn.web()
    code, body = web.json("POST", "/api/tailnet/logout", {})
    assert code == 200 and body["ok"], body
    tn.wait_state(path, "logged-out", timeout=20)
    wait_for(lambda: (e := expiry_seconds(nodes_named(tn, "tbox")[0])) and e <= time.time() + 1,
             timeout=10, what="headscale to expire tbox")
    code, body = web.json("POST", "/api/tailnet/logout", {})
    assert code == 409, body


def test_logout_without_auth_key_the_next_start_asks_for_a_login_as_the_same_node(tn):
    """Interactive node logged out: the next start cannot renew by itself
    (its node key expired); it shows a new login URL, and the approval
    renews the same node (no second node)."""
    tn.auth_key()
    path = tn.write_config(None)
    tn.start_box_no_wait(path)
    url = tn.wait_state(path, "needs-login", timeout=30)["login_url"]
    tn.headscale("auth", "register", "--auth-id", url.rsplit("/", 1)[1], "--user", "alice")
    tn.wait_state(path, "logged-in", timeout=30)
    first = nodes_named(tn, "tbox")
    tn.cli(path, "tailnet", "logout")
    tn.stop_box()
    tn.start_box_no_wait(path)
    url2 = tn.wait_state(path, "needs-login", timeout=30)["login_url"]
    assert url2 != url, "a new login"
    tn.headscale("auth", "register", "--auth-id", url2.rsplit("/", 1)[1], "--user", "alice")
    tn.wait_state(path, "logged-in", timeout=30)
    again = nodes_named(tn, "tbox")
    assert len(again) == 1 and again[0]["id"] == first[0]["id"], tn.nodes()
    assert expiry_seconds(again[0]) is None or expiry_seconds(again[0]) > time.time(), again


def test_a_new_local_endpoint_reaches_the_peer_without_a_new_stream(tn):
    """The box's address toward the control server changes: within the
    endpoint check (15 s) it sends an endpoint update (non-streaming map
    request) and the laptop's netmap has the new endpoint; the map stream
    stays open (no second registration)."""
    key = tn.auth_key()
    path = tn.write_config(key)
    tn.start_box(path)
    cli = tn.tailscaled_routes("laptop", key)

    def box_endpoints():
        nm = json.loads(tn.run(tn.lap, cli + ["debug", "netmap"]).stdout)
        node = next((p for p in nm.get("Peers") or [] if p.get("Name", "").startswith("tbox.")), None)
        return (node or {}).get("Endpoints") or []

    wait_for(lambda: f"10.99.0.10:{BOX_PORT}" in box_endpoints(), timeout=30, what="the first endpoint at the laptop")
    registered = tn.box_log.read_text().count("tailnet: registered")
    dev = f"{tn.p}b0"
    tn.run(tn.box, ["ip", "addr", "add", "10.99.0.11/24", "dev", dev])
    tn.run(tn.box, ["ip", "route", "replace", "10.99.0.0/24", "dev", dev, "src", "10.99.0.11"])
    wait_for(lambda: f"10.99.0.11:{BOX_PORT}" in box_endpoints(), timeout=40, what="the new endpoint at the laptop")
    log = tn.box_log.read_text()
    assert "endpoints changed to [10.99.0.11:41641]" in log
    assert log.count("tailnet: registered") == registered, "the same session, no re-registration"


def test_a_node_key_expired_by_the_admin_registers_again_with_the_auth_key(tn):
    """`headscale nodes expire`: the box's netmap says its own key expired;
    it registers again at once (auth key) and Headscale renews the same node."""
    key = tn.auth_key()
    path = tn.write_config(key)
    tn.start_box(path)
    node = nodes_named(tn, "tbox")[0]
    tn.headscale("nodes", "expire", "-i", str(node["id"]))
    wait_for(lambda: "our node key expired; registering again" in tn.box_log.read_text(), timeout=30,
             what="the box to see its key expired")
    wait_for(lambda: (e := expiry_seconds(nodes_named(tn, "tbox")[0])) is None or e > time.time(), timeout=30,
             what="headscale to renew tbox")
    t = tn.wait_state(path, "logged-in", timeout=30)
    assert t["addresses"], t
    again = nodes_named(tn, "tbox")
    assert len(again) == 1 and again[0]["id"] == node["id"], tn.nodes()


def test_the_status_page_shows_the_login_link_and_its_button_logs_out(tn):
    """The web page in headless Chromium: the Tailnet card links the login
    URL while the box waits; after the approval, its "Log out of the
    tailnet" button logs the box out (Headscale expires the node)."""
    import shutil
    from pathlib import Path
    browser = Path(__file__).resolve().parent / "browser"
    if not (browser / "node_modules" / "playwright-core").exists() or not shutil.which("node"):
        pytest.fail("missing for the browser tests (scripts/deps.sh installs them): node, playwright-core")
    tn.auth_key()
    path = tn.write_config(None)
    tn.start_box_no_wait(path)
    url = tn.wait_state(path, "needs-login", timeout=30)["login_url"]
    code = (tn.state / "setup-code").read_text().strip()

    def page(mode):
        r = tn.run(tn.box, ["node", str(browser / "tailnet.mjs"), f"http://{WEB}", mode, PASSWORD, code, str(tn.tmp)],
                   check=False, timeout=120)
        assert r.returncode == 0 and r.stdout.strip(), r.stderr[-3000:]
        res = json.loads(r.stdout)
        assert res["ok"] and not res["page_errors"], res
        return res

    res = page("login-url")
    assert res["state"] == "needs login" and res["login_href"] == url, res
    tn.headscale("auth", "register", "--auth-id", url.rsplit("/", 1)[1], "--user", "alice")
    tn.wait_state(path, "logged-in", timeout=30)
    res = page("logout")
    assert "tbox" in res["card_before"] and CONTROL in res["card_before"], res
    assert {"method": "POST", "path": "/api/tailnet/logout"} in res["requests"], res
    assert res["logout_button_after"] == 0 and "Paste an auth key" in res["card_after"], res
    node = nodes_named(tn, "tbox")[0]
    assert expiry_seconds(node) is not None and expiry_seconds(node) <= time.time() + 1, node


def preauth_key(tn, user="alice"):
    """A reusable pre-auth key with its Headscale ID (to expire it)."""
    tn.auth_key(user)  # makes sure the user exists
    uid = next(u["id"] for u in tn.headscale("users", "list") if u["name"] == user)
    k = tn.headscale("preauthkeys", "create", "--user", str(uid), "--expiration", "24h", "--reusable")
    return k["key"], k["id"]


def test_after_logout_a_key_pasted_in_the_api_joins_again_without_a_restart(tn):
    """Logged in with the configured key, traffic laptop → bridged device
    flows. `POST /api/tailnet/logout`: Headscale expires the node, the laptop
    loses the box. Bad login bodies change nothing. `POST /api/tailnet/login`
    with a new pre-auth key (the configured one expired meanwhile): the box
    registers again (same machine, Headscale renews the same node), the
    laptop reaches the device through it again — the same process all along;
    the pasted key is in no file and no log."""
    key, key_id = preauth_key(tn)
    lap_key = tn.auth_key()
    path = tn.write_config(key)
    tn.start_box(path)
    pid = tn.box_proc.pid
    cli = tn.tailscaled_routes("laptop", lap_key)
    first = wait_for(lambda: (n := nodes_named(tn, "tbox")) and n[0].get("available_routes") and n,
                     timeout=30, what="the box on headscale with its route")
    tn.headscale("nodes", "approve-routes", "-i", str(first[0]["id"]), "-r", "10.77.1.0/24")
    wait_for(lambda: (p := box_peer(tn, cli)) and "10.77.1.0/24" in (p.get("PrimaryRoutes") or []),
             timeout=30, what="the approved route on the laptop")
    dev_ip = tn.udhcpc()
    tn.ping(tn.lap, dev_ip)

    web = tn.web()
    code, body = web.json("POST", "/api/tailnet/login", {"auth_key": key})
    assert code == 409 and "logged in" in body["error"], body
    # The configured key stops working: only the pasted one can bring the box back.
    tn.headscale("preauthkeys", "expire", "--id", str(key_id))
    code, body = web.json("POST", "/api/tailnet/logout", {})
    assert code == 200, body
    tn.wait_state(path, "logged-out", timeout=20)
    wait_for(lambda: (e := expiry_seconds(nodes_named(tn, "tbox")[0])) and e <= time.time() + 1,
             timeout=10, what="headscale to expire tbox")
    wait_for(lambda: (p := box_peer(tn, cli)) is None or p.get("Expired") or not p.get("Online"),
             timeout=30, what="the laptop to lose the box")
    r = tn.run(tn.lap, ["ping", "-c", "2", "-W", "1", dev_ip], check=False)
    assert r.returncode != 0, "the device is out of reach while the box is logged out"

    # Bad input: a clear 4xx, nothing changes.
    new_key, _ = preauth_key(tn)
    for body, want in [
        ({"auth_key": ""}, 422),
        ({"auth_key": "   "}, 422),
        ({"auth_key": "two words"}, 422),
        ({"auth_key": "k" * 600}, 422),
        ({"auth_key": 5}, 400),
        ({"auth_key": new_key, "extra": 1}, 400),
    ]:
        code, answer = web.json("POST", "/api/tailnet/login", body)
        assert code == want, (body if len(str(body)) < 100 else "long", code, answer)
        assert answer["error"] and (want == 400 or answer.get("field") == "auth_key"), answer
    code, _, text = web.request("POST", "/api/tailnet/login", raw=b'{"auth_key": "\xff\xfe"}',
                                headers={"Content-Type": "application/json"})
    assert code == 400, (code, text)
    code, _, text = web.request("POST", "/api/tailnet/login", raw='{"auth_key": "' + "k" * 8000 + '"}',
                                headers={"Content-Type": "application/json"})
    assert code == 413, (code, text)
    code, _, _ = web.request("POST", "/api/tailnet/login", raw="auth_key=x")
    assert code == 415
    code, _ = web.json("POST", "/api/tailnet/login", {"auth_key": new_key}, csrf=False)
    assert code == 403, "CSRF token required"
    t = tn.tailnet_status(path)
    assert t["state"] == "logged-out" and t["error"] is None, t
    assert expiry_seconds(nodes_named(tn, "tbox")[0]) <= time.time() + 1

    # The pasted key: the box joins again, the same process.
    code, body = web.json("POST", "/api/tailnet/login", {"auth_key": f"  {new_key}\n"})
    assert code == 200 and body["ok"], body
    t = tn.wait_state(path, "logged-in", timeout=30)
    assert tn.box_proc.pid == pid and tn.box_proc.poll() is None, "no restart"
    again = nodes_named(tn, "tbox")
    assert len(again) == 1 and again[0]["id"] == first[0]["id"], tn.nodes()
    assert again[0]["node_key"] == first[0]["node_key"], "the node key is the mesh key (docs/tailnet-protocol.md)"
    assert expiry_seconds(again[0]) is None or expiry_seconds(again[0]) > time.time(), again
    wait_for(lambda: (p := box_peer(tn, cli)) and p.get("Online") and not p.get("Expired"),
             timeout=30, what="the laptop to see the box again")
    tn.ping(tn.lap, dev_ip, timeout=60)
    log = tn.box_log.read_text()
    assert "joining http://10.99.0.1:8080 again (with the auth key given)" in log
    assert new_key not in log
    for f in tn.state.rglob("*"):
        if f.is_file():
            assert new_key.encode() not in f.read_bytes(), f"the pasted key is in {f}"
    code, body = web.json("POST", "/api/tailnet/login", {"auth_key": new_key})
    assert code == 409, body


def test_cli_login_after_logout_interactive_and_with_a_key_file(tn):
    """`meshbridge tailnet login` without a key after a logout of an
    interactive node: a new login URL, approved: the same node again.
    Logged out once more, `--auth-key-file`: logged in at once. No restart."""
    tn.auth_key()
    path = tn.write_config(None)
    tn.start_box_no_wait(path)
    pid = tn.box_proc.pid
    url = tn.wait_state(path, "needs-login", timeout=30)["login_url"]
    tn.headscale("auth", "register", "--auth-id", url.rsplit("/", 1)[1], "--user", "alice")
    tn.wait_state(path, "logged-in", timeout=30)
    first = nodes_named(tn, "tbox")
    r = tn.cli(path, "tailnet", "login", check=False)
    assert r.returncode != 0 and "logged in" in r.stderr, r

    tn.cli(path, "tailnet", "logout")
    r = tn.cli(path, "tailnet", "login")
    url2 = tn.tailnet_status(path)["login_url"]
    assert url2 and url2 != url and url2 in r.stdout, (r.stdout, url2)
    tn.headscale("auth", "register", "--auth-id", url2.rsplit("/", 1)[1], "--user", "alice")
    tn.wait_state(path, "logged-in", timeout=30)
    assert [n["id"] for n in nodes_named(tn, "tbox")] == [first[0]["id"]], tn.nodes()

    tn.cli(path, "tailnet", "logout")
    bad = tn.tmp / "bad-key"
    bad.write_text("\n")
    r = tn.cli(path, "tailnet", "login", "--auth-key-file", str(bad), check=False)
    assert r.returncode != 0 and "empty" in r.stderr, r
    assert tn.tailnet_status(path)["state"] == "logged-out"
    keyfile = tn.tmp / "pasted-key"
    keyfile.write_text(tn.auth_key() + "\n")
    r = tn.cli(path, "tailnet", "login", "--auth-key-file", str(keyfile))
    assert "logged in to http://10.99.0.1:8080" in r.stdout, r
    assert [n["id"] for n in nodes_named(tn, "tbox")] == [first[0]["id"]], tn.nodes()
    assert tn.box_proc.pid == pid and tn.box_proc.poll() is None, "no restart"


def test_the_status_page_joins_with_a_pasted_key(tn):
    """Headless Chromium: logged out, the Tailnet card has an auth-key field
    and a Join button; a bad key shows the field's error; a good one logs the
    box in (the field goes away)."""
    import shutil
    from pathlib import Path
    browser = Path(__file__).resolve().parent / "browser"
    if not (browser / "node_modules" / "playwright-core").exists() or not shutil.which("node"):
        pytest.fail("missing for the browser tests (scripts/deps.sh installs them): node, playwright-core")
    key = tn.auth_key()
    path = tn.write_config(key)
    tn.start_box(path)
    web = tn.web()
    assert web.json("POST", "/api/tailnet/logout", {})[0] == 200
    tn.wait_state(path, "logged-out", timeout=20)
    r = tn.run(tn.box, ["env", f"TAILNET_AUTH_KEY={tn.auth_key()}", "node", str(browser / "tailnet.mjs"),
                        f"http://{WEB}", "join", PASSWORD, "-", str(tn.tmp)], check=False, timeout=120)
    assert r.returncode == 0 and r.stdout.strip(), r.stderr[-3000:]
    res = json.loads(r.stdout)
    assert res["ok"] and not res["page_errors"], res
    assert "Paste an auth key" in res["card_before"], res
    assert "spaces" in res["bad_key_error"], res
    assert res["join_form_after"] == 0, res
    assert [q for q in res["requests"] if q["path"] == "/api/tailnet/login"], res
    tn.wait_state(path, "logged-in", timeout=10)


def test_headscale_debug_ping_gets_the_box_answer(tn):
    """Headscale's debug ping (`/debug/ping?node=ID` on its metrics address)
    puts a PingRequest (HEAD to <server_url>/machine/ping-response?id=...)
    in the box's map stream; the box sends the HEAD and Headscale reports the
    pong. A node that does not answer would show "did not respond" after 30 s."""
    key = tn.auth_key()
    path = tn.write_config(key)
    tn.start_box(path)
    node = nodes_named(tn, "tbox")[0]
    wait_for(lambda: nodes_named(tn, "tbox")[0].get("online"), timeout=20, what="tbox online")
    r = tn.run(tn.hs, ["curl", "-s", "--max-time", "45", f"http://127.0.0.1:9090/debug/ping?node={node['id']}"],
               check=False, timeout=60)
    assert f"Node {node['id']} responded in" in r.stdout, r.stdout[-3000:]
    assert "answered the control server's ping (HTTP 200" in tn.box_log.read_text()
