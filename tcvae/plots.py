"""The paper's figures: MIG against β, TC against MIG, latent traversals, latents against factors,
reconstructions. Each function draws one figure and saves it as PNG and PDF (atomically)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from tcvae.io import atomic_path  # noqa: E402

# Okabe & Ito's colour-blind-safe palette
COLORS = {"betavae": "#0072B2", "tcvae": "#D55E00", "factorvae": "#009E73"}
LABELS = {"betavae": "β-VAE", "tcvae": "β-TCVAE", "factorvae": "FactorVAE"}
WEIGHT = {"betavae": "β", "tcvae": "β", "factorvae": "γ"}
MARKERS = {"betavae": "o", "tcvae": "D", "factorvae": "^"}   # shapes too, so that equal results stay visible


def save(fig: plt.Figure, path: Path) -> None:
    """Write `path` (.png) and its .pdf twin, each appearing complete or not at all."""
    for target in (path.with_suffix(".png"), path.with_suffix(".pdf")):
        with atomic_path(target) as tmp:
            fig.savefig(tmp, format=target.suffix[1:], dpi=150, bbox_inches="tight")
    plt.close(fig)


def mig_vs_beta(rows: list[dict[str, Any]], path: Path) -> None:
    """One panel per data set: every run as a point, each method's median per β as a line (paper Fig. 4)."""
    datasets = sorted({r["dataset"] for r in rows if r["mig"] is not None})
    fig, axes = plt.subplots(1, max(1, len(datasets)), figsize=(5 * max(1, len(datasets)), 4), squeeze=False,
                             layout="constrained")
    for ax, dataset in zip(axes[0], datasets):
        runs = [r for r in rows if r["dataset"] == dataset and r["mig"] is not None]
        for method in sorted({r["method"] for r in runs}, key=list(COLORS).index):
            mine = [r for r in runs if r["method"] == method]
            betas = sorted({r["beta"] for r in mine})
            ax.scatter([r["beta"] for r in mine], [r["mig"] for r in mine], color=COLORS[method], alpha=0.45, s=22)
            ax.plot(betas, [np.median([r["mig"] for r in mine if r["beta"] == b]) for b in betas],
                    color=COLORS[method], marker=MARKERS[method], label=f"{LABELS[method]} (median)")
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted({r["beta"] for r in runs}), [f"{b:g}" for b in sorted({r["beta"] for r in runs})])
        ax.minorticks_off()
        ax.set(title=dataset, xlabel="β (FactorVAE: γ), log scale", ylabel="MIG (0–1, higher is more disentangled)")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("Disentanglement (MIG) against the regularisation weight; points are runs")
    save(fig, path)


def tc_vs_mig(rows: list[dict[str, Any]], path: Path) -> None:
    """Per data set: each method × β as its mean TC (log x) against mean MIG, marker size growing with β,
    Pearson ρ over runs per method in the legend (paper Fig. 6)."""
    datasets = sorted({r["dataset"] for r in rows if r["mig"] is not None})
    fig, axes = plt.subplots(1, max(1, len(datasets)), figsize=(5 * max(1, len(datasets)), 4), squeeze=False,
                             layout="constrained")
    for ax, dataset in zip(axes[0], datasets):
        runs = [r for r in rows if r["dataset"] == dataset and r["mig"] is not None]
        all_betas = sorted({r["beta"] for r in runs})
        for method in sorted({r["method"] for r in runs}, key=list(COLORS).index):
            mine = [r for r in runs if r["method"] == method]
            tc = np.array([max(r["tc"], 1e-3) for r in mine])
            rho = np.corrcoef(np.log(tc), [r["mig"] for r in mine])[0, 1] if len(mine) > 2 else float("nan")
            betas = sorted({r["beta"] for r in mine})
            x = [np.mean([max(r["tc"], 1e-3) for r in mine if r["beta"] == b]) for b in betas]
            y = [np.mean([r["mig"] for r in mine if r["beta"] == b]) for b in betas]
            sizes = [30 + 150 * all_betas.index(b) / max(1, len(all_betas) - 1) for b in betas]
            ax.scatter(x, y, s=sizes, color=COLORS[method], marker=MARKERS[method], alpha=0.8, edgecolor="black",
                       linewidth=0.5, label=f"{LABELS[method]}  ρ = {rho:.2f}")
        ax.set_xscale("log")
        ax.set(title=dataset, xlabel="total correlation of q(z) (nats, log scale; ≤ 0.001 drawn at 0.001)",
               ylabel="MIG")
        ax.grid(alpha=0.3)
        ax.legend(title="Pearson ρ(log TC, MIG) over runs")
    fig.suptitle("Total correlation against MIG per method and β (larger markers: larger β)")
    save(fig, path)


