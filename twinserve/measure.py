"""`twinserve bench` and `twinserve demo`: run the comparison, starting the native stack only when needed."""

from __future__ import annotations

import argparse
import contextlib
import platform
import signal
import threading
import time
from importlib import metadata
from pathlib import Path
from typing import Iterator

import httpx
from twinserve.console import console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from loadtests.targets import STACKS, TARGETS, comparison, with_references
from twinserve.settings import ROOT, StackSettings

DEMO = {"models": ["tabular", "mobilenet"], "users": 8, "duration": 6, "warmup": 2, "repetitions": 3}  # 3: the fewest repetitions the verdict makes a claim on


def needed_services(targets: list[str]) -> list[str]:
    """The native services the targets need; the reference proxies are started apart (twinserve/references.py).

    A target's stacks, not its `stack` field: the routed `gateway` target's stack is "routed" (its
    routing policy picks), which names no service, so the gateway used to start with no backend.
    """
    out: list[str] = []
    for name in targets:
        t = TARGETS[name]
        for svc in (*t.stacks, "gateway") if t.via_gateway else t.stacks:
            if svc not in out:
                out.append(svc)
    return out


def unreachable(urls: dict[str, str], targets: list[str], timeout: float = 3.0) -> list[str]:
    """The targets whose base URL does not answer at all (any HTTP status counts as an answer).

    Checked before any load: an external stack given only in part (`--url gateway=...` with the
    default targets, whose direct rows then point at local ports nobody serves) otherwise ran
    every repetition against a closed port and reported rows of connection failures.
    """
    down: dict[str, bool] = {}
    for url in dict.fromkeys(urls[TARGETS[t].url_key] for t in targets):
        try:
            httpx.get(url + "/", timeout=timeout)
            down[url] = False
        except (httpx.ConnectError, httpx.ConnectTimeout):
            down[url] = True
        except httpx.HTTPError:  # it accepted the connection: something is there, let the load say the rest
            down[url] = False
    return [f"{t} ({urls[TARGETS[t].url_key]})" for t in targets if down[urls[TARGETS[t].url_key]]]


def tf_implementation(url: str, model: str, native: str | None) -> str:
    """Which TF backend answered: the compatible server says so in a header; the real one does not."""
    try:
        r = httpx.get(f"{url}/v1/models/{model}", timeout=5)
    except httpx.HTTPError:
        return native or "unknown (unreachable)"
    header = r.headers.get("x-tf-serving-implementation")
    if header:
        return f"twinserve TF-Serving-compatible server ({header}), NOT TensorFlow Serving"
    return native or "TensorFlow Serving (tensorflow_model_server)"


