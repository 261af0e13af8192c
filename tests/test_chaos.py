"""``streamotion bench chaos``: the scoring of a run (pure), and a short run of every fault against
real servers (three Kafka brokers, the job on local-cluster, two model replicas, PostgreSQL, HTTP ingest)."""

from __future__ import annotations

import json

import pytest
from streamotion_jobs.chaos import FAULTS, score


def test_score_counts_lost_duplicated_dead_letters_lag_and_recovery_per_window():
    acks = {"a": 1.0, "b": 2.0, "c": 11.0, "d": 12.0, "e": 13.0}
    # a stored twice, b lost, c d e stored; commits at 5/s from t=14 on
    stored = [("a", 3.0), ("a", 3.5), ("c", 14.0), ("d", 14.0), ("e", 14.1)]
    stored += [(f"x{i}", 14.0 + i / 10) for i in range(60)]
    windows = [("one", 0.0, 10.0), ("two", 10.0, 20.0)]
    samples = [(5.0, 2, 0), (12.0, 3, 4), (15.0, 8, 1)]
    out = score(windows, acks, stored, dead=[1.5, 12.5, 30.0], samples=samples, rate=10.0, aggregate_excess=0)
    one, two, total = out
    assert (one["acked_events"], one["lost"], one["duplicated"], one["dead_lettered"]) == (2, 1, 1, 1)
    # nothing was acknowledged before window one: recovered once 5 s of commits reach 80% of the
    # load (10/s): [13, 18) holds 43 commits
    assert one["recovery_s"] == 18.0
    assert (two["acked_events"], two["lost"], two["duplicated"], two["max_lag"]) == (3, 0, 0, 4)
    assert two["recovery_s"] is None  # b, acknowledged before window two, never arrives
    assert total["lost"] == 1 and total["duplicated"] == 1 and total["dead_lettered"] == 3
    # without the lost event, window two recovers once everything before it is stored and 5 s of
    # commits reach 80% of the load: at 18 s, 8 s after the fault
    acks.pop("b")
    two = score(windows, acks, stored, [], samples, 10.0, 0)[1]
    assert two["recovery_s"] == 8.0
    # aggregates counting more than the stored events are duplicates too
    assert score(windows, acks, stored, [], samples, 10.0, aggregate_excess=7)[-1]["duplicated"] == 8


