"""The verdict at the top of a report: per model, pair of stacks and path, which stack is faster, by
how much, and whether that exceeds run-to-run noise.

**The pairs** (`PAIRS`), each judged on its own by the rules below, for every pair whose two stacks
both ran: TorchServe against the TF side, TorchServe against KServe + ONNX Runtime, and the TF side
against KServe + ONNX Runtime. TorchServe is in the first two because it is the stack people are
leaving: each destination is read against it. The third is kept although it makes the verdict
longer (at most three pairs × two paths, four or five lines each, per model) because it is the
choice between the two destinations, and it cannot be read off the other two: ratios compose, but
"beyond noise" does not (each pair's ranges must separate on their own). A run of two stacks gives
only their pair, worded exactly as before the third stack existed.

**The rule: non-overlapping min–max ranges over at least 3 repetitions per side.** A difference is
called significant when every repetition of one stack beat every repetition of the other (the
ranges do not overlap, ties count as overlap). Why this rule rather than a bootstrap interval:

- with the 3–5 repetitions a bench affords, a percentile bootstrap of the ratio of medians is
  coarse (3 values have 10 distinct resamples) and its interval always lies inside the range of
  the per-repetition ratios, so it excludes 1.0 more readily than the ranges do: it claims more
  with less right to;
- the ranges rule is a rank test with an exact, stated false-alarm rate and no distribution
  assumed: if both stacks were equally fast (repetitions exchangeable), ranges separated either way
  arise with probability 2 / C(n1 + n2, n1): 10% at 3 + 3, 2.9% at 4 + 4, 0.8% at 5 + 5 (half that
  in one named direction). The verdict prints that figure beside the claim;
- it reads in one line: "632–743 against 1080–1209 req/s".

Fewer than 3 repetitions on either side: "not enough repetitions: no claim" (2 + 2 non-overlapping
ranges happen by chance a third of the time). A target the bench marked not `stable` (its own
steadiness check; missing means unknown) gets no claim either.

**The gateway flag.** On a shared machine the gateway can saturate first; then every request through
it waits on the gateway and the pair's throughput ratio via the gateway drifts to 1.0, measuring the
gateway rather than the stacks (seen here: 1.00 via the gateway against 0.76 direct). The via-gateway
row is flagged "measured the gateway, not the stacks" when its throughput ratio is much closer to
1.0 than the direct one: |ln r_gateway| <= 0.5·|ln r_direct| with the direct ratio at least 10% from
1.0, or (with enough repetitions) the direct difference is significant and the gateway one is not.
Where the summary has the gateway's CPU (each via-gateway target's `server.gateway`, else
`overhead.<model>.saturation`), the flag cites it: CPU per request against the stack's own, and
the share of a core it used; otherwise it says it rests on the ratios alone.

A via-gateway pair measured without its direct pair is flagged on the gateway's CPU alone: flagged
when the gateway saturated (`bottleneck.saturated == "gateway"`, loadtests/sweep.py).

**A sweep run** (`--profile sweep`) has no repetitions: one run per step. Each pair's path is
compared at the highest step every sweep of that pair ran (the same load for both stacks and, when a
step is common to the pair's four sweeps, for both paths), one run a side, so no difference is called beyond noise
("one run per sweep step"); each stack's own knee is listed beside it. Its gateway flag rests on the
gateway's CPU at every via-gateway step — saturated at any step: flagged, with the steps named —
not on the ratios: with one run a side, and a closed loop whose added hop compresses the ratio
even when the gateway is idle, a compressed ratio alone is only noted.

Every line names the TF side as what actually ran (`environment.tfserving_implementation`): the
TF-Serving-compatible server is never called TensorFlow Serving. The third stack is named
"KServe + ONNX Runtime" (KServe's Python model server running the model's ONNX export).

Rows are keyed by the stacks' own names: a row's `pair` is [a, b] (a first in `PAIRS`), its
`names` their labels; each comparison has a side under each stack's name and `a_over_b`, the ratio
of a's median to b's (the two-stack rows called it `ts_over_tf`).

Tolerant of older summaries: p99 comes from each repetition's `latency_us.p99` (µs) when present,
else `p99_ms`; with no repetitions, from `spread`, else `median`.
"""

from __future__ import annotations

import html
import math
import statistics

from loadtests import sweep
from loadtests.targets import STACKS, TARGETS

