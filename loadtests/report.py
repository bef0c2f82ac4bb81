"""The comparison report: summary.json (every figure), report.md, report.html and PNG charts.

Any subset of the three stacks (TorchServe, the TF side, KServe + ONNX Runtime) may have run: the
tables comparing stacks have one table (same-run ratios) or one row (the gateway against direct)
per pair of `verdict.PAIRS` whose two stacks ran, named by what ran (`verdict.stack_names`).
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from loadtests import overhead, stats, sweep, verdict  # noqa: E402

COLOURS = {
    "torchserve": "#ee4c2c", "tfserving": "#ff8f00", "gateway-torchserve": "#9c2a1c", "gateway-tfserving": "#a65d00",
    "nginx-torchserve": "#2e7d32", "nginx-tfserving": "#81c784", "floor-torchserve": "#1565c0", "floor-tfserving": "#64b5f6",
    # KServe + ONNX Runtime: a purple family, apart from the reds/oranges of the stacks and the greens/blues of the references
    "kserve": "#8e24aa", "gateway-kserve": "#4a148c", "nginx-kserve": "#ce93d8", "floor-kserve": "#7e57c2",
}
# A stack in a same-run ratio table's title: the framework it runs (the TF side runs TensorFlow
# whichever server serves it; the heading's columns then name the server, see `pair_heads`).
FRAMEWORK = {"torchserve": "TorchServe", "tfserving": "TensorFlow", "kserve": verdict.KSERVE_LABEL}


def fmt(value: float | None, spec: str) -> str:
    """A figure for a table cell; empty when it was not measured (a target left out of the run)."""
    return "" if value is None or value != value else format(value, spec)


def warmup_note(config: dict) -> str:
    warmup = config["warmup_s"]
    return f"Each target had a {warmup} s warm-up that is not counted" if warmup > 0 else "No warm-up (--warmup 0)"


def window_note(summary: dict) -> str:
    """Where the run's duration is described: what was asked for, and the windows locust actually counted."""
    config = summary["config"]
    if config["profile"] in ("ramp", "sweep"):
        asked = config["ramp_step_s"]
        windows = [p["window_s"] for r in summary.get(config["profile"], []) for p in r["points"] if "window_s" in p]
        what = f"Each {config['profile']} step asked for {asked} s of load"
    else:
        asked = config["duration_s"]
        windows = [w for r in summary["results"] if r.get("window_s") for w in (r["window_s"]["min"], r["window_s"]["max"])]
        if asked is None:
            what = (
                f"Each measured run lasted until stable — {stability_rule(config)} — or at most {config.get('max_duration_s')} s "
                "(then it is marked unstable)"
            )
        else:
            what = f"Each measured run asked for {asked} s of load"
    measured = f"{min(windows):.2f}–{max(windows):.2f} s" if windows else "not recorded"
    return (
        f"{what}, counted from the moment every user had spawned; the windows locust actually counted "
        f"(first to last request, from its JSON; per run in summary.json) were {measured}."
    )


def stability_rule(config: dict) -> str:
    n, tol, w = config.get("stable_windows", 3), config.get("stable_tolerance", 0.10), config.get("window_s", 5.0)
    return f"the last {n} windows of {w:g} s agree, req/s and p99 each within ±{tol:.0%} of their mean"


def has_hdr(summary: dict) -> bool:
    """Whether the latencies came from the HDR recording: a result's repetitions, or a ramp's or sweep's steps."""
    runs = [rep for r in summary["results"] for rep in r.get("repetitions", [])]
    runs += [p for key in ("ramp", "sweep") for r in summary.get(key) or [] for p in r.get("points", [])]
    return any(run.get("latency_us") for run in runs)


