"""Mixed precision: float32 weights, bfloat16 / float16 arithmetic in the networks, and lambda, the
refiner and the losses in float32 (tested on CPU)."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import assert_close_to_scale
from savae_tf.model import SemiAmortizedVAE, SVIConfig
from savae_tf.networks.image import GatedPixelCNN, ResNetEncoder
from savae_tf.networks.text import LSTMDecoder, LSTMEncoder
from test_model import image_data, ragged_data

VOCAB, LATENT = 15, 3


@pytest.fixture
def policy():
  """Sets the global Keras dtype policy for what the test builds; float32 again afterwards."""
  yield keras.mixed_precision.set_dtype_policy
  keras.mixed_precision.set_dtype_policy("float32")


def text_model(policy_name, set_policy, mode="savae"):
  set_policy(policy_name)
  keras.utils.set_random_seed(0)
  # An exact refinement: the decoder never runs cuDNN (which a GPU would otherwise pick).
  model = SemiAmortizedVAE(LSTMDecoder(VOCAB, 8, 8, LATENT, use_cudnn=False),
                           LSTMEncoder(VOCAB, 8, 8, LATENT),
                           mode=mode, latent_dim=LATENT,
                           svi_config=SVIConfig(steps=3, lr=0.5, gradient="reverse"))
  optimizer = keras.optimizers.SGD(0.5)
  if policy_name == "mixed_float16":
    optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
  model.compile(optimizer=optimizer, auto_scale_loss=False)
  set_policy("float32")
  return model


def image_model(policy_name, set_policy):
  set_policy(policy_name)
  keras.utils.set_random_seed(0)
  model = SemiAmortizedVAE(
      GatedPixelCNN(LATENT, channels=4, kernel_sizes=(3, 3), image_shape=(6, 6)),
      ResNetEncoder(LATENT, channels=4, stages=1, image_shape=(6, 6)), mode="savae",
      latent_dim=LATENT, svi_config=SVIConfig(steps=2, gradient="reverse"))
  model.compile(optimizer=keras.optimizers.SGD(0.1))
  set_policy("float32")
  return model


def refined_bound(model, data):
  out = model.score(data, model.svi_config.steps, num_samples=0)
  assert out["refined_nll_bound"].dtype == tf.float32  # the losses stay in float32
  return out["refined_nll_bound"].numpy()


@pytest.mark.parametrize("build, data", [(text_model, ragged_data), (image_model, image_data)])
def test_bfloat16_computes_inside_the_networks_and_trains_close_to_float32(policy, build, data):
  low, full = build("mixed_bfloat16", policy), build("float32", policy)
  for network in (low.encoder, low.decoder):
    assert network.compute_dtype == "bfloat16"
    assert {v.dtype for v in network.weights} == {"float32"}
    for layer in network._flatten_layers():  # sublayers inherit the policy
      assert layer.compute_dtype == "bfloat16", layer.name
  batch = data()
  mean, logvar = low.initial_params(low.observe(batch))
  assert mean.dtype == logvar.dtype == tf.float32  # lambda is float32
  np.testing.assert_allclose(refined_bound(low, batch), refined_bound(full, batch), rtol=0.02)
  for _ in range(3):
    low_loss = low.train_step(batch)["loss"].numpy()
    full_loss = full.train_step(batch)["loss"].numpy()
  assert np.isfinite(low_loss)
  np.testing.assert_allclose(low_loss, full_loss, rtol=0.03)
  np.testing.assert_allclose(refined_bound(low, batch), refined_bound(full, batch), rtol=0.03)


def test_float16_scales_the_loss_and_the_update_is_the_unscaled_one(policy):
  low, full = text_model("mixed_float16", policy), text_model("float32", policy)
  assert low.decoder.compute_dtype == "float16"
  batch = ragged_data()
  before = [v.numpy() for v in full.trainable_variables]
  low.train_step(batch)
  full.train_step(batch)
  assert float(low.optimizer.dynamic_scale.numpy()) > 1000  # the loss was scaled, then unscaled
  # float16's rounding (eps 1e-3) is relative to the update's scale, not to each element.
  assert_close_to_scale([v.numpy() - b for b, v in zip(before, low.trainable_variables)],
                        [v.numpy() - b for b, v in zip(before, full.trainable_variables)],
                        rtol=0.05, floor=0.01, names=[v.path for v in full.trainable_variables])


@pytest.mark.parametrize("network", [
    lambda: LSTMDecoder(VOCAB, 4, 4, LATENT), lambda: LSTMEncoder(VOCAB, 4, 4, LATENT),
    lambda: GatedPixelCNN(LATENT, channels=4, kernel_sizes=(3,), image_shape=(4, 4)),
    lambda: ResNetEncoder(LATENT, channels=4, stages=1, image_shape=(4, 4))])
def test_a_reloaded_network_computes_in_the_policy_it_was_built_with(policy, network):
  policy("mixed_bfloat16")
  built = network()
  policy("float32")
  again = type(built).from_config(built.get_config())
  assert [layer.compute_dtype for layer in again._flatten_layers()] == [
      layer.compute_dtype for layer in built._flatten_layers()]
  assert again.compute_dtype == "bfloat16"


def test_a_bfloat16_export_reloaded_in_a_fresh_process_keeps_the_float32_contract(policy,
                                                                                   tmp_path):
  """The signatures of export/README.md (float32 at the boundary) from a bfloat16 model, and the
  same outputs as the in-memory model."""
  from savae_tf import export
  from test_export import FRESH_PROCESS, call_all, text_model
  policy("mixed_bfloat16")
  model, vocabulary = text_model()
  policy("float32")
  assert model.decoder.compute_dtype == "bfloat16"
  path = export.export(model, vocabulary, str(tmp_path / "export"))
  out = tmp_path / "outputs.npz"
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
  result = subprocess.run([sys.executable, "-c", FRESH_PROCESS, path, str(out)], env=env,
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  reloaded = np.load(out, allow_pickle=True)
  for name, outputs in call_all(export.model_export(model, vocabulary).signatures()).items():
    for key, value in outputs.items():
      got = reloaded[f"{name}/{key}"]
      if value.dtype == tf.string:
        assert got.tolist() == value.numpy().tolist(), (name, key)
        continue
      assert value.dtype in (tf.float32, tf.int32) and got.dtype == value.dtype.as_numpy_dtype
      np.testing.assert_allclose(got, value.numpy(), rtol=1e-5, atol=1e-5, err_msg=name + key)


def test_an_aggressive_inner_step_under_float16_moves_the_encoder_as_float32_does(policy):
  """The aggressive method's encoder optimizer is a copy of the model's, a LossScaleOptimizer
  under mixed_float16: its step must be given the scaled loss, or it is divided by the scale."""
  updates = {}
  for name in ("mixed_float16", "float32"):
    model = text_model(name, policy, mode="aggressive")
    model.optimizer.build(model.trainable_variables)
    model.method.training_state(model)
    before = [v.numpy() for v in model.encoder.trainable_variables]
    model.method.encoder_step(model, ragged_data(), tf.constant([1, 2]))
    updates[name] = [v.numpy() - b for b, v in zip(before, model.encoder.trainable_variables)]
  assert_close_to_scale(updates["mixed_float16"], updates["float32"], rtol=0.05, floor=0.01)
