"""Would a magnitude-free GAR tell the planted op apart better? At fixed checkpoints of a
digits destructive-op OLA run, under the uniform initial policy, the evidence each reward gives
about every op's keep logit (experiments/ola/README.md section 6g).

For each checkpoint and each of `--pairs` step pairs (batches 2i, 2i + 1 of the run's data
order): the images get configurations from the uniform policy and the standard pipeline, the
model takes the ordinary SGD step on them (the run's optimizer state), G is the next plain
batch's gradient at the new parameters, and each image's per-example gradient at the
checkpoint's parameters (frozen BatchNorm statistics, vmap) gives four rewards:

- ``dot``: GAR = <g_n, G> (OLA's);
- ``cos``: GAR / ||g_n|| (the cosine up to the constant ||G||);
- ``dot/|p-y|``: GAR / ||softmax - onehot||, a cheap stand-in for ||g_n|| (the last layer's
  gradient norm is ||p - y|| times the features' norm; Katharopoulos & Fleuret 2018 bound
  per-example gradient norms this way);
- ``dot/sqrt|p-y|``: half way.

Each is normalized over the batch (w), and each op's keep-logit evidence is the z of its
REINFORCE terms, sum over drawn slots of (kept - 1/2) w, pooled over the pairs. Printed: the
planted op's z and rank among the 15 ops (1 = most negative), the third most negative other
op's z (the op must beat it to end among the 3 lowest), and the std of the planted op's w.

    python -m gar_jax.main --config=configs/digits_ola_destructive.py --workdir=RUN \
        --config.seed=0 --config.checkpoint_every_steps=88 --config.keep_checkpoints=10
    python experiments/ola/probe_rewards.py RUN --seed 0 --steps 88,264 --pairs 100

``--target-batches 1,4,16``: instead, GAR (``dot``) against G averaged over k plain batches at
the same parameters (the next batch and k - 1 others of the data order), same images and
configurations for every k: how much a less noisy target sharpens the evidence (section 6i;
``ola.target_ema`` is the in-loop version, an average over past steps). ``--decompose``: GAR
split into the next batch's gradient before the step and the step's response (section 6i).
``--control``: also each reward minus the same image's own reward without the learned ops
(the standard pipeline alone, the same crop and flip): a per-image REINFORCE baseline, which
does not depend on the sampled ops and so leaves the policy gradient's expectation unchanged
(section 6j). ``--response-batch 4,8,16``: also the response taken on the first s images of
the plain batch only, <g_n, G_s(θ_t+1) - G_s(θ_t)> (two gradients of s images instead of one of
the whole batch: what a cheap response would see), and GAR plus each response, each normalized
over the batch first (section 6k).
"""
from __future__ import annotations

import argparse
import os
import runpy

import jax
import jax.numpy as jnp
import numpy as np

