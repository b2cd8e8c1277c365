"""The Prometheus configuration and rules in deploy/prometheus/: promtool's checks, the
alert unit tests (every alert, firing and not), the metric names against the worker's own,
and a real Prometheus scraping a real worker.

promtool and prometheus come from Debian's ``prometheus`` package (``make prometheus``, which
``make test`` runs); a test that needs them fails, never skips, when they are missing.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from streams.settings import Settings
from streams.tools.worker_process import WorkerProcess, free_port
from streams.web.ops import metrics_text
from streams.worker.metrics import WorkerMetrics
from tests.data_fixtures import Dataset
from tests.worker_helpers import StreamEnv

ROOT = Path(__file__).resolve().parent.parent
PROM_DIR = ROOT / "deploy" / "prometheus"
CONFIG = PROM_DIR / "prometheus.yml"
RULES = sorted((PROM_DIR / "rules").glob("*.yml"))
ALERTS = PROM_DIR / "rules" / "alerts.yml"
UNIT_TESTS = PROM_DIR / "tests" / "alerts_test.yml"
OPERATIONS = ROOT / "docs" / "operations.md"
JOB = "nexttrack-worker"
#: Longest wait for Prometheus to see something (scrapes and rule evaluations every second).
DEADLINE = 60.0


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: run `make prometheus` (make test does)")
    return path


def promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool("promtool"), *map(str, args)], capture_output=True, text=True, timeout=120
    )


def rule_groups() -> list[dict[str, Any]]:
    return [group for path in RULES for group in yaml.safe_load(path.read_text())["groups"]]


def alert_rules() -> list[dict[str, Any]]:
    return [
        rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]
    ]


# -- promtool -------------------------------------------------------------------------------


def test_promtool_check_config() -> None:
    result = promtool("check", "config", CONFIG)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_check_rules() -> None:
    assert {p.name for p in RULES} == {"alerts.yml", "recording.yml"}
    result = promtool("check", "rules", *RULES)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_alert_unit_tests() -> None:
    result = promtool("test", "rules", UNIT_TESTS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_is_unit_tested_firing_and_not_firing() -> None:
    tests = yaml.safe_load(UNIT_TESTS.read_text())
    assert sorted(tests["rule_files"]) == sorted(f"../rules/{p.name}" for p in RULES)
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in tests["tests"]:
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {rule["alert"] for rule in alert_rules()}
    assert names == {
        "NextTrackWorkerDown",
        "NextTrackConsumerLagHigh",
        "NextTrackAgentStalled",
        "NextTrackDeadLetterRateHigh",
        "NextTrackLatencyP99High",
        "NextTrackModelReloadRejected",
        "NextTrackBrokerUnreachable",
        "NextTrackWorkerRestarting",
    }
    assert names - firing == set(), "alerts never tested firing"
    assert names - quiet == set(), "alerts never tested quiet"


# -- names ----------------------------------------------------------------------------------

RAW_METRIC = re.compile(r"(?<![\w:])(nexttrack_[a-z0-9_]+)(?![\w:])")
RECORDED = re.compile(r"(?<![\w:])([a-z_]+:nexttrack_[a-z0-9_]+:[a-z0-9_]+)")


def exported_series_names() -> set[str]:
    """Every series name a worker's registry can export (labelled metrics included before
    their first sample)."""
    suffixes = {
        "counter": ("_total",),
        "gauge": ("",),
        "histogram": ("_bucket", "_count", "_sum"),
        "info": ("_info",),
    }
    names = set()
    for family in WorkerMetrics().registry.collect():
        names.update(family.name + suffix for suffix in suffixes[family.type])
    return names


def test_rules_use_only_metrics_the_worker_exports() -> None:
    """A renamed or removed metric would silently disable an alert: the rules may name only
    series that streams/worker/metrics.py defines, and only recording rules that exist."""
    exported = exported_series_names()
    recorded = {
        rule["record"] for group in rule_groups() for rule in group["rules"] if "record" in rule
    }
    used_raw: set[str] = set()
    for group in rule_groups():
        for rule in group["rules"]:
            used_raw.update(RAW_METRIC.findall(rule["expr"]))
            missing = set(RECORDED.findall(rule["expr"])) - recorded
            assert not missing, f"{rule.get('alert') or rule.get('record')}: {missing}"
    assert used_raw, "the rules use the worker's metrics"
    assert used_raw <= exported, f"not exported by the worker: {sorted(used_raw - exported)}"
    # Every recording rule is used by an alert or documented for dashboards (operations.md).
    doc = OPERATIONS.read_text()
    alerts_text = ALERTS.read_text()
    for name in recorded:
        assert name in alerts_text or name in doc, f"{name} is neither alerted on nor documented"


def test_scrape_job_and_rule_job_label_agree() -> None:
    config = yaml.safe_load(CONFIG.read_text())
    assert JOB in {job["job_name"] for job in config["scrape_configs"]}
    for rule in alert_rules():
        for job in re.findall(r'job="([^"]+)"', rule["expr"]):
            assert job == JOB, rule["alert"]


def github_anchor(heading: str) -> str:
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


#: How every runbook_url annotation starts: the external label of prometheus.yml.
RUNBOOK_BASE = "{{ $externalLabels.runbook_base_url }}"


def runbook_base_url() -> str:
    """The base URL of the runbooks, as deploy/prometheus/prometheus.yml sets it."""
    return yaml.safe_load(CONFIG.read_text())["global"]["external_labels"]["runbook_base_url"]


def operations_anchors() -> set[str]:
    return {
        github_anchor(line.lstrip("#"))
        for line in OPERATIONS.read_text().splitlines()
        if line.startswith("#")
    }


def runbook_problems(url: str, alert: str, base: str) -> list[str]:
    """What is wrong with a rendered runbook_url of ``alert``: it must be a full https URL
    under ``base`` naming docs/operations.md of this repository and the alert's section."""
    parts = urllib.parse.urlsplit(url)
    base_path = urllib.parse.urlsplit(base).path
    problems = []
    if parts.scheme != "https" or not parts.netloc:
        problems.append(f"{url}: not a full https URL")
    if not url.startswith(base + "/"):
        problems.append(f"{url}: not under {base}")
    elif (ROOT / parts.path.removeprefix(base_path + "/")) != OPERATIONS:
        problems.append(f"{url}: not docs/operations.md")
    if parts.fragment != alert.lower() or parts.fragment not in operations_anchors():
        problems.append(f"{url}: not the section of {alert} in docs/operations.md")
    return problems


