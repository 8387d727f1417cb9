"""Packaging by the book.

Always: the version has one source, the package is typed (py.typed, a stub
for the compiled module whose signatures match its functions and the `def`
lines of cyce/_core.pyx, a stub for the public functions that matches them,
and `mypy --strict` passes on tests/typing_example.py), and the module's own
code uses no AVX instruction (only the kernel tables of the wider levels do).

Under `make wheel-test` (scripts/test_wheel.sh), which installs the built
wheel and sdist into fresh venvs and runs this suite outside the checkout,
also: the installed package is the one imported (not the source tree), and
the wheel and the sdist hold what they must (CYCE_WHEEL, CYCE_SDIST,
CYCE_TEST_INSTALLED are set there).
"""

import ast
import importlib
import importlib.metadata
import importlib.util
import inspect
import os
import platform
import re
import runpy
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest

import cyce
import cyce._softmax
from cyce import _core

PACKAGE = Path(cyce.__file__).resolve().parent
ROOT = PACKAGE.parent
CHECKOUT = (ROOT / "pyproject.toml").is_file() and (ROOT / "setup.py").is_file()
EXAMPLE = Path(__file__).resolve().parent / "typing_example.py"
BUILT_LEVELS = _core.built_levels()
PUBLIC_MODULES = ["_softmax", "_binary", "_linear"]  # the modules whose functions cyce/__init__.py exports
X86_64 = platform.machine().lower() in ("x86_64", "amd64")
MAX_WHEEL_BYTES = 1024 * 1024


# ---- helpers: signatures from stubs (ast) and from Cython sources (text) ----

def stub_functions(path):
    """{name: [FunctionDef, ...]} of a stub (several for an @overload); a
    `from X import *` line brings in X's stub (X in this package)."""
    tree = ast.parse(path.read_text())
    functions = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            functions.setdefault(node.name, []).append(node)
        elif isinstance(node, ast.ImportFrom) and [a.name for a in node.names] == ["*"]:
            assert node.module.startswith("cyce."), node.module
            functions.update(stub_functions(PACKAGE / (node.module.split(".", 1)[1] + ".pyi")))
    return functions


def stub_parameters(node):
    """[(name, kind, default or inspect.Parameter.empty)] of a stub def."""
    args = node.args
    params = []
    positional = args.posonlyargs + args.args
    defaults = [inspect.Parameter.empty] * (len(positional) - len(args.defaults)) + list(args.defaults)
    for arg, default in zip(positional, defaults, strict=True):
        params.append((arg.arg, inspect.Parameter.POSITIONAL_OR_KEYWORD, default))
    for arg, default in zip(args.kwonlyargs, args.kw_defaults, strict=True):
        params.append((arg.arg, inspect.Parameter.KEYWORD_ONLY, default or inspect.Parameter.empty))
    return [(name, kind, default if default is inspect.Parameter.empty else ast.literal_eval(default))
            for name, kind, default in params]


def runtime_parameters(function):
    return [(p.name, p.kind, p.default) for p in inspect.signature(function).parameters.values()]


def pxi_defs(path):
    """{name: [parameter names]} of the `def` functions of a Cython source."""
    text = path.read_text()
    defs = {}
    for match in re.finditer(r"^def (\w+)\((.*?)\):", text, re.MULTILINE | re.DOTALL):
        args = re.sub(r"\[[^\]]*\]", "", match.group(2))  # memoryview brackets hold commas
        defs[match.group(1)] = [piece.split("=")[0].split()[-1] for piece in args.split(",")
                                if piece.strip() and piece.strip() != "*"]
    return defs


# ---- always ----

def test_version_has_one_source():
    from cyce._version import __version__

    assert cyce.__version__ == __version__ == importlib.metadata.version("cyce")
    assert re.fullmatch(r"\d+\.\d+\.\d+((a|b|rc)\d+)?(\.dev\d+)?", __version__)
    if CHECKOUT:
        assert f"## [{__version__}]" in (ROOT / "CHANGELOG.md").read_text(), "CHANGELOG.md lacks this version"


def test_numpy_is_the_only_runtime_dependency():
    requires = importlib.metadata.requires("cyce") or []
    unconditional = [r for r in requires if "extra ==" not in r]
    assert [re.split(r"[ <>=!;\[]", r)[0].lower() for r in unconditional] == ["numpy"], requires
    extras = set(importlib.metadata.metadata("cyce").get_all("Provides-Extra") or [])
    assert {"test", "bench", "torch", "jax"} <= extras


def test_package_is_typed():
    assert (PACKAGE / "py.typed").is_file()
    for module in PUBLIC_MODULES:
        assert (PACKAGE / f"{module}.pyi").is_file()
    assert (PACKAGE / "_core.pyi").is_file(), "no stub for the compiled cyce._core"


