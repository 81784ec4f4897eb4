"""The install lists every folder of package files, so setuptools installs them all and prints
no warning per file (it once printed about 420 lines on `make install`)."""
from __future__ import annotations

import tomllib

from conftest import REPO_ROOT


def test_every_folder_of_package_files_is_a_listed_package():
    setuptools = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapped = {package: REPO_ROOT / folder for package, folder in setuptools["package-dir"].items()}

    def folder_of(package: str):
        for prefix, folder in mapped.items():
            if package == prefix or package.startswith(prefix + "."):
                return folder.joinpath(*package[len(prefix):].split(".")[1:])
        return REPO_ROOT.joinpath(*package.split("."))

    listed = {folder_of(p).resolve() for p in setuptools["packages"]}
    shipped = {path.parent.resolve() for root in (REPO_ROOT / "noisybench", *mapped.values())
               for pattern in ("*.py", "*.yaml", "*.csv") for path in root.rglob(pattern)
               if "__pycache__" not in path.parts}
    assert sorted(map(str, shipped - listed)) == []
    assert all(folder.is_dir() for folder in listed)