def environment(urls: dict[str, str], model: str, native_impl: str | None) -> dict:
    from loadtests.resources import machine

    versions = {"python": platform.python_version()}
    for dist in ("torch", "torchserve", "tensorflow", "onnxruntime", "locust", "fastapi", "uvicorn", "httpx", "aiohttp"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = "not installed"
    return {"versions": versions, "machine": machine(), "tfserving_implementation": tf_implementation(urls["tfserving"], model, native_impl)}


def stack_config(settings: StackSettings, native: bool) -> dict:
    if not native:
        return {"note": "external stack: its configuration is whatever it was started with"}
    return {
        "batch size (TorchServe requests / TF rows)": settings.batch_size,
        "batch delay ms": settings.batch_delay_ms,
        "workers per model (TorchServe) / batch threads (TF)": settings.workers,
        "torch threads per worker": settings.torch_threads,
        "TensorFlow intra/inter-op threads": settings.tf_threads,
        "KServe workers / ONNX Runtime intra-op threads (no server-side batching)": f"{settings.kserve_workers} / {settings.kserve_threads}",
        "TorchServe JVM heap": settings.jvm_heap,
    }


@contextlib.contextmanager
def sigterm_as_exit() -> Iterator[None]:
    """SIGTERM (a CI timeout, `kill`) unwinds like Ctrl-C, so the bench's `finally` stops what it started."""

    def _exit(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _exit)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def bench(args: argparse.Namespace) -> Path:
    with sigterm_as_exit():
        return _bench(args)


def _bench(args: argparse.Namespace) -> Path:
    from loadtests import bench as runner
    from loadtests import report
    from twinserve import references, stack
    from twinserve.supervisor import Supervisor, SupervisorError

    settings = StackSettings(models=",".join(args.models))
    urls = {
        "torchserve": f"http://{settings.host}:{settings.torchserve_inference_port}",
        "tfserving": f"http://{settings.host}:{settings.tfserving_rest_port}",
        "kserve": f"http://{settings.host}:{settings.kserve_http_port}",
        "gateway": f"http://{settings.host}:{settings.gateway_port}",
    }
    external = dict(kv.split("=", 1) for kv in args.url or [])
    urls.update(external)
    native = not external
    # --overhead always measures the gateway beside nginx and the bare-Python floor, in the same run
    targets = with_references(args.targets) if args.overhead else list(args.targets)
    added = [t for t in targets if t not in args.targets]
    if added:
        console.print(f"--overhead: also running {', '.join(added)} (the gateway's cost is read against the direct, nginx and floor rows of each stack, in the same run)")
    started: list[str] = []
    proxies = references.ReferenceProxies()
    out = Path(args.out) if args.out else ROOT / "reports" / time.strftime("%Y%m%d-%H%M%S")
    sup = Supervisor(settings.run_dir)
    try:
        if native:
            missing = [s for s in needed_services(targets) if s not in sup.running()]
            if missing:
                from twinserve.commands import ensure_artifacts

                ensure_artifacts(settings)
                with console.status(f"starting {', '.join(missing)}..."):
                    stack.up(settings, tuple(missing))
                started = missing
        running = sup.running() if native else {}
        pgids = {name: svc.pgid for name, svc in running.items()}
        native_impl = running["tfserving"].implementation if "tfserving" in running else None
        fronts = references.fronts_of(targets)
        if fronts:
            with console.status(f"starting the reference proxies ({', '.join(fronts)})..."):
                proxies = references.start(settings, {s: urls[s] for s in STACKS}, fronts, say=console.print)
            urls.update(proxies.urls)
            pgids.update(proxies.pgids)
            for name, info in proxies.info.items():
                console.print(f"reference proxy {name}: {info['implementation']}; " + ", ".join(info["routes"].values()))
        down = unreachable(urls, targets)
        if down:
            raise RuntimeError(f"nothing answers for {', '.join(down)}: start it (`twinserve up`), pass its address with --url NAME=URL, or leave it out of --targets")
        cfg = runner.BenchConfig(
            models=args.models, targets=targets, urls=urls, out=out, profile=args.profile, users=args.users,
            spawn_rate=args.spawn_rate or float(args.users), duration_s=args.duration, warmup_s=args.warmup,
            repetitions=args.repetitions, rate=args.rate, ramp_users=args.ramp_users, ramp_step_s=args.ramp_step,
            rates=list(getattr(args, "rates", None) or []), slo_p99_ms=args.slo_p99, instances=args.instances, processes=args.processes,
            window_s=args.window, stable_windows=args.stable_windows, stable_tolerance=args.stable_tolerance, max_duration_s=args.max_duration,
        )
        with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console, transient=True) as progress:
            task = progress.add_task("starting load...", total=None)
            raw = runner.run(cfg, pgids, progress=lambda msg: progress.update(task, description=msg))
        summary = runner.summarise(cfg, raw)
        summary["environment"] = environment(urls, args.models[0], native_impl)
        if proxies.info:
            summary["environment"]["reference_proxies"] = proxies.info
        summary["stack"] = stack_config(settings, native)
        summary["config"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(cfg).items()}
        summary["locust_dir"] = str(out / "locust")
        if args.overhead:
            summary["overhead"] = measure_overhead(args, settings, urls, summary, targets)
        paths = report.write(summary, out)
    except (SupervisorError, FileNotFoundError, RuntimeError) as exc:
        console.print(f"[red]bench failed:[/red] {exc}")
        raise SystemExit(1) from None
    finally:
        references.stop(settings, proxies)
        if started:
            stack.down(settings, started)
    print_summary(summary)
    console.print(f"report: {paths['markdown']}  (also {paths['html'].name}, summary.json, charts)")
    return out


def measure_overhead(args: argparse.Namespace, settings: StackSettings, urls: dict[str, str], summary: dict, targets: list[str]) -> dict:
    """The gateway's cost and the served/in-process ratios, for each model of the run.

    The added-latency probe covers only the stacks the run loaded (the others may not be running);
    a stack whose direct or gateway path does not answer is skipped with its reason, as a warning.
    """
    from loadtests import overhead
    from models.inprocess import inprocess_throughput

    stacks = [s for s in STACKS if any(s in TARGETS[t].stacks for t in targets)]
    out: dict = {}
    for model in args.models:
        with console.status(f"overhead: added latency under light load ({model})..."):
            latency = overhead.added_latency(urls, model, stacks)
        for stack, lat in latency.items():
            if "skipped" in lat:
                note = f"{model} {stack}: added latency not measured: {lat['skipped']}"
                console.print(f"[yellow]overhead:[/yellow] {note}")
                summary["warnings"].append(note)
        with console.status(f"overhead: in-process throughput ({model}, batch {settings.batch_size})..."):
            inprocess = inprocess_throughput(settings.build_dir, model, settings.batch_size)
        saturation = overhead.saturation_summary(summary["results"], model, args.instances)
        out[model] = {
            "saturation": saturation,
            "framework_ratios": overhead.framework_ratios(summary["results"], model),
            "added_latency": latency,
            "inprocess": inprocess,
            "served_to_inprocess": overhead.served_ratio(saturation, inprocess),
        }
    return out


