"""The `airflow-asset-sync` command: one image, one entry point, several roles.

    airflow-asset-sync operator   the kopf controller (cluster-wide or listed namespaces)
    airflow-asset-sync worker     one sync's worker, in the pod the operator made for it
    airflow-asset-sync run -f F   one sync without Kubernetes (standalone; the README demo)
    airflow-asset-sync check -f F validate manifests offline, optionally try the endpoints
    airflow-asset-sync version

Subcommands import their machinery lazily: the worker never imports kopf, `version` imports
nothing heavy.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from airflow_asset_sync import __version__


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="airflow-asset-sync", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--log-format", choices=["text", "json"], default="text")
    parser.add_argument("--log-level", default="INFO")
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("version", help="print the version")

    op = sub.add_parser("operator", help="run the controller")
    scope = op.add_mutually_exclusive_group()
    scope.add_argument(
        "--namespace",
        "-n",
        action="append",
        dest="namespaces",
        help="watch only this namespace (repeatable)",
    )
    scope.add_argument(
        "--all-namespaces", "-A", action="store_true", help="watch the whole cluster (default)"
    )
    op.add_argument(
        "--peering", default=None, help="kopf peering name for HA (two replicas never act at once)"
    )
    op.add_argument("--standalone", action="store_true", help="no peering: a single replica")
    op.add_argument(
        "--priority",
        type=int,
        default=None,
        help="peering priority: the live replica with the highest one acts (default: random)",
    )
    op.add_argument("--liveness-port", type=int, default=8080)
    op.add_argument("--metrics-port", type=int, default=9090)

    wk = sub.add_parser("worker", help="run one sync's worker (inside its pod)")
    wk.add_argument("--namespace", required=True)
    wk.add_argument("--name", required=True)
    wk.add_argument("--metrics-port", type=int, default=8080)

    run = sub.add_parser("run", help="run one sync without Kubernetes")
    run.add_argument(
        "-f",
        "--filename",
        required=True,
        help="YAML with one AirflowAssetSync (and optionally its Secrets)",
    )
    run.add_argument("--state", default="airflow-asset-sync-state.json", help="offsets file")
    run.add_argument("--metrics-port", type=int, default=8080)

    check = sub.add_parser("check", help="validate a sync manifest")
    check.add_argument("-f", "--filename", required=True)
    check.add_argument(
        "--connect", action="store_true", help="also log in to every Airflow endpoint"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    from airflow_asset_sync import logs

    logs.configure(fmt=args.log_format, level=args.log_level)
    if args.command == "version":
        print(__version__)
        return
    if args.command == "operator":
        from airflow_asset_sync.controller import entrypoint

        entrypoint.run_operator(
            namespaces=args.namespaces,
            peering=None if args.standalone else args.peering,
            priority=args.priority,
            liveness_port=args.liveness_port,
            metrics_port=args.metrics_port,
        )
        return
    from airflow_asset_sync.worker import app

    if args.command == "run":
        sys.exit(
            app.run_standalone(args.filename, state=args.state, metrics_port=args.metrics_port)
        )
    if args.command == "worker":
        sys.exit(app.run_in_cluster(args.namespace, args.name, metrics_port=args.metrics_port))
    if args.command == "check":
        sys.exit(app.check(args.filename, connect_endpoints=args.connect))
