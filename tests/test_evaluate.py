"""Tests for savae_tf.evaluate: the report on a model whose true likelihood is known."""

import pytest

from savae_tf.data import synthetic
from savae_tf.evaluate import evaluate
from savae_tf.model import SemiAmortizedVAE, SVIConfig
from savae_tf.networks.text import LSTMEncoder


@pytest.fixture(scope="module")
def oracle_case():
  data = synthetic.make_synthetic_data(seed=5, num_train=1, num_valid=1, num_test=64)
  truth, _ = synthetic.true_nll(data.oracle, data.splits["test"]["tokens"], grid_size=31)
  model = SemiAmortizedVAE(data.oracle, LSTMEncoder(1001, 8, 8, 2), mode="savae", latent_dim=2,
                           svi_config=SVIConfig(steps=20, lr=0.03))
  model.compile()
  return model, synthetic.SequenceBatches(data.splits["test"], 32).dataset(), truth


def test_refinement_tightens_the_bound_toward_the_true_nll(oracle_case):
  model, test, truth = oracle_case
  report = evaluate(model, test, svi_steps=20, num_samples=200)
  assert {"nll_bound", "refined_nll_bound", "iw_nll", "kl", "ppl", "ppl_bound", "mi",
          "active_units"} <= set(report)
  assert report["iw_num_samples"] == 200 and report["svi_steps"] == 20
  # An untrained encoder: the amortized bound is loose, refinement closes most of the gap, and
  # both bounds and the IW estimate stay above the true NLL (within Monte Carlo error).
  assert report["refined_nll_bound"] < report["nll_bound"] - 1.0
  assert report["iw_nll"] <= report["refined_nll_bound"] + 0.05
  assert report["iw_nll"] >= truth.mean() - 0.05
  assert report["refined_nll_bound"] - truth.mean() < 0.5 * (report["nll_bound"] - truth.mean())


def test_settings_take_effect_after_a_first_evaluation(oracle_case):
  model, test, _ = oracle_case
  twenty = evaluate(model, test, svi_steps=20, num_samples=0)
  no_steps = evaluate(model, test, svi_steps=0, num_samples=0)
  assert "iw_nll" not in no_steps and no_steps["svi_steps"] == 0
  # Without refinement the "refined" bound is the amortized one (up to its own z sample).
  assert no_steps["refined_nll_bound"] > twenty["refined_nll_bound"] + 1.0


def test_bad_settings_are_clear_errors(oracle_case):
  model, test, _ = oracle_case
  with pytest.raises(ValueError, match="num_samples must be >= 0"):
    evaluate(model, test, num_samples=-1)
  with pytest.raises(ValueError, match="svi_steps must be >= 0"):
    evaluate(model, test, svi_steps=-3)


def test_evaluation_does_not_depend_on_the_batch_size(oracle_case):
  model, _, _ = oracle_case
  data = synthetic.make_synthetic_data(seed=5, num_train=1, num_valid=1, num_test=250)
  reports = [evaluate(model, synthetic.SequenceBatches(data.splits["test"], size).dataset(), svi_steps=20,
                      num_samples=50) for size in (7, 250)]
  for name in ("nll_bound", "refined_nll_bound", "kl", "iw_nll", "ppl", "ppl_bound", "mi"):
    assert reports[0][name] == pytest.approx(reports[1][name], rel=1e-5), name
  assert reports[0]["active_units"] == reports[1]["active_units"]


def test_evaluating_sentences_through_the_signatures_matches_evaluate(oracle_case):
  from savae_tf import export
  from savae_tf.evaluate import evaluate_sentences
  model, test, truth = oracle_case
  vocabulary = synthetic.vocabulary()
  sentences = [vocabulary.decode(row) for batch in test for row in batch["tokens"].numpy()]
  signatures = export.model_export(model, vocabulary).signatures()
  report = evaluate_sentences(signatures, sentences, batch_size=5, svi_steps=20,
                              num_samples=200)
  reference = evaluate(model, test, svi_steps=20, num_samples=200)
  # Other batches (5 against 32), the same numbers: every row is its example's own.
  for name in ("nll_bound", "refined_nll_bound", "kl", "iw_nll", "ppl_bound", "ppl", "mi"):
    assert report[name] == pytest.approx(reference[name], rel=1e-5), name
  assert report["active_units"] == reference["active_units"]
  assert report["num_sentences"] == len(truth) and report["num_tokens"] == 5 * len(truth)
  with pytest.raises(ValueError, match="No sentences"):
    evaluate_sentences(signatures, [])


def test_mi_and_active_units_are_the_encoders_and_the_refined_ones_have_their_own_names(
    oracle_case):
  import numpy as np
  from savae_tf import objectives
  model, test, _ = oracle_case
  report = evaluate(model, test, svi_steps=20, num_samples=0)
  encoder_means, refined_means = [], []
  for data in test:
    mean0, logvar0 = model.initial_params(model.observe(data))
    encoder_means.append(mean0.numpy())
    refined_means.append(model.refine_for_evaluation(data, mean0, logvar0, 20).mean.numpy())
  for name, means in (("active_units", encoder_means), ("refined_active_units", refined_means)):
    variance = np.var(np.concatenate(means).astype(np.float64), axis=0)
    assert report[name] == int(objectives.active_units(variance, 0.01)), name
  # The untrained encoder's means barely move from example to example; refinement spreads them.
  assert report["refined_active_units"] > report["active_units"]
  assert report["refined_mi"] > report["mi"]
  # A model that does not refine reports the encoder's statistics only.
  vae = SemiAmortizedVAE(model.decoder, model.encoder, mode="vae", latent_dim=2)
  assert {"mi", "active_units"} <= set(evaluate(vae, test, num_samples=0))
  assert not {"refined_mi", "refined_active_units"} & set(evaluate(vae, test, num_samples=0))


def test_the_rows_hold_the_encoders_or_the_refined_posterior_whatever_the_batches(oracle_case):
  import numpy as np
  import tensorflow as tf
  from savae_tf.evaluate import evaluate_rows
  model, test, _ = oracle_case
  encoder = [model.initial_params(model.observe(batch)) for batch in test]
  _, at_zero = evaluate_rows(model, test, svi_steps=0, num_samples=0)
  for name, part in (("mean", "mean"), ("logvar", "logvar")):
    expected = tf.concat([getattr(p, part) for p in encoder], 0)
    np.testing.assert_allclose(at_zero[name], expected, atol=1e-6)
    np.testing.assert_allclose(at_zero[name + "0"], expected, atol=1e-6)
  _, rows = evaluate_rows(model, test, num_samples=0)  # the model's K = 20
  assert rows["mean"].shape == (64, 2) and np.abs(rows["mean"] - rows["mean0"]).max() > 0.01
  _, again = evaluate_rows(model, test.unbatch().batch(64), num_samples=0)
  np.testing.assert_allclose(again["mean"], rows["mean"], atol=1e-5)
  np.testing.assert_allclose(again["logvar"], rows["logvar"], atol=1e-5)
