"""Benchmarks: ``python scripts/bench.py SUBCOMMAND [options]``.

Each subcommand prints a human-readable table and, as its last line, one JSON object.
Subcommands live in ``scripts/bench_<name>.py`` (dashes become underscores) and define
``add_arguments(parser)`` and ``run(args) -> dict``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

SUBCOMMANDS = sorted(
    p.stem.removeprefix("bench_").replace("_", "-") for p in HERE.glob("bench_*.py")
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.py", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    modules = {}
    for name in SUBCOMMANDS:
        mod = importlib.import_module("bench_" + name.replace("-", "_"))
        modules[name] = mod
        p = sub.add_parser(name, help=(mod.__doc__ or "").strip().splitlines()[0])
        p.add_argument("--json-out", default=None, help="also write the JSON result to this file")
        mod.add_arguments(p)
    args = parser.parse_args(argv)
    result = modules[args.command].run(args)
    line = json.dumps(result, sort_keys=True)
    if args.json_out:
        pathlib.Path(args.json_out).write_text(line + "\n")
    print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
