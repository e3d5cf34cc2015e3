"""The paper's figures, drawn from small files only (runs.csv and each run's figures.h5; no torch, no model, no
data set): MIG against β, TC against MIG, latent traversals, reconstructions, latents against factors.
Each function draws one figure and saves it as PNG (the sweep's figures also as PDF), atomically and without a
creation date, so that the same data give the same bytes."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from tcvae.figure_data import FigureData  # noqa: E402
from tcvae.io import atomic_path  # noqa: E402
from tcvae.resultfiles import beta_name  # noqa: E402
from tcvae.results import RHO_MIN, captured_text, collapsed, spearman  # noqa: E402

# Okabe & Ito's colour-blind-safe palette
COLORS = {"betavae": "#0072B2", "tcvae": "#D55E00", "factorvae": "#009E73", "annealedvae": "#CC79A7"}
LABELS = {"betavae": "β-VAE", "tcvae": "β-TCVAE", "factorvae": "FactorVAE", "annealedvae": "AnnealedVAE"}
WEIGHT = {"betavae": "β", "tcvae": "β", "factorvae": "γ", "annealedvae": "γ"}
MARKERS = {"betavae": "o", "tcvae": "D", "factorvae": "^", "annealedvae": "s"}   # shapes too: equal results stay visible
SHIFT = {"betavae": -1.5, "tcvae": -0.5, "factorvae": 0.5, "annealedvae": 1.5}    # methods side by side at each β


def save(fig: plt.Figure, path: Path, dpi: int = 150, pdf: bool = False) -> None:
    """Write `path` (.png) and, with `pdf`, its .pdf twin, each appearing complete or not at all. (Per-run figures
    are PNG only: drawing twice would double the plot stage's time.)"""
    for target in [path.with_suffix(".png")] + ([path.with_suffix(".pdf")] if pdf else []):
        metadata = {"CreationDate": None} if target.suffix == ".pdf" else {}
        with atomic_path(target) as tmp:
            fig.savefig(tmp, format=target.suffix[1:], dpi=dpi, metadata=metadata)
    plt.close(fig)


def _panels(rows: list[dict[str, Any]]) -> tuple[plt.Figure, list[tuple[plt.Axes, str, list[dict[str, Any]]]]]:
    """One panel per data set with MIG: (figure, [(axes, data set, its runs)])."""
    datasets = sorted({r["dataset"] for r in rows if r["mig"] is not None})
    fig, axes = plt.subplots(1, max(1, len(datasets)), figsize=(6.2 * max(1, len(datasets)), 4.2), squeeze=False,
                             layout="constrained")
    return fig, [(ax, d, [r for r in rows if r["dataset"] == d and r["mig"] is not None])
                 for ax, d in zip(axes[0], datasets)]


def _methods(runs: list[dict[str, Any]]) -> list[str]:
    return sorted({r["method"] for r in runs}, key=list(COLORS).index)


def _weight(runs: list[dict[str, Any]], short: bool = False) -> str:
    """The weight's name on an axis or legend: β, and γ beside it, naming its methods, only when a γ method is drawn."""
    gammas = [LABELS[m] for m in _methods(runs) if WEIGHT[m] == "γ"]
    if not gammas:
        return "β"
    return "β (γ)" if short else f"β ({', '.join(gammas)}: γ)"


COLLAPSED = "collapsed run (no active latent)"


def _mark_collapsed(ax: plt.Axes, points: list[tuple[float, float]]) -> None:
    """Cross out the points of collapsed runs (tcvae.results.collapsed), with one legend entry per axes."""
    if points:
        labels = ax.get_legend_handles_labels()[1]
        ax.scatter(*zip(*points), marker="x", color="black", s=45, linewidths=1.2, zorder=5,
                   label=None if COLLAPSED in labels else COLLAPSED)


def mig_vs_beta(rows: list[dict[str, Any]], path: Path) -> None:
    """Per data set (paper Fig. 4): every run as a hollow marker, each method's median over seeds per β as a filled
    one with its quartiles as a bar, labelled with the factors captured (MIG's blind spot: one latent holding two
    factors scores well); collapsed runs crossed out; methods sit side by side at each β, nothing drawn between βs."""
    fig, panels = _panels(rows)
    for ax, dataset, runs in panels:
        betas = sorted({r["beta"] for r in runs})
        log = min(betas) > 0
        repeated = False                             # any β with more than one seed: hollow runs beside a median
        for method in _methods(runs):
            mine = [r for r in runs if r["method"] == method]
            at = {b: [r["mig"] for r in mine if r["beta"] == b] for b in sorted({r["beta"] for r in mine})}
            x = {b: _shifted(b, SHIFT[method], log, betas) for b in at}
            ax.scatter([x[r["beta"]] for r in mine], [r["mig"] for r in mine], s=26, facecolors="none",
                       edgecolors=COLORS[method], marker=MARKERS[method], linewidths=1, alpha=0.8)
            q1, med, q3 = (np.array([np.percentile(at[b], q) for b in at]) for q in (25, 50, 75))
            seeds = max(len(v) for v in at.values())
            repeated |= seeds > 1
            ax.errorbar([x[b] for b in at], med, yerr=[med - q1, q3 - med] if seeds > 1 else None, fmt=MARKERS[method],
                        color=COLORS[method], markersize=7, capsize=3, linestyle="none",
                        label=f"{LABELS[method]}: median and quartiles over seeds ({len(mine)} runs)" if seeds > 1 else
                        f"{LABELS[method]}: one run per β")
            for b in at:
                text = captured_text([r for r in mine if r["beta"] == b]).split(" of ")[0]
                ax.annotate(text, (x[b], float(np.median(at[b]))), xytext=(6, 3), textcoords="offset points",
                            fontsize=7, color=COLORS[method])
            _mark_collapsed(ax, [(x[r["beta"]], r["mig"]) for r in mine if collapsed(r)])
        scored = runs[0]["factors_scored"]
        if log:
            ax.set_xscale("log", base=2)
        ax.set_xticks(betas, [beta_name(b) for b in betas])
        ax.minorticks_off()
        ax.set(title=dataset, xlabel=_weight(runs) + (", log scale" if log else ""),
               ylabel="MIG (0–1, higher is more disentangled)")
        top = max(0.1, 1.15 * max(r["mig"] for r in runs))
        ax.set_ylim(-0.03 * top, top)                  # a collapsed run's MIG of 0 stays fully visible
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, title_fontsize=8, title=("hollow: single runs; " if repeated else "") +
                  ("" if scored is None else f"numbers: factors captured (of {scored})"))
    fig.suptitle("Disentanglement (MIG) against the regularisation weight")
    save(fig, path, pdf=True)


