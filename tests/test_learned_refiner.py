"""The learned refiner (`refiners.LearnedRefiner`, iterative amortized inference): its update,
its gradients against central differences in float64, per-example rows, training inside a
model, saving and loading, the export, and the binary's --refiner flag."""

import json
import os
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from savae_tf import export
from savae_tf import runs
from savae_tf.data import synthetic
from savae_tf.model import SemiAmortizedVAE, SVIConfig
from savae_tf.networks.text import LSTMEncoder
from savae_tf.refiners import LearnedRefiner

ROOT = pathlib.Path(__file__).resolve().parents[1]
TARGET = np.array([[1.0, -2.0], [0.5, 0.0], [-1.0, 3.0]])


def quadratic(mean, logvar, step):
  """Each example's own loss, the noise-free ELBO of a Gaussian posterior N(TARGET_b, 0.5 I)."""
  del step
  target = tf.constant(TARGET, mean.dtype)
  return tf.reduce_sum(tf.square(mean - target) + tf.exp(logvar) - logvar, -1)


def randomized(refiner, seed=0):
  """The refiner with every weight drawn at random (the update starts at zero otherwise)."""
  rng = np.random.default_rng(seed)
  for variable in refiner.weights:
    variable.assign(rng.normal(scale=0.3, size=variable.shape))
  return refiner


def test_an_untrained_refiner_leaves_lambda_where_it_is_and_shapes_hold():
  refiner = LearnedRefiner(2, units=8)
  mean, logvar = tf.constant(TARGET * 0.1, tf.float32), tf.zeros([3, 2])
  out = refiner.refine(quadratic, mean, logvar, 4)
  assert out.mean.shape == (3, 2) and out.logvar.shape == (3, 2)
  np.testing.assert_array_equal(out.mean, mean)  # W_delta starts at zero
  moved = randomized(refiner).refine(quadratic, mean, logvar, 4)
  assert not np.allclose(moved.mean, mean)
  assert np.all(np.abs(moved.logvar) <= 15.0)
  with pytest.raises(ValueError, match="latent_dim"):
    LearnedRefiner(0)


def test_gradients_through_the_steps_match_central_differences_in_float64():
  refiner = randomized(LearnedRefiner(2, units=5, dtype="float64"), seed=1)
  mean0 = tf.constant(TARGET * 0.3 + 0.2, tf.float64)
  logvar0 = tf.constant(np.full((3, 2), -0.4), tf.float64)
  weights = refiner.trainable_variables

  def objective():
    out = refiner.refine(quadratic, mean0, logvar0, 3)
    return tf.reduce_sum(quadratic(out.mean, out.logvar, 0))

  with tf.GradientTape() as tape:
    tape.watch([mean0])
    value = objective()
  grads = tape.gradient(value, [mean0] + weights)
  h = 1e-6
  rng = np.random.default_rng(2)
  for variable, grad in zip(weights, grads[1:]):
    for _ in range(2):
      index = tuple(rng.integers(0, n) for n in variable.shape)
      original = variable.numpy()
      bumped = original.copy()
      bumped[index] += h
      variable.assign(bumped)
      plus = objective().numpy()
      bumped[index] -= 2 * h
      variable.assign(bumped)
      minus = objective().numpy()
      variable.assign(original)
      assert grad.numpy()[index] == pytest.approx((plus - minus) / (2 * h), rel=1e-5, abs=1e-8)
  # lambda_0's gradient too (through every step's gradient input: second order).
  for row, col in [(0, 0), (2, 1)]:
    bump = np.zeros((3, 2))
    bump[row, col] = h

    def at(delta):
      out = refiner.refine(quadratic, mean0 + delta, logvar0, 3)
      return tf.reduce_sum(quadratic(out.mean, out.logvar, 0)).numpy()

    assert grads[0].numpy()[row, col] == pytest.approx((at(bump) - at(-bump)) / (2 * h),
                                                        rel=1e-5)


def test_gradient_none_makes_the_gradient_input_a_constant():
  refiner = randomized(LearnedRefiner(2, units=5, dtype="float64"), seed=3)
  mean0 = tf.constant(TARGET * 0.3, tf.float64)
  logvar0 = tf.zeros([3, 2], tf.float64)
  scale = tf.Variable(1.0, dtype=tf.float64)  # a "decoder" variable the loss reads

  def scaled(mean, logvar, step):
    return scale * quadratic(mean, logvar, step)

  with tf.GradientTape(persistent=True) as tape:
    tape.watch(mean0)
    exact = refiner.refine(scaled, mean0, logvar0, 2, "unrolled")
    first_order = refiner.refine(scaled, mean0, logvar0, 2, "none")
  np.testing.assert_array_equal(exact.mean, first_order.mean)
  assert tape.gradient(first_order.mean, scale) is None
  assert tape.gradient(exact.mean, scale) is not None
  assert tape.gradient(first_order.mean, refiner.trainable_variables[0]) is not None


def oracle_model(steps=3, seed=0, units=8):
  keras.utils.set_random_seed(seed)
  data = synthetic.make_synthetic_data(seed=7, num_train=64, num_valid=1, num_test=16)
  model = SemiAmortizedVAE(data.oracle, LSTMEncoder(1001, 8, 8, 2), mode="savae", latent_dim=2,
                           svi_config=SVIConfig(steps=steps),
                           refiner=LearnedRefiner(2, units=units),
                           generation_length=synthetic.SEQUENCE_LENGTH)
  return model, data


