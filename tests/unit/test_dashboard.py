"""deploy/: the Grafana dashboard loads, and every metric the dashboard and the Prometheus
rules read is one the sidecar declares (sidecar/telemetry/names.py), a recording rule of
deploy/prometheus/recording-rules.yml, or a standard process_* metric."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from sidecar.telemetry import names

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "sidecar-dashboard.json"
RECORDING = ROOT / "deploy" / "prometheus" / "recording-rules.yml"
ALERTS = ROOT / "deploy" / "prometheus" / "alert-rules.yml"
NAMES_PY = Path(names.__file__)

# prometheus_client's ProcessCollector, which the sidecar registers (telemetry/metrics.py).
PROCESS = {"process_cpu_seconds_total", "process_resident_memory_bytes",
           "process_virtual_memory_bytes", "process_open_fds", "process_max_fds",
           "process_start_time_seconds"}
# Labels Prometheus adds at scrape (job, instance) or the sample scrape config does.
TARGET_LABELS = {"job", "instance", "mesh_service", "namespace", "pod"}
SUFFIXES = {"histogram": ("_bucket", "_sum", "_count"), "counter": ("",), "gauge": ("",)}

PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or",
                "unless", "bool", "offset", "inf", "nan"}


def declared() -> dict[str, tuple[str, set[str]]]:
    """Series name -> (type, labels), from the constants and their comments in names.py,
    e.g. `X = "sidecar_x_total"  # counter{service, state=idle|busy}`."""
    out: dict[str, tuple[str, set[str]]] = {}
    pattern = re.compile(r'^[A-Z_]+ = "(sidecar_\w+)"\s*#\s*(counter|gauge|histogram)\{([^}]*)\}')
    for line in NAMES_PY.read_text().splitlines():
        m = pattern.match(line)
        if m:
            name, kind, labels = m.groups()
            label_names = {lab.split("=")[0].strip() for lab in labels.split(",") if lab.strip()}
            if kind == "histogram":
                label_names.add("le")  # only _bucket has it; close enough for a lint
            for suffix in SUFFIXES[kind]:
                out[name + suffix] = (kind, label_names)
    return out


def recording_rules() -> dict[str, set[str]]:
    """Recorded name -> the labels its series carry: the `by (...)` labels of its expression,
    or, for a rule over other recorded series, theirs; plus the rule's own labels."""
    rules = [r for g in yaml.safe_load(RECORDING.read_text())["groups"] for r in g["rules"]
             if "record" in r]
    out: dict[str, set[str]] = {}
    for rule in rules:  # a rule may only read rules recorded above it
        m = re.search(r"\bby \(([^)]*)\)", rule["expr"])
        if m:
            labels = {s.strip() for s in m.group(1).split(",")}
        else:
            labels = set().union(*(out.get(n, set()) for n, _ in selectors(rule["expr"])))
        if rule["expr"].startswith("histogram_quantile("):
            labels.discard("le")
        out.setdefault(rule["record"], set()).update(labels | set(rule.get("labels", {})))
    return out


def selectors(expr: str) -> list[tuple[str, set[str]]]:
    """(metric name, label names in its matcher) for every series selector in a PromQL
    expression. Strings, ranges and grouping clauses are dropped first; what remains that
    is an identifier, not a function call nor a keyword, is a metric name."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    s = re.sub(r"\[[^\]]*\]", "", s)
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    out = []
    for m in re.finditer(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\{[^}]*\})?\s*(\()?", s):
        ident, matcher, call = m.groups()
        if call or ident.lower() in PROMQL_WORDS:
            continue
        if m.start() > 0 and (s[m.start() - 1] in "$." or s[m.start() - 1].isdigit()):
            continue  # $__rate_interval; the exponent of 1e3
        labels = set(re.findall(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)", matcher or ""))
        out.append((ident, labels))
    return out


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def panels(dash: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for p in dash["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))  # panels inside a collapsed row
    return out


def expressions() -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target, template query and rule."""
    out = [(f"panel {p['id']} {p['title']!r}", t["expr"])
           for p in panels(dashboard()) for t in p.get("targets", [])]
    for var in dashboard()["templating"]["list"]:
        if var["type"] == "query":
            q = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            m = re.fullmatch(r"label_values\((.*),\s*\w+\)", q)
            assert m, f"variable {var['name']}: {q}"
            out.append((f"variable {var['name']}", m.group(1)))
    for path in (RECORDING, ALERTS):
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                where = f"{path.name} {rule.get('record') or rule.get('alert')}"
                out.append((where, rule["expr"]))
    return out


def test_names_py_declares_what_the_sidecar_exports():
    decl = declared()
    assert decl["sidecar_requests_total"] == ("counter", {"direction", "service", "route",
                                                          "method", "code"})
    assert decl["sidecar_response_bytes_total"] == ("counter", {"direction", "service", "route"})
    assert "sidecar_request_duration_seconds_bucket" in decl
    assert "sidecar_request_duration_seconds" not in decl  # a histogram has no bare series
    assert decl["sidecar_upstream_pool_connections"][1] == {"service", "state"}
    assert "sidecar_circuit_breaker_state" in decl


