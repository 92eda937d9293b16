"""A synthetic model of OLA's destructive-op run, to ask which change to the policy's optimizer
could make the planted op end among the lowest more often, before spending real runs on it
(experiments/ola/README.md section 6g). A model, not evidence about OLA: it keeps what the
diagnosis of the real runs measured (6a-6c) and drops everything else.

What it keeps, per simulated run (vectorized over many runs):
- the sampler's parametrization (gar_jax.augment.ola_sampler): per sampler, k ~ softmax(psi)
  over 1..4, k ops drawn uniformly with replacement from 15, each kept with sigmoid(rho_a);
  levels are left out (the planted op has none);
- the default digits protocol: 2 samplers, 16 rewarded images each per step (half of 32), the
  rewards normalized over the 32, REINFORCE on -mean(w log pi), Adam (lr 0.1, b1 0, b2 0.999,
  eps 1e-8), 330 policy updates (30 epochs) or 660 (60);
- rewards r_n = sum of the kept ops' effects + N(0, 1), plus N(0, HEAVY^2) per kept copy of the
  planted op (its replaced images get large rewards of either sign: std of its weights about
  1.8 against about 1 for other ops in the real runs). The effects (reward units, before
  normalization) are the planted op -0.25, four other ops that also hurt 8x8 digits -0.10,
  -0.06, -0.05, -0.03 (translate_y, solarize, ... in 6c's quarter table), ten harmless; per
  quarter of training the planted op's effect is scaled by 0.9 / 1.1 / 1.0 / 0.45 and the others'
  by 1 / 0.7 / 0.7 / 0.2 (6c: the signal fades in the last quarter);
- optionally (--step-noise) a per-step offset per op shared by all images of the batch: every
  image's GAR is taken against the same G, so the images of one step are not independent draws.

Success, as in the seed study: the op's probability of being applied (averaged over the two
samplers) among the 3 lowest of 15, and that at <= 0.6x the median op. Printed per variant with
the 30- and 60-epoch schedules; the calibration line gives the planted op's mean and std of its
normalized weights per applied image (the real runs: about -0.2 and 1.6-1.9).

    python experiments/ola/simulate_keep.py [--runs 400] [--variants default,b1_0.9,...]
"""
from __future__ import annotations

import argparse

import numpy as np

from gar_jax.augment import ola_sampler

NUM_OPS, MAX_OPS = 15, 4
EFFECTS = np.array([-0.25, -0.10, -0.06, -0.05, -0.03] + [0.0] * 10)
PLANTED_PROFILE = (0.9, 1.1, 1.0, 0.45)
OTHER_PROFILE = (1.0, 0.7, 0.7, 0.2)
HEAVY = 1.5
STEP_NOISE = 0.0

VARIANTS = {
    "default": {},
    "b1_0.9": {"b1": 0.9},                      # Adam's momentum: averages the last ~10 steps
    "b2_0.99": {"b2": 0.99},                    # a shorter second-moment memory
    "polyak_last_half": {"average_from": 0.5},  # the policy read out as its mean over the 2nd half
    "polyak_all": {"average_from": 0.0},
    "lr_cosine": {"schedule": "cosine"},        # ola.lr_schedule = "model" (tried for real: 6c)
    "lr_inv_sqrt": {"schedule": "inv_sqrt"},
    "lr_0.05": {"lr": 0.05},
    "weight_decay_0.05": {"weight_decay": 0.05},  # pulls every logit back to 0
    "clip_weights_2": {"clip_weights": 2.0},    # winsorized REINFORCE weights
    "samplers_1x32": {"samplers": 1, "rewarded": 32},
    "samplers_4x8": {"samplers": 4, "rewarded": 8},
    "every_image_2x32": {"rewarded": 32},       # ola.reward_fraction = 1 (tried for real: 6d)
    "no_heavy_tail": {"heavy": 0.0},            # what a magnitude-free reward would buy, at best
}


def reinforce_gradients(p_k, keep, k, ops, kept, w):
    """Gradients of -mean_n(w_n log pi(c_n)) w.r.t. the k logits psi [S, E, K] and the keep
    logits rho [S, E, A] of `gar_jax.augment.ola_sampler` (levels left out), for images laid
    out [S runs, E samplers, N images]: p_k = softmax(psi), keep = sigmoid(rho), k [S, E, N]
    (1..K), ops [S, E, N, K] the drawn ops (slots >= k ignored), kept [S, E, N, K] the kept
    slots, w [S, E, N] the weights. Returns (g_psi, g_rho).
    (tests/test_ola_seed_study.py checks them against jax.grad of `ola_sampler.log_prob`.)"""
    S, E, N, K = ops.shape
    drawn = np.arange(K) < k[..., None]
    keep_of_slot = np.take_along_axis(
        np.broadcast_to(keep[:, :, None, :], (S, E, N, keep.shape[-1])), ops, -1)
    slot = (kept - keep_of_slot) * drawn * w[..., None]
    g_rho = np.zeros_like(keep)
    index_s, index_e = np.arange(S)[:, None, None], np.arange(E)[None, :, None]
    for j in range(K):
        np.add.at(g_rho, (index_s, index_e, ops[..., j]), slot[..., j])
    g_rho /= -(E * N)
    g_psi = -((np.eye(K)[k - 1] - p_k[:, :, None, :]) * w[..., None]).sum(2) / (E * N)
    return g_psi, g_rho


