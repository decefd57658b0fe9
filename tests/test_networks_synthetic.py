"""Tests for savae_tf.networks.synthetic."""

import keras
import numpy as np
import tensorflow as tf

from savae_tf import objectives
from savae_tf.networks.synthetic import SyntheticGenerator


def small_generator(init_scale=1.0):
  keras.utils.set_random_seed(0)
  return SyntheticGenerator(vocab_size=9, embed_dim=5, hidden_dim=6, mlp_dim=7, latent_dim=2,
                            init_scale=init_scale)


def test_sample_starts_with_the_start_token_and_replays_with_a_seed():
  generator = small_generator()
  z = tf.random.stateless_normal([4, 2], [1, 1])
  a = generator.sample(z, 5, tf.constant([3, 4]))
  b = generator.sample(z, 5, tf.constant([3, 4]))
  assert a.shape == (4, 6)
  np.testing.assert_array_equal(a[:, 0], [9] * 4)
  assert np.all((a[:, 1:].numpy() >= 0) & (a[:, 1:].numpy() < 9))
  np.testing.assert_array_equal(a, b)


def test_prepare_does_not_depend_on_z_and_logits_do():
  generator = small_generator()
  tokens = generator.sample(tf.zeros([3, 2]), 4, tf.constant([1, 2]))
  context = generator.prepare(tokens)
  assert context.shape == (3, 4, 6)
  z1, z2 = tf.zeros([3, 2]), tf.ones([3, 2])
  assert float(tf.reduce_max(tf.abs(generator.logits(context, z1)
                                    - generator.logits(context, z2)))) > 1e-3
  np.testing.assert_allclose(generator(tokens, z1), generator.logits(context, z1), rtol=1e-6)


def test_oracle_scale_makes_the_conditional_far_from_uniform():
  # With U(-1, 1) weights the oracle's conditionals are peaked; with a small init they are not.
  z = tf.random.stateless_normal([64, 2], [2, 2])
  nll = {}
  for scale in (1.0, 0.01):
    generator = small_generator(scale)
    tokens = generator.sample(z, 5, tf.constant([5, 5]))
    logits = generator(tokens, z)
    nll[scale] = float(tf.reduce_mean(objectives.token_nll(
        logits, tokens[:, 1:], tf.ones([64, 5], bool))))
  assert abs(nll[0.01] - 5 * np.log(9)) < 0.05
  assert nll[1.0] < nll[0.01] - 0.5


def test_config_round_trip():
  generator = small_generator()
  clone = SyntheticGenerator.from_config(generator.get_config())
  assert clone.get_config() == generator.get_config()


def test_generator_serves_as_the_decoder_of_a_savae_model():
  from savae_tf.model import SemiAmortizedVAE, SVIConfig
  from savae_tf.networks.text import LSTMEncoder
  generator = small_generator(init_scale=None)
  z = tf.random.stateless_normal([8, 2], [3, 3])
  tokens = generator.sample(z, 5, tf.constant([1, 1]))
  data = {"tokens": tokens, "lengths": tf.fill([8], 6)}
  model = SemiAmortizedVAE(generator, LSTMEncoder(10, 5, 6, 2), mode="savae", latent_dim=2,
                           svi_config=SVIConfig(steps=2))
  model.compile(optimizer=keras.optimizers.Adam(1e-3))
  before = [v.numpy().copy() for v in generator.trainable_variables]
  logs = model.train_step(data)
  assert np.isfinite(float(logs["loss"]))
  assert all(np.abs(b - v.numpy()).max() > 0 for b, v in zip(before, generator.trainable_variables))