def test_runbook_base_url_is_a_full_url() -> None:
    base = runbook_base_url()
    parts = urllib.parse.urlsplit(base)
    assert parts.scheme == "https" and parts.netloc, base
    assert not (parts.query or parts.fragment or base.endswith("/")), base


def test_every_alert_has_a_runbook_url_to_its_section_in_operations_doc() -> None:
    """runbook_url (not the older `runbook`, a relative path): the base URL of the external
    label, then docs/operations.md#<alert>, a section that exists."""
    base = runbook_base_url()
    for rule in alert_rules():
        assert "runbook" not in rule["annotations"], "the annotation is runbook_url"
        runbook = rule["annotations"]["runbook_url"]
        assert runbook.startswith(RUNBOOK_BASE + "/"), f"{rule['alert']}: {runbook}"
        rendered = base + runbook.removeprefix(RUNBOOK_BASE)
        assert runbook_problems(rendered, rule["alert"], base) == [], rule["alert"]
        assert rule["labels"]["severity"] in {"page", "ticket"}
        assert {"summary", "description"} <= set(rule["annotations"])


def test_alert_unit_tests_expect_the_full_runbook_urls() -> None:
    """The promtool unit tests render the annotations with prometheus.yml's base URL and
    expect the full URL (test_promtool_alert_unit_tests runs them)."""
    base = runbook_base_url()
    tests = yaml.safe_load(UNIT_TESTS.read_text())
    expected = 0
    for case in tests["tests"]:
        assert case.get("external_labels") == {"runbook_base_url": base}, case["name"]
        for check in case.get("alert_rule_test", []):
            for alert in check.get("exp_alerts", []):
                url = alert["exp_annotations"]["runbook_url"]
                assert runbook_problems(url, check["alertname"], base) == [], case["name"]
                expected += 1
    assert expected >= len(alert_rules())


def test_runbook_checks_catch_a_relative_or_wrong_link(tmp_path: Path) -> None:
    base = runbook_base_url()
    good = f"{base}/docs/operations.md#nexttrackworkerdown"
    assert runbook_problems(good, "NextTrackWorkerDown", base) == []
    for wrong in (
        "docs/operations.md#nexttrackworkerdown",  # what the rules said before
        "/docs/operations.md#nexttrackworkerdown",  # the template without its external label
        f"{base}/docs/architecture.md#nexttrackworkerdown",
        f"{base}/docs/operations.md#nexttrackagentstalled",
        f"{base.replace('https:', 'http:')}/docs/operations.md#nexttrackworkerdown",
    ):
        assert runbook_problems(wrong, "NextTrackWorkerDown", base), wrong
    # promtool renders the template: without the external label the link is relative, and
    # the unit tests that expect the full URL fail.
    tests = yaml.safe_load(UNIT_TESTS.read_text())
    tests["rule_files"] = [str((UNIT_TESTS.parent / f).resolve()) for f in tests["rule_files"]]
    for case in tests["tests"]:
        case.pop("external_labels")
    copy = tmp_path / "alerts_test.yml"
    copy.write_text(yaml.safe_dump(tests))
    result = promtool("test", "rules", copy)
    assert result.returncode != 0
    assert "/docs/operations.md#nexttrackworkerdown" in result.stdout + result.stderr


