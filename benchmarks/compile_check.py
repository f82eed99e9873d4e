"""Compile every @triton.jit kernel of oar_kernels/kernels/ for real NVIDIA targets, no GPU needed.

    python benchmarks/compile_check.py                  # sm_80 and sm_90, prints the table
    python benchmarks/compile_check.py --targets 80,90,100 --json out.json

Triton's wheel carries ptxas, so `triton.compile(ASTSource(...), target=GPUTarget("cuda", cc,
32))` builds PTX and cubin on a CPU-only machine. What is compiled is what the launchers
really launch: each launcher of oar_kernels/kernels/ is driven with "CUDA-like" meta tensors
(no memory; `is_cuda` is True so the GPU configuration is chosen), the kernel launch is
recorded instead of run, and the recorded arguments go through Triton's own specialization
(the binder a real launch uses: 16-byte aligned pointers and ints divisible by 16 get
`tt.divisibility`, ints equal to 1 become constants). Base allocations are taken as 16-byte
aligned (CUDA's caching allocator aligns to 512 B), so a view's alignment is its offset's.

A compiled variant fails the check on
  * a compile error (Triton or ptxas);
  * shared memory over the target's per-block limit (sm_80 166,912 B; sm_90/sm_100 232,448 B;
    Triton only enforces it when a kernel loads on a device);
  * registers x threads over the 65,536 registers of an SM (the launch would fail);
  * a 16-bit tl.dot whose PTX has no tensor-core instruction (mma / wgmma / tcgen05);
  * register spills (ptxas' `-v` report: spill stores or loads > 0);
and the whole check fails when a kernel of oar_kernels/kernels/ is launched by no case (so a
new kernel cannot slip past). Helper @triton.jit functions called by a kernel are not kernels.

Kernels imported while TRITON_INTERPRET is on cannot be compiled: run this in its own
process (tests/test_triton_compile.py does). Each run uses a fresh Triton cache directory, so
ptxas runs and its report is read; variants are deduplicated and compiled on 2 processes.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import json
import os
import pkgutil
import re
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field

import harness  # noqa: E402  (the checkout's oar_kernels where it is not installed)

os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # Triton 3.9's default, without its warning

import torch  # noqa: E402
import triton  # noqa: E402

SHARED_LIMIT = {80: 166_912, 86: 101_376, 89: 101_376, 90: 232_448, 100: 232_448}
NUM_SMS = {80: 108, 86: 84, 89: 128, 90: 132, 100: 148}  # A100, A6000, L40, H100/H200, B200
REGS_PER_SM = 65_536
TENSOR_CORE_OPS = ("mma.sync", "wgmma", "tcgen05.mma")
HALF = (torch.float16, torch.bfloat16)
DTYPE_NAMES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16", torch.float64: "fp64"}

# The shapes of the issue: gpu_check's, an unaligned one with int32 targets, and the edge N=D=V=1.
LM_SHAPES = {"gpu_check": (16384, 2048, 151936, torch.int64),
             "unaligned": (1000, 768, 50257, torch.int32),
             "edge": (1, 1, 1, torch.int64)}


# ----------------------------------------------------------------------------- recording launches


class _CudaLike(torch.Tensor):
    """A meta tensor (shape, strides, no memory) that says it lives on a GPU, so launchers take
    their CUDA configuration. Views and results of torch ops keep the subclass."""

    @property
    def is_cuda(self):  # noqa: D401
        return True


def cuda_like(shape, dtype, strides=None):
    if strides is None:
        t = torch.empty(shape, dtype=dtype, device="meta")
    else:
        t = torch.empty_strided(shape, strides, dtype=dtype, device="meta")
    return t.as_subclass(_CudaLike)


class _Ptr:
    """What Triton's binder needs of a tensor argument: a dtype and an address."""

    def __init__(self, t: torch.Tensor):
        self.dtype = t.dtype
        # the base allocation is 512-byte aligned on CUDA; a view is as aligned as its offset
        self._ptr = 512 + t.storage_offset() * t.element_size()

    def data_ptr(self):
        return self._ptr


@dataclass
class Launch:
    kernel: str  # module:function
    case: str
    dtype: str
    args: tuple
    kwargs: dict


