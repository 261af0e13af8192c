"""Kafka client security from the environment: one place every Kafka client is configured from.

The operator (and ``streamotion run --local --secure``) sets the env contract below in each producer
pod and in the Spark driver and executors; :func:`confluent_config` turns it into confluent-kafka
(librdkafka) settings, :func:`spark_kafka_options` into the Spark Kafka source and sink's ``kafka.*``
options (Java client settings), :class:`CredentialWatch` tells a long-running client that its mounted
credentials changed (librdkafka reads PEM files only when it creates the client).

    STREAMOTION_KAFKA_SECURITY   plaintext (default) | tls | scram-sha-512
    STREAMOTION_KAFKA_CA         the cluster CA certificate (PEM; tls and scram-sha-512)
    STREAMOTION_KAFKA_CERT       the client certificate (PEM; tls)
    STREAMOTION_KAFKA_KEY        its private key (PEM, unencrypted PKCS#8 as Strimzi writes it; tls)
    STREAMOTION_KAFKA_USERNAME   the SCRAM user (scram-sha-512)
    STREAMOTION_KAFKA_PASSWORD   its password (scram-sha-512), or
    STREAMOTION_KAFKA_PASSWORD_FILE  a file holding it (a mounted Secret: re-read on rotation)
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MODES = ("plaintext", "tls", "scram-sha-512")
ENV = "STREAMOTION_KAFKA_"


class KafkaSecurityError(ValueError):
    """The security environment is incomplete or names files that cannot be read."""


@dataclass(frozen=True)
class KafkaSecurity:
    mode: str = "plaintext"
    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    username: str | None = None
    password: str | None = None
    password_file: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> KafkaSecurity:
        """Read and check the env contract (a clear error naming the missing variable or file)."""
        env = os.environ if env is None else env

        def get(name: str) -> str | None:
            return env.get(ENV + name) or None

        mode = (get("SECURITY") or "plaintext").strip().lower()
        if mode not in MODES:
            raise KafkaSecurityError(f"{ENV}SECURITY={mode!r}: expected one of {', '.join(MODES)}")
        sec = cls(
            mode,
            get("CA"),
            get("CERT"),
            get("KEY"),
            get("USERNAME"),
            get("PASSWORD"),
            get("PASSWORD_FILE"),
        )
        if mode == "plaintext":
            return sec
        need = ["CA"] + (["CERT", "KEY"] if mode == "tls" else ["USERNAME"])
        missing = [ENV + n for n in need if not get(n)]
        if mode == "scram-sha-512" and not (sec.password or sec.password_file):
            missing.append(f"{ENV}PASSWORD (or {ENV}PASSWORD_FILE)")
        if missing:
            raise KafkaSecurityError(f"{ENV}SECURITY={mode} needs {', '.join(missing)}")
        for name, path in (
            ("CA", sec.ca),
            ("CERT", sec.cert),
            ("KEY", sec.key),
            ("PASSWORD_FILE", sec.password_file),
        ):
            if path and not os.access(path, os.R_OK):
                raise KafkaSecurityError(f"{ENV}{name}={path}: not a readable file")
        return sec

    @property
    def protocol(self) -> str:
        """Kafka's security.protocol: SCRAM runs over TLS (SASL_SSL), never in clear text."""
        return {"plaintext": "PLAINTEXT", "tls": "SSL", "scram-sha-512": "SASL_SSL"}[self.mode]

    def secret(self) -> str:
        """The SCRAM password (read from the file each time when it is given as one)."""
        if self.password_file:
            return Path(self.password_file).read_text().strip()
        return self.password or ""

    def files(self) -> list[str]:
        """The credential files a client reads (watched for rotation)."""
        return [f for f in (self.ca, self.cert, self.key, self.password_file) if f]


