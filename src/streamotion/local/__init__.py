"""Run a whole StreamPipeline on one machine: ``streamotion run FILE --local``.

Every part runs from the same component code the cluster runs, as child processes on loopback
with free ports: a Kafka broker (KRaft), one producer per source (``streamotion produce``), the
model service (``streamotion model serve``, Ray Serve), the streaming job (PySpark ``local[*]``),
PostgreSQL (Debian binaries, temporary data directory) and, when configured, the BigQuery emulator.
"""
