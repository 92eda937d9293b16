"""Plots of what was learned, written as PNG files (matplotlib, no display needed): every
learner's figures (the toy split's Figure 2, OLA, smart_aug, DRA, FAA, the data mixtures), drawn
from the records of `gar_jax.report.PolicyRecorder` (policy_history.jsonl), the learned policy
itself, or a mixture's weights over training."""
import os

import matplotlib

matplotlib.use("Agg")  # Files only: works on headless machines and inside tests.
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from gar_jax.augment import dra_policy, faa_policy, smart_augment, spaces  # noqa: E402


def mean_band(ax, x, curves, *, color, label, linewidth=1.5):
    """Draws the mean over runs of ``curves`` [runs, len(x)] with a +-1 std band."""
    curves = np.asarray(curves, np.float64)
    mean, std = curves.mean(axis=0), curves.std(axis=0)
    ax.plot(x, mean, color=color, label=label, linewidth=linewidth)
    ax.fill_between(x, mean - std, mean + std, color=color, alpha=0.2, linewidth=0)


def split_probs_figure(probs, path, *, noisy_split: int = 0, title: str = ""):
    """Figure 2 of the GAR paper: each split's sampling probability over training.

    One row per net, one column per method; in each panel one curve per split, the mean over
    seeds with a +-1 std band over seeds. The noisy split is drawn thick and red, the others
    in shades of blue.

    Args:
      probs: ``{net: {method: float [seeds, steps, splits]}}`` (arrays or nested lists).
      path: where to write the PNG.
      noisy_split: index of the split with random labels.
      title: optional figure title.
    """
    nets = list(probs)
    methods = list(dict.fromkeys(m for net in nets for m in probs[net]))
    fig, axes = plt.subplots(len(nets), len(methods), squeeze=False, sharey=True,
                             figsize=(4.2 * len(methods), 2.8 * len(nets)))
    for row, net in enumerate(nets):
        for col, method in enumerate(methods):
            ax = axes[row, col]
            if method not in probs[net]:
                ax.set_visible(False)
                continue
            p = np.asarray(probs[net][method], np.float64)
            steps = np.arange(p.shape[1])
            blues = plt.cm.Blues(np.linspace(0.4, 0.9, max(p.shape[2] - 1, 1)))
            clean = iter(blues)
            for s in range(p.shape[2]):
                if s == noisy_split:
                    mean_band(ax, steps, p[:, :, s], color="tab:red", linewidth=2.5,
                              label=f"split {s} (noisy)")
                else:
                    mean_band(ax, steps, p[:, :, s], color=next(clean), linewidth=1.0,
                              label="clean splits" if s == (1 if noisy_split == 0 else 0)
                              else None)
            ax.axhline(1.0 / p.shape[2], color="grey", linestyle=":", linewidth=1)
            ax.set_title(f"{net} / {method} ({p.shape[0]} seeds)")
            ax.set_xlabel("training step")
            if col == 0:
                ax.set_ylabel("split probability")
            ax.set_ylim(bottom=0)
    axes[0, 0].legend(loc="center right", fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def ola_policy_figures(history, op_names, workdir: str) -> None:
    """OLA: writes policy_over_training.png (p(k), keep probabilities) and policy_strengths.png
    (each op's strength distribution over training) from the records of `methods.ola.recorder`."""
    epochs = np.array([r["epoch"] for r in history])
    p_k = np.array([r["p_k"] for r in history])            # [T, K]
    p_keep = np.array([r["p_keep"] for r in history])      # [T, A]
    p_level = np.array([r["p_level"] for r in history])    # [T, A, L]

    fig, (ax_k, ax_keep) = plt.subplots(1, 2, figsize=(12, 4))
    for k in range(p_k.shape[1]):
        ax_k.plot(epochs, p_k[:, k], marker=".", label=f"k = {k + 1}")
    ax_k.axhline(1 / p_k.shape[1], color="grey", linestyle=":", linewidth=1)
    ax_k.set(xlabel="epoch", ylabel="p(k)", title="number of ops per image", ylim=(0, None))
    ax_k.legend(fontsize=8)
    colors = plt.cm.tab20(np.linspace(0, 1, len(op_names)))
    for a, name in enumerate(op_names):
        ax_keep.plot(epochs, p_keep[:, a], color=colors[a], label=name,
                     linewidth=2.5 if name == "sample_pairing" else 1.2)
    ax_keep.axhline(0.5, color="grey", linestyle=":", linewidth=1)
    ax_keep.set(xlabel="epoch", ylabel="keep probability", title="keep probability per op",
                ylim=(0, 1))
    ax_keep.legend(fontsize=6, ncol=2, loc="best")
    fig.tight_layout()
    fig.savefig(os.path.join(workdir, "policy_over_training.png"), dpi=110)
    plt.close(fig)

    cols = 5
    rows = -(-len(op_names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.0 * cols, 2.2 * rows), squeeze=False)
    vmax = max(p_level.max(), 1e-6)
    for a, ax in enumerate(axes.flat):
        if a >= len(op_names):
            ax.set_visible(False)
            continue
        ax.imshow(p_level[:, a, :].T, origin="lower", aspect="auto", cmap="viridis", vmin=0,
                  vmax=vmax, extent=(epochs[0] - 0.5, epochs[-1] + 0.5, -0.5,
                                     p_level.shape[2] - 0.5))
        ax.set_title(f"{op_names[a]}  keep {p_keep[-1, a]:.2f}", fontsize=8)
        ax.tick_params(labelsize=6)
        if a % cols == 0:
            ax.set_ylabel("strength level", fontsize=7)
        if a // cols == rows - 1:
            ax.set_xlabel("epoch", fontsize=7)
    fig.suptitle("strength distribution p(level | op) over training (colour: probability)")
    fig.tight_layout()
    fig.savefig(os.path.join(workdir, "policy_strengths.png"), dpi=110)
    plt.close(fig)


def smart_aug_policy_figure(history, space, workdir: str) -> None:
    """smart_aug: policy_over_training.png, each op's draw probability and learned magnitude per
    epoch (`space`: the run's SearchSpace)."""

    names = space.op_names
    epochs = np.array([r["epoch"] for r in history])
    p = np.array([r["distribution"] for r in history])      # [T, A]
    mag = np.array([r["magnitude"] for r in history])       # [T, A]
    learn = smart_augment.learnable_magnitude(space)
    colors = plt.cm.tab20(np.linspace(0, 1, len(names)))
    fig, (ax_p, ax_m) = plt.subplots(1, 2, figsize=(12, 4))
    for a, name in enumerate(names):
        wide = 2.5 if name == spaces.DESTRUCTIVE_OP.name else 1.2
        ax_p.plot(epochs, p[:, a], color=colors[a], label=name, linewidth=wide, marker=".")
        if learn[a]:
            ax_m.plot(epochs, mag[:, a], color=colors[a], label=name, linewidth=wide, marker=".")
    ax_p.axhline(1 / len(names), color="grey", linestyle=":", linewidth=1)
    ax_p.set(xlabel="epoch", ylabel="p(op)", ylim=(0, None),
             title="probability of drawing each op, softmax(prob * T)")
    ax_m.set(xlabel="epoch", ylabel="magnitude (fraction of range)", ylim=(0, 1.05),
             title="learned magnitudes (differentiable ops)")
    ax_p.legend(fontsize=6, ncol=2, loc="best")
    ax_m.legend(fontsize=6, ncol=2, loc="best")
    fig.tight_layout()
    fig.savefig(os.path.join(workdir, "policy_over_training.png"), dpi=110)
    plt.close(fig)


def dra_policy_figures(history, names, workdir: str) -> None:
    """DRA's search: policy_weights.png (softmax(W) per layer over the search) and
    policy_magnitudes.png (the final clipped-normal magnitude density of each op, per layer).
    `names`: the policy's DRA op names."""

    epochs = np.array([r["epoch"] for r in history])
    w = np.array([r["W"] for r in history])  # [T, L, A]
    soft = np.exp(w - w.max(-1, keepdims=True))
    soft /= soft.sum(-1, keepdims=True)
    layers = w.shape[1]
    colors = plt.cm.tab20(np.linspace(0, 1, len(names)))
    fig, axes = plt.subplots(1, layers, figsize=(6 * layers, 4), squeeze=False)
    for layer, ax in enumerate(axes[0]):
        for j, n in enumerate(names):
            ax.plot(epochs, soft[:, layer, j], color=colors[j], label=dra_policy.OUR_NAME[n],
                    linewidth=2.5 if n == dra_policy.DESTRUCTIVE else 1.2)
        ax.axhline(1 / len(names), color="grey", linestyle=":", linewidth=1)
        ax.set(xlabel="search epoch", ylabel="softmax(W)", title=f"op probability, layer "
               f"{layer + 1}", ylim=(0, None))
    axes[0][-1].legend(fontsize=6, ncol=2, loc="best")
    fig.tight_layout()
    fig.savefig(os.path.join(workdir, "policy_weights.png"), dpi=110)
    plt.close(fig)

    mean, std = np.array(history[-1]["M_MEAN"]), np.array(history[-1]["M_STD"])
    cols = 6
    rows = -(-len(names) // cols)
    grid = np.linspace(0, 1, 201)
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 1.9 * rows), squeeze=False)
    for j, ax in enumerate(axes.flat):
        if j >= len(names):
            ax.set_visible(False)
            continue
        for layer in range(layers):
            mu, sd = mean[layer, j], max(std[layer, j], 1e-3)
            density = np.exp(-0.5 * ((grid - mu) / sd) ** 2) / (sd * np.sqrt(2 * np.pi))
            ax.plot(grid, density, label=f"layer {layer + 1}")
        ax.set_title(f"{dra_policy.OUR_NAME[names[j]]}", fontsize=8)
        ax.tick_params(labelsize=6)
    axes.flat[0].legend(fontsize=6)
    fig.suptitle("magnitude m ~ N(M_MEAN, M_STD) before clipping to [0, 1] (final policy)")
    fig.tight_layout()
    fig.savefig(os.path.join(workdir, "policy_magnitudes.png"), dpi=110)
    plt.close(fig)


