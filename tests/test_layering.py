"""The library never imports its test oracles: no module of oar_kernels outside
oar_kernels/reference/ imports oar_kernels.reference (absolutely or relatively)."""
import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = "oar_kernels"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE
ORACLES = "reference"


def module_name(path: Path, package_root: Path, package: str = PACKAGE) -> str:
    """Dotted name of a .py file under package_root ("pkg.sub.mod"; a package's __init__ is "pkg.sub")."""
    parts = list(path.relative_to(package_root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join([package] + parts)


def imported_modules(source: str, module: str, is_package: bool) -> set:
    """Every module an import statement of `source` names, resolved to absolute dotted names.

    `from X import a, b` yields X and X.a, X.b (a name may be a submodule); relative imports
    are resolved against `module` (a package's __init__ resolves "." to itself).
    """
    names = set()
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                prefix = ".".join(base)
                target = f"{prefix}.{node.module}" if node.module else prefix
            else:
                target = node.module
            names.add(target)
            names.update(f"{target}.{alias.name}" for alias in node.names)
    return names


def imports_oracles(names, package: str = PACKAGE) -> list:
    oracle = f"{package}.{ORACLES}"
    return sorted(n for n in names if n == oracle or n.startswith(oracle + "."))


def offenders(package_root: Path, package: str = PACKAGE) -> dict:
    """{module: [oracle modules it imports]} for every module outside the oracles' folder."""
    bad = {}
    for path in sorted(package_root.rglob("*.py")):
        rel = path.relative_to(package_root).parts
        if rel[0] == ORACLES:
            continue
        mod = module_name(path, package_root, package)
        hits = imports_oracles(imported_modules(path.read_text(encoding="utf-8"), mod, path.name == "__init__.py"),
                               package)
        if hits:
            bad[mod] = hits
    return bad


def test_no_library_module_imports_the_oracles():
    files = list(ROOT.rglob("*.py"))
    assert len(files) > 30  # the walk really sees the package
    assert offenders(ROOT) == {}


def test_the_parser_resolves_every_import_form():
    cases = {
        "from ..reference.grpo import x": True,
        "from ..reference import importance": True,
        "from .. import reference": True,
        "from oar_kernels.reference.bilevel import bilevel_reshape_reference": True,
        "import oar_kernels.reference": True,
        "import oar_kernels.reference.importance as imp": True,
        "from oar_kernels import reference as ref": True,
        "from . import reference": False,  # oar_kernels.ops.reference: another module
        "from ..importance._common import MODES": False,
        "from ..segments import Segments  # reference": False,
        "x = 'oar_kernels.reference'": False,
    }
    for source, expected in cases.items():
        hits = imports_oracles(imported_modules(source, "oar_kernels.ops.grpo_loss", False))
        assert bool(hits) == expected, (source, hits)
    # in a package's __init__, "." is the package itself
    assert imports_oracles(imported_modules("from . import reference", "oar_kernels", True)) == ["oar_kernels.reference"]
    assert imports_oracles(imported_modules("from .reference import bilevel", "oar_kernels", True))


def test_the_walk_catches_a_planted_import(tmp_path):
    pkg = tmp_path / "fakepkg"
    for folder in (pkg / "reference", pkg / "ops" / "inner"):
        folder.mkdir(parents=True)
        (folder / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "reference" / "oracle.py").write_text("from ..ops import clean\n")  # the oracles may import the library
    (pkg / "ops" / "clean.py").write_text("import math\nfrom .inner import helper\n")
    (pkg / "ops" / "inner" / "helper.py").write_text("def f():\n    from ...reference.oracle import g\n")
    assert list(offenders(pkg, "fakepkg")) == ["fakepkg.ops.inner.helper"]
    assert "fakepkg.reference.oracle" in offenders(pkg, "fakepkg")["fakepkg.ops.inner.helper"]


def test_the_ops_run_without_loading_the_oracles():
    code = (
        "import sys, torch, oar_kernels as oar\n"
        "s, m = torch.rand(3, 6), torch.ones(3, 6, dtype=torch.bool)\n"
        "oar.bilevel_reshape(s, m, backend='torch'); oar.bilevel_reshape(s, m)\n"
        "a = oar.group_advantages(torch.rand(4), 2)\n"
        "lp = torch.randn(2, 3, requires_grad=True)\n"
        "oar.grpo_loss(lp, None, a[:2], m[:2, :3])[0].backward()\n"
        "oar.fused_linear_grpo_loss(torch.randn(2, 2, 5), torch.randn(7, 5), torch.tensor([[1, 2], [3, 4]]), None,"
        " a[:2], m[:2, :2])\n"
        "print(sorted(n for n in sys.modules if n.startswith('oar_kernels.reference')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == "[]"


def imports_of_folder(folder: str, forbidden: str, package_root: Path = ROOT, package: str = PACKAGE) -> dict:
    """{module: [modules under package.forbidden it imports]} for the modules of package.folder."""
    bad, target = {}, f"{package}.{forbidden}"
    for path in sorted((package_root / folder).rglob("*.py")):
        mod = module_name(path, package_root, package)
        names = imported_modules(path.read_text(encoding="utf-8"), mod, path.name == "__init__.py")
        hits = sorted(n for n in names if n == target or n.startswith(target + "."))
        if hits:
            bad[mod] = hits
    return bad


def test_the_data_layer_does_not_import_the_default_job():
    """data/ sits below default_job/: the default job registers its task with data.register_task."""
    assert len(list((ROOT / "data").rglob("*.py"))) >= 3
    assert imports_of_folder("data", "default_job") == {}



def test_the_folder_check_sees_a_planted_import(tmp_path):
    (tmp_path / "pkg" / "data").mkdir(parents=True)
    (tmp_path / "pkg" / "data" / "x.py").write_text("def f():\n    from ..default_job.arithmetic import T\n")
    (tmp_path / "pkg" / "data" / "y.py").write_text("from ..default_jobs import other\n")
    assert imports_of_folder("data", "default_job", tmp_path / "pkg", "pkg") == {
        "pkg.data.x": ["pkg.default_job.arithmetic", "pkg.default_job.arithmetic.T"]}


def test_the_default_job_task_is_registered_wherever_the_package_is_used():
    code = "from oar_kernels.data import load_task; print(type(load_task('arithmetic_plan:3-3')).__name__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ArithmeticTask", out.stderr[-2000:]