def print_summary(summary: dict) -> None:
    from loadtests import sweep
    from loadtests.report import fmt, results_table

    console.print(f"TF backend: [bold]{summary['environment']['tfserving_implementation']}[/bold]")
    head, rows = results_table(summary)
    shown = [i for i, h in enumerate(head) if h not in ("req/s spread", "p99 spread", "window s (measured)")]
    table = Table(title="twinserve comparison (median over repetitions; latency from µs HDR histograms, 3 significant digits)")
    for i in shown:
        table.add_column(head[i], overflow="fold")
    for row in rows:
        table.add_row(*(row[i] for i in shown))
    if rows:  # none in a sweep: its lines follow
        console.print(table)
    short = {"torchserve": "TorchServe", "tfserving": "TF", "kserve": "KServe"}
    for r in summary["ratios"]:
        pair = f"{short[r.get('a', 'torchserve')]}/{short[r.get('b', 'tfserving')]}"
        console.print(f"{r['model']} {r['path']}: {pair} req/s ratio {r['rps_ratio']:.2f}, p99 ratio {r['p99_ratio']:.2f}")
    for model, o in summary.get("overhead", {}).items():
        for stack, sat in o["saturation"].items():
            lat = o["added_latency"].get(stack, {})
            added = f"added p50 {lat['added_p50_ms']:.3f} ms, p99 {lat['added_p99_ms']:.3f} ms" if "added_p50_ms" in lat else "added latency not measured"
            console.print(
                f"{model} {stack}: gateway/direct throughput {fmt(sat['gateway_to_direct'], '.2f')} (goal ≥ 0.8), gateway CPU {fmt(sat['gateway_cpu_us_per_request'], '.0f')} µs/request, "
                f"{added}, served/in-process {o['served_to_inprocess'].get(stack, float('nan')):.3f}"
            )
            console.print(
                f"{model} {stack} references: nginx {fmt(sat['nginx_rps'], '.0f')} req/s at {fmt(sat['nginx_cpu_us_per_request'], '.0f')} µs/request, "
                f"floor {fmt(sat['floor_rps'], '.0f')} req/s at {fmt(sat['floor_cpu_us_per_request'], '.0f')} µs/request; "
                f"gateway CPU / nginx CPU {fmt(sat['gateway_cpu_over_nginx'], '.1f')}× (goal ≤ 4× on tabular), gateway CPU / floor CPU {fmt(sat['gateway_cpu_over_floor'], '.2f')}×"
            )
        for ratio in o.get("framework_ratios", []):
            console.print(
                f"{model}: {short[ratio['a']]}/{short[ratio['b']]} throughput {ratio['direct']:.3f} direct, {ratio['via_gateway']:.3f} via gateway: "
                f"via gateway / direct {ratio['gateway_vs_direct']:.3f} (goal within 10%)"
            )
    for r in summary.get("sweep", []):
        if r["knee"]:
            knee = sweep.knee_text(r["knee"], r.get("points", []), r["load_key"], f", p50 {r['knee']['p50_ms']} ms, p99 {r['knee']['p99_ms']} ms")
            console.print(f"{r['model']} {r['target']} {r['kind']} sweep: knee {knee}; stopped: {r['stopped']}; saturated: {(r.get('bottleneck') or {}).get('saturated') or 'none'}")
    for w in summary["warnings"]:
        console.print(f"[yellow]warning:[/yellow] {w}")


def cmd_bench(args: argparse.Namespace) -> int:
    bench(args)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Export, start the stack, a short comparison, stop what it started, print the report's path."""
    from twinserve.commands import ensure_artifacts

    settings = StackSettings(models=",".join(args.models))
    ensure_artifacts(settings)
    out = bench(args)
    console.print(f"\n[bold green]demo done[/bold green]: report in {out}/report.md")
    return 0


