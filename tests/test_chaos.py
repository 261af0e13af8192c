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
