"""One kopf processing cycle over our registry and settings, with no API server.

kopf's own `process_resource_causes` decides create / update / resume / nothing from the
body and its diff base, runs our handlers and fills a patch, which the caller inspects
(the unit tests of the finalizer and of where the diff base lives).
"""

from __future__ import annotations

import asyncio
import copy
import logging
from dataclasses import dataclass
from typing import Any, cast

import kopf
from kopf._cogs.structs import bodies, ephemera, patches, references
from kopf._core.engines import indexing, posting
from kopf._core.reactor import inventory, processing

from airflow_asset_sync.api import spec as api
from airflow_asset_sync.controller import entrypoint, handlers
from airflow_asset_sync.controller.config import OperatorConfig
from support.fake_kube import FakeKube

RESOURCE = references.Resource(
    group=api.GROUP,
    version=api.VERSION,
    plural=api.PLURAL,
    namespaced=True,
    subresources=frozenset({"status"}),
)


def raw_sync(**meta: Any) -> dict[str, Any]:
    return {
        "apiVersion": api.API_VERSION,
        "kind": api.KIND,
        "metadata": {"name": "s", "namespace": "ns", "uid": "u1", "generation": 1, **meta},
        "spec": {"source": {"url": "http://a:8080"}, "targets": [{"name": "b", "url": "http://b"}]},
    }


@dataclass
class Cycle:
    #: The object as kopf's patch would leave it (merge part and functions applied).
    after: dict[str, Any]
    #: The merge patch kopf would send (its status part goes to the /status subresource).
    patch: dict[str, Any]
    kube: FakeKube
    #: The Events the handlers posted (kopf's `K8sEvent`s).
    events: list[Any]


async def run_cycle(raw: dict[str, Any], event_type: str | None) -> Cycle:
    config = OperatorConfig(worker_image="w:1")
    settings = entrypoint.build_settings(clusterwide=True, peering=None, priority=1)
    registry = handlers.build_registry(config)
    kube = FakeKube()
    runtime = handlers.Runtime(kube=kube, config=config)
    memo = ephemera.AnyMemo(kopf.Memo({handlers.MEMO_KEY: runtime}))
    memory = inventory.ResourceMemory(memo=memo)
    body = bodies.Body(cast(bodies.RawBody, raw))
    patch = patches.Patch(body=body)
    logger = logging.getLogger("test")
    # What kopf's `kopf.event` posts to: the handlers' Events land in this queue.
    posting.settings_var.set(settings)
    events: posting.K8sEventQueue = asyncio.Queue()
    posting.event_queue_var.set(events)
    posting.event_queue_loop_var.set(asyncio.get_running_loop())
    await processing.process_resource_causes(
        lifecycle=kopf.lifecycles.all_at_once,
        indexers=indexing.OperatorIndexers(),
        registry=registry,
        settings=settings,
        resource=RESOURCE,
        raw_event={"type": event_type, "object": raw},  # type: ignore[typeddict-item]
        body=body,
        patch=patch,
        memory=memory,
        local_logger=logger,  # type: ignore[arg-type]
        event_logger=logger,  # type: ignore[arg-type]
        stream_pressure=None,
        operator_paused=None,
        consistency_time=None,
    )
    after = _merged(copy.deepcopy(raw), dict(patch))
    for fn in patch.fns:  # kopf's finalizer changes: functions over the raw body
        fn(cast(bodies.RawBody, after))
    posted = [events.get_nowait() for _ in range(events.qsize())]
    return Cycle(after=after, patch=copy.deepcopy(dict(patch)), kube=kube, events=posted)


def _merged(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """JSON merge patch (RFC 7386), as the API server applies kopf's patch."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            _merged(target[key], value)
        else:
            target[key] = copy.deepcopy(value)
    return target
