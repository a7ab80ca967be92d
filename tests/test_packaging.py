"""The package as users get it: built and installed NON-editably into a fresh virtual environment and run
from outside the repository, and the contents of the wheel and the sdist.

The rest of the suite runs on the editable install, which reads the source tree: it cannot notice a module,
a subpackage or a data file left out of the wheel. Here every file of isa/, compiler/ and lpu/ that git
tracks (or would track: untracked, not ignored) must be in the installed copy, the wheel and the sdist, and
the installed `lpu` must give ONNX Runtime's greedy tokens recorded in tests/fixtures/manifest.json.

The builds use this environment's setuptools (no build isolation, `PIP_NO_INDEX`): no network. The fresh
environment sees this one's dependencies (numpy, numba, onnx, ...) through a directory of symlinks to its
site-packages minus this project and every .pth file, so neither the editable finder nor a copy of the
source tree is importable there. The first decode JIT-compiles the Numba kernels for the new location
(about 70 s on 2 cores); one install serves every check.
"""
from __future__ import annotations

import ast
import filecmp
import json
import os
import shutil
import site
import subprocess
import sys
import tarfile
import venv
import zipfile
from pathlib import Path, PurePosixPath
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("isa", "compiler", "lpu")
DIST = "lpu_toolchain"  # the distribution's name as in file names
LLAMA = ROOT / "tests" / "fixtures" / "llama_optimum.onnx"
# an sdist holds the packages and these; tests/, tools/, benchmarks/ stay out
SDIST_TOP = {"PKG-INFO", "README.md", "setup.cfg", "pyproject.toml", "MANIFEST.in", f"{DIST}.egg-info"}


def _version() -> str:
    """The version as written in lpu/__init__.py (the single source, read without importing anything)."""
    for node in ast.parse((ROOT / "lpu" / "__init__.py").read_text()).body:
        if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["__version__"]:
            return ast.literal_eval(node.value)
    raise AssertionError("lpu/__init__.py assigns no __version__")


def _source_files() -> list[str]:
    """The files of the working tree a clean clone plus local changes would have (POSIX, relative)."""
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                             capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"not a git checkout ({exc}): the packaging test compares against git's file list")
    return sorted(f for f in out.decode().split("\0") if f and (ROOT / f).is_file())


def _package_files() -> list[str]:
    return [f for f in _source_files() if f.split("/", 1)[0] in PACKAGES]


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV") and not k.startswith("PIP_")}
    env.update(PYTHONNOUSERSITE="1", PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1",
               LPU_DEBUG="1", **extra)
    return env


def _run(argv, cwd, env=None, timeout=1800) -> subprocess.CompletedProcess:
    r = subprocess.run([str(a) for a in argv], cwd=cwd, env=env or _env(), capture_output=True, text=True,
                       timeout=timeout)
    assert r.returncode == 0, f"{' '.join(map(str, argv))} -> {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


def _copy_tree(dest: Path) -> Path:
    """The source files into dest: builds happen there, so no build/ or *.egg-info of the working tree (stale
    files in build/lib would go into a wheel) is read or written."""
    for f in _source_files():
        (dest / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, dest / f)
    return dest


def _ours(name: str) -> bool:
    return (name in PACKAGES or name.endswith(".pth") or name.startswith("__editable__")
            or name.split("-")[0].split(".")[0].lower() == DIST)


def _make_venv(where: Path) -> SimpleNamespace:
    """A virtual environment without pip or any of this project, seeing this interpreter's dependencies."""
    venv.create(where / "venv", with_pip=False, symlinks=os.name != "nt")
    bindir = where / "venv" / ("Scripts" if os.name == "nt" else "bin")
    py = bindir / ("python.exe" if os.name == "nt" else "python")
    purelib = Path(_run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], where).stdout.strip())
    deps = where / "deps"
    deps.mkdir()
    for sp in site.getsitepackages():
        for entry in sorted(Path(sp).iterdir()) if Path(sp).is_dir() else ():
            if not _ours(entry.name) and not (deps / entry.name).exists():
                (deps / entry.name).symlink_to(entry, target_is_directory=entry.is_dir())
    (purelib / "_lpu_test_deps.pth").write_text(f"{deps}\n")
    return SimpleNamespace(root=where / "venv", python=py, bin=bindir, site=purelib)


