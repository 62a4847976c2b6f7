"""Assemble and run one sync: the `run`, `worker` and `check` commands.

`run` (standalone) and `worker` (in a pod) differ only in where the spec, the credentials and
the offsets come from:

- `run -f sync.yaml`: the spec from the file; credentials from Secrets in the file, else
  from env; offsets in a JSON file (`--state`).
- `worker`: the spec from its AirflowAssetSync, read once; credentials from the env and
  files the operator mounted; offsets in the resource's status.

A spec change rolls the worker pod (the operator stamps a spec hash on it), so the worker
reads its spec once instead of watching it.

In a cluster the worker also holds its sync's Lease (`lease`) from before it loads its
checkpoint until after its last write and status flush: a replacement pod started while the
old one is still stopping waits instead of writing beside it. Standalone there is no Lease.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from airflow_asset_sync.api.spec import API_VERSION, KIND, Endpoint, ObjectRef, SyncObject, SyncSpec
from airflow_asset_sync.api.transport import Publisher, Subscription
from airflow_asset_sync.api.validation import validation_problems
from airflow_asset_sync.clients.airflow.base import (
    AirflowClient,
    AssetNotFound,
    AuthFailed,
    EventQuery,
)
from airflow_asset_sync.clients.airflow.factory import connect
from airflow_asset_sync.clients.kafka.publisher import KafkaPublisher
from airflow_asset_sync.clients.kafka.settings import KafkaSettings
from airflow_asset_sync.clients.kafka.subscription import KafkaSubscription
from airflow_asset_sync.logs import register_secrets, scrub
from airflow_asset_sync.resources.naming import labels, worker_name
from airflow_asset_sync.worker.channel import InProcessChannel
from airflow_asset_sync.worker.clock import SystemClock
from airflow_asset_sync.worker.credentials import MissingCredential, ResolvedCredentials
from airflow_asset_sync.worker.credentials import from_env as credentials_from_env
from airflow_asset_sync.worker.credentials import from_manifests as credentials_from_manifests
from airflow_asset_sync.worker.health import Health, readiness_timeout
from airflow_asset_sync.worker.lease import FencedOffsetStore, LeaseHolder, LeaseStore, new_identity
from airflow_asset_sync.worker.metrics import MetricsServer, WorkerMetrics, start_metrics_server
from airflow_asset_sync.worker.offsets import FileOffsetStore, OffsetStore
from airflow_asset_sync.worker.pipeline import SyncWorker
from airflow_asset_sync.worker.poke import PokeGate, Wakeup
from airflow_asset_sync.worker.verify import (
    BadWindow,
    Outcome,
    Report,
    Unreadable,
    Window,
    parse_window,
    plan_repair,
    verify,
)
from airflow_asset_sync.worker.verify import repair as repair_targets

log = logging.getLogger(__name__)


class BadManifest(ValueError):
    """The YAML does not hold exactly one valid AirflowAssetSync; the message says why."""


class PortInUse(RuntimeError):
    """The metrics port cannot be bound; the message names the flag that chooses another."""


def load_manifests(path: str | Path) -> tuple[SyncObject, list[dict[str, Any]]]:
    """The AirflowAssetSync in a multi-document YAML file, and any Secrets beside it."""
    try:
        docs = [d for d in yaml.safe_load_all(Path(path).read_text()) if d is not None]
    except OSError as exc:
        raise BadManifest(f"{path}: cannot read: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise BadManifest(f"{path}: not valid YAML: {exc}") from exc
    if not all(isinstance(d, dict) for d in docs):
        raise BadManifest(f"{path}: every YAML document must be a mapping")
    syncs = [d for d in docs if d.get("kind") == "AirflowAssetSync"]
    secrets = [d for d in docs if d.get("kind") == "Secret" and d.get("apiVersion") == "v1"]
    if len(syncs) != 1:
        raise BadManifest(f"{path}: expected exactly one AirflowAssetSync, found {len(syncs)}")
    return parse_sync(syncs[0]), secrets


def parse_sync(body: Mapping[str, Any]) -> SyncObject:
    if not isinstance(body.get("metadata"), dict) or not body["metadata"].get("name"):
        raise BadManifest("metadata.name is required")
    try:
        return SyncObject.model_validate(body)
    except ValidationError as exc:
        raise BadManifest("\n".join(validation_problems(exc, prefix=""))) from None


def _client_factory(resolved: ResolvedCredentials, spec: SyncSpec) -> Any:
    async def factory(endpoint: Endpoint) -> AirflowClient:
        if endpoint is spec.source:
            return await connect(endpoint, resolved.source, ca_file=resolved.ca_files.get("source"))
        name = getattr(endpoint, "name", None)
        assert name is not None, "a target endpoint has a name"
        return await connect(
            endpoint, resolved.targets[name], ca_file=resolved.ca_files.get(f"target:{name}")
        )

    return factory


def _transport(
    sync: SyncObject, resolved: ResolvedCredentials
) -> tuple[Publisher, dict[str, Subscription]]:
    spec = sync.spec
    names = [t.name for t in spec.targets]
    if spec.kafka is None:
        channel = InProcessChannel(targets=names)
        return channel, {n: channel.subscription(n) for n in names}
    ca_file = resolved.ca_files.get("kafka")
    settings = KafkaSettings.from_spec(
        spec.kafka,
        sync.ref,
        sasl_username=resolved.kafka.username if resolved.kafka else None,
        sasl_password=resolved.kafka.password if resolved.kafka else None,
        ca_file=Path(ca_file) if ca_file else None,
    )
    subscriptions: dict[str, Subscription] = {
        n: KafkaSubscription(settings, sync=sync.ref, target=n) for n in names
    }
    return KafkaPublisher(settings), subscriptions


async def _run(
    sync: SyncObject,
    resolved: ResolvedCredentials,
    store: OffsetStore,
    *,
    metrics_port: int,
    metrics_host: str,
    lease_store: LeaseStore | None = None,
) -> None:
    register_secrets(resolved.secrets())
    publisher, subscriptions = _transport(sync, resolved)  # built, not started
    metrics = WorkerMetrics()
    health = Health(
        monotonic=time.monotonic, ready_after=readiness_timeout(sync.spec.poll_interval_seconds)
    )
    wakeup = Wakeup()
    poke = None
    if sync.spec.source.push is not None:
        poke = PokeGate(
            token=resolved.poke_token,
            wake=wakeup.set_threadsafe,
            metrics=metrics,
            monotonic=time.monotonic,
        )
    server = _serve_metrics(metrics, health, port=metrics_port, host=metrics_host, poke=poke)
    lease = None
    if lease_store is not None:
        lease = _lease_holder(lease_store, sync, metrics, health)
        store = FencedOffsetStore(store, lease)
    worker = SyncWorker(
        spec=sync.spec,
        sync=str(sync.ref),
        client_factory=_client_factory(resolved, sync.spec),
        publisher=publisher,
        subscriptions=subscriptions,
        store=store,
        metrics=metrics,
        health=health,
        fence=lease,
        wake=wakeup.event if poke is not None else None,
    )
    log.info(
        "sync starting",
        extra={
            "sync": str(sync.ref),
            "source": sync.spec.source.identity,
            "targets": ",".join(t.name for t in sync.spec.targets),
            "transport": "kafka" if sync.spec.kafka else "in-process",
            "pokes": "enabled" if poke is not None else "disabled",
        },
    )
    try:
        if lease is None:
            worker.install_signal_handlers()
            await worker.run()
        else:
            await _run_holding(worker, lease)
    finally:
        server.close()
    log.info("sync stopped", extra={"sync": str(sync.ref)})


def _serve_metrics(
    metrics: WorkerMetrics,
    health: Health,
    *,
    port: int,
    host: str,
    poke: PokeGate | None = None,
) -> MetricsServer:
    """Start the metrics/probe/poke server, or raise `PortInUse` naming `--metrics-port`."""
    try:
        return start_metrics_server(metrics=metrics, health=health, port=port, host=host, poke=poke)
    except OSError as exc:
        if exc.errno not in (errno.EADDRINUSE, errno.EACCES, errno.EADDRNOTAVAIL):
            raise
        reason = exc.strerror or str(exc)
        verb = "is in use" if exc.errno == errno.EADDRINUSE else "cannot be bound"
        raise PortInUse(
            f"--metrics-port {port} {verb} on {host} ({reason});"
            " choose another with --metrics-port",
        ) from None


def _lease_holder(
    store: LeaseStore, sync: SyncObject, metrics: WorkerMetrics, health: Health
) -> LeaseHolder:
    def on_change(held: bool, reason: str) -> None:
        metrics.lease_held.set(1 if held else 0)
        health.hold(None if held else reason)

    return LeaseHolder(
        store,
        identity=new_identity(),
        clock=SystemClock(),
        on_change=on_change,
        log_extra={"sync": str(sync.ref)},
    )


async def _run_holding(worker: SyncWorker, lease: LeaseHolder) -> None:
    """Acquire the Lease, run the worker while renewing it, release it after the worker
    stopped (its writes finished, its status flushed), whether it stopped or failed."""
    stop = asyncio.Event()

    def on_signal() -> None:
        stop.set()
        worker.request_stop()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    if not await lease.acquire(stop):
        log.info("stopped while waiting for the lease; nothing was written")
        return
    keep_stop = asyncio.Event()
    keeper = asyncio.create_task(lease.keep(keep_stop), name="lease")
    try:
        await worker.run()
    finally:
        keep_stop.set()
        await asyncio.gather(keeper, return_exceptions=True)
        await lease.release()


def run_standalone(
    filename: str, *, state: str, metrics_port: int, metrics_host: str = "127.0.0.1"
) -> int:
    """`airflow-asset-sync run -f FILE`: one sync, no Kubernetes."""
    try:
        sync, secrets = load_manifests(filename)
        resolved = credentials_from_manifests(sync.spec, secrets)
    except (BadManifest, MissingCredential) as exc:
        for line in str(exc).splitlines():
            log.error("cannot start: %s", line)
        return 2
    for warning in auth_warnings(sync.spec):
        log.warning("%s", warning)
    try:
        asyncio.run(
            _run(
                sync,
                resolved,
                FileOffsetStore(state),
                metrics_port=metrics_port,
                metrics_host=metrics_host,
            )
        )
    except PortInUse as exc:
        log.error("cannot start: %s", exc)
        return 2
    return 0


def run_in_cluster(namespace: str, name: str, *, metrics_port: int) -> int:
    """`airflow-asset-sync worker`: the pod the operator created for one sync."""
    # Imported here: the kubernetes client costs ~0.3 s and ~8 MiB at start, and `run -f`
    # (standalone, offsets in a file) never needs it.
    from airflow_asset_sync.clients.kube import KubeClient
    from airflow_asset_sync.worker.lease import KubeLeaseStore
    from airflow_asset_sync.worker.status_store import StatusOffsetStore

    kube = KubeClient.from_environment(field_manager="airflow-asset-sync-worker")
    body = kube.get_sync(namespace=namespace, name=name)
    if body is None:
        log.error("AirflowAssetSync %s/%s not found", namespace, name)
        return 2
    try:
        sync = parse_sync(body)
        resolved = credentials_from_env(sync.spec)
    except (BadManifest, MissingCredential) as exc:
        for line in str(exc).splitlines():
            log.error("cannot start: %s", line)
        return 2
    for warning in auth_warnings(sync.spec):
        log.warning("%s", warning)
    store = StatusOffsetStore(kube, ObjectRef(namespace=namespace, name=name))
    lease_store = KubeLeaseStore(
        kube,
        namespace=namespace,
        name=worker_name(name),
        labels=labels(name),
        # Not a controller reference and no blockOwnerDeletion (both need more rights): just
        # enough for the garbage collector to delete the Lease with its sync.
        owner_reference={
            "apiVersion": API_VERSION,
            "kind": KIND,
            "name": name,
            "uid": body["metadata"]["uid"],
        },
    )
    try:
        asyncio.run(
            _run(
                sync,
                resolved,
                store,
                metrics_port=metrics_port,
                metrics_host="0.0.0.0",  # noqa: S104
                lease_store=lease_store,
            )
        )
    except PortInUse as exc:
        log.error("cannot start: %s", exc)
        return 2
    return 0


def check(filename: str, *, connect_endpoints: bool = False) -> int:
    """Validate a manifest file offline; with ``connect_endpoints`` also log in everywhere."""
    try:
        sync, secrets = load_manifests(filename)
        resolved = credentials_from_manifests(sync.spec, secrets)
    except (BadManifest, MissingCredential) as exc:
        for line in str(exc).splitlines():
            print(f"invalid: {line}")
        return 2
    targets = ", ".join(t.name for t in sync.spec.targets)
    print(f"ok: {sync.ref}: {sync.spec.source.identity} -> {targets}")
    for warning in auth_warnings(sync.spec):
        print(f"warning: {warning}")
    if not connect_endpoints:
        return 0
    return asyncio.run(_check_endpoints(sync.spec, resolved))


def load_from_cluster(namespace: str, name: str) -> tuple[SyncObject, list[dict[str, Any]]]:
    """A sync in a cluster and the Secrets it names, read with the caller's kubeconfig (or
    in-cluster credentials): what `verify --namespace/--name` works from."""
    from airflow_asset_sync.clients.kube import KubeClient
    from airflow_asset_sync.resources.credentials import ca_bundles, env_credentials

    kube = KubeClient.from_environment()
    body = kube.get_sync(namespace=namespace, name=name)
    if body is None:
        raise BadManifest(f"AirflowAssetSync {namespace}/{name} not found")
    sync = parse_sync(body)
    names = {r.secret_name for r in env_credentials(sync.spec)}
    names |= {b.secret_name for b in ca_bundles(sync.spec)}
    secrets = []
    for secret in sorted(names):
        found = kube.read_secret_data(namespace=namespace, name=secret)
        if found is not None:
            secrets.append(found)
    return sync, secrets


def verify_sync(
    filename: str | None = None,
    *,
    namespace: str | None = None,
    name: str | None = None,
    since: str,
    until: str | None,
    as_json: bool,
    repair: bool = False,
    dry_run: bool = False,
) -> int:
    """`verify`: 0 when every event of the window reached every target once, 1 when some
    are missing or duplicated, 2 when the input is bad or an instance cannot be read. The
    sync comes from `filename`, or from the cluster (`namespace`/`name`, its Secrets read
    through the API). With `repair`, missing events are written (unless `dry_run`) and the
    window verified again; the exit code is that second verdict's."""
    try:
        if filename is not None:
            sync, secrets = load_manifests(filename)
            where = "the file"
        elif namespace is not None and name is not None:
            sync, secrets = load_from_cluster(namespace, name)
            where = f"namespace {namespace!r}"
        else:
            raise BadManifest("verify needs a file (-f) or a sync in a cluster (--name)")
        resolved = credentials_from_manifests(sync.spec, secrets, where=where)
        window = parse_window(since, until, datetime.now(UTC))
    except (BadManifest, MissingCredential, BadWindow) as exc:
        for line in str(exc).splitlines():
            print(f"invalid: {line}", file=sys.stderr)
        return 2
    except Exception as exc:  # the cluster refused (403) or is unreachable: say so, exit 2
        print(f"cannot read the sync: {scrub(str(exc))}", file=sys.stderr)
        return 2
    try:
        outcome = asyncio.run(_verify(sync, resolved, window, repair=repair, dry_run=dry_run))
    except Exception as exc:  # an instance down, refused credentials: say which, and stop
        print(f"cannot verify: {scrub(str(exc))}", file=sys.stderr)
        return 2
    print(outcome.render(as_json=as_json))
    return 0 if outcome.ok else 1