def test_kernel_stub_matches_the_compiled_functions():
    stub = stub_functions(PACKAGE / "_core.pyi")
    for name, (node,) in stub.items():
        compiled = getattr(_core, name, None)
        assert compiled is not None, f"cyce._core has no {name} (the stub says it has)"
        assert runtime_parameters(compiled) == stub_parameters(node), name


def test_kernel_stub_matches_the_cython_source():
    """Every def of cyce/_core.pyx has a stub entry with its parameters (a
    function added without one fails here, naming it)."""
    if not (PACKAGE / "_core.pyx").is_file():
        pytest.skip("the wheel carries no Cython source")
    stub = stub_functions(PACKAGE / "_core.pyi")
    defs = pxi_defs(PACKAGE / "_core.pyx")
    assert "logsumexp_rows" in defs, "no def found in cyce/_core.pyx"
    assert sorted(defs) == sorted(stub), "the stub and cyce/_core.pyx name different functions"
    for name, (node,) in stub.items():
        assert [p[0] for p in stub_parameters(node)] == defs[name], name


@pytest.mark.parametrize("module_name", PUBLIC_MODULES)
def test_public_stub_matches_the_functions(module_name):
    module = importlib.import_module(f"cyce.{module_name}")
    stub = stub_functions(PACKAGE / f"{module_name}.pyi")
    public = {name for name, obj in vars(module).items()
              if inspect.isfunction(obj) and not name.startswith("_") and obj.__module__ == module.__name__}
    assert public == set(stub)
    for name, overloads in stub.items():
        runtime = runtime_parameters(getattr(module, name))
        for node in overloads:
            params = stub_parameters(node)
            assert [p[:2] for p in params] == [p[:2] for p in runtime], name
            for (param, _, default), (_, _, actual) in zip(params, runtime, strict=True):
                # an overload may make an option required (reduction="none", say)
                assert default is inspect.Parameter.empty or default == actual, f"{name}({param}=...)"


def test_every_public_function_is_typed():
    typed = set().union(*(stub_functions(PACKAGE / f"{m}.pyi") for m in PUBLIC_MODULES))
    functions = {name for name in cyce.__all__ if inspect.isfunction(getattr(cyce, name))}
    assert functions - typed <= {"show_config"}  # annotated inline, in cyce/_info.py
    assert inspect.signature(cyce.show_config).return_annotation in (None, "None")


@pytest.mark.skipif(importlib.util.find_spec("mypy") is None, reason="mypy is not installed")
def test_mypy_strict_passes_on_the_typed_example(tmp_path):
    # Modules, not files: a file inside site-packages would make mypy take
    # site-packages for a source tree.  From a checkout mypy finds cyce in the
    # working directory (it cannot follow an editable install's import hook);
    # installed, in site-packages; the example through MYPYPATH.  Imports of
    # the listed modules are followed silently (errors in them, NumPy's say,
    # are not this test's), as mypy does for any installed package.
    modules = [f"cyce.{m}" for m in PUBLIC_MODULES] + [
        "cyce._core", "cyce._info", EXAMPLE.stem]
    env = dict(os.environ, MYPYPATH=str(EXAMPLE.parent))
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--follow-imports=silent", "--cache-dir", os.devnull,
         *(arg for module in modules for arg in ("-m", module))],
        capture_output=True, text=True, cwd=ROOT if CHECKOUT else tmp_path, env=env, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"no issues found in {len(modules)} source files" in result.stdout, result.stdout


def test_typed_example_runs(capsys):
    runpy.run_path(str(EXAMPLE), run_name="__main__")
    assert capsys.readouterr().out.startswith(f"cyce {cyce.__version__} (")


@pytest.mark.skipif(not X86_64 or shutil.which("objdump") is None, reason="needs x86-64 and objdump")
def test_only_the_wide_kernels_use_wide_instructions():
    """Wider SIMD only through the kernel tables: the module's own functions
    (Cython's, and PyInit) have no VEX-encoded (AVX) instruction, so
    importing it runs on any x86-64; the avx512 kernels use 512-bit registers."""
    listing = subprocess.run(["objdump", "-d", "--no-show-raw-insn", _core.__file__],
                             capture_output=True, text=True, check=True).stdout
    functions = re.split(r"^[0-9a-f]+ <", listing, flags=re.MULTILINE)[1:]
    module_code = [f for f in functions if f.startswith(("__pyx_", "PyInit_"))]
    assert len(module_code) > 50, "no Cython functions found in the listing"
    wide = [f.split(">", 1)[0] for f in module_code
            if re.search(r"^\s*[0-9a-f]+:\s+v[a-z0-9]+\s.*%[xyz]mm", f, re.MULTILINE)]
    assert not wide, f"AVX instructions in the module's own code: {wide[:5]}"
    if "avx512" in BUILT_LEVELS:
        assert len(re.findall(r"%zmm", listing)) > 100