def test_lag_alert_threshold_is_max_lag_healthy() -> None:
    """NextTrackConsumerLagHigh fires past the lag at which /health fails (MAX_LAG_HEALTHY's
    default): the rule, its description and its unit tests say the same number."""
    default = Settings.model_fields["max_lag_healthy"].default
    rule = next(r for r in alert_rules() if r["alert"] == "NextTrackConsumerLagHigh")
    match = re.fullmatch(r"job_instance:nexttrack_consumer_lag:sum > (\d+)", rule["expr"].strip())
    assert match, rule["expr"]
    assert int(match.group(1)) == default, "change the alert with MAX_LAG_HEALTHY's default"
    assert f"more than {default} messages" in " ".join(rule["annotations"]["description"].split())
    tests = yaml.safe_load(UNIT_TESTS.read_text())
    names = [case["name"] for case in tests["tests"]]
    assert any(f"lag over {default} " in name for name in names), names


def test_metrics_include_the_process_collector() -> None:
    """Memory, CPU and file descriptors of the worker process, as prometheus-client's default
    registry exports them (the worker's registry is its own)."""
    registry = WorkerMetrics().registry
    rss = registry.get_sample_value("process_resident_memory_bytes")
    assert rss is not None and rss > 10 * 1024 * 1024
    assert (registry.get_sample_value("process_cpu_seconds_total") or 0) > 0
    assert (registry.get_sample_value("process_open_fds") or 0) > 0
    assert registry.get_sample_value("process_start_time_seconds") is not None
    text = metrics_text(registry).decode()
    assert "# TYPE process_resident_memory_bytes gauge" in text
    assert "python_info{" in text


# -- a real Prometheus scraping a real worker --------------------------------------------


