"""The `AirflowAssetSync` spec as pydantic models.

The CRD schema in `crds/` is what the API server enforces; these models are what the code
reads. They mirror each other field for field (camelCase on the wire, snake_case in Python),
and `tests/unit/controller/test_crd_matches_models.py` keeps them from drifting.

Why no defaults are written back: GitOps tools (Argo CD, Flux) diff the live object against
git, so a server-side default in `spec` shows as a permanent diff. Defaults therefore live
here, as Python defaults, and never in the CRD.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

GROUP = "airflow-asset-sync.github.io"
VERSION = "v1alpha1"
KIND = "AirflowAssetSync"
PLURAL = "airflowassetsyncs"
API_VERSION = f"{GROUP}/{VERSION}"

#: Poll interval bounds: below 100 ms a source API is hammered for no latency gain; above an
#: hour a "sync" is a batch job.
MIN_POLL_INTERVAL = timedelta(milliseconds=100)
MAX_POLL_INTERVAL = timedelta(hours=1)

_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)(ms|s|m|h))+$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> timedelta:
    """Parse a Go-style duration (`500ms`, `1s`, `1m30s`): the notation Kubernetes users know."""
    if not _DURATION.fullmatch(text):
        raise ValueError(f"{text!r} is not a duration like '500ms', '1s' or '1m30s'")
    seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(text))
    try:
        return timedelta(seconds=seconds)
    except OverflowError as exc:  # e.g. 99999999999999999h: a ValueError, not a crash
        raise ValueError(f"{text!r} is too long a duration") from exc


class Model(BaseModel):
    """Base for spec models: camelCase aliases, unknown fields rejected, immutable."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


class ApiVersion(StrEnum):
    """Which Airflow REST API an instance speaks: `v1` is Airflow 2.x, `v2` is Airflow 3.x."""

    AUTO = "auto"
    V1 = "v1"
    V2 = "v2"


class SecretUserPassword(Model):
    """A Secret holding a username and a password."""

    secret_name: Annotated[str, Field(min_length=1, max_length=253)]
    username_key: str = "username"
    password_key: str = "password"


class SecretToken(Model):
    """A Secret holding a static bearer token."""

    secret_name: Annotated[str, Field(min_length=1, max_length=253)]
    key: str = "token"


