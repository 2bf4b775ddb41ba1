"""Checks of the Helm chart, rendered by the real helm binary (HELM, default `helm`)."""

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


class Services(unittest.TestCase):
    def test_every_service_has_its_deployment_ports_and_replicas(self):
        objects = render()
        for service, (name, port, replicas, _) in SERVICES.items():
            deployment, main = container(objects, service)
            self.assertEqual(deployment["spec"]["replicas"], replicas, service)
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
        _, main = container(render(), "app")
        self.assertEqual(main["readinessProbe"]["httpGet"]["path"], "/readyz")
        self.assertEqual(main["livenessProbe"]["httpGet"]["path"], "/healthz")
        self.assertIn("limits", main["resources"])

    def test_replicas_and_image_tag_can_be_overridden(self):
        objects = render("services.app.replicas=3", "imageTag=v1.2.3")
        deployment, main = container(objects, "app")
        self.assertEqual(deployment["spec"]["replicas"], 3)
        self.assertTrue(main["image"].endswith(":v1.2.3"))


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

    def test_only_multi_replica_services_get_a_disruption_budget(self):
        budgets = [key for key in render() if key[0] == "PodDisruptionBudget"]
        self.assertEqual(budgets, [("PodDisruptionBudget", "deploy-app")])


class EmailWorker(unittest.TestCase):
    def test_runs_one_replica_and_updates_through_a_standby(self):
        deployment, _ = container(render(), "email_worker")
        self.assertEqual(deployment["spec"]["replicas"], 1)
        # The surge pod stands by behind the sender lease until the old pod has stopped.
        self.assertEqual(
            deployment["spec"]["strategy"],
            {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
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
        for service in SERVICES:
            deployment, main = container(render(), service)
            pod = deployment["spec"]["template"]["spec"]["securityContext"]
            self.assertEqual(
                (pod["runAsUser"], pod["runAsGroup"], pod["fsGroup"], pod["runAsNonRoot"]),
                (1000, 1000, 1000, True),
            )
            self.assertEqual(main["securityContext"]["capabilities"]["drop"], ["ALL"])
            self.assertIs(main["securityContext"]["allowPrivilegeEscalation"], False)


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
        self.assertEqual(api_paths, {"/": "deploy-app", "/static": "deploy-static-server"})
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

    def test_service_monitor_is_optional(self):
        self.assertFalse([k for k in render() if k[0] == "ServiceMonitor"])
        monitor = render("serviceMonitor.enabled=true")[("ServiceMonitor", "deploy")]
        self.assertEqual(monitor["spec"]["endpoints"][0]["path"], "/metrics")


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
