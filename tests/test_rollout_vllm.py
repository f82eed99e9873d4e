"""vLLM weight sync without vLLM: which reload path the worker extension takes on workers and
model runners shaped like vLLM 0.31-0.34's, and the one log line at the first sync.

The fakes copy the signatures read from the vLLM wheels (vllm/v1/worker/gpu_worker.py's Worker,
gpu_model_runner.py's V1 runner, gpu/model_runner.py's V2 runner, cpu/standalone_model_runner.py
in 0.34); the bodies only record what they were called with. vLLM mixes the extension into the
worker class by appending it to the bases, as the classes below do."""
from __future__ import annotations

import types

import pytest
import torch

from oar_kernels.rollout import vllm as vr


class FakeModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.bare_loads = []

    def load_weights(self, weights):
        self.bare_loads.append(dict(weights))


class _Runner:
    def __init__(self):
        self.model = FakeModel()
        self.reloads = []

    def get_model(self):
        return self.model


class RunnerV1(_Runner):  # 0.31-0.33 gpu_model_runner.py (and the V1 CPU runner, a subclass)
    def reload_weights(self, weights_iterator=None, weights_path=None, is_checkpoint_format=True) -> None:
        self.reloads.append((dict(weights_iterator), weights_path, is_checkpoint_format))


class RunnerV2_031(_Runner):  # 0.31 gpu/model_runner.py: forwards to the V1 method
    def reload_weights(self, *args, **kwargs) -> None:
        RunnerV1.reload_weights(self, *args, **kwargs)


class RunnerV2(RunnerV1):  # 0.32-0.34 gpu/model_runner.py, 0.34 cpu/standalone_model_runner.py
    pass


class RunnerWithoutReload(_Runner):  # a runner with no in-place reload
    pass


class RunnerDiskOnly(_Runner):  # older vLLM: reload from disk only, no weights argument
    def reload_weights(self) -> None:
        raise AssertionError("a disk-only reload must not be called")


class Worker031to033:  # gpu_worker.py Worker, 0.31-0.33 (CPUWorker, XPUWorker inherit it)
    def __init__(self, runner):
        self.model_runner = runner
        self.vllm_config = None

    def reload_weights(self, *args, **kwargs) -> None:
        self.model_runner.reload_weights(*args, **kwargs)


class Worker034:  # gpu_worker.py Worker, 0.34: explicit parameters, passed on positionally
    def __init__(self, runner):
        self.model_runner = runner
        self.vllm_config = None

    def reload_weights(self, weights_iterator=None, weights_path=None, is_checkpoint_format=True) -> None:
        self.model_runner.reload_weights(weights_iterator, weights_path, is_checkpoint_format)


class WorkerWithoutReload:
    def __init__(self, runner):
        self.model_runner = runner
        self.vllm_config = None


def _extended(worker_cls):
    return type(worker_cls.__name__ + "Ext", (worker_cls, vr.WeightSyncExtension), {})


CASES = {
    # version: (worker class, runner class, expected path)
    "0.31 V1 runner": (Worker031to033, RunnerV1, "worker.reload_weights"),
    "0.31 V2 runner": (Worker031to033, RunnerV2_031, "worker.reload_weights"),
    "0.32/0.33 V1 runner": (Worker031to033, RunnerV1, "worker.reload_weights"),
    "0.32/0.33 V2 runner": (Worker031to033, RunnerV2, "worker.reload_weights"),
    "0.34 V2 runner": (Worker034, RunnerV2, "worker.reload_weights"),
    "runner only": (WorkerWithoutReload, RunnerV2, "model_runner.reload_weights"),
    "no reload": (WorkerWithoutReload, RunnerWithoutReload, "model.load_weights"),
    "disk-only reload": (WorkerWithoutReload, RunnerDiskOnly, "model.load_weights"),
}

_WEIGHTS = {"a.weight": torch.arange(6, dtype=torch.float32).reshape(2, 3), "b.bias": torch.ones(4, dtype=torch.bfloat16)}


def _packed():
    return [(name, *vr._pack(t)) for name, t in _WEIGHTS.items()]


@pytest.mark.parametrize("case", list(CASES))
def test_reload_path_per_vllm_shape(case):
    worker_cls, runner_cls, want = CASES[case]
    runner = runner_cls()
    worker = _extended(worker_cls)(runner)
    assert vr.reload_path(worker) == want
    assert worker.oar_load_weights(_packed()) == want
    if want == "model.load_weights":
        assert len(runner.model.bare_loads) == 1
        got = runner.model.bare_loads[0]
    else:
        assert runner.model.bare_loads == []  # never the bare load where a reload exists
        assert len(runner.reloads) == 1
        got, weights_path, is_checkpoint_format = runner.reloads[0]
        assert weights_path is None and is_checkpoint_format is True
    assert set(got) == set(_WEIGHTS)
    for name, t in _WEIGHTS.items():
        assert got[name].dtype == t.dtype and torch.equal(got[name], t)


class FakeLLM:
    def __init__(self, worker):
        self.worker = worker
        self.prefix_resets = 0

    def collective_rpc(self, method, args=()):
        return [getattr(self.worker, method)(*args)]

    def reset_prefix_cache(self):
        self.prefix_resets += 1


@pytest.mark.parametrize("version,case", [("0.31.0", "0.31 V2 runner"), ("0.34.0", "0.34 V2 runner"),
                                          ("0.30.0", "no reload")])
def test_first_sync_logs_version_and_path(monkeypatch, version, case):
    monkeypatch.setitem(__import__("sys").modules, "vllm", types.SimpleNamespace(__version__=version))
    worker_cls, runner_cls, want = CASES[case]
    runner = runner_cls()
    lines = []
    engine = object.__new__(vr.VLLMRollout)  # no engine: only the sync path
    engine.llm, engine._log, engine._sync_logged = FakeLLM(_extended(worker_cls)(runner)), lines.append, False
    policy = torch.nn.Linear(3, 2)
    engine.sync_weights(policy)
    engine.sync_weights(policy)
    assert len(lines) == 1  # at the first sync only
    assert lines[0].startswith(f"[oar] vLLM {version}: weights sync through {want} (")
    assert engine.llm.prefix_resets == 2
    if want == "model.load_weights":
        assert "no layerwise reload" in lines[0] and len(runner.model.bare_loads) == 2
    else:
        assert len(runner.reloads) == 2 and set(runner.reloads[1][0]) == {"weight", "bias"}
