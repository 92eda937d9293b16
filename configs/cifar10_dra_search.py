"""The paper's DRA search on CIFAR-10 (search_CIFAR.py), then Table 2 training with the result.

Search (workdir/search): WRN-28-10 (dropout 0.3), 8% of the training set cut into halves (2000
images for the weights, 2000 for the policy), 20 epochs at batch 128; per step a policy update
(CE(aug) + 1.0 KL(clean || aug), AdamW lr 5e-3, b1 0.5, wd 0; hard Gumbel-softmax tau 0.5, one
op, apply probability, magnitude noise and sign drawn per image as the authors' tf.map_fn, the
straight-through term at each op's input; the policy half gets no crop/flip) and a weight update
(SGD Nesterov lr 0.1 cosine, wd 5e-4, clip 5). Training (workdir/train): WRN-28-10, 200 epochs
with the searched policy, crop/flip -> DRA -> Cutout.

``python -m gar_jax.main --config=configs/cifar10_dra_search.py --workdir=runs/cifar10_dra_search``
"""
from gar_jax.methods.dra import cifar_config


def get_config():
    return cifar_config("cifar10", "search")