def runs_note(config: dict) -> str:
    """How many runs stand behind each figure: repetitions, or for a ramp or sweep one run per step."""
    if config["profile"] in ("ramp", "sweep"):
        return f"{warmup_note(config)}, and one run per {config['profile']} step (no repetitions), the target order rotated from step to step."
    return f"{warmup_note(config)}, and {config['repetitions']} repetitions with the target order rotated; medians are reported with their min–max spread."


def ms(value: float | None) -> str:
    """A latency in ms for a table: 3 significant digits (the HDR histograms' precision)."""
    return stats.significant(value)


def caveats(summary: dict) -> list[str]:
    env = summary["environment"]
    out = [
        f"Load generator and servers share one machine ({env['machine']['cpu_count']} CPUs): absolute figures are lower than on dedicated hosts; compare ratios measured in the same run.",
        runs_note(summary["config"]),
        window_note(summary),
        (
            "Latency is every request's exact response time at the client (locust's perf_counter timing), recorded in µs into HDR "
            "histograms (3 significant digits) in every locust process and merged; locust's own percentiles, rounded to whole "
            "milliseconds below 100 ms, are kept per run in summary.json (`locust_ms`) as a cross-check, and any disagreement "
            "beyond their rounding is listed under Warnings."
            if has_hdr(summary)
            else "Latency is measured by locust at the client, rounded by locust to whole milliseconds below 100 ms."
        ),
    ]
    if summary["config"].get("duration_s") is not None and summary["config"]["profile"] not in ("ramp", "sweep"):
        out.append(f"Fixed-duration runs: stability ({stability_rule(summary['config'])}) is judged on each run's last windows for information, and not at all for a run shorter than that many windows.")
    impl = env.get("tfserving_implementation", "")
    if "compat" in impl.lower() or "not tensorflow serving" in impl.lower():
        out.insert(0, f"The TensorFlow side ran on **{impl}**, because `tensorflow_model_server` was not available. Its figures are the compatible server's, NOT TensorFlow Serving's.")
    if "kserve" in verdict.stacks_in(summary):
        ort = (env.get("versions") or {}).get("onnxruntime")
        out.insert(1 if out[0].startswith("The TensorFlow side") else 0, (
            f"The KServe rows ran **{verdict.KSERVE_LABEL}**: KServe's Python model server running the model's ONNX export on "
            f"ONNX Runtime{f' {ort}' if ort else ''}, with no server-side batching across requests: the same model on a third runtime."
        ))
    if env.get("reference_proxies"):
        out.append("The nginx-* and floor-* rows are reference proxies (nginx; a bare Python proxy on uvicorn + aiohttp) forwarding the direct path under the same load in the same run; read the gateway's cost as ratios to them, not as absolute figures.")
    if summary["config"]["profile"] == "closed":
        out.append("Closed loop: each user waits for its answer before sending again, so a slow target receives fewer requests; see the open-loop profile for queueing under a fixed arrival rate.")
    if summary["config"]["profile"] == "open":
        out.append("Open loop: each user follows its own schedule of intended send times and latency is taken from the intended send time, so a slow answer is charged to every request it delayed (no coordinated omission); enough users that most of them wait.")
    if summary["config"]["profile"] == "sweep":
        out.append(
            "Sweep: " + ("open-loop request rates, latency from the intended send time; " if summary["config"].get("rates") else "concurrency steps (closed loop); ")
            + f"a target stops stepping once its p99 passes {summary['config']['slo_p99_ms']:g} ms, a step fails requests, or throughput grows less than {sweep.MIN_GROWTH:.0%}; "
            + f"the knee is the last step before the throughput gained per unit of load added falls below {sweep.KNEE_EFFICIENCY:.0%} of proportional; "
            + f"a component is named saturated when the gateway, locust's busiest process or the stack (one worker or busy thread) used {sweep.ONE_CORE:g} of a core, "
            + f"or the machine was {sweep.MACHINE_BUSY:.0%} busy."
        )
    return out


def save(fig: "plt.Figure", out: Path, name: str) -> str:
    fig.tight_layout()
    fig.savefig(out / name, dpi=110)
    plt.close(fig)
    return name