def _shifted(beta: float, k: float, log: bool, betas: list[float]) -> float:
    """β moved a little sideways for method k (−1.5 … 1.5), so that equal results stay visible."""
    if log:
        return beta * 2 ** (0.06 * k)
    return beta + 0.02 * k * (max(betas) - min(betas) or 1)


def tc_vs_mig(rows: list[dict[str, Any]], path: Path) -> None:
    """Per data set (paper Fig. 6): each run's total correlation (log x) against its MIG, marker size growing with
    β, and Spearman's ρ per method in the legend (not given below `RHO_MIN` distinct points). Runs at one point
    (the same VAE, or collapsed runs) are counted beside it ("2 runs")."""
    fig, panels = _panels(rows)
    for ax, dataset, runs in panels:
        all_betas = sorted({r["beta"] for r in runs})
        size = {b: 25 + 140 * i / max(1, len(all_betas) - 1) for i, b in enumerate(all_betas)}
        for method in _methods(runs):
            mine = [r for r in runs if r["method"] == method]
            rho = spearman([r["tc"] for r in mine], [r["mig"] for r in mine])
            note = f"ρ = {rho:+.2f}" if rho is not None else f"no ρ (< {RHO_MIN} distinct points)"
            ax.scatter([max(r["tc"], 1e-3) for r in mine], [r["mig"] for r in mine], s=[size[r["beta"]] for r in mine],
                       color=COLORS[method], marker=MARKERS[method], alpha=0.75, edgecolor="black", linewidth=0.5,
                       label=f"{LABELS[method]}: {note}")
            _mark_collapsed(ax, [(max(r["tc"], 1e-3), r["mig"]) for r in mine if collapsed(r)])
        # runs drawn on one spot (the same VAE; collapsed runs at TC ≤ 0.001, MIG 0) hide each other: count them
        shared = Counter((round(np.log10(max(r["tc"], 1e-3)), 2), round(r["mig"], 3)) for r in runs)
        for (x, y), n in shared.items():
            if n > 1:
                ax.annotate(f"{n} runs", (10 ** x, y), xytext=(7, 5), textcoords="offset points", fontsize=8)
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set(xlabel="total correlation of q(z) (nats, log scale; ≤ 0.001 drawn at 0.001)", ylabel="MIG")
        ax.set_title(dataset)
        ax.grid(alpha=0.3)
        # one legend, outside the axes: runs at TC ≤ 0.001 and MIG 0 sit in a corner a legend would hide
        methods, labels = ax.get_legend_handles_labels()
        sizes = [ax.scatter([], [], s=size[b], color="grey", edgecolor="black", linewidth=0.5) for b in all_betas]
        weight = _weight(runs, short=True)
        ax.legend(methods + sizes, labels + [f"{weight} = {beta_name(b)}" for b in all_betas], fontsize=7,
                  loc="upper left", bbox_to_anchor=(1.02, 1), labelspacing=1.0, title_fontsize=8,
                  title=f"Spearman ρ(TC, MIG)\nover runs; marker size: {weight}")
    fig.suptitle("Total correlation against MIG (one marker per run; larger markers: larger β)")
    save(fig, path, pdf=True)


