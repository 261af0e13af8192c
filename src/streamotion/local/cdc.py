"""The cdc sources of ``streamotion run --local``: Kafka Connect with Debezium's PostgreSQL connector,
reading the run's own PostgreSQL (``wal_level=logical``).

Each cdc source's database is created on that server when missing, and each captured table that
does not exist yet is created with the mapped columns (id ``bigserial`` primary key, text, a
``timestamptz`` time defaulting to now(), the optional columns as text): insert rows with ``psql``
and they flow through the pipeline. The connector configuration is the cluster's
(:func:`streamotion.cdc.connector_config`), with this server's address and login.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from streamotion import cdc
from streamotion.api.models import CdcTable, StreamPipeline


def table_ddl(t: CdcTable) -> str:
    schema, table = t.name.split(".", 1)
    cols = [f'"{t.id_column}" bigserial PRIMARY KEY', f'"{t.text_column}" text']
    cols.append(f'"{t.time_column}" timestamptz NOT NULL DEFAULT now()')
    for extra in (t.author_column, t.language_column, t.channel_column):
        if extra and extra not in (t.id_column, t.text_column, t.time_column):
            cols.append(f'"{extra}" text')
    return f'CREATE SCHEMA IF NOT EXISTS "{schema}"; CREATE TABLE IF NOT EXISTS "{schema}"."{table}" ({", ".join(cols)})'


def prepare_database(dsn: str, database: str, tables: list[CdcTable]) -> list[str]:
    """Create ``database`` and the missing ``tables`` on the server of ``dsn``; returns what it created."""
    import psycopg

    created = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone() is None:
            conn.execute(f'CREATE DATABASE "{database}"')
            created.append(f"database {database}")
    target = urlsplit(dsn)._replace(path=f"/{database}").geturl()
    with psycopg.connect(target, autocommit=True) as conn:
        for t in tables:
            exists = conn.execute("SELECT to_regclass(%s)", (t.name,)).fetchone()[0]
            if exists is None:
                conn.execute(table_ddl(t))
                created.append(f"table {database}.{t.name}")
    return created


def connectors(p: StreamPipeline, dsn: str, say: Callable[[str], None] = print):
    """Prepare each cdc source's database and tables on the server of ``dsn``; returns (connector
    name -> Debezium configuration with that server's address and login, notes for the summary)."""
    url = urlsplit(dsn)
    notes: list[str] = []
    out = {}
    for s in p.spec.sources:
        if s.cdc is None or s.replicas == 0:
            continue
        created = prepare_database(dsn, s.cdc.database, s.cdc.tables)
        if created:
            notes.append(f"cdc source {s.name}: created {', '.join(created)} (empty) on the run's PostgreSQL")
        out[cdc.connector_name(p, s.name)] = cdc.connector_config(
            p,
            s,
            user=url.username or "postgres",
            password=url.password or "unused",  # the run's server trusts local connections
            host=url.hostname,
            port=url.port or 5432,
        )
        target = url._replace(path=f"/{s.cdc.database}").geturl()
        tables = ", ".join(t.name for t in s.cdc.tables)
        say(f"cdc source {s.name}: insert rows with  psql {target}  into {tables}")
    return out, notes


def connect_security(kafka, say: Callable[[str], None] = print) -> dict[str, str]:
    """``--secure``: Kafka Connect's identity on the run's secure broker (a certificate, and the ACLs
    of a standalone worker: streamotion.security.acls.connect_identity); returns its STREAMOTION_KAFKA_*
    environment for :func:`start`."""
    from streamotion.security.acls import connect_identity

    ident = connect_identity(distributed=False)
    kafka.allow(ident.principal("tls"), ident.acls)
    say(f"kafka: connect is {ident.principal('tls')}")
    return kafka.client_env(kafka.issue(ident.user))


def start(
    p: StreamPipeline,
    dsn: str,
    bootstrap: str,
    workdir: Path,
    say: Callable[[str], None] = print,
    security: dict[str, str] | None = None,
):
    """Prepare the databases, start Kafka Connect with one connector per cdc source and wait until
    they run; returns (the :class:`~streamotion.dev.connect.KafkaConnect`, notes for the summary).
    ``security``: the worker's STREAMOTION_KAFKA_* environment on a secure broker (``--secure``)."""
    from streamotion.dev.connect import KafkaConnect

    configs, notes = connectors(p, dsn, say)
    connect = KafkaConnect(bootstrap, configs, workdir=workdir, log=say, security=security)
    connect.start()
    for name in configs:
        connect.wait_running(name)
    say(f"connect: {connect.url}, connectors {', '.join(configs)} RUNNING")
    return connect, notes
