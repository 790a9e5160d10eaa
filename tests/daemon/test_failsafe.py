"""The failsafe policy without a kernel: SSH and the default metrics port reachable."""

from __future__ import annotations

from appliance.daemon.failsafe import DEFAULT_METRICS_PORT, failsafe_document
from appliance.model.profile import MetricsSpec


def test_the_default_metrics_port_is_the_one_of_the_default_listen_address() -> None:
    assert MetricsSpec.listen.endswith(f":{DEFAULT_METRICS_PORT}")
    assert MetricsSpec().port == DEFAULT_METRICS_PORT


def test_ssh_and_the_metrics_port_are_open_and_without_a_metrics_port_ssh_alone() -> None:
    (rule,) = failsafe_document()["rules"]
    assert rule["dport"] == [22, DEFAULT_METRICS_PORT]
    (rule,) = failsafe_document(None)["rules"]
    assert rule["dport"] == [22]
