"""Tests for savae_tf.training."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from absl import flags

from savae_tf import factories
from savae_tf import flags as savae_flags
from savae_tf import training
from savae_tf.model import SemiAmortizedVAE
from savae_tf.networks.text import LSTMDecoder, LSTMEncoder


def test_model_dir_may_not_be_a_file(tmp_path):
  file = tmp_path / "file"
  file.write_text("x")
  assert not savae_flags.validate_model_dir(str(file))
  assert savae_flags.validate_model_dir(str(tmp_path / "new"))


def test_flag_values_lists_only_the_given_modules_flags_and_no_alias():
  values = flags.FlagValues()
  flags.DEFINE_integer("alpha", 3, "", flag_values=values, module_name=__name__)
  flags.DEFINE_alias("beta", "alpha", flag_values=values, module_name=__name__)
  values(["prog", "--beta=4"])
  import sys
  assert factories.flag_values(values, [sys.modules[__name__]]) == {"alpha": 4}


def tiny_corpus(n, seed=None, sentences_seed=0):
  from savae_tf.data import text
  rng = np.random.default_rng(sentences_seed)
  return text.BatchedCorpus([list(rng.integers(1, 9, 6)) for _ in range(n)], batch_size=4,
                            pad_id=0, seed=seed)


def test_validation_selects_the_best_epoch_and_hands_it_to_on_best(tmp_path):
  from savae_tf import evaluate
  keras.utils.set_random_seed(0)
  model = SemiAmortizedVAE(LSTMDecoder(9, 4, 4, 2), LSTMEncoder(9, 4, 4, 2), mode="vae",
                           latent_dim=2)
  # Few training sentences and a large step: validation gets worse after a few epochs.
  model.compile(optimizer=factories.make_optimizer("adam", 0.1, 5.0))
  valid = tiny_corpus(8, sentences_seed=1).dataset()
  best = {}
  history = training.train(model, tiny_corpus(8, seed=1), 8, str(tmp_path), valid, verbose=0,
                           on_best=lambda m: best.update(weights=m.get_weights()))
  curve = [entry["val_nll_bound"] for entry in history]
  assert training.selection_metric(model) == "nll_bound"
  assert min(curve) < curve[-1]  # the last epoch was not the best one
  model.set_weights(best["weights"])
  final = evaluate.evaluate(model, valid, num_samples=0)["nll_bound"]
  assert final == pytest.approx(min(curve), rel=1e-6)


def test_the_learning_rate_decays_after_a_bad_epoch_and_stops_the_run():
  from savae_tf import actions
  model = SemiAmortizedVAE(LSTMDecoder(9, 4, 4, 2), LSTMEncoder(9, 4, 4, 2), mode="vae",
                           latent_dim=2)
  model.compile(optimizer=factories.make_optimizer("sgd", 0.1, 5.0))
  decay = actions.LearningRateDecay(start_epoch=2, stop_below=0.03)
  state = decay.state(model)
  def end(epoch, improved):
    return actions.EpochEnd(epoch, {}, {}, improved, [], None, "", lambda: None)
  assert decay.after_epoch(model, end(0, improved=False)) is None  # before start_epoch
  assert float(model.optimizer.learning_rate.numpy()) == pytest.approx(0.1)
  assert decay.after_epoch(model, end(1, improved=True)) is None
  assert not bool(state["decaying"].numpy())
  assert decay.after_epoch(model, end(2, improved=False)) is None  # sticky from here on
  assert float(model.optimizer.learning_rate.numpy()) == pytest.approx(0.05)
  assert decay.after_epoch(model, end(3, improved=True)) is not None  # 0.025 < 0.03: stop
  assert float(model.optimizer.learning_rate.numpy()) == pytest.approx(0.025)


MIRRORED = """
import json, sys
import numpy as np
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
from savae_tf import factories
from savae_tf.model import SemiAmortizedVAE, SVIConfig
from savae_tf.networks.image import GatedPixelCNN, ResNetEncoder
from savae_tf.networks.text import LSTMDecoder, LSTMEncoder
from savae_tf.data import images, text
domain, mode = sys.argv[1].split(":")
rng = np.random.default_rng(0)
# Batches split unevenly over the two replicas, one of them a single example (so one replica
# gets none): batch sizes 8, 1, 8, 5, 8, 7, 8, 5 (text) and 16, 16, 16, 13 (images).
if domain == "text":
  sentences = [list(rng.integers(4, 12, rng.integers(3, 7))) for _ in range(50)]
  data = text.BatchedCorpus(sentences, 8, 0, seed=1).dataset(0)
else:
  data = images.ImageBatches(rng.random((61, 6, 6)), 16, seed=1).dataset(0)

def networks():
  latent = 0 if mode == "autoreg" else 2
  if domain == "text":
    return LSTMDecoder(12, 6, 6, latent, dropout=0.3), LSTMEncoder(12, 6, 6, 2)
  return (GatedPixelCNN(latent, channels=4, kernel_sizes=(3, 3), image_shape=(6, 6)),
          ResNetEncoder(2, channels=4, stages=1, image_shape=(6, 6), synchronized_batchnorm=True))