MIN_REPETITIONS = 3
# Every stack against TorchServe (the stack people are leaving), then the TF side against KServe.
PAIRS: tuple[tuple[str, str], ...] = (("torchserve", "tfserving"), ("torchserve", "kserve"), ("tfserving", "kserve"))
KSERVE_LABEL = "KServe + ONNX Runtime"
# A stack in a throughput quotient ("TorchServe/TF throughput 0.92"): short, never TF Serving's name.
RATIO_NAMES = {"torchserve": "TorchServe", "tfserving": "TF", "kserve": "KServe"}


def pair_paths(a: str, b: str) -> tuple[tuple[str, str, str], ...]:
    """A pair's paths: (path, a's target, b's target), direct and via the gateway."""
    return (("direct", a, b), ("via gateway", f"gateway-{a}", f"gateway-{b}"))


PATHS = pair_paths("torchserve", "tfserving")  # the first pair's; kept for callers of the two-stack verdict
# A via-gateway ratio "much closer to 1.0": at most half the direct ratio's distance, in log terms.
COMPRESSION = 0.5
MIN_DIRECT_GAP = 1.10  # the direct ratio must differ from 1.0 by at least 10% for the flag to mean anything
METRICS = {"rps": ("throughput", "req/s", True), "p99": ("p99", "ms", False)}  # name, unit, higher is better


def rep_value(rep: dict, metric: str) -> float | None:
    """One repetition's figure: req/s, or a latency percentile in ms (µs figures preferred)."""
    if metric == "rps":
        v = rep.get("rps")
    else:
        lat = rep.get("latency_us") or {}
        us = lat.get(metric) if lat.get("count", 1) else None  # an empty recording counts as none
        v = us / 1000.0 if isinstance(us, (int, float)) else rep.get(f"{metric}_ms")
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def values(entry: dict, metric: str) -> list[float]:
    """The per-repetition figures of one target (an old summary's spread or median when that is all there is)."""
    reps = entry.get("repetitions") or []
    out = [rep_value(r, metric) for r in reps]
    if reps and all(v is not None for v in out):
        return out  # type: ignore[return-value]
    key = "rps" if metric == "rps" else f"{metric}_ms"
    spread = (entry.get("spread") or {}).get(key)
    if isinstance(spread, list) and spread and all(isinstance(v, (int, float)) for v in spread):
        return [float(v) for v in spread]
    median = (entry.get("median") or {}).get(key)
    return [float(median)] if isinstance(median, (int, float)) else []


def repetitions(entry: dict, metric: str) -> int:
    """How many repetitions back a figure (a spread or median fallback counts what it stands for)."""
    reps = entry.get("repetitions") or []
    return len(reps) if reps else len(values(entry, metric))


def tf_label(summary: dict) -> str:
    """The TF side as it ran: never the compatible server under TensorFlow Serving's name."""
    impl = str((summary.get("environment") or {}).get("tfserving_implementation") or "")
    low = impl.lower()
    if not impl:
        return "the TF backend (implementation not recorded)"
    if "compat" in low or "not tensorflow serving" in low:
        return "the TF-Serving-compatible server"
    if "tensorflow serving" in low or "tensorflow_model_server" in low:
        return "TensorFlow Serving"
    return f"the TF backend ({impl})"


def tf_short(label: str) -> str:
    """The TF side in a figure: short, and still not TensorFlow Serving's name unless it ran."""
    return {"the TF-Serving-compatible server": "TF-compat", "TensorFlow Serving": "TF Serving"}.get(label, "TF")


def stack_names(summary: dict) -> dict[str, str]:
    """Each stack as it ran, in prose."""
    return {"torchserve": "TorchServe", "tfserving": tf_label(summary), "kserve": KSERVE_LABEL}


def short_name(stack: str, names: dict[str, str]) -> str:
    """A stack beside its figures: the TF side short (`tf_short`), the others by their names."""
    return tf_short(names[stack]) if stack == "tfserving" else names[stack]


def ratio_text(pair: tuple[str, str] | list[str]) -> str:
    """A pair's quotient in words: "TorchServe/TF", "TorchServe/KServe", "TF/KServe"."""
    return "/".join(RATIO_NAMES.get(s, s) for s in pair)


def stacks_in(summary: dict) -> list[str]:
    """The stacks a run loaded (its results' and sweeps' targets), in STACKS' order."""
    targets = [r.get("target") for key in ("results", "sweep") for r in summary.get(key) or [] if isinstance(r, dict)]
    found = {TARGETS[t].stack for t in targets if t in TARGETS}
    return [s for s in STACKS if s in found]


