"""The API resources the operator manages (core, and those upstream CRDs install), and which
status condition each child component feeds."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Kind:
    """An API resource the operator manages; ``crd`` names the upstream project that installs it."""

    api_version: str
    kind: str
    plural: str
    namespaced: bool = True
    crd: str | None = None
    watched: bool = True
    """False: never listed nor watched (Secrets: the operator reads the few it needs by name)."""
    verbs: tuple[str, ...] | None = None
    """The operator's RBAC verbs on this kind (None: all it uses to manage children)."""

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    @property
    def version(self) -> str:
        return self.api_version.rpartition("/")[2]

    def path(self, namespace: str | None = None, name: str | None = None) -> str:
        base = f"/apis/{self.api_version}" if self.group else f"/api/{self.version}"
        if namespace and self.namespaced:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        return f"{base}/{name}" if name else base

    def describe(self) -> str:
        return f"{self.kind} ({self.api_version})"


KINDS: dict[str, Kind] = {
    k.kind: k
    for k in (
        Kind("v1", "ConfigMap", "configmaps"),
        Kind("v1", "Service", "services"),
        Kind("v1", "ServiceAccount", "serviceaccounts"),
        Kind("v1", "PersistentVolumeClaim", "persistentvolumeclaims"),
        # copies of Kafka credentials; read by name (referenced Secrets, Strimzi's user Secrets and
        # cluster CA certificate), never listed or watched
        Kind("v1", "Secret", "secrets", watched=False, verbs=("get", "create", "patch")),
        Kind("networking.k8s.io/v1", "NetworkPolicy", "networkpolicies"),
        Kind("apps/v1", "Deployment", "deployments"),
        Kind("rbac.authorization.k8s.io/v1", "Role", "roles"),
        Kind("rbac.authorization.k8s.io/v1", "RoleBinding", "rolebindings"),
        Kind("kafka.strimzi.io/v1", "KafkaTopic", "kafkatopics", crd="Strimzi"),
        Kind("kafka.strimzi.io/v1", "KafkaUser", "kafkausers", crd="Strimzi"),
        Kind("kafka.strimzi.io/v1", "KafkaConnector", "kafkaconnectors", crd="Strimzi"),
        Kind("sparkoperator.k8s.io/v1beta2", "SparkApplication", "sparkapplications", crd="spark-operator"),
        Kind("ray.io/v1", "RayService", "rayservices", crd="KubeRay"),
        Kind("monitoring.coreos.com/v1", "PodMonitor", "podmonitors", crd="prometheus-operator"),
        Kind("monitoring.coreos.com/v1", "PrometheusRule", "prometheusrules", crd="prometheus-operator"),
    )
}

# Components, as in the app.kubernetes.io/component label; each maps to one status condition.
COMPONENT_CONDITION = {
    "config": "ProcessingReady",
    "topics": "TopicsReady",
    "producer": "SourcesReady",
    "connector": "SourcesReady",
    "job": "ProcessingReady",
    "model": "ModelReady",
    "monitoring": "DashboardsReady",
    "dashboards": "DashboardsReady",
}