class _Recorder:
    """Stands in for a JITFunction in its module: kernel[grid](...) records the call."""

    def __init__(self, fn, sink, case):
        self.fn, self.sink, self.case = fn, sink, case

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            args = tuple(_Ptr(a) if isinstance(a, torch.Tensor) else a for a in args)
            kwargs = {k: (_Ptr(v) if isinstance(v, torch.Tensor) else v) for k, v in kwargs.items()}
            self.sink.append(Launch(kernel_id(self.fn), self.case[0], self.case[1], args, kwargs))
        return launch


def kernel_id(fn) -> str:
    return f"{fn.fn.__module__}:{fn.fn.__name__}"


def kernel_modules():
    import oar_kernels.kernels as pkg

    return [importlib.import_module(f"{pkg.__name__}.{m.name}") for m in pkgutil.iter_modules(pkg.__path__)]


def all_kernels() -> dict:
    """Every launchable @triton.jit function of oar_kernels/kernels/: module:name -> JITFunction.
    A jit function whose name is called from another jit function of its module is a helper."""
    out = {}
    for mod in kernel_modules():
        jits = {n: v for n, v in vars(mod).items() if isinstance(v, triton.runtime.jit.JITFunction)
                and v.fn.__module__ == mod.__name__}
        for name, fn in jits.items():
            called = any(re.search(rf"\b{re.escape(name)}\s*\(", other.src)
                         for o, other in jits.items() if o != name)
            if not called:
                out[kernel_id(fn)] = fn
    return out


@contextlib.contextmanager
def recording(sink, case, num_sms):
    """Every kernel of every kernel module records instead of launching; GPUs have num_sms SMs."""
    saved = []
    for mod in kernel_modules():
        for name, v in list(vars(mod).items()):
            if isinstance(v, triton.runtime.jit.JITFunction):
                saved.append((mod, name, v))
                setattr(mod, name, _Recorder(v, sink, case))
        if hasattr(mod, "_num_sms"):
            saved.append((mod, "_num_sms", mod._num_sms))
            mod._num_sms = lambda device: num_sms
    try:
        yield
    finally:
        for mod, name, v in saved:
            setattr(mod, name, v)


