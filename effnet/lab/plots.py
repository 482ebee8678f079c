"""Charts of the lab's experiments (matplotlib, Agg backend, fixed pixel sizes)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from effnet.env import pyplot
from effnet.weights.serialize import atomic_write

SIZE_IN, DPI = (8.0, 5.0), 100  # 800 x 500 px


def _figure():
    plt = pyplot()

    fig, ax = plt.subplots(figsize=SIZE_IN, dpi=DPI)
    return plt, fig, ax


def _save(plt, fig, path: str | Path) -> Path:
    path = Path(path)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=DPI, format="png"))
    plt.close(fig)
    return path


def plot_search(res: dict[str, Any], path: str | Path) -> Path:
    """Top-1 against MACs of every finished (alpha, beta, gamma); the best one highlighted."""
    plt, fig, ax = _figure()
    rows = [r for r in res["ranking"] if r.get("macs")]
    ax.scatter([r["macs"] / 1e6 for r in rows], [r["top1"] for r in rows], color="tab:blue")
    for r in rows:
        ax.annotate(
            f"{r['alpha']:g}/{r['beta']:g}/{r['gamma']:g}",
            (r["macs"] / 1e6, r["top1"]),
            fontsize=7,
            xytext=(3, 3),
            textcoords="offset points",
        )
    best = res.get("best")
    if best and best.get("macs"):
        ax.scatter(
            [best["macs"] / 1e6],
            [best["top1"]],
            s=120,
            facecolors="none",
            edgecolors="tab:red",
            label="best",
        )
        ax.legend(loc="lower right")
    ax.set_xlabel("MACs (millions)")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title(
        f"alpha/beta/gamma search at phi = 1 on {res.get('data', '?')} "
        f"({res.get('budget_epochs', '?')} epochs each)"
    )
    ax.grid(alpha=0.3)
    return _save(plt, fig, path)


def plot_sweep(res: dict[str, Any], path: str | Path) -> Path:
    """Mean top-1 (error bar: std over seeds) against mean MACs, one line per dimension."""
    plt, fig, ax = _figure()
    markers = {"width": "s", "depth": "^", "resolution": "D", "compound": "o"}
    for dim, pts in res["curves"].items():
        xs = [p["macs"] / 1e6 for p in pts]
        ax.errorbar(
            xs,
            [p["top1_mean"] for p in pts],
            yerr=[p["top1_std"] for p in pts],
            marker=markers.get(dim, "o"),
            capsize=3,
            label=dim,
            linewidth=2.5 if dim == "compound" else 1.2,
        )
    ax.set_xlabel("MACs (millions)")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title(
        f"scaling by one dimension vs compound on {res.get('data', '?')} "
        f"({res.get('seeds', '?')} seeds, {res.get('epochs', '?')} epochs)"
    )
    ax.legend()
    ax.grid(alpha=0.3)
    return _save(plt, fig, path)


def plot_nas(res: dict[str, Any], path: str | Path) -> Path:
    """Accuracy against step time and against params for every trial; the Pareto front
    (accuracy up, step time and params down) in red, the best-reward trial labelled."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(SIZE_IN[0] * 1.5, SIZE_IN[1]), dpi=DPI, sharey=True)
    rows, front = res["trials"], set(res["pareto"])
    best = (res.get("best") or {}).get("trial")
    for ax, key, scale, label in (
        (axes[0], "step_time", 1e3, "training step time (ms)"),
        (axes[1], "params", 1e-6, "parameters (millions)"),
    ):
        for on, colour in ((False, "tab:blue"), (True, "tab:red")):
            pts = [r for r in rows if (r["trial"] in front) == on]
            xs, ys = [r[key] * scale for r in pts], [100 * r["acc"] for r in pts]
            ax.scatter(xs, ys, color=colour, label="Pareto front" if on else "trial")
        for r in rows:
            if r["trial"] in front or r["trial"] == best:
                tag = f"#{r['trial']}" + (" best" if r["trial"] == best else "")
                xy = (r[key] * scale, 100 * r["acc"])
                ax.annotate(tag, xy, fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("top-1 accuracy (%)")
    axes[0].legend(loc="lower right")
    fig.suptitle(
        f"architecture search, space {res.get('space')} on {res.get('data')} "
        f"({res.get('finished')} trials, {res.get('epochs')} epoch(s) each)"
    )
    return _save(plt, fig, path)
