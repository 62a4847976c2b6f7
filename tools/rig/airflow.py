"""Real Airflow 2.x and 3.x instances on loopback (SQLite), each from its own virtualenv.

Each instance gets known credentials (2.x: a FAB admin user behind the basic_auth API
backend; 3.x: SimpleAuthManager with a pre-written password file), the rig's test DAGs
(assets in a pool that tests draw from, plus consumer DAGs scheduled on a few of them, all
unpaused), and its own ports for the API and both log servers (the 2.x defaults clash).
`airflow dags reserialize` runs before the servers start, so every asset exists at once.

The helper methods talk to the instance with plain httpx calls written against the API docs,
independently of the product's clients, so a test can tell the product's view from the truth.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import secrets
import sqlite3
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from rig.cache import CACHE, cached_in_place, log, phase
from rig.kafka import POD_GATEWAY
from rig.procs import Server, free_port
from rig.tools import uv_venv

AIRFLOW2 = "2.11.2"
AIRFLOW3 = "3.3.2"

USERNAME = "admin"
#: Distinctive so that the secret-scanning tests can look for it in every output.
PASSWORDS = {AIRFLOW2: "rig-a2-Pw-7f3c9e", AIRFLOW3: "rig-a3-Pw-5d81ab"}

#: Assets every instance knows. Tests take distinct ones from the pool (`AssetPool`).
POOL = [f"s3://aas-test/pool/p{i:02d}" for i in range(150)]
#: Assets with a consumer DAG `consume_c<i>` scheduled on them.
CONSUMED = [f"s3://aas-test/consumed/c{i}" for i in range(6)]
#: Rewrite tests: the same data under an old and a new bucket name.
OLD_BUCKET = [f"s3://old-bucket/data/d{i}" for i in range(4)]
NEW_BUCKET = [f"s3://new-bucket/data/d{i}" for i in range(4)]
ALL_ASSETS = POOL + CONSUMED + OLD_BUCKET + NEW_BUCKET

DAG_TEMPLATE = '''
"""Test DAGs of the airflow-asset-sync rig (generated)."""
from datetime import datetime

try:  # Airflow 3.x
    from airflow.providers.standard.operators.empty import EmptyOperator
    from airflow.sdk import DAG, Asset
except ImportError:  # Airflow 2.x
    from airflow import DAG
    from airflow.datasets import Dataset as Asset
    from airflow.operators.empty import EmptyOperator

ASSETS = {assets!r}
CONSUMED = {consumed!r}
START = datetime(2024, 1, 1)

with DAG("{producer}", schedule=None, start_date=START, catchup=False):
    EmptyOperator(task_id="produce", outlets=[Asset(u) for u in ASSETS])

for i, uri in enumerate(CONSUMED):
    with DAG(f"consume_{prefix}{{i}}", schedule=[Asset(uri)], start_date=START, catchup=False):
        EmptyOperator(task_id="consume")
'''


CONSUMER_TEMPLATE = '''
"""A consumer DAG written by a test (airflow-asset-sync rig, generated)."""
from datetime import datetime

try:  # Airflow 3.x
    from airflow.providers.standard.operators.empty import EmptyOperator
    from airflow.sdk import DAG, Asset
except ImportError:  # Airflow 2.x
    from airflow import DAG
    from airflow.datasets import Dataset as Asset
    from airflow.operators.empty import EmptyOperator

with DAG(
    {dag_id!r},
    schedule=[Asset(u) for u in {uris!r}],
    start_date=datetime(2024, 1, 1),
    catchup=False,
):
    EmptyOperator(task_id="consume")
'''


def venv(version: str) -> Path:
    """A virtualenv with exactly `apache-airflow==version` (plain install, no constraints)."""

    def build(path: Path) -> None:
        uv_venv(path, f"apache-airflow=={version}")

    return cached_in_place(
        CACHE / "venvs" / f"airflow-{version}", build, name=f"airflow {version} venv"
    )


@dataclass
class AirflowInstance:
    """One running Airflow; `url`, credentials and truthful helpers for tests."""

    version: str
    home: Path
    port: int = field(default_factory=free_port)
    servers: list[Server] = field(default_factory=list)
    #: Set last, over the rig's own variables: a test's extra configuration (the listener
    #: plugin's PYTHONPATH and poke settings, in test_push_real).
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def major(self) -> int:
        return int(self.version.split(".")[0])

    @property
    def api_version(self) -> str:
        return "v1" if self.major == 2 else "v2"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pods_url(self) -> str:
        """The same API as pods of the rig's cluster reach it (the pod gateway, DNATed to
        loopback by rig.cluster)."""
        return f"http://{POD_GATEWAY}:{self.port}"

    @property
    def username(self) -> str:
        return USERNAME

    @property
    def password(self) -> str:
        return PASSWORDS[self.version]

    @property
    def auth_kind(self) -> str:
        """The `spec.*.auth` kind a sync uses for this instance."""
        return "basic" if self.major == 2 else "password"

    @functools.cached_property
    def bin(self) -> Path:
        return venv(self.version) / "bin"

    # -- lifecycle --------------------------------------------------------------------------

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
        log_port, trigger_port = free_port(), free_port()
        env.update(
            PATH=f"{self.bin}:{env.get('PATH', '')}",
            AIRFLOW_HOME=str(self.home),
            AIRFLOW__CORE__LOAD_EXAMPLES="False",
            AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION="False",
            AIRFLOW__CORE__DAGS_FOLDER=str(self.home / "dags"),
            AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT=str(log_port),
            AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT=str(trigger_port),
            AIRFLOW__CORE__PARALLELISM="4",
            AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC="1",
        )
        if self.major == 2:
            env.update(
                AIRFLOW__API__AUTH_BACKENDS=(
                    "airflow.providers.fab.auth_manager.api.auth.backend.basic_auth,"
                    "airflow.providers.fab.auth_manager.api.auth.backend.session"
                ),
                AIRFLOW__WEBSERVER__WEB_SERVER_HOST="127.0.0.1",
                AIRFLOW__WEBSERVER__WEB_SERVER_PORT=str(self.port),
                AIRFLOW__WEBSERVER__WORKERS="1",
                AIRFLOW__WEBSERVER__SECRET_KEY="rig-webserver-secret",
            )
        else:
            env.update(
                AIRFLOW__API__HOST="127.0.0.1",
                AIRFLOW__API__PORT=str(self.port),
                AIRFLOW__API__WORKERS="1",
                AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"{self.url}/execution/",
                AIRFLOW__API_AUTH__JWT_SECRET="rig-jwt-secret-" + "x" * 32,
                AIRFLOW__API_AUTH__JWT_ISSUER="airflow-asset-sync-rig",
                AIRFLOW__API__SECRET_KEY="rig-api-secret",
                AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS=f"{USERNAME}:admin",
            )
        env.update(self.extra_env)
        return env

    def airflow(
        self, *args: str, env: dict[str, str] | None = None, timeout_s: float = 300
    ) -> None:
        result = subprocess.run(
            [str(self.bin / "airflow"), *args],
            env=env or self.env(),
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"airflow {' '.join(args)} failed:\n"
                f"{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
            )

    def start(self) -> None:
        name = f"airflow {self.version}"
        with phase(f"{name}: provision venv"):
            venv(self.version)
        with phase(f"{name}: db migrate, credentials, DAGs"):
            self.home.mkdir(parents=True, exist_ok=True)
            (self.home / "dags").mkdir(exist_ok=True)
            self.write_dag("aas_rig", ALL_ASSETS, CONSUMED, producer="aas_producer", prefix="c")
            env = self.env()
            self.airflow("db", "migrate", env=env)
            if self.major == 2:
                self.airflow(
                    "users",
                    "create",
                    "--username",
                    USERNAME,
                    "--password",
                    self.password,
                    "--firstname",
                    "Rig",
                    "--lastname",
                    "Admin",
                    "--role",
                    "Admin",
                    "--email",
                    "admin@rig.invalid",
                    env=env,
                )
            else:
                (self.home / "simple_auth_manager_passwords.json.generated").write_text(
                    json.dumps({USERNAME: self.password})
                )
            self.airflow("dags", "reserialize", env=env)
        self._start_servers(env)

    def restart(self, extra_env: dict[str, str]) -> None:
        """Stop every server and start them again with `extra_env` instead of the old one
        (the database, DAGs and credentials stay): a plugin's settings change, or it goes."""
        self.stop()
        self.servers.clear()
        self.extra_env = extra_env
        self._start_servers(self.env())

    def _start_servers(self, env: dict[str, str]) -> None:
        name = f"airflow {self.version}"
        with phase(f"{name}: start servers"):
            logs = self.home / "logs"
            if self.major == 2:
                commands = [["webserver"], ["scheduler"]]
            else:
                commands = [["api-server"], ["scheduler"], ["dag-processor"]]
            for cmd in commands:
                server = Server(
                    f"{name} {cmd[0]}",
                    [str(self.bin / "airflow"), *cmd],
                    log_path=logs / f"{cmd[0]}.log",
                    env=env,
                )
                server.start()
                self.servers.append(server)
            self.servers[0].wait_ready(self._healthy, timeout_s=180, what="healthy")
        log(f"{name}: {self.url} user={USERNAME}")

    def stop(self) -> None:
        for server in reversed(self.servers):
            server.stop()

    def stop_api(self) -> None:
        """Stop only the API server (a target 'down' in the reliability suite)."""
        self.servers[0].stop()

    def start_api(self) -> None:
        self.servers[0].start()
        self.servers[0].wait_ready(self._healthy, timeout_s=180, what="healthy again")

    def _healthy(self) -> bool:
        path = "/api/v1/health" if self.major == 2 else "/api/v2/monitor/health"
        response = httpx.get(self.url + path, timeout=3)
        if response.status_code != 200:
            return False
        # The API answering is not enough: wait until an authenticated read works too.
        with self.client() as client:
            return client.get(self._events_path, params={"limit": 1}).status_code == 200

    # -- DAGs -------------------------------------------------------------------------------

    def write_dag(
        self, name: str, assets: list[str], consumed: list[str], *, producer: str, prefix: str
    ) -> None:
        text = DAG_TEMPLATE.format(
            assets=assets, consumed=consumed, producer=producer, prefix=prefix
        )
        (self.home / "dags" / f"{name}.py").write_text(text)

    def add_assets(self, uris: list[str]) -> None:
        """Deploy a new DAG that references `uris`, so the assets come to exist now."""
        tag = secrets.token_hex(4)
        self.write_dag(
            f"aas_late_{tag}", uris, [], producer=f"aas_late_{tag}", prefix=f"late_{tag}_"
        )
        self.airflow("dags", "reserialize")

    def add_dag(self, name: str, text: str) -> None:
        """Deploy a DAG file written by a test (e.g. a consumer on a partitioned schedule)
        and parse it now, so its assets and schedule exist when the call returns."""
        (self.home / "dags" / f"{name}.py").write_text(text)
        self.airflow("dags", "reserialize")

    def db_clean(self, before: datetime) -> None:
        """``airflow db clean`` of the event table, as an operator's retention job runs it:
        every event older than `before` is deleted (no archive table is kept)."""
        table = "dataset_event" if self.major == 2 else "asset_event"
        self.airflow(
            "db",
            "clean",
            "--clean-before-timestamp",
            before.astimezone(UTC).isoformat(),
            "--tables",
            table,
            "--skip-archive",
            "--yes",
        )

    def add_consumer(self, uris: list[str], *, paused: bool = False) -> str:
        """Deploy a DAG scheduled on all of `uris` (a list: every one must have an event, as
        Airflow's AND) and wait until the API shows it; returns its id. `paused` pauses it
        before any event can reach it."""
        dag_id = f"aas_consumer_{secrets.token_hex(4)}"
        text = CONSUMER_TEMPLATE.format(dag_id=dag_id, uris=list(uris))
        (self.home / "dags" / f"{dag_id}.py").write_text(text)
        self.airflow("dags", "reserialize")
        prefix = "/api/v1" if self.major == 2 else "/api/v2"
        with self.client() as c:
            deadline = time.monotonic() + 60
            while c.get(f"{prefix}/dags/{dag_id}").status_code != 200:
                if time.monotonic() > deadline:
                    raise AssertionError(f"{dag_id} never appeared in {self.url}")
                time.sleep(0.3)
            r = c.patch(f"{prefix}/dags/{dag_id}", json={"is_paused": paused})
            r.raise_for_status()
            assert r.json()["is_paused"] is paused
        return dag_id

    def queued_dags(self, uri: str) -> list[str]:
        """DAG ids that have an event of `uri` queued (no run created for it yet)."""
        with self.client() as c:
            if self.major == 2:
                path = f"/api/v1/datasets/queuedEvent/{urllib.parse.quote(uri, safe='')}"
                r = c.get(path)
                if r.status_code == 404:  # 2.x: nothing queued
                    return []
            else:
                r = c.get(f"/api/v2/assets/{self.asset_id(uri, c)}/queuedEvents")
            r.raise_for_status()
            return [row["dag_id"] for row in r.json()["queued_events"]]

    def run_events(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        """The asset events a DAG run consumed (its upstream events), normalised."""
        run = urllib.parse.quote(run_id, safe="")
        with self.client() as c:
            if self.major == 2:
                r = self._get(c, f"/api/v1/dags/{dag_id}/dagRuns/{run}/upstreamDatasetEvents")
                rows = r.json()["dataset_events"]
            else:
                r = self._get(c, f"/api/v2/dags/{dag_id}/dagRuns/{run}/upstreamAssetEvents")
                rows = r.json()["asset_events"]
        return [self._normalise(row) for row in rows]

    def delete_event(self, event_id: int) -> None:
        """Remove an event from the metadata database, as a lost write or a restore from an
        older backup would: neither Airflow API can delete an asset event."""
        table = "dataset_event" if self.major == 2 else "asset_event"
        link = "dagrun_dataset_event" if self.major == 2 else "dagrun_asset_event"
        with contextlib.closing(sqlite3.connect(self.home / "airflow.db", timeout=30)) as db:
            db.execute(f"DELETE FROM {link} WHERE event_id = ?", (event_id,))  # noqa: S608
            deleted = db.execute(f"DELETE FROM {table} WHERE id = ?", (event_id,)).rowcount  # noqa: S608
            db.commit()
        assert deleted == 1, f"no event {event_id} in {table}"

    def stored_extra(self, event_id: int) -> dict[str, Any]:
        """An event's `extra` as the metadata database holds it: 3.x masks sensitive-looking
        keys in every API answer, so only the database tells what was really written."""
        table = "dataset_event" if self.major == 2 else "asset_event"
        with contextlib.closing(sqlite3.connect(self.home / "airflow.db", timeout=30)) as db:
            row = db.execute(f"SELECT extra FROM {table} WHERE id = ?", (event_id,)).fetchone()  # noqa: S608
        assert row is not None, f"no event {event_id} in {table}"
        value = json.loads(row[0]) if isinstance(row[0], str) else row[0]
        assert isinstance(value, dict)
        return value

    def backdate_event(self, event_id: int, when: datetime) -> None:
        """Move an event's timestamp into the past in the metadata database: neither API can
        create an event at another time, and history needs old events."""
        table = "dataset_event" if self.major == 2 else "asset_event"
        with contextlib.closing(sqlite3.connect(self.home / "airflow.db", timeout=30)) as db:
            row = db.execute(f"SELECT timestamp FROM {table} WHERE id = ?", (event_id,)).fetchone()  # noqa: S608
            assert row is not None, f"no event {event_id} in {table}"
            # Written in the format the row has (SQLAlchemy's naive UTC text on SQLite).
            text = when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
            if str(row[0]).endswith("+00:00"):
                text += "+00:00"
            db.execute(f"UPDATE {table} SET timestamp = ? WHERE id = ?", (text, event_id))  # noqa: S608
            db.commit()

    # -- truthful API helpers ----------------------------------------------------------------

    @property
    def _events_path(self) -> str:
        return "/api/v1/datasets/events" if self.major == 2 else "/api/v2/assets/events"

    def _token(self) -> str:
        response = httpx.post(
            f"{self.url}/auth/token",
            json={"username": USERNAME, "password": self.password},
            timeout=10,
        )
        response.raise_for_status()
        return str(response.json()["access_token"])

    def client(self) -> httpx.Client:
        if self.major == 2:
            return httpx.Client(base_url=self.url, auth=(USERNAME, self.password), timeout=30)
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {self._token()}"}, timeout=30
        )

    def asset_id(self, uri: str, client: httpx.Client | None = None) -> int:
        if client is None:
            with self.client() as c:
                return self.asset_id(uri, c)
        c = client
        if self.major == 2:
            r = self._get(c, f"/api/v1/datasets/{urllib.parse.quote(uri, safe='')}")
            return int(r.json()["id"])
        r = self._get(c, "/api/v2/assets", params={"uri_pattern": uri, "limit": 100})
        matches = [a["id"] for a in r.json()["assets"] if a["uri"] == uri]
        assert len(matches) == 1, f"{uri}: {matches}"
        return int(matches[0])

    def create_event(
        self,
        uri: str,
        extra: dict[str, Any] | None = None,
        client: httpx.Client | None = None,
        *,
        partition_key: str | None = None,
    ) -> dict[str, Any]:
        """POST an asset event; returns it normalised (id, uri, extra, timestamp,
        partition_key). `partition_key` needs 3.2+ (the 3.x create body takes it)."""
        if client is None:
            with self.client() as c:
                return self.create_event(uri, extra, c, partition_key=partition_key)
        c = client
        if self.major == 2:
            assert partition_key is None, "Airflow 2.x has no partitions"
            r = c.post(self._events_path, json={"dataset_uri": uri, "extra": extra or {}})
        else:
            body: dict[str, Any] = {"asset_id": self.asset_id(uri, c), "extra": extra or {}}
            if partition_key is not None:
                body["partition_key"] = partition_key
            r = c.post(self._events_path, json=body)
        r.raise_for_status()
        return self._normalise(r.json())

    def events(
        self, uri: str | None = None, client: httpx.Client | None = None
    ) -> list[dict[str, Any]]:
        """Every event (of one asset, if given), oldest first."""
        if client is None:
            with self.client() as c:
                return self.events(uri, c)
        c = client
        params: dict[str, Any] = {"limit": 100, "order_by": "timestamp"}
        if uri is not None:
            params["dataset_id" if self.major == 2 else "asset_id"] = self.asset_id(uri, c)
        out: list[dict[str, Any]] = []
        while True:
            r = self._get(c, self._events_path, params={**params, "offset": len(out)})
            body = r.json()
            rows = body["dataset_events" if self.major == 2 else "asset_events"]
            out.extend(self._normalise(row) for row in rows)
            if not rows or len(out) >= body["total_entries"]:
                return out

    def dag_runs(self, dag_id: str, client: httpx.Client | None = None) -> list[dict[str, Any]]:
        if client is None:
            with self.client() as c:
                return self.dag_runs(dag_id, c)
        c = client
        prefix = "/api/v1" if self.major == 2 else "/api/v2"
        r = self._get(c, f"{prefix}/dags/{dag_id}/dagRuns", params={"limit": 100})
        return list(r.json()["dag_runs"])

    def wait_for_runs(self, dag_id: str, count: int, timeout_s: float = 90) -> list[dict[str, Any]]:
        """Wait until `dag_id` has at least `count` runs (the scheduler creates them)."""
        deadline = time.monotonic() + timeout_s
        with self.client() as c:
            while True:
                runs = self.dag_runs(dag_id, c)
                if len(runs) >= count:
                    return runs
                if time.monotonic() > deadline:
                    raise AssertionError(
                        f"{dag_id} has {len(runs)} runs, expected {count} within {timeout_s}s"
                    )
                time.sleep(0.5)

    @staticmethod
    def _get(
        client: httpx.Client, path: str, params: dict[str, Any] | None = None
    ) -> httpx.Response:
        """GET with a few retries: the rig's Airflows answer 500 now and then.

        Seen: SQLite lock contention, and 3.3.2 failing to serialise an event whose triggered
        run has no start_date yet (`created_dagruns.0.start_date` is None while it is queued).
        """
        for attempt in range(8):
            try:
                response = client.get(path, params=params)
            except httpx.TransportError:
                if attempt == 7:
                    raise
            else:
                if response.status_code < 500 or attempt == 7:
                    response.raise_for_status()
                    return response
            time.sleep(0.2 * (attempt + 1))
        raise AssertionError("unreachable")

    def _normalise(self, row: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": row["id"],
            "uri": row["dataset_uri"] if self.major == 2 else row["uri"],
            "extra": row.get("extra") or {},
            "timestamp": row["timestamp"],
            "partition_key": row.get("partition_key"),
        }


