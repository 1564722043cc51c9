"""Where the Hydra configs are: the one place ``conf/`` is found.

In a checkout (or an editable install) it is the repository's top-level ``conf/``; an installed
wheel ships the same files as the package data ``spikelora/conf``.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGED = Path(__file__).resolve().parent / "conf"
_CHECKOUT = Path(__file__).resolve().parents[1] / "conf"

CONF_DIR: Path = _PACKAGED if (_PACKAGED / "config.yaml").is_file() else _CHECKOUT
