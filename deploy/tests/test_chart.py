"""Checks of the Helm chart, rendered by the real helm binary (HELM, default `helm`)."""

import glob
import ipaddress
import json
import os
import subprocess
import unittest

import yaml

CHART = os.path.join(os.path.dirname(__file__), "..")
HELM = os.environ.get("HELM", "helm")
QUICK_START = ["--namespace", "app", "--set", "imageRegistry=ghcr.io/your-org"]
SERVICES = {
    # name in values: (Kubernetes name, port, default replicas, HPA bounds or None)
    "app": ("app", 3000, 2, (2, 10)),
    "gitserver": ("gitserver", 8021, 1, (1, 5)),
    "email_worker": ("email-worker", 8084, 1, None),
    "git_hook": ("git-hook", 8083, 1, (1, 5)),
    "metrics_aggregator": ("metrics-aggregator", 9090, 1, (1, 5)),
    "static_server": ("static-server", 8081, 1, (1, 5)),
}


def helm(*args):
    return subprocess.run([HELM, *args], capture_output=True, text=True, check=False)


def render(*sets):
    """Renders the chart as release `deploy` and returns {(kind, name): object}."""
    args = list(QUICK_START)
    for value in sets:
        args += ["--set", value]
    result = helm("template", "deploy", CHART, *args)
    if result.returncode != 0:
        raise AssertionError(f"helm template failed: {result.stderr}")
    return {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(result.stdout) if d}


def render_error(*sets):
    args = list(QUICK_START)
    for value in sets:
        args += ["--set", value]
    result = helm("template", "deploy", CHART, *args)
    if result.returncode == 0:
        raise AssertionError(f"rendering succeeded with {sets}")
    return result.stderr


def container(objects, service):
    deployment = objects[("Deployment", f"deploy-{SERVICES[service][0]}")]
    return deployment, deployment["spec"]["template"]["spec"]["containers"][0]


def environment(objects, service):
    """The container's env as {name: entry}."""
    _, main = container(objects, service)
    names = [e["name"] for e in main["env"]]
    if len(names) != len(set(names)):
        raise AssertionError(f"{service} has duplicate environment variables: {names}")
    return {e["name"]: e for e in main["env"]}


