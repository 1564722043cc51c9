"""The paper's studies as sweep grids (``conf/sweep/*.yaml``), expanded without launching anything.

A sweep file is an experiment plus ``hydra.sweeper.params``; ``python -m spikelora.run -m
+sweep=NAME`` launches it. This module expands the same grid into the runs it will make, for the
status tool and the tests.
"""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from .confdir import CONF_DIR
from .plan import Plan, plan_run


def sweep_names(conf_dir: Path = CONF_DIR) -> list[str]:
    return sorted(p.stem for p in (conf_dir / "sweep").glob("*.yaml"))


def sweep_jobs(name: str, overrides: list[str] | tuple[str, ...] = (), conf_dir: Path = CONF_DIR) -> list[list[str]]:
    """The override list of every job of sweep ``name``; ``overrides`` as on the command line (they win)."""
    path = conf_dir / "sweep" / f"{name}.yaml"
    if not path.exists():
        raise ValueError(f"Unknown sweep {name!r}. Known sweeps: {', '.join(sweep_names(conf_dir))}.")
    params = OmegaConf.select(OmegaConf.load(path), "hydra.sweeper.params") or {}
    merged = {str(k): str(v) for k, v in params.items()}
    for o in overrides:
        key, _, value = o.partition("=")
        merged[key] = value
    parsed = OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in merged.items()])
    batches = BasicSweeper.split_arguments(parsed, None)
    return [[f"+sweep={name}", *job] for job in batches[0]]


def config_groups(conf_dir: Path = CONF_DIR) -> set[str]:
    """The config groups (``model``, ``adapter``, ``arm``, ...): an override of one picks a file."""
    return {p.name for p in conf_dir.iterdir() if p.is_dir()}


def sweep_plans(name: str, overrides: list[str] | tuple[str, ...] = (), conf_dir: Path = CONF_DIR) -> list[Plan]:
    """The :class:`spikelora.experiment.plan.Plan` (run name and directory) of every job of sweep ``name``.

    Composing is slow, so each distinct choice of config groups is composed once and the
    plain-value overrides (r, lr, seed, ...) are applied to a copy.
    """
    fixed = [o for o in overrides if "," not in o.partition("=")[2]]
    composed: dict[tuple[str, ...], object] = {}
    parser = OverridesParser.create()
    groups_of_conf = config_groups(conf_dir)
    plans = []
    with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
        for job in sweep_jobs(name, overrides, conf_dir):
            job = [*job, *fixed]
            groups = tuple(o for o in job if o.startswith("+") or o.partition("=")[0] in groups_of_conf)
            if groups not in composed:
                composed[groups] = compose(config_name="config", overrides=list(groups))
            cfg = composed[groups].copy()
            for o in job:
                if o not in groups:
                    key = o.partition("=")[0]
                    # Hydra's own parser: `lr=1e6` is the float it is on the command line (YAML says str)
                    parsed = parser.parse_override(o).value()
                    OmegaConf.update(cfg, key, parsed, force_add=False)
            plans.append(plan_run(cfg, check_resources=False))
    return plans


def missing_values(name: str, overrides: list[str] | tuple[str, ...] = (), conf_dir: Path = CONF_DIR) -> list[str]:
    """The mandatory values (``???``) that sweep ``name`` leaves to the command line, e.g. the
    ablation's ``matched_sparsity.stsb``: without them its runs have no identity."""
    jobs = sweep_jobs(name, overrides, conf_dir)
    if not jobs:
        return []
    with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[*jobs[0], *(o for o in overrides if "," not in o)])
    return sorted(k for k in OmegaConf.missing_keys(cfg) if not k.startswith("hydra."))
