"""The report: `report.json` (everything), `report.md` (for people), and the charts."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from bench.common import Results

CHARTS = ("latency_cdf.png", "latency_hist.png", "throughput.png")


def rerender(outdir: Path) -> None:
    """Write report.md and the charts again from an existing report.json."""
    from dataclasses import asdict

    from bench.common import FULL, Check, Profile

    data = json.loads((outdir / "report.json").read_text())
    # `duration_s` is computed from `started`: keep the run's own duration.
    profile = Profile(**{**asdict(FULL), **data["profile"]})  # fields added since: FULL's
    results = Results(profile=profile, started=time.time() - data["duration_s"])
    results.figures = data["figures"]
    results.checks = [Check(**c) for c in data["checks"]]
    results.problems = data["problems"]
    results.load = data["load"]
    results.series = data.get("series", {})
    # Profiles are summarised again from their raw stacks (the summary may have improved).
    from bench.profiling import summarize

    for label in list(results.figures.get("profiles", {})):
        raw = outdir / f"profile-{label}.txt"
        if raw.exists():
            results.figures["profiles"][label] = summarize(raw)
    write(results, outdir, command=data.get("command", ""), notes=data.get("notes", []))


def write(results: Results, outdir: Path, *, command: str, notes: list[str]) -> None:
    data = results.to_json()
    data["command"] = command
    data["series"] = results.series
    data["notes"] = notes
    (outdir / "report.json").write_text(json.dumps(data, indent=2, default=str))
    charts = _charts(results, outdir)
    (outdir / "report.md").write_text(_markdown(results, data, command, notes, charts))


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        return f"{value:.{digits}g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def _verdict(passed: bool | None) -> str:
    return {True: "met", False: "**MISSED**", None: "n/a"}[passed]


def _markdown(
    results: Results, data: dict[str, Any], command: str, notes: list[str], charts: list[str]
) -> str:
    f = results.figures
    lines = [
        "# airflow-asset-sync benchmark",
        "",
        f"- command: `{command}` ({results.profile.name} profile)",
        f"- duration: {data['duration_s']:.0f} s; machine: {data['machine']['cpus']} CPUs, "
        f"Python {data['machine']['python']}",
        "- real components: Airflow 2.11.2 and 3.3.2 (SQLite, one API worker each), Kafka 3.9 "
        "(KRaft), kube-apiserver 1.34 + etcd 3.6, all on loopback, all on this machine",
        f"- code measured: commit {f.get('tree', {}).get('commit')}, uncommitted product "
        f"changes: {f.get('tree', {}).get('operator_uncommitted_files')} files (diff "
        f"{f.get('tree', {}).get('operator_diff_sha256')}); product defaults: "
        f"{f.get('defaults', {})}",
        "- load average (1/5/15 min) at each section boundary: "
        + "; ".join(
            f"{x['label']} {x['load1']:.2f}/{x['load5']:.2f}/{x['load15']:.2f}"
            for x in results.load
        ),
        "",
        "## Figures against the targets",
        "",
        "| section | figure | value | target | verdict | note |",
        "|---|---|---|---|---|---|",
    ]
    for c in results.checks:
        lines.append(
            f"| {c.section} | {c.name} | {_fmt(c.value)} {c.unit} | {c.target} | "
            f"{_verdict(c.passed)} | {c.note} |"
        )
    if results.problems:
        lines += ["", "## Problems during the run", ""]
        lines += [f"- {p}" for p in results.problems]
    if notes:
        lines += ["", "## Notes", ""]
        lines += [f"- {n}" for n in notes]

    lat = f.get("latency", {})
    if lat:
        lines += [
            "",
            "## (1) End-to-end latency",
            "",
            "Source event created (its row timestamp) -> created in the target (the target "
            "row's timestamp); both Airflows stamp rows with the same host clock. Through "
            "Kafka, one `run -f` worker; warm-up events excluded. Events not delivered "
            "within the cut-off count with their age at the cut-off (`>=`: a lower bound).",
            "",
            "| run | poll interval | delivered | rate/s | p50 s | p95 s | p99 s | max s "
            "| dup | worker errors | source req/s under load | worker RSS MiB |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in lat.values():
            s = r["latency_s"]
            b = r.get("lower_bounds", [])

            def q(name: str, s: dict[str, Any] = s, b: list[str] = b) -> str:
                return (">=" if name in b else "") + _fmt(s.get(name))

            errors = ", ".join(f"{k} {v:.0f}" for k, v in r.get("worker_errors", {}).items())
            lines.append(
                f"| {r['label']} | {r['poll_interval']} | {r['delivered']}/{r['events_created']} "
                f"| {r['achieved_rate']} | {q('p50')} | {q('p95')} | {q('p99')} | {q('max')} | "
                f"{r['duplicates']} | {errors or '-'} | {r['source_requests_per_s_under_load']} | "
                f"{r['worker_hwm_mib']} |"
            )
    if "replay" in f or "catchup" in f or "drain" in f:
        rp, cu = f.get("replay", {}), f.get("catchup", {})
        lines += ["", "## (2) Replay throughput and (3) backlog catch-up", ""]
        for c, rc in rp.get("raw_ceiling", {}).items():
            lines.append(
                f"- raw httpx loop into the target, {c} in flight: {rc['ok']} POSTs in "
                f"{rc['wall_s']} s = **{rc['rate']} events/s** (request p50 "
                f"{_fmt(rc['request_s'].get('p50'))} s, p99 {_fmt(rc['request_s'].get('p99'))} s,"
                f" max {_fmt(rc['request_s'].get('max'))} s; errors {rc['error_kinds'] or 'none'})"
            )
        if "backlog" in cu:
            b = cu["backlog"]
            lines.append(
                f"- backlog: {b['ok']} events created in the source one at a time, "
                f"{b['rate']} events/s"
            )
        for name, d in f.get("drain", {}).items():
            what = "product defaults" if not d["prototype"] else f"prototype {d['prototype']}"
            lines.append(
                f"- worker `{name}` ({what}): all {d['events']} in Kafka "
                f"{d['catchup_from_process_start_s']} s after its process started (ready after "
                f"{d['process_start_to_ready_s']} s) = **{d['catchup_rate_from_process_start']} "
                f"events/s** (first to last publish {d['catchup_rate_first_to_last_publish']}/s, "
                f"{d['source_requests']:.0f} source requests); replay after catch-up "
                f"**{d['replay_rate_in_window']} events/s** over {d['replay_window_s']} s "
                f"({d['replayed_in_window']:.0f} events; replay errors "
                f"{sum(d['replay_errors'].values()):.0f}); raw loop right before/after "
                f"{d.get('raw_before_after')} events/s -> ratio **{d.get('ratio_bracketed')}**; "
                f"source requests/s once caught up (idle after the burst) "
                f"{d['source_requests_per_s_after_catchup']}; peak RSS {d['hwm_mib']} MiB"
            )
        for key in ("ratio_vs_long_ceiling", "ratio_bracketed", "ratio_bracketed_second"):
            if key in rp:
                lines.append(f"- {key.replace('_', ' ')}: **{rp[key]}**")
    if "idle" in f:
        lines += [
            "",
            "## (4) Source API cost while idle",
            "",
            "| source, targets | window s | source requests | per minute | per second "
            "| target requests |",
            "|---|---|---|---|---|---|",
        ]
        for key, r in f["idle"].items():
            lines.append(
                f"| {key} | {r['window_s']} | {r['source_requests']:.0f} | "
                f"{r['source_requests_per_min']} | {r['source_requests_per_s']} | "
                f"{r['target_requests']:.0f} |"
            )
    if "memory" in f or "operator" in f or "operator_cluster" in f:
        lines += ["", "## (5) Memory and the operator at scale", ""]
        for key, m in f.get("memory", {}).items():
            lines.append(f"- {key}: {m}")
        if "operator" in f:
            lines += _operator_lines(f["operator"])
        if "operator_cluster" in f:
            lines.append(
                f"- on the real cluster (the operator pod, real controllers): "
                f"{f['operator_cluster']}"
            )
    if "naive" in f or "assetwatcher" in f:
        lines += ["", "## (6) What a user would pick instead", ""]
        if "naive" in f:
            n = f["naive"]
            s = n["latency_s"]
            lines.append(
                f"- naive poller every {n['interval_s']} s (2.11 -> 3.3): {n['delivered']}/"
                f"{n['events_created']} delivered, p50 {_fmt(s.get('p50'))} s, p99 "
                f"{_fmt(s.get('p99'))} s, max {_fmt(s.get('max'))} s; "
                f"{n['source_requests_per_min']} source requests/min per target"
            )
        if "assetwatcher" in f:
            a = f["assetwatcher"]
            for part in ("steady", "burst"):
                if part not in a:
                    continue
                p = a[part]
                s = p["latency_s"]
                d = p["delivered_latency_s"]
                lines.append(
                    f"- AssetWatcher + KafkaMessageQueueTrigger (defaults), {p['rate']}/s "
                    f"({part}): {p['delivered']}/{p['messages']} messages became events within "
                    f"{p['cutoff_s_after_last_message']:.0f} s of the last; delivered p50 "
                    f"{_fmt(d.get('p50'))} s, p99 {_fmt(d.get('p99'))} s, max {_fmt(d.get('max'))}"
                    f" s; all messages (undelivered at their age) p50 {_fmt(s.get('p50'))} s, p99 "
                    f"{_fmt(s.get('p99'))} s; {p['events_per_s_while_delivering']} events/s "
                    "while delivering"
                )
            lines.append(
                f"- AssetWatcher: first event {a['warmup_to_first_event_s']} s after the first "
                f"message; triggerer RSS {a['triggerer_rss_mib']} MiB"
            )
    profiles = f.get("profiles", {})
    if profiles:
        lines += ["", "## Profiles (py-spy, busy samples only)", ""]
        for label, p in profiles.items():
            lines += [
                f"### {label} ({p['samples']} samples, {p['busy_share']:.0%} busy; raw: "
                f"`{p['file']}`)",
                "",
                "| self | share | function |",
                "|---|---|---|",
            ]
            lines += [f"| {n} | {share:.1%} | `{fn}` |" for fn, n, share in p["top_self"][:12]]
            lines += ["", "| inclusive | share | function |", "|---|---|---|"]
            lines += [f"| {n} | {share:.1%} | `{fn}` |" for fn, n, share in p["top_inclusive"][:12]]
            lines.append("")
    if charts:
        lines += ["", "## Charts", ""] + [f"![{c}]({c})" for c in charts]
    lines += ["", f"Timings per section (s): {f.get('timings', {})}", ""]
    return "\n".join(lines)


def _charts(results: Results, outdir: Path) -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    made: list[str] = []
    series = results.series.get("latency", {})
    if series:
        fig, ax = plt.subplots(figsize=(9, 5.5))
        for s in series.values():
            values = sorted(v for v in s["latencies"] if v > 0)
            if not values:
                continue
            ys = [(i + 1) / len(values) for i in range(len(values))]
            ax.step(values, ys, where="post", label=f"{s['label']} (n={len(values)})")
        ax.set_xscale("log")
        ax.axvline(0.5, color="grey", linestyle="--", linewidth=0.8)
        ax.axvline(1.5, color="grey", linestyle=":", linewidth=0.8)
        ax.text(0.5, 0.02, " p50 target 0.5 s", color="grey", fontsize=8)
        ax.text(1.5, 0.10, " p99 target 1.5 s", color="grey", fontsize=8)
        ax.set_xlabel("source event created -> created in target (s, log scale)")
        ax.set_ylabel("fraction of events")
        ax.set_title("End-to-end latency, CDF")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="upper left")
        fig.tight_layout()
        fig.savefig(outdir / "latency_cdf.png", dpi=110)
        plt.close(fig)
        made.append("latency_cdf.png")

        sync_runs = {k: s for k, s in series.items() if k not in ("naive", "assetwatcher")}
        if sync_runs:
            fig, ax = plt.subplots(figsize=(9, 5))
            bins = [i * 0.05 for i in range(0, 41)]
            for s in sync_runs.values():
                ax.hist(
                    [min(v, 2.0) for v in s["latencies"]],
                    bins=bins,
                    histtype="step",
                    linewidth=1.5,
                    label=s["label"],
                )
            ax.axvline(0.5, color="grey", linestyle="--", linewidth=0.8)
            ax.axvline(1.5, color="grey", linestyle=":", linewidth=0.8)
            ax.set_xlabel("latency (s; values above 2 s counted in the last bin)")
            ax.set_ylabel("events")
            ax.set_title("Latency histogram, airflow-asset-sync runs")
            ax.legend(fontsize=7)
            fig.tight_layout()
            fig.savefig(outdir / "latency_hist.png", dpi=110)
            plt.close(fig)
            made.append("latency_hist.png")

    rp = results.figures.get("replay", {})
    drains = results.figures.get("drain", {})
    if rp or drains:
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 5.5))
        labels, values, colors = [], [], []
        for c, rc in rp.get("raw_ceiling", {}).items():
            labels.append(f"raw loop\n{c} in flight")
            values.append(rc["rate"])
            colors.append("#888888")
        for name, d in drains.items():
            tag = "before fixes" if d["prototype"] else name.removeprefix("drain").strip("-")
            labels.append(f"replayer\n{tag or 'defaults'}")
            values.append(d["replay_rate_in_window"])
            colors.append("#2ca02c" if d["prototype"] else "#d62728")
            for i, raw in enumerate(d.get("raw_before_after") or []):
                labels.append(f"raw loop\n{'before' if i == 0 else 'after'} {tag or 'drain'}")
                values.append(raw)
                colors.append("#bbbbbb")
        bars = ax1.bar(range(len(values)), values, color=colors)
        ax1.set_xticks(range(len(values)), labels, fontsize=7)
        ax1.bar_label(bars, fmt="%.1f")
        ax1.set_ylabel("events/s written into the target (Airflow 3.3, SQLite)")
        ax1.set_title("Target write ceiling vs replayer, same instance, same run")
        for name, style in (("drain", "-"), ("drain-before", "--"), ("drain-repeat", ":")):
            series = results.series.get(name)
            if not series:
                continue
            tag = {"drain": "defaults", "drain-before": "before fixes"}.get(name, "repeat")
            if series["published"]:
                ax2.plot(*zip(*series["published"], strict=False), style, label=f"in Kafka ({tag})")
            if series["replayed"]:
                ax2.plot(*zip(*series["replayed"], strict=False), style, label=f"replayed ({tag})")
        ax2.set_xlabel("seconds since the worker process started")
        ax2.set_ylabel("events")
        rate = drains.get("drain", {}).get("catchup_rate_from_process_start")
        ax2.set_title(f"Backlog catch-up and replay (catch-up {rate} events/s)")
        if ax2.get_legend_handles_labels()[0]:
            ax2.legend(fontsize=8)
        ax2.grid(True, alpha=0.3)
        fig.tight_layout()
        fig.savefig(outdir / "throughput.png", dpi=110)
        plt.close(fig)
        made.append("throughput.png")
    return made


def _operator_lines(o: dict[str, Any]) -> list[str]:
    v = o.get("versions", {})
    lines = [
        f"- operator: Python {v.get('python')}, kopf {v.get('kopf')}, kubernetes "
        f"{v.get('kubernetes')}, {v.get('cpus')} CPUs"
    ]
    for key in sorted((k for k in o if k.startswith("at_")), key=lambda k: int(k[3:])):
        r = o[key]
        lines.append(
            f"- {r['syncs']} syncs: {r['ready_count']}/{r['syncs']} Ready after "
            f"{r['all_ready_s']} s (kubectl apply {r['apply_s']} s, all Deployments after "
            f"{r['all_deployments_s']} s, the bench's {r['harness_status_patches']} status "
            f"patches {r['harness_patch_seconds']} s); RSS {r['operator_rss_idle_mib']} MiB "
            f"idle -> {r['operator_rss_mib']} MiB, peak {r['operator_hwm_mib']} MiB "
            f"({r['operator_mib_per_sync']} MiB per sync); "
            f"operator CPU {r.get('burst_operator_cpu_s')} s; "
            f"{r['burst_operator_requests_per_sync']} operator requests per sync "
            f"({r.get('burst_requests')}; answered 409: {r.get('burst_conflicts', {})}); load "
            f"{r['load_before']} -> {r['load_after']}"
        )
        idle = r.get("idle")
        if idle:
            lines.append(
                f"  - idle {idle['window_s']} s: RSS {idle['rss_start_mib']} -> "
                f"{idle['rss_end_mib']} MiB (max {idle['rss_max_mib']}); "
                f"{idle['requests_per_min']} requests/min, "
                f"{idle['requests_per_sync_per_resync']} per sync per resync: "
                f"{idle['requests']}"
            )
        rollout = r.get("rollout")
        if rollout:
            lines.append(
                f"  - new worker image: all Deployments after {rollout['all_updated_s']} s, "
                f"all Ready again after {rollout['all_ready_again_s']} s; "
                f"{rollout['operator_requests_per_s']} operator requests/s "
                f"({rollout['operator_requests']} in all; the bench's own "
                f"{rollout['harness_requests']} left out): {rollout['requests']}; "
                f"answered 409: {rollout.get('conflicts', {})}"
            )
    return lines
