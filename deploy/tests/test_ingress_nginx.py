"""The chart's Ingress paths, routed by a real nginx the way ingress-nginx configures it.

ingress-nginx merges every Ingress of a host into one nginx `server`. When any of them has
`nginx.ingress.kubernetes.io/use-regex` (or `rewrite-target`), it writes EVERY location of that
host, whichever Ingress it comes from, as a case-insensitive regular expression anchored at the
start only (`location ~* "^<path>" {`), and nginx takes the first regular expression that
matches, in the order ingress-nginx wrote them: the longest path first. A Prefix path `/static`
written that way would also take `/staticfoo/...` and `/STATIC/...` (its documentation, "Ingress
Path Matching": regular expressions, path priority, and the warning that these annotations act
on all paths of a host).

These tests render the chart with the real helm (HELM, default `helm`), turn the rendered rules
of a host into the location blocks ingress-nginx generates from them (`ingress_nginx_locations`,
which follows the controller's getBackendServers, updateServerLocations, enforceRegexModifier and
buildLocation), each answering with the name of its backend Service, run them in Debian's nginx
(NGINX, default the one on PATH or /usr/sbin/nginx) on a loopback port, and request a table of
paths. The same table is requested from the routing that Kubernetes' Prefix paths mean (the
controller's own translation of `/` and `/static` when no regular expression is involved, and
git's endpoints as the case-sensitive expressions they are), which must agree path for path.

Without nginx the tests are skipped with a notice; with CI=true that is a failure.
scripts/chart.sh installs the package.
"""

import http.client
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
import unittest

import yaml

CHART = os.path.join(os.path.dirname(__file__), "..")
HELM = os.environ.get("HELM", "helm")
HOST = "your-domain.com"
USE_REGEX = "nginx.ingress.kubernetes.io/use-regex"
REWRITE_TARGET = "nginx.ingress.kubernetes.io/rewrite-target"
SERVICES = {"deploy-app": "app", "deploy-static-server": "static_server", "deploy-gitserver": "gitserver"}

# method, path (with its query), the service that must answer. The default backend is app.
TABLE = [
    ("GET", "/static/avatars/a.png", "static_server"),
    ("GET", "/static/files/blobs/ab/cd/abcd", "static_server"),
    ("GET", "/static/media/logo.svg?v=3", "static_server"),
    ("GET", "/static/", "static_server"),
    ("GET", "/static", "static_server"),  # a Prefix path matches itself exactly too
    ("GET", "/%73tatic/avatars/a.png", "static_server"),  # nginx matches the decoded path
    ("GET", "/staticfoo/x", "app"),
    ("GET", "/staticfoo", "app"),
    ("GET", "/static-site/x", "app"),
    ("GET", "/STATIC/x", "app"),
    ("GET", "/Static/x", "app"),
    ("GET", "/STATIC", "app"),
    ("GET", "/sTaTiC/avatars/a.png", "app"),
    ("GET", "/owner/repo.git/info/refs?service=git-upload-pack", "gitserver"),
    ("GET", "/owner/repo/info/refs?service=git-receive-pack", "gitserver"),
    ("POST", "/owner/repo.git/git-upload-pack", "gitserver"),
    ("POST", "/owner/repo.git/git-receive-pack", "gitserver"),
    ("POST", "/owner/repo/git-receive-pack", "gitserver"),
    ("GET", "/owner/repo.git/INFO/REFS?service=git-upload-pack", "app"),  # gitserver's routes are case-sensitive
    ("POST", "/owner/repo.git/Git-Receive-Pack", "app"),
    ("GET", "/owner/repo/info/refs/extra", "app"),
    ("GET", "/owner/info/refs", "app"),
    ("POST", "/owner/repo/tree/main/git-receive-pack.md", "app"),
    ("GET", "/owner/repo", "app"),
    ("GET", "/staticfoo/repo", "app"),  # an owner whose name starts with "static"
    ("GET", "/static/../owner/repo", "app"),
    ("GET", "/api/v1/repos/owner/repo", "app"),
    ("GET", "/api/search/code?q=static", "app"),
    ("GET", "/", "app"),
]


