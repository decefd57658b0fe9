"""The gap decomposition (`savae_tf.gaps`) and its estimator (`objectives.elbo_estimate`), held
to a linear-Gaussian model whose posterior is a diagonal Gaussian: lambda* is known in closed
form, the approximation gap is 0, and every ELBO is exact."""

import numpy as np
import pytest
import tensorflow as tf

from savae_tf import distributions
from savae_tf import gaps
from savae_tf import objectives
from savae_tf.networks.linear_gaussian import LinearGaussian


def diagonal_posterior_model(latent=2, data=4, noise_std=0.7):
  """A LinearGaussian with orthogonal rows of W, so that p(z | x) is diagonal."""
  model = LinearGaussian(data, latent, noise_std, dtype="float64")
  q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(data, latent)))
  model.kernel.assign((q * np.array([1.5, 0.6])[:latent]).T)
  model.bias.assign(np.linspace(-0.5, 0.5, data))
  return model


class LinearGaussianInference:
  """`gaps`'s inference protocol over the model, float64 throughout: an encoder that misses
  the posterior by a fixed offset, and a 'refiner' that moves half way to it."""

  def __init__(self, model, x):
    self.model, self.x = model, tf.constant(x)
    posterior = model.posterior(self.x)
    self.true_mean = posterior.mean().numpy()
    self.true_logvar = np.log(np.diagonal(posterior.covariance().numpy(), axis1=-2, axis2=-1))
    self._elbo = tf.function(self._estimate, reduce_retracing=True)

  def encode(self, rows):
    return self.true_mean[rows] + 0.8, self.true_logvar[rows] - 0.5

  def refine(self, rows, mean, logvar, steps):
    del steps
    return (mean + self.true_mean[rows]) / 2, (logvar + self.true_logvar[rows]) / 2

  def _estimate(self, rows, mean, logvar, num_samples, seed):
    return objectives.elbo_estimate(lambda z: self.model.log_likelihood(tf.gather(self.x, rows), z),
                                    mean, logvar, num_samples, example_seeds(rows, seed),
                                    chunk_size=64)

  def elbo(self, rows, mean, logvar, num_samples, seed):
    out = self._elbo(tf.constant(rows), tf.constant(mean, tf.float64),
                     tf.constant(logvar, tf.float64), tf.constant(num_samples), tf.constant(seed))
    return dict(zip(("elbo", "iw_log_likelihood", "d_mean", "d_logvar"),
                    (t.numpy() for t in out)))


def example_seeds(rows, seed):
  """Noise keyed by the example (its row number) and `seed`, as evaluation keys it."""
  keys = distributions.ExampleSeeds(tf.cast(tf.convert_to_tensor(rows) + 1, tf.uint32))
  return distributions.fold_in(keys, seed)


def test_elbo_estimate_is_unbiased_and_its_gradient_is_the_estimates_derivative():
  model = diagonal_posterior_model()
  x, _ = model.sample(3, tf.constant([1, 2]))
  mean = tf.constant([[0.3, -0.2], [1.0, 0.5], [-0.7, 0.1]], tf.float64)
  logvar = tf.constant([[-0.5, 0.2], [0.1, -1.0], [0.0, 0.0]], tf.float64)
  seed = example_seeds(tf.range(3), 5)
  fn = tf.function(lambda m, v, chunk=2000: objectives.elbo_estimate(
      lambda z: model.log_likelihood(x, z), m, v, 40000, seed, chunk_size=chunk))
  elbo, iw, d_mean, d_logvar = fn(mean, logvar)
  exact = model.elbo(x, mean, logvar).numpy()
  np.testing.assert_allclose(elbo.numpy(), exact, atol=0.06)  # about 4 standard errors
  assert np.all(iw.numpy() >= elbo.numpy() - 1e-9)  # Jensen, on the same samples
  assert np.all(iw.numpy() <= model.log_marginal(x).numpy() + 0.05)
  # The same draws make the estimate a smooth function of lambda: central differences of it.
  h = 1e-6
  for index in [(0, 0), (1, 1), (2, 0)]:
    bump = tf.tensor_scatter_nd_update(tf.zeros_like(mean), [index], [h])
    numeric_mean = (fn(mean + bump, logvar)[0] - fn(mean - bump, logvar)[0]) / (2 * h)
    numeric_logvar = (fn(mean, logvar + bump)[0] - fn(mean, logvar - bump)[0]) / (2 * h)
    assert d_mean.numpy()[index] == pytest.approx(numeric_mean.numpy()[index[0]], rel=1e-6)
    assert d_logvar.numpy()[index] == pytest.approx(numeric_logvar.numpy()[index[0]], rel=1e-6)
  # Chunks change nothing: the samples are numbered.
  again = fn(mean, logvar, chunk=777)
  np.testing.assert_allclose(again[0].numpy(), elbo.numpy(), rtol=1e-10)
  np.testing.assert_allclose(again[2].numpy(), d_mean.numpy(), rtol=1e-8)


