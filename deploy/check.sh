#!/usr/bin/env bash
# Keeps deploy/ honest: lints the Dockerfile, renders and validates the Helm
# chart against Kubernetes' schemas, checks the Prometheus config and rules
# (and their unit tests), checks the Grafana dashboard's shape and queries,
# and that every metric the dashboard and alerts use is registered in
# proxy/src/ops/. Installs nothing: .ci/run does. Every check runs; the
# ones that failed are listed at the end. A validator that is not on PATH is
# skipped with a note, and fails the run under CI.
set -euo pipefail
cd "$(dirname "$0")/.."

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
missing=()
failed=()
# step NAME COMMAND...: runs it, and remembers NAME if it fails.
step() {
  local name=$1
  shift
  echo "check: $name"
  "$@" || failed+=("$name")
}
have() {
  command -v "$1" >/dev/null 2>&1 && return 0
  echo "check: $1 not found: its checks skipped"
  missing+=("$1")
  return 1
}

step "metric names" python3 deploy/check.py metrics
step "dashboard" python3 deploy/check.py dashboard "$tmp/dashboard-rules.yaml"
if have hadolint; then
  step hadolint hadolint deploy/Dockerfile
fi

# The chart rendered with its defaults and with every optional part on.
chart=deploy/helm/sluice
# (Functions run by step are in an `||`, where errexit is off: hence `&&`.)
render_chart() {
  helm lint --strict "$chart" >/dev/null &&
    helm template sluice "$chart" >"$tmp/default.yaml" &&
    helm template sluice "$chart" \
      --set secrets.env.OPENAI_API_KEY=sk-test,secrets.env.SLUICE_ADMIN_KEY=admin-test \
      --set persistence.enabled=false,serviceMonitor.enabled=true,replicaCount=3 \
      >"$tmp/everything.yaml" || return 1
  # sluice's own drain must fit in the pod's termination grace period.
  if helm template sluice "$chart" --set terminationGracePeriodSeconds=5 >/dev/null 2>&1; then
    echo "check: the chart rendered a grace period shorter than server.grace_period_s" >&2
    return 1
  fi
}
if have helm; then
  step "helm lint and template" render_chart
  if have kubernetes-validate; then
    step kubernetes-validate kubernetes-validate --strict --quiet "$tmp/default.yaml" "$tmp/everything.yaml"
  fi
fi

if have yamllint; then
  step yamllint yamllint -c deploy/.yamllint deploy/prometheus deploy/sluice.yaml \
    "$chart/Chart.yaml" "$chart/values.yaml" "$tmp"/*.yaml
fi

scrape_config() {
  if ! promtool check config deploy/prometheus/scrape.yaml >"$tmp/promtool.out" 2>&1; then
    # Debian's promtool is built without Kubernetes discovery: check the
    # rest of the file with that block emptied.
    grep -q "field kubernetes_sd_configs not found" "$tmp/promtool.out" || {
      cat "$tmp/promtool.out" >&2
      return 1
    }
    echo "check: this promtool lacks kubernetes_sd_configs; checking scrape.yaml without it"
    python3 deploy/check.py promtool-config "$tmp/scrape.yaml" &&
      promtool check config "$tmp/scrape.yaml" >/dev/null
  fi
}
if have promtool; then
  step "promtool check rules" promtool check rules deploy/prometheus/alerts.yaml "$tmp/dashboard-rules.yaml"
  step "promtool test rules" promtool test rules deploy/prometheus/alerts_test.yaml
  step "promtool check config" scrape_config
fi

# The configs sluice will load, checked by sluice itself when a build is
# there (cargo test leaves target/debug/sluice).
sluice=""
for candidate in "${CARGO_TARGET_DIR:-target}/debug/sluice" "${CARGO_TARGET_DIR:-target}/release/sluice"; do
  [ -x "$candidate" ] && sluice=$candidate && break
done
if [ -n "$sluice" ]; then
  export OPENAI_API_KEY=sk-test SLUICE_ADMIN_KEY=admin-test POD_NAME=sluice-0
  step "sluice check-config deploy/sluice.yaml ($sluice)" "$sluice" check-config deploy/sluice.yaml
  if [ -f "$tmp/default.yaml" ]; then
    python3 -c 'import sys, yaml
for d in yaml.safe_load_all(open(sys.argv[1])):
    if d and d["kind"] == "ConfigMap": print(d["data"]["sluice.yaml"], end="")' \
      "$tmp/default.yaml" >"$tmp/chart-sluice.yaml"
    step "sluice check-config (the chart's)" "$sluice" check-config "$tmp/chart-sluice.yaml"
  fi
else
  echo "check: no sluice binary built: configs not loaded"
  missing+=(sluice)
fi

if [ ${#missing[@]} -gt 0 ] && [ -n "${CI:-}" ]; then
  failed+=("missing under CI: ${missing[*]}")
fi
if [ ${#failed[@]} -gt 0 ]; then
  printf 'check: FAILED: %s\n' "${failed[@]}" >&2
  exit 1
fi
echo "check: deploy/ ok"
