#!/usr/bin/env python3
"""The hand-picked half of `infra/contract`: bad inputs schemathesis does not send, checked
against `shared/openapi.json`.

    contract_cases.py prepare --base URL --state FILE        users A and B (onboarded), an admin,
                                                             an unonboarded user, and content
    contract_cases.py cases   --state FILE --phase before    the corpus (everything but deletion)
    contract_cases.py cases   --state FILE --phase after     DELETE /v1/me, as user B, last
    contract_cases.py summary --st-report FILE --results ... the closing numbers and the verdict

Every response must have a status under 500; when its route is in the document, a documented
status, a documented content type (nothing for a documented empty answer), a body valid against
the documented schema, and valid documented headers; every error is application/problem+json
with a string `code`. Some cases expect more: another user's ids are 404 and no successful answer
to anyone else contains user B's ids; a body that is not a JSON object is refused (every request
schema is an object). Requests are sent as raw bytes over a socket, so paths, headers and bodies
reach the server exactly as written.
"""

import argparse
import base64
import http.client
import json
import os
import re
import socket
import struct
import sys
import time
import urllib.parse
import zlib

import jsonschema
import requests

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC_PATH = os.path.join(ROOT, "shared", "openapi.json")

KIB = 1024
MIB = 1024 * KIB

# --------------------------------------------------------------------------------------------
# The document


class Contract:
    def __init__(self, path):
        with open(path, encoding="utf-8") as f:
            self.doc = json.load(f)
        self.templates = []
        for template, item in self.doc["paths"].items():
            self.templates.append((template, template.split("/"), item))
        self._validators = {}

    def resolve(self, node):
        while isinstance(node, dict) and "$ref" in node and len(node) == 1:
            ref = node["$ref"]
            assert ref.startswith("#/"), ref
            target = self.doc
            for part in ref[2:].split("/"):
                target = target[part.replace("~1", "/").replace("~0", "~")]
            node = target
        return node

    def operation(self, method, path):
        """The (template, operation) serving `method path` (raw, undecoded path, as the dev host
        matches it: a trailing slash ignored, a parameter any non-empty segment, literal
        segments before parameters)."""
        segments = path.rstrip("/").split("/") if path != "/" else [""]
        best = None
        for template, pattern, item in self.templates:
            if len(pattern) != len(segments):
                continue
            literals = 0
            for p, s in zip(pattern, segments):
                if p.startswith("{") and p.endswith("}"):
                    if not s:
                        break
                else:
                    if p != s:
                        break
                    literals += 1
            else:
                op = item.get(method.lower())
                if op is not None and (best is None or literals > best[2]):
                    best = (template, op, literals)
        return (best[0], best[1]) if best else (None, None)

    def validator(self, key, schema):
        v = self._validators.get(key)
        if v is None:
            root = dict(schema)
            root["components"] = self.doc["components"]
            root["$schema"] = "https://json-schema.org/draft/2020-12/schema"
            v = jsonschema.Draft202012Validator(
                root, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
            )
            self._validators[key] = v
        return v

    def check(self, method, path, resp):
        """What does not conform in `resp` (a list of reasons; empty when it conforms)."""
        problems = []
        status = resp.status
        essence = resp.essence()
        has_body = len(resp.body) > 0 and method != "HEAD"
        if status >= 400 and method != "HEAD" and not path.startswith("/dev/"):
            # Every error of the API is a problem document with a stable code (`/dev/` is the
            # dev host's own tooling, never deployed: only its status is checked).
            if essence != "application/problem+json":
                problems.append(
                    f"error body content type {resp.header('content-type')!r}, not application/problem+json"
                )
            else:
                body = resp.json()
                if not isinstance(body, dict) or not isinstance(body.get("code"), str):
                    problems.append("problem body without a string `code`")
        template, op = self.operation(method, path.split("?", 1)[0])
        if op is None:
            return problems
        responses = op.get("responses", {})
        documented = responses.get(str(status)) or responses.get(f"{status // 100}XX") or responses.get("default")
        label = f"{method} {template}"
        if documented is None:
            problems.append(
                f"status {status} is not documented for {label} (documented: {', '.join(sorted(responses))})"
            )
            return problems
        documented = self.resolve(documented)
        content = documented.get("content") or {}
        if not content:
            if has_body:
                problems.append(f"{label} {status} is documented without a body, got {len(resp.body)} bytes")
        elif not has_body:
            if method != "HEAD":
                problems.append(f"{label} {status} is documented with a body ({', '.join(content)}), got none")
        else:
            media = content.get(essence)
            if media is None:
                problems.append(
                    f"content type {resp.header('content-type')!r} is not documented for {label} {status} "
                    f"(documented: {', '.join(content)})"
                )
            elif "schema" in media and (essence.endswith("/json") or essence.endswith("+json")):
                try:
                    body = json.loads(resp.body)
                except ValueError as e:
                    problems.append(f"{label} {status}: the body is not JSON: {e}")
                else:
                    v = self.validator((template, method, str(status), essence), media["schema"])
                    errors = sorted(v.iter_errors(body), key=lambda e: list(e.absolute_path))[:3]
                    for e in errors:
                        where = "/" + "/".join(str(p) for p in e.absolute_path)
                        problems.append(f"{label} {status}: schema: {e.message[:300]} at {where}")
        for name, spec in (documented.get("headers") or {}).items():
            spec = self.resolve(spec)
            value = resp.header(name)
            if value is None:
                if spec.get("required"):
                    problems.append(f"{label} {status}: required header {name} missing")
                continue
            schema = spec.get("schema")
            if not schema:
                continue
            instance = value
            if schema.get("type") == "integer":
                try:
                    instance = int(value)
                except ValueError:
                    problems.append(f"{label} {status}: header {name}: {value!r} is not an integer")
                    continue
            for e in self.validator(("header", template, method, str(status), name), schema).iter_errors(instance):
                problems.append(f"{label} {status}: header {name}: {e.message}")
        return problems


# --------------------------------------------------------------------------------------------
# Raw HTTP


class Response:
    def __init__(self, status, headers, body, error=None):
        self.status = status
        self.headers = headers  # [(lowercase name, value)]
        self.body = body
        self.error = error

    def header(self, name):
        name = name.lower()
        for k, v in self.headers:
            if k == name:
                return v
        return None

    def essence(self):
        ct = self.header("content-type") or ""
        return ct.split(";", 1)[0].strip().lower()

    def json(self):
        try:
            return json.loads(self.body)
        except ValueError:
            return None