async def _verify(
    sync: SyncObject,
    resolved: ResolvedCredentials,
    window: Window,
    *,
    repair: bool,
    dry_run: bool,
) -> Outcome:
    """The report; with `repair` also the plan, the writes (unless `dry_run`) and a second
    report."""
    factory = _client_factory(resolved, sync.spec)
    clients: list[AirflowClient] = []
    try:
        source = await _labelled(factory, sync.spec.source, "source", clients)
        targets = {
            t.name: await _labelled(factory, t, f"target {t.name}", clients)
            for t in sync.spec.targets
        }

        async def check() -> Report:
            return await verify(
                sync.spec, sync=str(sync.ref), window=window, source=source, targets=targets
            )

        outcome = Outcome(before=await check(), dry_run=dry_run)
        if not repair:
            return outcome
        outcome.plan = plan_repair(outcome.before)
        if dry_run or not outcome.plan:
            return outcome
        outcome.written = await repair_targets(outcome.plan, outcome.before, targets=targets)
        outcome.after = await check()
        return outcome
    finally:
        for client in clients:
            await client.aclose()


async def _labelled(
    factory: Any, endpoint: Endpoint, label: str, clients: list[AirflowClient]
) -> AirflowClient:
    """A connected client; a failure names the endpoint it was for."""
    try:
        client: AirflowClient = await factory(endpoint)
    except Exception as exc:
        raise Unreadable(f"{label} ({endpoint.identity}): {type(exc).__name__}: {exc}") from exc
    clients.append(client)
    return client