# ---- the built artifacts, under `make wheel-test` ----

@pytest.mark.skipif(not os.environ.get("CYCE_TEST_INSTALLED"), reason="runs under make wheel-test")
def test_the_installed_package_is_imported():
    assert not CHECKOUT, f"imported cyce from a source tree: {PACKAGE}"
    site = {Path(sysconfig.get_paths()[key]).resolve() for key in ("platlib", "purelib")}
    assert ROOT in site, f"cyce imported from {PACKAGE}, not from {site}"
    assert Path(sys.prefix).resolve() in ROOT.parents


@pytest.fixture
def wheel():
    path = os.environ.get("CYCE_WHEEL")
    if not path:
        pytest.skip("CYCE_WHEEL is not set (make wheel-test sets it)")
    return Path(path)


@pytest.fixture
def sdist():
    path = os.environ.get("CYCE_SDIST")
    if not path:
        pytest.skip("CYCE_SDIST is not set (make wheel-test sets it)")
    return Path(path)


def test_the_wheel_is_manylinux_small_and_complete(wheel):
    name, version, python_tag, abi_tag, platform_tag = wheel.name[:-len(".whl")].split("-")
    assert (name, version) == ("cyce", cyce.__version__)
    assert re.fullmatch(r"(manylinux_\d+_\d+_\w+\.?)+", platform_tag), platform_tag
    assert wheel.stat().st_size < MAX_WHEEL_BYTES, f"{wheel.stat().st_size} bytes"
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata = archive.read(f"cyce-{version}.dist-info/METADATA").decode()
    for required in ("cyce/py.typed", "cyce/_softmax.pyi", "cyce/_binary.pyi", "cyce/_linear.pyi",
                     "cyce/_core.pyi", "cyce/dask.py", "cyce/torch.py"):
        assert required in names, required
    extensions = [n for n in names if n.endswith(".so") and not n.startswith("cyce.libs/")]
    assert len(extensions) == 1 and re.fullmatch(r"cyce/_core\.cpython-.*\.so", extensions[0]), extensions
    # sources belong in the sdist: the wheel holds what runs
    assert not [n for n in names if n.endswith((".pyx", ".pxi", ".h"))], "sources in the wheel"
    # auditwheel vendored the OpenMP runtime (libgomp), as scikit-learn's wheels do
    assert any(re.fullmatch(r"cyce\.libs/libgomp-[0-9a-f]+\.so[.\d]*", n) for n in names), names
    assert not [n for n in names if n.endswith(".c")], "generated C in the wheel"
    assert "Requires-Python: >=3.10" in metadata
    assert "Typing :: Typed" in metadata


def test_the_sdist_carries_everything_to_build(sdist):
    with tarfile.open(sdist) as archive:
        prefix = archive.getnames()[0].split("/")[0]
        names = {n[len(prefix) + 1:] for n in archive.getnames()}

        def text(member):
            return archive.extractfile(f"{prefix}/{member}").read().decode()

        for required in ("README.md", "LICENSE", "CHANGELOG.md", "pyproject.toml", "setup.py",
                         "MANIFEST.in", "docs/api.md", "cyce/py.typed", "cyce/_softmax.pyi",
                         "cyce/_binary.pyi", "cyce/_linear.pyi", "cyce/_core.pyi", "cyce/_core.pyx",
                         "cyce/_src/cyce_kernels.c", "cyce/_src/cyce_kernels_half.c",
                         "tests/conftest.py", "tests/reference.py", "tests/typing_example.py",
                         "examples/dask_eval.py", "examples/torch_training.py",
                         "examples/linear_head.py"):
            assert required in names, required
        # every file the Cython and C sources include is there
        for header in re.findall(r'extern from "([\w.]+)"', text("cyce/_core.pyx")):
            assert f"cyce/_src/{header}" in names, header
        for header in [n for n in names if n.startswith("cyce/_src/") and n.endswith((".h", ".c"))]:
            for included in re.findall(r'#include "([\w.]+)"', text(header)):
                assert f"cyce/_src/{included}" in names, f"{header} includes {included}"
        assert f"Version: {cyce.__version__}" in text("PKG-INFO")
    assert not [n for n in names if n.endswith((".so", ".pyc")) or re.fullmatch(r"cyce/\w+\.c", n)], \
        "build products in the sdist"