def write_charts(summary: dict, out: Path) -> list[str]:
    charts: list[str] = []
    models = list(dict.fromkeys(r["model"] for r in summary["results"]))
    for model in models:
        rows = [r for r in summary["results"] if r["model"] == model]
        fig, ax = plt.subplots(figsize=(8, 4))
        keys = ("p50_ms", "p90_ms", "p95_ms", "p99_ms", "p99.9_ms")
        width = 0.8 / max(1, len(rows))
        for i, r in enumerate(rows):
            xs = [k + i * width for k in range(len(keys))]
            ax.bar(xs, [r["median"].get(k, 0.0) for k in keys], width, label=r["target"] + ("" if r.get("stable") is not False else " (unstable)"), color=COLOURS.get(r["target"]))
        ax.set_xticks([k + width * (len(rows) - 1) / 2 for k in range(len(keys))], [k.replace("_ms", "") for k in keys])
        ax.set_ylabel("latency (ms, median over repetitions)")
        ax.set_title(f"{model}: latency percentiles per target")
        ax.legend(fontsize=8 if len(rows) <= 6 else 6, ncol=1 if len(rows) <= 6 else 2)  # three stacks, each with references: up to 12 targets
        charts.append(save(fig, out, f"latency_{model}.png"))

        fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(8, 6), sharex=False)
        for r in rows:
            timeseries(ax1, ax2, Path(summary["locust_dir"]) / f"{model}_{r['target']}_rep{len(r['repetitions'])}", r)
        ax1.set_ylabel("requests/s")
        ax1.set_title(f"{model}: throughput and p99 over time (last repetition)")
        ax2.set_ylabel("p99 (ms)")
        ax2.set_xlabel("seconds since the counted window began")
        ax2.text(0.0, -0.28, "lines: locust, per whole second (req/s) and rolling (p99); steps: each measurement window (HDR p99)", transform=ax2.transAxes, fontsize=7, color="grey")
        ax1.legend(fontsize=8)
        charts.append(save(fig, out, f"timeseries_{model}.png"))
    for model in dict.fromkeys(r["model"] for r in summary["ramp"]):
        fig, ax = plt.subplots(figsize=(8, 4))
        for r in (x for x in summary["ramp"] if x["model"] == model):
            ax.plot([p["rps"] for p in r["points"]], [p["p99_ms"] for p in r["points"]], marker="o", label=r["target"], color=COLOURS.get(r["target"]))
            slo = r["slo_p99_ms"]
        ax.axhline(slo, linestyle="--", color="grey", label=f"p99 objective {slo:g} ms")
        ax.set_xlabel("throughput (requests/s)")
        ax.set_ylabel("p99 (ms)")
        ax.set_title(f"{model}: step ramp")
        ax.legend(fontsize=8)
        charts.append(save(fig, out, f"ramp_{model}.png"))
    for model in dict.fromkeys(r["model"] for r in summary.get("sweep", [])):
        charts.append(curve_chart(summary, model, out))
    return charts