def auth_warnings(spec: SyncSpec) -> list[str]:
    """One warning per endpoint without `auth`: legitimate only for an Airflow that allows
    anonymous API access, and otherwise a 401/403 at the first request."""
    endpoints: list[tuple[str, Endpoint]] = [("spec.source", spec.source)]
    endpoints += [(f"spec.targets[{i}]", t) for i, t in enumerate(spec.targets)]
    return [
        f"{path}: no auth for {endpoint.identity}; requests are sent without credentials,"
        " which only an Airflow that allows anonymous API access accepts (add auth: basic for"
        " 2.x, password for 3.x, or token)"
        for path, endpoint in endpoints
        if endpoint.auth is None
    ]


async def _check_endpoints(spec: SyncSpec, resolved: ResolvedCredentials) -> int:
    factory = _client_factory(resolved, spec)
    failures = 0
    endpoints: Sequence[Endpoint] = [spec.source, *spec.targets]
    for endpoint in endpoints:
        label = getattr(endpoint, "name", "source")
        try:
            client = await factory(endpoint)
        except Exception as exc:
            failures += 1
            print(f"failed: {label}: {endpoint.identity}: {scrub(str(exc))}")
            continue
        try:
            try:
                await client.list_events(EventQuery(limit=1))
                print(f"ok: {label}: {endpoint.identity} speaks {client.api_version}")
            except Exception as exc:
                failures += 1
                print(f"failed: {label}: {endpoint.identity}: {scrub(str(exc))}")
            if endpoint is spec.source:
                failures += await _check_source_assets(client, spec)
        finally:
            await client.aclose()
    return 1 if failures else 0


