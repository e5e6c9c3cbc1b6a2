"""The ``pplx`` command: run a Bayesian workflow from the shell.

``pplx demo`` fits a bundled model with the reference (Pyro NUTS) and every registered engine,
prints a comparison table and writes a report folder; ``pplx engines`` lists the engines.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import torch

import pplx

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def _parser() -> argparse.ArgumentParser:
    from pplx.inference.workflow import PROBLEMS

    parser = argparse.ArgumentParser(
        prog="pplx", description="Programmable inference for Pyro: run a Bayesian workflow."
    )
    parser.add_argument("--version", action="version", version=f"pplx {pplx.__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = commands.add_parser(
        "demo",
        help="fit a bundled model with NUTS and every pplx engine, compare, write a report",
        description="Fit one model with the reference (Pyro NUTS) and every registered engine, "
        "print a comparison table and write a report folder (netCDF per engine, plots, "
        "summary.md).",
    )
    demo.add_argument("--out", default="pplx-report", help="report folder (default: %(default)s)")
    demo.add_argument("--quick", action="store_true", help="short runs, for a first look")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    demo.add_argument(
        "--device", default="cpu", help="torch device: cpu, cuda, cuda:1 (default: %(default)s)"
    )
    demo.add_argument(
        "--model", default="logistic", choices=sorted(PROBLEMS), help="model and data set"
    )
    demo.add_argument(
        "--engines", default=None, help="comma-separated engines to run (default: all)"
    )
    demo.add_argument("--reference", default="nuts", help="reference engine (default: nuts)")
    demo.add_argument("--num-samples", type=int, default=None, help="draws per engine")
    demo.add_argument("--dtype", default="float64", choices=sorted(DTYPES))
    demo.add_argument("--no-progress", action="store_true", help="hide progress bars")
    commands.add_parser("engines", help="list the registered engines")
    return parser


def _device(name: str) -> torch.device:
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise SystemExit(f"pplx demo: --device {name!r} is not a torch device ({error})") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(
            f"pplx demo: --device {name} asked for CUDA but torch {torch.__version__} sees no "
            "GPU; use --device cpu"
        )
    return device


def _demo(args: argparse.Namespace) -> int:
    from pplx.inference.checkpoint import check_writable
    from pplx.inference.registry import FitConfig
    from pplx.inference.workflow import PROBLEMS, format_table, resolve_engines, run_workflow

    names = [n.strip() for n in args.engines.split(",") if n.strip()] if args.engines else None
    try:
        resolve_engines(names, args.reference)
    except KeyError as error:
        raise SystemExit(f"pplx demo: {error.args[0]}") from None
    try:
        check_writable(f"{args.out}/summary.md", what="report folder")
    except PermissionError as error:
        raise SystemExit(f"pplx demo: --out {args.out}: {error}") from None
    device = _device(args.device)
    if args.num_samples is not None and args.num_samples < 2:
        raise SystemExit("pplx demo: --num-samples must be at least 2")
    num_samples = args.num_samples or (400 if args.quick else 1000)
    config = FitConfig(
        quick=args.quick,
        seed=args.seed,
        num_samples=num_samples,
        progress_bar=False if args.no_progress else None,
        device=device,
    )
    problem = PROBLEMS[args.model](device, DTYPES[args.dtype])
    print(f"pplx {pplx.__version__} demo: {problem.description}")
    workflow = run_workflow(problem, args.out, config, names, args.reference)
    print()
    print(format_table(workflow.comparisons))
    print()
    print(f"report: {workflow.out / 'summary.md'} ({len(workflow.files)} files)")
    return 1 if any(row.error for row in workflow.comparisons) else 0


def _engines() -> int:
    from pplx.inference.registry import engines

    for name, spec in engines().items():
        marker = " (reference)" if spec.reference else ""
        print(f"{name:<16} {spec.description}{marker}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``pplx`` console script."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "demo":
        return _demo(args)
    if args.command == "engines":
        return _engines()
    parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