@torch.no_grad()
def traversals(model, image: torch.Tensor, kl_per_latent: Sequence[float], path: Path, title: str, k: float = 3.0,
               steps: int = 9, unused_below: float = 0.1, labels: Sequence[str] | None = None,
               rows: Sequence[int] | None = None) -> None:
    """One row per latent, ordered by KL (largest first): z_j swept from −k to +k around the posterior mean
    of `image` (C, H, W), the others held at their means; rows of unused latents (KL < `unused_below`
    nats) are marked. `labels` optionally names each latent; `rows` restricts the figure to some latents."""
    mu, _ = model.encode(image[None])
    order = [j for j in np.argsort(kl_per_latent)[::-1] if rows is None or j in set(rows)]
    offsets = torch.linspace(-k, k, steps)
    tiles = []
    for j in order:
        z = mu.repeat(steps, 1)
        z[:, j] += offsets
        tiles.append(torch.sigmoid(model.decode(z)).cpu())
    fig, ax = plt.subplots(figsize=(steps * 0.9, len(order) * 0.95 + 0.8), layout="constrained")
    unused = [kl_per_latent[j] < unused_below for j in order]
    names = [f"{labels[j] if labels else f'z{j}'}\nKL {kl_per_latent[j]:.2f}" + ("\n(unused)" if u else "")
             for j, u in zip(order, unused)]
    _show_mosaic(ax, torch.stack(tiles), [f"{o:+.1f}" for o in offsets], names)
    for tick, u in zip(ax.get_yticklabels(), unused):
        tick.set_color("grey" if u else "black")
    ax.set_xlabel(f"offset from the posterior mean (prior standard deviations, ±{k:g})", fontsize=9)
    ax.set_title(title, fontsize=10)
    save(fig, path)


def traversals_by_attribute(model, image: torch.Tensor, kl_per_latent: Sequence[float], mu: np.ndarray,
                            attributes: np.ndarray, attribute_names: Sequence[str], path: Path, title: str,
                            k: float = 6.0, steps: int = 9, top: int = 15) -> None:
    """Traversals (±k) of the `top` latents with the largest KL, each row named after the attribute its
    posterior mean correlates with most (Pearson r over mu (N, D) and attributes (N, A) of ±1), as the
    paper named CelebA's dimensions by hand. The labels are also written to `path`.txt."""
    keep = np.argsort(kl_per_latent)[::-1][:top]
    a = (attributes - attributes.mean(0)) / np.maximum(attributes.std(0), 1e-8)
    m = (mu - mu.mean(0)) / np.maximum(mu.std(0), 1e-8)
    corr = m.T @ a / len(mu)                                                     # (D, A)
    labels, lines = [], []
    for j in range(len(kl_per_latent)):
        best = int(np.argmax(np.abs(corr[j])))
        labels.append(f"z{j} {attribute_names[best]} ({corr[j, best]:+.2f})")
        if j in keep:
            lines.append(f"z{j}\t{attribute_names[best]}\t{corr[j, best]:+.3f}\t{kl_per_latent[j]:.3f}")
    kl_top = np.full(len(kl_per_latent), -1.0)
    kl_top[keep] = np.asarray(kl_per_latent)[keep]
    traversals(model, image, kl_top, path, title + f" — top {len(keep)} latents by KL, named by attribute",
               k, steps, unused_below=-np.inf, labels=labels, rows=keep)
    with atomic_path(path.with_suffix(".txt")) as tmp:
        tmp.write_text("\n".join(sorted(lines, key=lambda l: -float(l.split("\t")[3]))) + "\n")


def _hwc(img: torch.Tensor) -> np.ndarray:
    img = img.numpy()
    return img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0)


def mosaic(tiles: torch.Tensor, gap: int = 4) -> np.ndarray:
    """Images (R, K, C, H, W) in [0, 1] as one array of R rows and K columns with white gaps:
    (R·(H+gap)−gap, K·(W+gap)−gap), with a trailing C axis when C > 1. One image draws much faster than
    R·K axes."""
    r, k, c, h, w = tiles.shape
    out = torch.ones(c, r * (h + gap) - gap, k * (w + gap) - gap)
    for i in range(r):
        for j in range(k):
            out[:, i * (h + gap):i * (h + gap) + h, j * (w + gap):j * (w + gap) + w] = tiles[i, j]
    return _hwc(out)