def probe_paths():
    """More paths, without a stated answer: the chart's routing and Prefix routing must agree."""
    paths = set()
    for word in ("static", "Static", "STATIC", "staticfoo", "statics", "static_", "stati", "xstatic", "api"):
        for rest in ("", "/", "/x", "/avatars/a.png", "/x/info/refs", "//x", "/./x"):
            paths.add(f"/{word}{rest}")
    for base in ("/o/r", "/o/r.git", "/o", "/o/r/s", "/static/r", "/STATIC/r.git"):
        for tail in ("info/refs", "INFO/REFS", "Info/refs", "info/refs/", "info/refsx", "git-upload-pack",
                     "GIT-UPLOAD-PACK", "git-receive-pack", "git-receive-pack/x", "xgit-receive-pack"):
            paths.add(f"{base}/{tail}")
    return sorted(paths)


def render(*options):
    """The chart's Ingresses, rendered as release `deploy` with ingress on for HOST."""
    args = ["template", "deploy", CHART, "--namespace", "app", "--set", "ingress.enabled=true",
            "--set", "ingress.className=nginx", "--set", f"ingress.hosts[0].host={HOST}", *options]
    result = subprocess.run([HELM, *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise AssertionError(f"helm template failed: {result.stderr}")
    return [d for d in yaml.safe_load_all(result.stdout) if d and d["kind"] == "Ingress"]


def ingress_nginx_locations(ingresses, host):
    """The `location` lines ingress-nginx writes for `host`, in its order, with their Services.

    Follows the controller: one server per host with a default root location; the paths of
    every Ingress of the host, in creation order (here: by name), a path already defined with
    the same pathType being skipped; sorted by path, descending, then stably by path length,
    longest first (getBackendServers); each Prefix path other than `/` split into `path/` and an
    Exact `path` unless its own Ingress uses regular expressions (updateServerLocations); then, if
    any location of the host uses regular expressions or rewrite-target, every location written as
    `~* "^path"`, else `= path` for Exact and `path` for the others (enforceRegexModifier,
    buildLocation).
    """
    root = {"path": "/", "type": "Prefix", "service": "default-backend", "regex": False, "default": True}
    locations = [root]
    for ingress in sorted(ingresses, key=lambda i: (i["metadata"].get("namespace", "app"), i["metadata"]["name"])):
        annotations = ingress["metadata"].get("annotations") or {}
        regex = annotations.get(USE_REGEX) == "true" or bool(annotations.get(REWRITE_TARGET))
        for rule in ingress["spec"].get("rules", []):
            if rule.get("host") != host:
                continue
            for path in rule["http"]["paths"]:
                location = {"path": path.get("path") or "/", "type": path["pathType"],
                            "service": path["backend"]["service"]["name"], "regex": regex, "default": False}
                same = [l for l in locations if (l["path"], l["type"]) == (location["path"], location["type"])]
                if same and same[0]["default"]:
                    same[0].update(location)
                elif not same:
                    locations.append(location)
    locations.sort(key=lambda l: l["path"], reverse=True)
    locations.sort(key=lambda l: len(l["path"]), reverse=True)

    exact = {l["path"] for l in locations if l["type"] == "Exact"}
    updated = []
    for location in locations:
        if location["path"] == "/" or location["type"] != "Prefix" or location["regex"]:
            updated.append(location)
            continue
        prefix = dict(location, path=location["path"].rstrip("/") + "/")
        updated.append(prefix)
        if location["path"] not in exact:
            updated.append(dict(location, type="Exact"))

    enforce_regex = any(l["regex"] for l in updated)
    lines = []
    for location in updated:
        if enforce_regex:
            lines.append((f'~* "^{location["path"]}"', location["service"]))
        elif location["type"] == "Exact":
            lines.append((f"= {location['path']}", location["service"]))
        else:
            lines.append((location["path"], location["service"]))
    return lines


def prefix_semantics_locations():
    """What the routes mean without use-regex acting on the whole host: `/` and `/static` as
    Kubernetes Prefix paths (element-wise and case-sensitive), in ingress-nginx's own translation
    when no regular expression is involved, and git's three smart-HTTP endpoints of
    `/<owner>/<repo>/` as case-sensitive regular expressions (which nginx tries before prefixes)."""
    api = {"metadata": {"name": "deploy", "annotations": {}}, "spec": {"rules": [{"host": HOST, "http": {"paths": [
        {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "deploy-app"}}},
        {"path": "/static", "pathType": "Prefix", "backend": {"service": {"name": "deploy-static-server"}}},
    ]}}]}}
    git = [(f'~ "^/[^/]+/[^/]+/{endpoint}$"', "deploy-gitserver")
           for endpoint in ("info/refs", "git-upload-pack", "git-receive-pack")]
    return git + ingress_nginx_locations([api], HOST)


