"""Tests for savae_tf.objectives: estimators against closed forms, masks against ragged batches."""

import math

import numpy as np
import pytest
import tensorflow as tf

from savae_tf import distributions
from savae_tf import objectives


@pytest.fixture
def linear_gaussian_case(linear_gaussian_data):
  model, x = linear_gaussian_data(3, 0.8, 6, 0, [5, 6])
  exact = model.posterior(x)
  # The diagonal of the exact posterior (slightly widened): a good but imperfect proposal.
  mean = exact.mean()
  logvar = tf.math.log(tf.linalg.diag_part(exact.covariance())) + 0.3
  return model, x, mean, logvar


def test_iw_log_likelihood_converges_to_the_exact_log_marginal(linear_gaussian_case):
  model, x, mean, logvar = linear_gaussian_case
  exact = model.log_marginal(x)
  estimate = objectives.iw_log_likelihood(
      lambda z: model.log_likelihood(x, z), mean, logvar, 20000, tf.constant([1, 2]),
      chunk_size=512)
  np.testing.assert_allclose(estimate, exact, atol=5e-3)
  one_sample = objectives.iw_log_likelihood(
      lambda z: model.log_likelihood(x, z), mean, logvar, 1, tf.constant([1, 2]))
  assert np.mean(one_sample) < np.mean(estimate)  # more samples, tighter bound
  # The ELBO is below both the exact value and the IW estimate.
  assert np.all(model.elbo(x, mean, logvar) < exact)


def test_iw_log_likelihood_with_a_partial_last_chunk_counts_only_num_samples(linear_gaussian_case):
  model, x, mean, logvar = linear_gaussian_case
  fn = lambda z: model.log_likelihood(x, z)
  seed = distributions.ExampleSeeds(tf.constant([5, 8, 13, 21, 34, 55], tf.uint32))
  # 7 samples in chunks of 5 (one partial chunk) equal the log-mean-exp of samples 0..6; with
  # keys per example the chunking changes no draw.
  seven = objectives.iw_log_likelihood(fn, mean, logvar, 7, seed, chunk_size=5)
  z = distributions.sample(mean, logvar, seed, 7)
  weights = (fn(z) + distributions.prior(2, tf.float64).log_prob(z)
             - distributions.posterior(mean, logvar).log_prob(z))
  expected = tf.reduce_logsumexp(weights, 0) - math.log(7)
  np.testing.assert_allclose(seven, expected, rtol=1e-12)
  for chunk_size in (1, 3, 7, 50):
    np.testing.assert_allclose(
        objectives.iw_log_likelihood(fn, mean, logvar, 7, seed, chunk_size=chunk_size), expected,
        rtol=1e-12)


def test_iw_log_likelihood_rejects_zero_samples(linear_gaussian_case):
  model, x, mean, logvar = linear_gaussian_case
  with pytest.raises(tf.errors.InvalidArgumentError, match="num_samples must be >= 1"):
    objectives.iw_log_likelihood(lambda z: model.log_likelihood(x, z), mean, logvar, 0,
                                 tf.constant([1, 1]))


def test_mutual_information_matches_the_gaussian_closed_form():
  # Posterior means mu_n ~ N(0, a) across the data and a fixed posterior variance s: the aggregate
  # posterior is N(0, a + s), so I(x; z) = 1/2 log((a + s) / s) per dimension.
  rng = np.random.default_rng(0)
  a, s, n = 2.0, 0.5, 4000
  mean = tf.constant(rng.normal(size=(n, 1)) * math.sqrt(a))
  logvar = tf.fill([n, 1], tf.constant(math.log(s), tf.float64))
  z = distributions.sample(mean, logvar, tf.constant([1, 2]))
  mi = objectives.mutual_information(mean, logvar, z)
  assert float(mi) == pytest.approx(0.5 * math.log((a + s) / s), abs=0.04)
  # Computed a block of rows at a time, the same number.
  blocked = objectives.mutual_information(mean, logvar, z, max_floats=400000)  # 100 rows
  assert float(blocked) == pytest.approx(float(mi), rel=1e-12)