def chance(n1: int, n2: int) -> float:
    """P(min–max ranges do not overlap, either way) when all n1 + n2 repetitions are exchangeable."""
    return 2 / math.comb(n1 + n2, n1)


def compare(ea: dict, eb: dict, metric: str, names: dict[str, str], pair: tuple[str, str] = PAIRS[0]) -> dict:
    """One metric, stack `pair[0]` (entry `ea`) against `pair[1]` (`eb`): the faster, the factor, and the claim."""
    label, unit, higher_better = METRICS[metric]
    sa, sb = pair
    a, b = values(ea, metric), values(eb, metric)
    out: dict = {"metric": metric, "label": label, "unit": unit, "pair": [sa, sb]}
    if not a or not b:
        return {**out, "faster": None, "significant": None, "claim": "not measured"}
    ma, mb = statistics.median(a), statistics.median(b)
    na, nb = repetitions(ea, metric), repetitions(eb, metric)
    out.update({
        sa: {"median": ma, "range": [min(a), max(a)], "n": na},
        sb: {"median": mb, "range": [min(b), max(b)], "n": nb},
        "a_over_b": ma / mb if mb else None,
    })
    if ma <= 0 or mb <= 0:
        return {**out, "faster": None, "factor": None, "significant": None, "claim": "a zero figure: no claim"}
    if ma == mb:
        faster = None
    else:
        faster = sa if (ma > mb) == higher_better else sb
    out["faster"] = faster
    out["factor"] = max(ma, mb) / min(ma, mb)
    unsteady = [names[k] for k, e in ((sa, ea), (sb, eb)) if e.get("stable") is False]
    if min(na, nb) < MIN_REPETITIONS:
        out.update(significant=None, claim=f"not enough repetitions (n={min(na, nb)} < {MIN_REPETITIONS}): no claim")
    elif unsteady:
        out.update(significant=None, claim=f"no claim: the bench marked {' and '.join(unsteady)} not stable")
    else:
        separated = max(a) < min(b) or max(b) < min(a)
        p = chance(na, nb)
        out.update(
            significant=separated,
            chance=p,
            claim=(f"beyond noise: the {na} + {nb} repetitions' ranges do not overlap (chance {p:.1%} if equal)" if separated
                   else f"within noise: the {na} + {nb} repetitions' ranges overlap"),
        )
    return out


def gateway_cpu(summary: dict, model: str, entries: dict[str, dict], direct: dict[str, dict]) -> dict[str, dict]:
    """The gateway's CPU per request (ms) and cores busy, per stack, with the stack's own CPU when measured directly."""
    saturation = ((summary.get("overhead") or {}).get(model) or {}).get("saturation") or {}
    out = {}
    for stack, e in entries.items():
        ms = ((e.get("server") or {}).get("gateway") or {}).get("cpu_ms_per_request")
        if ms is None and isinstance((saturation.get(stack) or {}).get("gateway_cpu_us_per_request"), (int, float)):
            ms = saturation[stack]["gateway_cpu_us_per_request"] / 1000
        if not isinstance(ms, (int, float)):
            continue
        rps = statistics.median(values(e, "rps")) if values(e, "rps") else None
        stack_ms = ((direct.get(stack) or {}).get("server") or {}).get("stack", {}).get("cpu_ms_per_request")
        out[stack] = {"gateway_ms": ms, "cores": ms * rps / 1000 if rps else None, "stack_direct_ms": stack_ms}
    return out


IDLE_SHARE = 0.1  # a gateway below this share of each stack's CPU per request cannot be what the comparison measured