def cmd_reliability(args: argparse.Namespace) -> int:
    """Fault, overload and soak drills on a private stack; figures printed and written as JSON."""
    import json

    from twinserve import reliability

    out = Path(args.out) if args.out else ROOT / "reports" / f"reliability-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)
    results: dict = {}
    if "faults" in args.drills:
        with console.status("faults under load (a TorchServe worker killed, the TF backend killed, restarted, hung, the KServe stack killed and restarted)..."):
            results["faults"] = reliability.faults(out / "faults", seconds=args.fault_seconds)
    if "overload" in args.drills:
        with console.status(f"overload: {args.overload_users} users for {args.overload_seconds} s..."):
            results["overload"] = reliability.overload(out / "overload", seconds=args.overload_seconds, users=args.overload_users, max_in_flight=args.max_in_flight)
    if "soak" in args.drills:
        with console.status(f"soak: {args.soak_rate:g} req/s for {args.soak_seconds} s..."):
            results["soak"] = reliability.soak(out / "soak", seconds=args.soak_seconds, rate=args.soak_rate)
    (out / "reliability.json").write_text(json.dumps(results, indent=2))
    for name, result in results.items():
        shown = {k: v for k, v in result.items() if k != "rss_samples"}
        console.print(f"[bold]{name}[/bold]: {json.dumps(shown)}")
    lost = sum(r.get("lost_or_wrong", 0) for r in results.values())
    console.print(f"requests lost or answered wrongly: {lost}   (figures in {out / 'reliability.json'})")
    return 1 if lost else 0


def cmd_explain(args: argparse.Namespace) -> int:
    """Ask the gateway for both stacks' attributions of one digits input and draw them side by side."""
    from loadtests import heatmap

    settings = StackSettings()
    gateway = args.gateway or f"http://{settings.host}:{settings.gateway_port}"
    try:
        x, answer = heatmap.fetch(gateway, args.model, args.index, args.target)
    except httpx.HTTPError as exc:
        console.print(f"[red]explain failed:[/red] {exc} (is the stack up? `twinserve up`)")
        return 1
    out = heatmap.plot(x, answer, Path(args.out))
    console.print(f"attributions agree: max |diff| {answer['max_abs_diff']:.2e}, correlation {answer['correlation'][0]:.6f}; heat map: {out}")
    return 0