class Auth(Model):
    """How to authenticate to an Airflow instance. Exactly one of the three kinds.

    - `basic`: HTTP basic auth (Airflow 2.x with the basic_auth API backend).
    - `password`: username/password exchanged for a JWT at `/auth/token` (Airflow 3.x).
    - `token`: a static bearer token.
    """

    basic: SecretUserPassword | None = None
    password: SecretUserPassword | None = None
    token: SecretToken | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        kinds = [k for k in ("basic", "password", "token") if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError(
                f"auth needs exactly one of basic, password, token; got {kinds or 'none'}"
            )
        return self

    @property
    def secret_names(self) -> set[str]:
        refs = [self.basic, self.password, self.token]
        return {ref.secret_name for ref in refs if ref is not None}


class Tls(Model):
    """TLS options for an Airflow endpoint."""

    ca_secret_name: str | None = None
    ca_key: str = "ca.crt"
    insecure_skip_verify: bool = False


class Endpoint(Model):
    """One Airflow instance: where it is and how to talk to it."""

    url: Annotated[str, Field(pattern=r"^https?://[^\s/]+(/[^\s]*)?$", max_length=2048)]
    api_version: ApiVersion = ApiVersion.AUTO
    auth: Auth | None = None
    tls: Tls | None = None
    #: Identity of the instance written into the sync marker; defaults to the URL's origin.
    instance_id: Annotated[str | None, Field(max_length=253)] = None

    @property
    def identity(self) -> str:
        """The stable instance identity used in markers (never contains credentials)."""
        if self.instance_id:
            return self.instance_id
        match = re.match(r"^(https?://[^/]+)(/.*)?$", self.url)
        assert match is not None  # the field pattern guarantees it
        base = re.sub(r"//[^@/]*@", "//", match.group(1))  # drop userinfo if any
        path = (match.group(2) or "").rstrip("/")
        return base + path


class Push(Model):
    """Pokes from the source Airflow's listener plugin (`airflow-asset-sync-listener`).

    The plugin POSTs to the worker when the source registers an asset event, and the worker
    polls at once instead of waiting out ``pollInterval``. A poke carries nothing the sync
    trusts: events are still read by polling, so a lost poke, a stopped worker or a missing
    plugin only costs latency, never an event. The shared `token` (a Secret the plugin's
    environment holds too) keeps anyone else from making the worker poll; pokes are also
    rate-limited. Setting `push` makes the operator create a Service for the worker and
    report the poke URL in ``status.pokeUrl``.
    """

    token: SecretToken


class Source(Endpoint):
    """The source Airflow instance; `push` optionally lets it wake the poller."""

    push: Push | None = None


class RewriteRule(Model):
    """Map a source URI to a target URI: Python `re.sub(match, replace, uri, count=1)`."""

    match: Annotated[str, Field(min_length=1)]
    replace: str

    @field_validator("match")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(
                f"rewrite match {value!r} is not a valid regular expression: {exc}"
            ) from exc
        return value


class UnknownAssetPolicy(StrEnum):
    """What to do with an event whose asset the target does not know (HTTP 404).

    `retry` keeps retrying with back-off: the migration case, where the consuming DAG is
    deployed in the target later. `skip` drops it, counted and reported.
    """

    RETRY = "retry"
    SKIP = "skip"


#: Bounds of `targets[].parking`. Parked events live in the object's status, and etcd keeps
#: an object below 1.5 MB: more than 5,000 events per target could not be stored anyway.
MAX_PARKED_EVENTS = 5000
MIN_PARKED_AGE = timedelta(minutes=1)
MAX_PARKED_AGE = timedelta(days=365)


class Parking(Model):
    """Limits on the events parked for assets the target does not know yet (`retry`).

    Why two limits with two policies: a count limit protects the status object (the events
    are stored there), so past it nothing is dropped, the target's stream waits instead
    (back-pressure, with the reason in `lastError`); an age limit says when a consumer is
    never coming (an asset renamed or retired), so past it the event is dropped, counted in
    `eventsSkipped` and logged as a warning.
    """

    max_events: Annotated[int, Field(ge=1, le=MAX_PARKED_EVENTS)] = 1000
    max_age: str = "720h"

    @field_validator("max_age")
    @classmethod
    def _max_age(cls, value: str) -> str:
        age = parse_duration(value)
        if not MIN_PARKED_AGE <= age <= MAX_PARKED_AGE:
            raise ValueError(f"parking.maxAge {value!r} must be between 1m and 8760h")
        return value

    @property
    def max_age_delta(self) -> timedelta:
        return parse_duration(self.max_age)


class DeliveryMode(StrEnum):
    """How a target receives the events of one asset (`targets[].delivery.mode`).

    Airflow folds the events that arrive while a consumer run is queued into one run, so a
    burst of ten events may make one run. `eachEvent` writes every event as it comes (that
    folding happens; the default). `oneRunPerEvent` writes an asset's next event only once
    the target has consumed the previous one (no consumer DAG still has it queued), so each
    source event makes its own consumer run: that asset then flows at its consumer's pace.
    `coalesce` turns the events of one asset that arrive within `window` into one target
    event whose marker lists the source event ids: for hot assets where only the latest
    matters.
    """

    EACH_EVENT = "eachEvent"
    ONE_RUN_PER_EVENT = "oneRunPerEvent"
    COALESCE = "coalesce"


#: Bounds of `delivery.window`: below 100 ms nothing would coalesce; above 10 minutes the
#: events would sit uncommitted longer than a consumer group session is worth holding.
MIN_COALESCE_WINDOW = timedelta(milliseconds=100)
MAX_COALESCE_WINDOW = timedelta(minutes=10)


class Delivery(Model):
    """`targets[].delivery`: the delivery mode, and the window of `coalesce` (only there)."""

    mode: DeliveryMode = DeliveryMode.EACH_EVENT
    window: str | None = None

    @field_validator("window")
    @classmethod
    def _window(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            window = parse_duration(value)
        except ValueError as exc:
            raise ValueError(f"delivery.window: {exc}") from None
        if not MIN_COALESCE_WINDOW <= window <= MAX_COALESCE_WINDOW:
            raise ValueError(f"delivery.window {value!r} must be between 100ms and 10m")
        return value

    @model_validator(mode="after")
    def _window_only_for_coalesce(self) -> Self:
        if self.mode == DeliveryMode.COALESCE and self.window is None:
            raise ValueError("delivery.window is required when delivery.mode is coalesce")
        if self.mode != DeliveryMode.COALESCE and self.window is not None:
            raise ValueError(
                f"delivery.window is only for delivery.mode coalesce, not {self.mode.value}"
            )
        return self

    @property
    def window_seconds(self) -> float:
        return 0.0 if self.window is None else parse_duration(self.window).total_seconds()


class Target(Endpoint):
    """A target Airflow instance plus how events are mapped into it."""

    name: Annotated[str, Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=40)]
    rewrite: list[RewriteRule] = []
    on_unknown_asset: UnknownAssetPolicy = UnknownAssetPolicy.RETRY
    parking: Parking = Parking()
    delivery: Delivery = Delivery()

    def map_uri(self, uri: str) -> str:
        """Apply the first rewrite rule that matches (rules are tried in order)."""
        for rule in self.rewrite:
            new, count = re.subn(rule.match, rule.replace, uri, count=1)
            if count:
                return new
        return uri


class Pattern(Model):
    """One filter pattern; `glob` (fnmatch, the default) or `regex` (full match)."""

    glob: str | None = None
    regex: str | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        if (self.glob is None) == (self.regex is None):
            raise ValueError("a pattern needs exactly one of glob or regex")
        if self.regex is not None:
            try:
                re.compile(self.regex)
            except re.error as exc:
                raise ValueError(f"regex {self.regex!r} does not compile: {exc}") from exc
        return self


class AssetFilter(Model):
    """Which source events are synced.

    An event passes when it matches at least one `include` pattern (or `include` is empty)
    and no `exclude` pattern; patterns are tried against both the asset URI and its name.
    `sourceDagIds`, when set, keeps only events produced by those DAGs (glob patterns).
    """

    include: list[Pattern] = []
    exclude: list[Pattern] = []
    source_dag_ids: list[str] = []


#: Placeholders an asset template of `dagRuns` may use, and what each stands for.
RUN_PLACEHOLDERS = ("instance", "dag_id", "run_id", "task_id", "map_index")
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
#: The states a completion selector may ask for: the end states of a run or a task.
RunState = Literal["success", "failed"]


def template_placeholders(template: str) -> list[str]:
    """The placeholder names in `template`; ValueError for unknown ones or stray braces."""
    names = _PLACEHOLDER.findall(template)
    unknown = sorted({n for n in names if n not in RUN_PLACEHOLDERS})
    if unknown:
        allowed = ", ".join("{" + n + "}" for n in RUN_PLACEHOLDERS)
        raise ValueError(
            f"unknown placeholder(s) {', '.join('{' + n + '}' for n in unknown)}; "
            f"allowed: {allowed}"
        )
    if "{" in _PLACEHOLDER.sub("", template) or "}" in _PLACEHOLDER.sub("", template):
        raise ValueError("has an unmatched '{' or '}'")
    return names


class DagRunSelector(Model):
    """`spec.dagRuns[]`: completions of source DAG runs (or of one task) published as events.

    Why as asset events: a DAG in a target instance then waits for a DAG (or a task) of the
    source the way it waits for any asset, with no sensor and no cross-instance database
    access. Each completion that matches (`dagId` glob, `taskId` when set, a state in
    `states`) becomes one event of the asset `asset` (a template) and travels the same topic,
    replayer, marker and exactly-once path as asset events. The target must know the asset:
    its consumer DAG, scheduled on it, creates it (until then the events are parked).
    """

    dag_id: Annotated[str, Field(min_length=1, max_length=250)]
    task_id: Annotated[str | None, Field(min_length=1, max_length=250)] = None
    states: Annotated[list[RunState], Field(min_length=1, max_length=2)] = ["success"]
    asset: Annotated[str, Field(min_length=1, max_length=1500)]

    @field_validator("asset")
    @classmethod
    def _template(cls, value: str) -> str:
        try:
            template_placeholders(value)
        except ValueError as exc:
            raise ValueError(f"asset template {value!r}: {exc}") from None
        return value

    @model_validator(mode="after")
    def _task_placeholders(self) -> Self:
        names = template_placeholders(self.asset)
        if self.task_id is None and {"task_id", "map_index"} & set(names):
            raise ValueError(
                "asset: {task_id} and {map_index} need taskId (a DAG-run selector has no task)"
            )
        return self

    def asset_uri(
        self,
        *,
        instance: str,
        dag_id: str,
        run_id: str,
        task_id: str | None = None,
        map_index: int | None = None,
    ) -> str:
        """The asset URI of one completion: the template with its placeholders filled in."""
        values = {
            "instance": instance,
            "dag_id": dag_id,
            "run_id": run_id,
            "task_id": task_id or "",
            "map_index": "" if map_index is None else str(map_index),
        }
        return _PLACEHOLDER.sub(lambda m: values[m.group(1)], self.asset)


class KafkaSasl(Model):
    """SASL credentials for Kafka, by Secret reference."""

    mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "SCRAM-SHA-512"
    secret_name: Annotated[str, Field(min_length=1)]
    username_key: str = "username"
    password_key: str = "password"


class KafkaSecurity(Model):
    """Kafka transport security."""

    protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl: KafkaSasl | None = None
    ca_secret_name: str | None = None
    ca_key: str = "ca.crt"


class Kafka(Model):
    """The Kafka topic between the poller and the replayers."""

    bootstrap_servers: Annotated[list[str], Field(min_length=1)]
    topic: Annotated[str | None, Field(pattern=r"^[a-zA-Z0-9._-]{1,249}$")] = None
    security: KafkaSecurity | None = None


class Worker(Model):
    """Scheduling and resources of the worker pod (passed through to the Deployment)."""

    image: str | None = None
    resources: dict[str, dict[str, str]] | None = None
    node_selector: dict[str, str] | None = None
    tolerations: list[dict[str, object]] | None = None
    affinity: dict[str, object] | None = None
    priority_class_name: str | None = None


class Replay(Model):
    """Re-read the source from `from` (to `until`) once; a new `id` asks for another replay.

    Why an id rather than a flag or a timestamp of the request: the spec lives in git, and a
    GitOps tool applies it again and again; the worker compares the id with
    ``status.replay.id``, so re-applying the same spec never re-reads anything, and changing
    the id is the one explicit way to ask again. Events the targets already have are skipped
    by marker, so a replay only fills gaps.

    A `from` in the future is not refused here: "now" is the worker's to judge when it starts
    the replay (validation runs on every read of the spec, and a CEL rule has no clock), so the
    worker reports it in ``status.replay`` as Failed.
    """

    id: Annotated[str, Field(min_length=1, max_length=63)]
    from_: datetime = Field(alias="from")
    until: datetime | None = None

    @field_validator("from_", "until")
    @classmethod
    def _aware(cls, value: datetime | None, info: ValidationInfo) -> datetime | None:
        if value is not None and value.tzinfo is None:
            name = "from" if info.field_name == "from_" else "until"
            raise ValueError(
                f"spec.replay.{name} {value.isoformat()!r} needs a time zone offset, e.g. 'Z'"
            )
        if value is None:
            return None
        value = value.astimezone(UTC)
        # A field validator (not a model one) so the error is reported at spec.replay.until.
        start = info.data.get("from_")
        if info.field_name == "until" and isinstance(start, datetime) and value <= start:
            raise ValueError(
                f"spec.replay.until {value.isoformat()} is not after spec.replay.from "
                f"{start.isoformat()}"
            )
        return value


#: `spec.maxHops`: by default a copy may travel four syncs from its origin (A -> B -> C ->
#: D -> E). The path check already ends every loop of instances with one identity each; the
#: limit is the backstop for an instance known under two identities, so it is kept small.
DEFAULT_MAX_HOPS = 4
MAX_MAX_HOPS = 16


class SyncSpec(Model):
    """`spec` of an AirflowAssetSync.

    `max_hops`: the most syncs an event may travel from the instance where it was born to a
    target of this sync, counting this one (`worker.forwarding`). 1 forwards no copies (each
    sync carries only its source's own events, as before chains existed).
    """

    source: Source
    targets: Annotated[list[Target], Field(min_length=1, max_length=20)]
    assets: AssetFilter = AssetFilter()
    kafka: Kafka | None = None
    start_from: str = "latest"
    poll_interval: str = "1s"
    suspend: bool = False
    worker: Worker | None = None
    replay: Replay | None = None
    dag_runs: Annotated[list[DagRunSelector], Field(max_length=50)] = []
    max_hops: int = DEFAULT_MAX_HOPS

    @field_validator("max_hops")
    @classmethod
    def _max_hops(cls, value: int) -> int:
        if not 1 <= value <= MAX_MAX_HOPS:
            raise ValueError(f"maxHops {value} must be between 1 and {MAX_MAX_HOPS}")
        return value

    @field_validator("start_from")
    @classmethod
    def _start_from(cls, value: str) -> str:
        parse_start_from(value)
        return value

    @field_validator("poll_interval")
    @classmethod
    def _poll_interval(cls, value: str) -> str:
        interval = parse_duration(value)
        if not MIN_POLL_INTERVAL <= interval <= MAX_POLL_INTERVAL:
            raise ValueError(f"pollInterval {value!r} must be between 100ms and 1h")
        return value

    @model_validator(mode="after")
    def _unique_targets(self) -> Self:
        names = [t.name for t in self.targets]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"target names must be unique; repeated: {', '.join(dupes)}")
        return self

    @property
    def poll_interval_seconds(self) -> float:
        return parse_duration(self.poll_interval).total_seconds()

    @property
    def start(self) -> StartFrom:
        return parse_start_from(self.start_from)

    def target(self, name: str) -> Target:
        for t in self.targets:
            if t.name == name:
                return t
        raise KeyError(name)


