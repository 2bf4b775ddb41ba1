"""Checks of the Helm chart, rendered by the real helm binary (HELM, default `helm`)."""

import glob
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