def gateway_flag(summary: dict, model: str, direct_row: dict, gw_row: dict, entries: dict, direct_entries: dict, names: dict) -> dict:
    """Did the via-gateway comparison measure the gateway rather than the stacks? (throughput ratios)"""
    rd, rg = direct_row["throughput"].get("a_over_b"), gw_row["throughput"].get("a_over_b")
    if not rd or not rg:
        alone = saturation_flag(entries, names)  # the gateway's CPU still speaks
        return {**alone, "why": "ratios not measured" + (f"; {alone['why']}" if alone["flag"] else ""), "compressed": False}
    ld, lg = abs(math.log(rd)), abs(math.log(rg))
    compressed = ld >= math.log(MIN_DIRECT_GAP) and lg <= COMPRESSION * ld
    lost = direct_row["throughput"].get("significant") is True and gw_row["throughput"].get("significant") is False and lg < ld
    saturated = saturated_in_front(entries)
    cpu = gateway_cpu(summary, model, entries, direct_entries)
    # significance lost through a gateway that spent a sliver of each stack's CPU per request is noise,
    # not the gateway's doing (mobilenet: 1.7 ms in the gateway against 30-39 ms in the stacks was flagged)
    idle = bool(cpu) and len(cpu) == len(entries) and all(c["stack_direct_ms"] and c["gateway_ms"] < IDLE_SHARE * c["stack_direct_ms"] for c in cpu.values())
    flag = compressed or (lost and not idle) or bool(saturated)
    why = f"{ratio_text(gw_row['pair'])} throughput {rg:.2f} via the gateway against {rd:.2f} direct"
    if lost and not compressed:
        why += "; the direct difference is beyond noise, the gateway's is not"
        if idle:
            why += f" — but the gateway spent under {IDLE_SHARE:.0%} of each stack's CPU per request: noise, not the gateway"
    if saturated:
        why += "; " + saturation_text(entries, saturated, names)
    if cpu:
        parts = []
        for stack, c in cpu.items():
            text = f"{c['gateway_ms']:.2f} ms CPU per request in front of {names[stack]}"
            if c["stack_direct_ms"]:
                text += f" (the stack itself: {c['stack_direct_ms']:.2f} ms direct)"
            if c["cores"] is not None:
                text += f", {c['cores']:.2f} of a core"
            parts.append(text)
        costlier = [s for s, c in cpu.items() if c["stack_direct_ms"] and c["gateway_ms"] > c["stack_direct_ms"]]
        evidence = "the gateway spent " + "; ".join(parts)
        if flag and costlier:
            evidence += f" — more than {' and '.join(names[s] for s in costlier)} per request: the gateway is the costlier hop"
        basis = "ratios and the gateway's CPU"
    else:
        evidence = "no CPU figures of the gateway in this summary: judged on the ratios alone"
        basis = "ratios alone"
    return {"flag": flag, "why": why, "evidence": evidence, "basis": basis, "direct_ratio": rd, "gateway_ratio": rg, "cpu": cpu, "compressed": compressed, "saturated": saturated}


def saturated_in_front(entries: dict[str, dict]) -> list[str]:
    """The stacks in front of which the gateway saturated (loadtests/sweep.py `bottleneck`)."""
    return [s for s, e in entries.items() if ((e.get("bottleneck") or {}).get("saturated")) == "gateway"]


def saturation_text(entries: dict[str, dict], saturated: list[str], names: dict[str, str]) -> str:
    """Where the gateway saturated, in its own measured words (a sweep entry names its steps too)."""
    parts = []
    for s in saturated:
        e = entries[s]
        where = f" {e['saturated_at']}" if e.get("saturated_at") else ""
        parts.append(f"{names[s]}{where} ({(e.get('bottleneck') or {}).get('why') or 'saturated'})")
    return f"the gateway saturated first in front of {' and '.join(parts)}: this measured the gateway, not the stacks"


def saturation_flag(entries: dict[str, dict], names: dict[str, str]) -> dict:
    """A via-gateway pair with no direct pair to hold its ratio against: flagged on the gateway's CPU alone."""
    saturated = saturated_in_front(entries)
    why = saturation_text(entries, saturated, names) if saturated else "the gateway did not saturate"
    return {"flag": bool(saturated), "why": why, "evidence": "no direct pair in this run: judged on the gateway's CPU alone", "basis": "the gateway's CPU alone", "saturated": saturated}


def pair_row(summary: dict, model: str, path: str, pair: tuple[str, str], names: dict[str, str], ea: dict, eb: dict, one_run_each: bool = False) -> dict:
    """One verdict row: a pair of stacks on one path, throughput and p99 compared."""
    a, b = pair
    c = one_run if one_run_each else (lambda x: x)
    return {
        "model": model, "path": path, "pair": [a, b], "names": {a: names[a], b: names[b]}, "tf_label": names["tfserving"],
        "tfserving_implementation": (summary.get("environment") or {}).get("tfserving_implementation"),
        "throughput": c(compare(ea, eb, "rps", names, pair)), "p99": c(compare(ea, eb, "p99", names, pair)),
        "stable": {a: None if one_run_each else ea.get("stable"), b: None if one_run_each else eb.get("stable")},
    }


