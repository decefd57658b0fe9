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


def test_batch_rows_draw_each_example_what_the_whole_batch_would():
  # A batch of 7 split over replicas as rows [0, 1, 2] and [3..6]: each part's draws are the
  # whole batch's rows, for normals ([batch, latent] and [samples, batch, latent]), uniforms and
  # the sub-streams made by fold_in and split.
  seed = tf.constant([5, 11])
  parts = [tf.constant([0, 1, 2]), tf.constant([3, 4, 5, 6])]
  whole = {"normal": distributions.standard_normal(seed, [7, 3]),
           "samples": distributions.standard_normal(distributions.fold_in(seed, 2), [4, 7, 3],
                                                    first_sample=8),
           "uniform": distributions.uniform(distributions.split(seed, 2)[1], [7, 5, 2])}
  for rows in parts:
    part = distributions.BatchRows(seed, rows, tf.constant(7))
    n = int(tf.size(rows))
    drawn = {"normal": distributions.standard_normal(part, [n, 3]),
             "samples": distributions.standard_normal(distributions.fold_in(part, 2), [4, n, 3],
                                                      first_sample=8),
             "uniform": distributions.uniform(distributions.split(part, 2)[1], [n, 5, 2])}
    for name, axis in (("normal", 0), ("samples", 1), ("uniform", 0)):
      np.testing.assert_array_equal(drawn[name], tf.gather(whole[name], rows, axis=axis), name)
