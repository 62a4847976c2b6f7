"""Recognise values that Airflow masked in an event's ``extra`` before it answered.

Airflow passes ``extra`` through its secrets masker when it serialises asset events in REST
answers (3.x: ``redact_extra`` in ``api_fastapi/core_api/datamodels/assets.py``). Every
string under a key whose name *contains* a sensitive word (``password``, ``token``,
``secret``, ``api_key``, ``dsn``, ``proxy``, ...; the name lower-cased, runs of non-word
characters turned into ``_``) comes back as ``"***"``, at any depth, and everything below
such a key is masked too. The stored value never leaves the server, so a sync can only copy
the mask: the target then holds ``"***"`` where the source holds the value. Nothing can
restore it; what the sync can do is say so (`masked_keys`), so nobody takes the copy for
the original.

Which keys are masked is the *source's* configuration: ``[core] hide_sensitive_var_conn_fields``
(default True; False turns key-based masking off) and ``[core] sensitive_var_conn_names``
(more words, comma-separated). The words below are Airflow's defaults (the union of 2.11's
and 3.3's lists); a word added only in the source's configuration is not recognised here, so
its masks are copied without being counted.

Airflow 2.11's ``/api/v1/datasets/events`` does not mask ``extra`` (its schema dumps it as
stored): a 2.x source hands over the real values, and a ``"***"`` found there was written
as such (by a task, or by a sync that copied it from a 3.x source).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

#: What the masker puts in place of a value.
MASK = "***"

#: Airflow's default sensitive words: 3.3.2 `DEFAULT_SENSITIVE_FIELDS` (a superset of 2.11's).
SENSITIVE_WORDS = frozenset(
    {
        "access_key",
        "access_token",
        "api_key",
        "apikey",
        "auth_header",
        "authorization",
        "bearer",
        "connection_string",
        "dsn",
        "keyfile_dict",
        "passphrase",
        "passwd",
        "password",
        "private_key",
        "proxies",
        "proxy",
        "proxy_password",
        "secret",
        "service_account",
        "service_key",
        "token",
        "webhook_url",
    }
)

#: Masked keys reported per event at most (status and logs stay small).
MAX_REPORTED_KEYS = 20

_NON_WORD = re.compile(r"\W+")


def sensitive_key(name: str) -> bool:
    """Whether Airflow's default masker hides the value of a key called `name`."""
    normalised = _NON_WORD.sub("_", name.strip().lower())
    return any(word in normalised for word in SENSITIVE_WORDS)


def masked_keys(extra: Mapping[str, object]) -> list[str]:
    """Dotted paths of the values in `extra` that are exactly the mask under a sensitive key.

    Only such values count: ``"***"`` elsewhere is data (Airflow never masks there by key).
    List items appear as ``[i]``. At most `MAX_REPORTED_KEYS` paths; never a value.
    """
    found: list[str] = []
    _walk(extra, "", False, found)
    return found


def _walk(value: object, path: str, under_sensitive: bool, found: list[str]) -> None:
    if len(found) >= MAX_REPORTED_KEYS:
        return
    if isinstance(value, str):
        if under_sensitive and value == MASK:
            found.append(path)
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            name = str(key)
            child = f"{path}.{name}" if path else name
            _walk(item, child, under_sensitive or sensitive_key(name), found)
        return
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _walk(item, f"{path}[{index}]", under_sensitive, found)
