"""The `deploylab` command: `env` and `bench` (later chapters add `report` and `serve`).

Errors that come from bad input print one line saying what to do and exit with 2.
"""

from __future__ import annotations

import argparse
import json
import sys

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
    print(f"suite {result.suite} ({'smoke' if smoke else 'full'}) on {result.hardware['cpu']},"
          f" {result.hardware['threads']} threads; baseline {base}")
    for v in result.variants:
        if v.skipped:
            print(f"  {v.name:20} skipped: {v.skipped}")
            continue
        tp = f"{v.throughput_per_s:,.1f}/s" if v.throughput_per_s is not None else "-"
        p50 = f"{v.latency_ms_p50:.3f} ms" if v.latency_ms_p50 is not None else "-"
        print(f"  {v.name:20} p50 {p50:>12}  throughput {tp:>14}  "
              f"{v.extra.get('throughput_unit', '')}")
    print(f"wrote {out}")
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
