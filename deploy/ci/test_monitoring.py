"""The Prometheus alert rules and the Grafana dashboard parse and are well formed (run by
scripts/check-deploy). That every metric they name is exported is checked against a running
bal: crates/bal/tests/api/metrics.rs."""

import json
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent.parent
ALERTS = yaml.safe_load((ROOT / "deploy" / "prometheus" / "alerts.yml").read_text())
DASHBOARD = json.loads((ROOT / "deploy" / "grafana" / "bal.json").read_text())
DURATION = re.compile(r"^[0-9]+(ms|s|m|h|d)$")


def balanced(expr):
    depth = {"(": ")", "[": "]", "{": "}"}
    stack = []
    for ch in re.sub(r'"[^"]*"', '""', expr):
        if ch in depth:
            stack.append(depth[ch])
        elif ch in depth.values():
            if not stack or stack.pop() != ch:
                return False
    return not stack


def test_alert_rules_are_a_valid_rule_file():
    (group,) = ALERTS["groups"]
    assert group["name"] and group["rules"]
    names = set()
    for rule in group["rules"]:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
        assert re.fullmatch(r"[A-Z][A-Za-z0-9]+", rule["alert"]) and rule["alert"] not in names
        names.add(rule["alert"])
        assert balanced(rule["expr"]), rule["expr"]
        assert "for" not in rule or DURATION.match(rule["for"]), rule
        assert rule["labels"]["severity"] in {"critical", "warning"}
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
    # What an operator must hear about (the list).
    for needed in ["BalNotReady", "BalBrokerDown", "BalAnchorsFailing", "BalCertificationBacklogGrowing"]:
        assert needed in names


def test_the_dashboard_queries_bal_metrics_in_every_panel():
    assert DASHBOARD["uid"] and DASHBOARD["title"]
    ids = [p["id"] for p in DASHBOARD["panels"]]
    assert len(ids) == len(set(ids)) >= 10
    for panel in DASHBOARD["panels"]:
        assert panel["targets"], panel["title"]
        for t in panel["targets"]:
            assert "bal_" in t["expr"] and balanced(t["expr"]), (panel["title"], t["expr"])
    variables = {v["name"] for v in DASHBOARD["templating"]["list"]}
    assert {"datasource", "namespace", "pod"} <= variables