@pytest.mark.timeout(900)
def test_a_short_chaos_run_of_every_fault_loses_and_duplicates_nothing(tmp_path, monkeypatch):
    """Every fault once, 20 s apart, with the pipeline's alert rules in a real Prometheus (Debian's
    2.42: ``/api/v1/alerts`` lists active alerts as ``pending`` until their ``for:`` elapsed, then
    ``firing``; prometheus/prometheus v2.42.0 docs/querying/api.md "Alerts",
    docs/configuration/alerting_rules.md) and Ray Serve's own metrics (ray-project/ray 2.60.0
    python/ray/serve/_private/replica.py ``serve_deployment_replica_starts``,
    request_ingress_metrics.py ``serve_num_http_error_requests``, exported as ``ray_serve_*``)."""
    from typer.testing import CliRunner

    from streamotion.cli import app

    monkeypatch.setenv("STREAMOTION_BENCH_DIR", str(tmp_path / "results"))
    result = CliRunner().invoke(
        app, ["bench", "chaos", "--short", "--rate", "100", "--workdir", str(tmp_path / "run")]
    )
    assert result.exit_code == 0, result.output[-3000:]
    doc = json.loads(result.output.strip().splitlines()[-1])
    assert doc["benchmark"] == "chaos"
    # saved where the environment says, read when written: never over the repository's bench/results
    assert json.loads((tmp_path / "results" / "chaos.json").read_text())["date"] == doc["date"]
    faults = {row["fault"]: row for row in doc["faults"]}
    assert set(faults) == {*FAULTS, "total"}
    for name, row in faults.items():
        assert row["acked_events"] > 0, name
        assert row["lost"] == 0, (name, row, doc["actions"])
        assert row["duplicated"] == 0, (name, row)
    assert doc["actions"]["postgres_restart_in_commit"].startswith("PostgreSQL immediate shutdown")
    # the pipeline's alert rules, as the operator ships them, evaluated by a real Prometheus during the run
    assert doc["config"]["alerts"] is True
    for name in FAULTS:
        row = faults[name]
        assert isinstance(row["alerts"], list) and set(row["metrics"]) >= {"job_sink_errors", "model_errors"}
        # every rule waits 10 minutes or more (`for:`): a 20 s fault never pages anyone
        assert "firing" not in row["alert_states"].values(), (name, row["alert_states"])
        # a busy HTTP source is not silent (before ingest counted HTTP payloads, it was pending in every
        # window; the first may still see the seconds before the load's first request)
        if name != FAULTS[0]:
            assert "StreamotionSourceSilent" not in row["alerts"], (name, row["alert_states"])
    # what the reliability page says moves: the producers' delivery latency while a leader is gone
    # (p99 0.7 s and 7.5 s in two runs, no other window above 0.4 s),
    # the job's sink errors while PostgreSQL is down
    delivery = {name: faults[name]["metrics"]["producer_delivery_p99_s"] for name in FAULTS}
    assert delivery["broker_leader_kill"] > max(
        v or 0 for k, v in delivery.items() if k != "broker_leader_kill"
    ), delivery
    assert faults["postgres_restart_in_commit"]["metrics"]["job_sink_errors"] >= 1, faults[
        "postgres_restart_in_commit"
    ]
    # a replica crash: Ray Serve's metrics (one series per replica) are there to show it
    replica = faults["model_replica_kill"]["metrics"]
    assert replica["serve_replicas_seen"] >= 2 and replica["serve_http_errors"] is not None, replica
    # ... and the model service's scrape target down while it is stopped (a stall, not a crash)
    assert faults["model_stall"]["metrics"]["model_scrape_up_min"] == 0, faults["model_stall"]
    # memory of every process of the topology, per role (judged only in a soak)
    roles = doc["memory"]["roles"]
    wanted = {"broker_1", "broker_2", "broker_3", "spark_driver", "spark_executors", "spark_python_workers"}
    wanted |= {"model_replica_1", "model_replica_2", "model_ray", "postgresql", "ingest"}
    assert wanted <= set(roles), sorted(roles)
    assert all(roles[r]["rss_mb_start"] > 5 and roles[r]["judged"] for r in wanted), roles
    assert doc["memory"]["p99_first_s"] > 0 and doc["memory"]["p99_last_s"] > 0


def _mem(t: float, **roles: float) -> tuple[float, dict[str, float]]:
    return (t, roles)


def test_soak_verdict_ignores_warm_up_and_fails_on_growth_over_20_percent_of_a_judged_role():
    from streamotion_jobs.chaos_watch import score_soak

    # 20 samples: the first two (10%) are warm-up (the JVMs filling their heaps), then flat
    flat = [_mem(0, broker_1=100, spark_executors=200), _mem(1, broker_1=300, spark_executors=400)]
    flat += [
        _mem(t, broker_1=500 + t % 3, spark_executors=800, load_generator=100 + 50 * t) for t in range(2, 20)
    ]
    ok = score_soak(flat, p99_first_s=3.0, p99_last_s=3.2, trigger_s=2.0)
    assert ok["failed"] == [] and ok["warmup_samples"] == 2 and ok["samples"] == 20
    assert ok["roles"]["broker_1"]["rss_mb_start"] == 501.0  # median of the first three after warm-up
    assert abs(ok["roles"]["broker_1"]["growth_pct"]) < 1
    # the load generator keeps every acknowledged id by design: reported, never judged
    assert ok["roles"]["load_generator"]["growth_pct"] > 100 and not ok["roles"]["load_generator"]["judged"]
    # an executor growing 25% after warm-up fails the soak; one noisy sample at the end does not
    leak = [(t, {**m, "spark_executors": 800 * (1 + 0.25 * (t - 2) / 17)}) for t, m in flat]
    bad = score_soak(leak, 3.0, 3.2, 2.0)
    assert bad["roles"]["spark_executors"]["growth_pct"] > 20
    assert len(bad["failed"]) == 1 and bad["failed"][0].startswith("memory: spark_executors grew")
    noisy = [*flat[:-1], (19, {**flat[-1][1], "spark_executors": 2000})]
    assert score_soak(noisy, 3.0, 3.2, 2.0)["failed"] == []
    # 19% is within the limit
    edge = [(t, {**m, "spark_executors": 800 * (1 + 0.19 * (t - 2) / 17)}) for t, m in flat]
    assert score_soak(edge, 3.0, 3.2, 2.0)["failed"] == []
    # too few samples to judge is a failure, not a pass
    assert "too few" in score_soak(flat[:2], 3.0, 3.2, 2.0)["failed"][0]


