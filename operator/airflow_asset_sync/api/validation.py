"""How a pydantic `ValidationError` of the spec models is put to a user: one line per
problem, naming the field as they wrote it.

The worker (`run`, `check`: a manifest on disk) and the operator (the `Stalled` condition of
an invalid spec) say it the same way, so a message found in one place can be searched for in
the other and in the docs. Beside `api.spec` because the models' camelCase aliases are what
the paths spell.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import ValidationError


def field_path(loc: Sequence[int | str], prefix: str = "") -> str:
    """A field as a user wrote it: camelCase, dotted, list indexes in brackets
    (`spec.targets[0].auth`), the one spelling every message uses."""
    path = prefix
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path


def validation_problems(exc: ValidationError, *, prefix: str = "spec") -> list[str]:
    """One ``<field>: <message>`` per problem; `prefix` is where the model sits in the object
    (``"spec"`` for a `SyncSpec`, ``""`` for a whole `SyncObject`).

    A message of our own validators comes without pydantic's "Value error, " in front: the
    text says it all.
    """
    problems = []
    for err in exc.errors(include_url=False):
        message = err["msg"]
        if err["type"] == "value_error":
            message = str(err.get("ctx", {}).get("error", message))
        path = field_path(err["loc"], prefix)
        problems.append(f"{path}: {message}" if path else message)
    return problems
