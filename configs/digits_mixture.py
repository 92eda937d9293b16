"""Learning a data mixture online on digits (offline; a run of seconds to minutes on a CPU).

Usage: ``python -m gar_jax.main --config=configs/digits_mixture.py --workdir=DIR`` (GAR on the
noisy-sources scenario), or ``--config=configs/digits_mixture.py:<method>[,<scenario>]`` for
another method / scenario, e.g. ``configs/digits_mixture.py:odm`` or
``configs/digits_mixture.py:gar_target,target``. Methods: gar, gar_target, uniform,
proportional, odm, dga, nslr, oracle; scenarios: noisy (clean test set; random-label, 50%-noise,
corrupted, duplicated and shifted sources among clean ones), target (the test set is the shifted
domain). The benchmark over all of them: experiments/mixture/run.py.
"""
import ml_collections

METHODS = ("gar", "gar_target", "uniform", "proportional", "odm", "dga", "nslr", "oracle")
SCENARIOS = ("noisy", "target")


def get_config(arg: str = ""):
    parts = [p.strip() for p in arg.split(",") if p.strip()] if arg else []
    c = ml_collections.ConfigDict()
    c.experiment = "mixture"        # the method (its module: methods/mixture.py)
    c.scenario = parts[1] if len(parts) > 1 else "noisy"   # noisy | target
    c.method = parts[0] if parts else "gar"
    c.net = "fc"                    # toy nets: fc | fcbn | cnnbn (gar_jax.models.toy)
    c.seed = 0                      # the run's seed (init, sampling); the data are fixed
    c.data_seed = 0                 # how the digits are cut into sources

    # Training the net: SGD with Nesterov momentum, constant learning rate.
    c.batch_size = 64
    c.num_steps = 600
    c.steps_per_eval = 100          # test accuracy every this many steps (the engine's "epoch")
    c.learning_rate = 0.05
    c.momentum = 0.9
    c.weight_decay = 5e-4

    # Learning the mixture (gar, gar_target, nslr): REINFORCE on softmax logits over the
    # sources, Adam with gradient value clipping. The fields have OLA's names (the ola section
    # of configs/cifar10_ola.py, and of configs/toy_split.py): the same learner, over sources.
    c.mixture = ml_collections.ConfigDict()
    # One reward pair (and one mixture update) per `reward_every` SGD steps (>= 2): the cost of
    # learning the mixture is one alignment per reward_every steps.
    # GAR (method "gar"): 4, with the layer-wise rewards of 32 of the 64 examples and learning
    # rate 0.06 (chosen on seeds 100-104 for the cost goal: experiments/mixture/README.md "Cost").
    c.mixture.reward_every = 4 if c.method == "gar" else 2
    c.mixture.gar_method = "layerwise" if c.method == "gar" else "jvp"  # jvp | vmap | layerwise
    # GAR rewards for the first this many examples of batch t (its examples are i.i.d. draws:
    # a uniformly random subset); 0 = all of them.
    c.mixture.reward_examples = 32 if c.method == "gar" else 0
    # Adam on the mixture logits. gar 0.06 at its default (reward_every 4, 32 rewarded
    # examples; seeds 100-104; 0.03 at the old reward_every 2 with all 64, seeds 100-101: 0.1
    # there could lock onto one source, even a noisy one); gar_target 0.1 (0.03 found the
    # target's source less often); nslr 0.03.
    c.mixture.learning_rate = {"gar_target": 0.1, "gar": 0.06}.get(c.method, 0.03)
    c.mixture.b1 = 0.9              # Adam's beta1
    c.mixture.clip = 5.0            # clip meta-gradient values to [-5, 5]; 0 = off
    c.mixture.meta_every = 1        # meta-gradients averaged over this many updates per step
    c.mixture.nslr_decay = 0.9      # NSLR's across-step normalizer (EMA decay)

    # Baselines.
    c.odm = ml_collections.ConfigDict()
    c.odm.reward_scale = 0.1        # ODM: reward = loss x this (the authors' code: /10)
    c.odm.decay = 1.0               # ODM: 1 = cumulative EXP3 estimates
    c.dga = ml_collections.ConfigDict()
    c.dga.learning_rate = 0.3       # DGA: exponentiated-gradient step (0.3, 1, 3 tried on
                                    # seeds 100-101)
    c.dga.ema = 0.9                 # DGA: EMA of the weights that are sampled
    c.dga.probe = 8                 # DGA: probe examples per source per update

    c.xla_opt_level = 1             # compile fast; these programs are tiny
    c.checkpoint_every_steps = 300
    c.log_every_steps = 100
    c.progress_bar = True
    return c