def confluent_config(bootstrap: str | None = None, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """confluent-kafka settings for the environment's security (plus ``bootstrap.servers`` if given)."""
    sec = KafkaSecurity.from_env(env)
    conf: dict[str, Any] = {} if bootstrap is None else {"bootstrap.servers": bootstrap}
    if sec.mode == "plaintext":
        return conf
    conf["security.protocol"] = sec.protocol
    conf["ssl.ca.location"] = sec.ca
    if sec.mode == "tls":
        conf["ssl.certificate.location"] = sec.cert
        conf["ssl.key.location"] = sec.key
    else:
        conf["sasl.mechanism"] = "SCRAM-SHA-512"
        conf["sasl.username"] = sec.username
        conf["sasl.password"] = sec.secret()
    return conf


def _jaas_quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def java_client_properties(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """Kafka Java client settings for the environment's security: the PEM truststore by location (the
    CA file), the client key and certificate as a PEM keystore given inline (``ssl.keystore.key`` and
    ``ssl.keystore.certificate.chain``, both PASSWORD-typed in apache/kafka SslConfigs, so clients log
    them hidden: a ``ssl.keystore.location`` PEM file must hold the key and the chain together, which
    Strimzi's Secret does not have); SCRAM: ``sasl.jaas.config``. Used by the Spark Kafka source and
    sink (:func:`spark_kafka_options`) and the local Kafka Connect worker (streamotion.dev.connect)."""
    sec = KafkaSecurity.from_env(env)
    if sec.mode == "plaintext":
        return {}
    props = {
        "security.protocol": sec.protocol,
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": str(sec.ca),
    }
    if sec.mode == "tls":
        props["ssl.keystore.type"] = "PEM"
        props["ssl.keystore.key"] = Path(str(sec.key)).read_text()
        props["ssl.keystore.certificate.chain"] = Path(str(sec.cert)).read_text()
    else:
        props["sasl.mechanism"] = "SCRAM-SHA-512"
        props["sasl.jaas.config"] = (
            "org.apache.kafka.common.security.scram.ScramLoginModule required "
            f"username={_jaas_quote(str(sec.username))} password={_jaas_quote(sec.secret())};"
        )
    return props


def spark_kafka_options(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The Spark Kafka source/sink ``kafka.*`` options: :func:`java_client_properties` prefixed. The
    same CA path is mounted on the driver and every executor; Spark redacts ``sasl.jaas.config`` in its
    logs (KafkaRedactionUtil)."""
    return {f"kafka.{k}": v for k, v in java_client_properties(env).items()}


def security_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The STREAMOTION_KAFKA_* security variables of ``env`` (to pass on to a child process)."""
    env = os.environ if env is None else env
    return {k: v for k, v in env.items() if k.startswith(ENV) and k != ENV + "BOOTSTRAP"}


class CredentialWatch:
    """Whether the credential files changed since the last look (content hash, checked at most every
    ``interval`` seconds): a long-running librdkafka client recreates itself when they did."""

    def __init__(self, env: Mapping[str, str] | None = None, interval: float = 2.0) -> None:
        self.files = KafkaSecurity.from_env(env).files()
        self.interval = interval
        self._checked = 0.0
        self._digest = self._hash()

    def _hash(self) -> str:
        h = hashlib.sha256()
        for f in self.files:
            try:
                h.update(Path(f).read_bytes())
            except OSError:
                h.update(b"<unreadable>")  # mid-rotation: compared again at the next look
            h.update(b"\0")
        return h.hexdigest()

    def changed(self, now: float) -> str | None:
        """The files' new digest when they changed since the last :meth:`commit` (looked at most every
        ``interval`` seconds), else None. The caller recreates its client, then commits the digest; a
        failed recreation (a key and certificate caught mid-rotation) is tried again at the next look."""
        if not self.files or now - self._checked < self.interval:
            return None
        self._checked = now
        digest = self._hash()
        return None if digest == self._digest else digest

    def commit(self, digest: str) -> None:
        self._digest = digest
