"""DRA on digits with the planted destructive op added to its 16 ops: ``sample_pairing`` at
alpha 1 replaces the image by its batch neighbour (spaces.DESTRUCTIVE_OP, as in OLA's
digits_ola_destructive.py). The search should drive its probability softmax(W) down
(search/policy_weights.png; results.json learned_policy.op_probability["sample_pairing"]).

The search draws ops per image (``dra.search.per_image``: every op runs on every image, so every
op's W gets a gradient from every image at every step), not per batch as the authors' default
(one op per layer per batch: in 100 search steps each op is drawn ~6 times per layer). Per batch,
the destructive op only drifted mildly below uniform (softmax(W) 0.048-0.055 vs 1/17 = 0.059, 2
seeds); per image it ends the lowest of the 17 ops (experiments/dra/README.md). Per image costs
17 augmentations per image, cheap on 8x8 digits, expensive at 32x32 next to a small net.

``python -m gar_jax.main --config=configs/digits_dra_destructive.py --workdir=runs/digits_dra_d``
"""
from gar_jax.methods.dra import digits_config


def get_config():
    config = digits_config(destructive_op=True)
    config.dra.search.per_image = True
    return config
