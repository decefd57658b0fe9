"""Tests for savae_tf.training."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from absl import flags

from savae_tf import training
from savae_tf.model import SemiAmortizedVAE
from savae_tf.networks.text import LSTMDecoder, LSTMEncoder


def test_write_metrics_creates_the_directory_and_the_json(tmp_path):
  path = training.write_metrics(str(tmp_path / "run"), {"nll_bound": 1.5})
  assert json.load(open(path)) == {"nll_bound": 1.5}


def test_model_dir_may_not_be_a_file(tmp_path):
  file = tmp_path / "file"
  file.write_text("x")
  assert not training.validate_model_dir(str(file))
  assert training.validate_model_dir(str(tmp_path / "new"))


def test_a_nan_loss_raises_a_clear_error_naming_the_step():
  keras.utils.set_random_seed(0)
  model = SemiAmortizedVAE(LSTMDecoder(9, 4, 4, 2), LSTMEncoder(9, 4, 4, 2), mode="vae",
                           latent_dim=2)
  model.compile(optimizer=training.make_optimizer("sgd", 1.0, 5.0))
  model.decoder.out.bias.assign(tf.fill([9], np.nan))
  data = tf.data.Dataset.from_tensor_slices(
      {"tokens": np.ones((4, 5), np.int32), "lengths": np.full([4], 5, np.int32)}).batch(2)
  with pytest.raises(training.NonFiniteLossError, match="not finite.*at step"):
    training.fit(model, data, epochs=1, verbose=0)


def test_flag_values_lists_only_the_given_modules_flags():
  values = flags.FlagValues()
  flags.DEFINE_integer("alpha", 3, "", flag_values=values, module_name=__name__)
  values(["prog"])
  import sys
  assert training.flag_values(values, [sys.modules[__name__]]) == {"alpha": 3}


def test_fit_with_validation_ends_with_the_best_epochs_weights():
  keras.utils.set_random_seed(0)
  model = SemiAmortizedVAE(LSTMDecoder(9, 4, 4, 2), LSTMEncoder(9, 4, 4, 2), mode="vae",
                           latent_dim=2)
  # Few training sentences and a large step: validation gets worse after a few epochs.
  model.compile(optimizer=training.make_optimizer("adam", 0.1, 5.0))
  rng = np.random.default_rng(0)
  def data(n):
    return tf.data.Dataset.from_tensor_slices(
        {"tokens": rng.integers(1, 9, (n, 6)).astype(np.int32),
         "lengths": np.full([n], 6, np.int32)}).batch(4)
  valid = data(8)
  history = training.fit(model, data(8), epochs=8, validation=valid, verbose=0)
  curve = history.history["val_nll_bound"]
  assert training.selection_metric(model) == "nll_bound"
  assert min(curve) < curve[-1]  # the last epoch was not the best one
  final = model.evaluate(valid, verbose=0, return_dict=True)["nll_bound"]
  assert final == pytest.approx(min(curve), rel=1e-5)