from gar_jax import batchnorm, gar
from gar_jax.augment import ola_sampler
from gar_jax.methods import ola
from gar_jax.models import variables
from gar_jax.train import engine, steps
from gar_jax.train.checkpoint import Checkpointer

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def unit(r: np.ndarray) -> np.ndarray:
    """Rewards [pairs, B] normalized over each pair's batch (population std), as OLA's default."""
    return (r - r.mean(1, keepdims=True)) / r.std(1, keepdims=True)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="workdir of a configs/digits_ola_destructive.py run")
    parser.add_argument("--seed", type=int, required=True, help="the run's config.seed")
    parser.add_argument("--steps", required=True, help="checkpoint steps, comma separated")
    parser.add_argument("--pairs", type=int, default=100)
    parser.add_argument("--target-batches", default="1",
                        help="comma list of k: instead, GAR against G averaged over k plain "
                             "batches (the next one and k - 1 others, at the same parameters); "
                             "1 alone prints the four rewards above")
    parser.add_argument("--decompose", action="store_true",
                        help="instead, split GAR = <g_n, G(θ_t+1)> into <g_n, G(θ_t)> (the next "
                             "batch's gradient before the step) and the step's response "
                             "<g_n, G(θ_t+1) - G(θ_t)>")
    parser.add_argument("--control", action="store_true",
                        help="also each reward minus the same image's reward without the "
                             "learned ops (its standard pipeline, same crop and flip): a "
                             "per-image baseline that does not depend on the sampled ops")
    parser.add_argument("--response-batch", default="",
                        help="comma list of s (implies --decompose): also the response on the "
                             "plain batch's first s images, G_s(θ_t+1) - G_s(θ_t), and GAR plus it "
                             "(each normalized first)")
    parser.add_argument("--fd", default="",
                        help="comma list of δ: instead, GAR by a one-sided finite difference of "
                             "the per-example losses, (ℓ_n(θ + εG) - ℓ_n(θ)) / ε with ε = "
                             "δ ||θ|| / ||G|| (a step of δ ||θ||), against the exact GAR "
                             "(correlation, relative error, planted op's z)")
    args = parser.parse_args(argv)
    directory = os.path.join(args.run, "checkpoints")
    if not os.path.isdir(directory):
        parser.error(f"{directory} does not exist")
    config = runpy.run_path(os.path.join(REPO, "configs", "digits_ola_destructive.py"))[
        "get_config"]()
    config.seed = args.seed
    space = ola.make_space(config)
    setup = engine.build(config)
    template = ola.init_state(setup.state, config, space, setup.schedule)
    checkpoints = Checkpointer(directory, max_to_keep=100)
    wanted = [int(s) for s in args.steps.split(",")]
    missing = sorted(set(wanted) - set(checkpoints.all_steps()))
    if missing:
        parser.error(f"no checkpoint at steps {missing} (have {checkpoints.all_steps()})")
    grad_fn = steps.make_grad_fn(setup.model, setup.mesh)
    uniform = ola_sampler.init_params(len(space), num_levels=space.num_levels,
                                      max_ops=config.ola.max_ops)
    planted = space.op_names.index("sample_pairing")
    ks = sorted({int(k) for k in args.target_batches.split(",")})
    if ks[0] < 1:
        parser.error("--target-batches must be positive")
    kmax = ks[-1]
    fds = [float(e) for e in args.fd.split(",")] if args.fd else []
    sizes = [int(s) for s in args.response_batch.split(",")] if args.response_batch else []
    if sizes:
        args.decompose = True
        if args.control or args.fd or ks != [1]:
            parser.error("--response-batch goes with none of --control, --fd, --target-batches")
        if not all(0 < s <= config.batch_size for s in sizes):
            parser.error(f"--response-batch sizes must be in 1..{config.batch_size}")

    @jax.jit
    def probe(state, key, images, labels, plain_images, plain_labels):
        k_policy, k_plain, k_drop = jax.random.split(key, 3)
        raw = images
        images, sample = ola_sampler.augment(uniform, space, k_policy, images,
                                             standard=setup.augment)
        # The same images through the standard pipeline alone, with the key `augment` gives it
        # (ola_sampler._apply: the second half of the second half), so the same crop and flip.
        standard_key = jax.random.split(jax.random.split(k_policy)[1])[1]
        unaugmented = setup.augment(standard_key, raw)
        grads, stats, _ = grad_fn(state.params, state.batch_stats, images, labels, k_drop)
        mid = steps.apply_gradients(state, grads, stats, setup.tx)
        keys = jnp.concatenate([k_plain[None], jax.random.split(k_plain, kmax - 1)])
        plain = jax.vmap(setup.augment)(keys, plain_images)
        g_all = jax.vmap(lambda x, y: grad_fn(mid.params, mid.batch_stats, x, y, k_drop)[0])(
            plain, plain_labels)
        targets = [jax.tree.map(lambda t: t[:k].mean(0), g_all) for k in ks]
        if args.decompose:  # the next batch's gradient before the step (θ_t): no response
            targets.append(grad_fn(state.params, state.batch_stats, plain[0], plain_labels[0],
                                   k_drop)[0])
        for s in sizes:  # the response on the plain batch's first s images only
            x, y = plain[0][:s], plain_labels[0][:s]
            after = grad_fn(mid.params, mid.batch_stats, x, y, k_drop)[0]
            before = grad_fn(state.params, state.batch_stats, x, y, k_drop)[0]
            targets.append(jax.tree.map(jnp.subtract, after, before))
        own = variables(state.params, state.batch_stats)
        per_example = batchnorm.frozen_bn_loss_fn(setup.model, own, {"image": images,
                                                                     "label": labels},
                                                  steps.cross_entropy, train=True)

        def one(p, x, y):
            return per_example(p, {"image": x[None], "label": y[None]})[0]

        flat = lambda t: [a.reshape(a.shape[0], -1) for a in jax.tree.leaves(t)]

        def alignments(x):
            g = jax.vmap(jax.grad(one), in_axes=(None, 0, 0))(state.params, x, labels)
            return g, [sum(jnp.sum(a * b.reshape(1, -1), 1)
                           for a, b in zip(flat(g), jax.tree.leaves(t))) for t in targets]

        g, dots = alignments(images)
        if args.fd:  # [exact, then OLA's finite difference per δ] against G(θ_t+1)
            batch = {"image": images, "label": labels}
            base = per_example(state.params, batch)  # (OLA takes them from step t's forward)
            dots += [gar.finite_difference_alignment(per_example, state.params, batch,
                                                     targets[0], step=rel, base_losses=base)
                     for rel in fds]
        if args.control:  # [aug targets..., unaugmented targets...]
            dots = dots + alignments(unaugmented)[1]
        norm = jnp.sqrt(sum(jnp.sum(a * a, 1) for a in flat(g)))
        logits = setup.model.apply(own, images, train=True, mutable=["batch_stats"])[0]
        p_minus_y = jnp.linalg.norm(jax.nn.softmax(logits) - jax.nn.one_hot(
            labels, logits.shape[-1]), axis=-1)
        return jnp.stack(dots), norm, p_minus_y, sample.op_indices, sample.active, sample.num_ops

    for step in wanted:
        state, _ = checkpoints.restore(template, step)
        rows = []
        for i in range(args.pairs):
            a = setup.train_data.batch(2 * i)
            extra = 2 * args.pairs + (kmax - 1) * i  # batches no pair uses
            plain = [setup.train_data.batch(2 * i + 1)] + [
                setup.train_data.batch(extra + j) for j in range(kmax - 1)]
            rows.append([np.asarray(x) for x in probe(
                state, jax.random.PRNGKey(1000 * step + i), a["image"], a["label"],
                np.stack([b["image"] for b in plain]), np.stack([b["label"] for b in plain]))])
        dots, norm, p_minus_y, ops, active, num_ops = (np.stack([r[j] for r in rows])
                                                       for j in range(6))
        drawn = np.arange(ops.shape[-1]) < num_ops[..., None]
        if fds:
            exact = dots[:, 0]
            rewards = {"dot G(t+1)": exact}
            for j, eps in enumerate(fds):
                fd = dots[:, 1 + j]
                rewards[f"fd d {eps:g}"] = fd
                corr = np.mean([np.corrcoef(a, b)[0, 1] for a, b in zip(exact, fd)])
                rel = np.linalg.norm(fd - exact) / np.linalg.norm(exact)
                print(f"step {step} fd δ {eps:g}: correlation with GAR per step (mean) "
                      f"{corr:.6f}, relative error {rel:.2e}", flush=True)
        elif args.control:
            n = len(ks) + args.decompose  # targets per image set
            dots, base = dots[:, :n], dots[:, n:]
            rewards = {"dot G(t+1)": dots[:, 0], "dot - own": dots[:, 0] - base[:, 0]}
            if args.decompose:
                response = dots[:, 0] - dots[:, -1]
                rewards["response"] = response
                rewards["response - own"] = response - (base[:, 0] - base[:, -1])
        elif args.decompose:
            before = dots[:, len(ks)]  # targets: G(θ_t+1), G(θ_t), then one per size
            rewards = {"dot G(t+1)": dots[:, 0], "dot G(t)": before,
                       "dot G(t+1)-G(t)": dots[:, 0] - before}
            for j, s in enumerate(sizes):
                rewards[f"response s={s}"] = dots[:, len(ks) + 1 + j]
                rewards[f"GAR + resp s={s}"] = unit(dots[:, 0]) + unit(dots[:, len(ks) + 1 + j])
        elif ks == [1]:
            dot = dots[:, 0]
            rewards = {"dot": dot, "cos": dot / (norm + 1e-12),
                       "dot/|p-y|": dot / (p_minus_y + 1e-6),
                       "dot/sqrt|p-y|": dot / np.sqrt(p_minus_y + 1e-6)}
        else:
            rewards = {f"dot G x{k}": dots[:, j] for j, k in enumerate(ks)}
        for name, r in rewards.items():
            w = unit(r)
            z = []
            for op in range(len(space)):
                terms = ((active - 0.5) * ((ops == op) & drawn) * w[..., None]).sum(-1)
                z.append(terms.sum() / np.sqrt((terms ** 2).sum()))
            z = np.array(z)
            others = np.sort(np.delete(z, planted))
            lowest = ", ".join(f"{space.op_names[j]} {z[j]:.1f}" for j in np.argsort(z)[:4])
            spread = np.std(w[((ops == planted) & active).any(-1)])
            print(f"step {step} {name:14s} planted z {z[planted]:6.2f} rank "
                  f"{int((z < z[planted]).sum()) + 1:2d}  3rd other {others[2]:6.2f}  std w "
                  f"{spread:.2f}  lowest: {lowest}", flush=True)


if __name__ == "__main__":
    main()
