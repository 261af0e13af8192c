"""Streamotion producers: one process per pipeline source, publishing :class:`streamotion.events.Event`
JSON to the pipeline's raw topic (key ``source:platform:id``) and undecodable payloads to its dead-letter topic.

Entry point: ``streamotion produce --source NAME --pipeline FILE`` (the Kubernetes Deployments run it).
"""

from __future__ import annotations

# Environment variables each source type reads, and the key of the source's Secret each comes from
# (the operator sets them with ``valueFrom.secretKeyRef``). The Secret's name is the source's
# ``*Secret`` field (see SECRET_FIELD).
ENV_FROM_SECRET: dict[str, dict[str, str]] = {
    "reddit": {
        "REDDIT_CLIENT_ID": "client_id",
        "REDDIT_CLIENT_SECRET": "client_secret",
        "REDDIT_USER_AGENT": "user_agent",
    },
    "mastodon": {"MASTODON_ACCESS_TOKEN": "access_token"},
    "bluesky": {},
    "x": {"X_BEARER_TOKEN": "bearer_token"},
    "http": {"INGEST_TOKEN": "token"},
    "replay": {},
    "cdc": {},  # the database credentials are Kafka Connect's (config providers), not the producer's
}

# The field of the source's block (snake_case attribute of the API model) naming that Secret.
SECRET_FIELD: dict[str, str] = {
    "reddit": "credentials_secret",
    "mastodon": "access_token_secret",
    "x": "bearer_token_secret",
    "http": "token_secret",
}

# Not secrets: how the producers find Kafka, and test/dev overrides of platform base URLs.
BOOTSTRAP_ENV = "STREAMOTION_KAFKA_BOOTSTRAP"
KAFKA_NAMESPACE_ENV = "STREAMOTION_KAFKA_NAMESPACE"


def secret_env(source) -> list[tuple[str, str, str]]:
    """``[(env name, Secret name, Secret key)]`` for one API ``Source`` (empty when it needs none)."""
    field = SECRET_FIELD.get(source.type)
    block = getattr(source, source.type, None)
    secret = getattr(block, field, None) if field and block is not None else None
    if not secret:
        return []
    return [(env, secret, key) for env, key in ENV_FROM_SECRET[source.type].items()]