def test_a_model_trains_its_refiner_and_each_sentence_is_refined_alone():
  model, data = oracle_model()
  model.compile(optimizer=keras.optimizers.Adam(1e-2))
  before = [w.numpy() for w in model.learned_refiner.weights]
  model.fit(synthetic.SequenceBatches(data.splits["train"], 16, shuffle_seed=0).dataset(),
            epochs=1, verbose=0)
  assert all(not np.array_equal(a, w.numpy())
             for a, w in zip(before, model.learned_refiner.weights))
  tokens = data.splits["test"]["tokens"][:6]
  batch = {"tokens": tf.constant(tokens), "lengths": tf.fill([6], tokens.shape[1])}
  mean0, logvar0 = model.initial_params(model.observe(batch))
  together = model.refine_for_evaluation(batch, mean0, logvar0, 3)
  assert not np.allclose(together.mean, mean0)  # trained: it moves
  for b in (0, 4):
    alone = {key: value[b:b + 1] for key, value in batch.items()}
    single = model.refine_for_evaluation(alone, mean0[b:b + 1], logvar0[b:b + 1], 3)
    np.testing.assert_allclose(single.mean, together.mean[b:b + 1], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(single.logvar, together.logvar[b:b + 1], rtol=1e-5, atol=1e-6)


def test_a_method_that_does_not_refine_takes_no_learned_refiner():
  data = synthetic.make_synthetic_data(seed=7, num_train=1, num_valid=1, num_test=1)
  with pytest.raises(ValueError, match="learned refiner needs a method that refines"):
    SemiAmortizedVAE(data.oracle, LSTMEncoder(1001, 4, 4, 2), mode="vae", latent_dim=2,
                     refiner=LearnedRefiner(2))


def test_saved_and_loaded_with_the_model_and_exported(tmp_path, assert_batch_invariant):
  model, data = oracle_model(seed=4)
  randomized(model.learned_refiner, seed=5)
  vocabulary = synthetic.vocabulary()
  tokens = data.splits["test"]["tokens"][:5]
  batch = {"tokens": tf.constant(tokens), "lengths": tf.fill([5], tokens.shape[1])}
  expected = model.score(batch, 3, 4)
  runs.save_model(model, vocabulary, str(tmp_path / "dir"))
  config = json.loads((tmp_path / "dir" / "config.json").read_text())
  assert config["refiner"]["class_name"] == "LearnedRefiner"
  loaded, _ = runs.load_model(str(tmp_path / "dir"))
  assert isinstance(loaded.refiner, LearnedRefiner)
  got = loaded.score(batch, 3, 4)
  for key in ("refined_nll_bound", "mean", "logvar", "iw_nll"):
    np.testing.assert_allclose(got[key], expected[key], rtol=1e-6, err_msg=key)
  # Training's checkpoints (the whole model) hold every refiner weight too.
  tf.train.Checkpoint(model=model).write(str(tmp_path / "ckpt" / "c"))
  other, _ = oracle_model(seed=4)
  randomized(other.learned_refiner, seed=6)
  tf.train.Checkpoint(model=other).read(str(tmp_path / "ckpt" / "c")).expect_partial()
  for mine, theirs in zip(other.learned_refiner.weights, model.learned_refiner.weights):
    np.testing.assert_array_equal(mine.numpy(), theirs.numpy(), err_msg=mine.path)
  model.save(str(tmp_path / "m.keras"))
  again = keras.saving.load_model(str(tmp_path / "m.keras"))
  np.testing.assert_allclose(again.score(batch, 3, 4)["mean"], expected["mean"], rtol=1e-6)
  # The export refines with it, in a fresh process, each sentence's row its own.
  path = export.export(model, vocabulary, str(tmp_path / "export"))
  sentences = [vocabulary.decode(row) for row in data.splits["test"]["tokens"]]
  script = ("import sys, numpy as np, tensorflow as tf\n"
            "s = tf.saved_model.load(sys.argv[1]).signatures['score']\n"
            "out = s(sentences=tf.constant(sys.argv[3:]), steps=tf.constant(3), "
            "num_samples=tf.constant(4))\n"
            "np.save(sys.argv[2], out['mean'].numpy())\n")
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
  result = subprocess.run([sys.executable, "-c", script, path, str(tmp_path / "mean.npy"),
                           *sentences[:5]], env=env, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  np.testing.assert_allclose(np.load(tmp_path / "mean.npy"), expected["mean"], rtol=1e-5,
                             atol=1e-6)
  assert_batch_invariant(path, sentences[:8], "sentences")


def test_the_synthetic_binary_trains_with_refiner_learned(tmp_path):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
  result = subprocess.run(
      [sys.executable, str(ROOT / "bin" / "train_synthetic.py"), "--method=savae",
       "--generator=oracle", "--refiner=learned", "--refiner_units=8", "--epochs=1",
       "--num_train=32", "--num_valid=8", "--num_test=8", "--num_samples=3", "--svi_steps=2",
       "--model_dir=run"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  config = json.loads((tmp_path / "run" / "oracle-savae" / "config.json").read_text())
  assert config["refiner"]["config"]["units"] == 8
  report = json.loads((tmp_path / "run" / "metrics.json").read_text())
  assert report["flags"]["refiner"] == "learned"
  assert np.isfinite(report["runs"]["oracle/savae"]["refined_nll_bound"])