def curve_chart(summary: dict, model: str, out: Path) -> str:
    """The latency–throughput curve of every target of a sweep: achieved req/s against p50 (dashed)
    and p99 (solid), log latency, the knee ringed."""
    fig, ax = plt.subplots(figsize=(10, 4.5))
    slo = None
    for r in (x for x in summary["sweep"] if x["model"] == model):
        colour = COLOURS.get(r["target"])
        xs = [p["rps"] for p in r["points"]]
        ax.plot(xs, [p["p99_ms"] for p in r["points"]], marker="o", color=colour, label=f"{r['target']} p99")
        ax.plot(xs, [p["p50_ms"] for p in r["points"]], marker=".", linestyle="--", color=colour, label=f"{r['target']} p50")
        k = r.get("knee")
        if k:
            ax.plot([k["rps"]], [k["p99_ms"]], marker="o", markersize=14, markerfacecolor="none", markeredgecolor=colour or "black", markeredgewidth=2)
            label = f"knee {k['rps']:.0f} req/s" if k["reached"] else f"last step {k['rps']:.0f} req/s (knee not reached)"
            ax.annotate(label, (k["rps"], k["p99_ms"]), textcoords="offset points", xytext=(6, 8), fontsize=7, color=colour)
        slo = r["slo_p99_ms"]
    if slo is not None:
        ax.axhline(slo, linestyle=":", color="grey", label=f"p99 objective {slo:g} ms")
    ax.set_yscale("log")
    ax.set_xlabel("achieved throughput (requests/s)")
    ax.set_ylabel("latency (ms, log)")
    kind = next((x["kind"] for x in summary["sweep"] if x["model"] == model), "")
    ax.set_title(f"{model}: latency against throughput, {kind} sweep (ringed: the knee)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the curves, not over them
    return save(fig, out, f"curve_{model}.png")


def neck_cell(neck: dict | None) -> str:
    """The saturated component, then each component's CPU in cores (the unit of the rule and of its
    "why") with its share of the machine: "stack: stack 0.97 cores (48%), load generator 0.07 cores (4%)"."""
    if not neck:
        return ""
    comps = ", ".join(f"{k} {v['cores']:.2f} cores ({v['machine_share']:.0%})" for k, v in (neck.get("components") or {}).items())
    return f"{neck.get('saturated') or 'none'}: {comps}"


NECK_HEAD = "saturated: CPU per component in cores (share of the machine)"


def timeseries(ax1: "plt.Axes", ax2: "plt.Axes", prefix: Path, r: dict) -> None:
    """One target's last repetition over time, from the start of its counted window: locust's
    requests per whole second (the partial first and last seconds dropped) and rolling p99, and the
    measurement windows' req/s and HDR p99 as steps."""
    colour = COLOURS.get(r["target"])
    rep = r["repetitions"][-1] if r["repetitions"] else {}
    per_sec = stats.per_second(Path(f"{prefix}.json")) if Path(f"{prefix}.json").exists() else []
    t0 = rep.get("window_start") or (per_sec[0][0] if per_sec else 0)
    if per_sec:
        ax1.plot([s + 0.5 - t0 for s, _ in per_sec], [n for _, n in per_sec], label=r["target"], color=colour)
    hist = [h for h in stats.history(Path(f"{prefix}_stats_history.csv")) if h["t"] >= t0]
    if hist:
        ax2.plot([h["t"] - t0 for h in hist], [h["p99"] for h in hist], color=colour, alpha=0.5)
    for w in (rep.get("stability") or {}).get("windows", []):
        xs = [w["start"] - t0, w["end"] - t0]
        ax1.plot(xs, [w["rps"]] * 2, color=colour, linewidth=3, alpha=0.6)
        if w["p99_us"] is not None:
            ax2.plot(xs, [w["p99_us"] / 1000] * 2, color=colour, linewidth=3, alpha=0.8)


def results_table(summary: dict) -> tuple[list[str], list[list[str]]]:
    """One row per target; "proxy CPU" is the CPU of whatever stands in front of the stack (gateway, nginx or floor)."""
    head = ["model", "target", "req/s", "p50 ms", "p90 ms", "p95 ms", "p99 ms", "p99.9 ms", "max ms", "failures", "stable", "stack CPU ms/req", "proxy CPU ms/req", "req/s spread", "p99 spread", "window s (measured)"]
    rows = []
    for r in summary["results"]:
        m = r["median"]
        stack_cpu = r["server"].get("stack", {}).get("cpu_ms_per_request")
        front = r.get("front", "gateway" if r.get("via_gateway") else None)
        gw_cpu = r["server"].get(front, {}).get("cpu_ms_per_request") if front else None
        rows.append(
            [
                r["model"], r["target"], f"{m['rps']:.1f}", ms(m["p50_ms"]), ms(m["p90_ms"]), ms(m["p95_ms"]), ms(m["p99_ms"]), ms(m.get("p99.9_ms")), ms(m["max_ms"]),
                f"{r['failures']}/{r['requests']}",
                stable_cell(r.get("stable")),
                "" if stack_cpu is None else f"{stack_cpu:.3f}",
                "" if gw_cpu is None else f"{gw_cpu:.3f}",
                f"{r['spread']['rps'][0]:.0f}–{r['spread']['rps'][1]:.0f}",
                f"{ms(r['spread']['p99_ms'][0])}–{ms(r['spread']['p99_ms'][1])}",
                window_cell(r.get("window_s")),
            ]
        )
    return head, rows


def window_cell(window: dict | None) -> str:
    """The counted windows of a target's runs, beside the duration asked for: "3.98–4.01 of 4"
    (stability mode: "15.02–25.01, until stable")."""
    if not window:
        return ""
    span = f"{window['min']:.2f}" if window["min"] == window["max"] else f"{window['min']:.2f}–{window['max']:.2f}"
    return f"{span}, until stable" if window["asked"] is None else f"{span} of {window['asked']}"


def stable_cell(stable: bool | None) -> str:
    return {True: "stable", False: "UNSTABLE", None: "not judged"}[stable]


def stability_table(summary: dict) -> tuple[list[str], list[list[str]]]:
    """Per repetition: how the run ended, its windows, and the rule's reading of the last ones."""
    rows = []
    for r in summary["results"]:
        for i, rep in enumerate(r["repetitions"], start=1):
            st = rep.get("stability")
            if not st:
                continue
            windows = st.get("windows", [])
            rows.append(
                [
                    r["model"], r["target"], str(i), stable_cell(st.get("stable")), st.get("ended", ""), str(len(windows)),
                    " ".join(f"{w['rps']:.0f}" for w in windows[-6:]),
                    " ".join(ms(w["p99_us"] / 1000) if w["p99_us"] is not None else "–" for w in windows[-6:]),
                    st.get("reason", ""),
                ]
            )
    return ["model", "target", "rep", "stable", "ended", "windows", "req/s per window (last 6)", "p99 ms per window (last 6)", "rule"], rows


def latency_table(summary: dict) -> tuple[list[str], list[list[str]]]:
    """The HDR percentiles in µs beside locust's own (rounded) ones, median over repetitions."""
    rows = []
    for r in summary["results"]:
        lat = r["median"].get("latency_us")
        if not lat:
            continue
        own = [rep.get("locust_ms", {}) for rep in r["repetitions"]]

        def theirs(key: str, own: list[dict] = own) -> str:
            vals = sorted(o[key] for o in own if key in o)
            return f"{vals[len(vals) // 2]:g}" if vals else ""

        agree = "yes" if not any(rep.get("latency_check") for rep in r["repetitions"]) else "NO (see Warnings)"
        rows.append(
            [r["model"], r["target"], f"{lat['count']:.0f}", f"{lat['p50']:.0f}", f"{lat['p90']:.0f}", f"{lat['p99']:.0f}", f"{lat['p99.9']:.0f}", f"{lat['max']:.0f}", f"{lat['mean']:.0f}", theirs("p50_ms"), theirs("p99_ms"), agree]
        )
    head = ["model", "target", "requests (median)", "p50 µs", "p90 µs", "p99 µs", "p99.9 µs", "max µs", "mean µs", "locust p50 ms", "locust p99 ms", "HDR and locust agree"]
    return head, rows


def md_table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def html_table(head: list[str], rows: list[list[str]]) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td class='warn'>{html.escape(c)}</td>" if c == "UNSTABLE" else f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def reference_section(model: str, o: dict) -> tuple[str, list[str], list[list[str]]]:
    """The gateway beside nginx and the bare Python proxy, same load, same run: the ratios its goals are stated in."""
    rows = []
    for stack, sat in o["saturation"].items():
        rows.append(
            [
                model, stack, fmt(sat["direct_rps"], ".0f"), fmt(sat["gateway_rps"], ".0f"), fmt(sat.get("nginx_rps"), ".0f"), fmt(sat.get("floor_rps"), ".0f"),
                fmt(sat["gateway_to_direct"], ".2f"),
                fmt(sat["gateway_cpu_us_per_request"], ".0f"), fmt(sat.get("nginx_cpu_us_per_request"), ".0f"), fmt(sat.get("floor_cpu_us_per_request"), ".0f"),
                fmt(sat.get("gateway_cpu_over_nginx"), ".1f"), fmt(sat.get("gateway_cpu_over_floor"), ".2f"),
            ]
        )
    head = [
        "model", "stack", "direct req/s", "gateway req/s", "nginx req/s", "floor req/s", "gateway/direct (goal ≥ 0.8)",
        "gateway CPU µs/req", "nginx CPU µs/req", "floor CPU µs/req", "gateway/nginx CPU (goal ≤ 4× on tabular)", "gateway/floor CPU",
    ]
    return f"Gateway against reference proxies (nginx, bare Python floor) — {model}", head, rows


def sweep_table(summary: dict) -> tuple[list[str], list[list[str]]]:
    """Every step of every sweep: what a sweep run has in place of the results table."""
    head = ["model", "target", "step", "req/s", "p50 ms", "p99 ms", "failures", "window s (measured)", NECK_HEAD, "why"]
    rows = []
    for r in summary.get("sweep") or []:
        for p in r["points"]:
            neck = p.get("bottleneck") or {}
            rows.append([
                r["model"], r["target"], sweep.load_text(p[r["load_key"]], r["load_key"]), f"{p['rps']:.1f}", ms(p.get("p50_ms")), ms(p.get("p99_ms")),
                str(p.get("failures", "")), fmt(p.get("window_s"), ".2f"), neck_cell(neck), neck.get("why", ""),
            ])
    return head, rows


def sweep_summary_rows(summary: dict) -> list[list[str]]:
    """Per sweep: its steps, why it stopped, its knee in words and the bottleneck named."""
    rows = []
    for r in summary["sweep"]:
        k = r["knee"]
        detail = f", p50 {ms(k['p50_ms'])} ms, p99 {ms(k['p99_ms'])} ms" if k else ""
        neck = r.get("bottleneck") or {}
        rows.append([
            r["model"], r["target"], r["kind"], " → ".join(f"{p[r['load_key']]:g}" for p in r["points"]), r["stopped"],
            sweep.knee_text(k, r["points"], r["load_key"], detail), neck_cell(neck), neck.get("why", ""),
        ])
    return rows


def pair_heads(summary: dict, a: str, b: str) -> str:
    """A pair's quotient for a column heading, naming both stacks as they ran: "TorchServe ÷ TF-compat"."""
    names = verdict.stack_names(summary)
    return f"{verdict.short_name(a, names)} ÷ {verdict.short_name(b, names)}"


def ratio_sections(summary: dict) -> list[tuple[str, list[str], list[list[str]]]]:
    """The same-run ratios (bench.ratios), one table per pair of stacks, its columns naming both.
    Rows of older summaries carry no pair: they are TorchServe over the TF side."""
    by_pair: dict[tuple[str, str], list[dict]] = {}
    for r in summary.get("ratios") or []:
        by_pair.setdefault((r.get("a", "torchserve"), r.get("b", "tfserving")), []).append(r)
    out = []
    tf = verdict.stack_names(summary)["tfserving"]
    for (a, b), rows in by_pair.items():
        q = pair_heads(summary, a, b)
        title = f"{FRAMEWORK.get(a, a)} / {FRAMEWORK.get(b, b)} ratios (same run)" + (f" — the TF side: {tf}" if "tfserving" in (a, b) else "")
        out.append((
            title,
            ["model", "path", f"req/s ratio ({q})", f"p50 ratio ({q})", f"p99 ratio ({q})"],
            [[r["model"], r["path"], f"{r['rps_ratio']:.3f}", fmt(r["p50_ratio"], ".3f"), f"{r['p99_ratio']:.3f}"] for r in rows],
        ))
    return out


def framework_section(summary: dict, model: str, o: dict) -> tuple[str, list[str], list[list[str]]] | None:
    """Per pair of stacks measured both ways: a's throughput over b's direct and via the gateway
    (overhead.framework_ratios; an older summary's one `framework_ratio` is TorchServe over the TF side)."""
    ratios = o.get("framework_ratios")
    if ratios is None:
        ratios = overhead.framework_ratios(summary.get("results") or [], model) or ([o["framework_ratio"]] if o.get("framework_ratio") else [])
    if not ratios:
        return None
    rows = []
    for r in ratios:
        q = pair_heads(summary, r.get("a", "torchserve"), r.get("b", "tfserving"))
        rows.append([model, q, fmt(r["direct"], ".3f"), fmt(r["via_gateway"], ".3f"), fmt(r["gateway_vs_direct"], ".3f")])
    head = ["model", "stacks (A ÷ B)", "A ÷ B req/s direct", "A ÷ B req/s via gateway", "via gateway / direct (goal within 10% of 1)"]
    return f"Throughput ratios between stacks through the gateway against direct — {model}", head, rows


def sections(summary: dict) -> list[tuple[str, list[str], list[list[str]]]]:
    out = [("Results (median over repetitions)", *results_table(summary))] if summary["results"] else []
    head, rows = latency_table(summary)
    if rows:
        out.append(("Latency in µs (HDR histograms, median over repetitions) beside locust's rounded figures", head, rows))
    head, rows = stability_table(summary)
    if rows:
        out.append((f"Stability ({stability_rule(summary['config'])})", head, rows))
    out += ratio_sections(summary)
    if summary["ramp"]:
        rows = []
        for r in summary["ramp"]:
            best = r["best"]
            windows = [p["window_s"] for p in r["points"] if "window_s" in p]
            span = f"{min(windows):.2f}–{max(windows):.2f} of {summary['config']['ramp_step_s']}" if windows else ""
            rows.append([r["model"], r["target"], f"{r['slo_p99_ms']:g}", "none met the objective" if best is None else f"{best['rps']:.1f} req/s at {best['users']} users (p99 {ms(best['p99_ms'])} ms)", span])
        out.append(("Step ramp: highest throughput meeting the p99 objective", ["model", "target", "p99 objective ms", "best", "step window s (measured)"], rows))
    if summary.get("sweep"):
        out.append(("Sweep: latency against throughput, the knee and the bottleneck", ["model", "target", "sweep", "steps", "stopped", "knee", NECK_HEAD, "why"], sweep_summary_rows(summary)))
        out.append(("Sweep steps (one run each)", *sweep_table(summary)))
    if any(r.get("bottleneck") for r in summary["results"]):
        out.append(("Bottleneck: CPU of each component over the counted window, in cores and as a share of the machine", ["model", "target", NECK_HEAD, "why"],
                    [[r["model"], r["target"], neck_cell(r.get("bottleneck")), (r.get("bottleneck") or {}).get("why", "")] for r in summary["results"]]))
    for model, o in summary.get("overhead", {}).items():
        rows = []
        for stack, sat in o["saturation"].items():
            lat, inp = o["added_latency"].get(stack, {}), (o.get("inprocess") or {}).get(stack)
            rows.append(
                [
                    model, stack, f"{sat['direct_rps']:.0f}", f"{sat['gateway_rps']:.0f}", fmt(sat["gateway_to_direct"], ".2f"), fmt(sat["gateway_cpu_us_per_request"], ".0f"),
                    fmt(lat.get("added_p50_ms"), ".3f") or "skipped", fmt(lat.get("added_p99_ms"), ".3f") or "skipped",
                    f"{inp['rows_per_s']:.0f} ({inp['framework']}, batch {inp['batch']})" if inp else "not measured", fmt((o.get("served_to_inprocess") or {}).get(stack), ".3f"),
                ]
            )
        out.append(
            (
                f"Gateway overhead and framework ceiling — {model}",
                ["model", "stack", "direct req/s", "via gateway req/s", "gateway/direct", "gateway CPU µs/req", "added p50 ms (light load)", "added p99 ms (light load)", "in-process rows/s", "served/in-process"],
                rows,
            )
        )
        out.append(reference_section(model, o))
        section = framework_section(summary, model, o)
        if section:
            out.append(section)
    env = summary["environment"]
    proxies = {f"reference proxy: {name}": ref["implementation"] for name, ref in env.get("reference_proxies", {}).items()}
    ort = (env.get("versions") or {}).get("onnxruntime", "version not recorded")
    kserve = {"kserve side": f"{verdict.KSERVE_LABEL} (KServe's Python model server, onnxruntime {ort})"} if "kserve" in verdict.stacks_in(summary) else {}
    out.append(("Environment", ["item", "value"], [[k, str(v)] for k, v in {**env["versions"], **env["machine"], "tfserving_implementation": env["tfserving_implementation"], **kserve, **proxies}.items()]))
    out.append(("Stack configuration (the same for every stack)", ["setting", "value"], [[k, str(v)] for k, v in summary["stack"].items()]))
    out.append(("Load profile", ["setting", "value"], [[k, str(v)] for k, v in summary["config"].items() if k not in ("urls",)]))
    return out


def write(summary: dict, out: Path) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    charts = write_charts(summary, out)
    summary["charts"] = charts
    summary["caveats"] = caveats(summary)
    summary["verdict"] = verdict.verdict(summary)  # the conclusion first, with the rule that allows it
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))

    md = [f"# twinserve comparison — {summary['environment']['machine']['time']}", ""]
    md += [verdict.markdown_block(summary)]
    md += ["## Caveats", ""] + [f"- {c}" for c in summary["caveats"]] + [""]
    if summary["warnings"]:
        md += ["## Warnings", ""] + [f"- {w}" for w in summary["warnings"]] + [""]
    for title, head, rows in sections(summary):
        md += [f"## {title}", "", md_table(head, rows), ""]
    md += ["## Charts", ""] + [f"![{c}]({c})" for c in charts] + [""]
    (out / "report.md").write_text("\n".join(md))

    style = "body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}th{background:#f3f3f3}.warn{color:#a00}"
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>twinserve comparison</title><style>{style}</style></head><body>"]
    parts.append(f"<h1>twinserve comparison — {html.escape(summary['environment']['machine']['time'])}</h1>")
    parts.append(verdict.html_block(summary) + "<h2>Caveats</h2><ul>")
    parts += [f"<li>{html.escape(c).replace('**', '')}</li>" for c in summary["caveats"]]
    parts.append("</ul>")
    if summary["warnings"]:
        parts.append("<h2>Warnings</h2><ul>" + "".join(f"<li class='warn'>{html.escape(w)}</li>" for w in summary["warnings"]) + "</ul>")
    for title, head, rows in sections(summary):
        parts.append(f"<h2>{html.escape(title)}</h2>{html_table(head, rows)}")
    parts.append("<h2>Charts</h2>" + "".join(f"<p><img src='{c}' alt='{c}'></p>" for c in charts))
    parts.append("</body></html>")
    (out / "report.html").write_text("".join(parts))
    return {"summary": out / "summary.json", "markdown": out / "report.md", "html": out / "report.html"}