def find_nginx():
    """NGINX if set (and only it), else the nginx on PATH or Debian's /usr/sbin/nginx."""
    candidates = [os.environ["NGINX"]] if os.environ.get("NGINX") else [shutil.which("nginx"), "/usr/sbin/nginx"]
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


class Nginx:
    """Debian's nginx on a loopback port, one `server` per scenario (told apart by Host)."""

    def __init__(self, binary, servers):
        self.directory = tempfile.mkdtemp(prefix="ingress-nginx-test-")
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        blocks = []
        for name, locations in servers.items():
            body = "".join(
                f"    location {where} {{\n"
                f"      add_header X-Backend {service} always;\n"
                f'      return 200 "{service}\\n";\n'
                f"    }}\n"
                for where, service in locations
            )
            blocks.append(f"  server {{\n    listen 127.0.0.1:{self.port};\n    server_name {name};\n{body}  }}\n")
        d = self.directory
        self.config = os.path.join(d, "nginx.conf")
        with open(self.config, "w", encoding="utf-8") as file:
            file.write(
                f"worker_processes 1;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n"
                "events { worker_connections 64; }\n"
                "http {\n  access_log off;\n  default_type text/plain;\n"
                f"  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n"
                f"  fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n"
                # A Host no scenario names is a mistake of the test, not a route.
                f"  server {{\n    listen 127.0.0.1:{self.port} default_server;\n    return 421;\n  }}\n"
                + "".join(blocks) + "}\n"
            )
        command = [binary, "-p", d, "-c", self.config, "-e", f"{d}/error.log"]
        checked = subprocess.run([*command, "-t"], capture_output=True, text=True, check=False)
        if checked.returncode != 0:
            self.close()
            raise AssertionError(f"nginx -t refuses the generated configuration:\n{checked.stderr}")
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    error = self.process.stderr.read() if self.process.poll() is not None else "no answer in 10 s"
                    self.close()
                    raise AssertionError(f"nginx did not start: {error}")
                time.sleep(0.05)

    def backend(self, server, method, path):
        """The service that answers `method path` on `server`."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            connection.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            connection.putheader("Host", server)
            connection.putheader("Content-Length", "0")
            connection.endheaders()
            response = connection.getresponse()
            response.read()
        finally:
            connection.close()
        if response.status != 200:
            return f"HTTP {response.status}"
        name = response.getheader("X-Backend")
        return SERVICES.get(name, name)

    def close(self):
        process = getattr(self, "process", None)
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process is not None:
            process.stderr.close()
        shutil.rmtree(self.directory, ignore_errors=True)


def described(locations):
    return "\n".join(f"  location {where} -> {service}" for where, service in locations)


def listed(wrong):
    return "\n".join(f"  {method} {path}: {what}" for (method, path), what in wrong.items())


class IngressNginxRouting(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        binary = find_nginx()
        if binary is None:
            message = ("nginx is missing: the Ingress paths cannot be routed by a real nginx "
                       "(install Debian's nginx package; scripts/chart.sh does)")
            if os.environ.get("CI") == "true":
                raise AssertionError(message)
            raise unittest.SkipTest(message + "; with CI=true this fails")
        cls.ingresses = render()
        cls.api = [i for i in cls.ingresses if i["metadata"]["name"] == "deploy"]
        cls.scenarios = {
            # Both Ingresses on one host, as installed.
            "chart.test": ingress_nginx_locations(cls.ingresses, HOST),
            # The API Ingress alone (the git one deleted, or refused by an admission webhook).
            "api-only.test": ingress_nginx_locations(cls.api, HOST),
            "prefix.test": prefix_semantics_locations(),
        }
        cls.nginx = Nginx(binary, cls.scenarios)

    @classmethod
    def tearDownClass(cls):
        cls.nginx.close()

    def route(self, scenario, paths):
        return {(method, path): self.nginx.backend(scenario, method, path) for method, path in paths}

    def test_the_host_is_routed_with_regular_expressions(self):
        # What the rest assumes: with the chart's annotations ingress-nginx writes every
        # location of the host as a case-insensitive regular expression.
        locations = self.scenarios["chart.test"]
        self.assertTrue(all(where.startswith('~* "^') for where, _ in locations), described(locations))
        self.assertIn("deploy-static-server", {service for _, service in locations})

    def test_every_path_reaches_its_service_with_regular_expressions_for_the_whole_host(self):
        expected = {(method, path): service for method, path, service in TABLE}
        got = self.route("chart.test", expected)
        wrong = {k: f"{got[k]}, expected {v}" for k, v in expected.items() if got[k] != v}
        if wrong:
            self.fail(f"{len(wrong)} of {len(expected)} paths reach the wrong service:\n{listed(wrong)}\n"
                      f"the chart's locations for {HOST}:\n{described(self.scenarios['chart.test'])}")

    def test_prefix_paths_route_the_table_the_same(self):
        expected = {(method, path): service for method, path, service in TABLE}
        got = self.route("prefix.test", expected)
        wrong = {k: f"{got[k]}, expected {v}" for k, v in expected.items() if got[k] != v}
        if wrong:
            self.fail(f"the table itself disagrees with Prefix routing:\n{listed(wrong)}")

    def test_the_chart_routes_like_prefix_paths_path_for_path(self):
        paths = [(method, path) for path in probe_paths() for method in ("GET", "POST")]
        paths += [(method, path) for method, path, _ in TABLE]
        chart = self.route("chart.test", paths)
        prefix = self.route("prefix.test", paths)
        differ = {k: f"chart: {chart[k]}, Prefix paths: {prefix[k]}" for k in paths if chart[k] != prefix[k]}
        if differ:
            self.fail(f"{len(differ)} of {len(paths)} requests are routed otherwise than by Prefix paths:\n"
                      f"{listed(differ)}\nthe chart's locations for {HOST}:\n{described(self.scenarios['chart.test'])}")

    def test_the_api_ingress_routes_the_same_without_the_git_ingress(self):
        expected = {(m, p): s for m, p, s in TABLE if s != "gitserver" and "/info/refs" not in p and "pack" not in p}
        got = self.route("api-only.test", expected)
        wrong = {k: f"{got[k]}, expected {v}" for k, v in expected.items() if got[k] != v}
        if wrong:
            self.fail(f"without the git Ingress, {len(wrong)} paths reach the wrong service:\n{listed(wrong)}\n"
                      f"the API Ingress's locations:\n{described(self.scenarios['api-only.test'])}")


class IngressPaths(unittest.TestCase):
    """Every rendered path is one the API server and ingress-nginx accept."""

    # ingress-nginx's strict-validate-path-type (on by default since v1.12) allows only these in
    # Exact and Prefix paths; anything else must be ImplementationSpecific.
    STRICT = re.compile(r"^/[A-Za-z0-9_\-/]*$")

    def test_paths_validate(self):
        for ingress in render():
            annotations = ingress["metadata"].get("annotations") or {}
            for rule in ingress["spec"]["rules"]:
                for path in rule["http"]["paths"]:
                    value, kind = path["path"], path["pathType"]
                    with self.subTest(ingress=ingress["metadata"]["name"], path=value):
                        self.assertTrue(value.startswith("/"), "paths must be absolute")
                        self.assertIn(kind, ("Exact", "Prefix", "ImplementationSpecific"))
                        if kind in ("Exact", "Prefix"):
                            self.assertRegex(value, self.STRICT)
                            for bad in ("//", "/./", "/../", "%2f", "%2F"):
                                self.assertNotIn(bad, value)
                        else:
                            # A regular expression: its own Ingress says so, so that the path
                            # does not depend on another Ingress of the host switching them on.
                            self.assertEqual(annotations.get(USE_REGEX), "true")

    def test_the_operators_annotations_cannot_switch_regular_expressions_off(self):
        for ingress in render("--set-string", r"ingress.annotations.nginx\.ingress\.kubernetes\.io/use-regex=false"):
            self.assertEqual(ingress["metadata"]["annotations"][USE_REGEX], "true", ingress["metadata"]["name"])


if __name__ == "__main__":
    unittest.main()