def record_launches(num_sms: int) -> list:
    """Drives every launcher the way the ops call it, at the issue's shapes; returns Launches."""
    from oar_kernels.kernels import bilevel as kb
    from oar_kernels.kernels import linear_logprob as kl
    from oar_kernels.kernels import saliency as ks
    from oar_kernels.ops._lm_head_chunks import chunk_cols, chunk_rows

    sink: list = []
    f32 = torch.float32

    def rec(case, dtype, fn):
        with recording(sink, (case, DTYPE_NAMES.get(dtype, str(dtype))), num_sms):
            fn()

    # LM head: the fused forward (oar.fused_linear_logprob) and the chunk kernels of
    # ops/_lm_head_chunks.py (the chunked forward, the GRPO pass and the backward over row chunks
    # or vocabulary blocks), as they call them. Every bias/entropy combination at the gpu_check shape; the worst one (both) elsewhere.
    for shape_name, (N, D, V, tdt) in LM_SHAPES.items():
        dtypes = (f32, torch.bfloat16, torch.float16) if shape_name == "gpu_check" else (f32, torch.bfloat16)
        for dtype in dtypes:
            combos = [(b, e) for b in (False, True) for e in (False, True)]
            if shape_name != "gpu_check" or dtype == torch.float16:  # fp16 compiles as bf16 does
                combos = [(True, True)]
            for bias, ent in combos:
                h, w, t = cuda_like((N, D), dtype), cuda_like((V, D), dtype), cuda_like((N,), tdt)
                b = cuda_like((V,), dtype) if bias else None
                rec(f"fused_forward {shape_name} bias={bias} entropy={ent}", dtype,
                    lambda: kl.fused_forward(h, w, t, b, 0.7, ent))
            rows = chunk_rows(N, V, torch.device("cuda"))
            z = cuda_like((rows, V), f32)  # the fp32 logits chunk of whole rows
            tt, lse, g = cuda_like((N,), tdt)[:rows], cuda_like((rows,), f32), cuda_like((rows,), f32)
            for ent in (False, True):
                if dtype == f32:
                    rec(f"chunk_stats {shape_name} entropy={ent}", f32,
                        lambda: kl.chunk_stats(z, tt, 0.7, ent))
                # 16-bit inputs: d logits go to a 16-bit buffer for the cuBLAS GEMMs
                out = z if dtype == f32 else cuda_like((rows, V), dtype)
                extra = (cuda_like((rows,), f32), cuda_like((rows,), f32)) if ent else (None, None)
                rec(f"chunk_dlogits {shape_name} entropy={ent}", dtype,
                    lambda: kl.chunk_dlogits(z, out, tt, lse, g, 0.7, *extra))
            # the backward over vocabulary blocks: all N rows, a block of columns at col0 > 0
            cols = chunk_cols(N, V, torch.device("cuda"))
            zb = cuda_like((N, cols), f32)
            outb = zb if dtype == f32 else cuda_like((N, cols), dtype)
            nb = (cuda_like((N,), tdt), cuda_like((N,), f32), cuda_like((N,), f32))
            entb = (cuda_like((N,), f32), cuda_like((N,), f32))
            rec(f"chunk_dlogits vocab block {shape_name} entropy=True", dtype,
                lambda: kl.chunk_dlogits(zb, outb, *nb, 0.7, *entb, col0=cols))

    # Bi-Level: rows in registers (T <= 4096) and walked in blocks; fp64 scores take log1p in fp64
    for B, T, dtypes in ((256, 2048, (f32, torch.bfloat16, torch.float64)), (8, 8192, (f32, torch.float64)),
                         (3, 1000, (f32,)), (1, 1, (f32,))):
        for dtype in dtypes:
            for stl in ((False, True) if (T, dtype) == (2048, f32) else (True,)):
                s, m = cuda_like((B, T), dtype), cuda_like((B, T), torch.bool)
                rec(f"bilevel B={B} T={T} sum_to_len={stl}", dtype,
                    lambda: kb.bilevel_reshape_triton(s, m, 0.25, 1.0, 0.1, stl))

    # saliency: embeddings [B, T, D]; an expanded (stride-0) gradient as from J = y.sum()
    for (B, T, D), dtype, acc in (((16, 1024, 2048), torch.bfloat16, False), ((16, 1024, 2048), f32, True),
                                  ((3, 37, 768), f32, False), ((3, 37, 768), torch.float64, False),
                                  ((1, 1, 1), f32, False)):
        x, gr = cuda_like((B, T, D), dtype), cuda_like((B, T, D), dtype)
        o1, o2 = cuda_like((B, T), f32), cuda_like((B, T), f32)
        rec(f"saliency B={B} T={T} D={D} accumulate={acc}", dtype,
            lambda: ks.saliency_reduce_triton(gr, x, o1, o2, acc))
    x = cuda_like((4, 64, 512), f32)
    gexp = cuda_like((4, 64, 512), f32, strides=(0, 0, 0))
    rec("saliency expanded gradient", f32,
        lambda: ks.saliency_reduce_triton(gexp, x, cuda_like((4, 64), f32), cuda_like((4, 64), f32)))
    return sink


# ----------------------------------------------------------------------------- compiling


@dataclass
class Variant:
    kernel: str
    target: int
    dtype: str
    config: str  # constexprs + warps / stages, short
    cases: list = field(default_factory=list)
    expects_mma: bool = False
    registers: int | None = None
    spill_bytes: int | None = None  # spill stores + loads
    shared: int | None = None
    num_warps: int | None = None
    has_mma: bool | None = None
    error: str | None = None
    seconds: float = 0.0


def _specialize(fn, launch: Launch, target):
    from triton.compiler.compiler import make_backend
    from triton.runtime.jit import create_function_from_signature

    backend = make_backend(target)
    binder = create_function_from_signature(fn.signature, fn.params, backend)
    bound, spec, opts = binder(*launch.args, **launch.kwargs)
    return fn._pack_args(backend, dict(launch.kwargs), bound, spec, opts)


def _short_config(signature, constexprs, options) -> str:
    names = list(signature)
    parts = [f"{names[p[0]]}={v}" for p, v in constexprs.items() if signature[names[p[0]]] == "constexpr"]
    parts.append(f"warps={options.num_warps}")
    parts.append(f"stages={options.num_stages}")
    return " ".join(parts)