OTHER_METRICS = {"mig_discrete": "discrete MIG (binned means)", "dci": "DCI disentanglement", "sap": "SAP",
                 "factorvae_score": "FactorVAE score", "betavae_score": "β-VAE score"}


def metrics_vs_mig(rows: list[dict[str, Any]], path: Path) -> None:
    """How far the field's metrics agree on this sweep: each metric against MIG, one point per run, a row per data
    set, with Spearman's rank correlation over the data set's runs in each panel's title."""
    datasets = sorted({r["dataset"] for r in rows if r["mig"] is not None})
    names = [m for m in OTHER_METRICS if any(r.get(m) is not None for r in rows)]
    if not datasets or not names:
        return
    fig, axes = plt.subplots(len(datasets), len(names), figsize=(3.1 * len(names), 2.9 * len(datasets) + 0.6),
                             squeeze=False, layout="constrained")
    for i, dataset in enumerate(datasets):
        runs = [r for r in rows if r["dataset"] == dataset and r["mig"] is not None]
        for ax, name in zip(axes[i], names):
            mine = [r for r in runs if r.get(name) is not None]
            for method in _methods(mine):
                m = [r for r in mine if r["method"] == method]
                ax.scatter([r["mig"] for r in m], [r[name] for r in m], color=COLORS[method], marker=MARKERS[method],
                           s=22, alpha=0.8, label=LABELS[method])
            _mark_collapsed(ax, [(r["mig"], r[name]) for r in mine if collapsed(r)])
            rho = spearman([r["mig"] for r in mine], [r[name] for r in mine])
            ax.set_title(f"{dataset}: ρ = {rho:+.2f}" if rho is not None else f"{dataset}: no ρ (< {RHO_MIN} points)",
                         fontsize=9)
            ax.set_xlabel("MIG", fontsize=8)
            ax.set_ylabel(OTHER_METRICS[name], fontsize=8)
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
        axes[i, 0].legend(fontsize=7)
    fig.suptitle("The other disentanglement metrics against MIG (Spearman's ρ over runs)", fontsize=10)
    save(fig, path, pdf=True)


