"""Starting the operator: kopf settings and the `run_operator` entry point the CLI calls.

Settings and why:
- the diff base in a typed status field, progress in annotations under our group
  (`diffbase`: one PATCH per create instead of two); never kopf's default `status.kopf`,
  which would need `x-kubernetes-preserve-unknown-fields` in an otherwise typed schema;
- no finalizer (see `handlers`): the finalizer name is still set to the one earlier versions
  added (`LEGACY_FINALIZER`), because kopf removes only its configured finalizer from objects
  that no longer need one, and an upgrade must not leave syncs undeletable;
- with peering, the resync thread (not a kopf handler, so not paused by kopf) stands by on
  the same rule kopf uses (`peering.PeeringGate`);
- watch timeouts: without a server-side timeout a watch stream can go silent for good behind
  some load balancers (see kopf's docs on `settings.watching.server_timeout`); ours makes the
  API server end every watch after a few minutes and kopf re-lists;
- events only from explicit calls (Created/Updated/Deleted children, problems, Ready
  transitions), never from log lines (`posting.loggers` off: a retry loop would otherwise
  post one event per attempt); kopf's own `info`-level posting is off too;
- namespace-scoped mode: cluster scanning off. kopf otherwise lists and watches namespaces
  and CRDs cluster-wide even when told exact namespace names; without a ClusterRole for that
  it retries the 403s for a minute before it falls back to the same behaviour. Our
  namespaces are exact names, and the CRD is installed before the operator (the initial
  discovery of API resources needs no permission);
- peering: with `peering` set, replicas elect one active operator through kopf's
  (Cluster)KopfPeering object, which must exist (its CRDs come from kopf); the others pause
  until its keep-alive expires. Each process takes a random priority unless one is given,
  since kopf lets equal priorities run side by side.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import random
from collections.abc import Callable, Sequence

import kopf

from airflow_asset_sync.api.spec import GROUP
from airflow_asset_sync.clients.kube import KubeApi, KubeClient
from airflow_asset_sync.controller.config import OperatorConfig
from airflow_asset_sync.controller.diffbase import ProgressAnnotations, StatusDiffBase
from airflow_asset_sync.controller.handlers import MEMO_KEY, Runtime, build_registry
from airflow_asset_sync.controller.peering import PeeringGate, PeeringReader

#: Seconds the API server keeps one watch open; kopf's client gives up a bit later.
WATCH_SERVER_TIMEOUT_SECONDS = 270
WATCH_CLIENT_TIMEOUT_SECONDS = 300
#: Threads for sync handlers: a reconcile is a handful of short API calls.
HANDLER_THREADS = 8
#: The finalizer earlier versions held on every sync; kopf now removes it where it finds it.
LEGACY_FINALIZER = f"{GROUP}/cleanup"
#: Seconds a standby waits after the active operator's last keep-alive before taking over.
PEERING_LIFETIME_SECONDS = 30


def build_settings(
    *, clusterwide: bool, peering: str | None, priority: int | None
) -> kopf.OperatorSettings:
    settings = kopf.OperatorSettings()
    settings.persistence.progress_storage = ProgressAnnotations()
    settings.persistence.diffbase_storage = StatusDiffBase()
    settings.persistence.finalizer = LEGACY_FINALIZER
    settings.watching.server_timeout = WATCH_SERVER_TIMEOUT_SECONDS
    settings.watching.client_timeout = WATCH_CLIENT_TIMEOUT_SECONDS
    settings.posting.loggers = False
    settings.posting.level = logging.WARNING
    settings.posting.reporting_component = "airflow-asset-sync-operator"
    settings.execution.max_workers = HANDLER_THREADS
    settings.scanning.disabled = not clusterwide
    settings.peering.clusterwide = clusterwide
    settings.peering.standalone = peering is None
    settings.peering.mandatory = peering is not None
    settings.peering.stealth = True
    settings.peering.lifetime = PEERING_LIFETIME_SECONDS
    if peering is not None:
        settings.peering.name = peering
    settings.peering.priority = priority if priority is not None else random.randint(1, 2**30)
    return settings


def _active_gate(
    kube_api: KubeApi,
    *,
    peering: str | None,
    namespaces: Sequence[str] | None,
    priority: int,
) -> Callable[[], bool]:
    """Standalone: always active. Peering: `peering.PeeringGate` over the peering objects
    kopf uses (the ClusterKopfPeering, or a KopfPeering in each watched namespace)."""
    if peering is None or not isinstance(kube_api, PeeringReader):
        return lambda: True
    client, name = kube_api, peering
    return PeeringGate(
        read=lambda namespace: client.get_peering(namespace=namespace, name=name),
        namespaces=list(namespaces) if namespaces else [None],
        priority=priority,
    )


def run_operator(
    *,
    namespaces: Sequence[str] | None = None,
    peering: str | None = None,
    priority: int | None = None,
    liveness_port: int | None = None,
    metrics_port: int | None = None,
    config: OperatorConfig | None = None,
    kube_api: KubeApi | None = None,
) -> None:
    """Run the operator until SIGINT/SIGTERM.

    `namespaces`: watch only these (namespace-scoped mode, a Role per namespace suffices);
    None or empty: the whole cluster. `peering`: name of the kopf peering object for several
    replicas (None: standalone). `liveness_port` / `metrics_port` override the config's
    ports (0 disables). `config` defaults to the environment, `kube_api` to in-cluster
    credentials or the kubeconfig.
    """
    config = config if config is not None else OperatorConfig.from_env(os.environ)
    if liveness_port is not None:
        config = dataclasses.replace(config, health_port=liveness_port)
    if metrics_port is not None:
        config = dataclasses.replace(config, metrics_port=metrics_port)
    kube_api = kube_api if kube_api is not None else KubeClient.from_environment()
    clusterwide = not namespaces
    settings = build_settings(clusterwide=clusterwide, peering=peering, priority=priority)
    liveness = f"http://0.0.0.0:{config.health_port}/healthz" if config.health_port else None
    runtime = Runtime(
        kube=kube_api,
        config=config,
        active=_active_gate(
            kube_api,
            peering=peering,
            namespaces=namespaces,
            priority=settings.peering.priority,
        ),
    )
    kopf.run(
        registry=build_registry(config),
        settings=settings,
        clusterwide=clusterwide,
        namespaces=list(namespaces or ()),
        standalone=peering is None,
        peering_name=peering,
        priority=settings.peering.priority,
        liveness_endpoint=liveness,
        memo=kopf.Memo({MEMO_KEY: runtime}),
    )