def test_mutual_information_is_near_zero_for_a_collapsed_posterior():
  # Every q(z | x) equal: I = 0, and the estimate is a Monte Carlo average of
  # log q(z) + H[q] over N draws, whose standard error is sqrt(D / 2 / N).
  n, d = 5000, 4
  zeros = tf.zeros([n, d], tf.float64)
  mi = objectives.mutual_information(zeros, zeros,
                                     distributions.sample(zeros, zeros, tf.constant([1, 2])))
  assert abs(float(mi)) < 4 * math.sqrt(d / 2 / n)


def test_active_units_counts_dimensions_above_the_threshold():
  assert int(objectives.active_units(tf.constant([0.5, 0.001, 0.02, 0.0]))) == 2
  assert int(objectives.active_units(tf.constant([0.5, 0.001, 0.02]), threshold=0.1)) == 1


def test_token_nll_masks_padding_and_matches_sentences_run_one_by_one():
  rng = np.random.default_rng(0)
  lengths = tf.constant([6, 3, 4])  # tokens incl. <s> and </s>; targets = length - 1
  logits = tf.constant(rng.normal(size=(3, 5, 7)), tf.float64)
  targets = tf.constant(rng.integers(0, 7, size=(3, 5)), tf.int32)
  mask = objectives.target_mask(lengths, 5)
  batched = objectives.token_nll(logits, targets, mask)
  np.testing.assert_array_equal(objectives.token_nll(logits, targets.numpy(), mask), batched)
  for i, length in enumerate(lengths.numpy()):
    n = length - 1
    alone = objectives.token_nll(logits[i:i + 1, :n], targets[i:i + 1, :n], tf.ones([1, n], bool))
    np.testing.assert_allclose(batched[i], alone[0], rtol=1e-12)
  log_probs = tf.nn.log_softmax(logits)
  by_hand = -sum(float(log_probs[1, t, targets[1, t]]) for t in range(2))
  assert float(batched[1]) == pytest.approx(by_hand, rel=1e-12)


def test_token_nll_has_the_fused_cross_entropys_first_and_second_derivatives_in_float64():
  """The refinement differentiates the NLL twice; the written-out form must agree with
  TensorFlow's fused kernel in both orders, padding included (and send nothing through it)."""
  rng = np.random.default_rng(1)
  logits = tf.constant(rng.normal(size=(3, 5, 7)) * 3, tf.float64)
  targets = tf.constant(rng.integers(0, 7, size=(3, 5)), tf.int32)
  mask = objectives.target_mask(tf.constant([6, 3, 4]), 5)
  weights = tf.constant(rng.normal(size=(3,)), tf.float64)
  direction = tf.constant(rng.normal(size=(3, 5, 7)), tf.float64)

  def fused(logits):
    nll = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=targets, logits=logits)
    return tf.reduce_sum(nll * tf.cast(mask, nll.dtype), axis=-1)

  def derivatives(nll_fn):
    with tf.GradientTape() as outer:
      outer.watch(logits)
      with tf.GradientTape() as inner:
        inner.watch(logits)
        value = tf.reduce_sum(nll_fn(logits) * weights)
      gradient = inner.gradient(value, logits)
      directional = tf.reduce_sum(gradient * direction)
    return value, gradient, outer.gradient(directional, logits)

  ours = derivatives(lambda x: objectives.token_nll(x, targets, mask))
  for a, b in zip(ours, derivatives(fused)):
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
  padded = ~mask.numpy()
  assert np.all(ours[1].numpy()[padded] == 0) and np.all(ours[2].numpy()[padded] == 0)


def test_pixel_nll_is_the_bernoulli_negative_log_likelihood_summed_over_pixels():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(2, 3, 4, 1))
  images = (rng.random((2, 3, 4, 1)) < 0.5).astype(np.float64)
  p = 1 / (1 + np.exp(-logits))
  expected = -np.sum(images * np.log(p) + (1 - images) * np.log(1 - p), axis=(1, 2, 3))
  np.testing.assert_allclose(objectives.pixel_nll(tf.constant(logits), tf.constant(images)),
                             expected, rtol=1e-10)