def _add_bench_options(p: argparse.ArgumentParser, defaults: dict) -> None:
    from twinserve.cli import choices_list, models_arg

    _targets = choices_list(TARGETS, "target")

    def _ints(value: str) -> list[int]:
        values = [_count(v, 1) for v in value.split(",") if v.strip()]
        if not values:
            raise argparse.ArgumentTypeError("give at least one user count")
        return values

    def _rates(value: str) -> list[float]:
        try:
            values = [float(v) for v in value.split(",") if v.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{value!r}: give comma-separated requests/s, e.g. 100,200,400") from None
        if not values or any(v <= 0 for v in values):
            raise argparse.ArgumentTypeError("give at least one rate, each above 0")
        return values

    def _count(value: str, least: int) -> int:
        """An integer option with a floor: `--duration 0` used to start locust without any run time."""
        try:
            n = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
        if n < least:
            raise argparse.ArgumentTypeError(f"{n} is below {least}")
        return n

    def positive(value: str) -> int:
        return _count(value, 1)

    def non_negative(value: str) -> int:
        return _count(value, 0)

    def spawn_rate(value: str) -> float:
        rate = float(value)
        if rate < 0:
            raise argparse.ArgumentTypeError(f"{rate:g} is below 0")
        return rate

    def fraction(value: str) -> float:
        f = float(value)
        if not 0 < f < 1:
            raise argparse.ArgumentTypeError(f"{f:g} is not between 0 and 1")
        return f

    def seconds(value: str) -> float:
        f = float(value)
        if f <= 0:
            raise argparse.ArgumentTypeError(f"{f:g} is not above 0")
        return f

    def url(value: str) -> str:
        """NAME=URL for one of the stack's services: anything else used to be a traceback (no "=")
        or silently ignored (an unknown name)."""
        name, sep, address = value.partition("=")
        if not sep or name not in (*STACKS, "gateway") or not address.startswith(("http://", "https://")):
            raise argparse.ArgumentTypeError(f"{value!r}: expected NAME=http://host:port with NAME one of {', '.join((*STACKS, 'gateway'))}")
        return value

    p.add_argument("--models", type=models_arg(), default=defaults.get("models", ["tabular"]), help="comma-separated models")
    p.add_argument("--targets", type=_targets, default=comparison(StackSettings().stack_list), help=f"comma-separated, from {', '.join(TARGETS)} (default: each stack of TWINSERVE_STACKS directly and through the gateway)")
    p.add_argument(
        "--profile", choices=("closed", "open", "ramp", "sweep"), default="closed",
        help="closed: fixed users; open: fixed arrival rate; ramp: step users up to find max throughput under a p99 objective; "
        "sweep: step users (--ramp-users) or open-loop rates (--rates) per target until throughput stops growing or p99 passes --slo-p99, with the latency-throughput curve, its knee and the bottleneck",
    )
    p.add_argument("--users", type=positive, default=defaults.get("users", 16))
    p.add_argument("--spawn-rate", type=spawn_rate, default=0.0, help="users started per second (default: all at once)")
    p.add_argument(
        "--duration", type=positive, default=defaults.get("duration"),
        help="fixed mode: seconds per measured run (default: stability mode, each run lasting until stable, at most --max-duration)",
    )
    p.add_argument("--window", type=seconds, default=5.0, help="measurement window in seconds (the stability rule's unit)")
    p.add_argument("--stable-windows", type=lambda v: _count(v, 2), default=3, help="a run is stable when this many last windows agree...")
    p.add_argument("--stable-tolerance", type=fraction, default=0.10, help="...within this fraction of their mean, req/s and p99 each")
    p.add_argument("--max-duration", type=positive, default=60, help="stability mode: a run still unsettled after this many seconds ends, marked unstable")
    p.add_argument("--warmup", type=non_negative, default=defaults.get("warmup", 5), help="seconds of uncounted warm-up per target")
    p.add_argument("--repetitions", type=positive, default=defaults.get("repetitions", 3))
    p.add_argument("--rate", type=float, default=200.0, help="open profile: total requests per second")
    p.add_argument("--ramp-users", type=_ints, default=[1, 2, 4, 8, 16, 32], help="ramp profile: users per step")
    p.add_argument("--ramp-step", type=positive, default=10, help="ramp and sweep profiles: seconds per step")
    p.add_argument("--slo-p99", type=float, default=50.0, help="ramp and sweep profiles: p99 objective in ms")
    p.add_argument("--rates", type=_rates, default=[], help="sweep profile: offered requests/s per step, e.g. 100,200,400 (an open-loop rate sweep; latency from the intended send time)")
    p.add_argument("--instances", type=positive, default=1, help="instances (rows) per request")
    p.add_argument("--processes", type=non_negative, default=0, help="run locust distributed: a master and N worker processes")
    p.add_argument("--url", action="append", type=url, metavar="NAME=URL", help="use an external stack, e.g. --url gateway=http://host:8000 (torchserve, tfserving, kserve, gateway)")
    p.add_argument("--out", help="report folder (default: reports/<timestamp>)")
    p.add_argument("--overhead", action="store_true", help="also measure the gateway's cost (added latency, CPU/request) beside two reference proxies (nginx, a bare Python proxy) and in-process throughput")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="identical locust load at each target; writes reports/<timestamp>/")
    _add_bench_options(p, {})
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("reliability", help="fault, overload and soak drills on a private stack, with figures")
    p.add_argument("--drills", type=lambda v: v.split(","), default=["faults", "overload", "soak"], help="comma-separated: faults,overload,soak")
    p.add_argument("--fault-seconds", type=int, default=36)
    p.add_argument("--overload-seconds", type=int, default=60)
    p.add_argument("--overload-users", type=int, default=64)
    p.add_argument("--max-in-flight", type=int, default=8, help="the gateway's per-backend limit during the overload drill")
    p.add_argument("--soak-seconds", type=int, default=600)
    p.add_argument("--soak-rate", type=float, default=300.0, help="requests per second (about half of one stack's capacity here)")
    p.add_argument("--out", help="folder for the figures (default: reports/reliability-<timestamp>)")
    p.set_defaults(func=cmd_reliability)

    p = sub.add_parser("explain", help="heat map of one digits input's attributions from both stacks (PNG)")
    p.add_argument("--model", default="digits", choices=["digits"])
    p.add_argument("--index", type=int, default=0, help="row of scikit-learn's digits data")
    p.add_argument("--target", type=int, help="class to explain (default: the predicted one)")
    p.add_argument("--gateway", help="gateway URL (default: the native one)")
    p.add_argument("--out", default=str(ROOT / "reports" / "explain_digits.png"))
    p.set_defaults(func=cmd_explain)

    p = sub.add_parser("demo", help="export, start the stack, a short comparison, stop, print the report path")
    _add_bench_options(p, DEMO)
    p.set_defaults(func=cmd_demo)