def selects(selector, labels):
    """Whether a Kubernetes label selector (matchLabels, matchExpressions) selects `labels`."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator, values = expression["key"], expression["operator"], expression.get("values", [])
        matched = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[operator]
        if not matched:
            return False
    return True


class Services(unittest.TestCase):
    def test_every_service_has_its_deployment_ports_and_replicas(self):
        objects = render()
        for service, (name, port, replicas, _) in SERVICES.items():
            deployment, main = container(objects, service)
            self.assertEqual(deployment["metadata"]["namespace"], "app")
            if SERVICES[service][3] is None:
                self.assertEqual(deployment["spec"]["replicas"], replicas, service)
            else:
                # The HPA's: an upgrade never resets a scaled-out service.
                self.assertNotIn("replicas", deployment["spec"], service)
                hpa = objects[("HorizontalPodAutoscaler", f"deploy-{name}")]
                self.assertEqual(hpa["spec"]["minReplicas"], replicas, service)
            self.assertEqual(main["command"], [f"/usr/local/bin/{service}"])
            self.assertEqual(main["image"], "ghcr.io/your-org/platform:v0.2.9")
            ports = {p["name"]: p["containerPort"] for p in main["ports"]}
            expected = {"http": port, "ssh": 2222} if service == "gitserver" else {"http": port}
            self.assertEqual(ports, expected, service)
            svc = objects[("Service", f"deploy-{name}")]
            self.assertEqual({p["name"]: p["port"] for p in svc["spec"]["ports"]}, expected)
            env = {e["name"]: e.get("value") for e in main["env"]}
            self.assertEqual(env["APP_SSH_PORT"], "2222")
            self.assertEqual(env["APP_HTTP_ADDR"], f"0.0.0.0:{port}")

    def test_probes_use_readyz_and_healthz(self):
        objects = render()
        for service in SERVICES:
            _, main = container(objects, service)
            self.assertEqual(main["readinessProbe"]["httpGet"], {"path": "/readyz", "port": "http"}, service)
            self.assertEqual(main["livenessProbe"]["httpGet"], {"path": "/healthz", "port": "http"}, service)
            self.assertEqual(main["resources"]["limits"].keys(), {"cpu", "memory"}, service)

    def test_replicas_and_image_tag_can_be_overridden(self):
        objects = render("services.app.replicas=3", "imageTag=v1.2.3")
        deployment, main = container(objects, "app")
        self.assertNotIn("replicas", deployment["spec"])
        self.assertEqual(objects[("HorizontalPodAutoscaler", "deploy-app")]["spec"]["minReplicas"], 3)
        self.assertTrue(main["image"].endswith(":v1.2.3"))
        deployment, _ = container(render("services.app.replicas=3", "services.app.autoscaling.enabled=false"), "app")
        self.assertEqual(deployment["spec"]["replicas"], 3)


class Startup(unittest.TestCase):
    """The services bind before migrating: /healthz at once, /readyz when migrated and connected."""

    def test_every_service_has_a_startup_probe_on_healthz(self):
        objects = render()
        for service in SERVICES:
            _, main = container(objects, service)
            startup = main["startupProbe"]
            self.assertEqual(startup["httpGet"], {"path": "/healthz", "port": "http"}, service)
            # Generous: minutes before liveness may restart a pod that has not answered yet.
            self.assertGreaterEqual(startup["periodSeconds"] * startup["failureThreshold"], 300, service)
            self.assertLess(startup["timeoutSeconds"], startup["periodSeconds"], service)
            # Liveness waits for the startup probe, not for a fixed delay.
            self.assertNotIn("initialDelaySeconds", main["livenessProbe"], service)
            # The probes' port is the service's HTTP port.
            ports = {p["name"]: p["containerPort"] for p in main["ports"]}
            self.assertEqual(ports["http"], SERVICES[service][1], service)


class Shutdown(unittest.TestCase):
    """One value decides how a pod stops: its termination grace period."""

    @staticmethod
    def stop(objects, service):
        deployment, main = container(objects, service)
        env = {e["name"]: e.get("value") for e in main["env"]}
        pre_stop = main.get("lifecycle", {}).get("preStop")
        return deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"], pre_stop, env["APP_SHUTDOWN_GRACE_SECONDS"]

    def test_defaults_give_git_ten_minutes_and_the_rest_one(self):
        objects = render()
        for service in SERVICES:
            period, pre_stop, grace = self.stop(objects, service)
            expected = 600 if service == "gitserver" else 60
            self.assertEqual(period, expected, service)
            self.assertEqual(pre_stop, {"exec": {"command": ["sleep", "10"]}}, service)
            self.assertEqual(grace, str(expected - 10 - 5), service)

    def test_the_grace_follows_the_values(self):
        objects = render(
            "shutdown.terminationGracePeriodSeconds=120", "shutdown.preStopSeconds=15",
            "services.git_hook.terminationGracePeriodSeconds=300",
        )
        self.assertEqual(self.stop(objects, "app"), (120, {"exec": {"command": ["sleep", "15"]}}, "100"))
        self.assertEqual(self.stop(objects, "git_hook")[::2], (300, "280"))
        self.assertEqual(self.stop(objects, "gitserver")[::2], (600, "580"))
        objects = render("shutdown.preStopSeconds=0")
        self.assertEqual(self.stop(objects, "static_server"), (60, None, "55"))

    def test_a_grace_below_one_second_is_refused(self):
        error = render_error("shutdown.terminationGracePeriodSeconds=15")
        self.assertIn("shutdown.terminationGracePeriodSeconds (15) leaves", error)
        self.assertIn("at least shutdown.preStopSeconds (10) + 5 + 1 = 16 seconds", error)
        error = render_error("services.gitserver.terminationGracePeriodSeconds=16", "shutdown.preStopSeconds=11")
        self.assertIn("services.gitserver.terminationGracePeriodSeconds (16) leaves gitserver no time", error)
        self.assertEqual(self.stop(render("shutdown.terminationGracePeriodSeconds=16"), "app")[::2], (16, "1"))
        self.assertIn("APP_SHUTDOWN_GRACE_SECONDS is set by the chart", render_error("env.APP_SHUTDOWN_GRACE_SECONDS=5"))
        self.assertIn("preStopSeconds", render_error("shutdown.preStopSeconds=-1"))


class Autoscaling(unittest.TestCase):
    def test_default_bounds(self):
        objects = render()
        for service, (name, _, _, bounds) in SERVICES.items():
            hpa = objects.get(("HorizontalPodAutoscaler", f"deploy-{name}"))
            if bounds is None:
                self.assertIsNone(hpa, service)
                continue
            self.assertEqual((hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]), bounds)
            self.assertEqual(hpa["apiVersion"], "autoscaling/v2")
            self.assertEqual(hpa["spec"]["scaleTargetRef"]["name"], f"deploy-{name}")

    def test_readme_overrides(self):
        objects = render(
            "services.app.autoscaling.maxReplicas=20",
            "services.app.autoscaling.targetCPUUtilization=70",
            "services.git_hook.autoscaling.enabled=false",
        )
        hpa = objects[("HorizontalPodAutoscaler", "deploy-app")]
        self.assertEqual(hpa["spec"]["maxReplicas"], 20)
        target = hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"]
        self.assertEqual(target, 70)
        self.assertNotIn(("HorizontalPodAutoscaler", "deploy-git-hook"), objects)

    def test_the_hpa_owns_the_replicas(self):
        for sets in [(), ("services.app.replicas=4",), ("services.app.autoscaling.minReplicas=3",)]:
            deployment, _ = container(render(*sets), "app")
            self.assertNotIn("replicas", deployment["spec"], sets)
        objects = render("services.app.replicas=4", "services.app.autoscaling.minReplicas=3")
        self.assertEqual(objects[("HorizontalPodAutoscaler", "deploy-app")]["spec"]["minReplicas"], 3)
        # Without an HPA the Deployment keeps its replicas, and no HPA is left behind.
        objects = render("services.git_hook.autoscaling.enabled=false", "services.git_hook.replicas=2")
        deployment, _ = container(objects, "git_hook")
        self.assertEqual(deployment["spec"]["replicas"], 2)
        self.assertNotIn(("HorizontalPodAutoscaler", "deploy-git-hook"), objects)

    def test_bounds_the_hpa_could_not_have_are_refused(self):
        error = render_error("services.app.replicas=12")
        self.assertIn("services.app: the HPA's minimum (12, from replicas) exceeds services.app.autoscaling.maxReplicas (10)", error)
        error = render_error("services.gitserver.autoscaling.minReplicas=6")
        self.assertIn("(6, from autoscaling.minReplicas) exceeds services.gitserver.autoscaling.maxReplicas (5)", error)

    def test_every_service_that_may_run_two_pods_gets_a_disruption_budget(self):
        objects = render()
        budgets = {name: b for (kind, name), b in objects.items() if kind == "PodDisruptionBudget"}
        # Every service but email_worker may scale past one pod (its HPA's maxReplicas).
        self.assertEqual(set(budgets), {f"deploy-{n}" for s, (n, _, _, hpa) in SERVICES.items() if hpa})
        for name, budget in budgets.items():
            self.assertEqual(budget["spec"]["maxUnavailable"], 1, name)
            self.assertNotIn("minAvailable", budget["spec"], name)
            deployment = objects[("Deployment", name)]
            self.assertEqual(budget["spec"]["selector"], deployment["spec"]["selector"], name)
            self.assertEqual(budget["metadata"]["namespace"], "app")
        # Without an HPA, the replicas decide.
        objects = render("services.static_server.autoscaling.enabled=false")
        self.assertNotIn(("PodDisruptionBudget", "deploy-static-server"), objects)
        objects = render("services.static_server.autoscaling.enabled=false", "services.static_server.replicas=2")
        self.assertIn(("PodDisruptionBudget", "deploy-static-server"), objects)
        objects = render("services.git_hook.autoscaling.maxReplicas=1")
        self.assertNotIn(("PodDisruptionBudget", "deploy-git-hook"), objects)
        self.assertFalse([k for k in render("podDisruptionBudget.enabled=false") if k[0] == "PodDisruptionBudget"])


class EmailWorker(unittest.TestCase):
    def test_runs_one_replica_and_is_recreated_on_update(self):
        objects = render()
        deployment, _ = container(objects, "email_worker")
        self.assertEqual(deployment["spec"]["replicas"], 1)
        # Never two at once: the old pod stops before the new one starts.
        self.assertEqual(deployment["spec"]["strategy"], {"type": "Recreate"})
        for service in SERVICES:
            if service != "email_worker":
                deployment, _ = container(objects, service)
                self.assertEqual(
                    deployment["spec"]["strategy"],
                    {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
                    service,
                )

    def test_scaling_is_refused_with_a_clear_message(self):
        error = render_error("services.email_worker.replicas=2")
        self.assertIn("email_worker must run exactly one replica", error)
        error = render_error("services.email_worker.autoscaling.enabled=true")
        self.assertIn("services.email_worker.autoscaling.enabled must stay false", error)


class Storage(unittest.TestCase):
    TABLE = {
        "app": {("repos", "/data/repos"), ("avatars", "/data/avatars"), ("files", "/data/files")},
        "gitserver": {("repos", "/data/repos")},
        "git_hook": {("repos", "/data/repos")},
        # The table's mount, plus app's avatars and files, read-only, where its URLs point.
        "static_server": {("static", "/data"), ("avatars", "/data/avatars"), ("files", "/data/files")},
        "email_worker": set(),
        "metrics_aggregator": set(),
    }

    def test_sub_paths_of_shared_data_match_the_storage_table(self):
        objects = render()
        for service, expected in self.TABLE.items():
            deployment, main = container(objects, service)
            mounts = {
                (m["subPath"], m["mountPath"]) for m in main["volumeMounts"] if m["name"] == "shared-data"
            }
            self.assertEqual(mounts, expected, service)
            writable = {
                m["mountPath"] for m in main["volumeMounts"] if m["name"] == "shared-data" and not m.get("readOnly")
            }
            if service == "static_server":
                self.assertEqual(writable, {"/data"}, "static_server cannot change app's files")
            volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
            if expected:
                self.assertEqual(volumes["shared-data"]["persistentVolumeClaim"]["claimName"], "shared-data")
        self.assertFalse([k for k in objects if k[0] == "PersistentVolumeClaim"], "the PVC is not managed")

    def test_the_claim_name_is_not_a_value(self):
        error = render_error("persistence.claimName=other")
        self.assertIn("persistence", error)


class Security(unittest.TestCase):
    def test_pods_run_as_1000_without_privileges(self):
        objects = render()
        for service in SERVICES:
            deployment, main = container(objects, service)
            spec = deployment["spec"]["template"]["spec"]
            pod = spec["securityContext"]
            self.assertEqual(
                (pod["runAsUser"], pod["runAsGroup"], pod["fsGroup"], pod["runAsNonRoot"]),
                (1000, 1000, 1000, True),
            )
            self.assertEqual(pod["seccompProfile"], {"type": "RuntimeDefault"})
            self.assertEqual(main["securityContext"]["capabilities"]["drop"], ["ALL"])
            self.assertIs(main["securityContext"]["allowPrivilegeEscalation"], False)

    def test_pods_have_no_api_token_and_a_read_only_root_with_a_writable_tmp(self):
        objects = render()
        for service in SERVICES:
            deployment, main = container(objects, service)
            spec = deployment["spec"]["template"]["spec"]
            self.assertIs(spec["automountServiceAccountToken"], False, service)
            # A 200 Ti volume is not re-owned on every start.
            self.assertEqual(spec["securityContext"]["fsGroupChangePolicy"], "OnRootMismatch", service)
            self.assertIs(main["securityContext"]["readOnlyRootFilesystem"], True, service)
            tmp = [m for m in main["volumeMounts"] if m["mountPath"] == "/tmp"]
            self.assertEqual(len(tmp), 1, service)
            volumes = {v["name"]: v for v in spec["volumes"]}
            self.assertEqual(volumes[tmp[0]["name"]], {"name": tmp[0]["name"], "emptyDir": {}}, service)

    def test_an_image_digest_pins_the_image(self):
        digest = "sha256:" + "0123456789abcdef" * 4
        objects = render(f"imageDigest={digest}", "imageTag=v1.2.3")
        for service in SERVICES:
            deployment, main = container(objects, service)
            self.assertEqual(main["image"], f"ghcr.io/your-org/platform@{digest}", service)
            self.assertEqual(deployment["metadata"]["labels"]["app.kubernetes.io/version"], "v1.2.3")
        for bad in ("sha256:abc", "0123456789abcdef" * 4, "sha256:" + "0123456789ABCDEF" * 4):
            self.assertIn("imageDigest", render_error(f"imageDigest={bad}"), bad)

    def test_every_object_names_the_release_namespace(self):
        objects = render(
            "networkPolicy.enabled=true", "ssh.service.enabled=true",
            "serviceMonitor.enabled=true", "prometheusRule.enabled=true",
            "ingress.enabled=true", "ingress.hosts[0].host=your-domain.com",
        )
        self.assertIn("Ingress", {kind for kind, _ in objects})
        for (kind, name), document in objects.items():
            self.assertEqual(document["metadata"].get("namespace"), "app", (kind, name))


class Configuration(unittest.TestCase):
    def test_environment_comes_from_the_named_configmap(self):
        _, main = container(render(), "app")
        self.assertEqual(main["envFrom"][0]["configMapRef"]["name"], "app-env")
        _, main = container(render("configMapName=your-cm-name"), "gitserver")
        self.assertEqual(main["envFrom"][0]["configMapRef"]["name"], "your-cm-name")

    def test_an_embedded_vector_store_is_allowed_only_for_a_single_app(self):
        def allowed(*sets):
            _, main = container(render(*sets), "app")
            return {e["name"]: e.get("value") for e in main["env"]}["APP_EMBEDDED_STORE_ALLOWED"]

        self.assertEqual(allowed(), "false")
        self.assertEqual(allowed("services.app.replicas=1"), "false")  # the HPA may add more
        self.assertEqual(
            allowed("services.app.replicas=1", "services.app.autoscaling.enabled=false"), "true"
        )
        _, main = container(render(), "git_hook")
        self.assertNotIn("APP_EMBEDDED_STORE_ALLOWED", {e["name"] for e in main["env"]})

    def test_optional_dependencies_pass_through(self):
        objects = render(
            "env.NATS_URL=nats://nats:4222",
            "env.LOKI_URL=http://loki:3100",
            "env.OTEL_EXPORTER_OTLP_ENDPOINT=http://otel:4317",
            "envFromSecrets[0]=nats-token",
        )
        _, main = container(objects, "git_hook")
        env = {e["name"]: e.get("value") for e in main["env"]}
        self.assertEqual(env["NATS_URL"], "nats://nats:4222")
        self.assertEqual(env["LOKI_URL"], "http://loki:3100")
        self.assertEqual(env["OTEL_EXPORTER_OTLP_ENDPOINT"], "http://otel:4317")
        self.assertEqual(main["envFrom"][1]["secretRef"]["name"], "nats-token")


class Ingress(unittest.TestCase):
    def test_hosts_route_the_api_to_app_and_git_to_gitserver(self):
        objects = render(
            "ingress.enabled=true", "ingress.className=nginx", "ingress.hosts[0].host=your-domain.com",
            "ingress.tls[0].secretName=tls", "ingress.tls[0].hosts[0]=your-domain.com",
        )
        api = objects[("Ingress", "deploy")]
        git = objects[("Ingress", "deploy-git")]
        for ingress in (api, git):
            self.assertEqual(ingress["spec"]["ingressClassName"], "nginx")
            self.assertEqual(ingress["spec"]["rules"][0]["host"], "your-domain.com")
            self.assertEqual(ingress["spec"]["tls"][0]["secretName"], "tls")
        api_paths = {p["path"]: p["backend"]["service"]["name"] for p in api["spec"]["rules"][0]["http"]["paths"]}
        # /static as a case-sensitive regular expression (test_ingress_nginx.py routes it in nginx).
        self.assertEqual(api_paths, {"/": "deploy-app", "/(?-i)static(?:/|$)": "deploy-static-server"})
        self.assertEqual(api["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-body-size"], "26m")
        git_paths = git["spec"]["rules"][0]["http"]["paths"]
        self.assertEqual({p["backend"]["service"]["name"] for p in git_paths}, {"deploy-gitserver"})
        self.assertTrue(any(p["path"].endswith("git-receive-pack$") for p in git_paths))
        self.assertEqual(git["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-body-size"], "0")

    def test_disabled_by_default(self):
        self.assertFalse([k for k in render() if k[0] == "Ingress"])


class Schema(unittest.TestCase):
    def test_bad_values_fail_at_render(self):
        self.assertIn("services.app.replicas", render_error("services.app.replicas=abc"))
        self.assertIn("Additional property foo is not allowed", render_error("services.foo.replicas=1"))
        self.assertIn("targetCPUUtilization", render_error("services.app.autoscaling.targetCPUUtilization=0"))

    def test_new_sections_reject_unknown_keys_and_bad_values(self):
        self.assertIn("Additional property foo is not allowed", render_error("dashboards.foo=1"))
        self.assertIn("Additional property foo is not allowed", render_error("prometheusRule.foo=1"))
        self.assertIn("Additional property foo is not allowed", render_error("logPush.foo=1"))
        self.assertIn("scrapeIntervalSeconds", render_error("metricsAggregator.scrapeIntervalSeconds=abc"))
        self.assertIn("staticTargets", render_error("metricsAggregator.staticTargets[0]=http://no-service:1"))
        self.assertIn("logPush.url", render_error("logPush.url=aggregator:9090"))


class Discovery(unittest.TestCase):
    """metrics_aggregator finds every pod of every service through headless Services."""

    def test_every_service_has_a_headless_service_of_its_ready_pods(self):
        objects = render()
        for service, (name, port, _, _) in SERVICES.items():
            headless = objects[("Service", f"deploy-{name}-pods")]
            spec = headless["spec"]
            self.assertEqual(spec["clusterIP"], "None", service)
            self.assertIs(spec["publishNotReadyAddresses"], False, service)
            self.assertEqual(spec["ports"], [{"name": "http", "port": port, "targetPort": "http", "protocol": "TCP"}])
            self.assertEqual(spec["selector"], objects[("Service", f"deploy-{name}")]["spec"]["selector"])
            self.assertEqual(headless["metadata"]["labels"]["platform/headless"], "true")
            self.assertNotIn("type", spec)

    def test_the_aggregator_discovers_all_six_services_by_srv_records(self):
        objects = render()
        env = environment(objects, "metrics_aggregator")
        entries = dict(entry.split("=", 1) for entry in env["APP_METRICS_DISCOVERY"]["value"].split(","))
        self.assertEqual(entries, {s: f"_http._tcp.deploy-{name}-pods" for s, (name, *_) in SERVICES.items()})
        # Each SRV name is _<port name>._tcp.<headless Service>: one that exists, with that port.
        for srv in entries.values():
            port_name, protocol, service_name = srv.split(".", 2)
            headless = objects[("Service", service_name)]
            self.assertEqual((port_name, protocol), ("_http", "_tcp"))
            self.assertIn("http", [p["name"] for p in headless["spec"]["ports"]])
        self.assertEqual(env["APP_METRICS_SCRAPE_INTERVAL_SECONDS"]["value"], "15")
        self.assertEqual(env["APP_METRICS_SCRAPE_TIMEOUT_SECONDS"]["value"], "10")
        self.assertEqual(env["APP_METRICS_SAMPLE_LIMIT"]["value"], "50000")
        self.assertEqual(env["APP_METRICS_BODY_LIMIT_BYTES"]["value"], "16777216")
        self.assertNotIn("APP_METRICS_TARGETS", env)
        for service in SERVICES:
            if service != "metrics_aggregator":
                self.assertNotIn("APP_METRICS_DISCOVERY", environment(objects, service), service)

    def test_discovery_follows_the_release_and_takes_more_entries_and_targets(self):
        result = helm(
            "template", "platform", CHART, *QUICK_START,
            "--set", "metricsAggregator.extraDiscovery[0]=ci=ci-runner:9100/internal",
            "--set", "metricsAggregator.staticTargets[0]=legacy=http://10.0.0.9:8080/metrics",
            "--set", "metricsAggregator.staticTargets[1]=other=http://10.0.0.10:8080/metrics",
            "--set", "metricsAggregator.bodyLimitBytes=33554432",
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        objects = {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(result.stdout) if d}
        deployment = objects[("Deployment", "platform-metrics-aggregator")]
        env = {e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
        discovery = env["APP_METRICS_DISCOVERY"].split(",")
        self.assertIn("app=_http._tcp.platform-app-pods", discovery)
        self.assertEqual(discovery[-1], "ci=ci-runner:9100/internal")
        self.assertEqual(
            env["APP_METRICS_TARGETS"], "legacy=http://10.0.0.9:8080/metrics,other=http://10.0.0.10:8080/metrics"
        )
        self.assertEqual(env["APP_METRICS_BODY_LIMIT_BYTES"], "33554432")
        self.assertEqual(env["APP_LOG_PUSH_URL"], "http://platform-metrics-aggregator:9090")

    def test_a_timeout_not_below_the_interval_is_refused(self):
        error = render_error("metricsAggregator.scrapeIntervalSeconds=10", "metricsAggregator.scrapeTimeoutSeconds=10")
        self.assertIn("metricsAggregator.scrapeTimeoutSeconds (10) must be below", error)


class Logs(unittest.TestCase):
    """Every service pushes its log records to the aggregator, which forwards them to Loki."""

    def test_every_service_pushes_to_the_aggregator_as_its_pod(self):
        objects = render()
        aggregator = objects[("Service", "deploy-metrics-aggregator")]
        self.assertEqual(aggregator["spec"]["ports"][0]["port"], 9090)
        for service in SERVICES:
            env = environment(objects, service)
            self.assertEqual(env["APP_LOG_PUSH_URL"]["value"], "http://deploy-metrics-aggregator:9090", service)
            self.assertEqual(env["APP_INSTANCE"]["valueFrom"], {"fieldRef": {"fieldPath": "metadata.name"}}, service)
            # Loki is the aggregator's business, through the ConfigMap or env: unset by the chart.
            self.assertNotIn("LOKI_URL", env, service)

    def test_the_push_url_can_be_replaced_or_switched_off(self):
        objects = render("logPush.url=https://logs.example/")
        for service in SERVICES:
            self.assertEqual(environment(objects, service)["APP_LOG_PUSH_URL"]["value"], "https://logs.example/")
        objects = render("logPush.enabled=false")
        for service in SERVICES:
            env = environment(objects, service)
            self.assertNotIn("APP_LOG_PUSH_URL", env, service)
            self.assertIn("APP_INSTANCE", env, service)

    def test_loki_settings_reach_the_aggregator(self):
        objects = render("env.LOKI_URL=http://loki:3100", "env.LOKI_TENANT_ID=platform")
        env = environment(objects, "metrics_aggregator")
        self.assertEqual(env["LOKI_URL"]["value"], "http://loki:3100")
        self.assertEqual(env["LOKI_TENANT_ID"]["value"], "platform")

    def test_variables_the_chart_sets_are_not_set_twice(self):
        self.assertIn("env.APP_LOG_PUSH_URL is set by the chart; set logPush.url", render_error("env.APP_LOG_PUSH_URL=http://x"))
        self.assertIn("env.APP_INSTANCE is set by the chart", render_error("env.APP_INSTANCE=x"))
        self.assertIn(
            "set metricsAggregator.extraDiscovery instead", render_error("env.APP_METRICS_DISCOVERY=app=a:1")
        )


class Monitoring(unittest.TestCase):
    ALL = ("serviceMonitor.enabled=true", "prometheusRule.enabled=true", "dashboards.enabled=true")
    DASHBOARDS = sorted(glob.glob(os.path.join(CHART, "dashboards", "*.json")))

    def test_all_optional_and_off_by_default(self):
        kinds = {kind for kind, _ in render()}
        self.assertFalse(kinds & {"ServiceMonitor", "PrometheusRule", "ConfigMap"}, kinds)

    def test_the_service_monitor_scrapes_only_the_aggregator_and_keeps_its_labels(self):
        objects = render("serviceMonitor.enabled=true", "serviceMonitor.labels.release=prometheus")
        monitor = objects[("ServiceMonitor", "deploy")]
        self.assertEqual(monitor["metadata"]["labels"]["release"], "prometheus")
        selected = [
            name for (kind, name), service in objects.items()
            if kind == "Service" and selects(monitor["spec"]["selector"], service["metadata"]["labels"])
        ]
        self.assertEqual(selected, ["deploy-metrics-aggregator"])
        [endpoint] = monitor["spec"]["endpoints"]
        self.assertIs(endpoint["honorLabels"], True)
        self.assertEqual(endpoint["port"], "http")
        self.assertEqual(endpoint["path"], "/metrics/all")
        self.assertEqual(endpoint["interval"], "30s")
        self.assertEqual(endpoint["metricRelabelings"], [{"action": "labeldrop", "regex": "pod"}])

    def test_the_prometheus_rule_carries_the_rule_file(self):
        objects = render("prometheusRule.enabled=true", "prometheusRule.labels.release=prometheus")
        rule = objects[("PrometheusRule", "deploy")]
        self.assertEqual(rule["apiVersion"], "monitoring.coreos.com/v1")
        self.assertEqual(rule["metadata"]["labels"]["release"], "prometheus")
        with open(os.path.join(CHART, "rules", "platform.rules.yaml"), encoding="utf-8") as file:
            expected = yaml.safe_load(file)["groups"]
        self.assertEqual(rule["spec"]["groups"], expected)
        alerts = {r["alert"] for group in expected for r in group["rules"]}
        for alert in ("PlatformTargetDown", "PlatformServiceWithoutTargets", "PlatformHighErrorRate",
                      "PlatformQueueBacklogGrowing", "PlatformMailLeaderMissing", "PlatformLokiDroppingLogs",
                      "PlatformLogShippingDropping"):
            self.assertIn(alert, alerts)
        # The annotations keep Prometheus's own templates, untouched by Helm's.
        self.assertIn("{{ $labels.service }}", json.dumps(rule["spec"]["groups"]))

    def test_dashboards_are_configmaps_for_grafanas_sidecar(self):
        self.assertTrue(self.DASHBOARDS)
        objects = render("dashboards.enabled=true")
        maps = {name: m for (kind, name), m in objects.items() if kind == "ConfigMap"}
        self.assertEqual(len(maps), len(self.DASHBOARDS))
        for path in self.DASHBOARDS:
            file = os.path.basename(path)
            config_map = maps[f"deploy-dashboard-{file[: -len('.json')]}"]
            self.assertEqual(config_map["metadata"]["labels"]["grafana_dashboard"], "1")
            self.assertEqual(config_map["metadata"]["namespace"], "app")
            self.assertNotIn("annotations", config_map["metadata"])
            with open(path, encoding="utf-8") as dashboard:
                self.assertEqual(json.loads(config_map["data"][file]), json.load(dashboard))

    def test_dashboards_take_the_sidecars_label_namespace_and_folder(self):
        objects = render(
            "dashboards.enabled=true", "dashboards.labels.grafana_dashboard=null", "dashboards.labels.dashboards=platform",
            "dashboards.namespace=monitoring", "dashboards.annotations.grafana_folder=Platform",
        )
        for (kind, _), config_map in objects.items():
            if kind != "ConfigMap":
                continue
            metadata = config_map["metadata"]
            self.assertEqual(metadata["namespace"], "monitoring")
            self.assertEqual(metadata["labels"]["dashboards"], "platform")
            self.assertNotIn("grafana_dashboard", metadata["labels"])
            self.assertEqual(metadata["annotations"], {"grafana_folder": "Platform"})

    def test_every_dashboard_queries_the_chosen_prometheus(self):
        uids = set()
        for path in self.DASHBOARDS:
            with open(path, encoding="utf-8") as file:
                dashboard = json.load(file)
            name = os.path.basename(path)
            self.assertNotIn(dashboard["uid"], uids, name)
            uids.add(dashboard["uid"])
            variables = {v["name"]: v for v in dashboard["templating"]["list"]}
            self.assertEqual((variables["datasource"]["type"], variables["datasource"]["query"]), ("datasource", "prometheus"))
            self.assertEqual(variables["service"]["query"], "label_values(up, service)")
            panels = [p for p in dashboard["panels"] if p["type"] != "row"]
            self.assertTrue(panels, name)
            self.assertEqual(len({p["id"] for p in dashboard["panels"]}), len(dashboard["panels"]), name)
            for panel in panels:
                self.assertEqual(panel["datasource"], {"type": "prometheus", "uid": "${datasource}"}, panel["title"])
                self.assertTrue(panel["targets"], panel["title"])
                for target in panel["targets"]:
                    self.assertEqual(target["datasource"]["uid"], "${datasource}", panel["title"])
                    self.assertTrue(target["expr"].strip(), panel["title"])

    def test_the_dashboards_cover_what_operators_watch(self):
        expressions = ""
        for path in self.DASHBOARDS:
            with open(path, encoding="utf-8") as file:
                expressions += " ".join(t["expr"] for p in json.load(file)["panels"] for t in p.get("targets", []))
        for needle in (
            "rate(http_requests_total", 'status=~"5.."', "histogram_quantile(0.99", "git-upload-pack",
            "git-receive-pack", "queue_depth", "push_queue_lag_seconds", "mail_sent_total", "mail_failed_total",
            "webhook_deliveries_total", 'stream="code_index"', "log_records_shipped_total",
            "log_records_dropped_total", "loki_entries_sent_total", "loki_entries_dropped_total",
        ):
            self.assertIn(needle, expressions)


class Ssh(unittest.TestCase):
    """gitserver's SSH from outside the cluster, and the clone URLs the services show."""

    SSH_USERS = ("app", "gitserver", "git_hook")

    @staticmethod
    def public(objects, service):
        env = {e["name"]: e.get("value") for e in container(objects, service)[1]["env"]}
        return env.get("APP_SSH_PUBLIC_HOST"), env.get("APP_SSH_PUBLIC_PORT")

    def test_no_ssh_service_by_default(self):
        objects = render()
        self.assertNotIn(("Service", "deploy-gitserver-ssh"), objects)
        # gitserver's own Service stays in the cluster.
        self.assertEqual(objects[("Service", "deploy-gitserver")]["spec"]["type"], "ClusterIP")
        for service in self.SSH_USERS:
            self.assertEqual(self.public(objects, service), (None, "2222"), service)
        for service in set(SERVICES) - set(self.SSH_USERS):
            self.assertEqual(self.public(objects, service), (None, None), service)

    def test_the_ssh_service_exposes_the_ssh_port_alone(self):
        objects = render("ssh.service.enabled=true", "ssh.publicHost=git.example.com")
        ssh = objects[("Service", "deploy-gitserver-ssh")]
        self.assertEqual(ssh["metadata"]["namespace"], "app")
        self.assertEqual(ssh["spec"]["type"], "LoadBalancer")
        self.assertEqual(ssh["spec"]["ports"], [{"name": "ssh", "port": 22, "targetPort": "ssh", "protocol": "TCP"}])
        for absent in ("externalTrafficPolicy", "loadBalancerSourceRanges", "loadBalancerClass"):
            self.assertNotIn(absent, ssh["spec"])
        self.assertNotIn("annotations", ssh["metadata"])
        # It selects gitserver's pods, whose port named ssh is the one gitserver listens on.
        deployment, main = container(objects, "gitserver")
        self.assertTrue(selects({"matchLabels": ssh["spec"]["selector"]}, deployment["spec"]["template"]["metadata"]["labels"]))
        for service in set(SERVICES) - {"gitserver"}:
            other, _ = container(objects, service)
            self.assertFalse(selects({"matchLabels": ssh["spec"]["selector"]}, other["spec"]["template"]["metadata"]["labels"]))
        ports = {p["name"]: p["containerPort"] for p in main["ports"]}
        env = {e["name"]: e.get("value") for e in main["env"]}
        self.assertEqual((ports["ssh"], env["APP_SSH_PORT"]), (2222, "2222"))
        # Not the ServiceMonitor's, nor a headless one.
        self.assertNotIn("platform/headless", ssh["metadata"]["labels"])
        for service in self.SSH_USERS:
            self.assertEqual(self.public(objects, service), ("git.example.com", "22"), service)

    def test_load_balancer_options(self):
        objects = render(
            "ssh.service.enabled=true", "ssh.service.port=2200",
            "ssh.service.annotations.service\\.beta\\.kubernetes\\.io/aws-load-balancer-type=nlb",
            "ssh.service.externalTrafficPolicy=Local", "ssh.service.loadBalancerSourceRanges[0]=203.0.113.0/24",
            "ssh.service.loadBalancerClass=service.k8s.aws/nlb",
        )
        ssh = objects[("Service", "deploy-gitserver-ssh")]
        self.assertEqual(ssh["metadata"]["annotations"], {"service.beta.kubernetes.io/aws-load-balancer-type": "nlb"})
        self.assertEqual(ssh["spec"]["externalTrafficPolicy"], "Local")
        self.assertEqual(ssh["spec"]["loadBalancerSourceRanges"], ["203.0.113.0/24"])
        self.assertEqual(ssh["spec"]["loadBalancerClass"], "service.k8s.aws/nlb")
        self.assertEqual(ssh["spec"]["ports"][0]["port"], 2200)
        self.assertEqual(self.public(objects, "app"), (None, "2200"))
        objects = render("ssh.service.enabled=true", "ssh.publicPort=443", "ssh.publicHost=ssh.example.com")
        self.assertEqual(self.public(objects, "git_hook"), ("ssh.example.com", "443"))

    def test_a_node_port_service(self):
        objects = render("ssh.service.enabled=true", "ssh.service.type=NodePort", "ssh.service.nodePort=30022")
        ssh = objects[("Service", "deploy-gitserver-ssh")]
        self.assertEqual(ssh["spec"]["type"], "NodePort")
        self.assertEqual(ssh["spec"]["ports"][0]["nodePort"], 30022)
        self.assertEqual(self.public(objects, "gitserver"), (None, "30022"))
        error = render_error("ssh.service.enabled=true", "ssh.service.type=NodePort")
        self.assertIn("ssh.service.type NodePort needs ssh.service.nodePort (or ssh.publicPort)", error)
        objects = render("ssh.service.enabled=true", "ssh.service.type=NodePort", "ssh.publicPort=2022")
        self.assertNotIn("nodePort", objects[("Service", "deploy-gitserver-ssh")]["spec"]["ports"][0])
        error = render_error(
            "ssh.service.enabled=true", "ssh.service.type=NodePort", "ssh.service.nodePort=30022",
            "ssh.service.loadBalancerSourceRanges[0]=203.0.113.0/24",
        )
        self.assertIn("ssh.service.loadBalancerSourceRanges needs ssh.service.type=LoadBalancer", error)

    def test_bad_ssh_values_are_refused(self):
        self.assertIn("ssh.service.type", render_error("ssh.service.type=ClusterIP"))
        self.assertIn("ssh.publicPort", render_error("ssh.publicPort=70000"))
        self.assertIn("ssh.publicHost", render_error("ssh.publicHost=git@example.com"))
        self.assertIn("externalTrafficPolicy", render_error("ssh.service.externalTrafficPolicy=Everywhere"))
        self.assertIn("loadBalancerSourceRanges", render_error("ssh.service.loadBalancerSourceRanges[0]=203.0.113.9"))
        self.assertIn("Additional property foo is not allowed", render_error("ssh.service.foo=1"))
        self.assertIn("env.APP_SSH_PUBLIC_HOST is set by the chart; set ssh.publicHost", render_error("env.APP_SSH_PUBLIC_HOST=x"))