def faa_policy_figure(policy, path: str, title: str = "") -> None:
    """FAA's final policy (`gar_jax.augment.faa_policy` sub-policies): a bar chart of op_probability
    and a scatter of (op, step probability, level)."""
    probs = faa_policy.op_probability(policy)
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4))
    names = list(probs)
    a.bar(range(len(names)), [probs[n] for n in names], color="tab:blue")
    a.set_xticks(range(len(names)), names, rotation=60, ha="right")
    a.set_ylabel("P(image gets op)")
    a.set_title(f"{title} op probability ({len(policy)} sub-policies)")
    inv = {v: k for k, v in faa_policy.OP_NAME.items()}
    for i, n in enumerate(names):
        steps = [(p, lv) for sub in policy for o, p, lv in sub if o == inv[n]]
        if steps:
            p, lv = np.array(steps).T
            b.scatter(i + (lv - 0.5) * 0.6, p, s=6, alpha=0.5, c=lv, cmap="viridis",
                      vmin=0, vmax=1)
    b.set_xticks(range(len(names)), names, rotation=60, ha="right")
    b.set_ylabel("step probability (x offset and colour: level)")
    b.set_title("steps of the final policy")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def mixture_figure(histories: dict, names, path: str, *, steps_per_point: int = 1,
                   highlight=(), title: str = "") -> None:
    """Each source's sampling probability over training, one panel per method.

    Args:
      histories: ``{method: float [runs, points, K]}``; the mean over runs is drawn with a
        +-1 std band. Sources in `highlight` (the harmful ones) are drawn thick and dashed.
      names: the K source names; steps_per_point: SGD steps between points (an int, or
        ``{method: int}`` when the methods record at different intervals).
    """
    methods = list(histories)
    cols = min(4, len(methods))
    rows = -(-len(methods) // cols)
    fig, axes = plt.subplots(rows, cols, squeeze=False, sharey=True,
                             figsize=(4.2 * cols, 3.0 * rows))
    colors = plt.get_cmap("tab10")
    for i, method in enumerate(methods):
        ax = axes[i // cols, i % cols]
        h = np.asarray(histories[method], np.float64)
        every = (steps_per_point[method] if isinstance(steps_per_point, dict)
                 else steps_per_point)
        x = np.arange(h.shape[1]) * every
        for j, name in enumerate(names):
            bad = name in highlight
            mean_band(ax, x, h[:, :, j], color=colors(j % 10), label=name,
                            linewidth=2.5 if bad else 1.2)
            if bad:
                ax.lines[-1].set_linestyle("--")
        ax.set_title(method)
        ax.set_xlabel("SGD step")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    for i in range(len(methods), rows * cols):
        axes[i // cols, i % cols].set_visible(False)
    axes[0, 0].set_ylabel("sampling probability")
    axes[0, 0].legend(fontsize=7, loc="upper left")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
