#!/usr/bin/env python3
"""Offline checks of deploy/ that need no tool but Python (and PyYAML).

  check.py metrics              every metric the dashboard and the alert rules
                                use is registered in proxy/src/ops/*.rs
  check.py dashboard OUT.yaml   the dashboard is importable; its queries are
                                written to OUT.yaml as recording rules, for
                                `promtool check rules` to parse
  check.py promtool-config OUT  scrape.yaml with Kubernetes discovery replaced
                                by an empty static list, for promtool builds
                                without it (Debian's)

Run by deploy/check.sh; exits 1 with one line per problem.
"""
import json
import pathlib
import re
import sys

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "deploy/grafana/sluice-dashboard.json"
ALERTS = ROOT / "deploy/prometheus/alerts.yaml"
SCRAPE = ROOT / "deploy/prometheus/scrape.yaml"
NAME = re.compile(r"(?<![A-Za-z0-9_:])(sluice_[a-z0-9_]+|vllm:[a-z0-9_:]+)")


def registered():
    """(every metric name, the histogram names) registered in proxy/src/ops/."""
    names, histograms = set(), set()
    for path in sorted((ROOT / "proxy/src/ops").glob("*.rs")):
        text = path.read_text()
        names.update(re.findall(r'"((?:sluice_|vllm:)[a-z0-9_:]+)"', text))
        histograms.update(re.findall(r'HistogramOpts::new\(\s*"([a-z0-9_:]+)"', text))
    return names, histograms


def dashboard_exprs(dash):
    """(where, PromQL) of every query in the dashboard, templating included."""
    for panel in dash["panels"]:
        for target in panel.get("targets", []):
            yield f"dashboard panel {panel['title']!r}", target["expr"]
    for var in dash.get("templating", {}).get("list", []):
        if var.get("type") == "query":
            yield f"dashboard variable {var['name']!r}", var["definition"]


def alert_exprs():
    for group in yaml.safe_load(ALERTS.read_text())["groups"]:
        for rule in group["rules"]:
            yield f"alert {rule.get('alert') or rule.get('record')}", rule["expr"]


def check_metrics():
    names, histograms = registered()
    problems = []
    used = set()
    exprs = list(dashboard_exprs(json.loads(DASHBOARD.read_text()))) + list(alert_exprs())
    for where, expr in exprs:
        for name in NAME.findall(re.sub(r'"[^"]*"', '""', expr)):
            base = re.sub(r"_(bucket|sum|count)$", "", name)
            if name in names:
                used.add(name)
            elif base != name and base in histograms:
                used.add(base)
            elif base in names:
                problems.append(f"{where}: {name}: {base} is not a histogram")
            else:
                problems.append(f"{where}: {name} is not registered in proxy/src/ops/*.rs")
    print(f"check: {len(exprs)} queries use {len(used)} metrics; {len(names)} registered")
    return problems


def check_dashboard(out):
    dash = json.loads(DASHBOARD.read_text())
    problems = []
    if dash.get("schemaVersion", 0) < 36:
        problems.append("dashboard: schemaVersion below 36")
    if not any(i.get("name") == "DS_PROMETHEUS" for i in dash.get("__inputs", [])):
        problems.append("dashboard: no DS_PROMETHEUS input")
    ids = [p["id"] for p in dash["panels"]]
    if len(ids) != len(set(ids)):
        problems.append("dashboard: panel ids repeat")
    for panel in dash["panels"]:
        grid = panel["gridPos"]
        if grid["x"] + grid["w"] > 24:
            problems.append(f"dashboard panel {panel['title']!r}: wider than the grid")
        if panel["type"] == "row":
            continue
        sources = [panel.get("datasource")] + [t.get("datasource") for t in panel.get("targets", [])]
        if any((s or {}).get("uid") != "${DS_PROMETHEUS}" for s in sources):
            problems.append(f"dashboard panel {panel['title']!r}: datasource is not ${{DS_PROMETHEUS}}")
        if not panel.get("targets"):
            problems.append(f"dashboard panel {panel['title']!r}: no query")
    rules = []
    for i, (where, expr) in enumerate(dashboard_exprs(dash)):
        if where.startswith("dashboard variable"):
            continue
        expr = expr.replace("$__rate_interval", "5m").replace("$job", ".*")
        rules.append({"record": f"dashboard:query_{i}", "expr": expr})
    pathlib.Path(out).write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    return problems


def promtool_config(out):
    """scrape.yaml, alerts.yaml beside it, without kubernetes_sd_configs."""
    config = yaml.safe_load(SCRAPE.read_text())
    for job in config["scrape_configs"]:
        if job.pop("kubernetes_sd_configs", None) is not None:
            job.setdefault("static_configs", []).append({"targets": []})
    config["rule_files"] = [str(SCRAPE.parent / f) for f in config.get("rule_files", [])]
    pathlib.Path(out).write_text(yaml.safe_dump(config))
    return []


def main(argv):
    commands = {"metrics": check_metrics, "dashboard": check_dashboard, "promtool-config": promtool_config}
    if len(argv) < 2 or argv[1] not in commands:
        sys.exit(__doc__)
    problems = commands[argv[1]](*argv[2:])
    for problem in dict.fromkeys(problems):
        print(f"check: {problem}", file=sys.stderr)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main(sys.argv)