class AssetPool:
    """Hands out pool assets so tests sharing an instance never share an asset."""

    def __init__(self) -> None:
        self._next = 0
        self._lock = threading.Lock()

    def take(self, n: int = 1) -> list[str]:
        with self._lock:
            if self._next + n > len(POOL):
                raise RuntimeError("asset pool exhausted: add assets to rig.airflow.POOL")
            taken = POOL[self._next : self._next + n]
            self._next += n
            return taken


_POOL = AssetPool()


def _instance(version: str, factory: pytest.TempPathFactory) -> Iterator[AirflowInstance]:
    instance = AirflowInstance(version=version, home=factory.mktemp(f"airflow-{version}"))
    try:
        instance.start()
        yield instance
    finally:
        instance.stop()


@pytest.fixture(scope="session")
def airflow2(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AirflowInstance]:
    """A real Airflow 2.11 for the session (webserver + scheduler), started on first use."""
    yield from _instance(AIRFLOW2, tmp_path_factory)


@pytest.fixture(scope="session")
def airflow3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AirflowInstance]:
    """A real Airflow 3.3 for the session (api-server + scheduler + dag-processor)."""
    yield from _instance(AIRFLOW3, tmp_path_factory)


@pytest.fixture(scope="session")
def airflow3b(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AirflowInstance]:
    """A second, independent Airflow 3.3 (for 3 -> 3 syncs)."""
    yield from _instance(AIRFLOW3, tmp_path_factory)


@pytest.fixture(scope="session")
def airflow2b(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AirflowInstance]:
    """A second, independent Airflow 2.11 (a fourth instance: a hub with three spokes)."""
    yield from _instance(AIRFLOW2, tmp_path_factory)


@pytest.fixture
def assets() -> AssetPool:
    """Take distinct pool assets: `assets.take(3)`."""
    return _POOL