def namespace_labels(namespace):
    return {"kubernetes.io/metadata.name": namespace}


def admits(objects, target, port, source, namespace="app"):
    """Whether the NetworkPolicies of `objects` let `source` connect to pods labelled `target` on
    TCP `port`. `source` is {"namespace": ..., "labels": {...}} for a pod, or {"ip": ...}. A pod no
    policy selects admits everything, as in Kubernetes."""
    policies = [
        p for (kind, _), p in objects.items()
        if kind == "NetworkPolicy" and "Ingress" in p["spec"]["policyTypes"]
        and selects(p["spec"]["podSelector"], target)
    ]
    if not policies:
        return True

    def peer_matches(peer):
        if "ipBlock" in peer:
            if "ip" not in source:
                return False
            address = ipaddress.ip_address(source["ip"])
            block = ipaddress.ip_network(peer["ipBlock"]["cidr"])
            excepted = [ipaddress.ip_network(e) for e in peer["ipBlock"].get("except", [])]
            return address.version == block.version and address in block and not any(
                address.version == e.version and address in e for e in excepted)
        if "ip" in source:
            return False
        if "namespaceSelector" in peer:
            if not selects(peer["namespaceSelector"], namespace_labels(source["namespace"])):
                return False
        elif source["namespace"] != namespace:
            return False
        return "podSelector" not in peer or selects(peer["podSelector"], source["labels"])

    for policy in policies:
        for rule in policy["spec"].get("ingress", []):
            ports = rule.get("ports")
            if ports is not None and not any(p.get("protocol", "TCP") == "TCP" and p["port"] == port for p in ports):
                continue
            if "from" not in rule or any(peer_matches(peer) for peer in rule["from"]):
                return True
    return False