def _show_mosaic(ax: plt.Axes, tiles: torch.Tensor, column_labels: Sequence[str], row_labels: Sequence[str],
                 gap: int = 4) -> None:
    """Draw `mosaic(tiles)` on `ax` with a label under each column and beside each row."""
    h, w = tiles.shape[-2:]
    ax.imshow(mosaic(tiles, gap), cmap="gray", vmin=0, vmax=1)
    ax.set_xticks([j * (w + gap) + w / 2 - 0.5 for j in range(tiles.shape[1])], column_labels, fontsize=8)
    ax.set_yticks([i * (h + gap) + h / 2 - 0.5 for i in range(tiles.shape[0])], row_labels, fontsize=7)
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)


@torch.no_grad()
def reconstructions(model, images: torch.Tensor, path: Path, title: str) -> None:
    """Originals (top row) over their reconstructions (sigmoid of the decoded posterior mean)."""
    mu, _ = model.encode(images)
    recon = torch.sigmoid(model.decode(mu)).cpu()
    fig, ax = plt.subplots(figsize=(len(images) * 0.9, 2.3), layout="constrained")
    _show_mosaic(ax, torch.stack([images.cpu(), recon]), [""] * len(images), ["data", "recon."])
    ax.set_title(title, fontsize=10)
    save(fig, path)


def latents_vs_factors(mu: np.ndarray, factors: np.ndarray, factor_names: Sequence[str], factor_values: np.ndarray,
                       kl_per_latent: Sequence[float], path: Path, title: str, unused_below: float = 0.1) -> None:
    """Each active latent's posterior mean against the true factors, averaged over the others (the original
    code's plot). dSprites: a posX × posY heat map and curves over scale and orientation, one per shape.
    Other data sets: one curve per factor. Rows are latents ordered by KL."""
    active = [j for j in np.argsort(kl_per_latent)[::-1] if kl_per_latent[j] >= unused_below] or [int(np.argmax(kl_per_latent))]
    names = list(factor_names)
    dsprites = {"shape", "posX", "posY"} <= set(names)
    curves = ["scale", "orientation"] if dsprites else [n for n in names if n != "identity"]
    ncols = len(curves) + (1 if dsprites else 0)
    fig, axes = plt.subplots(len(active), ncols, figsize=(3.4 * ncols, 2.4 * len(active) + 0.6), squeeze=False,
                             layout="constrained")
    for row, j in enumerate(active):
        col = 0
        if dsprites:
            px, py = factors[:, names.index("posX")], factors[:, names.index("posY")]
            heat = np.zeros((py.max() + 1, px.max() + 1))
            np.add.at(heat, (py, px), mu[:, j])
            heat /= np.maximum(np.bincount(py * (px.max() + 1) + px, minlength=heat.size).reshape(heat.shape), 1)
            im = axes[row, 0].imshow(heat, cmap="cividis", origin="upper")
            fig.colorbar(im, ax=axes[row, 0], label=f"mean z{j}")
            axes[row, 0].set(xlabel="posX (class)", ylabel=f"z{j} (KL {kl_per_latent[j]:.2f})\nposY (class)")
            col = 1
        groups = [(None, np.ones(len(mu), bool))]
        if dsprites:
            shape = factors[:, names.index("shape")]
            groups = [(["square", "ellipse", "heart"][s] if s < 3 else f"shape {s}", shape == s) for s in np.unique(shape)]
        for c, name in enumerate(curves):
            ax = axes[row, col + c]
            k = names.index(name)
            for g, (label, mask) in enumerate(groups):
                values = np.unique(factors[mask, k])
                x = [factor_values[mask & (factors[:, k] == v), k][0] for v in values]
                y = [mu[mask & (factors[:, k] == v), j].mean() for v in values]
                ax.plot(x, y, color=list(COLORS.values())[g % 3], label=label)
            ax.set(xlabel=f"{name} (value)", ylabel=f"mean z{j}" if not dsprites and c == 0 else None)
            if groups[0][0] and row == 0:
                ax.legend(fontsize=7)
            ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    save(fig, path)