def test_soak_verdict_p99_drift_needs_both_20_percent_and_one_trigger_interval():
    from streamotion_jobs.chaos_watch import post_warmup_span, score_soak

    flat = [_mem(t, postgresql=100) for t in range(20)]
    assert score_soak(flat, 2.0, 2.9, trigger_s=2.0)["p99_drift"] is False  # +45%, but < one trigger
    assert score_soak(flat, 20.0, 23.0, trigger_s=2.0)["p99_drift"] is False  # +3 s, but only 15%
    drift = score_soak(flat, 3.0, 5.5, trigger_s=2.0)
    assert drift["p99_drift"] is True and drift["failed"][0].startswith("latency: p99 drifted")
    assert "no events" in score_soak(flat, None, 3.0, 2.0)["failed"][0]
    # thirds of the load after its first 10%
    assert post_warmup_span(0.0, 100.0) == [10.0, 40.0, 70.0, 100.0]


def test_roles_alerts_in_windows_and_the_soak_schedule():
    from streamotion_jobs.chaos import _soak_schedule
    from streamotion_jobs.chaos_watch import alerts_in, role_of

    brokers = {"broker_1": "/w/kafka/node-0/server.properties"}
    cases = {
        "java -Xmx256m kafka.Kafka /w/kafka/node-0/server.properties": "broker_1",
        "java -cp /x/postgresql-42.jar org.apache.spark.executor.CoarseGrainedExecutorBackend": "spark_executors",
        "java -cp /x/postgresql-42.jar org.apache.spark.deploy.SparkSubmit pyspark-shell": "spark_driver",
        "python -m streamotion_jobs.main --pipeline /w/pipeline.yaml": "spark_driver",
        "python -m pyspark.daemon": "spark_python_workers",
        "ray::ServeReplica:streamotion:Model": "model_replica",
        "/ray/core/src/ray/raylet/raylet --node": "model_ray",
        "postgres: chaos streamotion 127.0.0.1(5555) idle": "postgresql",
        "python -m streamotion produce --source ingest --pipeline /w/p.yaml": "ingest",
        "/usr/bin/prometheus --config.file=/w/prometheus/prometheus.yml": "prometheus",
    }
    for cmdline, role in cases.items():
        assert role_of(cmdline, brokers) == role, cmdline
    obs = [
        (1.0, {}),
        (2.0, {"A": "pending"}),
        (3.0, {"A": "firing", "B": "pending"}),
        (9.0, {"C": "pending"}),
    ]
    assert alerts_in(obs, 0.0, 2.5) == {"A": "pending"}
    assert alerts_in(obs, 0.0, 5.0) == {"A": "firing", "B": "pending"}
    assert alerts_in(obs, 4.0, 5.0) == {}
    assert _soak_schedule(["x", "y"], 60, 250) == [("x", "x"), ("y", "y"), ("x#2", "x"), ("y#2", "y")]
    assert _soak_schedule([], 60, 250) == []