def pod_labels(objects, service):
    deployment, _ = container(objects, service)
    return deployment["spec"]["template"]["metadata"]["labels"]


class NetworkPolicies(unittest.TestCase):
    INGRESS_NGINX = {"namespace": "ingress-nginx", "labels": {"app.kubernetes.io/name": "ingress-nginx", "app.kubernetes.io/component": "controller"}}
    PROMETHEUS = {"namespace": "monitoring", "labels": {"app.kubernetes.io/name": "prometheus", "prometheus": "k8s"}}
    BEHIND_INGRESS = ("app", "gitserver", "static_server")

    def reachable(self, objects, source):
        """{(service, port)} that `source` may connect to."""
        result = set()
        for service, (_, port, _, _) in SERVICES.items():
            for candidate in {port, 2222} if service == "gitserver" else {port}:
                if admits(objects, pod_labels(objects, service), candidate, source):
                    result.add((service, candidate))
        return result

    def test_off_by_default(self):
        self.assertFalse([k for k in render() if k[0] == "NetworkPolicy"])

    def test_one_ingress_policy_per_service(self):
        objects = render("networkPolicy.enabled=true")
        policies = {name: p for (kind, name), p in objects.items() if kind == "NetworkPolicy"}
        self.assertEqual(set(policies), {f"deploy-{name}" for name, *_ in SERVICES.values()})
        for service, (name, *_) in SERVICES.items():
            spec = policies[f"deploy-{name}"]["spec"]
            # Ingress only: egress (databases, SMTP, webhooks, the AI API) is not restricted.
            self.assertEqual(spec["policyTypes"], ["Ingress"])
            self.assertNotIn("egress", spec)
            selected = [s for s in SERVICES if selects(spec["podSelector"], pod_labels(objects, s))]
            self.assertEqual(selected, [service])

    def test_who_reaches_what(self):
        objects = render("networkPolicy.enabled=true")
        ports = {service: port for service, (_, port, _, _) in SERVICES.items()}
        # The Ingress controller: app, gitserver's HTTP and static_server; nothing else.
        self.assertEqual(self.reachable(objects, self.INGRESS_NGINX), {(s, ports[s]) for s in self.BEHIND_INGRESS})
        # metrics_aggregator scrapes every service's HTTP port, its own too; never SSH.
        aggregator = {"namespace": "app", "labels": pod_labels(objects, "metrics_aggregator")}
        self.assertEqual(self.reachable(objects, aggregator), set(ports.items()))
        # Every other pod of the release reaches the aggregator only (its log push).
        for service in set(SERVICES) - {"metrics_aggregator"}:
            source = {"namespace": "app", "labels": pod_labels(objects, service)}
            self.assertEqual(self.reachable(objects, source), {("metrics_aggregator", 9090)}, service)
        # Prometheus reaches the aggregator only.
        self.assertEqual(self.reachable(objects, self.PROMETHEUS), {("metrics_aggregator", 9090)})
        # Anything else: nothing. Another namespace's pods with the same labels, another release in
        # this namespace, ingress-nginx's labels elsewhere, an outside address.
        strangers = [
            {"namespace": "other", "labels": pod_labels(objects, "metrics_aggregator")},
            {"namespace": "app", "labels": {**pod_labels(objects, "metrics_aggregator"), "app.kubernetes.io/instance": "other"}},
            {"namespace": "app", "labels": self.INGRESS_NGINX["labels"]},
            {"namespace": "default", "labels": self.PROMETHEUS["labels"]},
            {"ip": "203.0.113.7"},
            {"ip": "2001:db8::7"},
        ]
        for source in strangers:
            self.assertEqual(self.reachable(objects, source), set(), source)

    def test_email_worker_and_git_hook_admit_only_scrapes(self):
        objects = render("networkPolicy.enabled=true", "ssh.service.enabled=true")
        for service in ("email_worker", "git_hook"):
            policy = objects[("NetworkPolicy", f"deploy-{SERVICES[service][0]}")]
            [rule] = policy["spec"]["ingress"]
            self.assertEqual(rule["ports"], [{"port": SERVICES[service][1], "protocol": "TCP"}])
            self.assertEqual(rule["from"], [{"podSelector": {"matchLabels": pod_labels(objects, "metrics_aggregator")}}])

    def test_ssh_is_open_to_the_world_only_with_the_ssh_service(self):
        objects = render("networkPolicy.enabled=true", "ssh.service.enabled=true")
        for address in ("203.0.113.7", "2001:db8::7"):
            self.assertEqual(self.reachable(objects, {"ip": address}), {("gitserver", 2222)}, address)
        # Still nothing else for the Ingress controller.
        self.assertNotIn(("gitserver", 2222), self.reachable(objects, self.INGRESS_NGINX))
        objects = render(
            "networkPolicy.enabled=true", "ssh.service.enabled=true",
            "networkPolicy.sshSourceRanges[0]=203.0.113.0/24", "networkPolicy.sshSourceRanges[1]=2001:db8::/32",
        )
        self.assertEqual(self.reachable(objects, {"ip": "203.0.113.7"}), {("gitserver", 2222)})
        self.assertEqual(self.reachable(objects, {"ip": "2001:db8::7"}), {("gitserver", 2222)})
        self.assertEqual(self.reachable(objects, {"ip": "198.51.100.7"}), set())
        self.assertIn("sshSourceRanges", render_error("networkPolicy.enabled=true", "networkPolicy.sshSourceRanges[0]=all"))

    def test_the_ingress_controller_and_prometheus_selectors_are_values(self):
        objects = render(
            "networkPolicy.enabled=true",
            "networkPolicy.ingressController.namespaceSelector.matchLabels.kubernetes\\.io/metadata\\.name=traefik",
            "networkPolicy.ingressController.podSelector.matchLabels.app\\.kubernetes\\.io/name=traefik",
            "networkPolicy.prometheus.namespaceSelector.matchLabels.kubernetes\\.io/metadata\\.name=observability",
        )
        traefik = {"namespace": "traefik", "labels": {"app.kubernetes.io/name": "traefik"}}
        self.assertEqual(
            self.reachable(objects, traefik), {(s, SERVICES[s][1]) for s in self.BEHIND_INGRESS}
        )
        self.assertEqual(self.reachable(objects, self.INGRESS_NGINX), set())
        prometheus = {"namespace": "observability", "labels": self.PROMETHEUS["labels"]}
        self.assertEqual(self.reachable(objects, prometheus), {("metrics_aggregator", 9090)})
        self.assertEqual(self.reachable(objects, self.PROMETHEUS), set())
        self.assertIn("Additional property foo is not allowed", render_error("networkPolicy.foo=1"))

    def test_ports_follow_the_values(self):
        objects = render("networkPolicy.enabled=true", "services.app.port=8000")
        self.assertTrue(admits(objects, pod_labels(objects, "app"), 8000, self.INGRESS_NGINX))
        self.assertFalse(admits(objects, pod_labels(objects, "app"), 3000, self.INGRESS_NGINX))


