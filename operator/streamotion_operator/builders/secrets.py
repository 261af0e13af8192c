"""The Secrets a pipeline's children read (sources' credentials, sinks' logins and keys), so the
controller can report a missing one by the field that names it."""

from __future__ import annotations

from dataclasses import dataclass

from streamotion.api.models import StreamPipeline

from .producers import env_from_secret, source_secret


@dataclass(frozen=True)
class SecretRef:
    """A Secret a child needs, with the keys it reads; ``what`` is the field path that names it."""

    name: str
    keys: tuple[str, ...]
    what: str
    component: str


def secret_refs(p: StreamPipeline) -> list[SecretRef]:
    refs = []
    mapping = env_from_secret()
    for i, s in enumerate(p.spec.sources):
        name = source_secret(s)
        if name:
            field = {
                "reddit": "credentialsSecret",
                "mastodon": "accessTokenSecret",
                "x": "bearerTokenSecret",
                "cdc": "credentialsSecret",
            }
            keys = ("username", "password") if s.type == "cdc" else tuple(mapping.get(s.type, {}).values())
            refs.append(
                SecretRef(
                    name,
                    keys,
                    f"spec.sources[{i}].{s.type}.{field.get(s.type, 'tokenSecret')}",
                    f"source:{s.name}",
                )
            )
    for i, sink in enumerate(p.spec.sinks):
        if sink.postgres:
            refs.append(
                SecretRef(
                    sink.postgres.credentials_secret,
                    ("username", "password"),
                    f"spec.sinks[{i}].postgres.credentialsSecret",
                    f"sink:{i}",
                )
            )
        if sink.bigquery and sink.bigquery.credentials_secret:
            refs.append(
                SecretRef(
                    sink.bigquery.credentials_secret,
                    ("key.json",),
                    f"spec.sinks[{i}].bigquery.credentialsSecret",
                    f"sink:{i}",
                )
            )
    return refs