def run(strategy):
  with strategy.scope():
    keras.utils.set_random_seed(0)
    model = SemiAmortizedVAE(*networks(), mode=mode, latent_dim=2,
                             svi_config=SVIConfig(steps=3))
    # A clip that binds: the whole batch's gradient is clipped, as on one device.
    model.compile(optimizer=factories.make_optimizer("sgd", 0.5, 0.5))
    history = model.fit(data, epochs=2, verbose=0, shuffle=False)
  return history.history["loss"], [v.numpy() for v in model.trainable_variables]

single, single_weights = run(factories.make_strategy("default"))
mirrored, mirrored_weights = run(tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))
print(json.dumps({"single": single, "mirrored": mirrored, "weight_diff": float(max(
    np.abs(a - b).max() for a, b in zip(single_weights, mirrored_weights)))}))
"""


# Images: SA-VAE with the ResNet encoder's BatchNorm synchronised across replicas (per-replica
# batch statistics would differ from one device's by design).
@pytest.mark.parametrize("mode", ["text:autoreg", "text:savae", "image:savae"])
def test_mirrored_on_two_cpus_trains_as_one_device(mode):
  # The corpora's batches carry each example's position, so every example draws the noise (z,
  # refinement, dropout) it draws on one device: the same steps up to float rounding, and the
  # same logged means however unevenly a batch is split.
  import os, subprocess, sys
  result = subprocess.run([sys.executable, "-c", MIRRORED, mode], capture_output=True, text=True,
                          timeout=600, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads(result.stdout.strip().splitlines()[-1])
  np.testing.assert_allclose(report["mirrored"], report["single"], rtol=1e-5)
  assert report["weight_diff"] < 1e-5


def test_multi_worker_without_a_cluster_is_a_clear_error(monkeypatch):
  monkeypatch.delenv("TF_CONFIG", raising=False)
  with pytest.raises(ValueError, match="TF_CONFIG"):
    factories.make_strategy("multi_worker")


def test_resumable_training_names_step_epoch_and_batch_of_a_nan(tmp_path):
  from savae_tf.data import text
  keras.utils.set_random_seed(0)
  model = SemiAmortizedVAE(LSTMDecoder(9, 4, 4, 2), LSTMEncoder(9, 4, 4, 2), mode="vae",
                           latent_dim=2)
  model.compile(optimizer=factories.make_optimizer("sgd", 1.0, 5.0))
  model.decoder.out.bias.assign(tf.fill([9], np.nan))
  corpus = text.BatchedCorpus([[2, 4, 5, 3]] * 8, batch_size=4, pad_id=0, seed=1)
  with pytest.raises(training.NonFiniteLossError, match=r"at step.*\(epoch 1, batch 1 of 2\)"):
    training.train(model, corpus, epochs=1, model_dir=str(tmp_path), verbose=0)


def test_a_checkpoint_without_the_runs_state_is_a_clear_error(tmp_path):
  # A VAE's checkpoint resumed as an aggressive run (as one written by a version that kept less
  # state): the missing state is named, not a bare assertion from TensorFlow.
  from savae_tf import runs
  from savae_tf.data import text

  def model(mode):
    keras.utils.set_random_seed(0)
    built = SemiAmortizedVAE(LSTMDecoder(9, 4, 4, 2), LSTMEncoder(9, 4, 4, 2), mode=mode,
                             latent_dim=2)
    built.compile(optimizer=factories.make_optimizer("sgd", 1.0, 5.0))
    return built

  corpus = text.BatchedCorpus([[2, 4, 5, 3]] * 8, batch_size=4, pad_id=0, seed=1)
  training.train(model("vae"), corpus, epochs=1, model_dir=str(tmp_path), verbose=0)
  with pytest.raises(runs.RunDirectoryError, match=r"ckpt-2 lacks part of this run's state"):
    training.train(model("aggressive"), corpus, epochs=2, model_dir=str(tmp_path), verbose=0)


def test_an_epoch_prints_one_line_with_training_and_validation_metrics():
  entry = {"loss": 12.5, "kl": 0.25, "epoch": 2, "learning_rate": 1.0, "step": 44,
           "val_nll_bound": 12.4, "val_active_units": 1.0}
  assert training.epoch_line(entry, 30, 41.2, best=True) == (
      "Epoch 2/30 (41 s): loss 12.500, kl 0.250 | validation: nll_bound 12.400, "
      "active_units 1.000 (best so far)")
  assert training.epoch_line({"epoch": 3, "loss": 1.0}, 3, 5, start=7) == (
      "Epoch 3/3 (5 s, resumed at batch 8): loss 1.000")
  assert training.epoch_line({"epoch": 3}, 3, 0, start=20).endswith(": no step left")


def test_the_progress_bar_counts_the_runs_epochs(capsys):
  bar = training._ProgressBar(30)  # pylint: disable=protected-access
  bar.set_params({"verbose": 1, "epochs": 3, "steps": 2})  # what a one-epoch fit passes
  bar.on_epoch_begin(2)
  assert "Epoch 3/30" in capsys.readouterr().out
