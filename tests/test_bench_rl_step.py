"""benchmarks/rl_step.py at tiny sizes (a tiny model from a config, one step), so it cannot rot; it
times the trainer's own weigh_rollout and update."""

import pytest
import torch
from bench_loader import load_benchmark

pytest.importorskip("transformers")


def _load_bench():
    return load_benchmark("rl_step")


def _tiny_policy():
    from oar_kernels.default_job import WarmStartRecipe, build_char_tokenizer, build_model

    tok = build_char_tokenizer()
    recipe = WarmStartRecipe(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, max_positions=256)
    model = build_model(recipe, len(tok), tok.pad_token_id, tok.eos_token_id, tok.bos_token_id)
    return model.eval(), tok


def test_rl_step_tiny(monkeypatch, tmp_path):
    bench = _load_bench()
    from oar_kernels.data import load_task
    from oar_kernels.train import generation

    model, tok = _tiny_policy()
    task = load_task("arithmetic")
    real_sample = generation.sample

    # A random model writes no answers (reward 0 everywhere, nothing for OAR to score): after the
    # real generate, the first response of each group is replaced by the worked solution, so
    # groups have mixed rewards and the importance / reshape paths run.
    def sample(model, tokenizer, prompts, cfg, seeds, **kw):
        rows = real_sample(model, tokenizer, prompts, cfg, seeds, **kw)
        G = cfg.num_generations
        out = list(rows)
        for j in range(len(prompts)):
            sol = task.train_example(cfg.seed, j).solution
            ids = tokenizer.encode(sol, add_special_tokens=False) + [tokenizer.eos_token_id]
            out[j * G] = rows[j * G]._replace(response_ids=ids, text=sol, truncated=False)
        return out

    monkeypatch.setattr(generation, "sample", sample)
    res = bench.run(model, tok, prompts=2, num_generations=2, max_completion_length=12, steps=1, warmup=0,
                    naive_budget=1.0, log=lambda *a, **k: None)
    algos = [r["algo"] for r in res["rows"]]
    assert algos == ["grpo", "oar-g", "oar-p", "oar-g 1fwd", "oar-g bound"]
    by = {r["algo"]: r for r in res["rows"]}
    # the bound: grpo's step plus a chunk pass over the scored rows
    bound = by["oar-g bound"]
    assert bound["importance"] > 0 and bound["scored"] == by["oar-g"]["scored"]
    assert all(bound[p] == by["grpo"][p] for p in ("rollout", "reward", "update"))
    # GRPO scores nothing and reshapes nothing; the OAR rows score the same responses and reshape them
    assert by["grpo"]["scored"] == 0 and by["grpo"]["reshape"] == 0.0
    assert by["oar-g"]["scored"] == by["oar-p"]["scored"] >= 1
    assert by["oar-g"]["reshape"] > 0 and by["oar-p"]["reshape"] > 0
    for r in res["rows"]:
        assert all(r[p] >= 0 for p in bench.PARTS)
    o = res["oarp"]
    assert o["responses"] >= 1 and o["reuse"] > 0 and o["plain"] > 0 and o["naive"] > 0
    md = bench.format_table(res)
    assert "oar-g / grpo per full step" in md and "prefix_reuse=False" in md and "lower bound" in md
    bench.write_csv(res, str(tmp_path / "rl.csv"))
    csv_text = (tmp_path / "rl.csv").read_text()
    assert csv_text.splitlines()[0].startswith("algo,s/step,tokens/s") and ",commit," in csv_text.splitlines()[0]
    rows = bench.table_rows(res)
    assert rows[0]["x grpo"] == pytest.approx(1.0)
    # the weights are restored after the benchmark
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_gpu_rows_on_cpu_at_tiny_size():
    """gpu_rows, the table benchmarks/gpu_check.py prints, runs end to end (here on the CPU at tiny
    sizes): one OAR/GRPO ratio row per algorithm and target, each ratio the row's own times."""
    bench = _load_bench()
    rows = bench.gpu_rows("cpu", prompts=2, num_generations=2, max_completion_length=12, steps=1,
                          synthetic="tiny", synthetic_prompts=2, naive_budget=0.5)
    assert rows and not [r for r in rows if "error" in r.metric], rows
    shapes = {r.shape.split()[0] for r in rows}
    assert shapes == {"default", "tiny"}
    for r in rows:
        assert r.op == "rl_step" and r.value > 0
        if r.target.startswith("<= "):  # pass/fail is the ratio against the stated target
            assert r.ok == (r.value <= float(r.target[3:]))
    algos = {r.metric.split(" / grpo")[0] for r in rows if " / grpo full step" in r.metric}
    assert {"oar-g", "oar-g 1fwd", "oar-p"} <= algos


def test_rl_step_synthetic_scores_every_response():
    """--synthetic: a random-weight Qwen2 (tiny shape here; qwen2-0.5b on a GPU) whose responses
    are all scored through synthetic answer spans, so OAR's cost shows without a trained model."""
    bench = _load_bench()
    from oar_kernels import segments

    real = segments.build_segments
    model, tok, label = bench.synthetic_model("tiny", "cpu")
    assert model.config.vocab_size == len(tok) == 1000 and "random init" in label
    res = bench.run(model, tok, prompts=2, num_generations=2, max_completion_length=12, steps=1, warmup=0,
                    naive_budget=1.0, log=lambda *a, **k: None, synthetic=True)
    assert segments.build_segments is real  # the patch is undone
    by = {r["algo"]: r for r in res["rows"]}
    # every response longer than the answer span is scored (a random model rarely stops early)
    assert by["oar-g"]["scored"] == by["oar-p"]["scored"] == by["oar-g 1fwd"]["scored"] >= 3
    assert res["reward_mean"] == 0.5
    seg = bench.synthetic_segments([5, 6], [7, 8, 9, 10, 11, 12, tok.eos_token_id], tok, "So: ")
    assert seg.reasoning_ids.tolist() == [7, 8] and seg.answer_ids.tolist() == [9, 10, 11, 12]
    assert seg.conclude_ids.tolist() == tok.encode("So: ", add_special_tokens=False)


def test_rl_step_times_the_trainers_update(monkeypatch):
    """The update column is the trainer's own train.update.update (and the importance column its
    weigh_rollout), once per algorithm and repeat, not a copy of them."""
    bench = _load_bench()
    from oar_kernels.train import update as trainer_update
    from oar_kernels.train import weights as trainer_weights

    calls = []
    for mod, name in ((trainer_update, "update"), (trainer_weights, "weigh_rollout")):
        real = getattr(mod, name)
        monkeypatch.setattr(mod, name, lambda *a, _real=real, _name=name, **k: (calls.append(_name), _real(*a, **k))[1])
    model, tok, _ = bench.synthetic_model("tiny", "cpu")
    bench.run(model, tok, prompts=2, num_generations=2, max_completion_length=8, steps=1, warmup=0, naive_budget=0.5,
              prefix_table=False, log=lambda *a, **k: None, synthetic=True)
    assert calls.count("update") == calls.count("weigh_rollout") == 4  # grpo, oar-g, oar-p, oar-g 1fwd; one repeat
