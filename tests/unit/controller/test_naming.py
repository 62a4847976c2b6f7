"""Child names, labels and env names: the contract between operator and worker."""

from __future__ import annotations

import re

import pytest

from airflow_asset_sync.resources import naming

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def test_short_names_are_readable() -> None:
    assert naming.worker_name("orders") == "orders-worker"
    assert naming.label_value("orders") == "orders"


@pytest.mark.parametrize("length", [55, 56, 57, 63, 64, 100, 253])
def test_long_names_fit_and_stay_unique(length: int) -> None:
    name = "a" * (length - 1) + "b"
    other = "a" * (length - 1) + "c"
    for fn in (naming.worker_name, naming.label_value):
        assert len(fn(name)) <= 63
        assert fn(name) != fn(other)
    assert DNS_LABEL.match(naming.worker_name(name))
    assert LABEL_VALUE.match(naming.label_value(name))
    assert naming.worker_name(name).endswith("-worker")


def test_a_cut_at_a_separator_leaves_no_double_dash() -> None:
    name = "a" * 46 + "-" + "b" * 30  # the cut falls right after the dash
    assert "--" not in naming.worker_name(name)
    assert DNS_LABEL.match(naming.worker_name(name))


def test_labels_follow_the_recommended_set() -> None:
    assert naming.labels("orders") == {
        "app.kubernetes.io/name": "airflow-asset-sync",
        "app.kubernetes.io/instance": "orders",
        "app.kubernetes.io/component": "worker",
        "app.kubernetes.io/managed-by": "airflow-asset-sync-operator",
        "app.kubernetes.io/part-of": "airflow-asset-sync",
    }
    selector = naming.selector_labels("orders")
    assert selector.items() <= naming.labels("orders").items()
    assert "app.kubernetes.io/managed-by" not in selector


def test_owner_reference_points_at_the_sync_as_controller() -> None:
    owner = naming.Owner(name="orders", namespace="data", uid="u-1")
    assert naming.owner_reference(owner) == {
        "apiVersion": "airflow-asset-sync.github.io/v1alpha1",
        "kind": "AirflowAssetSync",
        "name": "orders",
        "uid": "u-1",
        "controller": True,
        "blockOwnerDeletion": True,
    }


def test_credential_env_names_are_deterministic() -> None:
    assert naming.source_credential_env("USERNAME") == "AAS_SOURCE_USERNAME"
    assert naming.source_credential_env("TOKEN") == "AAS_SOURCE_TOKEN"
    assert naming.target_credential_env("v3", "PASSWORD") == "AAS_TARGET_V3_PASSWORD"
    assert naming.target_credential_env("new-prod-2", "TOKEN") == "AAS_TARGET_NEW_PROD_2_TOKEN"
    assert naming.kafka_credential_env("USERNAME") == "AAS_KAFKA_USERNAME"
    assert naming.kafka_credential_env("PASSWORD") == "AAS_KAFKA_PASSWORD"


def test_ca_files_have_fixed_paths() -> None:
    assert naming.source_ca_file() == "/etc/airflow-asset-sync/ca/source/ca.crt"
    assert naming.target_ca_file("v3") == "/etc/airflow-asset-sync/ca/targets/v3/ca.crt"
    assert naming.kafka_ca_file() == "/etc/airflow-asset-sync/ca/kafka/ca.crt"
