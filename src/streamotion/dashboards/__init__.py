"""Dashboards as code: the Grafana dashboards, their queries, and ``streamotion report``.

``queries`` holds every panel query as data (PostgreSQL, BigQuery and PromQL), ``build`` turns
them into Grafana dashboard JSON with the grafana-foundation-sdk (committed under
``grafana/dashboards/``, a test keeps them equal), ``interpolate`` expands Grafana's variables and
macros the way Grafana does (tests and the report run the exact panel queries).
"""
