"""Argo CD's health check for an AirflowAssetSync (deploy/gitops/argocd/health.lua), run by a
real Lua 5.1 (Argo CD's gopher-lua speaks 5.1) through lupa in the linters' virtualenv."""

from __future__ import annotations

import json
import subprocess
from typing import Any

from airflow_asset_sync.api import spec as api
from rig.cache import ROOT
from support import packaging_tools as tools

GITOPS = ROOT / "deploy" / "gitops"
HEALTH_LUA = GITOPS / "argocd" / "health.lua"
HEALTH_KEY = f"resource.customizations.health.{api.GROUP}_{api.KIND}"

_RUN_LUA = r"""
import json, sys
from lupa import lua51

request = json.load(sys.stdin)
results = []
for obj in request["objects"]:
    lua = lua51.LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = lua.table_from(obj, recursive=True)
    hs = lua.execute(request["script"])
    results.append({"status": hs["status"], "message": hs["message"]})
json.dump(results, sys.stdout)
"""


def run_health(objects: list[dict[str, Any]]) -> list[dict[str, str]]:
    result = subprocess.run(
        [str(tools.linters_python()), "-c", _RUN_LUA],
        input=json.dumps({"script": HEALTH_LUA.read_text(), "objects": objects}),
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    out: list[dict[str, str]] = json.loads(result.stdout)
    return out
