"""The package as pip builds it for a non-editable install: the files it needs at run time are in the wheel."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_wheel_carries_every_file_of_the_package(tmp_path):
    """The tests run on an editable install, which reads src/ in place; a wheel has only what setuptools
    packs, and without package-data it packed no web page (/ answered 404 after `pip install .`)."""
    checkout = tmp_path / "checkout"  # as a clean clone has it: no egg-info whose file list would fill gaps
    shutil.copytree(ROOT / "src", checkout / "src", ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, checkout / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path / "dist"), str(checkout)], check=True, capture_output=True, timeout=300)
    (wheel,) = (tmp_path / "dist").glob("unirank-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    source = checkout / "src"
    wanted = {path.relative_to(source).as_posix() for path in (source / "unirank").rglob("*") if path.is_file()}
    assert "unirank/app/static/app.js" in wanted
    assert "unirank/py.typed" in wanted  # type checkers read the package's hints only with it (PEP 561)
    assert wanted <= names, sorted(wanted - names)


def test_every_error_a_library_user_can_meet_is_exported_from_the_package():
    """`except unirank.XError` must work for each error the Python API raises; the model server's own
    request errors are answered as HTTP statuses and never reach a library caller."""
    import inspect

    import unirank
    import unirank.errors as errors

    server_side = {"AuthenticationError", "RequestTooLargeError", "ServingRequestError", "ModelNotReadyError"}
    raised = {name for name, cls in vars(errors).items()
              if inspect.isclass(cls) and issubclass(cls, errors.UnirankError)} - server_side
    assert raised - set(unirank.__all__) == set()
    assert all(getattr(unirank, name) is getattr(errors, name) for name in raised)


def test_type_checkers_see_every_lazily_exported_name():
    """The package imports its exports lazily (``__getattr__``), so type checkers read them from the
    ``TYPE_CHECKING`` block: a name left out of it is ``Any`` to mypy and pyright (IndexCorruptedError was)."""
    import ast

    import unirank

    tree = ast.parse(Path(unirank.__file__).read_text())
    block = next(node for node in tree.body if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING")
    seen = {alias.asname or alias.name for stmt in block.body for alias in stmt.names}  # type: ignore[attr-defined]
    assert set(unirank.__all__) - seen == set()
