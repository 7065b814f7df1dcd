"""Build workload JSONL files, or regenerate the bundled samples.

    python -m lookahead.eval.workloads.build --workload rag --n 50 --out rag.jsonl
    python -m lookahead.eval.workloads.build --bundle

Output depends only on the seed and the pinned data packages (the `data`
extra), so `--bundle` reproduces the committed files byte for byte.
"""
from __future__ import annotations

import argparse
import sys

from . import BUILDERS
from lookahead.samples import WorkloadError, bundled_path, write_jsonl

BUNDLE_SIZES = {"rag": 50, "gec": 50, "gec-ua": 50}
BUNDLE_SEED = 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lookahead.eval.workloads.build", description=__doc__.split("\n")[0])
    parser.add_argument("--workload", choices=sorted(BUILDERS), help="which workload to build")
    parser.add_argument("--n", type=int, default=50, help="number of cases (default 50)")
    parser.add_argument("--seed", type=int, default=BUNDLE_SEED, help="sampling seed (default 0)")
    parser.add_argument("--out", help="JSONL file to write")
    parser.add_argument("--bundle", action="store_true", help="regenerate the bundled samples in data/")
    args = parser.parse_args(argv)
    if args.bundle:
        if args.workload or args.out:
            parser.error("--bundle writes data/ itself: drop --workload and --out")
    elif not (args.workload and args.out):
        parser.error("give --workload and --out, or --bundle")
    jobs = ([(name, size, BUNDLE_SEED, bundled_path(name)) for name, size in BUNDLE_SIZES.items()]
            if args.bundle else [(args.workload, args.n, args.seed, args.out)])
    try:
        for name, n, seed, out in jobs:
            path = write_jsonl(BUILDERS[name](n, seed), out)
            print(f"{name}: {n} cases -> {path}")
    except ModuleNotFoundError as e:
        print(f"error: {e.name} is not installed (pip install 'lookahead[data]')", file=sys.stderr)
        return 1
    except WorkloadError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
