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
| `streamotion bench ingest` | replay and HTTP events/s into a real Kafka (batches of 100, single-event requests), p99 ack latency; replay and HTTP batches again on a secure broker (mTLS, ACLs, the producer under its own identity) and their ratio to plaintext (target ≥ 0.8) |
| `streamotion bench model` | raw batched inference vs the Ray Serve endpoint vs one request per text (the ancestors' pattern), the speed-up over BERT-base, and the model's dev macro-F1 (see [Model](model.md)) |
| `streamotion bench pipeline` | end-to-end events/s at saturation, p50/p99 latency from event time to the committed row at half that load, raw model throughput and one HTTP call per row (the ancestors' pattern), in the same run; and the platform's own capacity with the linear model (below) |
| `streamotion bench chaos` | faults injected under load (broker leader, executor, model replica killed; PostgreSQL crashed during a commit; the model service stalled; an HTTP client retrying unread requests): per fault, events lost, duplicated, dead-lettered, recovery time and lag ([Reliability](operations/reliability.md)) |
| `streamotion bench operator` | against a real API server (its own `apiserver_request_total`), 500 pipelines: API requests per pipeline and minute at steady state, reconcile p99 after a child changes, the operator's memory, the same with 5,000 unrelated Deployments and ConfigMaps added; apply → all children for 1 and N pipelines |

`streamotion bench NAME` prints one JSON object as its last line (`{"benchmark", "machine", "date",
"results": [{"name", "value", "unit"}], ...}`) and saves it as `bench/results/NAME.json`
(`streamotion.bench.emit`); `streamotion bench all` runs every registered benchmark, each in its own
process (`--only NAME` runs some; `--summary-only` rewrites the summary from the saved results).
A benchmark states the limit of each ratio (`targets`) and what it compares with (`ancestor`);
`bench/README.md` shows how. The model's quality limits are defined on thresholds tuned on dev;
the `*_heldout_thresholds` figures (tuned on one half of dev, scored on the other) are what to expect
on comments the thresholds never saw ([Model](model.md)).

### The platform's own capacity (`bench pipeline`)

The same job with the [linear model](model.md#linear-model-tf-idf-and-logistic-regression), which the
model service serves far faster than the platform moves events, so the end-to-end figure measures
Kafka, Spark, the job and the sink rather than the model.

| result | what it is |
|---|---|
| `platform_events_per_s` | events already in Kafka (six micro-batches), rows landing in PostgreSQL per second after the first micro-batch, linear model, `maxEventsPerTrigger` 50,000 (`--platform-max-events-per-trigger`) so it does not cap throughput; the transformer's model service is stopped by then; target ≥ 5,000 |
| `lake_events_per_s`, `lake_vs_postgres` | the same with the lake sink (Delta on local disk, aggregates every minute: the default) over twelve micro-batches, until the last aggregate table's commit; target ≥ 0.8 × `platform_events_per_s` |
| `linear_model_service_texts_per_s` | the linear model service alone, called as the job calls it (one client per partition, four chunks of 1,024 texts in flight each) |
| `linear_service_over_platform` | the two above; ≥ 5, or the platform figure measures the model again |
| `raw_linear_model_texts_per_s` | the linear model in-process at its best batch size |
| `platform_p50_latency_s`, `platform_p99_latency_s`, `platform_p99_latency_over_trigger` | event time to commit while producing at half `platform_events_per_s`; target p99 ≤ 3 × trigger |
| `platform_vs_per_row` | against the ancestors' one HTTP call per row |
| `platform_bigquery_emulator_events_per_s` | the platform run with the BigQuery sink on the local emulator (bqemulator, DuckDB-backed: the emulator's speed, not BigQuery's) |

"Raw" (`raw_model_texts_per_s`, the limit `e2e_vs_raw_model` compares with) is the best in-process
configuration of the same model: threads (1, all cores) × batch size (the spec's, 256) × length-bucket
size (8, 32) for a transformer, batch size (256, 1,024, 4,096) for the linear model;
`config.raw_model_config` says which won. Options: `--no-platform`, `--linear-model DIR` (default: the
latest linear model in the cache, else one trained on GoEmotions in the run, about 20 s),
`--platform-events`, `--platform-max-events-per-trigger`, `--linear-texts`, `--no-bigquery`.

"""


def benchmarks_page(root: Path) -> str:
    docs = load_results(root / "bench" / "results")
    return HEADER + "\n".join(summary_sections(docs, {})).rstrip("\n") + "\n"
