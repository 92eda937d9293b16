"""gar_jax: in-loop meta-learning with the Gradient-Alignment Reward, in JAX/Flax."""
from setuptools import find_packages, setup

setup(
    name="gar_jax",
    version="0.1.0",
    description=("In-loop meta-learning with Gradient-Alignment Reward (GAR) and "
                 "online-learned augmentation (OLA) in JAX/Flax."),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["gar_jax", "gar_jax.*"]),
    package_data={"gar_jax.augment": ["data/*.json"]},  # the published FAA and DRA policies
    install_requires=[
        "jax>=0.7",
        "flax>=0.12,<=0.12.8",
        "optax>=0.2.4",
        "chex>=0.1.88",
        "ml-collections>=1.0",
        "dm-pix>=0.4.3",
        "tensorflow-datasets>=4.9.7",
        "orbax-checkpoint>=0.11",
        "scikit-learn>=1.3",
        "matplotlib>=3.7",
        "tqdm>=4.66",
        "absl-py>=2.0",
        "numpy>=1.26",
        "pillow>=10.0",
        "tensorboardX>=2.6",
        "optuna>=4",  # Fast AutoAugment's TPE search (gar_jax/methods/faa.py)
    ],
    extras_require={
        # Tests, the notebook test and the Pillow references.
        "test": ["pytest>=8", "pytest-xdist>=3.5", "nbformat>=5.9", "nbclient>=0.10",
                 "ipykernel>=6.29"],
        # Preparing the real tfds datasets (CIFAR-10/100, SVHN) once needs TensorFlow.
        "prepare": ["tensorflow>=2.16"],
        # NVIDIA GPUs.
        "cuda": ["jax[cuda12]>=0.7"],
        # Google Cloud TPUs.
        "tpu": ["jax[tpu]>=0.7"],
    },
)
