"""Tests for savae_tf.data.synthetic: the oracle, its samples and its true NLL."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from savae_tf import objectives
from savae_tf.data import synthetic
from savae_tf.networks.synthetic import SyntheticGenerator


def test_oracle_is_a_frozen_function_of_its_seed():
  a, b, c = synthetic.make_oracle(1), synthetic.make_oracle(1), synthetic.make_oracle(2)
  assert not a.trainable_variables
  for va, vb, vc in zip(a.weights, b.weights, c.weights):
    np.testing.assert_array_equal(va, vb)
    bound = np.full(va.shape, synthetic.ORACLE_SCALE)
    if va is a.hidden.kernel:
      bound[-2:] = synthetic.ORACLE_LATENT_SCALE  # the weights read by z
      assert np.abs(va.numpy()[-2:]).max() > synthetic.ORACLE_SCALE
    assert np.all(np.abs(va.numpy()) <= bound)
  assert any(np.any(va.numpy() != vc.numpy()) for va, vc in zip(a.weights, c.weights))


def test_splits_have_the_documented_shapes_and_differ():
  data = synthetic.make_synthetic_data(seed=7, num_train=20, num_valid=5, num_test=6)
  train, test = data.splits["train"], data.splits["test"]
  assert train["tokens"].shape == (20, 6) and test["tokens"].shape == (6, 6)
  assert np.all(train["tokens"][:, 0] == 1000) and np.all(train["tokens"][:, 1:] < 1000)
  np.testing.assert_array_equal(train["lengths"], 6)
  assert not np.array_equal(train["tokens"][:6], test["tokens"])
  again = synthetic.make_synthetic_data(seed=7, num_train=20, num_valid=5, num_test=6)
  np.testing.assert_array_equal(again.splits["test"]["tokens"], test["tokens"])
  with pytest.raises(ValueError, match="at least one"):
    synthetic.make_synthetic_data(num_test=0)


def test_true_nll_by_quadrature_matches_importance_sampling_from_the_prior():
  keras.utils.set_random_seed(0)
  generator = SyntheticGenerator(vocab_size=7, embed_dim=4, hidden_dim=5, mlp_dim=6,
                                 init_scale=1.0)
  tokens = generator.sample(tf.random.stateless_normal([6, 2], [1, 1]), 4, tf.constant([2, 2]))
  quadrature, grid_error = synthetic.true_nll(generator, tokens, grid_size=41)
  context = generator.prepare(tokens)
  targets, mask = tokens[:, 1:], tf.ones([6, 4], bool)

  def log_likelihood(z):
    samples = tf.shape(z)[0]
    logits = generator.logits(tf.tile(context, [samples, 1, 1]), tf.reshape(z, [-1, 2]))
    nll = objectives.token_nll(logits, tf.tile(targets, [samples, 1]),
                               tf.tile(mask, [samples, 1]))
    return -tf.reshape(nll, [samples, 6])

  sampled = -objectives.iw_log_likelihood(log_likelihood, tf.zeros([6, 2]), tf.zeros([6, 2]),
                                          40000, tf.constant([3, 3]), chunk_size=2000)
  np.testing.assert_allclose(quadrature, sampled, atol=0.02)
  assert grid_error < 1e-2


def test_sequence_batches_yield_tokens_and_lengths_and_resume_mid_epoch():
  data = synthetic.make_synthetic_data(seed=1, num_train=10, num_valid=1, num_test=1)
  batches = synthetic.SequenceBatches(data.splits["train"], 4, shuffle_seed=3)
  epoch = list(batches.dataset(1).as_numpy_iterator())
  assert [b["tokens"].shape[0] for b in epoch] == [4, 4, 2] and len(batches) == 3
  assert set(epoch[0]) == {"tokens", "lengths", "rows"}
  # Every sequence once per epoch, in another order each epoch; a resumed epoch is its tail.
  rows = np.concatenate([b["tokens"] for b in epoch])
  np.testing.assert_array_equal(np.sort(rows, axis=0),
                                np.sort(data.splits["train"]["tokens"], axis=0))
  assert not np.array_equal(batches.order(0), batches.order(1))
  tail = list(batches.dataset(1, start=1).as_numpy_iterator())
  np.testing.assert_array_equal(np.concatenate([b["tokens"] for b in tail]), rows[4:])
  assert {k: v.shape for k, v in batches.draw(5).items()} == {"tokens": (4, 6), "lengths": (4,)}
  np.testing.assert_array_equal(batches.draw(5)["tokens"], batches.draw(5)["tokens"])


def test_sequence_batches_take_the_orders_of_fit_over_one_shuffled_pipeline():
  # The synthetic table's orders: Keras' fit over one pipeline shuffled by tf.data, two of its
  # passes per epoch, the next run continuing them (`synthetic.PASSES_PER_EPOCH`).
  keras.utils.set_random_seed(3435)
  tokens = np.repeat(np.arange(12, dtype=np.int32)[:, None], 3, 1)
  split = {"tokens": tokens, "lengths": np.full([12], 3, np.int32)}
  seen = []

  class Recorder(keras.Model):
    def train_step(self, data):
      return {"first": tf.py_function(lambda t: (seen.append(t.numpy()), 0.0)[1],
                                      [data["tokens"][:, 0]], tf.float32)}

  pipeline = tf.data.Dataset.from_tensor_slices(split).shuffle(
      12, seed=3435, reshuffle_each_iteration=True).batch(5)
  for _ in range(2):  # two runs of two epochs
    recorder = Recorder()
    recorder.compile(optimizer="sgd")
    recorder.fit(pipeline, epochs=2, verbose=0, shuffle=False)
  fitted = np.concatenate(seen).reshape(4, 12)
  for run in range(2):
    batches = synthetic.SequenceBatches(split, 5, 3435,
                                        first_pass=synthetic.PASSES_PER_EPOCH * run * 2)
    for epoch in range(2):
      np.testing.assert_array_equal(batches.order(epoch), fitted[2 * run + epoch])


def test_the_coarse_grid_is_every_other_point_and_the_true_nll_is_cached(tmp_path):
  keras.utils.set_random_seed(0)
  generator = SyntheticGenerator(vocab_size=7, embed_dim=4, hidden_dim=5, mlp_dim=6,
                                 init_scale=1.0)
  tokens = generator.sample(tf.random.stateless_normal([5, 2], [1, 1]), 4, tf.constant([2, 2]))
  fine, error = synthetic.true_nll(generator, tokens, grid_size=21)
  coarse, _ = synthetic.true_nll(generator, tokens, grid_size=11)  # the same grid, every other point
  assert error == pytest.approx(abs(np.mean(fine) - np.mean(coarse)), rel=1e-6)
  with pytest.raises(ValueError, match="odd"):
    synthetic.true_nll(generator, tokens, grid_size=20)
  cache = str(tmp_path / "truth.npz")
  calls = []
  first = synthetic.cached_truth(generator, tokens, cache, grid_size=21,
                                 progress=lambda done, total: calls.append((done, total)))
  assert calls[-1] == (5, 5)
  np.testing.assert_allclose(first.nll, fine, rtol=1e-12)
  assert first.error == pytest.approx(error)
  assert first.posterior_mean.shape == (5, 2) and first.posterior_covariance.shape == (5, 2, 2)
  calls.clear()
  again = synthetic.cached_truth(generator, tokens, cache, grid_size=21,
                                 progress=lambda done, total: calls.append(done))
  assert not calls and again.error == pytest.approx(first.error)  # read back, nothing computed
  np.testing.assert_array_equal(again.posterior_mean, first.posterior_mean)
  other = synthetic.cached_truth(generator, tokens[:3], cache, grid_size=21)
  np.testing.assert_allclose(other.nll, fine[:3], rtol=1e-6)  # other tokens: recomputed
  np.testing.assert_allclose(other.posterior_covariance, first.posterior_covariance[:3],
                             rtol=1e-5, atol=1e-9)
  # A cache written before it held the posterior's moments is recomputed, not misread.
  np.savez(cache, tokens=np.asarray(tokens), nll=fine, error=error)
  calls.clear()
  synthetic.cached_truth(generator, tokens, cache, grid_size=21,
                         progress=lambda done, total: calls.append(done))
  assert calls


def test_the_grid_posterior_is_the_normalised_joint_of_the_true_nll():
  keras.utils.set_random_seed(0)
  generator = SyntheticGenerator(vocab_size=7, embed_dim=4, hidden_dim=5, mlp_dim=6,
                                 init_scale=1.0)
  tokens = generator.sample(tf.random.stateless_normal([3, 2], [4, 4]), 4, tf.constant([5, 5]))
  kernel = generator.hidden.kernel  # z's weights (its last rows) scaled up, so z tells much
  kernel.assign(tf.concat([kernel[:-2], 3.0 * kernel[-2:]], 0))
  posterior = synthetic.grid_posterior(generator, tokens, grid_size=21, limit=4.0)
  axis = np.linspace(-4.0, 4.0, 21)
  np.testing.assert_array_equal(posterior.axis, axis)
  nll, _ = synthetic.true_nll(generator, tokens, grid_size=21, limit=4.0)
  np.testing.assert_allclose(-posterior.log_marginal(), nll, rtol=1e-12)

  # Sequence 1's log p(x, z) at every grid point, one point at a time (not the batched code).
  sequence = tokens[1:2]
  targets = sequence[:, 1:]
  joint = np.zeros([21, 21])
  for i, z1 in enumerate(axis):
    for j, z2 in enumerate(axis):
      logits = generator.logits(generator.prepare(sequence), tf.constant([[z1, z2]], tf.float32))
      log_likelihood = -objectives.token_nll(logits, targets, tf.ones([1, 4], bool))[0]
      joint[i, j] = float(log_likelihood) - 0.5 * (z1**2 + z2**2) - np.log(2 * np.pi)
  cell = (axis[1] - axis[0])**2
  np.testing.assert_allclose(np.log(np.exp(joint).sum() * cell), -nll[1], atol=1e-5)
  density = np.exp(joint) / (np.exp(joint).sum() * cell)
  np.testing.assert_allclose(posterior.density()[1], density, rtol=1e-4, atol=1e-9)
  assert posterior.probabilities()[1].sum() == pytest.approx(1.0)
  # Its moments by the same sums over the grid, written out.
  z1, z2 = np.meshgrid(axis, axis, indexing="ij")
  mean = np.array([(density * z1).sum(), (density * z2).sum()]) * cell
  d1, d2 = z1 - mean[0], z2 - mean[1]
  covariance = np.array([[(density * d1 * d1).sum(), (density * d1 * d2).sum()],
                         [(density * d2 * d1).sum(), (density * d2 * d2).sum()]]) * cell
  np.testing.assert_allclose(posterior.mean()[1], mean, atol=1e-5)
  np.testing.assert_allclose(posterior.covariance()[1], covariance, atol=1e-5)
  # z carries information here: the posterior is narrower than the prior, and not centred.
  assert np.all(np.diag(covariance) < 0.9) and np.abs(mean).max() > 0.05