def mosaic(tiles: np.ndarray, gap: int = 4) -> np.ndarray:
    """Images (R, K, C, H, W) as one array of R rows and K columns with white gaps, values as given (white is the
    largest value of the dtype for integers, 1 for floats): (R·(H+gap)−gap, K·(W+gap)−gap), with a trailing C axis
    when C > 1. One image draws much faster than R·K axes."""
    r, k, c, h, w = tiles.shape
    white = np.iinfo(tiles.dtype).max if tiles.dtype.kind in "ui" else 1
    out = np.full((c, r * (h + gap) - gap, k * (w + gap) - gap), white, dtype=tiles.dtype)
    for i in range(r):
        for j in range(k):
            out[:, i * (h + gap):i * (h + gap) + h, j * (w + gap):j * (w + gap) + w] = tiles[i, j]
    return out[0] if c == 1 else out.transpose(1, 2, 0)


def _show_mosaic(ax: plt.Axes, tiles: np.ndarray, column_labels: Sequence[str], row_labels: Sequence[str],
                 gap: int = 4) -> None:
    """Draw `mosaic(tiles)` (uint8) on `ax` with a label under each column and beside each row."""
    h, w = tiles.shape[-2:]
    ax.imshow(mosaic(tiles, gap), cmap="gray", vmin=0, vmax=255)
    ax.set_xticks([j * (w + gap) + w / 2 - 0.5 for j in range(tiles.shape[1])] if any(column_labels) else [],
                  column_labels if any(column_labels) else [], fontsize=8)
    ax.set_yticks([i * (h + gap) + h / 2 - 0.5 for i in range(tiles.shape[0])], row_labels, fontsize=7)
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)


def _traversal_figure(tiles: np.ndarray, offsets: np.ndarray, names: list[str], greyed: list[bool], path: Path,
                      title: str) -> None:
    fig, ax = plt.subplots(figsize=(len(offsets) * 0.9 + 1.0, len(names) * 0.9 + 1.0), layout="constrained")
    _show_mosaic(ax, tiles, [f"{o:+.1f}" for o in offsets], names)
    for tick, grey in zip(ax.get_yticklabels(), greyed):
        tick.set_color("grey" if grey else "black")
    ax.set_xlabel(f"offset from the posterior mean (prior standard deviations, ±{offsets[-1]:g})", fontsize=9)
    ax.set_title(title, fontsize=10)
    save(fig, path)


def traversals(fd: FigureData, kl_per_latent: Sequence[float], path: Path, title: str, unused_below: float = 0.1) -> None:
    """One row per latent, ordered by KL (largest first): z_j swept around the posterior mean of the chosen image,
    the others held at their means; rows of unused latents (KL < `unused_below` nats) are marked."""
    order = np.argsort(kl_per_latent)[::-1]
    unused = [kl_per_latent[j] < unused_below for j in order]
    names = [f"z{j}\nKL {kl_per_latent[j]:.2f}" + ("\n(unused)" if u else "") for j, u in zip(order, unused)]
    _traversal_figure(fd.traversals[order], fd.offsets, names, unused, path, title)


def traversals_by_attribute(fd: FigureData, kl_per_latent: Sequence[float], path: Path, title: str) -> None:
    """Traversals (±the attribute range) of the latents with the largest KL, each row named after the attribute
    its posterior mean correlates with most, as the paper named CelebA's dimensions by hand. The labels are also
    written to `path`.txt (latent, attribute, r, KL)."""
    a = fd.attributes
    offsets = np.linspace(-a["range"], a["range"], a["traversals"].shape[1])
    names = [f"z{j} {n} ({r:+.2f})" for j, n, r in zip(a["latents"], a["names"], a["correlations"])]
    _traversal_figure(a["traversals"], offsets, names, [False] * len(names), path,
                      title + f" — top {len(names)} latents by KL, named by attribute")
    lines = [f"z{j}\t{n}\t{r:+.3f}\t{kl_per_latent[j]:.3f}" for j, n, r in zip(a["latents"], a["names"], a["correlations"])]
    with atomic_path(path.with_suffix(".txt")) as tmp:
        tmp.write_text("\n".join(lines) + "\n")


