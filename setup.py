"""Maps the top-level folders models/, tasks/ and robustness/ under the ``lmms_ac`` import name.

The layout is the user's spec (docs/ARCHITECTURE.md#folders-and-import-names); installed, no top-level ``models``
or ``tasks`` package in site-packages. pyproject.toml holds all other metadata.
"""

from setuptools import find_packages, setup

MAPPED = {
    "lmms_ac": "lmms_ac",
    "lmms_ac.models": "models",
    "lmms_ac.tasks": "tasks",
    "lmms_ac.robustness": "robustness",
}


def _packages():
    pkgs = []
    for name, folder in MAPPED.items():
        pkgs.append(name)
        pkgs += [f"{name}.{sub}" for sub in find_packages(folder)]
    # sub-packages of lmms_ac that are themselves mapped folders are listed once
    return sorted(set(pkgs))


setup(
    packages=_packages(),
    package_dir=MAPPED,
    package_data={
        "lmms_ac.tasks": ["**/*.yaml", "**/*.yml"],
        "lmms_ac": ["data/*.csv", "data/*.md"],
        "lmms_ac.vision": ["*.md"],
        "lmms_ac.robustness": ["*.md"],
        "lmms_ac.report": ["templates/*.j2", "templates/*.css", "templates/*.js"],
    },
    include_package_data=True,
)
