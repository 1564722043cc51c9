"""The paper's figures from collected runs (matplotlib, written as PNG and PDF)."""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from scipy.stats import pearsonr

from ..experiment.record import RunDir
from .claims import grad_norms
from .collect import select

COLORS = {"lora": "tab:blue", "spike": "tab:brown"}
MODULE_TYPES = [  # (label, pattern on the module name after the layer index)
    ("Q", r"attention\.self\.query_proj$"),
    ("K", r"attention\.self\.key_proj$"),
    ("V", r"attention\.self\.value_proj$"),
    ("O", r"attention\.output\.dense$"),
    ("FF.W1", r"intermediate\.dense$"),
    ("FF.W2", r"(?<!attention\.)output\.dense$"),
]


def save_figure(fig, out: Path, name: str) -> list[Path]:
    """Write ``fig`` as ``out/name.png`` and ``.pdf`` and close it; the paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{name}.png", out / f"{name}.pdf"]
    for p in paths:
        fig.savefig(p, bbox_inches="tight", dpi=150)
    plt.close(fig)
    return paths


def vth_figure(df: pd.DataFrame, out: Path, experiment: str = "vth") -> list[Path]:
    """Fig. 2: min/max eval loss, MCC (mean ± std) and sparsity against V_θ."""
    spike = select(select(df, experiment=experiment, task="cola"), adapter="spike")
    if spike.empty:
        return []
    g = spike.groupby("vth")
    vth = np.array(sorted(g.groups))
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6), layout="constrained")
    axes[0].plot(vth, g["eval_loss"].min().loc[vth], "o-", label="min")
    axes[0].plot(vth, g["eval_loss"].max().loc[vth], "s--", label="max")
    axes[0].set(xlabel=r"$V_\theta$", ylabel="eval loss", title="Evaluation loss")
    axes[0].legend()
    axes[1].errorbar(vth, g["mcc"].mean().loc[vth], yerr=g["mcc"].std().loc[vth].fillna(0), fmt="o-", capsize=3)
    axes[1].set(xlabel=r"$V_\theta$", ylabel="MCC (%)", title="MCC")
    axes[2].plot(vth, g["sparsity"].mean().loc[vth], "o-", color=COLORS["spike"])
    axes[2].set(xlabel=r"$V_\theta$", ylabel="sparsity (%)", title="Global sparsity")
    for ax in axes:
        ax.grid(alpha=0.3)
    return save_figure(fig, out, "fig2_vth")


def module_grid(module_sparsity: dict[str, float]) -> tuple[list[str], list[int], np.ndarray]:
    """(module types, blocks, blocks × types matrix) from ``{module_name: sparsity}``."""
    cells: dict[tuple[int, str], float] = {}
    for name, value in module_sparsity.items():
        m = re.search(r"layer\.(\d+)\.(.+)$", name)
        if not m:
            continue
        block, rest = int(m.group(1)), m.group(2)
        for label, pattern in MODULE_TYPES:
            if re.search(pattern, rest):
                cells[block, label] = value
                break
    blocks = sorted({b for b, _ in cells})
    types = [t for t, _ in MODULE_TYPES if any(t == c for _, c in cells)]
    grid = np.full((len(blocks), len(types)), np.nan)
    for (b, t), v in cells.items():
        grid[blocks.index(b), types.index(t)] = v
    return types, blocks, grid


def label_color(rgba) -> str:
    """Black on light cells, white on dark ones (WCAG relative luminance of the cell colour)."""
    lin = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in rgba[:3]]
    luminance = 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]
    return "black" if luminance > 0.179 else "white"


def heatmap_figure(df: pd.DataFrame, out: Path, experiment: str = "sparsity") -> list[Path]:
    """Fig. 3: sparsity per module type × block (mean over the runs' ``module_sparsity.json``)."""
    runs = select(select(df, experiment=experiment), adapter="spike")
    maps = []
    for run_dir in runs.get("run_dir", []):
        data = RunDir(run_dir).module_sparsity()
        if data:
            split = "eval" if "eval" in data else next(iter(data))
            maps.append(module_grid(data[split]))
    if not maps:
        return []
    types, blocks, _ = maps[0]
    grid = np.nanmean(np.stack([m[2] for m in maps]), axis=0) * 100
    fig, ax = plt.subplots(figsize=(1.1 * len(types) + 2, 0.45 * len(blocks) + 1.5), layout="constrained")
    cmap = plt.get_cmap("viridis")
    im = ax.imshow(grid, cmap=cmap, vmin=0, vmax=100, aspect="auto")
    ax.set_xticks(range(len(types)), types)
    ax.set_yticks(range(len(blocks)), [str(b) for b in blocks])
    ax.set(xlabel="module", ylabel="block", title=f"SpikeLoRA sparsity (%), {len(maps)} run(s)")
    for i in range(len(blocks)):
        for j in range(len(types)):
            if not np.isnan(grid[i, j]):
                color = label_color(cmap(grid[i, j] / 100))
                ax.text(j, i, f"{grid[i, j]:.0f}", ha="center", va="center", color=color, fontsize=7)
    fig.colorbar(im, ax=ax, label="sparsity (%)")
    return save_figure(fig, out, "fig3_sparsity_heatmap")


def gradnorm_series(df: pd.DataFrame, experiment: str = "gradnorm") -> tuple[np.ndarray, np.ndarray, int] | None:
    """Grad norms (LoRA, SpikeLoRA) of the same seed aligned by step, one per logging window (the
    paper's sample: :func:`spikelora.report.claims.grad_norms`), or None."""
    runs = select(df, experiment=experiment)
    for seed in sorted(runs.get("seed", pd.Series(dtype=int)).dropna().unique()):
        pair = {}
        for method in ("lora", "spike"):
            sub = select(runs, adapter=method, seed=int(seed))
            if not sub.empty:
                pair[method] = grad_norms(RunDir(sub.iloc[0]["run_dir"]).history(), "window")
        if len(pair) == 2:
            common = sorted(set(pair["lora"]) & set(pair["spike"]))
            return np.array([pair["lora"][s] for s in common]), np.array([pair["spike"][s] for s in common]), int(seed)
    return None


def gradnorm_figure(df: pd.DataFrame, out: Path, experiment: str = "gradnorm") -> tuple[list[Path], dict | None]:
    """Fig. 4 (appendix Fig. 1): SpikeLoRA vs LoRA grad norm, one point per logging window, Pearson r and p."""
    series = gradnorm_series(df, experiment)
    if series is None:
        return [], None
    lora, spike, seed = series
    r, p = pearsonr(lora, spike) if len(lora) > 2 else (float("nan"), float("nan"))
    stats = {
        "seed": seed,
        "windows": len(lora),
        "pearson_r": float(r),
        "p_value": float(p),
        "lora_mean": float(lora.mean()),
        "lora_std": float(lora.std(ddof=1)),
        "spike_mean": float(spike.mean()),
        "spike_std": float(spike.std(ddof=1)),
    }
    fig, ax = plt.subplots(figsize=(4.5, 4.2), layout="constrained")
    ax.scatter(lora, spike, s=6, alpha=0.5)
    lim = [0, max(lora.max(), spike.max()) * 1.05]
    ax.plot(lim, lim, "k:", lw=0.8)
    ax.set(xlabel="LoRA grad norm", ylabel="SpikeLoRA grad norm", title=f"Pearson r = {r:.3f}, p = {p:.2e}")
    return save_figure(fig, out, "fig4_gradnorm"), stats


def dropout_figure(df: pd.DataFrame, out: Path, experiment: str = "dropout") -> list[Path]:
    """Fig. 5 (appendix Fig. 2): MCC and gen gap per dropout rate, LoRA vs SpikeLoRA box plots."""
    runs = select(df, experiment=experiment, task="cola")
    if runs.empty:
        return []
    rates = sorted(runs["dropout"].dropna().unique())
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), layout="constrained")
    for ax, metric, label in ((axes[0], "mcc", "MCC (%)"), (axes[1], "gen_gap", "generalisation gap")):
        for k, method in enumerate(("lora", "spike")):
            data = [select(runs, adapter=method, dropout=float(d))[metric].dropna().to_numpy() for d in rates]
            pos = np.arange(len(rates)) * 3 + k
            bp = ax.boxplot(data, positions=pos, widths=0.8, patch_artist=True)
            for patch in bp["boxes"]:
                patch.set_facecolor(COLORS[method])
        ax.set_xticks(np.arange(len(rates)) * 3 + 0.5, [f"{d:g}" for d in rates])
        ax.set(xlabel="dropout", ylabel=label)
    axes[0].legend(
        [plt.Rectangle((0, 0), 1, 1, color=COLORS[m]) for m in ("lora", "spike")], ["LoRA", "SpikeLoRA"], loc="best"
    )
    return save_figure(fig, out, "fig5_dropout")
