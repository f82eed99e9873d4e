"""Entry point of `python -m oar_kernels.train` (and `oar-train`)."""
import sys

DESCRIPTION = """\
Trains a causal LM with GRPO, OAR-G or OAR-P (Outcome-grounded Advantage Reshaping).

With no arguments: builds the generated arithmetic task, loads the small default policy shipped
in the package, evaluates it on held-out problems, trains it with OAR-G on the CPU (20 steps of
8 prompts x 8 responses) and evaluates it again. Outputs go to runs/<algo>-seed<seed>/: metrics.jsonl,
config.yaml (pass it back with --config), checkpoints/, reward.png, accuracy.png, weights.png,
weights.html (tokens coloured by OAR weight), final/ (save_pretrained folder). A non-empty
output_dir needs --resume_from_checkpoint last (continue) or --overwrite_output_dir (replace).

Several processes: torchrun --nproc_per_node N -m oar_kernels.train ... (DDP; --fsdp for FSDP2).
"""


def main(argv=None) -> int:
    from .config import ConfigError, parse_args_and_given

    try:
        cfg, given = parse_args_and_given(argv, DESCRIPTION)
    except ConfigError as err:
        print(f"oar_kernels.train: config error: {err}", file=sys.stderr)
        return 2
    from .loop import train

    try:
        summary = train(cfg, given=given)
    except ConfigError as err:  # found before any work: run folder, resume, model source
        print(f"oar_kernels.train: config error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("oar_kernels.train: aborted", file=sys.stderr)
        return 130
    except ValueError as err:  # bad data set / model / checkpoint found while starting
        print(f"oar_kernels.train: error: {err}", file=sys.stderr)
        return 2
    return 130 if summary.get("interrupted") else 0


if __name__ == "__main__":
    sys.exit(main())