def listed_assets(spec: SyncSpec) -> list[str]:
    """The assets ``spec.assets.include`` names one by one (globs without a wildcard), in order.

    Only these can be asked about: a pattern stands for assets nobody has named, and Airflow
    has no call that says which assets a user may read.
    """
    out: list[str] = []
    for pattern in spec.assets.include:
        glob = pattern.glob
        if glob is not None and not any(c in glob for c in "*?[") and glob not in out:
            out.append(glob)
    return out


async def _check_source_assets(client: AirflowClient, spec: SyncSpec) -> int:
    """Read one event of each listed asset (`listed_assets`) with the source credentials;
    print the assets they cannot read, and those the source does not have. Returns how many
    are unreadable (a missing asset may simply not be deployed yet: a warning only).

    Why: a user allowed to read only some assets sees the others' events silently left out
    of the listing (Airflow 3.x scopes it, apache/airflow#72682), so a sync with such
    credentials would miss events without an error anywhere.
    """
    listed = listed_assets(spec)
    unreadable = 0
    for uri in listed:
        try:
            await client.list_events(EventQuery(limit=1, asset_uri=uri))
        except AuthFailed as exc:
            unreadable += 1
            print(f"unreadable: source: asset {uri}: {scrub(str(exc))}")
        except AssetNotFound:
            print(
                f"warning: source: asset {uri} does not exist in the source"
                " (or these credentials cannot see it)"
            )
        except Exception as exc:
            unreadable += 1
            print(f"unreadable: source: asset {uri}: {type(exc).__name__}: {scrub(str(exc))}")
    patterns = len(spec.assets.include) - len(listed)
    if listed and not unreadable:
        print(f"ok: source: the credentials read every listed asset ({len(listed)})")
    if patterns > 0:
        print(f"note: source: {patterns} include pattern(s) with wildcards or regex not checked")
    return unreadable