def _installed_check(env: SimpleNamespace, modules: list[str], cwd: Path) -> dict:
    """Imports every module in the fresh environment; their files, the version and the bundled model's path."""
    code = ("import importlib, importlib.metadata as md, json, sys\n"
            "files = {m: importlib.import_module(m).__file__ for m in sys.argv[1:]}\n"
            "from lpu.cli import default_model\n"
            "print(json.dumps({'files': files, 'metadata_version': md.version('lpu-toolchain'),\n"
            "                  'version': sys.modules['lpu'].__version__, 'default_model': str(default_model())}))\n")
    return json.loads(_run([env.python, "-c", code, *modules], cwd).stdout)


def _modules(files: list[str]) -> list[str]:
    mods = []
    for f in files:
        if f.endswith(".py"):
            parts = PurePosixPath(f).with_suffix("").parts
            mods.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return mods


def _manifest(name: str) -> dict:
    """A fixture's record; "default" is the bundled model's, a copy of a trained fixture (tests/fixtures/trained.json)."""
    fixtures = json.loads((ROOT / "tests" / "fixtures" / "manifest.json").read_text())["fixtures"]
    trained = json.loads((ROOT / "tests" / "fixtures" / "trained.json").read_text())
    if name == "default":
        rec = next(f for f in trained["fixtures"] if f["name"] == trained["default"]["from"])
        return dict(rec, file=trained["default"]["file"])
    return next(f for f in fixtures if f["name"] == name)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """`pip install --no-deps <a copy of the tree>` into a fresh environment; `work` is a directory outside
    the repository to run in."""
    base = tmp_path_factory.mktemp("pkg-install")
    src = _copy_tree(base / "src")
    env = _make_venv(base)
    _run([env.python, "-m", "pip", "install", "--no-deps", "--no-build-isolation", src], base)
    _share_kernel_cache(env)
    env.work = base / "work"
    env.work.mkdir()
    return env


def _share_kernel_cache(env: SimpleNamespace) -> None:
    """Numba keys its on-disk cache by the source file's contents (not its path): the kernels this test run
    has already compiled serve the installed copy, whose sources are the same bytes, so the test does not
    spend a second cold JIT (a user's first decode in a new install does: see the README). Without a
    cache here (or if Numba refuses it) the installed copy compiles its own, just more slowly."""
    src = ROOT / "lpu" / "emulator" / "__pycache__"
    dst = env.site / "lpu" / "emulator" / "__pycache__"
    if not src.is_dir():
        return
    dst.mkdir(exist_ok=True)
    for f in sorted(src.iterdir()):
        if f.suffix in (".nbi", ".nbc"):
            shutil.copy2(f, dst / f.name)


def test_every_package_directory_is_a_regular_package():
    dirs = set()
    for f in _package_files():
        for parent in PurePosixPath(f).parents:
            if str(parent) != ".":
                dirs.add(str(parent))
    missing = sorted(d for d in dirs if not (ROOT / d / "__init__.py").is_file())
    assert not missing, f"directories of the packages without an __init__.py: {missing}"


def test_the_installed_copy_has_every_module_and_data_file(installed):
    files = _package_files()
    assert {"lpu/data/default.onnx", "lpu/data/default.tokenizer.json", "lpu/presets/groqchip1.toml",
            "lpu/presets/lp30.toml"} <= set(files)
    missing = [f for f in files if not (installed.site / f).is_file()]
    assert not missing, f"not installed: {missing}"
    differ = [f for f in files if not filecmp.cmp(ROOT / f, installed.site / f, shallow=False)]
    assert not differ, f"installed copies differ from the tree: {differ}"
    top = {p.name for p in installed.site.iterdir()}
    extra = sorted(top - {*PACKAGES, f"{DIST}-{_version()}.dist-info", "_lpu_test_deps.pth"})
    assert not extra, f"installed besides the packages: {extra}"


def test_the_installed_modules_are_imported_from_the_fresh_environment(installed):
    info = _installed_check(installed, _modules(_package_files()), installed.work)
    root = installed.root.resolve()
    outside = {m: f for m, f in info["files"].items() if root not in Path(f).resolve().parents}
    assert not outside, f"imported from outside {root}: {outside}"
    assert root in Path(info["default_model"]).resolve().parents
    assert info["version"] == info["metadata_version"] == _version()


def test_lpu_version(installed):
    r = _run([installed.bin / "lpu", "--version"], installed.work)
    assert r.stdout == f"lpu {_version()}\n"


