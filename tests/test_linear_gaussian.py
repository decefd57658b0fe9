"""Tests for savae_tf.networks.linear_gaussian: its closed forms against Monte Carlo and TFP."""

import numpy as np
import tensorflow as tf

from savae_tf import distributions
from savae_tf.networks.linear_gaussian import LinearGaussian


def test_log_marginal_equals_elbo_at_the_exact_posterior_when_it_is_diagonal():
  model = LinearGaussian(data_dim=3, latent_dim=2, noise_std=1.0, dtype="float64")
  # Orthogonal columns of W make the exact posterior diagonal, so the ELBO is tight there.
  model.kernel.assign([[2.0, 0.0, 0.0], [0.0, 0.5, 0.0]])
  x = tf.constant([[0.3, -1.0, 2.0], [1.5, 0.2, -0.4]], tf.float64)
  exact = model.posterior(x)
  mean = exact.mean()
  logvar = tf.math.log(tf.linalg.diag_part(exact.covariance()))
  np.testing.assert_allclose(model.elbo(x, mean, logvar), model.log_marginal(x), rtol=1e-12)


def test_elbo_is_a_lower_bound_and_matches_monte_carlo(linear_gaussian_data):
  model, x = linear_gaussian_data(4, 0.7, 5, 5, [1, 2])
  mean = tf.constant(np.random.default_rng(0).normal(size=(5, 2)), tf.float64)
  logvar = tf.fill([5, 2], tf.constant(-0.5, tf.float64))
  elbo = model.elbo(x, mean, logvar)
  assert np.all(elbo < model.log_marginal(x))
  z = distributions.sample(mean, logvar, tf.constant([3, 4]), num_samples=100000)
  log_likelihood = model.log_likelihood(x, z)
  mc = tf.reduce_mean(log_likelihood, 0) - distributions.kl_to_prior(mean, logvar)
  standard_error = tf.math.reduce_std(log_likelihood, 0) / np.sqrt(100000)
  assert np.all(np.abs(mc - elbo) < 5 * standard_error)


def test_log_marginal_matches_the_exact_bayes_identity(linear_gaussian_data):
  # log p(x) = log p(x | z) + log p(z) - log p(z | x) for any z.
  model, x = linear_gaussian_data(4, 0.7, 5, 5, [1, 2])
  z = tf.constant(np.random.default_rng(1).normal(size=(5, 2)), tf.float64)
  identity = (model.log_likelihood(x, z) + distributions.prior(2, tf.float64).log_prob(z)
              - model.posterior(x).log_prob(z))
  np.testing.assert_allclose(model.log_marginal(x), identity, rtol=1e-10)


def test_config_round_trip():
  model = LinearGaussian(data_dim=4, latent_dim=2, noise_std=0.3)
  clone = LinearGaussian.from_config(model.get_config())
  assert (clone.data_dim, clone.latent_dim, clone.noise_std) == (4, 2, 0.3)