def test_memory_by_role_reads_the_rss_of_the_runs_processes(monkeypatch):
    """Real processes carrying the run's variable, found and measured (psutil)."""
    import subprocess
    import sys

    from streamotion_jobs import chaos_watch

    env = {"STREAMOTION_CHAOS_RUN": "t3st", "PATH": "/usr/bin:/bin"}
    code = "import time; b = bytearray(64 * 2**20); time.sleep(30)  # streamotion_jobs.main"
    child = subprocess.Popen([sys.executable, "-c", code], env=env)
    try:
        import time

        for _ in range(50):
            mem = chaos_watch.memory_by_role("STREAMOTION_CHAOS_RUN", "t3st", {})
            if mem.get("spark_driver", 0) > 64:
                break
            time.sleep(0.1)
        assert mem["spark_driver"] > 64 and mem["load_generator"] > 10
        assert set(mem) == {"spark_driver", "load_generator"}  # nothing else carries the variable
        found = list(chaos_watch._processes("STREAMOTION_CHAOS_RUN", "t3st"))
        assert [p for p, _, _ in found] == [child.pid] and found[0][2] > 64 * 2**20
    finally:
        child.kill()
        child.wait()


def test_soak_options_are_checked_before_anything_starts():
    from typer.testing import CliRunner

    from streamotion.cli import app

    bad = CliRunner().invoke(app, ["bench", "chaos", "--duration", "ten minutes"])
    assert bad.exit_code == 2 and "not a duration" in bad.output
    bad = CliRunner().invoke(app, ["bench", "chaos", "--duration", "1m", "--sample-interval", "0s"])
    assert bad.exit_code == 2 and "sample-interval" in bad.output


def test_a_soak_that_leaks_exits_1_with_its_reasons_and_saves_chaos_soak(tmp_path, monkeypatch):
    """The CLI's verdict (the run itself replaced by its outcome: a real soak takes its duration)."""
    from streamotion_jobs import chaos
    from streamotion_jobs.chaos_watch import score_soak
    from typer.testing import CliRunner

    from streamotion.cli import app

    monkeypatch.setenv("STREAMOTION_BENCH_DIR", str(tmp_path))
    seen = {}

    def outcome(growth: float):
        def run(faults, rate, recover, **kw):
            seen.update(kw, faults=faults)
            samples = [(t, {"postgresql": 100 * (1 + growth * t / 19)}) for t in range(20)]
            row = {"fault": "soak", "acked_events": 10, "lost": 0, "duplicated": 0, "recovery_s": 1.0}
            total = {"fault": "total", "acked_events": 10, "lost": 0, "duplicated": 0}
            return {
                "results": [row, total],
                "actions": {},
                "job_restarts": 0,
                "http_unread_requests": 0,
                "soak": score_soak(samples, 2.0, 2.1, 2.0),
                "alerts_evaluated": True,
            }

        return run

    monkeypatch.setattr(chaos, "run_chaos", outcome(0.5))
    leak = CliRunner().invoke(app, ["bench", "chaos", "--duration", "1h30m", "--sample-interval", "30s"])
    assert leak.exit_code == 1, leak.output[-2000:]
    doc = json.loads((tmp_path / "chaos_soak.json").read_text())
    assert doc["failed"] and doc["failed"][0].startswith("memory: postgresql grew") and doc["ok"] is False
    assert seen["duration_s"] == 5400 and seen["sample_interval_s"] == 30 and seen["faults"] == []
    assert {r["name"] for r in doc["results"]} >= {"soak.postgresql.growth_pct", "soak.p99_first_s"}
    assert not (tmp_path / "chaos.json").exists()  # the fault run's results stay as they are
    monkeypatch.setattr(chaos, "run_chaos", outcome(0.1))
    flat = CliRunner().invoke(app, ["bench", "chaos", "--duration", "10m", "--fault", "executor_kill"])
    assert flat.exit_code == 0, flat.output[-2000:]
    assert json.loads((tmp_path / "chaos_soak.json").read_text())["failed"] == []
    assert seen["faults"] == ["executor_kill"] and seen["sample_interval_s"] == 60
