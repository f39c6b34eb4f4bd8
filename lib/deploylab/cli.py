"""The `deploylab` command: `env`, `bench`, `report`, `serve`, `prefetch` and `runtimes`.

Errors that come from bad input print one line saying what to do and exit with 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .errors import DeploylabError
from .settings import smoke_mode

__all__ = ["main"]


def _env(args: argparse.Namespace) -> int:
    from . import assets, measure

    info = {"hardware": measure.fingerprint(), "assets": assets.status()}
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    hw = info["hardware"]
    print("deploylab environment")
    for key in ("cpu", "cores", "logical_cpus", "threads", "interop_threads", "memory_gb",
                "torch", "torch_cpu_capability", "onnxruntime", "numpy", "python", "os",
                "accelerator"):
        print(f"  {key:22} {hw[key]}")
    print(f"  {'flags':22} {' '.join(hw['flags']) or '(none of interest)'}")
    for line in measure.describe_cpu(hw["flags"]):
        print(f"  {'':22} {line}")
    if hw["env"]:
        print(f"  {'env':22} {hw['env']}")
    print("\nassets")
    for row in info["assets"]:
        print(f"  {row['name']:20} {row['state']:10} {row['description']}")
        if row["state"] not in ("ok", "not built"):
            print(f"  {'':20} {row['detail']}")
    return 0 if all(r["state"] in ("ok", "not built") for r in info["assets"]) else 1


def _bench(args: argparse.Namespace) -> int:
    from . import bench

    if args.list:
        for name, doc in bench.suites().items():
            print(f"{name:16} {doc}")
        return 0
    if not args.suite:
        raise DeploylabError("name a suite, e.g. `deploylab bench roofline --json out.json`; "
                             "`deploylab bench --list` shows them")
    if not args.json:
        raise DeploylabError("give --json PATH: where to write the results")
    smoke = smoke_mode(args.smoke)
    result = bench.run(args.suite, smoke=smoke)
    out = result.write_json(args.json)
    base = result.baseline
    hw = result.hardware  # threads: torch's in this process; a suite may set its own per variant
    print(f"suite {result.suite} ({'smoke' if result.smoke else 'full'}) on {hw['cpu']}, "
          f"{hw.get('cores', '?')} cores, torch threads {hw['threads']}; baseline {base}")
    width = max(len(v.name) for v in result.variants)
    for v in result.variants:
        if v.skipped:
            print(f"  {v.name:{width}} skipped: {v.skipped}")
            continue
        tp = f"{v.throughput_per_s:,.1f}/s" if v.throughput_per_s is not None else "-"
        p50 = f"{v.latency_ms_p50:.3f} ms" if v.latency_ms_p50 is not None else "-"
        print(f"  {v.name:{width}} p50 {p50:>12}  throughput {tp:>14}  "
              f"{v.extra.get('throughput_unit', '')}".rstrip())
    judged = bench.verdicts(result.extra.get("targets"))
    if judged:  # what the JSON's `targets` says, line by line
        print("targets" + (" (a smoke run: too short to judge by):" if result.smoke else ":"))
        for what, m in judged:
            print(f"  {'n/a' if m is None else 'yes' if m else 'NO':4} {what}")
    print(f"wrote {out}")
    return 0


def _report_params(args: argparse.Namespace) -> dict:
    import yaml

    params = {}
    if args.file:
        path = Path(args.file)
        if not path.is_file():
            raise DeploylabError(f"parameters file {path} does not exist")
        loaded = yaml.safe_load(path.read_text()) or {}
        if not isinstance(loaded, dict):
            raise DeploylabError(f"{path} must map parameter names to values")
        params.update(loaded)
    for name, value in args.param or []:
        params[name] = yaml.safe_load(value)  # "10" -> 10, "true" -> True, "[1, 2]" -> list
    return params


def _report(args: argparse.Namespace) -> int:
    from . import report

    if args.sweep:
        if args.param or args.file:
            raise DeploylabError("with --sweep, put fixed values under `parameters:` in the "
                                 "sweep file instead of -p/-f")
        res = report.run_sweep(args.notebook, args.sweep, args.output, force=args.force,
                               workers=args.workers, ray_address=args.ray,
                               no_input=args.no_input)
        best = int(res.table["pareto"].sum()) if "pareto" in res.table else 0
        print(f"{len(res.table)} result rows, {best} Pareto-optimal, {len(res.failures)} failed"
              f" run(s)\nwrote {res.csv}\nwrote {res.html}")
        for f in res.failures:
            print(f"  failed {f['run']}: {f['error']}", file=sys.stderr)
        return 1 if res.failures else 0
    if args.ray or args.force or args.workers:
        raise DeploylabError("--ray, --force and --workers apply to --sweep runs only")
    res = report.run_notebook(args.notebook, _report_params(args), args.output,
                              no_input=args.no_input, cell_timeout=args.cell_timeout)
    print(f"wrote {res.notebook}\nwrote {res.html}")
    if res.results:
        print(f"wrote {Path(args.output) / report.RESULTS_FILE}")
    return 0


def _serve_specs(models: list[str], tokenizer: str | None, options: dict) -> list:
    """MODEL arguments -> ModelSpecs: `minilm` (fp32 as version 1, int8 as 2),
    `minilm:int8`, or `[NAME[:VERSION]=]FILE.onnx`."""
    from .serve import ModelSpec, zoo

    specs = []
    for text in models:
        head, _, rest = text.partition(":")
        if head in ("minilm", zoo.MINILM) and "=" not in text:
            if rest and rest not in zoo.VERSIONS:
                raise DeploylabError(f"{text!r}: MiniLM comes as minilm:fp32 or minilm:int8")
            specs += zoo.minilm_specs([rest] if rest else list(zoo.VERSIONS), **options)
            continue
        key, _, path = text.rpartition("=")
        name, _, version = key.partition(":")
        if not Path(path).is_file() or Path(path).suffix != ".onnx":
            raise DeploylabError(f"{text!r}: give `minilm`, `minilm:int8` or "
                                 "[NAME[:VERSION]=]FILE.onnx with an existing .onnx file")
        try:
            specs.append(ModelSpec(name or Path(path).stem, version or "1", path,
                                   tokenizer=tokenizer, **options))
        except ValueError as e:
            raise DeploylabError(str(e)) from None
    return specs


def _serve(args: argparse.Namespace) -> int:
    import time

    from . import serve

    options = {k: v for k, v in (("max_batch_size", args.max_batch_size),
                                 ("batch_wait_timeout_s", args.batch_wait_ms / 1e3
                                  if args.batch_wait_ms is not None else None)) if v is not None}
    if not args.max_body_mib * (1 << 20) >= 1:
        raise DeploylabError(f"--max-body-mib must be > 0, got {args.max_body_mib:g}")
    specs = _serve_specs(args.model, args.tokenizer, options)
    autoscaling = None
    if args.autoscale:
        low, _, high = args.autoscale.partition(":")
        if not (low.isdigit() and high.isdigit() and 0 < int(low) <= int(high)):
            raise DeploylabError(f"--autoscale wants MIN:MAX replicas, e.g. 1:2, got "
                                 f"{args.autoscale!r}")
        autoscaling = {"min_replicas": int(low), "max_replicas": int(high),
                       "target_ongoing_requests": 8}
    server = serve.start(specs, host=args.host, port=args.port, num_replicas=args.replicas,
                         autoscaling=autoscaling, threads=args.threads,
                         workers=args.workers, request_timeout_s=args.request_timeout_s,
                         max_body_bytes=round(args.max_body_mib * (1 << 20)),
                         max_text_chars=args.max_text_chars,
                         ray_address=args.ray, access_log=args.access_log)
    try:
        first = specs[0]
        print(f"serving {', '.join(s.key for s in specs)} at {server.url} (Open Inference "
              f"Protocol v2); metrics at {server.url}/metrics")
        print(f"  curl {server.url}/v2/models/{first.name}")
        if args.check:
            with server.client() as c:
                meta = c.metadata(first.name)
                inputs = ({"text": ["deploylab serve --check"]} if first.tokenizer else None)
                if inputs is not None:
                    out = c.infer(first.name, inputs)
                    print(f"check ok: {first.key} answered "
                          f"{ {k: list(v.shape) for k, v in out.items()} }")
                else:
                    print(f"check ok: {first.key} takes {meta['inputs']}")
            return 0
        print("Ctrl-C stops it.")
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        print("stopping")
        return 0
    finally:
        left = server.stop()
        if left:
            print(f"left behind after stopping: {left}", file=sys.stderr)


def _prefetch(args: argparse.Namespace) -> int:
    from . import prefetch

    if args.list:
        for step in prefetch.STEPS:
            print(f"{step.name:18} {step.what}")
        return 0
    rows = prefetch.run(args.steps or None)
    built = [r["step"] for r in rows if r["status"] == "built"]
    total = sum(r["seconds"] for r in rows)
    print(f"built {', '.join(built)} in {total:.0f} s" if built else
          f"nothing to do: everything was already in the cache ({total:.0f} s to check)")
    return 0


def _runtimes(args: argparse.Namespace) -> int:
    from . import runtimes

    if args.list:
        print("\n".join(runtimes.notebooks()))
        return 0
    modes = runtimes.MODES if args.mode == "both" else (args.mode,)
    for nb in [] if args.readme_only else (args.notebooks or runtimes.notebooks()):
        for mode in modes:
            t = runtimes.measure(nb, smoke=mode == "smoke", inplace=args.inplace and mode == "full",
                                 note=args.note)
            runtimes.record(t)
            print(f"{t.notebook:48} {mode:5} {t.wall_s:8.1f} s {t.peak_rss_mb:8.0f} MB")
    print(f"updated {runtimes.update_readme()}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="deploylab", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    env = sub.add_parser("env", help="hardware fingerprint and which assets are available")
    env.add_argument("--json", action="store_true", help="print JSON instead of text")
    env.set_defaults(func=_env)
    b = sub.add_parser("bench", help="run a benchmark suite and write its JSON")
    b.add_argument("suite", nargs="?", help="suite name (see --list)")
    b.add_argument("--json", metavar="PATH", help="where to write the results")
    b.add_argument("--smoke", action="store_true",
                   help="seconds instead of minutes (also forced by DEPLOYLAB_SMOKE=1)")
    b.add_argument("--list", action="store_true", help="list the suites")
    b.set_defaults(func=_bench)
    r = sub.add_parser("report", help="run a notebook with parameters into an HTML report, or "
                                      "a sweep of them")
    r.add_argument("notebook", help="the notebook (.ipynb)")
    r.add_argument("-p", "--param", nargs=2, action="append", metavar=("NAME", "VALUE"),
                   help="a parameter value (YAML: 10, 0.5, true, [1, 2], text); repeatable")
    r.add_argument("-f", "--file", metavar="PARAMS.yaml", help="parameters from a YAML file")
    r.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="output folder")
    r.add_argument("--no-input", action="store_true", help="hide code cells in the HTML")
    r.add_argument("--cell-timeout", type=int, metavar="S", help="seconds a cell may run")
    r.add_argument("--sweep", metavar="SWEEP.yaml", help="run a grid of parameters")
    r.add_argument("--force", action="store_true", help="sweep: re-run finished combinations")
    r.add_argument("--workers", type=int, help="sweep: parallel processes (default: cores)")
    r.add_argument("--ray", metavar="ADDRESS",
                   help="sweep: run on a Ray cluster ('auto', 'local' or ray://host:port)")
    r.set_defaults(func=_report)
    s = sub.add_parser("serve", help="serve models over the Open Inference Protocol (Ray "
                                     "Serve) until Ctrl-C")
    s.add_argument("model", nargs="+", help="`minilm` (fp32 v1 + int8 v2), `minilm:int8`, or "
                                            "[NAME[:VERSION]=]FILE.onnx")
    s.add_argument("--tokenizer", metavar="NAME_OR_DIR",
                   help="makes .onnx encoders text models: BYTES in, embeddings out")
    s.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    s.add_argument("--port", type=int, default=8000, help="HTTP port (default 8000)")
    s.add_argument("--replicas", type=int, default=1, help="replicas (default 1)")
    s.add_argument("--autoscale", metavar="MIN:MAX", help="autoscale between MIN and MAX "
                                                          "replicas instead")
    s.add_argument("--max-batch-size", type=int, help="dynamic batching: most rows per call")
    s.add_argument("--batch-wait-ms", type=float, help="dynamic batching: wait to fill (ms)")
    s.add_argument("--threads", type=int, help="compute threads per model call")
    s.add_argument("--workers", type=int, default=1,
                   help="batches a replica runs at once, sharing the weights (default 1)")
    s.add_argument("--request-timeout-s", type=float, default=20.0,
                   help="answer 504 to a request still unanswered after this (default 20)")
    s.add_argument("--max-body-mib", type=float, default=1.0,
                   help="larger request bodies get 413 (default 1 MiB; a 224 x 224 RGB "
                        "image as an FP32 tensor in JSON needs about 3)")
    s.add_argument("--max-text-chars", type=int, default=10_000,
                   help="longer texts get 400 before tokenizing (default 10000)")
    s.add_argument("--ray", metavar="ADDRESS", help="a Ray cluster to serve on "
                                                    "(default: start one on this machine)")
    s.add_argument("--access-log", action="store_true", help="log every request")
    s.add_argument("--check", action="store_true",
                   help="start, answer one request, stop (a self-test)")
    s.set_defaults(func=_serve)
    pf = sub.add_parser("prefetch", help="build every dataset and train every model once, "
                                         "so a workshop starts with a warm cache")
    pf.add_argument("steps", nargs="*", help="only these steps (default: all; see --list)")
    pf.add_argument("--list", action="store_true", help="list the steps")
    pf.set_defaults(func=_prefetch)
    rt = sub.add_parser("runtimes", help="time notebooks (full and smoke runs, peak memory) into "
                                         "data/runtimes.json and the README's table")
    rt.add_argument("notebooks", nargs="*", help="these notebooks (default: every one; --list)")
    rt.add_argument("--mode", choices=["full", "smoke", "both"], default="both")
    rt.add_argument("--inplace", action="store_true",
                    help="keep a full run's outputs in the notebook (what gets committed)")
    rt.add_argument("--note", default="", help="a remark for the table's note column")
    rt.add_argument("--readme-only", action="store_true",
                    help="measure nothing; regenerate the README's table from the JSON")
    rt.add_argument("--list", action="store_true", help="list the notebooks")
    rt.set_defaults(func=_runtimes)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except DeploylabError as e:
        print(f"deploylab: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