def reconstructions(fd: FigureData, path: Path, title: str) -> None:
    """Originals (top row) over their reconstructions (the decoded posterior mean)."""
    tiles = np.stack([fd.originals, fd.reconstructions])
    grid = mosaic(tiles).shape              # the height follows the mosaic's shape (inches), with no empty band
    width = len(fd.originals) * 0.9
    fig, ax = plt.subplots(figsize=(width, (width - 0.5) * grid[0] / grid[1] + 0.35), layout="constrained")
    _show_mosaic(ax, tiles, [""] * len(fd.originals), ["data", "recon."])
    ax.set_title(title, fontsize=10)
    save(fig, path)


def latents_vs_factors(fd: FigureData, kl_per_latent: Sequence[float], path: Path, title: str,
                       unused_below: float = 0.1, max_rows: int = 5) -> None:
    """Each active latent's mean posterior mean against the true factors, averaged over the others (the original
    code's plot), one row per latent (the `max_rows` with the largest KL) on one shared y-range per row.
    dSprites: a posX × posY map and curves over scale and orientation, one per shape; others: a curve per factor."""
    active = [j for j in np.argsort(kl_per_latent)[::-1] if kl_per_latent[j] >= unused_below]
    if not active:       # a collapsed posterior: its means are noise, on an automatic colour scale they look like structure
        fig, ax = plt.subplots(figsize=(6, 1.6), layout="constrained")
        ax.axis("off")
        ax.text(0.5, 0.5, f"collapsed: no latent has a KL of {unused_below} nats or more "
                f"(largest {max(kl_per_latent):.3f}),\nso no latent carries anything to draw against the factors",
                ha="center", va="center", fontsize=9)
        ax.set_title(title, fontsize=9)
        save(fig, path, dpi=110)
        return
    shown = active[:max_rows]
    curves = [n for n in fd.factors if fd.position is None or n not in ("posX", "posY")]
    ncols = len(curves) + (fd.position is not None)
    fig, axes = plt.subplots(len(shown), ncols, figsize=(3.0 * ncols, 1.45 * len(shown) + 0.9), squeeze=False,
                             layout="constrained")
    for row, j in enumerate(shown):
        values = [fd.factors[n]["means"][j] for n in curves] + ([fd.position[j]] if fd.position is not None else [])
        lo, hi = np.nanmin([np.nanmin(v) for v in values]), np.nanmax([np.nanmax(v) for v in values])
        pad = 0.05 * (hi - lo) or 0.05
        col = 0
        if fd.position is not None:
            ax = axes[row, 0]
            im = ax.imshow(fd.position[j], cmap="cividis", origin="upper", extent=(0, 1, 1, 0), vmin=lo, vmax=hi)
            fig.colorbar(im, ax=ax, label=f"mean z{j}", shrink=0.9)
            ax.set_ylabel(f"z{j} (KL {kl_per_latent[j]:.2f})\nposY (0–1)", fontsize=8)
            ax.set_xlabel("posX (0–1)" if row == len(shown) - 1 else None, fontsize=8)
            col = 1
        for c, name in enumerate(curves):
            ax, table = axes[row, col + c], fd.factors[name]
            for g, means in enumerate(table["means"][j]):
                label = fd.groups[g] if fd.groups else None
                ax.plot(table["values"], means, color=list(COLORS.values())[g % 3], label=label, linewidth=1.2)
            ax.set_ylim(lo - pad, hi + pad)
            ylabel = f"mean z{j}" + ("" if fd.position is not None or c else f"\n(KL {kl_per_latent[j]:.2f})")
            ax.set_ylabel(ylabel, fontsize=8)
            ax.set_xlabel(f"{name} ({table['unit']})" if row == len(shown) - 1 else None, fontsize=8)
            ax.tick_params(labelsize=7)
            if fd.groups and row == 0 and c == len(curves) - 1:
                ax.legend(fontsize=7)
            ax.grid(alpha=0.3)
    more = f"; {len(active) - len(shown)} more active latents not shown" if len(active) > len(shown) else ""
    fig.suptitle(f"{title}\nlatents by KL, each row on one y-range{more}", fontsize=9)
    save(fig, path, dpi=110)


