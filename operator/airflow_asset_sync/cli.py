"""The `airflow-asset-sync` command: one image, one entry point, several roles.

    airflow-asset-sync operator   the kopf controller (cluster-wide or listed namespaces)
    airflow-asset-sync worker     one sync's worker, in the pod the operator made for it
    airflow-asset-sync run -f F   one sync without Kubernetes (standalone; the README demo)
    airflow-asset-sync check -f F validate manifests offline, optionally try the endpoints
    airflow-asset-sync verify -f F --since 24h   did every event of a window arrive, once?
    airflow-asset-sync version

Subcommands import their machinery lazily: the worker never imports kopf, `version` imports
nothing heavy.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from airflow_asset_sync import __version__

#: `run`'s metrics and health port. Not 8080: that is Airflow's own webserver/api-server port
#: (and 8793/8794 its log servers, 5555 flower), and `run` usually shares a host with Airflow.
RUN_METRICS_PORT = 9108
#: The `worker`'s port inside its pod; `resources.naming.METRICS_PORT` (the port the operator's
#: Deployment declares and probes) must equal it. A unit test keeps them equal; the pod has
#: its own network namespace, so Airflow's 8080 is no concern there.
WORKER_METRICS_PORT = 8080


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, except where there is none worth showing."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default in (None, False) or action.required:
            return action.help
        return super()._get_help_string(action)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="airflow-asset-sync",
        description=__doc__.split("\n\n")[0],
        formatter_class=_HelpFormatter,
    )
    parser.add_argument(
        "--log-format", choices=["text", "json"], default="text", help="log line format"
    )
    parser.add_argument("--log-level", default="INFO", help="log level")
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, text: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=text, description=text, formatter_class=_HelpFormatter)

    add("version", "print the version")

    op = add("operator", "run the controller")
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
    op.add_argument(
        "--liveness-port", type=int, default=8080, help="kopf's liveness endpoint (/healthz)"
    )
    op.add_argument("--metrics-port", type=int, default=9090, help="Prometheus metrics")

    wk = add("worker", "run one sync's worker (inside its pod)")
    wk.add_argument("--namespace", required=True, help="the AirflowAssetSync's namespace")
    wk.add_argument("--name", required=True, help="the AirflowAssetSync's name")
    wk.add_argument(
        "--metrics-port",
        type=int,
        default=WORKER_METRICS_PORT,
        help="/metrics, /healthz and /readyz on all interfaces (the pod's probes use it)",
    )

    run = add(
        "run",
        "run one sync without Kubernetes; SIGTERM or Ctrl-C stops it after in-flight writes",
    )
    run.add_argument(
        "-f",
        "--filename",
        required=True,
        help="YAML with one AirflowAssetSync (and optionally its Secrets)",
    )
    run.add_argument(
        "--state",
        default="airflow-asset-sync-state.json",
        help="offsets file (JSON), created if missing; keep it to resume where the sync stopped",
    )
    run.add_argument(
        "--metrics-port",
        type=int,
        default=RUN_METRICS_PORT,
        help="/metrics, /healthz and /readyz (0 picks a free port)",
    )
    run.add_argument(
        "--metrics-host",
        default="127.0.0.1",
        help="address the metrics port listens on (0.0.0.0 for a Prometheus on another host)",
    )

    check = add("check", "validate a sync manifest")
    check.add_argument("-f", "--filename", required=True, help="YAML as for run")
    check.add_argument(
        "--connect", action="store_true", help="also log in to every Airflow endpoint"
    )
    verify = add(
        "verify",
        "compare a time window of source events with what every target has, per asset;"
        " exit 0 when nothing is missing or duplicated, 1 when something is, 2 on bad input"
        " or an unreachable instance",
    )
    which = verify.add_mutually_exclusive_group(required=True)
    which.add_argument("-f", "--filename", help="YAML as for run")
    which.add_argument(
        "--name",
        help="or a sync in the cluster (with --namespace): its spec and Secrets are read"
        " through the API with your kubeconfig",
    )
    verify.add_argument(
        "--namespace", "-n", default="default", help="the sync's namespace, with --name"
    )
    verify.add_argument(
        "--since",
        required=True,
        help="window start: an RFC 3339 time, or a duration back from now (24h, 90m)",
    )
    verify.add_argument(
        "--until",
        default=None,
        help="window end, the same way (default: now; events of the last seconds may still"
        " be on their way)",
    )
    verify.add_argument("--json", action="store_true", help="print JSON instead of a table")
    verify.add_argument(
        "--repair",
        action="store_true",
        help="write the missing events (with this sync's marker) into the targets that have"
        " their asset, then verify again; suspend the sync first if the window is recent",
    )
    verify.add_argument(
        "--dry-run", action="store_true", help="with --repair: only say what would be written"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    from airflow_asset_sync.logs import configure as configure_logging

    configure_logging(fmt=args.log_format, level=args.log_level)
    if args.command == "version":
        print(__version__)
        return
    if args.command == "operator":
        from airflow_asset_sync.controller.entrypoint import run_operator

        run_operator(
            namespaces=args.namespaces,
            peering=None if args.standalone else args.peering,
            priority=args.priority,
            liveness_port=args.liveness_port,
            metrics_port=args.metrics_port,
        )
        return
    from airflow_asset_sync.worker.app import check as check_manifest
    from airflow_asset_sync.worker.app import run_in_cluster, run_standalone, verify_sync

    if args.command == "run":
        sys.exit(
            run_standalone(
                args.filename,
                state=args.state,
                metrics_port=args.metrics_port,
                metrics_host=args.metrics_host,
            )
        )
    if args.command == "worker":
        sys.exit(run_in_cluster(args.namespace, args.name, metrics_port=args.metrics_port))
    if args.command == "check":
        sys.exit(check_manifest(args.filename, connect_endpoints=args.connect))
    if args.command == "verify":
        sys.exit(
            verify_sync(
                args.filename,
                namespace=args.namespace,
                name=args.name,
                since=args.since,
                until=args.until,
                as_json=args.json,
                repair=args.repair,
                dry_run=args.dry_run,
            )
        )