class Client:
    def __init__(self, base):
        u = urllib.parse.urlsplit(base)
        self.host = u.hostname
        self.port = u.port or 80
        self.base = base.rstrip("/")

    def send(self, method, target, headers=(), body=None, timeout=60):
        """Sends `method target` with exactly these headers and body bytes. `target` is str or
        bytes (sent as is); header values are str or bytes."""
        if isinstance(target, str):
            target = target.encode("utf-8")
        lines = [method.encode() + b" " + target + b" HTTP/1.1", f"Host: {self.host}:{self.port}".encode(), b"Connection: close"]
        for name, value in headers:
            if isinstance(value, str):
                value = value.encode("utf-8")
            lines.append(name.encode() + b": " + value)
        if body is not None:
            lines.append(b"Content-Length: " + str(len(body)).encode())
        raw = b"\r\n".join(lines) + b"\r\n\r\n" + (body or b"")
        sock = socket.create_connection((self.host, self.port), timeout=timeout)
        send_error = None
        try:
            try:
                sock.sendall(raw)
            except OSError as e:  # the server may answer (413) and close before reading it all
                send_error = e
            resp = http.client.HTTPResponse(sock, method=method)
            try:
                resp.begin()
                data = resp.read()
            except (OSError, http.client.HTTPException) as e:
                return Response(0, [], b"", error=f"no HTTP response ({type(e).__name__}: {e}; send: {send_error})")
            return Response(resp.status, [(k.lower(), v) for k, v in resp.getheaders()], data)
        finally:
            sock.close()

    def call(self, method, target, token=None, body=None, content_type="application/json", headers=()):
        hs = []
        if token:
            hs.append(("Authorization", "Bearer " + token))
        if body is not None and not isinstance(body, (bytes, bytearray)):
            body = json.dumps(body).encode()
        if body is not None and content_type is not None:
            hs.append(("Content-Type", content_type))
        hs.extend(headers)
        return self.send(method, target, hs, body)


# --------------------------------------------------------------------------------------------
# Preparation: users and content


def png_bytes(w=32, h=32):
    """A small valid RGB PNG (a gradient)."""
    raw = b"".join(b"\x00" + bytes(v for x in range(w) for v in (x * 7 % 256, y * 5 % 256, 128)) for y in range(h))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


class Setup:
    def __init__(self, base):
        self.c = Client(base)

    def ok(self, resp, what, want=(200, 201, 202, 204)):
        if resp.status not in want:
            raise SystemExit(f"contract: preparing failed: {what}: {resp.status} {resp.body[:500]!r} {resp.error or ''}")
        return resp.json()

    def token(self, sub, groups=()):
        r = self.c.call("POST", "/dev/token", body={"sub": sub, "email": f"{sub}@example.com", "groups": list(groups)})
        return self.ok(r, "POST /dev/token")["token"]

    def onboard(self, token, name):
        self.ok(self.c.call("POST", "/v1/me", token, {"display_name": name, "age_confirmed": True}), "POST /v1/me", (201,))

    def generation(self, token, prompt, **extra):
        body = {"prompt": prompt, "size": "1024x1024", "quality": "low", "n": 1, **extra}
        job = self.ok(self.c.call("POST", "/v1/generations", token, body,
                                  headers=[("Idempotency-Key", f"contract-{time.time_ns()}")]), "POST /v1/generations", (202,))
        deadline = time.time() + 90
        while time.time() < deadline:
            got = self.ok(self.c.call("GET", f"/v1/generations/{job['id']}", token), "GET /v1/generations/{id}", (200,))
            if got["status"] == "succeeded":
                return got
            if got["status"] not in ("queued", "running"):
                raise SystemExit(f"contract: preparing failed: generation {got['status']}: {got}")
            time.sleep(0.3)
        raise SystemExit("contract: preparing failed: a generation did not finish in 90 s")

    def upload(self, token):
        png = png_bytes()
        up = self.ok(self.c.call("POST", "/v1/uploads", token, {"content_type": "image/png", "size": len(png)}),
                     "POST /v1/uploads", (201,))
        form = up["upload"]
        r = requests.post(form["url"], data=list(form["fields"].items()),
                          files={"file": ("reference.png", png, "image/png")}, timeout=30)
        if r.status_code >= 300:
            raise SystemExit(f"contract: preparing failed: sending the upload's file: {r.status_code} {r.text[:300]}")
        deadline = time.time() + 30
        while time.time() < deadline:
            got = self.ok(self.c.call("GET", f"/v1/uploads/{up['id']}", token), "GET /v1/uploads/{id}", (200,))
            if got["status"] == "ready":
                return got
            if got["status"] == "rejected":
                raise SystemExit(f"contract: preparing failed: the reference upload was rejected: {got}")
            time.sleep(0.3)
        raise SystemExit("contract: preparing failed: the upload did not become ready")


def prepare(args):
    s = Setup(args.base)
    run = args.run
    st = {"base": args.base, "run": run}
    a, b, c_, admin = (f"contract-a-{run}", f"contract-b-{run}", f"contract-c-{run}", f"contract-admin-{run}")
    st["a_sub"], st["b_sub"], st["c_sub"] = a, b, c_
    st["nobody"] = f"contract-nobody-{run}"
    st["a"] = s.token(a)
    st["b"] = s.token(b)
    st["c"] = s.token(c_)  # never onboarded
    st["admin"] = s.token(admin, ["admins"])
    s.onboard(st["a"], "Contract A")
    s.onboard(st["b"], "Contract B")
    # User A: a generation, a ready reference upload, a generation that uses it, a download.
    st["a_upload"] = s.upload(st["a"])["id"]
    st["a_gen"] = s.generation(st["a"], "a red bicycle")["id"]
    st["a_gen2"] = s.generation(st["a"], "a blue bicycle", reference_ids=[st["a_upload"]])["id"]
    st["a_image"] = st["a_gen"] + "-0"
    s.ok(s.c.call("POST", f"/v1/images/{st['a_image']}/download", st["a"], {"variant": "original"}), "download", (200,))
    # User B: a private generation, a published copy-protected one, an upload, an export.
    st["b_gen"] = s.generation(st["b"], "a green tractor")["id"]
    st["b_image"] = st["b_gen"] + "-0"
    st["b_gen_pub"] = s.generation(st["b"], "a yellow tractor")["id"]
    st["b_image_pub"] = st["b_gen_pub"] + "-0"
    s.ok(s.c.call("PATCH", f"/v1/images/{st['b_image_pub']}", st["b"], {"public": True, "copy_protected": True}),
         "publishing B's image", (200,))
    st["b_upload"] = s.upload(st["b"])["id"]
    st["b_export"] = s.ok(s.c.call("POST", "/v1/exports", st["b"]), "POST /v1/exports", (202,))["id"]
    # Real cursors (of user B, and of A on other routes).
    st["b_gen_cursor"] = s.ok(s.c.call("GET", "/v1/generations?limit=1", st["b"]), "list")["next_cursor"]
    st["b_ledger_cursor"] = s.ok(s.c.call("GET", "/v1/billing/ledger?limit=1", st["b"]), "ledger")["next_cursor"]
    st["a_gen_cursor"] = s.ok(s.c.call("GET", "/v1/generations?limit=1", st["a"]), "list")["next_cursor"]
    st["a_ledger_cursor"] = s.ok(s.c.call("GET", "/v1/billing/ledger?limit=1", st["a"]), "ledger")["next_cursor"]
    data = s.ok(s.c.call("GET", "/v1/me/data?kind=generation&limit=1", st["b"]), "access")
    st["b_data_cursor"] = next((k.get("next_cursor") for k in data.get("kinds", data.get("items", []))
                                if isinstance(k, dict) and k.get("next_cursor")), None)
    served = s.c.call("GET", "/v1/openapi.json")
    with open(DOC_PATH, "rb") as f:
        if served.body != f.read():
            print("contract: warning: the dev host serves a different /v1/openapi.json than shared/openapi.json "
                  "(a stale binary?); the run checks against the file", file=sys.stderr)
    policy = s.ok(s.c.call("GET", "/v1/policy"), "policy")
    st["kinds"] = [k["kind"] for k in policy.get("data_map", [])]
    for k in ("b_gen_cursor", "b_ledger_cursor", "a_gen_cursor", "a_ledger_cursor"):
        if not st[k]:
            raise SystemExit(f"contract: preparing failed: no {k}")
    with open(args.state, "w", encoding="utf-8") as f:
        json.dump(st, f, indent=1)
    print(f"contract: users {a} and {b} onboarded; A: generations {st['a_gen']}, {st['a_gen2']}, upload "
          f"{st['a_upload']}; B: generations {st['b_gen']}, {st['b_gen_pub']} (published), upload {st['b_upload']}, "
          f"export {st['b_export']}")