def simulate(*, steps=330, runs=400, seed=0, lr=0.1, b1=0.0, b2=0.999, weight_decay=0.0,
             average_from=None, schedule="constant", clip_weights=None, samplers=2,
             rewarded=16, heavy=HEAVY, step_noise=STEP_NOISE) -> dict:
    """Runs `runs` independent simulated OLA runs; returns success rates and calibration."""
    rng = np.random.default_rng(seed)
    S, E, N, A, K = runs, samplers, rewarded, NUM_OPS, MAX_OPS
    rho, psi = np.zeros((S, E, A)), np.zeros((S, E, K))
    moments = {name: [np.zeros_like(p), np.zeros_like(p)] for name, p in (("rho", rho),
                                                                         ("psi", psi))}
    averaged, averaged_count = np.zeros_like(rho), 0
    planted_w, planted_w2, planted_n = 0.0, 0.0, 0
    for t in range(1, steps + 1):
        quarter = min(3, 4 * (t - 1) // steps)
        effects = EFFECTS * OTHER_PROFILE[quarter]
        effects[0] = EFFECTS[0] * PLANTED_PROFILE[quarter]
        p_k = np.exp(psi - psi.max(-1, keepdims=True))
        p_k /= p_k.sum(-1, keepdims=True)
        k = (rng.random((S, E, N, 1)) > np.cumsum(p_k, -1)[:, :, None, :]).sum(-1) + 1
        ops = rng.integers(0, A, (S, E, N, K))
        drawn = np.arange(K) < k[..., None]
        keep = 1 / (1 + np.exp(-rho))
        keep_of_slot = np.take_along_axis(np.broadcast_to(keep[:, :, None, :], (S, E, N, A)),
                                          ops, -1)
        kept = (rng.random((S, E, N, K)) < keep_of_slot) & drawn
        planted = (kept & (ops == 0)).sum(-1)
        shared = effects + step_noise * rng.standard_normal((S, 1, 1, A))  # one G per step
        r = rng.standard_normal((S, E, N)) + (np.take_along_axis(
            np.broadcast_to(shared, (S, E, N, A)), ops, -1) * kept).sum(-1)
        r += heavy * np.sqrt(planted) * rng.standard_normal((S, E, N))
        flat = r.reshape(S, -1)
        w = ((flat - flat.mean(1, keepdims=True)) / (flat.std(1, keepdims=True) + 1e-8)
             ).reshape(S, E, N)
        has = planted > 0
        planted_w += w[has].sum()
        planted_w2 += (w[has] ** 2).sum()
        planted_n += has.sum()
        if clip_weights:
            w = np.clip(w, -clip_weights, clip_weights)
        g_psi, g_rho = reinforce_gradients(p_k, keep, k, ops, kept, w)
        rate = {"constant": lr, "cosine": lr * 0.5 * (1 + np.cos(np.pi * t / steps)),
                "inv_sqrt": lr / np.sqrt(max(1.0, t / 30))}[schedule]
        for name, param, grad in (("rho", rho, g_rho), ("psi", psi, g_psi)):
            m, v = moments[name]
            m *= b1
            m += (1 - b1) * grad
            v *= b2
            v += (1 - b2) * grad * grad
            step = (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + 1e-8)
            param -= rate * (step + weight_decay * param)
        if average_from is not None and t > average_from * steps:
            averaged += rho
            averaged_count += 1
    final = averaged / averaged_count if averaged_count else rho
    p_k = np.exp(psi - psi.max(-1, keepdims=True))
    p_k /= p_k.sum(-1, keepdims=True)
    keep = 1 / (1 + np.exp(-final))
    # P(an image gets op a), averaged over the samplers (the sampler's own formula).
    applied = ola_sampler.op_probability_from(p_k, keep).mean(1)
    rank = (applied < applied[:, :1]).sum(1) + 1
    ratio = applied[:, 0] / np.median(applied, 1)
    mean_w = planted_w / planted_n
    return {"lowest3": float(np.mean(rank <= 3)), "ratio06": float(np.mean(ratio <= 0.6)),
            "both": float(np.mean((rank <= 3) & (ratio <= 0.6))),
            "median_ratio": float(np.median(ratio)), "planted_mean_w": float(mean_w),
            "planted_std_w": float(np.sqrt(planted_w2 / planted_n - mean_w ** 2))}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=400, help="simulated runs per variant")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--step-noise", type=float, default=STEP_NOISE,
                        help="std of a per-step, per-op reward offset shared by the whole batch "
                             "(one G per step: the images' rewards are not independent)")
    args = parser.parse_args(argv)
    names = args.variants.split(",")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")
    if args.runs < 10:
        parser.error("--runs must be >= 10")
    if args.step_noise < 0:
        parser.error("--step-noise must be >= 0")
    se = 100 * np.sqrt(0.85 * 0.15 / args.runs)
    print(f"{args.runs} simulated runs per cell (standard error about {se:.1f} points at 85%), "
          f"step noise {args.step_noise}; success = among the 3 lowest / and also <= 0.6x the "
          "median op")
    print("| variant | 30 epochs: among 3 lowest | both | median ratio | 60 epochs: among 3 "
          "lowest | both | median ratio |")
    print("|---|---|---|---|---|---|---|")
    for name in names:
        cells = []
        for steps in (330, 660):
            out = simulate(steps=steps, runs=args.runs, seed=args.seed,
                           step_noise=args.step_noise, **VARIANTS[name])
            cells += [f"{100 * out['lowest3']:.0f}%", f"{100 * out['both']:.0f}%",
                      f"{out['median_ratio']:.2f}"]
            if name == "default" and steps == 330:
                calibration = out
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)
    if "default" in names:
        print(f"\ncalibration (default, 30 epochs): the planted op's normalized weight per applied "
              f"image, mean {calibration['planted_mean_w']:.3f}, std "
              f"{calibration['planted_std_w']:.2f}")


if __name__ == "__main__":
    main()
