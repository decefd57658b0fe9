"""Test configuration: quiet TensorFlow, deterministic ops, CPU only."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import numpy as np
import pytest


@pytest.fixture
def linear_gaussian_data():
  """Factory: a float64 LinearGaussian with seeded N(0, 1) weights and a batch drawn from it."""
  import tensorflow as tf
  from savae_tf.networks.linear_gaussian import LinearGaussian

  def make(data_dim, noise_std, batch, weight_seed, data_seed):
    model = LinearGaussian(data_dim=data_dim, latent_dim=2, noise_std=noise_std, dtype="float64")
    rng = np.random.default_rng(weight_seed)
    model.kernel.assign(rng.normal(size=(2, data_dim)))
    model.bias.assign(rng.normal(size=(data_dim,)))
    x, _ = model.sample(batch, tf.constant(data_seed))
    return model, x

  return make


@pytest.fixture
def text_corpus(tmp_path):
  """Factory: writes a tiny train/val/test.txt corpus into tmp_path / name; returns the path."""

  def make(name="data", seed=0):
    rng = np.random.default_rng(seed)
    words = "the a cat dog sat ran on mat big small red".split()
    directory = tmp_path / name
    directory.mkdir(exist_ok=True)
    for split, n in [("train.txt", 160), ("val.txt", 24), ("test.txt", 24)]:
      lines = [" ".join(rng.choice(words, rng.integers(2, 7))) for _ in range(n)]
      (directory / split).write_text("\n".join(lines) + "\n")
    return directory

  return make
