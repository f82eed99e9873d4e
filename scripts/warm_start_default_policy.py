"""Builds the default job's policy: the supervised warm start that produces the weights shipped
in oar_kernels/default_job/default_policy/ (and that any other WarmStartRecipe goes through).

    python scripts/warm_start_default_policy.py                  # rebuild the shipped folder
    python scripts/warm_start_default_policy.py --out my_policy --steps 200 --seed 1
    python scripts/warm_start_default_policy.py --check          # shipped folder matches the recipe?

The run is deterministic for a given recipe (seed, steps, threads, ...) on one machine's torch
build: rebuilding with the default recipe reproduces the shipped weights there. The folder's
warm_start_recipe.json carries the recipe and its key; `load_default_policy()` uses the
shipped folder only while that key equals WarmStartRecipe().key(), so a recipe change cannot
leave stale weights in use (tests/test_default_policy.py checks the two agree).
"""
from __future__ import annotations

import argparse
import dataclasses
import sys

from oar_kernels.default_job import SHIPPED_DIR, WarmStartRecipe, build_default_policy, folder_recipe_key


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--out", default=SHIPPED_DIR, help="output folder (default: the package's shipped folder)")
    for f in dataclasses.fields(WarmStartRecipe):
        ap.add_argument(f"--{f.name}", type=type(f.default), default=f.default, help=f"recipe field (default {f.default})")
    ap.add_argument("--check", action="store_true", help="only compare the shipped folder's key with the recipe's")
    ap.add_argument("--no-progress", dest="progress", action="store_false")
    args = ap.parse_args(argv)
    recipe = WarmStartRecipe(**{f.name: getattr(args, f.name) for f in dataclasses.fields(WarmStartRecipe)})
    if args.check:
        shipped = folder_recipe_key(args.out)
        print(f"recipe key {recipe.key()}, folder {args.out}: {shipped}")
        return 0 if shipped == recipe.key() else 1
    build_default_policy(args.out, recipe, progress=args.progress)
    return 0


if __name__ == "__main__":
    sys.exit(main())
