"""The Benchmarks page (docs/benchmarks.md), generated from ``bench/results/*.json``."""

from __future__ import annotations

from pathlib import Path

from streamotion.local.benchall import load_results, summary_sections

HEADER = """# Benchmarks

Generated from `bench/results/*.json` (`streamotion docs generate`) after `streamotion bench all`
rewrote them; `bench/results/SUMMARY.md` holds the same tables. Speed targets live here, never in
timed tests. Compare figures only between runs on the same machine, ideally an idle one.

| benchmark | what it measures |
|---|---|
| `streamotion bench ingest` | replay and HTTP events/s into a real Kafka (batches of 100, single-event requests), p99 ack latency |
| `streamotion bench model` | raw batched inference vs the Ray Serve endpoint vs one request per text (the ancestors' pattern), the speed-up over BERT-base, and the model's dev macro-F1 (see [Model](model.md)) |
| `streamotion bench pipeline` | end-to-end events/s at saturation, p50/p99 latency from event time to the committed row at half that load, raw model throughput and one HTTP call per row (the ancestors' pattern), in the same run |
| `streamotion bench operator` | apply → all children for 1 and 50 pipelines, the steady-state reconcile rate and the operator's memory |

`streamotion bench NAME` prints one JSON object as its last line (`{"benchmark", "machine", "date",
"results": [{"name", "value", "unit"}], ...}`) and saves it as `bench/results/NAME.json`
(`streamotion.bench.emit`); `streamotion bench all` runs every registered benchmark, each in its own
process (`--only NAME` runs some; `--summary-only` rewrites the summary from the saved results).
A benchmark states the limit of each ratio (`targets`) and what it compares with (`ancestor`);
`bench/README.md` shows how. The model's quality limits are defined on thresholds tuned on dev;
the `*_heldout_thresholds` figures (tuned on one half of dev, scored on the other) are what to expect
on comments the thresholds never saw ([Model](model.md)).

"""


def benchmarks_page(root: Path) -> str:
    docs = load_results(root / "bench" / "results")
    return HEADER + "\n".join(summary_sections(docs, {})).rstrip("\n") + "\n"