StartFrom = Literal["latest", "earliest"] | datetime


def parse_start_from(value: str) -> StartFrom:
    """`latest`, `earliest`, or an RFC 3339 time with an offset (naive times are ambiguous)."""
    if value in ("latest", "earliest"):
        return value  # type: ignore[return-value]
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ValueError(
            f"startFrom {value!r} is not 'latest', 'earliest' or an RFC 3339 time"
        ) from exc
    if parsed.tzinfo is None:
        raise ValueError(f"startFrom {value!r} needs a time zone offset, e.g. 'Z'")
    return parsed.astimezone(UTC)


class ObjectRef(Model):
    """Namespace and name of the AirflowAssetSync; its identity in markers and topics."""

    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


class SyncObject(BaseModel):
    """A whole AirflowAssetSync as read from YAML or the API (metadata kept loosely)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    api_version: str = Field(alias="apiVersion")
    kind: str
    metadata: dict[str, object]
    spec: SyncSpec

    # Field validators, not one model validator: an error then names its field
    # (`apiVersion: expected ...`) instead of an empty path.
    @field_validator("api_version")
    @classmethod
    def _api_version(cls, value: str) -> str:
        if value != API_VERSION:
            raise ValueError(f"expected {API_VERSION!r} for kind {KIND}, got {value!r}")
        return value

    @field_validator("kind")
    @classmethod
    def _kind(cls, value: str) -> str:
        if value != KIND:
            raise ValueError(f"expected {KIND!r}, got {value!r}")
        return value

    @property
    def ref(self) -> ObjectRef:
        ns = self.metadata.get("namespace") or "default"
        return ObjectRef(namespace=str(ns), name=str(self.metadata["name"]))
