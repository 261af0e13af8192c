"""spark-submit main file of the streaming job (``streamotion.naming.JOB_MAIN``).

    spark-submit jobs/streamotion_jobs/main.py --pipeline /etc/streamotion/pipeline.yaml
    python -m streamotion_jobs.main --pipeline examples/local.yaml --master 'local[*]' --checkpoint DIR

Settings come from the pipeline spec; addresses and credentials from the environment
(STREAMOTION_KAFKA_BOOTSTRAP, STREAMOTION_MODEL_URL, PGUSER/PGPASSWORD or STREAMOTION_PG_DSN,
GOOGLE_APPLICATION_CREDENTIALS). The driver serves the job's Prometheus metrics (``streamotion_job_*``,
see :mod:`streamotion_jobs.metrics`) on ``--metrics-port`` (default STREAMOTION_METRICS_PORT, else
9108; 0: not served), on all interfaces in a Kubernetes pod and on 127.0.0.1 elsewhere.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from datetime import UTC, datetime


def log(message: str) -> None:
    print(f"{datetime.now(UTC).isoformat(timespec='seconds')} streamotion-job: {message}", flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from streamotion import naming

    parser = argparse.ArgumentParser(prog="streamotion-job", description=__doc__.splitlines()[0])
    parser.add_argument("--pipeline", default=naming.PIPELINE_FILE, help="StreamPipeline YAML file")
    parser.add_argument("--name", default=None, help="pipeline name, when the file holds several")
    parser.add_argument("--checkpoint", default=None, help="checkpoint directory or URI (local runs)")
    parser.add_argument("--master", default=None, help="Spark master (default: from spark-submit)")
    parser.add_argument(
        "--available-now", action="store_true", help="process what is in the topic now, then exit"
    )
    parser.add_argument("--no-dead-letter-topic", action="store_true", help="dead letters to sinks only")
    parser.add_argument(
        "--conf",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra Spark configuration, repeatable (local runs; spark-submit has its own --conf)",
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=int(os.environ.get("STREAMOTION_METRICS_PORT") or naming.METRICS_PORT),
        help="port of the driver's /metrics (0: not served)",
    )
    parser.add_argument(
        "--metrics-host",
        default="0.0.0.0" if os.environ.get("KUBERNETES_SERVICE_HOST") else "127.0.0.1",
        help="address /metrics binds (default: all interfaces in a pod, loopback elsewhere)",
    )
    args = parser.parse_args(argv)
    if bad := [c for c in args.conf if "=" not in c]:
        parser.error(f"--conf wants KEY=VALUE, got {bad[0]!r}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from streamotion.api.validate import load_pipeline
    from streamotion_jobs.config import JobConfig
    from streamotion_jobs.job import StreamingJob
    from streamotion_jobs.metrics import JobMetrics
    from streamotion_jobs.spark import session

    pipeline = load_pipeline(args.pipeline, args.name)
    cfg = JobConfig.from_pipeline(pipeline, checkpoint=args.checkpoint)
    log(
        f"pipeline {pipeline.namespace}/{pipeline.name}: {cfg.topics['raw']} @ {cfg.bootstrap} -> "
        f"model {cfg.model_url} -> {', '.join(s.type for s in pipeline.spec.sinks)}; checkpoint {cfg.checkpoint}"
    )
    metrics = JobMetrics(pipeline.namespace, pipeline.name, log=log)
    if args.metrics_port:
        metrics.serve(args.metrics_port, args.metrics_host)
    from streamotion_jobs.spark import pipeline_conf

    extra = {**pipeline_conf(pipeline), **dict(c.split("=", 1) for c in args.conf)}
    spark = session(f"streamotion-{pipeline.name}", master=args.master, extra=extra)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    job = StreamingJob(cfg, spark, log=log, dead_letter_topic=not args.no_dead_letter_topic, metrics=metrics)
    try:
        job.run(stop=stop, available_now=args.available_now)
    finally:
        spark.stop()
        metrics.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