CURVES = ("step", "elbo", "mi", "tc", "dimwise_kl")     # learning_curves.csv: what `dvc plots show` draws per run


def learning_curves(history: list[dict[str, float]], path: Path, title: str) -> None:
    """The training history (history.csv rows): the ELBO, and its KL's parts — index-code MI, total correlation,
    dimension-wise KL — all in nats per image, against the step (minibatch estimates). The numbers drawn are also
    written to `path`.csv (`CURVES`), which dvc.yaml's `plots:` draws interactively."""
    with atomic_path(path.with_suffix(".csv")) as tmp:
        tmp.write_text("\n".join([",".join(CURVES)] + [",".join(f"{h[k]:g}" for k in CURVES) for h in history]) + "\n")
    steps = [h["step"] for h in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.2), layout="constrained")
    left.plot(steps, [h["elbo"] for h in history], color="black")
    left.set(xlabel="step", ylabel="ELBO (nats)", title="evidence lower bound")
    for key, label, color in (("mi", "index-code MI", "#0072B2"), ("tc", "total correlation", "#D55E00"),
                              ("dimwise_kl", "dimension-wise KL", "#009E73")):
        right.plot(steps, [h[key] for h in history], label=label, color=color)
    right.set(xlabel="step", ylabel="nats", title="the KL's decomposition")
    right.legend(fontsize=8)
    for ax in (left, right):
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    save(fig, path, dpi=100)


ESTIMATOR_COLORS = {"mss": "#D55E00", "mws": "#0072B2", "esmaeili": "#009E73"}
ESTIMATOR_LABELS = {"mss": "MSS (Chen et al.)", "mws": "MWS (Chen et al.)", "esmaeili": "Esmaeili et al."}
ESTIMATOR_STYLES = {"mss": "o-", "mws": "s-", "esmaeili": "^--"}   # dashed: at B ≪ N it lies on MSS


def estimator_bias(study, path: Path, title: str) -> None:
    """The minibatch estimates of MI, TC and dim-wise KL against batch size (log x), one line per estimator with
    ±1 standard deviation over minibatches as a band, the full-data value as a dashed line, and the run's own
    training batch size marked. `study`: a figure_data.BiasStudy."""
    from tcvae.figure_data import QUANTITIES

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), layout="constrained")
    ok = study.repeats > 0
    b = study.batches[ok]
    for ax, (q, label) in zip(axes, (("mi", "index-code MI"), ("tc", "total correlation"),
                                     ("dimwise_kl", "dimension-wise KL"))):
        i = QUANTITIES.index(q)
        for e, name in enumerate(study.estimators):
            m, s = study.mean[e, ok, i], study.std[e, ok, i]
            color = ESTIMATOR_COLORS.get(name, "grey")
            ax.plot(b, m, ESTIMATOR_STYLES.get(name, "o-"), color=color, ms=3.5, mfc="none",
                    label=ESTIMATOR_LABELS.get(name, name))
            ax.fill_between(b, m - s, m + s, color=color, alpha=0.15, lw=0)
        ax.axhline(study.full[i], color="black", ls="--", lw=1, label=f"full data (N = {study.dataset_size:,})")
        if study.batch_size:
            ax.axvline(study.batch_size, color="grey", ls=":", lw=1.2, label=f"this run's batch ({study.batch_size})")
        ax.set_xscale("log", base=2)
        ax.set_xticks(b, [str(v) for v in b])
        ax.set_xlabel("minibatch size B")
        ax.set_ylabel(f"{label} (nats)")
        ax.set_title(label)
    axes[0].legend(fontsize=7, loc="best")
    fig.suptitle(f"{title}: minibatch estimates (mean ± 1 sd over minibatches) against the full-data value", fontsize=9)
    save(fig, path)