class ManagedDatabases(unittest.TestCase):
    """TLS to PostgreSQL and Redis with a private CA, and the proxies whose X-Forwarded-For counts."""

    def test_no_ca_by_default(self):
        objects = render()
        for service in SERVICES:
            deployment, main = container(objects, service)
            env = environment(objects, service)
            self.assertNotIn("APP_DATABASE_CA_FILE", env, service)
            self.assertNotIn("APP_REDIS_CA_FILE", env, service)
            self.assertNotIn("tls-ca", {v["name"] for v in deployment["spec"]["template"]["spec"]["volumes"]})

    def test_the_ca_secret_is_mounted_read_only_in_every_service(self):
        objects = render("tls.caSecret.name=database-ca", "tls.caSecret.key=root.pem")
        for service in SERVICES:
            deployment, main = container(objects, service)
            volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
            [mount] = [m for m in main["volumeMounts"] if m["name"] == "tls-ca"]
            self.assertIs(mount["readOnly"], True)
            secret = volumes["tls-ca"]["secret"]
            self.assertEqual(secret["secretName"], "database-ca")
            [item] = secret["items"]
            self.assertEqual(item["key"], "root.pem")
            path = f"{mount['mountPath']}/{item['path']}"
            env = environment(objects, service)
            self.assertEqual(env["APP_DATABASE_CA_FILE"]["value"], path, service)
            self.assertEqual(env["APP_REDIS_CA_FILE"]["value"], path, service)
            # Not over a directory the service writes or serves.
            self.assertFalse(path.startswith(("/data", "/tmp")), path)
        env = environment(render("tls.caSecret.name=database-ca"), "app")
        self.assertEqual(env["APP_DATABASE_CA_FILE"]["value"], "/etc/platform/tls/ca.crt")
        self.assertIn("tls.caSecret.name", render_error("tls.caSecret.name=Not_A_Name"))
        self.assertIn("set tls.caSecret.name instead", render_error("env.APP_DATABASE_CA_FILE=/x"))

    def test_trusted_proxies(self):
        objects = render()
        for service in SERVICES:
            self.assertNotIn("APP_TRUSTED_PROXIES", environment(objects, service))
        objects = render("trustedProxies[0]=10.244.0.0/16", "trustedProxies[1]=fd00::/8", "trustedProxies[2]=10.0.0.1")
        for service in SERVICES:
            value = environment(objects, service).get("APP_TRUSTED_PROXIES", {}).get("value")
            # app and gitserver read it (sign-in attempt limits).
            expected = "10.244.0.0/16,fd00::/8,10.0.0.1" if service in ("app", "gitserver") else None
            self.assertEqual(value, expected, service)
        self.assertIn("trustedProxies", render_error("trustedProxies[0]=ingress"))
        self.assertIn("set trustedProxies instead", render_error("env.APP_TRUSTED_PROXIES=10.0.0.0/8"))


class Image(unittest.TestCase):
    def test_dockerfile_ships_all_six_binaries_and_git_as_1000(self):
        with open(os.path.join(CHART, "..", "Dockerfile"), encoding="utf-8") as dockerfile:
            text = dockerfile.read()
        for service in SERVICES:
            self.assertIn(f"target/release/{service}", text)
        self.assertIn("git ca-certificates", text)
        self.assertIn("USER 1000:1000", text)


if __name__ == "__main__":
    unittest.main()