# --------------------------------------------------------------------------------------------
# The corpus


class Runner:
    def __init__(self, st, contract):
        self.st = st
        self.c = Client(st["base"])
        self.contract = contract
        self.results = []
        # Ids of user B that no answer to anyone else may contain.
        self.secret_ids = [st["b_gen"], st["b_upload"], st["b_export"]]

    def case(self, name, method, target, token=None, body=None, content_type="application/json", headers=(),
             expect=None, raw_headers=None):
        """Sends one request and records what is wrong with the answer. `expect(resp)` returns a
        reason when a case-specific expectation fails."""
        if raw_headers is not None:
            hs = list(raw_headers)
            if isinstance(body, (dict, list)):
                body = json.dumps(body).encode()
            resp = self.c.send(method, target, hs, body)
        else:
            resp = self.c.call(method, target, token, body, content_type, headers)
        path = target.decode("latin-1") if isinstance(target, bytes) else target
        failures = []
        if resp.error:
            failures.append(("transport", resp.error))
        else:
            if resp.status >= 500:
                failures.append(("5xx", f"server error {resp.status}"))
            for p in self.contract.check(method, path, resp):
                failures.append(("nonconforming", p))
            if expect is not None:
                reason = expect(resp)
                if reason:
                    failures.append(("expectation", reason))
            if 200 <= resp.status < 300 and token != self.st["b"]:
                text = resp.body.decode("utf-8", "replace")
                for secret in self.secret_ids:
                    if secret in text:
                        failures.append(("expectation", f"the answer contains user B's id {secret}"))
        self.results.append({
            "name": name, "method": method, "target": shorten(path), "status": resp.status,
            "content_type": resp.header("content-type"), "body": resp.body[:400].decode("utf-8", "replace"),
            "failures": failures,
        })
        for kind, reason in failures:
            print(f"FAIL [{kind}] {method} {shorten(path)} ({name}): {resp.status} "
                  f"{resp.header('content-type') or '-'} {resp.body[:200].decode('utf-8', 'replace')!r}: {reason}",
                  flush=True)
        return resp


def shorten(s, n=160):
    return s if len(s) <= n else s[:n] + f"...({len(s)} chars)"


def status_in(*codes):
    def check(resp):
        if resp.status not in codes:
            return f"expected status {' or '.join(map(str, codes))}, got {resp.status}"
        return None
    return check


def refused(resp):
    if resp.status < 400:
        return (f"a body that is not a JSON object was accepted ({resp.status}); the document's request "
                f"schema is an object: expected 400")
    return None


def request_schema(contract, method, path):
    _, op = contract.operation(method, path)
    media = ((op or {}).get("requestBody") or {}).get("content", {}).get("application/json")
    return contract.resolve(media["schema"]) if media and "schema" in media else None


def is_404(resp):
    return None if resp.status == 404 else f"another user's resource: expected 404, got {resp.status}"


def with_nul(value):
    if isinstance(value, str):
        return value + "\u0000x"
    if isinstance(value, dict):
        return {k: with_nul(v) for k, v in value.items()}
    if isinstance(value, list):
        return [with_nul(v) for v in value]
    return value


def body_ops(st):
    """Every operation that reads a body: (label, method, path, token, a valid body)."""
    a, admin, nobody = st["a"], st["admin"], st["nobody"]
    return [
        ("onboard", "POST", "/v1/me", a, {"display_name": "Contract A", "age_confirmed": True}),
        ("updateMe", "PATCH", "/v1/me", a, {"display_name": "Contract A"}),
        ("setConsent", "PUT", "/v1/me/consents/marketing_email", a, {"granted": False}),
        ("reportChildAccount", "POST", "/v1/reports/child-account", a, {"user_id": nobody, "details": "contract"}),
        ("createGeneration", "POST", "/v1/generations", a,
         {"prompt": "a red bicycle", "size": "1024x1024", "quality": "low", "n": 1}),
        ("placeHold", "POST", "/v1/admin/holds", admin, {"user_id": nobody, "reason": "contract"}),
        ("liftHold", "DELETE", f"/v1/admin/holds/01jcontractnoholdxxxxxxxxx", admin, {"reason": "contract"}),
        ("suspendUser", "POST", f"/v1/admin/users/{nobody}/suspension", admin, {"reason": "contract"}),
        ("restoreUser", "DELETE", f"/v1/admin/users/{nobody}/suspension", admin, {"reason": "contract"}),
        ("confirmReport", "POST", "/v1/admin/reports/01jcontractnoreportxxxxxxx/confirm", admin, {"reason": "contract"}),
        ("dismissReport", "POST", "/v1/admin/reports/01jcontractnoreportxxxxxxx/dismiss", admin, {"reason": "contract"}),
        ("receiveStripeWebhook", "POST", "/v1/webhooks/stripe", None,
         {"id": "evt_contract", "type": "checkout.session.completed", "data": {"object": {}}}),
        ("createCheckout", "POST", "/v1/billing/checkout", a, {"item": "pack_small"}),
        ("setSpendCap", "PUT", "/v1/billing/spend-cap", a, {"monthly_cap": 100000}),
        ("createUpload", "POST", "/v1/uploads", a, {"content_type": "image/png", "size": 1000}),
        ("updateImage", "PATCH", f"/v1/images/{st['a_image']}", a, {"public": False}),
        ("createDownload", "POST", f"/v1/images/{st['a_image']}/download", a, {"variant": "original"}),
        # Documented without a body: whatever is sent must still get a conforming answer.
        ("createPortalSession", "POST", "/v1/billing/portal", a, {}),
        ("createExport", "POST", "/v1/exports", a, {}),
        ("restrictProcessing", "POST", "/v1/me/restriction", a, {}),
        ("liftRestriction", "DELETE", "/v1/me/restriction", a, {}),
    ]


