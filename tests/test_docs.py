"""The documentation site: it builds strictly, its generated pages are current, it documents every
condition reason and metric the code has, and every command it shows is run by a test (or says why
no test can run it here)."""

from __future__ import annotations

import ast
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from streamotion.docs import pages
from streamotion.docs.metrics import declared
from streamotion.docs.reasons import operator_reasons
from streamotion.docs.shell import documented_commands

ROOT = Path(__file__).resolve().parents[1]
MKDOCS = [sys.executable, "-m", "mkdocs"]


def _env() -> dict[str, str]:
    src = os.pathsep.join(str(ROOT / p) for p in ("src", "operator", "ingest", "jobs", "serving"))
    return {**os.environ, "PYTHONPATH": src, "NO_MKDOCS_2_WARNING": "1"}


def _build(root: Path, site: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*MKDOCS, "build", "--strict", "--site-dir", str(site)],
        cwd=root,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


# ------------------------------------------------------------------------------------------ the site
def test_site_builds_strictly(tmp_path):
    result = _build(ROOT, tmp_path / "site")
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "site" / "troubleshooting" / "index.html").is_file()


def _copy(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    shutil.copytree(ROOT / "docs", root / "docs")
    shutil.copy(ROOT / "mkdocs.yml", root / "mkdocs.yml")
    return root


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: (d / "orphan.md").write_text("# Orphan\n"), 'not included in the "nav"'),
        (
            lambda d: (d / "sources.md").open("a").write("\nSee [nothing](no-such-page.md).\n"),
            "no-such-page.md",
        ),
        (
            lambda d: (d / "sources.md").open("a").write("\nSee [a section](model.md#no-such-section).\n"),
            "no-such-section",
        ),
        (
            lambda d: (
                (d / "sources.md").open("a").write("\nSee [the code](../src/streamotion/cli/__init__.py).\n")
            ),
            "__init__.py",
        ),
    ],
    ids=["page-outside-nav", "broken-link", "broken-anchor", "link-outside-docs"],
)
def test_strict_build_fails_on_what_a_reader_would_trip_over(tmp_path, change, message):
    """The validation settings of mkdocs.yml: each of these is a warning, and --strict fails on it."""
    root = _copy(tmp_path)
    change(root / "docs")
    result = _build(root, tmp_path / "site")
    assert result.returncode != 0
    assert message in result.stderr, result.stderr[-2000:]


def test_generated_pages_are_current():
    assert pages.stale(ROOT) == [], "run `streamotion docs generate` (or `make generate`)"