def _parse_ptxas(log: str):
    regs = re.findall(r"Used (\d+) registers", log)
    spills = re.findall(r"(\d+) bytes spill stores, (\d+) bytes spill loads", log)
    r = int(regs[-1]) if regs else None
    s = sum(int(a) + int(b) for a, b in spills) if spills else (0 if regs else None)
    return r, s


def compile_variant(fn, launch: Launch, cc: int, variant: Variant) -> Variant:
    """Compiles one specialized launch for sm_<cc> and fills in the variant's measurements."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    target = GPUTarget("cuda", cc, 32)
    t0 = time.perf_counter()
    try:
        options, signature, constexprs, attrs = _specialize(fn, launch, target)
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):  # TRITON_DUMP_PTXAS_LOG prints ptxas -v here
            ck = triton.compile(ASTSource(fn, signature, constexprs, attrs), target=target,
                                options=options.__dict__)
        variant.registers, variant.spill_bytes = _parse_ptxas(buf.getvalue())
        variant.shared = int(ck.metadata.shared)
        variant.num_warps = int(ck.metadata.num_warps)
        ptx = ck.asm.get("ptx", "")
        variant.has_mma = any(op in ptx for op in TENSOR_CORE_OPS)
    except Exception as exc:  # noqa: BLE001 - a compile error is a result here
        msg = str(exc).strip().splitlines()
        variant.error = f"{type(exc).__name__}: {' | '.join(msg[:6])[:600]}"
    variant.seconds = time.perf_counter() - t0
    return variant


def expects_mma(fn, launch: Launch, constexprs: dict, signature: dict) -> bool:
    """A kernel with tl.dot launched with a 16-bit pointer operand and not told to upcast."""
    if "tl.dot(" not in fn.src:
        return False
    names = list(signature)
    upcast = any(names[p[0]] == "UPCAST" and bool(v) for p, v in constexprs.items())
    return (not upcast) and any(isinstance(a, _Ptr) and a.dtype in HALF for a in launch.args)


def plan(launches: list, targets: list, kernels: dict) -> list:
    """Unique (kernel, specialization, options, target) variants, each with its launches' cases."""
    from triton.backends.compiler import GPUTarget

    seen: dict = {}
    jobs = []
    for cc in targets:
        target = GPUTarget("cuda", cc, 32)
        for la in launches:
            fn = kernels.get(la.kernel)
            if fn is None:
                continue
            options, signature, constexprs, attrs = _specialize(fn, la, target)
            key = (la.kernel, cc, repr(signature), repr(sorted(constexprs.items())),
                   repr(sorted(attrs.items())), options.num_warps, options.num_stages)
            if key in seen:
                seen[key][1].cases.append(la.case)
                continue
            v = Variant(la.kernel, cc, la.dtype, _short_config(signature, constexprs, options), [la.case],
                        expects_mma(fn, la, constexprs, signature))
            seen[key] = (la, v)
            jobs.append((la, v))
    return jobs


def _worker(job):
    la, v = job
    kernels = all_kernels()
    return compile_variant(kernels[la.kernel], la, v.target, v)


def run_jobs(jobs: list, processes: int) -> list:
    if processes <= 1 or len(jobs) <= 1:
        return [_worker(j) for j in jobs]
    import multiprocessing as mp

    # heaviest first (tl.dot kernels), so the two workers finish together
    order = sorted(range(len(jobs)), key=lambda i: not jobs[i][1].expects_mma)
    with mp.get_context("fork").Pool(processes) as pool:
        done = pool.map(_worker, [jobs[i] for i in order], chunksize=1)
    out = [None] * len(jobs)
    for i, v in zip(order, done):
        out[i] = v
    return out


# ----------------------------------------------------------------------------- the verdict


