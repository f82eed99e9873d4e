"""OAR in verl: launches verl's GRPO trainer with python/verl_oar_grpo.yaml (OAR on) on a GPU machine.

    python python/verl_oar_grpo.py --model /path/to/model --train-files train.parquet \
        --val-files test.parquet --n-gpus 8 --algo oar-g
    python python/verl_oar_grpo.py --check          # CPU: compose the configuration and check it

The run is `python -m verl.trainer.main_ppo --config-path python --config-name verl_oar_grpo`
plus the overrides below and any extra `key=value` Hydra overrides given after the options.
It needs verl's environment with `pip install 'oar_kernels[verl]'` and a GPU (verl's FSDP engine
refuses to start without CUDA). --check composes the same configuration and checks it on a CPU:
OAR's keys (an unknown one is an error naming it), the actor strategy, the estimator, verl's own
validate_config, and that verl resolves trainer.v1.trainer_mode to OAR's trainer through its
plugin entry point.
"""
from __future__ import annotations

import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
CONFIG_NAME = "verl_oar_grpo"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="local model folder (actor_rollout_ref.model.path)")
    p.add_argument("--train-files", default=None, help="verl parquet data set (data.train_files)")
    p.add_argument("--val-files", default=None, help="verl parquet data set (data.val_files)")
    p.add_argument("--n-gpus", type=int, default=8, help="GPUs per node (trainer.n_gpus_per_node)")
    p.add_argument("--nnodes", type=int, default=1, help="trainer.nnodes")
    p.add_argument("--algo", default=None, choices=["oar-g", "oar-p"], help="oar.algo")
    p.add_argument("--pfinal-mode", default=None,
                   choices=["last", "answer_mean", "answer_joint", "last_after_answer"], help="oar.pfinal_mode")
    p.add_argument("--answer-source", default=None, choices=["response", "reference"], help="oar.answer_source")
    p.add_argument("--check", action="store_true", help="compose and check the configuration, then exit (CPU)")
    p.add_argument("--print-command", action="store_true", help="print the verl command line and exit")
    p.add_argument("overrides", nargs="*", help="more Hydra overrides, key=value")
    return p.parse_args(argv)


def overrides(args):
    out = []
    for key, value in (("actor_rollout_ref.model.path", args.model), ("data.train_files", args.train_files),
                       ("data.val_files", args.val_files), ("oar.algo", args.algo),
                       ("oar.pfinal_mode", args.pfinal_mode), ("oar.answer_source", args.answer_source)):
        if value is not None:
            out.append(f"{key}={value}")
    out += [f"trainer.n_gpus_per_node={args.n_gpus}", f"trainer.nnodes={args.nnodes}"]
    return out + list(args.overrides)


def command(args):
    return [sys.executable, "-m", "verl.trainer.main_ppo", "--config-path", HERE, "--config-name", CONFIG_NAME,
            *overrides(args)]


def fail(message: str) -> None:
    print(f"verl_oar_grpo.py: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def check(args) -> None:
    try:
        from hydra import compose, initialize_config_dir
        from verl.trainer.ppo.v1 import get_trainer_cls
    except ImportError as err:
        fail(f"needs the 'verl' package: pip install 'oar_kernels[verl]' ({err})")
    from oar_kernels.integrations.verl import OARTrainer, settings_from_verl_config

    with initialize_config_dir(config_dir=HERE, version_base=None):
        config = compose(config_name=CONFIG_NAME, overrides=overrides(args))
    try:
        settings = settings_from_verl_config(config)
    except ValueError as err:
        fail(str(err))
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config

    try:  # verl's own checks of the run's configuration (batch sizes against GPUs, ...)
        validate_config(config=config, use_reference_policy=need_reference_policy(config),
                        use_critic=need_critic(config))
    except (AssertionError, ValueError) as err:
        fail(f"verl's validate_config: {err}")
    trainer_cls = get_trainer_cls(config.trainer.v1.trainer_mode)
    if trainer_cls is not OARTrainer:
        fail(f"trainer.v1.trainer_mode={config.trainer.v1.trainer_mode!r} resolves to {trainer_cls.__name__}, not OARTrainer")
    print(f"trainer.v1.trainer_mode={config.trainer.v1.trainer_mode} -> {trainer_cls.__module__}.{trainer_cls.__name__}")
    print("oar:", settings.to_dict())
    print("done")


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.check:
        return check(args)
    cmd = command(args)
    if args.print_command:
        print(" ".join(cmd))
        return
    if args.model is None or args.train_files is None or args.val_files is None:
        fail("--model, --train-files and --val-files are required for a run (--check needs none)")
    import torch

    if not torch.cuda.is_available():
        fail("CUDA is not available: verl's FSDP engine needs a GPU (--check validates the configuration on CPU)")
    os.execv(sys.executable, cmd)


if __name__ == "__main__":
    main()
