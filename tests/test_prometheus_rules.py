"""deploy/prometheus/trimo-rules.yml: Prometheus accepts it, every alert has a
`promtool test rules` case where it fires and one where it stays quiet, and it alerts on
figures `/metrics` really serves."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "deploy" / "prometheus" / "trimo-rules.yml"
CASES = ROOT / "tests" / "prometheus" / "trimo-rules.test.yml"


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail("promtool is required: Debian's `prometheus` (scripts/services.sh installs it)")
    return found


def alerts() -> dict[str, str]:
    groups: list[dict[str, Any]] = yaml.safe_load(RULES.read_text())["groups"]
    return {rule["alert"]: rule["expr"] for group in groups for rule in group["rules"]}


def test_prometheus_accepts_the_rules() -> None:
    done = subprocess.run(
        [promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_alert_fires_when_it_should_and_only_then() -> None:
    done = subprocess.run(
        [promtool(), "test", "rules", str(CASES)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    fired: set[str] = set()
    quiet: set[str] = set()
    for case in yaml.safe_load(CASES.read_text())["tests"]:
        for check in case["alert_rule_test"]:
            (fired if check["exp_alerts"] else quiet).add(check["alertname"])
    assert set(alerts()) == fired == quiet


def test_the_alerts_the_readme_names_are_shipped() -> None:
    assert set(alerts()) == {
        "TrimoRedisDown",
        "TrimoNoRunnerForQueuedLabel",
        "TrimoReporterLagging",
        "TrimoReporterOwing",
        "TrimoDeadLetters",
        "TrimoWriteBudgetNearlySpent",
        "TrimoQueueWaitSlow",
    }


def test_the_alerts_use_metrics_that_exist() -> None:
    """Each name in an expression is in README's table of what /metrics serves."""
    documented = set(re.findall(r"^\| `(trimo_\w+)`", (ROOT / "README.md").read_text(), re.M))
    for name, expr in alerts().items():
        for metric in re.findall(r"\btrimo_\w+", expr):
            base = re.sub(r"_(bucket|sum|count)$", "", metric)
            assert base in documented, (name, metric)
