"""What waiting for a deleted pipeline's topics costs the API server: nothing listed cluster-wide.

The delete handler works from the kopf indexes (the watches' copy of every child): the old one listed
KafkaTopics and ConfigMaps of the whole cluster by label on every pass (every 5 s by default, for up
to ``cleanup_timeout_seconds``). Requests are counted by the API server itself
(``apiserver_request_total``, by verb, resource and scope)."""

from __future__ import annotations

import json

import pytest
from streamotion_operator.builders import KINDS
from streamotion_operator.config import OperatorConfig
from streamotion_operator.controller import PIPELINE_KIND, STRIMZI_TOPIC_FINALIZER
from streamotion_operator.handlers import OperatorThread
from streamotion_operator.kube import Kube
from streamotion_operator.testing import api_requests, condition, get_pipeline, requests_between, wait_for

from tests.test_operator_delete import FakeTopicOperator, _setup, _topics

pytestmark = pytest.mark.timeout(180)


def test_the_wait_for_cleanup_lists_nothing_cluster_wide(control_plane, namespace, tmp_path):
    boards = tmp_path / "dashboards"
    boards.mkdir()
    (boards / "overview.json").write_text(json.dumps({"uid": "o", "title": "O"}))
    cfg = OperatorConfig(
        resync_seconds=30, dashboards_dir=str(boards), cleanup_timeout_seconds=60, cleanup_poll_seconds=0.5
    )
    op = OperatorThread(control_plane.kubeconfig_path, cfg)
    # kopf lists again each time a watch restarts (server_timeout): keep that out of the measurement
    op.settings.watching.server_timeout, op.settings.watching.client_timeout = 600, 660
    kube = Kube.from_kubeconfig(control_plane.kubeconfig_path)
    name = "quiet"
    with op:
        kafka_ns = _setup(control_plane, kube, namespace, name)
        with FakeTopicOperator(kube, kafka_ns, delay=5):  # Strimzi deletes the topics 5 s after asked
            wait_for(
                lambda: all(
                    STRIMZI_TOPIC_FINALIZER in (t["metadata"].get("finalizers") or [])
                    for t in _topics(kube, namespace, name).values()
                ),
                30,
                what="Strimzi's finalizer on the topics",
            )
            before = api_requests(kube, by_scope=True)
            kube.delete(PIPELINE_KIND, namespace, name)
            waited = wait_for(
                lambda: (
                    condition(get_pipeline(kube, namespace, name), "Ready").get("reason")
                    == "WaitingForCleanup"
                ),
                10,
                what="WaitingForCleanup",
            )
            wait_for(lambda: get_pipeline(kube, namespace, name) is None, 40, what="the pipeline to go")
            delta = requests_between(before, api_requests(kube, by_scope=True))
        assert waited
        assert not kube.list(KINDS["KafkaTopic"], kafka_ns), "the pipeline went before its topics"
    kube.close()
    cluster_lists = {k: v for k, v in delta.items() if k[0] == "LIST" and k[3] == "cluster"}
    assert cluster_lists == {}, cluster_lists
    assert delta[("DELETE", "kafkatopics", "", "resource")] >= 2  # the two topics, deleted by the handler