# Bodies that are not JSON objects: every request schema of the document is an object, so these
# must be refused (400), never acted on.
NON_OBJECT = {"null", "empty array", "array of the valid body", "string", "number", "true", "positional array"}


def positional(valid, properties):
    """The valid body as a JSON array in the schema's property order (what serde's derived
    Deserialize accepts for a struct unless the code insists on an object)."""
    values = [valid.get(name) for name in properties] if properties else list(valid.values())
    while values and values[-1] is None:  # missing trailing fields take their defaults
        values.pop()
    return values


def bad_bodies(valid, properties=()):
    """(name, bytes, content type) of the bad bodies sent to every body-reading operation."""
    v = json.dumps(valid).encode()
    multipart = (b"--xyz\r\nContent-Disposition: form-data; name=\"data\"\r\n\r\n" + v + b"\r\n--xyz--\r\n")
    first_str = next((k for k, x in valid.items() if isinstance(x, str)), None)
    out = [
        ("json over 1 MiB", b'{"x":"' + b"a" * (MIB + 10 * KIB) + b'"}', "application/json"),
        ("json of 60 KiB", json.dumps({**valid, "x": "a" * (60 * KIB)}).encode(), "application/json"),
        ("json just over 64 KiB", json.dumps({**valid, "x": "a" * (64 * KIB)}).encode(), "application/json"),
        ("10k unclosed [", b"[" * 10000, "application/json"),
        ("10k nested arrays", b"[" * 10000 + b"]" * 10000, "application/json"),
        ("10k nested objects", b'{"a":' * 10000 + b"1" + b"}" * 10000, "application/json"),
        ("invalid utf-8 in a string", v[:-1] + b',"x":"\xff\xfe\xc3\x28"}' if len(valid) else b'{"x":"\xff\xfe"}', "application/json"),
        ("invalid utf-8 bytes only", b"\xc3\x28\xa0\xa1\xff", "application/json"),
        ("utf-16 json", v.decode().encode("utf-16"), "application/json"),
        ("BOM then json", b"\xef\xbb\xbf" + v, "application/json"),
        ("escaped NUL in every string", json.dumps(with_nul(valid)).encode(), "application/json"),
        ("NUL key", json.dumps({**valid, "\u0000": 1}).encode(), "application/json"),
        ("raw NUL byte in json", v[:-1] + b',"x":"a\x00b"}' if len(valid) else b'{"x":"a\x00b"}', "application/json"),
        ("empty body", b"", "application/json"),
        ("whitespace body", b" \r\n\t ", "application/json"),
        ("null", b"null", "application/json"),
        ("empty array", b"[]", "application/json"),
        ("array of the valid body", b"[" + v + b"]", "application/json"),
        ("positional array", json.dumps(positional(valid, properties)).encode(), "application/json"),
        ("string", b'"hello"', "application/json"),
        ("number", b"12345678901234567890123", "application/json"),
        ("true", b"true", "application/json"),
        ("empty object", b"{}", "application/json"),
        ("trailing garbage", v + b"}}", "application/json"),
        ("truncated", v[: max(1, len(v) // 2)], "application/json"),
        ("duplicate keys", v[:-1] + (b"," + v[1:] if len(valid) else b"}"), "application/json"),
        ("unknown field", json.dumps({**valid, "unexpected_field": True}).encode(), "application/json"),
        ("text/plain", v, "text/plain"),
        ("multipart/form-data", multipart, "multipart/form-data; boundary=xyz"),
        ("application/xml", b"<?xml version=\"1.0\"?><body><x>1</x></body>", "application/xml"),
        ("form-urlencoded", b"x=1&y=2", "application/x-www-form-urlencoded"),
        ("empty content type", v, ""),
        ("garbage content type", v, ";;;/"),
        ("octet-stream", v, "application/octet-stream"),
        ("no content type", v, None),
        ("json with charset", v, "application/json; charset=utf-8"),
        ("problem+json", v, "application/problem+json"),
    ]
    if first_str:
        out.append(("a string field of 64 KiB", json.dumps({**valid, first_str: "a" * (64 * KIB - 200)}).encode(), "application/json"))
        out.append(("a string field of control characters", json.dumps({**valid, first_str: "\u0001\u001b[31m\u007f\u202e"}).encode(), "application/json"))
        out.append(("a string field of lone surrogates", v.replace(json.dumps(valid[first_str]).encode(), b'"\\ud800\\udfff\\udc00"'), "application/json"))
    for key in list(valid)[:4]:
        for label, wrong in (("null", None), ("array", [valid[key]]), ("object", {"v": valid[key]}),
                             ("2^64", 2 ** 64), ("-1", -1), ("1.5", 1.5), ("1e400", "1e400"), ("empty string", "")):
            text = json.dumps({**valid, key: wrong}).encode()
            if wrong == "1e400":
                text = json.dumps({**valid, key: 0}).encode().replace(f'"{key}": 0'.encode(), f'"{key}": 1e400'.encode())
            out.append((f"{key} as {label}", text, "application/json"))
    return out


def run_before(r):
    st, contract = r.st, r.contract
    a, b, c, admin = st["a"], st["b"], st["c"], st["admin"]

    # 1. Bad bodies on every route that reads one (and on the POST/PUT/PATCH routes that don't).
    for label, method, path, token, valid in body_ops(st):
        schema = request_schema(contract, method, path)
        properties = list((schema or {}).get("properties", {}))
        for name, body, ctype in bad_bodies(valid, properties):
            expect = None
            # An onboarded caller's POST /v1/me is 200 whatever the body (documented).
            if name in NON_OBJECT and schema and schema.get("type") == "object" and label != "onboard":
                expect = refused
            r.case(f"{label}: {name}", method, path, token, body, ctype, expect=expect)
    # The two whose success cannot be undone: onboarding and deleting an account, each by a
    # user of its own.
    s = Setup(st["base"])
    fresh = s.token(f"contract-p1-{st['run']}")
    r.case("onboard: positional array", "POST", "/v1/me", fresh, ["Positional", None, True], expect=refused)
    r.case("onboard: array of the valid body", "POST", "/v1/me", fresh, [{"age_confirmed": True}], expect=refused)
    doomed = s.token(f"contract-p2-{st['run']}")
    s.onboard(doomed, "Contract P2")
    r.case("deleteMe: positional array", "DELETE", "/v1/me", doomed, ["delete my account"], expect=refused)
    r.case("deleteMe: array of the valid body", "DELETE", "/v1/me", doomed, [{"confirm": "delete my account"}], expect=refused)
    r.case("deleteMe: null", "DELETE", "/v1/me", doomed, b"null", expect=refused)
    # Over API Gateway's 10 MiB: the dev host answers before any function runs.
    r.case("body over 10 MiB", "POST", "/v1/generations", a, b"{" + b" " * (10 * MIB + 10) + b"}",
           expect=status_in(413))
    r.case("body over 10 MiB, unauthenticated route", "POST", "/v1/webhooks/stripe", None,
           b"{" + b" " * (10 * MIB + 10) + b"}", expect=status_in(413))

    # 2. Every authenticated operation without a token, with bad tokens, and as a user who never
    #    onboarded (with a valid body, so only the caller is wrong).
    params = {"id": "01jcontractnonexistentxxxx", "purpose": "marketing_email"}
    valid_body = {label: valid for label, _, _, _, valid in body_ops(st)}
    for template, _, item in contract.templates:
        for method, op in item.items():
            if method not in ("get", "post", "put", "patch", "delete") or not op.get("security"):
                continue
            path = re.sub(r"\{(\w+)\}", lambda m: params.get(m.group(1), "x"), template)
            m = method.upper()
            if (m, template) == ("DELETE", "/v1/me"):
                body = b'{"confirm":"delete my account"}'
            elif op["operationId"] in valid_body:
                body = json.dumps(valid_body[op["operationId"]]).encode()
            else:
                body = b"{}" if m in ("POST", "PUT", "PATCH") else None
            r.case(f"{op['operationId']}: no token", m, path, None, body, expect=status_in(401))
            r.case(f"{op['operationId']}: forged token", m, path, None, body, expect=status_in(401),
                   headers=[("Authorization", "Bearer " + forged(a))])
            if not template.startswith("/v1/admin") and (m, template) not in (("POST", "/v1/me"), ("GET", "/v1/me/deletion")):
                r.case(f"{op['operationId']}: never onboarded", m, path, c, body, expect=status_in(403))
            if template.startswith("/v1/admin"):
                r.case(f"{op['operationId']}: not an admin", m, path, a, body, expect=status_in(403))

    # 3. Tokens and headers.
    hdr_cases = [
        ("32 KiB Authorization", [("Authorization", "Bearer " + "a" * (32 * KIB))], status_in(401)),
        ("Basic scheme", [("Authorization", "Basic " + base64.b64encode(b"user:pass").decode())], status_in(401)),
        ("Bearer without a token", [("Authorization", "Bearer")], status_in(401)),
        ("Bearer and spaces", [("Authorization", "Bearer    ")], status_in(401)),
        ("alg none", [("Authorization", "Bearer " + alg_none(a))], status_in(401)),
        ("another key", [("Authorization", "Bearer " + forged(a))], status_in(401)),
        ("token with NUL", [("Authorization", "Bearer " + a[:20] + "%00" + a[20:])], status_in(401)),
        ("non-ASCII Authorization", [("Authorization", b"Bearer \xff\xfe" + a.encode())], status_in(401)),
        ("lowercase scheme", [("Authorization", "bearer " + a)], status_in(200)),
        ("two Authorization headers", [("Authorization", "Bearer " + a), ("Authorization", "Bearer " + b)], None),
        ("32 KiB custom header", [("Authorization", "Bearer " + a), ("X-Padding", "p" * (32 * KIB))], status_in(200)),
        ("32 KiB cookie", [("Authorization", "Bearer " + a), ("Cookie", "c=" + "p" * (32 * KIB))], status_in(200)),
        ("non-ASCII user agent", [("Authorization", "Bearer " + a), ("User-Agent", b"\xff\xfe\x80 agent")], status_in(200)),
        ("90 custom headers", [("Authorization", "Bearer " + a)] + [(f"X-H{i}", "v") for i in range(90)], status_in(200)),
    ]
    for name, hs, expect in hdr_cases:
        r.case(name, "GET", "/v1/me", body=None, raw_headers=hs, expect=expect)
    gen_body = {"prompt": "a red bicycle", "size": "1024x1024", "quality": "low", "n": 1}
    for name, key in (("32 KiB Idempotency-Key", "k" * (32 * KIB)), ("256-char Idempotency-Key", "k" * 256),
                      ("Idempotency-Key with a space", "a b"), ("empty Idempotency-Key", ""),
                      ("non-ASCII Idempotency-Key", b"\xff\xfekey"), ("Idempotency-Key of %00", "%00")):
        r.case(name, "POST", "/v1/generations", a, gen_body, headers=[("Idempotency-Key", key)],
               expect=None if name == "Idempotency-Key of %00" else status_in(400))
    r.case("webhook: bad signature", "POST", "/v1/webhooks/stripe", None, {"id": "evt_x", "type": "x"},
           headers=[("Stripe-Signature", "t=1,v1=" + "0" * 64)], expect=status_in(400))
    r.case("webhook: 32 KiB signature", "POST", "/v1/webhooks/stripe", None, {"id": "evt_x", "type": "x"},
           headers=[("Stripe-Signature", "t=1,v1=" + "0" * (32 * KIB))], expect=status_in(400))
    r.case("webhook: non-ASCII signature", "POST", "/v1/webhooks/stripe", None, {"id": "evt_x"},
           headers=[("Stripe-Signature", b"t=\xff,v1=\xfe")], expect=status_in(400))

    # 4. Another user's ids, as user A: 404, never 200 or 403.
    r.case("B's generation", "GET", f"/v1/generations/{st['b_gen']}", a, expect=is_404)
    r.case("B's generation, delete", "DELETE", f"/v1/generations/{st['b_gen']}", a, expect=is_404)
    r.case("B's upload", "GET", f"/v1/uploads/{st['b_upload']}", a, expect=is_404)
    r.case("B's upload, delete", "DELETE", f"/v1/uploads/{st['b_upload']}", a, expect=is_404)
    r.case("B's image", "GET", f"/v1/images/{st['b_image']}", a, expect=is_404)
    r.case("B's image, patch", "PATCH", f"/v1/images/{st['b_image']}", a, {"public": True}, expect=is_404)
    r.case("B's image, delete", "DELETE", f"/v1/images/{st['b_image']}", a, expect=is_404)
    r.case("B's image, download", "POST", f"/v1/images/{st['b_image']}/download", a, {"variant": "original"}, expect=is_404)
    r.case("B's image, download without body", "POST", f"/v1/images/{st['b_image']}/download", a, None, expect=is_404)
    r.case("B's export", "GET", f"/v1/exports/{st['b_export']}", a, expect=is_404)
    r.case("B's upload as a reference", "POST", "/v1/generations", a, {**gen_body, "reference_ids": [st["b_upload"]]}, expect=is_404)
    r.case("B's unpublished image in the gallery", "GET", f"/v1/gallery/{st['b_image']}", None, expect=is_404)
    r.case("B's unpublished image in the gallery, signed in", "GET", f"/v1/gallery/{st['b_image']}", a, expect=is_404)
    r.case("B's generation as an image id", "GET", f"/v1/images/{st['b_gen']}", a, expect=is_404)
    r.case("B's generation, second image", "GET", f"/v1/images/{st['b_gen']}-1", a, expect=is_404)
    r.case("B's upload as an image id", "GET", f"/v1/images/{st['b_upload']}-0", a, expect=is_404)
    r.case("B's upload as a generation id", "GET", f"/v1/generations/{st['b_upload']}", a, expect=is_404)
    r.case("B's export as a generation id", "GET", f"/v1/generations/{st['b_export']}", a, expect=is_404)
    r.case("B's generation, never onboarded caller", "GET", f"/v1/generations/{st['b_gen']}", c, expect=status_in(403))
    # B's published, copy-protected image: anyone signed in sees it (the preview), nobody else
    # may change, delete or download the original.
    r.case("B's published image", "GET", f"/v1/images/{st['b_image_pub']}", a,
           expect=lambda resp: None if resp.status == 200 and (resp.json() or {}).get("variant") == "preview"
           else f"expected 200 with the preview, got {resp.status} {resp.body[:200]!r}")
    r.case("B's published image, unpublish", "PATCH", f"/v1/images/{st['b_image_pub']}", a, {"public": False}, expect=status_in(403, 404))
    r.case("B's published image, delete", "DELETE", f"/v1/images/{st['b_image_pub']}", a, expect=status_in(403, 404))
    r.case("B's published image, download the original", "POST", f"/v1/images/{st['b_image_pub']}/download", a,
           {"variant": "original"},
           expect=lambda resp: None if resp.status in (403, 404) or (resp.status == 200 and (resp.json() or {}).get("variant") == "preview")
           else f"copy-protected: expected 403, 404 or the preview, got {resp.status} {resp.body[:200]!r}")
    r.case("B's published image in the gallery", "GET", f"/v1/gallery/{st['b_image_pub']}", None, expect=status_in(200))
    # Admin routes with B's ids, as A: 403 (not an admin), never acting.
    r.case("suspend B as A", "POST", f"/v1/admin/users/{st['b_sub']}/suspension", a, {"reason": "x"}, expect=status_in(403))
    r.case("hold B as A", "POST", "/v1/admin/holds", a, {"user_id": st["b_sub"], "reason": "x"}, expect=status_in(403))
    # Other users' cursors and forged cursors never show B's items (checked on every answer).
    for route, cur in (("/v1/generations", st["b_gen_cursor"]), ("/v1/billing/ledger", st["b_ledger_cursor"]),
                       ("/v1/downloads", st["b_gen_cursor"]), ("/v1/gallery", st["b_gen_cursor"])):
        r.case(f"B's cursor on {route}", "GET", f"{route}?limit=1&cursor={cur}", a)
    if st.get("b_data_cursor"):
        r.case("B's data cursor", "GET", f"/v1/me/data?kind=generation&limit=1&cursor={st['b_data_cursor']}", a)
    # ... and B still has everything.
    r.case("B's generation is intact", "GET", f"/v1/generations/{st['b_gen']}", b, expect=status_in(200))
    r.case("B's upload is intact", "GET", f"/v1/uploads/{st['b_upload']}", b,
           expect=lambda resp: None if resp.status == 200 and (resp.json() or {}).get("status") == "ready"
           else f"expected B's ready upload, got {resp.status}")
    r.case("B's image is intact", "GET", f"/v1/images/{st['b_image']}", b,
           expect=lambda resp: None if resp.status == 200 and (resp.json() or {}).get("public") is False
           else f"expected B's private image, got {resp.status} {resp.body[:200]!r}")
    r.case("B's published image is intact", "GET", f"/v1/images/{st['b_image_pub']}", b,
           expect=lambda resp: None if resp.status == 200 and (resp.json() or {}).get("public") is True
           else f"expected B's published image, got {resp.status} {resp.body[:200]!r}")
    r.case("B is not suspended", "POST", "/v1/generations", b, gen_body, expect=status_in(202))

    # 5. Malformed ids in every path parameter.
    bad_ids = [
        ("..", ".."), (".", "."), ("../", "..%2F.."), ("%2e%2e", "%2e%2e"), ("%2F", "%2F"), ("a%2Fb", "a%2Fb"),
        ("../../etc/passwd", "..%2F..%2Fetc%2Fpasswd"), ("%00", "%00"), ("NUL inside", "01j%00x"),
        ("%2500", "%2500"), ("lone %", "%"), ("%zz", "%zz"), ("%FF%FE", "%FF%FE"), ("space", "a%20b"),
        ("unicode", "%C3%A9%E2%98%83%F0%9F%92%A9"), ("RTL override", "%E2%80%AEabc"), ("raw UTF-8", "\u00e9\u2603".encode()),
        ("4 KiB", "x" * 4096), ("16 KiB", "y" * 16384), ("quote", "%22%27%3Cscript%3E"), ("-1", "-1"), ("0", "0"),
        ("uppercase ULID", st["a_gen"].upper()), ("ULID-like, unknown", "01jzzzzzzzzzzzzzzzzzzzzzzz"),
        ("A's generation, image 99", st["a_gen"] + "-99"), ("A's generation, image -1", st["a_gen"] + "--1"),
        ("A's generation, image empty", st["a_gen"] + "-"), ("A's generation, image 2^64", st["a_gen"] + "-18446744073709551616"),
        ("A's generation + NUL", st["a_gen"] + "%00"), ("A's generation + slash", st["a_gen"] + "%2F"),
        ("A's generation with ../", "..%2F" + st["a_gen"]), ("semicolon params", st["a_gen"] + ";x=1"),
        ("sql", "1'%20OR%20'1'='1"), ("sub-ish", "USER%23" + st["b_sub"]), ("key-ish", "GEN%23" + st["b_gen"]),
    ]
    param_ops = []
    for template, _, item in contract.templates:
        if "{" not in template:
            continue
        for method, op in item.items():
            if method in ("get", "post", "put", "patch", "delete"):
                param_ops.append((template, method.upper(), op))
    body_for = {label: valid for label, _, _, _, valid in body_ops(st)}
    for template, m, op in param_ops:
        token = admin if template.startswith("/v1/admin") else (None if template.startswith("/v1/gallery") else a)
        body = body_for.get(op["operationId"])
        if body is not None:
            body = json.dumps(body).encode()
        for name, value in bad_ids:
            if isinstance(value, bytes):
                target = re.sub(rb"\{\w+\}", value, template.encode())
            else:
                target = re.sub(r"\{\w+\}", lambda _: value, template)
            r.case(f"{op['operationId']}: id {name}", m, target, token, body)
        # Trailing slash and extra segments.
        good = re.sub(r"\{\w+\}", "01jzzzzzzzzzzzzzzzzzzzzzzz", template)
        r.case(f"{op['operationId']}: trailing slash", m, good + "/", token, body)
        r.case(f"{op['operationId']}: extra segment", m, good + "/extra", token, body)
        r.case(f"{op['operationId']}: double slash", m, good.replace("/v1/", "/v1//"), token, body)
    r.case("consent purpose: unknown", "PUT", "/v1/me/consents/not_a_purpose", a, {"granted": True}, expect=status_in(404))

    # 6. Cursors and limits on every list route.
    lists = [("/v1/generations", a), ("/v1/billing/ledger", a), ("/v1/downloads", a), ("/v1/gallery", None),
             ("/v1/gallery", a), ("/v1/me/data", a), ("/v1/admin/audit", admin), ("/v1/admin/holds", admin),
             ("/v1/admin/reports", admin), ("/v1/exports", a), ("/v1/billing/invoices", a)]
    limits = ["0", "-1", "101", "100", "1", "1.5", "1e2", "abc", "", "%20%205", "5%20", "%00", "5%00",
              "99999999999999999999999", "0x10", "%2B5", "%EF%BC%95", "NaN", "%FF", "%", "1&limit=1000", "-0", "[1]"]
    forged_cursors = [
        "abc", "", "%00", "!!!!", "=", "x" * 600, "A" * 511, b64("v1:"), b64("v1:GEN#"), b64("v1:GEN#\u0000"),
        b64("v1:GEN#" + "z" * 300), b64("v1:PROFILE"), b64("v1:L#"), b64("v1:L#x"), b64("v1:DOWNLOAD#x"),
        b64("v1:generation|x"), b64("v1:" + st["b_gen"]), b64("v1:GEN#" + st["b_gen"]), b64("v1:2"), b64("v1:2x"),
        b64("v1:" + st["b_image_pub"]), b64("v1:" + st["b_gen"] + "-99999999999999999999"), "%FF%FE",
        base64.urlsafe_b64encode(b"v1:\xff\xfe").decode().rstrip("="), b64("v1:GEN#x") + "==", b64("v2:GEN#x"),
        st["a_gen_cursor"], st["a_ledger_cursor"], b64("v1:USER#" + st["b_sub"]), b64("{\"pk\":\"USER#" + st["b_sub"] + "\"}"),
    ]
    for route, token in lists:
        for lim in limits:
            r.case(f"{route}: limit={lim}", "GET", f"{route}?limit={lim}", token)
        for cur in forged_cursors:
            r.case(f"{route}: cursor {shorten(cur, 40)}", "GET", f"{route}?cursor={cur}", token)
        r.case(f"{route}: cursor twice", "GET", f"{route}?cursor=abc&cursor={st['a_gen_cursor']}", token)
        r.case(f"{route}: 16 KiB query", "GET", f"{route}?q={'q' * 16384}", token)
        r.case(f"{route}: query without =", "GET", f"{route}?limit&cursor", token)
        r.case(f"{route}: invalid percent-encoding in a name", "GET", f"{route}?%zz=1&%FF=2", token)
        r.case(f"{route}: NUL in a name", "GET", f"{route}?lim%00it=5", token)
    for kind in st.get("kinds", [])[:40] + ["", "%00", "not_a_kind", "generation%00", "GENERATION", "x" * 2000, "%C3%A9"]:
        r.case(f"/v1/me/data kind={shorten(kind, 30)}", "GET", f"/v1/me/data?kind={kind}&limit=1", a)
        r.case(f"/v1/me/data kind={shorten(kind, 30)} with a forged cursor", "GET",
               f"/v1/me/data?kind={kind}&cursor={b64('v1:' + kind + '|x')}", a)
    r.case("/v1/me/data: cursor without kind", "GET", f"/v1/me/data?cursor={b64('v1:generation|x')}", a)
    r.case("/v1/admin/holds: user_id of B", "GET", f"/v1/admin/holds?user_id={st['b_sub']}", admin)
    for uid in ["", "%00", "../x", "x" * 200, "%C3%A9"]:
        r.case(f"/v1/admin/holds: user_id={shorten(uid, 30)}", "GET", f"/v1/admin/holds?user_id={uid}", admin)

    # 7. Routes and methods that do not exist.
    for m, target in [("PUT", "/v1/me"), ("GET", "/v1"), ("GET", "/"), ("GET", "/v1/"), ("GET", "/v2/me"),
                      ("OPTIONS", "/v1/me"), ("TRACE", "/v1/me"), ("HEAD", "/v1/health"), ("GET", "/v1/me%2Fdata"),
                      ("GET", "/v1/ME"), ("GET", "//v1/me"), ("GET", "/v1/./me"), ("GET", "/v1/x/../me"),
                      ("GET", "/v1/me/"), ("GET", "/v1/generations/"), ("PATCH", "/v1/generations/x"),
                      ("GET", "/dev/token"), ("GET", "/v1/%00"), ("GET", "/" + "a" * 8000)]:
        r.case(f"{m} {shorten(target, 40)}", m, target, a)
    r.case("POST /dev/token: bad body", "POST", "/dev/token", None, b"[" * 10000)
    r.case("POST /dev/token: NUL subject", "POST", "/dev/token", None, {"sub": "a\u0000b"})


def run_after(r):
    st = r.st
    b = st["b"]
    deletes = [
        ("no body", None, "application/json", status_in(400)),
        ("empty body", b"", "application/json", status_in(400)),
        ("null", b"null", "application/json", status_in(400)),
        ("array", b'[{"confirm":"delete my account"}]', "application/json", status_in(400)),
        ("wrong words", {"confirm": "Delete my account"}, "application/json", status_in(400)),
        ("NUL in the words", {"confirm": "delete my account\u0000"}, "application/json", status_in(400)),
        ("extra field", {"confirm": "delete my account", "x": 1}, "application/json", status_in(400)),
        ("confirm true", {"confirm": True}, "application/json", status_in(400)),
        ("invalid utf-8", b'{"confirm":"delete my account\xff"}', "application/json", status_in(400)),
        ("over 64 KiB", json.dumps({"confirm": "delete my account", "x": "a" * (65 * KIB)}).encode(), "application/json", status_in(413)),
        ("10k nested", b"[" * 10000, "application/json", status_in(400)),
        ("text/plain", {"confirm": "delete my account"}, "text/plain", status_in(415)),
        ("multipart", {"confirm": "delete my account"}, "multipart/form-data; boundary=x", status_in(415)),
        ("application/xml", {"confirm": "delete my account"}, "application/xml", status_in(415)),
    ]
    for name, body, ctype, expect in deletes:
        r.case(f"deleteMe as B: {name}", "DELETE", "/v1/me", b, body, ctype, expect=expect)
    r.case("B still has an account", "GET", "/v1/me", b, expect=status_in(200))
    r.case("deleteMe as B", "DELETE", "/v1/me", b, {"confirm": "delete my account"}, expect=status_in(202))
    r.case("deleteMe as B, again", "DELETE", "/v1/me", b, {"confirm": "delete my account"})
    r.case("B's deletion status", "GET", "/v1/me/deletion", b, expect=status_in(200))
    r.case("B after deletion: profile", "GET", "/v1/me", b, expect=status_in(403))
    r.case("B after deletion: generate", "POST", "/v1/generations", b,
           {"prompt": "a red bicycle", "size": "1024x1024", "quality": "low", "n": 1}, expect=status_in(403))
    r.case("B after deletion: onboard again", "POST", "/v1/me", b, {"age_confirmed": True}, expect=status_in(403))
    r.case("B after deletion: bad body", "PATCH", "/v1/me", b, b"[" * 10000)
    r.case("B's generation after B's deletion, as A", "GET", f"/v1/generations/{st['b_gen']}", st["a"], expect=is_404)
    r.case("A after the fuzzing: profile", "GET", "/v1/me", st["a"], expect=status_in(200))
    r.case("health after the run", "GET", "/v1/health", None, expect=status_in(200))


def b64(s):
    return base64.urlsafe_b64encode(s.encode("utf-8")).decode().rstrip("=")


def forged(token):
    """The same claims signed with another key."""
    head, claims, _ = token.split(".")
    return f"{head}.{claims}.{base64.urlsafe_b64encode(b'x' * 32).decode().rstrip('=')}"


def alg_none(token):
    _, claims, _ = token.split(".")
    head = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').decode().rstrip("=")
    return f"{head}.{claims}."


def cases(args):
    with open(args.state, encoding="utf-8") as f:
        st = json.load(f)
    r = Runner(st, Contract(args.doc))
    started = time.time()
    (run_before if args.phase == "before" else run_after)(r)
    with open(args.results, "w", encoding="utf-8") as f:
        json.dump(r.results, f)
    bad = sum(1 for x in r.results if x["failures"])
    print(f"contract: {len(r.results)} hand-picked cases ({args.phase}) in {time.time() - started:.1f}s, {bad} failing")


# --------------------------------------------------------------------------------------------
# Summary


# schemathesis' failure types (its report's `failures[].type`, codes ST101 to ST111).
ST_SERVER_ERRORS = {"ServerError", "ContentTypeServerError"}
ST_NONCONFORMING = {"UndefinedStatusCode", "MissingContentType", "UndefinedContentType", "MalformedMediaType",
                    "MissingHeaders", "JsonSchemaError", "MalformedJson", "ContentDeserializationError",
                    "DiscriminatorMismatch"}


def summary(args):
    st_cases = st_ops = 0
    st_5xx = st_nonconf = st_other = 0
    st_ok = True
    lines = []
    for i, path in enumerate(args.st_report):
        exit_code = args.st_exit[i] if i < len(args.st_exit) else None
        if not os.path.exists(path):
            lines.append(f"  schemathesis: no report at {path} (exit {exit_code}): it did not run to the end")
            st_ok = False
            continue
        with open(path, encoding="utf-8") as f:
            rep = json.load(f)
        st_cases += rep["test_cases"]["generated"]
        st_ops += rep["operations"]["tested"]
        if not rep.get("complete") or rep.get("errors") or rep["test_cases"].get("errored"):
            st_ok = False
        if exit_code not in (0, None) and not rep.get("failures") and not rep.get("errors"):
            lines.append(f"  schemathesis: exit {exit_code} ({rep.get('stop_reason')})")
            st_ok = False
        for group in rep.get("failures", []):
            kind = group.get("type", "")
            title = group.get("title", "")
            n = group.get("count", 1)
            if kind in ST_SERVER_ERRORS:
                st_5xx += n
            elif kind in ST_NONCONFORMING:
                st_nonconf += n
            else:
                st_other += n
            lines.append(f"  schemathesis: {title} ({group.get('code')} {kind}) x{n}: "
                         f"{', '.join(group.get('operations', [])[:8])}")
        for err in rep.get("errors", []):
            lines.append(f"  schemathesis error: {err['title']} x{err['count']}")
    hp = []
    for path in args.results:
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                hp.extend(json.load(f))
        else:
            lines.append(f"  hand-picked: no results at {path}: the cases did not run to the end")
            st_ok = False
    hp_5xx = sum(1 for x in hp if any(k == "5xx" for k, _ in x["failures"]))
    hp_nonconf = sum(1 for x in hp if any(k == "nonconforming" for k, _ in x["failures"]))
    hp_expect = sum(1 for x in hp if any(k == "expectation" for k, _ in x["failures"]))
    hp_transport = sum(1 for x in hp if any(k == "transport" for k, _ in x["failures"]))
    print()
    print("contract summary")
    print(f"  schemathesis: {st_cases} test cases over {st_ops} operations ({len(args.st_report)} passes); failing: "
          f"{st_5xx} 5xx, {st_nonconf} nonconforming, {st_other} other")
    print(f"  hand-picked:  {len(hp)} cases; failing: {hp_5xx} 5xx, {hp_nonconf} nonconforming, "
          f"{hp_expect} failed expectations, {hp_transport} without an HTTP answer")
    for line in lines:
        print(line)
    total_5xx = st_5xx + hp_5xx
    total_nonconf = st_nonconf + hp_nonconf
    print(f"  total: {total_5xx} 5xx, {total_nonconf} nonconforming responses")
    failed = bool(total_5xx or total_nonconf or st_other or hp_expect or hp_transport or not st_ok or not hp)
    print("contract: FAILED" if failed else "contract: passed")
    return 1 if failed else 0


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    pp = sub.add_parser("prepare")
    pp.add_argument("--base", required=True)
    pp.add_argument("--state", required=True)
    pp.add_argument("--run", required=True)
    pc = sub.add_parser("cases")
    pc.add_argument("--state", required=True)
    pc.add_argument("--phase", choices=("before", "after"), required=True)
    pc.add_argument("--results", required=True)
    pc.add_argument("--doc", default=DOC_PATH)
    ps = sub.add_parser("summary")
    ps.add_argument("--st-report", nargs="*", default=[])
    ps.add_argument("--st-exit", nargs="*", type=int, default=[])
    ps.add_argument("--results", nargs="*", default=[])
    args = p.parse_args()
    if args.cmd == "prepare":
        prepare(args)
    elif args.cmd == "cases":
        cases(args)
    else:
        sys.exit(summary(args))


if __name__ == "__main__":
    main()