def test_generated_pages_do_not_depend_on_the_machine(tmp_path):
    """CI renders the pages under another user, home and working directory: the text is the same."""
    code = (
        "import sys; from pathlib import Path; from streamotion.docs.pages import render; "
        "sys.stdout.write(''.join(t for _, t in sorted(render(Path(sys.argv[1])).items())))"
    )
    env = {**_env(), "HOME": str(tmp_path), "USER": "someone-else", "STREAMOTION_CACHE": str(tmp_path)}
    other = subprocess.run(
        [sys.executable, "-c", code, str(ROOT)], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert other.returncode == 0, other.stderr[-2000:]
    assert other.stdout == "".join(t for _, t in sorted(pages.render(ROOT).items()))


def test_readme_is_short_and_its_links_resolve():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 150
    assert "make local" in readme and "make test" in readme
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", readme):
        if "://" not in target:
            assert (ROOT / target).exists(), f"README links to {target}, which does not exist"


# ---------------------------------------------------------------------- what the code says, documented
def _documented_reasons() -> set[str]:
    text = (ROOT / "docs" / "troubleshooting.md").read_text()
    return set(re.findall(r"^### `([A-Za-z]+)`$", text, re.M))


def test_troubleshooting_documents_every_condition_reason_the_operator_reports():
    in_code = set(operator_reasons(ROOT))
    assert {"ChildConflict", "SecretMissing", "TenancyViolation", "NotReady"} <= in_code
    documented = _documented_reasons()
    assert in_code - documented == set(), "add a section to docs/troubleshooting.md for each"
    assert documented - in_code == set(), "docs/troubleshooting.md documents reasons the code no longer has"


def test_reason_extraction_refuses_a_reason_it_cannot_read(tmp_path):
    """A Problem whose reason is computed would slip past the docs: the extractor says so instead."""
    package = tmp_path / "operator" / "streamotion_operator"
    (package / "status").mkdir(parents=True)
    (package / "names.py").write_text('CONFLICT = "FromAnotherModule"\nOTHER = "ByAttribute"\n')
    (package / "status" / "__init__.py").write_text(
        "from streamotion_operator.names import CONFLICT\n"
        "from streamotion_operator import names\n"
        'NEW = "BrandNew"\n'
        "def f(out, cond, why):\n"
        '    out.append(Problem(cond, NEW, "m"))\n'
        '    out.append(Problem(cond, reason="Keyword", message="m"))\n'
        '    out.append(Problem(cond, CONFLICT, "m"))\n'
        '    out.append(Problem(cond, names.OTHER, "m"))\n'
        '    return ("False", "FromTuple", "message")\n'
    )
    (package / "status" / "names.py").write_text(
        'def g(out, c):\n    out.append(Problem(c, "Nested", "m"))\n'
    )
    assert set(operator_reasons(tmp_path)) == {
        "BrandNew",
        "Keyword",
        "FromTuple",
        "FromAnotherModule",
        "ByAttribute",
        "Nested",
    }
    (package / "more.py").write_text('def g(out, cond, why):\n    out.append(Problem(cond, why, "m"))\n')
    with pytest.raises(ValueError, match=r"more.py:2: cannot tell the reason"):
        operator_reasons(tmp_path)


def _runtime_metric_families() -> set[str]:
    """The families the components create when they run (the names the metrics page must list)."""
    import streamotion_ingest.metrics as ingest
    import streamotion_serving.metrics as serving
    from prometheus_client import CollectorRegistry
    from streamotion_jobs.metrics import JobMetrics
    from streamotion_operator.metrics import Metrics

    objects = [*vars(ingest).values(), *vars(Metrics(CollectorRegistry())).values()]
    objects += vars(JobMetrics("namespace", "pipeline")).values()
    names = {f.name for f in serving.FAMILIES}
    return names | {o._name for o in objects if hasattr(o, "_type") and hasattr(o, "_name")}


def test_metrics_reference_lists_every_family_the_components_create():
    in_docs = {s.name for s in declared(ROOT)}
    running = _runtime_metric_families()
    assert len(running) > 25
    assert running - in_docs == set()
    page = (ROOT / "docs" / "reference" / "metrics.md").read_text()
    for s in declared(ROOT):
        assert f"`{s.exposed()}`" in page


# --------------------------------------------------------------------------- every command shown
@dataclass(frozen=True)
class Ran:
    """A test runs this command (``how`` says what differs from the line shown, if anything)."""

    test: str  # tests/test_x.py::test_name
    how: str = ""


@dataclass(frozen=True)
class NotHere:
    """No test can run this command here, and why."""

    reason: str


QUICK = "tests/test_docs.py::test_quick_documented_commands_run_as_shown"
DOCKER = "needs Docker and kind, which CI machines here do not have; the chart it installs is tested by tests/test_chart.py and tests/test_deploy.py"
GCP = "needs a Google Cloud project; tests/test_deploy.py checks the guide's service accounts and bindings against values-gke.yaml"
CONTROL_PLANE = "tests/test_dev_control_plane.py::test_dev_control_plane_serves_kubectl_and_stops_cleanly"
UPGRADE = "tests/test_chart.py::test_install_upgrade_uninstall"
CONVERSION = "tests/test_conversion.py::test_stored_v1alpha1_objects_read_back_unchanged_through_the_operators_webhook_and_migrate"
STANDIN = "on a copy of the chart with stand-ins for the operator charts (no internet for `helm dependency build`), on the test control plane"

# (regular expression matched against the whole command, what runs it or why nothing can)
COMMANDS: list[tuple[str, Ran | NotHere]] = [
    (
        r"make local",
        Ran(
            "tests/test_local_nothing_but_python.py::test_make_local_as_a_new_user_with_nothing_but_python",
            "as a new user with nothing but Python (a venv already made), LOCAL_ARGS='--tiny-model --plain'",
        ),
    ),
    (
        r"make test",
        NotHere("the CI command itself: it runs this whole suite, so no test inside the suite runs it"),
    ),
    (
        r"make docs",
        Ran(
            "tests/test_docs.py::test_site_builds_strictly",
            "its two steps: the generated pages are current (test_generated_pages_are_current) and `mkdocs build --strict`",
        ),
    ),
    (
        r"\.venv/bin/python grafana/generate\.py",
        Ran(
            "tests/test_dashboards.py::test_committed_json_equals_the_generator_output",
            "the generator's output compared with the committed files, without writing them",
        ),
    ),
    (
        r"(\.venv/bin/)?streamotion run examples/reviews-cdc\.yaml --local",
        NotHere(
            "runs until stopped, with a model, the job, PostgreSQL and Kafka Connect; its cdc part "
            "(streamotion.local.cdc: the database and table, the connector against the run's server) "
            "runs in tests/test_cdc.py::test_inserted_and_updated_rows_arrive_classified_once_across_a_connect_restart_with_pii_redacted"
        ),
    ),
    (
        r"export AWS_ENDPOINT_URL=\S+ AWS_ALLOW_HTTP=true AWS_REGION=\S+|export AWS_ACCESS_KEY_ID=\S+ AWS_SECRET_ACCESS_KEY=\S+",
        Ran(
            "tests/test_sinks_lake_s3.py::test_s3a_lake_counts_exact_replay_writes_nothing_twice_and_deltalake_reads_the_same_rows",
            "the loopback S3 server's endpoint and region, the keys the test's job has, set in the environment",
        ),
    ),
    (
        r"streamotion lake daily s3a://\S+ --days \d+",
        Ran(
            "tests/test_sinks_lake_s3.py::test_s3a_lake_counts_exact_replay_writes_nothing_twice_and_deltalake_reads_the_same_rows",
            "on the s3a lake the test wrote in the loopback S3 server, --days 0 --json",
        ),
    ),
    (
        r"streamotion lake daily .*",
        Ran(
            "tests/test_sinks_lake.py::test_replays_and_a_crash_between_writes_leave_every_event_and_aggregate_once",
            "on the lake the test wrote, --days 0 --json, compared with the events it holds",
        ),
    ),
    (r"streamotion dashboards check", Ran(QUICK)),
    (r"streamotion docs check", Ran(QUICK)),
    (r"(\.venv/bin/)?streamotion render examples/full\.yaml -n team-a", Ran(QUICK)),
    (
        r"streamotion report --since .*",
        Ran(
            "tests/test_report.py::test_report_writes_readable_charts_and_a_page",
            "with the DSN and schema of the test's sink",
        ),
    ),
    (
        r"(\.venv/bin/)?streamotion run FILE --local .*",
        Ran(
            "tests/test_local.py::test_local_run_writes_every_event_and_stops_cleanly",
            "with --tiny-model, --plain and the test's PostgreSQL",
        ),
    ),
    (
        r"(\.venv/bin/)?streamotion run examples/local\.yaml --local --tiny-model --events 300",
        Ran(
            "tests/test_local.py::test_local_run_writes_every_event_and_stops_cleanly",
            "on the test's pipeline and PostgreSQL",
        ),
    ),
    (
        r"(\.venv/bin/)?streamotion dev control-plane --crds \.\./shared/crds",
        Ran(CONTROL_PLANE, "with --kubeconfig in a temporary folder"),
    ),
    (
        r"export KUBECONFIG=\S+ PATH=\S+",
        Ran(CONTROL_PLANE, "the kubeconfig it writes and the kubectl it builds"),
    ),
    (
        r"kubectl apply -f examples/ && kubectl get sp( && kubectl explain streampipeline\.spec\.sources)?",
        Ran(CONTROL_PLANE),
    ),
    (
        r"(\.venv/bin/)?streamotion operator --log-format plain",
        Ran(
            "tests/test_dashboards_promql.py::test_operator_alert_rules_load_into_prometheus_and_evaluate",
            "the `stack` fixture runs it against the test control plane, with its ports",
        ),
    ),
    (
        r"kubectl create namespace kafka; kubectl create namespace monitoring",
        Ran(
            "tests/test_dashboards_promql.py::test_operator_alert_rules_load_into_prometheus_and_evaluate",
            "the `stack` fixture creates the pipeline's namespaces with kubectl",
        ),
    ),
    (
        r"kubectl describe sp reddit-emotions",
        NotHere(
            "kubectl's human-readable view of the conditions and events that tests/test_operator.py asserts through the API"
        ),
    ),
    (
        r"(\.venv/bin/)?streamotion dev kafka --topic demo:3",
        Ran("tests/test_kafka.py::test_dev_kafka_command_stops_cleanly_on_sigterm"),
    ),
    (
        r"streamotion dev kafka --secure --workdir /tmp/kafka --pipeline examples/demo\.yaml",
        Ran("tests/test_kafka_security.py::test_dev_kafka_secure_command_gives_each_component_an_identity"),
    ),
    (
        r"streamotion run examples/local\.yaml --local --secure",
        Ran(
            "tests/test_local.py::test_local_run_writes_every_event_and_stops_cleanly",
            "with --secure on a replay pipeline like examples/local.yaml (--tiny-model, its own data set)",
        ),
    ),
    (
        r"export STREAMOTION_KAFKA_BOOTSTRAP=127\.0\.0\.1:PORT",
        Ran(
            "tests/test_ingest.py::test_produce_command_runs_replay_and_stops_on_sigterm",
            "the producer finds Kafka through this variable",
        ),
    ),
    (
        r"(\.venv/bin/)?streamotion produce --source replay --pipeline examples/demo\.yaml --metrics-port 0",
        Ran(
            "tests/test_ingest.py::test_produce_command_runs_replay_and_stops_on_sigterm",
            "on the test's replay pipeline",
        ),
    ),
    (
        r"INGEST_TOKEN=secret (\.venv/bin/)?streamotion produce --source reviews .*",
        Ran(
            "tests/test_ingest_http.py::test_accepts_single_and_batches_after_kafka_ack",
            "the same HTTP app (streamotion_ingest.http.build) in-process, with a bearer token",
        ),
    ),
    (
        r"curl -H 'Authorization: Bearer secret' .*/v1/events",
        Ran(
            "tests/test_ingest_http.py::test_accepts_single_and_batches_after_kafka_ack",
            "POST /v1/events with httpx",
        ),
    ),
    (
        r"(\.venv/bin/)?streamotion bench ingest",
        NotHere(
            "a benchmark: minutes of full load, run on a quiet machine, never in tests (speed targets live in benchmarks); tests/test_local_units.py checks how results are summarised"
        ),
    ),
    (
        r"streamotion bench chaos --short",
        Ran(
            "tests/test_chaos.py::test_a_short_chaos_run_of_every_fault_loses_and_duplicates_nothing",
            "with --rate 100 and a work directory of the test's own",
        ),
    ),
    (
        r"streamotion bench chaos --lake --rate \d+",
        NotHere(
            "the lake's MERGEs (20 to 40 s a micro-batch on 2 cores) would add at least half a minute to the suite's 200 s chaos run; the lake sink's exactly-once is tested in tests/test_sinks_lake.py, the chaos scoring (the same score() over a second table) in tests/test_chaos.py"
        ),
    ),
    (
        r"streamotion bench chaos --duration \w+( --sample-interval \w+)?( --fault \w+)*",
        NotHere(
            "a soak runs for its duration (minutes to hours); its verdict is tested on synthetic samples, its memory sampling and p99 in the short chaos run, its options in tests/test_chaos.py"
        ),
    ),
    (
        r"streamotion bench chaos( --fault \w+)*( --rate \d+)?",
        NotHere(
            "the full run takes about ten minutes of full load: a benchmark for a quiet machine; the short run (every fault, same code) is tested"
        ),
    ),
    (
        r"streamotion model train --arch linear --multi-label( --taxonomy original)?",
        Ran(
            "tests/test_linear_model.py::test_training_writes_a_linear_model_dir_without_pickle",
            "the CLI command with a GoEmotions sample (--limit) and an output folder, so the test stays short",
        ),
    ),
    (
        r"streamotion model train --taxonomy (original|ekman) .*",
        NotHere(
            "the quality recipe takes about an hour of CPU; tests/test_model.py trains with the same code on a small sample"
        ),
    ),
    (
        r"kubectl apply --server-side --force-conflicts -f charts/streamotion/crds/",
        Ran(
            CONTROL_PLANE,
            "the dev control plane installs the CRD exactly this way (streamotion.dev.controlplane.install_crds)",
        ),
    ),
    (
        r"streamotion migrate-storage",
        Ran(
            CONVERSION,
            "with --kubeconfig of the test's own API server, after objects were stored as v1alpha1 and the v1alpha2 CRD applied",
        ),
    ),
    (
        r"kubectl get crd streampipelines\.streamotion\.io -o jsonpath='\{\.status\.storedVersions\}'",
        Ran(CONVERSION, "before and after the migration"),
    ),
    (
        r"helm dependency build charts/streamotion",
        NotHere(
            "fetches the operator charts from their repositories; the tests have no internet and use stand-ins with the pinned names and versions (tests/test_chart.py)"
        ),
    ),
    (
        r"helm upgrade streamotion charts/streamotion -n streamotion -f charts/streamotion/values-kind\.yaml --wait",
        Ran(UPGRADE, STANDIN),
    ),
    (r"helm uninstall streamotion -n streamotion --wait", Ran(UPGRADE, STANDIN)),
    (
        r"kubectl delete streampipelines --all -A --wait",
        Ran(
            "tests/test_operator_delete.py::test_uninstall_in_the_documented_order_leaves_no_namespace_stuck",
            "with -n NAMESPACE (other tests' pipelines share the control plane); a stand-in for Strimzi's topic operator holds the topics' finalizer",
        ),
    ),
    (
        r"kubectl get kafkatopics -A -l app\.kubernetes\.io/managed-by=streamotion-operator",
        Ran(
            "tests/test_operator_delete.py::test_uninstall_in_the_documented_order_leaves_no_namespace_stuck",
            "the test lists the pipeline's KafkaTopics by label and finds none before deleting the kafka namespace",
        ),
    ),
    (
        r"kubectl -n streamotion delete cluster streamotion-pg",
        NotHere(
            "a plain delete of the hook-created Cluster; tests/test_chart.py::test_install_upgrade_uninstall asserts that `helm uninstall` leaves it, which is why this step is there"
        ),
    ),
    (
        r"kubectl delete -f charts/streamotion/crds/",
        NotHere("an optional plain delete of the CRD (and with it every StreamPipeline) on a real cluster"),
    ),
    (r"make up", NotHere(DOCKER)),
    (r"make down", NotHere(DOCKER)),
    (
        r"make images .*",
        NotHere(
            "needs Docker; tests/test_images.py lints the Dockerfiles (hadolint) and checks their users, bases and extras"
        ),
    ),
    (r"PROJECT=my-project REGION=europe-west1 CLUSTER=streamotion", NotHere(GCP)),
    (r"(gcloud|bq) .*", NotHere(GCP)),
    (
        r"helm upgrade --install streamotion charts/streamotion -n streamotion --create-namespace .* -f charts/streamotion/values-gke\.yaml .*",
        NotHere(GCP + "; tests/test_chart.py renders and dry-runs the chart with values-gke.yaml"),
    ),
]

# Run verbatim by test_quick_documented_commands_run_as_shown (each takes seconds, needs no server).
QUICK_COMMANDS = (
    "streamotion render examples/full.yaml -n team-a",
    "streamotion dashboards check",
    "streamotion docs check",
)


def _entry(command: str) -> Ran | NotHere | None:
    for pattern, entry in COMMANDS:
        if re.fullmatch(pattern, command):
            return entry
    return None


def test_every_documented_command_is_run_by_a_test_or_says_why_not():
    shown = documented_commands(ROOT)
    assert len(shown) > 40
    missing = [f"{c.where}: {c.text}" for c in shown if _entry(c.text) is None]
    assert missing == [], "add each to COMMANDS in tests/test_docs.py: the test that runs it, or why none can"
    used = {pattern for pattern, _ in COMMANDS if any(re.fullmatch(pattern, c.text) for c in shown)}
    assert used == {pattern for pattern, _ in COMMANDS}, "COMMANDS lists commands the docs no longer show"


def _test_functions(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {n.name for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}


def test_every_command_entry_names_a_test_that_exists():
    for pattern, entry in COMMANDS:
        if isinstance(entry, NotHere):
            assert len(entry.reason) > 20, pattern
            continue
        file, name = entry.test.split("::")
        assert name.startswith("test_") and name in _test_functions(ROOT / file), f"{pattern}: {entry.test}"
    quick = {
        c.text.removeprefix(".venv/bin/") for c in documented_commands(ROOT) if _entry(c.text) == Ran(QUICK)
    }
    assert quick == set(QUICK_COMMANDS)


@pytest.mark.parametrize("command", QUICK_COMMANDS)
def test_quick_documented_commands_run_as_shown(command):
    args = shlex.split(command)
    assert args[0] == "streamotion"
    result = subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