def verdict(summary: dict) -> list[dict]:
    """One row per model, pair of stacks (`PAIRS`) and path (direct; via gateway when measured):
    throughput and p99 compared."""
    results = [r for r in summary.get("results") or [] if isinstance(r, dict)]
    index = {(r.get("model"), r.get("target")): r for r in results}
    names = stack_names(summary)
    rows: list[dict] = []
    for model in dict.fromkeys(r.get("model") for r in results):
        for pair in PAIRS:
            by_path = {}
            for path, ta, tb in pair_paths(*pair):
                ea, eb = index.get((model, ta)), index.get((model, tb))
                if not ea or not eb:
                    continue
                row = pair_row(summary, model, path, pair, names, ea, eb)
                by_path[path] = (row, {pair[0]: ea, pair[1]: eb})
                rows.append(row)
            if "direct" in by_path and "via gateway" in by_path:
                (drow, dent), (grow, gent) = by_path["direct"], by_path["via gateway"]
                grow["gateway"] = gateway_flag(summary, model, drow, grow, gent, dent, names)
            elif "via gateway" in by_path:
                grow, gent = by_path["via gateway"]
                grow["gateway"] = saturation_flag(gent, names)
    return rows + sweep_verdict(summary, names)


SWEEP_CLAIM = "one run per sweep step: not tested against noise, no claim"


def common_step(sweeps: list[dict]) -> float | None:
    """The highest load that every one of these sweeps ran (None: no step in common)."""
    loads = [{p[s["load_key"]] for p in s["points"]} for s in sweeps]
    common = set.intersection(*loads) if loads else set()
    return max(common) if common else None


def gateway_steps(s: dict) -> list[dict]:
    """The points of a sweep whose gateway saturated (loadtests/sweep.py `bottleneck`)."""
    return [p for p in s["points"] if (p.get("bottleneck") or {}).get("saturated") == "gateway"]


def sweep_entry(s: dict, load: float) -> dict:
    """One sweep step as a one-repetition target entry, so `compare` and `gateway_flag` read it:
    CPU per request from the step's cores over its req/s, and, for a via-gateway sweep, the
    gateway's saturation at any step (it invalidates those steps, whichever step is compared)."""
    point = next(p for p in s["points"] if p[s["load_key"]] == load)
    comps = (point.get("bottleneck") or {}).get("components") or {}
    rps = point.get("rps") or 0
    server = {role: {"cpu_ms_per_request": round(1000 * c["cores"] / rps, 4)} for role, c in comps.items() if role != "load generator" and rps > 0}
    entry = {"model": s["model"], "target": s["target"], "via_gateway": s.get("via_gateway"), "repetitions": [point], "server": server}
    hits = gateway_steps(s)
    if hits:
        entry["bottleneck"] = hits[0]["bottleneck"]
        entry["saturated_at"] = "at " + ", ".join(sweep.load_text(p[s["load_key"]], s["load_key"]) for p in hits)
    return entry


def sweep_pairs(summary: dict) -> dict[str, dict[tuple[str, str], dict[str, tuple[dict, dict]]]]:
    """Per model, per pair of stacks, per path, the pair's two sweeps a sweep run measured."""
    index = {(s.get("model"), s.get("target")): s for s in summary.get("sweep") or [] if isinstance(s, dict) and s.get("points")}
    out: dict[str, dict[tuple[str, str], dict[str, tuple[dict, dict]]]] = {}
    for model in dict.fromkeys(m for m, _ in index):
        for pair in PAIRS:
            for path, ta, tb in pair_paths(*pair):
                sa, sb = index.get((model, ta)), index.get((model, tb))
                if sa and sb:
                    out.setdefault(model, {}).setdefault(pair, {})[path] = (sa, sb)
    return out


