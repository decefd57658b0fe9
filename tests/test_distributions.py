"""Tests for savae_tf.distributions."""

import numpy as np
import pytest
import tensorflow as tf

from savae_tf import distributions


@pytest.fixture
def params():
  rng = np.random.default_rng(0)
  return (tf.constant(rng.normal(size=(4, 3)), tf.float64),
          tf.constant(rng.normal(size=(4, 3)), tf.float64))


def test_kl_to_prior_matches_tfp(params):
  mean, logvar = params
  expected = distributions.tfd.kl_divergence(
      distributions.posterior(mean, logvar), distributions.prior(3, tf.float64))
  kl = distributions.kl_to_prior(mean, logvar)
  assert kl.shape == [4]
  np.testing.assert_allclose(kl, expected, rtol=1e-12)


def test_kl_is_zero_at_the_prior():
  np.testing.assert_allclose(distributions.kl_to_prior(tf.zeros([2, 5]), tf.zeros([2, 5])),
                             [0.0, 0.0])


def test_sample_replays_with_the_same_seed_and_differs_across_steps(params):
  mean, logvar = params
  seed = tf.constant([3, 4])
  a = distributions.sample(mean, logvar, distributions.step_seed(seed, 2))
  b = distributions.sample(mean, logvar, distributions.step_seed(seed, 2))
  c = distributions.sample(mean, logvar, distributions.step_seed(seed, 3))
  np.testing.assert_array_equal(a, b)
  assert np.max(np.abs(a - c)) > 0.1


def test_sample_has_the_posterior_moments(params):
  mean, logvar = params
  z = distributions.sample(mean, logvar, tf.constant([1, 2]), num_samples=200000)
  assert z.shape == [200000, 4, 3]
  np.testing.assert_allclose(tf.reduce_mean(z, 0), mean, atol=0.03)
  np.testing.assert_allclose(tf.math.reduce_variance(z, 0), tf.exp(logvar), rtol=0.03)


def test_sample_is_reparameterised(params):
  mean, logvar = params
  with tf.GradientTape(persistent=True) as tape:
    tape.watch([mean, logvar])
    z = distributions.sample(mean, logvar, tf.constant([5, 6]))
  eps = (z - mean) * tf.exp(-0.5 * logvar)
  np.testing.assert_allclose(tape.gradient(z, mean), np.ones(mean.shape))
  np.testing.assert_allclose(tape.gradient(z, logvar), 0.5 * tf.exp(0.5 * logvar) * eps)


def test_posterior_log_prob_is_the_diagonal_gaussian_density(params):
  mean, logvar = params
  z = tf.zeros([4, 3], tf.float64)
  expected = tf.reduce_sum(
      -0.5 * (np.log(2 * np.pi) + logvar + tf.square(mean) / tf.exp(logvar)), -1)
  np.testing.assert_allclose(distributions.posterior(mean, logvar).log_prob(z), expected)
