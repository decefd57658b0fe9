"""A SemiAmortizedVAE saved to the `.keras` format loads back, with only `import savae_tf`, into a
model that evaluates to the same numbers, keeps every setting and continues training alike."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import savae_tf
from savae_tf import runs
from savae_tf import schedules
from savae_tf.data.text import Vocabulary
from savae_tf.networks.image import GatedPixelCNN, ResNetEncoder
from savae_tf.networks.text import LSTMDecoder, LSTMEncoder
from test_model import LATENT, VOCAB, image_data, ragged_data


def text_savae(vocab=VOCAB):
  return savae_tf.SemiAmortizedVAE(
      LSTMDecoder(vocab, 6, 6, LATENT, dropout=0.2), LSTMEncoder(vocab, 6, 6, LATENT),
      mode="savae", latent_dim=LATENT, svi_config=savae_tf.SVIConfig(steps=2, lr=0.1),
      eval_num_samples=4)


def image_savae():
  # BatchNorm's moving statistics, which evaluation uses, change in training: they must travel.
  return savae_tf.SemiAmortizedVAE(
      GatedPixelCNN(LATENT, channels=4, kernel_sizes=(3, 3), image_shape=(6, 6)),
      ResNetEncoder(LATENT, channels=4, stages=1, image_shape=(6, 6)),
      mode="savae", latent_dim=LATENT, svi_config=savae_tf.SVIConfig(steps=2, lr=0.1),
      eval_num_samples=3)


def text_vae_svi_kl_with_settings():
  """Every setting away from its default: method, refiner, KL schedule, free bits, seeds."""
  return savae_tf.SemiAmortizedVAE(
      LSTMDecoder(VOCAB, 6, 6, LATENT, init_scale=0.1), LSTMEncoder(VOCAB, 6, 6, LATENT),
      mode="vae_svi_kl", latent_dim=LATENT,
      svi_config=savae_tf.SVIConfig(steps=2, lr=0.5, momentum=0.3, max_grad_norm=None,
                                    gradient="finite_difference", step_scale="batch_mean",
                                    batch_size=4, keep_steps=1),
      test_svi_steps=3, kl_schedule=schedules.Cyclical(total_steps=8, cycles=2, rise=0.5),
      free_bits=0.25, pretrain_steps=1, eval_num_samples=3, active_unit_threshold=0.02, seed=7)


@pytest.mark.parametrize("make, data", [(text_savae, ragged_data), (image_savae, image_data),
                                        (text_vae_svi_kl_with_settings, ragged_data)])
def test_a_saved_model_loads_with_the_same_settings_numbers_and_training(make, data, tmp_path):
  keras.utils.set_random_seed(0)
  model = make()
  model.compile(optimizer=keras.optimizers.Adam(1e-2))
  batches = {k: v.numpy() for k, v in data().items()}
  dataset = tf.data.Dataset.from_tensor_slices(batches).batch(4)
  # Trained, so the weights, the optimizer moments and the BatchNorm statistics have moved.
  model.fit(dataset, epochs=1, verbose=0, shuffle=False)
  expected = model.evaluate(dataset, verbose=0, return_dict=True)

  path = str(tmp_path / "model.keras")
  model.save(path)
  loaded = keras.saving.load_model(path)

  assert type(loaded) is savae_tf.SemiAmortizedVAE
  assert loaded.get_config() == model.get_config()
  assert (loaded.svi_config, loaded.kl_schedule) == (model.svi_config, model.kl_schedule)
  assert type(loaded.method) is type(model.method) and loaded.free_bits == model.free_bits
  got = loaded.evaluate(dataset, verbose=0, return_dict=True)
  assert set(got) == set(expected) and {"nll_bound", "kl", "iw_nll"} <= set(got)
  for name, value in expected.items():
    np.testing.assert_allclose(got[name], value, rtol=1e-6, err_msg=name)

  # Saved compiled, it loads compiled, with the optimizer's state: the next step is the same
  # (its noise is keyed by the optimizer's iteration, its beta by the schedule).
  assert loaded.optimizer.iterations.numpy() == model.optimizer.iterations.numpy() > 0
  batch = {k: tf.constant(v[:4]) for k, v in batches.items()}
  for trained in (model, loaded):
    trained.train_step(batch)
  for mine, theirs in zip(loaded.trainable_variables, model.trainable_variables):
    np.testing.assert_allclose(mine.numpy(), theirs.numpy(), rtol=1e-6, err_msg=theirs.path)


def test_a_binary_run_converts_to_an_uncompiled_keras_file(tmp_path):
  """docs/keras.md: a model directory of the binaries (`savae_tf.runs`) saved as `.keras`."""
  keras.utils.set_random_seed(0)
  vocabulary = Vocabulary.build(["the cat sat on a mat"])
  model = text_savae(len(vocabulary))
  runs.save_model(model, vocabulary, str(tmp_path / "run"))
  path = str(tmp_path / "model.keras")
  runs.load_model(str(tmp_path / "run"))[0].save(path)
  loaded = keras.saving.load_model(path)
  assert not loaded.compiled and loaded.get_config() == model.get_config()
  for mine, theirs in zip(loaded.trainable_variables, model.trainable_variables):
    np.testing.assert_array_equal(mine.numpy(), theirs.numpy())


# A fresh process that imports savae_tf and nothing of it by name: the classes the files name must
# be registered by the package's import alone.
_LOAD_ALONE = """
import sys
import keras
import numpy as np
import savae_tf
for path in sys.argv[1:]:
  model = keras.saving.load_model(path)
  np.savez(path + ".npz", *[v.numpy() for v in model.trainable_variables])
"""


def test_loading_needs_only_import_savae_tf(tmp_path):
  keras.utils.set_random_seed(0)
  models = {str(tmp_path / f"{name}.keras"): make()
            for name, make in (("text", text_savae), ("image", image_savae))}
  for path, model in models.items():
    model.save(path)
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
  result = subprocess.run([sys.executable, "-c", _LOAD_ALONE, *models], env=env,
                          capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  for path, model in models.items():
    loaded = np.load(path + ".npz")
    assert len(loaded.files) == len(model.trainable_variables)
    for index, variable in enumerate(model.trainable_variables):
      np.testing.assert_array_equal(loaded[f"arr_{index}"], variable.numpy(), err_msg=path)


def test_the_refiner_settings_are_keras_serializable_alone():
  config = savae_tf.SVIConfig(steps=4, gradient="finite_difference", keep_steps=2)
  serialized = keras.saving.serialize_keras_object(config)
  assert serialized["registered_name"] == "savae_tf>SVIConfig"
  assert keras.saving.deserialize_keras_object(serialized) == config