def test_selector_parser():
    got = selectors('sum by (service, le) (rate(sidecar_request_duration_seconds_bucket'
                    '{service=~"$service", direction!="x"}[$__rate_interval])) / on(service) '
                    'group_left(le) b:c:d * 2 or process_open_fds > bool 1e3')
    assert got == [("sidecar_request_duration_seconds_bucket", {"service", "direction"}),
                   ("b:c:d", set()), ("process_open_fds", set())]


def test_dashboard_structure():
    dash = dashboard()
    assert dash["title"] and dash["uid"]
    assert 36 <= dash["schemaVersion"] <= 41
    ids = [p["id"] for p in panels(dash)]
    assert len(ids) == len(set(ids)), f"duplicate panel ids: {ids}"
    for p in panels(dash):
        assert isinstance(p["id"], int) and p["title"], p
        assert {"h", "w", "x", "y"} <= set(p["gridPos"]), p["title"]
        assert p["gridPos"]["x"] + p["gridPos"]["w"] <= 24, p["title"]
        if p["type"] == "row":
            continue
        assert p["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}, p["title"]
        assert p["targets"], f"panel {p['title']!r} has no targets"
        refs = [t["refId"] for t in p["targets"]]
        assert len(refs) == len(set(refs)), p["title"]
        for t in p["targets"]:
            assert t["expr"].strip(), p["title"]
            assert t["datasource"]["uid"] == "${DS_PROMETHEUS}", p["title"]


def test_dashboard_variables():
    variables = {v["name"]: v for v in dashboard()["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    service = variables["service"]
    assert service["type"] == "query"
    assert service["query"]["query"].startswith("label_values(")
    assert service["query"]["query"].endswith(", service)")
    assert service["datasource"]["uid"] == "${DS_PROMETHEUS}"


def test_dashboard_covers_the_golden_signals():
    exprs = " ".join(t["expr"] for p in panels(dashboard()) for t in p.get("targets", []))
    used = {name for name, _ in selectors(exprs)}
    for needed in ("service_direction:sidecar_requests:rate5m",  # traffic
                   "service_direction:sidecar_request_errors_per_requests:ratio_rate5m",  # errors
                   "service_direction_quantile:sidecar_request_duration_seconds:histogram_quantile",
                   "sidecar_connections_active", "service_state:sidecar_upstream_pool_connections:sum",
                   "service:sidecar_discovery_endpoints:max", "sidecar_circuit_breaker_state"):
        assert needed in used, needed
    for q in ('quantile="0.5"', 'quantile="0.95"', 'quantile="0.99"'):
        assert q in exprs, q


@pytest.mark.parametrize(("where", "expr"), expressions())
def test_every_metric_is_exported_or_recorded(where, expr):
    decl = declared()
    recorded = recording_rules()
    for name, labels in selectors(expr):
        if name in recorded:
            known = recorded[name]
        elif name in decl:
            known = decl[name][1]
        elif name in PROCESS:
            known = set()
        else:
            pytest.fail(f"{where}: {name} is neither declared in sidecar/telemetry/names.py "
                        f"nor a recording rule nor a process_* metric:\n{expr}")
        unknown = labels - known - TARGET_LABELS
        assert not unknown, f"{where}: {name} has no label {sorted(unknown)}:\n{expr}"


def test_alerts_follow_the_seed():
    rules = {r["alert"]: r for g in yaml.safe_load(ALERTS.read_text())["groups"]
             for r in g["rules"] if "alert" in r}
    seed = {"high_response_time": ("warning", "scale_up_services"),
            "high_error_rate": ("critical", "investigate_service_health"),
            "service_down": ("critical", "restart_service"),
            "circuit_breaker_open": ("warning", "investigate_downstream_service")}
    assert set(rules) == set(seed)
    for name, (severity, action) in seed.items():
        r = rules[name]
        assert r["labels"]["severity"] == severity, name
        assert r["annotations"]["action"] == action, name
        assert r["annotations"]["summary"] and r["annotations"]["description"], name
        assert "for" in r, name
    assert rules["high_response_time"]["expr"].endswith("> 1")  # seconds: 1000 ms
    assert rules["high_error_rate"]["expr"].endswith("> 0.05")
    assert rules["service_down"]["expr"].endswith("== 0")


def test_recording_rule_names_follow_the_convention():
    """level:metric:operations, the level naming exactly the labels the series keep."""
    for name, labels in recording_rules().items():
        level, metric, ops = name.split(":")
        assert set(level.split("_")) == labels, name
        assert metric.startswith("sidecar_") and not metric.endswith("_total"), name
        assert ops, name