def problems(variants: list, kernels: dict, launched: set) -> list:
    """Failure messages for compiled variants (see the module docstring) and unlaunched kernels."""
    out = []
    for v in variants:
        where = f"{v.kernel} sm_{v.target} {v.dtype} [{v.config}] ({v.cases[0]})"
        if v.error:
            out.append(f"compile error: {where}: {v.error}")
            continue
        limit = SHARED_LIMIT.get(v.target)
        if limit is not None and v.shared is not None and v.shared > limit:
            out.append(f"shared memory {v.shared} B > {limit} B: {where}")
        if v.registers is not None and v.num_warps is not None and v.registers * v.num_warps * 32 > REGS_PER_SM:
            out.append(f"registers {v.registers} x {v.num_warps * 32} threads > {REGS_PER_SM}: {where}")
        if v.expects_mma and not v.has_mma:
            out.append(f"16-bit tl.dot without tensor-core instructions: {where}")
        if v.spill_bytes:
            out.append(f"spills {v.spill_bytes} B: {where}")
        if v.registers is None:
            out.append(f"no ptxas register report (TRITON_DUMP_PTXAS_LOG): {where}")
    for k in sorted(set(kernels) - launched):
        out.append(f"kernel launched by no case: {k}")
    return out


def table(variants: list) -> str:
    rows = [{"kernel": v.kernel.split(":")[1], "dtype": v.dtype, "target": f"sm_{v.target}", "config": v.config,
             "registers": "error" if v.error else v.registers, "spills (B)": "-" if v.error else v.spill_bytes,
             "shared (B)": "-" if v.error else v.shared, "cases": len(v.cases), "s": round(v.seconds, 1)}
            for v in sorted(variants, key=lambda v: (v.kernel, v.target, v.dtype, v.config))]
    return harness.render(rows, cols=tuple(rows[0]) if rows else ("kernel",))


def summary(variants: list) -> str:
    """One row per (kernel, dtype, target): variants, register range, largest spill and shared memory."""
    groups: dict = {}
    for v in variants:
        groups.setdefault((v.kernel.split(":")[1], v.dtype, v.target), []).append(v)
    rows = []
    for (k, d, t), vs in sorted(groups.items()):
        ok = [v for v in vs if not v.error]
        regs = sorted(v.registers for v in ok if v.registers is not None)
        reg = "-" if not regs else (f"{regs[0]}" if regs[0] == regs[-1] else f"{regs[0]}-{regs[-1]}")
        spill = max((v.spill_bytes or 0) for v in ok) if ok else "-"
        shared = max((v.shared or 0) for v in ok) if ok else "-"
        errs = len(vs) - len(ok)
        rows.append({"kernel": k, "dtype": d, "target": f"sm_{t}", "variants": f"{len(vs)}{f' ({errs} failed)' if errs else ''}",
                     "registers": reg, "spills (B)": spill, "shared (B)": shared})
    return harness.render(rows, cols=tuple(rows[0]) if rows else ("kernel",))


def check(targets=(80, 90), processes=2, launches=None):
    """Records the launches (or takes the given ones), compiles, returns (variants, problems)."""
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        raise RuntimeError("compile_check: unset TRITON_INTERPRET (interpreted kernels cannot be compiled)")
    os.environ["TRITON_DUMP_PTXAS_LOG"] = "1"
    os.environ["TRITON_CACHE_DIR"] = tempfile.mkdtemp(prefix="oar_compile_check_")
    kernels = all_kernels()
    if launches is None:
        launches = []
        for cc in targets:  # the SM count changes the vocabulary split of the fused forward
            launches += record_launches(NUM_SMS.get(cc, 132))
    variants = run_jobs(plan(launches, list(targets), kernels), processes)
    return variants, problems(variants, kernels, {la.kernel for la in launches})


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--targets", default="80,90", help="compute capabilities, e.g. 80,90,100")
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--json", help="write variants and problems here")
    ap.add_argument("--summary", action="store_true", help="one row per kernel, dtype and target instead of every variant")
    args = ap.parse_args(argv)
    targets = [int(x) for x in args.targets.split(",") if x]
    t0 = time.perf_counter()
    variants, probs = check(targets, args.processes)
    print(f"triton {triton.__version__}, torch {torch.__version__}: {len(variants)} variants "
          f"for sm_{', sm_'.join(map(str, targets))} in {time.perf_counter() - t0:.1f} s")
    print(summary(variants) if args.summary else table(variants))
    for p in probs:
        print("FAIL", p)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"triton": triton.__version__, "variants": [asdict(v) for v in variants],
                       "problems": probs}, f, indent=1)
    return 1 if probs else 0


if __name__ == "__main__":
    sys.exit(main())
