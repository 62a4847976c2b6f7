"""The push bench's own readings: requests counted in the sources' access logs, and the
listener -> REST recipe's copies matched with their source events.

The lines are copied from the rig's real Airflow 2.11 (gunicorn) and 3.3 (`http.access`)
logs; a parser that missed them would report an idle source as costing nothing.
"""

# ruff: noqa: E501  (real log lines, kept whole)
from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from bench.counted import access_log_times
from bench.push import Made, match_recipe
from bench.traffic import CreatedEvent
from rig.airflow import AIRFLOW2, AIRFLOW3, AirflowInstance

LOG_2 = """\
[2026-12-02T05:22:20.101+0000] {manager.py:1} INFO - unrelated line
127.0.0.1 - admin [02/Dec/2026:05:22:24 +0000] "GET /api/v1/datasets/events?limit=100 HTTP/1.1" 200 992 "-" "python-httpx/0.28.1"
127.0.0.1 - admin [02/Dec/2026:05:22:25 +0000] "POST /api/v1/datasets/events HTTP/1.1" 200 421 "-" "python-httpx/0.28.1"
"""
LOG_3 = """\
2026-12-02T05:21:22.892050Z [info     ] request finished               [http.access] client_addr=127.0.0.1:47738 duration_us=19814 loc=http_access_log.py:130 method=POST path=/auth/token query= status_code=201
2026-12-02T05:21:22.950000Z [info     ] Waiting for application shutdown. [uvicorn.error] loc=on.py:67
2026-12-02T05:21:23.962371Z [info     ] request finished               [http.access] client_addr=127.0.0.1:47752 duration_us=31366 loc=http_access_log.py:130 method=GET path=/api/v2/assets/events query='limit=1' status_code=200
"""


def _instance(version: str, home: Path, name: str, text: str) -> AirflowInstance:
    (home / "logs").mkdir(parents=True)
    (home / "logs" / name).write_text(text)
    return AirflowInstance(version=version, home=home, port=1)


def test_access_log_times_count_each_request_once_at_its_second(tmp_path: Path) -> None:
    a2 = _instance(AIRFLOW2, tmp_path / "a2", "webserver.log", LOG_2)
    a3 = _instance(AIRFLOW3, tmp_path / "a3", "api-server.log", LOG_3)
    second = datetime(2026, 12, 2, 5, 22, 24, tzinfo=UTC).timestamp()
    assert access_log_times(a2) == [second, second + 1]
    second = datetime(2026, 12, 2, 5, 21, 22, tzinfo=UTC).timestamp()
    assert access_log_times(a3) == [second, second + 1]


def _event(i: int, second: int) -> CreatedEvent:
    return CreatedEvent(
        id=i, uri="s3://x", timestamp=datetime(2026, 1, 1, 0, 0, second, tzinfo=UTC), acked=0.0
    )


def test_recipe_copies_match_by_nonce_and_tag_only() -> None:
    made = Made()
    for i, nonce in enumerate(("n0", "n1", "n2")):
        event = _event(i, 10 * i)
        made.events.append(event)
        made.nonces[nonce] = event
    rows = [
        {"extra": {"nonce": "n0", "recipe": "tag"}, "timestamp": "2026-01-01T00:00:00.250000Z"},
        {"extra": {"nonce": "n0", "recipe": "tag"}, "timestamp": "2026-01-01T00:00:01Z"},
        # Another run's recipe, and a sync's copy: not this recipe's.
        {"extra": {"nonce": "n1", "recipe": "other"}, "timestamp": "2026-01-01T00:00:10Z"},
        {"extra": {"nonce": "n1"}, "timestamp": "2026-01-01T00:00:10Z"},
        {"extra": {"nonce": "n2", "recipe": "tag"}, "timestamp": "2026-01-01T00:00:20.5Z"},
    ]
    delivery = match_recipe(made, rows, tag="tag")
    assert delivery.missing == [1]
    assert delivery.duplicates == 1
    assert delivery.latencies == [0.25, 0.5]