@dataclass
class Prometheus:
    process: subprocess.Popen[bytes]
    url: str
    log_path: Path

    def get(self, path: str, **params: str) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.url}{path}{query}", timeout=5) as reply:
            body = json.loads(reply.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        return self.get("/api/v1/query", query=expr)["result"]

    def log_tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


def scrape_config_for(worker_port: int, tsdb_dir: Path) -> Path:
    """deploy/prometheus/prometheus.yml with the worker job pointed at a local worker (static
    target instead of compose's DNS), every second, and the rules by absolute path."""
    config = yaml.safe_load(CONFIG.read_text())
    config["global"]["scrape_interval"] = "1s"
    config["global"]["evaluation_interval"] = "1s"
    config["rule_files"] = [str(PROM_DIR / pattern) for pattern in config["rule_files"]]
    jobs = []
    for job in config["scrape_configs"]:
        if job["job_name"] != JOB:
            continue  # the compose-only jobs (Prometheus itself)
        job = dict(job)
        job.pop("dns_sd_configs")
        job["static_configs"] = [{"targets": [f"127.0.0.1:{worker_port}"]}]
        job["scrape_interval"] = "1s"
        job["scrape_timeout"] = "1s"
        jobs.append(job)
    config["scrape_configs"] = jobs
    path = tsdb_dir.parent / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def wait_for(
    what: str, check: Callable[[], Any], prom: Prometheus, timeout: float = DEADLINE
) -> Any:
    """``check()`` until it returns something truthy; fails at the deadline with the last
    answer and Prometheus's log."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (OSError, urllib.error.URLError, KeyError, ValueError) as exc:
            last = repr(exc)
        else:
            if last:
                return last
        if prom.process.poll() is not None:
            break
        time.sleep(0.25)
    pytest.fail(f"Prometheus never saw {what} (last: {last!r}):\n{prom.log_tail()}")


@pytest.fixture(scope="module")
def scraped_worker(
    kafka_bootstrap: str,
    small_artifacts: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[StreamEnv, WorkerProcess, Prometheus]]:
    """A worker on its own topics and a Prometheus (deploy/prometheus rules) scraping it."""
    binary = tool("prometheus")
    workdir = tmp_path_factory.mktemp("prometheus-kafka")
    env = StreamEnv(kafka_bootstrap, workdir)
    with env.worker(small_artifacts) as worker:
        tsdb = workdir / "tsdb"
        port = free_port()
        log_path = workdir / "prometheus.log"
        with open(log_path, "wb") as out:
            process = subprocess.Popen(
                [
                    binary,
                    f"--config.file={scrape_config_for(worker.web_port, tsdb)}",
                    f"--storage.tsdb.path={tsdb}",
                    f"--web.listen-address=127.0.0.1:{port}",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        prom = Prometheus(process, f"http://127.0.0.1:{port}", log_path)
        try:
            yield env, worker, prom
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


def value_of(result: list[dict[str, Any]]) -> float:
    return sum(float(series["value"][1]) for series in result)


@pytest.mark.kafka
def test_prometheus_scrapes_the_worker_and_evaluates_the_rules(
    scraped_worker: tuple[StreamEnv, WorkerProcess, Prometheus], small_dataset: Dataset
) -> None:
    env, _, prom = scraped_worker
    target = wait_for(
        "the worker as a healthy target",
        lambda: [
            t
            for t in prom.get("/api/v1/targets")["activeTargets"]
            if t["labels"]["job"] == JOB and t["health"] == "up"
        ],
        prom,
    )
    assert target[0]["scrapeUrl"].endswith("/metrics")

    # Two rounds of plays (and one malformed record each): a labelled counter appears at its
    # first increment, so a rate needs the second round.
    plays = [e.to_bytes() for e in small_dataset.events[:20]]
    env.produce([*plays[:10], b"not json"])
    wait_for(
        "nexttrack_recommendations_published_total > 0",
        lambda: value_of(prom.query(f'nexttrack_recommendations_published_total{{job="{JOB}"}}')),
        prom,
    )
    env.produce([*plays[10:], b"not json either"])
    wait_for(
        "a positive rate of published recommendations (recording rule)",
        lambda: (
            value_of(
                prom.query('job_source:nexttrack_recommendations_published:rate5m{source="plays"}')
            )
            > 0
        ),
        prom,
    )
    ratio = wait_for(
        "the dead-letter share of plays (recording rule)",
        lambda: prom.query("job_instance_topic:nexttrack_dead_letters:ratio_rate5m"),
        prom,
    )
    assert ratio[0]["metric"]["topic"] == env.settings.topic_plays
    assert 0 < float(ratio[0]["value"][1]) < 1
    assert wait_for(
        "the p99 end-to-end latency (recording rule)",
        lambda: [
            r
            for r in prom.query("job:nexttrack_end_to_end_latency_seconds:p99_5m")
            if r["value"][1] != "NaN"
        ],
        prom,
    )
    # The input of NextTrackBrokerUnreachable: the worker's broker probe answers.
    wait_for("nexttrack_broker_up == 1", lambda: prom.query("nexttrack_broker_up == 1"), prom)
    # The process collector on the page Prometheus scrapes: the worker's memory, CPU, fds.
    for series, floor in (
        ("process_resident_memory_bytes", 10 * 1024 * 1024),
        ("process_cpu_seconds_total", 0),
        ("process_open_fds", 0),
    ):
        wait_for(
            f"{series} of the worker",
            lambda series=series, floor=floor: (
                value_of(prom.query(f'{series}{{job="{JOB}"}}')) > floor
            ),
            prom,
        )

    # The repository's rule files load, evaluate without error on real series, and a healthy
    # worker that has answered everything raises no alert (not even pending).
    expected_alerts = {rule["alert"] for rule in alert_rules()}

    def rules_settled() -> list[dict[str, Any]] | None:
        groups = prom.get("/api/v1/rules")["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        ok = all(rule["health"] == "ok" for rule in rules)
        quiet = all(rule.get("state", "inactive") == "inactive" for rule in rules)
        return groups if ok and quiet else None

    env.wait_committed()
    groups = wait_for("every rule evaluated ok and every alert inactive", rules_settled, prom)
    assert {g["name"] for g in groups} == {g["name"] for g in rule_groups()}
    loaded = {r["name"] for g in groups for r in g["rules"] if r["type"] == "alerting"}
    assert loaded == expected_alerts


#: Faust's own pages the README lists ("Operating endpoints"); table pages are disabled
#: (``web_tables_enabled=False``) and the graph page is on only in debug mode.
FAUST_PAGES = ("/", "/assignment/", "/performance/", "/router/")
ABSENT_PAGES = ("/table/", "/graph/")


@pytest.mark.kafka
def test_documented_pages_are_the_served_ones(
    scraped_worker: tuple[StreamEnv, WorkerProcess, Prometheus],
) -> None:
    _, worker, _ = scraped_worker
    readme = (ROOT / "README.md").read_text()
    endpoints = readme[readme.index("**Operating endpoints**") :].split("\n\n", 1)[0]
    for page in FAUST_PAGES:
        assert f"`{page}`" in endpoints, page
        with urllib.request.urlopen(worker.url + page, timeout=10) as reply:
            assert reply.status == 200, page
    for page in ABSENT_PAGES:
        assert f"`{page}`" not in endpoints, page
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(worker.url + page, timeout=10)
        assert info.value.code == 404, page
    for page in ("/health", "/ready", "/metrics", "/status", "/status.json"):
        assert f"`{page}`" in endpoints, page