def sweep_verdict(summary: dict, names: dict[str, str]) -> list[dict]:
    """A sweep run's rows: each pair's path at the highest step in common (see the module docstring)."""
    rows: list[dict] = []
    for model, by_pair in sweep_pairs(summary).items():
        for pair, pairs in by_pair.items():
            a, b = pair
            everywhere = common_step([s for both in pairs.values() for s in both])
            by_path = {}
            for path, (sa, sb) in pairs.items():
                load = everywhere if everywhere is not None else common_step([sa, sb])
                if load is None:
                    continue
                ents = {a: sweep_entry(sa, load), b: sweep_entry(sb, load)}
                row = pair_row(summary, model, path, pair, names, ents[a], ents[b], one_run_each=True)
                row["sweep"] = {"kind": sa.get("kind"), "load_key": sa["load_key"], "load": load, "knees": {a: knee_of(sa), b: knee_of(sb)}}
                by_path[path] = (row, ents)
                rows.append(row)
            if "via gateway" in by_path:
                grow, gent = by_path["via gateway"]
                if "direct" in by_path:
                    drow, dent = by_path["direct"]
                    grow["gateway"] = sweep_flag(gateway_flag(summary, model, drow, grow, gent, dent, names), pairs["via gateway"])
                else:
                    grow["gateway"] = sweep_flag(saturation_flag(gent, names), pairs["via gateway"])
    return rows


def one_run(c: dict) -> dict:
    """A sweep comparison's claim: one run a side is never tested against noise."""
    if str(c.get("claim", "")).startswith("not enough repetitions"):
        c["claim"] = SWEEP_CLAIM
    return c


def knee_of(s: dict) -> dict:
    """A sweep's knee with what a line needs to say it (loadtests/sweep.py `knee_text`)."""
    return {"knee": s.get("knee"), "text": sweep.knee_text(s.get("knee"), s["points"], s["load_key"])}


def sweep_flag(g: dict, via: tuple[dict, dict]) -> dict:
    """A sweep's gateway flag rests on the gateway's CPU at every step, not on the ratios: one run a
    side, and a closed loop whose added hop compresses the ratio even with an idle gateway. A
    compressed ratio without saturation is kept as a note."""
    peak = max((((p.get("bottleneck") or {}).get("components") or {}).get("gateway") or {}).get("cores", 0.0) for s in via for p in s["points"])
    out = {**g, "flag": bool(g["saturated"]), "basis": f"the gateway's CPU at every step ({g['basis']} at the compared step)"}
    idle = f"the gateway did not saturate at any step (at most {sweep.cores_text(peak)})"
    if not g["saturated"] and g.get("compressed"):
        out["note"] = (f"{g['why']}, but {idle}: one run a side, and a closed loop's added hop compresses the ratio by itself — "
                       "a hint, not a finding")
    elif not g["saturated"]:
        out["note"] = f"{idle}: these figures are the stacks' behind it" + (f" ({g['why']})" if g.get("direct_ratio") else "")
    return out


def fmt(v: float, unit: str) -> str:
    if unit == "req/s":
        return f"{v:.0f}" if v >= 100 else f"{v:.1f}"
    return f"{v:.3g}" if v < 10 else f"{v:.1f}" if v < 100 else f"{v:.0f}"


def figure(side: dict, unit: str) -> str:
    """A side's median and [min–max]; one run alone has no range to show."""
    if side.get("n", 0) <= 1:
        return fmt(side["median"], unit)
    return f"{fmt(side['median'], unit)} [{fmt(side['range'][0], unit)}–{fmt(side['range'][1], unit)}]"


def path_label(r: dict) -> str:
    """The path, and for a sweep the step it was compared at."""
    sw = r.get("sweep")
    return f"{r['path']} at {sweep.load_text(sw['load'], sw['load_key'])}" if sw else r["path"]


def knee_line(r: dict, names: dict[str, str]) -> str:
    """Each stack's own knee on a sweep row's path."""
    knees = r["sweep"]["knees"]
    return f"{r['path']} · knee: " + "; ".join(f"{short_name(s, names)} {knees[s]['text']}" for s in r["pair"])


def metric_line(c: dict, names: dict[str, str]) -> str:
    sa, sb = c.get("pair") or PAIRS[0]
    if sa not in c:
        return f"{c['label']}: {c['claim']}"
    unit = c["unit"]
    figures = f"{short_name(sa, names)} {figure(c[sa], unit)} vs {short_name(sb, names)} {figure(c[sb], unit)} {unit}"
    if c.get("faster") is None:
        head = f"{c['label']}: no difference" if c.get("factor") == 1.0 else f"{c['label']}"
    else:
        word = "faster" if c["metric"] == "rps" else "lower"
        head = f"{c['label']}: **{names[c['faster']]}** {word}, {c['factor']:.2f}×"
    return f"{head} ({figures}) — {c['claim']}"