def test_decomposition_of_a_diagonal_gaussian_posterior():
  model = diagonal_posterior_model()
  x, _ = model.sample(12, tf.constant([3, 4]))
  inference = LinearGaussianInference(model, x.numpy())
  config = gaps.GapConfig(optimizer_samples=32, learning_rate=0.02, check_every=25,
                          check_samples=400, tolerance=1e-3, max_steps=4000, eval_samples=4000)
  batches = [np.arange(0, 5), np.arange(5, 12)]
  log_px = model.log_marginal(x).numpy()
  result, rows = gaps.evaluate_gaps(inference, batches, steps=1, config=config,
                                    log_likelihood=log_px)
  assert rows["converged"].all()
  # lambda*: the search found the exact posterior; the approximation gap is 0.
  exact_mean = inference.true_mean
  mean0, logvar0 = inference.encode(np.arange(12))
  mean_k, logvar_k = inference.refine(np.arange(12), mean0, logvar0, 1)
  mean_s, logvar_s, *_ = gaps.optimal_posterior(inference, np.arange(12), mean_k, logvar_k,
                                                config)
  assert abs(result["approximation_gap"]) < 3 * result["approximation_gap_stderr"] + 0.01
  # The amortization gap and the share closed against their closed forms.
  elbo = lambda m, v: model.elbo(x, tf.constant(m, tf.float64),  # noqa: E731
                                 tf.constant(v, tf.float64)).numpy()
  # lambda* is the exact posterior as far as the ELBO can tell (the rule stops within 1e-3 nat
  # per check window, a few windows from its top), and near it in parameters.
  assert np.all(log_px - elbo(mean_s, logvar_s) < 0.02)
  np.testing.assert_allclose(mean_s, exact_mean, atol=0.1)
  np.testing.assert_allclose(logvar_s, inference.true_logvar, atol=0.15)
  exact_amortization = log_px - elbo(mean0, logvar0)  # ELBO(lambda*) = log p(x)
  exact_closed = elbo(mean_k, logvar_k) - elbo(mean0, logvar0)
  assert result["amortization_gap"] == pytest.approx(exact_amortization.mean(), abs=0.03)
  assert result["refinement_closed"] == pytest.approx(
      exact_closed.mean() / exact_amortization.mean(), abs=0.02)
  assert 0 < result["amortization_gap_stderr"] < 0.5
  assert 0 < result["refinement_closed_stderr"] < 0.1
  # The gaps and ELBO(lambda_0) add up to log p(x).
  total = (result["approximation_gap"] + result["amortization_gap"]
           + result["gap_elbo_encoder"])
  assert total == pytest.approx(log_px.mean(), abs=1e-9)
  assert result["gap_log_likelihood_kind"] == "exact" and result["gap_examples"] == 12


def test_the_search_stops_by_its_rule_and_reports_the_cap():
  model = diagonal_posterior_model()
  x, _ = model.sample(4, tf.constant([5, 6]))
  inference = LinearGaussianInference(model, x.numpy())
  mean0, logvar0 = inference.encode(np.arange(4))
  capped = gaps.GapConfig(check_every=5, max_steps=10, tolerance=1e-3)
  *_, steps, converged, rise = gaps.optimal_posterior(inference, np.arange(4), mean0, logvar0,
                                                      capped)
  assert (steps == 10).all() and not converged.any() and (rise >= 1e-3).all()
  loose = gaps.GapConfig(check_every=5, max_steps=4000, tolerance=10.0)
  *_, steps, converged, _ = gaps.optimal_posterior(inference, np.arange(4), mean0, logvar0, loose)
  assert (steps == 5).all() and converged.all()


def test_config_and_inputs_are_checked():
  with pytest.raises(ValueError, match="max_steps"):
    gaps.GapConfig(max_steps=0)
  with pytest.raises(ValueError, match="No examples"):
    gaps.decompose(None, [], 1)
  with pytest.raises(ValueError, match="elbo"):
    gaps.SignatureInference({"encode": None})


def test_decomposed_examples_are_evenly_spaced_over_the_set():
  np.testing.assert_array_equal(gaps.evenly_spaced(10, 4), [0, 2, 5, 7])
  np.testing.assert_array_equal(gaps.evenly_spaced(5, 0), np.arange(5))
  np.testing.assert_array_equal(gaps.evenly_spaced(3, 7), np.arange(3))
  assert len(set(gaps.evenly_spaced(1000, 333))) == 333


def test_a_killed_decomposition_goes_on_from_its_journal(tmp_path, capsys):
  model = diagonal_posterior_model()
  x, _ = model.sample(9, tf.constant([7, 8]))
  inference = LinearGaussianInference(model, x.numpy())
  refined = []
  refine = inference.refine
  inference.refine = lambda rows, *args: refined.append(rows.tolist()) or refine(rows, *args)
  config = gaps.GapConfig(check_every=5, max_steps=20, check_samples=50, eval_samples=50)
  batches = [np.arange(0, 3), np.arange(3, 6), np.arange(6, 9)]
  log_px = model.log_marginal(x).numpy()
  whole = gaps.decompose(inference, batches, 1, config, log_px)
  journal = str(tmp_path / "gaps-partial.npz")

  def killed_after_two():
    yield from batches[:2]
    raise KeyboardInterrupt

  with pytest.raises(KeyboardInterrupt):
    gaps.decompose(inference, killed_after_two(), 1, config, log_px, journal=journal)
  refined.clear()
  resumed = gaps.decompose(inference, batches, 1, config, log_px, journal=journal)
  assert refined == [[6, 7, 8]]  # only the batch the killed run did not finish
  for name, values in whole.items():
    np.testing.assert_array_equal(resumed[name], values, err_msg=name)
  assert not (tmp_path / "gaps-partial.npz").exists()
  # A journal of other settings (here K) is not used.
  with pytest.raises(KeyboardInterrupt):
    gaps.decompose(inference, killed_after_two(), 1, config, log_px, journal=journal)
  refined.clear()
  gaps.decompose(inference, batches, 2, config, log_px, journal=journal)
  assert len(refined) == 3
  # Nor is a file that is not a journal: it is named, and the decomposition starts anew.
  (tmp_path / "gaps-partial.npz").write_bytes(b"not a journal")
  refined.clear()
  gaps.decompose(inference, batches, 2, config, log_px, journal=journal)
  assert len(refined) == 3 and "is not a readable journal" in capsys.readouterr().err
