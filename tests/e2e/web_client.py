"""A small HTTP client for the web API tests: curl run inside a namespace,
with a cookie jar, so requests come from a real address on the bridge or mesh."""

import json
import secrets


class Http:
    def __init__(self, site, ns, base):
        self.site, self.ns, self.base = site, ns, base.rstrip("/")
        self.jar = site.tmp / f"cookies-{secrets.token_hex(4)}.txt"
        self.csrf = None
        self.token = None

    def request(self, method, path, body=None, headers=None, csrf=True, raw=None, cookies=True):
        tag = secrets.token_hex(4)
        out = self.site.tmp / f"http-{tag}.body"
        hdr = self.site.tmp / f"http-{tag}.hdr"
        cmd = ["curl", "-s", "-S", "--max-time", "20", "-X", method, "-o", str(out), "-D", str(hdr),
               "-w", "%{http_code}"]
        if cookies:
            cmd += ["-b", str(self.jar), "-c", str(self.jar)]
        h = dict(headers or {})
        if csrf and self.csrf and method not in ("GET", "HEAD"):
            h.setdefault("X-CSRF-Token", self.csrf)
        if self.token:
            h.setdefault("Authorization", f"Bearer {self.token}")
        data = None
        if body is not None:
            data = json.dumps(body)
            h.setdefault("Content-Type", "application/json")
        elif raw is not None:
            data = raw
            h.setdefault("Content-Type", "text/plain")
        if data is not None:
            f = self.site.tmp / f"http-{tag}.req"
            if isinstance(data, bytes):
                f.write_bytes(data)
            else:
                f.write_text(data)
            cmd += ["--data-binary", f"@{f}"]
        for k, v in h.items():
            cmd += ["-H", f"{k}: {v}"]
        cmd.append(self.base + path)
        r = self.site.run(self.ns, cmd, check=False, timeout=30)
        if r.returncode != 0:
            return None, {}, r.stderr
        headers = {}
        for line in hdr.read_text().splitlines()[1:]:
            k, _, v = line.partition(":")
            if k:
                headers[k.strip().lower()] = v.strip()
        text = out.read_text() if out.exists() else ""
        return int(r.stdout.strip() or 0), headers, text

    def json(self, method, path, body=None, **kw):
        code, headers, text = self.request(method, path, body=body, **kw)
        try:
            data = json.loads(text) if text else None
        except ValueError:
            data = text
        return code, data

    def setup(self, code, password):
        c, d = self.json("POST", "/api/setup", {"setup_code": code, "password": password})
        if c == 200:
            self.csrf = d["csrf"]
        return c, d

    def login(self, password):
        c, d = self.json("POST", "/api/login", {"password": password})
        if c == 200:
            self.csrf = d["csrf"]
        return c, d
