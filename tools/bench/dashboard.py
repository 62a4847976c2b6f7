"""`python -m bench.dashboard`: the chart's Grafana dashboard, drawn from a benchmark-like run.

    PYTHONPATH=operator:tools:tests .venv/bin/python -m bench.dashboard [--minutes 5] [--rate 4]
        [--out docs/dashboard.png] [--save series.json | --redraw series.json]

Grafana is not part of the rig, so this draws the dashboard's panels itself, from the same
queries Grafana would run (the dashboard JSON, template variables set to the sync) against a
real Prometheus that scraped the run every second. The run: Airflow 3.3 to Airflow 3.3 through
Kafka, the real worker and operator (`support.dashboard.DashboardStack`, the stack the
dashboard test uses), a steady stream of `--rate` events/s over 10 assets for `--minutes`,
with events on an asset the target lacks (parked) at 15 % of the run, the target answering
503 from 30 % to 45 %, the source answering 503 from 65 % to 72 %. Panels are laid out by
their `gridPos`; the picture goes to `--out` (the README's docs/dashboard.png). `--save` keeps
the queried series as JSON, `--redraw` draws from such a file without a run.
Every process it starts is stopped at the end (also on Ctrl-C and failures). Drawing needs
matplotlib from requirements/bench.txt (`make bench` installs it into .venv).
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path
from typing import Any

from rig.airflow import POOL
from rig.cache import ROOT
from rig.procs import REGISTRY
from rig.prometheus import PrometheusServer, Series
from support import dashboard
from support.dashboard import DashboardStack
from support.stream import EventStream

OUT = ROOT / "docs" / "dashboard.png"
#: Pool assets no other bench section uses (bench.stack.POOL_BY_USE stops at 62).
ASSETS = [POOL[i] for i in range(62, 72)]
#: Grafana's $__rate_interval at this resolution: the panels are drawn at one point per
#: `STEP_S`, rates over 30 s, as Grafana would for a 5-minute range.
RATE_INTERVAL = "30s"
STEP_S = 5.0


def run(minutes: float, rate: float, workdir: Path) -> tuple[dict[str, Any], float, float]:
    """Drive the stack; return the panels' series, and the run's start and end (unix)."""
    from bench.stack import Stack

    stack = Stack(workdir)
    source, target = stack.airflows("a3s", "a3t")
    total_s = minutes * 60
    with DashboardStack(
        workdir / "dash",
        source=source,
        target=target,
        kafka_bootstrap=stack.kafka.bootstrap,
        kube=stack.kube,
        assets=ASSETS,
        name="orders-to-v3",
        namespace="data",
    ) as dash:
        began = time.monotonic()
        stream = EventStream(
            source, ASSETS, total=int(total_s * rate), rate=rate, label="dashboard"
        ).start()

        def at(fraction: float) -> None:
            """Until `fraction` of the run has passed (a timeline, not a condition)."""
            time.sleep(max(0.0, began + fraction * total_s - time.monotonic()))

        at(0.15)
        dash.park(3)
        at(0.30)
        dash.target_proxy.fault_rate = 1.0
        at(0.45)
        dash.target_proxy.fault_rate = 0.0
        at(0.65)
        dash.source_proxy.fault_rate = 1.0
        at(0.72)
        dash.source_proxy.fault_rate = 0.0
        stream.join(timeout_s=total_s + 120)
        dash.wait_replayed(stream.created, timeout_s=300)
        dash.wait_in_prometheus(time.time())
        assert dash.prometheus is not None
        start, end = dash.started_at, time.time()
        return query_panels(dash.prometheus, dash.variables(), start, end), start, end


def query_panels(
    prometheus: PrometheusServer, variables: dict[str, str], start: float, end: float
) -> dict[str, Any]:
    variables = {**variables, "__rate_interval": RATE_INTERVAL}
    data = dashboard.load()
    out: dict[str, Any] = {}
    for panel in dashboard.panels(data):
        targets = []
        for target in panel.get("targets") or ():
            expr = dashboard.substitute(target["expr"], variables)
            series = prometheus.query_range(expr, start, end, step=STEP_S)
            targets.append((target.get("legendFormat", ""), series))
        out[str(panel["id"])] = targets
    return out


def _points(series: Series) -> tuple[list[float], list[float]]:
    """Minutes since the start and values, with a break where the series had no sample."""
    xs: list[float] = []
    ys: list[float] = []
    previous: float | None = None
    for t, v in series.values:
        if previous is not None and t - previous > 1.5 * STEP_S:
            xs.append((previous + STEP_S) / 60)
            ys.append(float("nan"))
        xs.append(t / 60)
        ys.append(v if math.isfinite(v) else float("nan"))
        previous = t
    return xs, ys


def save(panels: dict[str, Any], start: float, end: float, path: Path) -> None:
    plain = {
        pid: [(legend, [[s.labels, s.values] for s in series]) for legend, series in targets]
        for pid, targets in panels.items()
    }
    path.write_text(json.dumps({"start": start, "end": end, "panels": plain}))


def load_saved(path: Path) -> tuple[dict[str, Any], float, float]:
    data = json.loads(path.read_text())
    panels = {
        pid: [
            (
                legend,
                [
                    Series(labels=labels, values=[tuple(v) for v in values])
                    for labels, values in series
                ],
            )
            for legend, series in targets
        ]
        for pid, targets in data["panels"].items()
    }
    return panels, float(data["start"]), float(data["end"])


def draw(panels: dict[str, Any], start: float, end: float, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = dashboard.load()
    layout = dashboard.panels(data)
    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in layout)
    plt.style.use("dark_background")
    fig = plt.figure(figsize=(16, rows * 0.40), facecolor="#111217")
    grid = fig.add_gridspec(rows, 24, hspace=0.0, wspace=2.2)
    fig.subplots_adjust(left=0.035, right=0.99, top=0.95, bottom=0.045)
    for panel in layout:
        pos = panel["gridPos"]
        # One grid row of each panel's height is left for the title and the axis labels.
        ax = fig.add_subplot(
            grid[pos["y"] + 1 : pos["y"] + pos["h"] - 1, pos["x"] : pos["x"] + pos["w"]],
            facecolor="#181b1f",
        )
        unit = panel["fieldConfig"]["defaults"].get("unit", "")
        for template, series_list in panels[str(panel["id"])]:
            series: Series
            for series in series_list:
                xs, ys = _points(
                    Series(labels=series.labels, values=[(t - start, v) for t, v in series.values])
                )
                label = dashboard.legend(template, series.labels)
                if panel["type"] == "state-timeline":
                    ax.fill_between(xs, ys, step="post", color="#73bf69", alpha=0.8, label=label)
                    ax.set_yticks([0, 1], ["not ready", "Ready"])
                else:
                    ax.plot(xs, ys, linewidth=1.2, label=label)
        ax.set_title(panel["title"], fontsize=10, loc="left", color="#d8d9da")
        ax.tick_params(labelsize=7, colors="#9fa7b3")
        ax.grid(True, alpha=0.15)
        ax.set_ylim(bottom=0)
        ax.set_xlim(0, (end - start) / 60)
        if unit in ("s", "ops"):
            ax.set_ylabel({"s": "seconds", "ops": "events/s"}.get(unit, unit), fontsize=7)
        ax.set_xlabel("minutes into the run", fontsize=7)
        handles, _ = ax.get_legend_handles_labels()
        if handles and panel["type"] != "state-timeline":
            ax.legend(fontsize=6, loc="upper left", ncol=2 if len(handles) > 4 else 1)
    fig.suptitle(
        "airflow-asset-sync dashboard (charts/airflow-asset-sync/dashboards), drawn from "
        "Prometheus queries",
        fontsize=11,
        color="#d8d9da",
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=72, facecolor=fig.get_facecolor())
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.dashboard", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--minutes", type=float, default=5.0, help="length of the run")
    parser.add_argument("--rate", type=float, default=4.0, help="source events per second")
    parser.add_argument("--out", type=Path, default=OUT, help="where the PNG goes")
    parser.add_argument("--save", type=Path, default=None, help="also write the series here")
    parser.add_argument("--redraw", type=Path, default=None, help="draw a --save file, no run")
    args = parser.parse_args(argv)
    if args.redraw is not None:
        panels, start, end = load_saved(args.redraw)
    else:
        with tempfile.TemporaryDirectory(prefix="aas-dashboard-") as tmp:
            try:
                panels, start, end = run(args.minutes, args.rate, Path(tmp))
            finally:
                REGISTRY.stop_all()
        if args.save is not None:
            save(panels, start, end, args.save)
    draw(panels, start, end, args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main()
