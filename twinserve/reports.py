"""`twinserve report`: read finished bench runs. `report diff A B` compares two runs (exit 1 on a
regression beyond threshold and noise, for CI); `report verdict RUN` prints one run's verdict."""

from __future__ import annotations

import argparse
import json
import sys

from loadtests import diff as rundiff
from loadtests import verdict as runverdict

STYLE = {"improved": "green", "regressed": "red", "within noise": "dim", "only in A": "yellow", "only in B": "yellow"}


def fail(command: str, message: str) -> int:
    print(f"twinserve report {command}: {message}", file=sys.stderr)
    return 2


def figure(value: float, unit: str) -> str:
    if unit == "req/s":
        return f"{value:.1f}"
    return f"{value:.3g}" if value < 100 else f"{value:.0f}"


def cmd_diff(args: argparse.Namespace) -> int:
    from rich.markup import escape
    from rich.table import Table

    from twinserve.console import console

    try:
        a, b = rundiff.load(args.a), rundiff.load(args.b)
    except rundiff.DiffInputError as exc:
        return fail("diff", str(exc))
    rows = rundiff.diff(a, b, {args.metric: args.threshold})
    bad = rundiff.failures(rows)
    chosen = [r for r in rows if r.get("metric") == args.metric]
    if args.json:
        print(json.dumps({"metric": args.metric, "threshold_pct": args.threshold, "rows": rows, "notes": rundiff.notes(a, b), "failed": bool(bad)}, indent=2))
    else:
        impls = []
        for name, path, s in (("A", args.a, a), ("B", args.b, b)):
            env = s.get("environment") or {}
            when = (env.get("machine") or {}).get("time", "time not recorded")
            impls.append(str(env.get("tfserving_implementation") or "not recorded"))
            console.print(f"[bold]{name}[/bold]: {escape(str(path))} ({escape(str(when))})")
        if impls[0] == impls[1]:  # when they differ, a note below says so
            console.print(f"TF side, both runs: {escape(impls[0])}")
        for note in rundiff.notes(a, b):
            console.print(f"[yellow]note[/yellow]: {escape(note)}")
        table = Table(title="B against A (noise ±: half-range over repetitions, A's + B's)")
        for col in ("model", "target", "metric", "A", "B", "change", "noise ±", "verdict"):
            table.add_column(col, justify="right" if col in ("A", "B", "change", "noise ±") else "left")
        for r in rows:
            if r["metric"] is None:
                table.add_row(r["model"], r["target"], "", "", "", "", "", f"[yellow]{r['status']}[/yellow]")
                continue
            noise = f"{r['noise_pct']:.1f}%" + (" (n=1)" if min(r["n_a"], r["n_b"]) < 2 else "")
            status = f"[{STYLE[r['status']]}]{r['status']}[/{STYLE[r['status']]}]" + (" [bold red]FAIL[/bold red]" if r["fails"] else "")
            table.add_row(r["model"], r["target"], "req/s" if r["metric"] == "rps" else f"{r['metric']} ms", figure(r["a"], r["unit"]), figure(r["b"], r["unit"]), f"{r['change_pct']:+.1f}%", noise, status)
        console.print(table)
        if bad:
            console.print(f"[bold red]{args.metric} regressed beyond {args.threshold:g}% and the noise band[/bold red]: " + ", ".join(f"{r['model']}/{r['target']} ({r['change_pct']:+.1f}%, noise ±{r['noise_pct']:.1f}%)" for r in bad))
        else:
            console.print(f"no {args.metric} regression beyond {args.threshold:g}% and the noise band ({len(chosen)} target(s) compared)")
    common = [r for r in rows if r.get("metric")]
    if not common:  # listed above, never failed
        print("twinserve report diff: the two runs have no target in common: nothing judged", file=sys.stderr)
    elif not chosen:
        return fail("diff", f"{args.metric} is not recorded in both runs (older summaries have no p99.9): nothing to judge")
    return 1 if bad else 0


def cmd_verdict(args: argparse.Namespace) -> int:
    from rich.markdown import Markdown

    from twinserve.console import console

    try:
        summary = rundiff.load(args.run)
    except rundiff.DiffInputError as exc:
        return fail("verdict", str(exc))
    console.print(Markdown(runverdict.markdown_block(summary)))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="read finished runs: `report diff A B` (compare two, exit 1 on a regression), `report verdict RUN`")
    rsub = p.add_subparsers(dest="report_command", required=True)

    d = rsub.add_parser("diff", help="per target and metric, B against A with the noise band; exit 1 when --metric regressed beyond --threshold and the noise")
    d.add_argument("a", metavar="A", help="the baseline run: a report folder or its summary.json")
    d.add_argument("b", metavar="B", help="the run to judge: a report folder or its summary.json")
    d.add_argument("--metric", choices=tuple(rundiff.METRICS), default="p99", help="the metric that fails the diff (default: p99)")
    d.add_argument("--threshold", type=float, default=10.0, help="%% of regression allowed on --metric before failing (default: 10)")
    d.add_argument("--json", action="store_true", help="the rows as JSON instead of a table")
    d.set_defaults(func=cmd_diff)

    v = rsub.add_parser("verdict", help="one run's verdict: the faster stack per model and path, by how much, beyond noise or not")
    v.add_argument("run", help="a report folder or its summary.json")
    v.set_defaults(func=cmd_verdict)