def test_compile_and_decode_from_outside_the_repository(installed):
    ref = _manifest("llama_optimum")
    assert ref["prompt"] == [1, 2, 3]
    _run([installed.bin / "lpu", "compile", LLAMA, "-o", "x.lpu", "--chips", "2", "--max-context", "320"], installed.work)
    assert (installed.work / "x.lpu").is_file()
    out = json.loads(_run([installed.bin / "lpu", "decode", "x.lpu", "--prompt", "1,2,3", "--tokens", "4", "--json"],
                          installed.work).stdout)
    assert out["tokens"] == ref["greedy_tokens"][:4]


def test_decode_the_bundled_model(installed):
    ref = _manifest("default")
    assert ref["file"] == "lpu/data/default.onnx" and ref["prompt"] == [1, 2, 3]  # `lpu decode`'s default prompt
    out = json.loads(_run([installed.bin / "lpu", "decode", "--tokens", "4", "--json"], installed.work).stdout)
    assert out["model"] == "default.onnx"
    assert out["tokens"] == ref["greedy_tokens"][:4]


# ---- the wheel and the sdist -------------------------------------------------------------------------------

def _build_wheel(src: Path, out: Path) -> Path:
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", out, src], src)
    (wheel,) = out.glob(f"{DIST}-*.whl")
    return wheel


def _build_sdist(src: Path, out: Path) -> Path:
    # the PEP 517 hook `python -m build --sdist` calls, without the extra tool
    name = _run([sys.executable, "-c", "import sys; from setuptools import build_meta as b; "
                 "print(b.build_sdist(sys.argv[1]))", out], src).stdout.strip().splitlines()[-1]
    return out / name


@pytest.fixture(scope="module")
def dists(tmp_path_factory):
    base = tmp_path_factory.mktemp("pkg-dists")
    out = base / "dist"
    wheel = _build_wheel(_copy_tree(base / "src-wheel"), out)
    sdist = _build_sdist(_copy_tree(base / "src-sdist"), out)
    return SimpleNamespace(base=base, wheel=wheel, sdist=sdist)


def _wheel_names(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as z:
        return {n for n in z.namelist() if not n.endswith("/")}


def _check_wheel(names: set[str]) -> None:
    missing = sorted(set(_package_files()) - names)
    assert not missing, f"not in the wheel: {missing}"
    v = _version()
    extra = sorted(n for n in names if n.split("/", 1)[0] not in PACKAGES and not n.startswith(f"{DIST}-{v}.dist-info/"))
    assert not extra, f"the wheel holds more than the packages: {extra}"
    junk = sorted(n for n in names if "__pycache__" in n or n.endswith((".pyc", ".lpu")))
    assert not junk, junk


def test_the_wheel_holds_the_packages_and_their_data_and_nothing_else(dists):
    names = _wheel_names(dists.wheel)
    _check_wheel(names)
    with zipfile.ZipFile(dists.wheel) as z:
        info = f"{DIST}-{_version()}.dist-info"
        assert f"Version: {_version()}\n" in z.read(f"{info}/METADATA").decode()
        assert "lpu = lpu.cli:main" in z.read(f"{info}/entry_points.txt").decode()


def test_the_sdist_holds_the_packages_and_builds_the_same_wheel(dists):
    prefix = f"{DIST}-{_version()}/"
    with tarfile.open(dists.sdist) as t:
        names = {m.name for m in t.getmembers() if m.isfile()}
        assert all(n.startswith(prefix) for n in names), sorted(names)[:5]
        t.extractall(dists.base / "unpacked", **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    rel = {n[len(prefix):] for n in names}
    missing = sorted(set(_package_files()) - rel)
    assert not missing, f"not in the sdist: {missing}"
    extra = sorted(n for n in rel if n.split("/", 1)[0] not in (*PACKAGES, *SDIST_TOP))
    assert not extra, f"the sdist holds more than the packages and the build files: {extra}"
    # what pip does with an sdist: build a wheel from it; it must be the wheel built from the tree
    wheel = _build_wheel(dists.base / "unpacked" / prefix, dists.base / "from-sdist")
    assert _wheel_names(wheel) == _wheel_names(dists.wheel)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["wheel", "sdist"])
def test_decode_after_installing_the_wheel_or_the_sdist(kind, dists, tmp_path):
    env = _make_venv(tmp_path)
    _run([env.python, "-m", "pip", "install", "--no-deps", "--no-build-isolation", getattr(dists, kind)], tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    out = json.loads(_run([env.bin / "lpu", "decode", "--tokens", "4", "--json"], work).stdout)
    assert out["tokens"] == _manifest("default")["greedy_tokens"][:4]
    info = _installed_check(env, ["lpu", "compiler.backend"], work)
    assert all(env.root.resolve() in Path(f).resolve().parents for f in info["files"].values())