NO_PAIR = "No pair of serving stacks (TorchServe, the TF side, KServe + ONNX Runtime) was measured in this run: no verdict."


def render_markdown(rows: list[dict]) -> str:
    """A few lines per model and pair: each path's throughput and p99 verdict, then the gateway flag."""
    if not rows:
        return NO_PAIR
    lines: list[str] = []
    for model, pair in dict.fromkeys((r["model"], tuple(r["pair"])) for r in rows):
        mine = [r for r in rows if r["model"] == model and tuple(r["pair"]) == pair]
        names = mine[0]["names"]
        lines.append(f"**{model}** — {names[pair[0]]} against {names[pair[1]]}")
        for r in mine:
            for key in ("throughput", "p99"):
                lines.append(f"- {path_label(r)} · {metric_line(r[key], names)}")
            if r.get("sweep"):
                lines.append(f"- {knee_line(r, names)}")
            g = r.get("gateway")
            if g and g["flag"]:
                lines.append(f"- ⚠ via gateway: **measured the gateway, not the stacks** ({g['why']}; {g['evidence']}). Compare the stacks on the direct path.")
            elif g and g.get("note"):
                lines.append(f"- via gateway: {g['note']}.")
        lines.append("")
    return "\n".join(lines).rstrip()


RULE = (
    "Rule: a difference is beyond noise when the min–max ranges of at least 3 repetitions per side do not overlap "
    "(the chance of that with no real difference is shown); fewer than 3 repetitions: no claim. "
    "Figures: median [min–max] over repetitions; factor: the ratio of the medians."
)


SWEEP_RULE = (
    "Sweep: one run per step, so each path is compared at the highest step every sweep of the model ran (the same load on both sides) "
    "and no difference is called beyond noise; each stack's knee is its own. The gateway flag rests on the gateway's CPU at every step."
)


def rules(rows: list[dict]) -> str:
    """The rules the rows were judged by: a sweep run's alone, the repetitions' rule alone, or both."""
    swept = [r for r in rows if r.get("sweep")]
    sweep_rule = SWEEP_RULE
    if len({tuple(r["pair"]) for r in swept}) > 1:  # each pair at its own sweeps' highest common step
        sweep_rule = sweep_rule.replace("every sweep of the model ran", "every sweep of the pair ran")
    if rows and len(swept) == len(rows):
        return sweep_rule + " Figures: each stack's one run at that step; factor: their ratio."
    return RULE + (" " + sweep_rule if swept else "")


def sides(summary: dict) -> str:
    """What ran on the sides that need saying: the TF side's implementation (unless the run had no
    TF side but KServe), and KServe's runtime when KServe ran."""
    env = summary.get("environment") or {}
    present = stacks_in(summary)
    out = []
    if "tfserving" in present or "kserve" not in present:
        out.append(f"TF side: {env.get('tfserving_implementation') or 'not recorded'}.")
    if "kserve" in present:
        ort = (env.get("versions") or {}).get("onnxruntime")
        out.append(f"KServe side: {KSERVE_LABEL} (KServe's Python model server running the model's ONNX export{f', onnxruntime {ort}' if ort else ''}).")
    return " ".join(out)


def markdown_block(summary: dict) -> str:
    """The verdict section for report.md (heading included)."""
    rows = verdict(summary)
    return "\n".join(["## Verdict", "", f"{sides(summary)} {rules(rows)}", "", render_markdown(rows), ""])


def html_block(summary: dict) -> str:
    """The verdict section for report.html (heading included): the same text, escaped."""
    rows = verdict(summary)
    out = ["<h2>Verdict</h2>", f"<p>{html.escape(sides(summary))} {html.escape(rules(rows))}</p>"]
    if not rows:
        return "".join(out + [f"<p>{html.escape(NO_PAIR)}</p>"])
    for block in render_markdown(rows).split("\n\n"):
        lines = block.splitlines()
        items = "".join(("<li class='warn'>" if "⚠" in x else "<li>") + bold(x[2:]) + "</li>" for x in lines[1:])
        out.append(f"<p>{bold(lines[0])}</p><ul>{items}</ul>")
    return "".join(out)


def bold(text: str) -> str:
    """Markdown's **bold** as <strong>, everything else escaped."""
    parts = html.escape(text).split("**")
    return "".join(f"<strong>{p}</strong>" if i % 2 else p for i, p in enumerate(parts))
