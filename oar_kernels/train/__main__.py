"""Entry point of `python -m oar_kernels.train` (the trainer lands with its own issue)."""
import argparse
import sys

DESCRIPTION = """\
Trains a causal LM with GRPO, OAR-G or OAR-P.

With no arguments it will build a generated arithmetic task, warm-start a small policy on
the CPU and train it with OAR-G for a few dozen steps, printing held-out accuracy before and
after. The training loop is not implemented yet in this version: this command documents the
interface and exits with status 2 when asked to train.
"""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m oar_kernels.train", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algo", choices=["grpo", "oar-g", "oar-p"], default="oar-g")
    parser.parse_args(argv)
    print("oar_kernels.train: the trainer is not implemented yet; see --help", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
