"""Tests for savae_tf.methods (the registry, the Method contract) and free bits, which composes
with every method. Each paper method's gradient routing is tested in test_model.py."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from savae_tf import distributions
from savae_tf import methods
from savae_tf import objectives
from savae_tf.model import MODES, SemiAmortizedVAE, SVIConfig
from savae_tf.networks.text import LSTMDecoder, LSTMEncoder


def test_every_registered_method_is_a_method_under_its_own_name():
  assert set(methods.METHODS) == {"autoreg", "vae", "svi", "vae_svi", "vae_svi_kl", "savae",
                                  "aggressive"}
  assert MODES == tuple(methods.METHODS)
  for name, method in methods.METHODS.items():
    assert issubclass(method, methods.Method) and method.name == name
    assert method.uses_latent or not method.refines  # refining needs a latent
  with pytest.raises(ValueError, match="Unknown method 'beta_vae'"):
    methods.get("beta_vae")


def kl_per_dimension(mean, logvar):
  return np.mean(distributions.kl_to_prior_per_dimension(mean, logvar).numpy(), 0)


def test_free_bits_is_the_sum_of_max_lambda_kl_d_and_skips_dimensions_under_it():
  rng = np.random.default_rng(0)
  # Dimension 0 far from the prior, 1 a little, 2 almost on it.
  mean = tf.constant(rng.normal(size=(5, 3)) * [2.0, 0.6, 0.01], tf.float64)
  logvar = tf.constant(rng.normal(size=(5, 3)) * [0.5, 0.3, 0.01], tf.float64)
  kl_d = kl_per_dimension(mean, logvar)
  threshold = 0.5 * (kl_d[1] + kl_d[2])  # between dimensions 1 and 2: only 2 is under it
  assert kl_d[0] > kl_d[1] > threshold > kl_d[2]
  with tf.GradientTape(persistent=True) as tape:
    tape.watch([mean, logvar])
    free = objectives.free_bits_kl(mean, logvar, threshold)
    plain = tf.reduce_mean(distributions.kl_to_prior(mean, logvar))
  np.testing.assert_allclose(free.numpy(), kl_d[0] + kl_d[1] + threshold, rtol=1e-12)
  for g_free, g_plain in zip(tape.gradient(free, [mean, logvar]),
                             tape.gradient(plain, [mean, logvar])):
    np.testing.assert_allclose(g_free[:, :2], g_plain[:, :2], rtol=1e-12)  # above: the KL's
    np.testing.assert_array_equal(g_free[:, 2], 0.0)  # under the threshold: no gradient
  # A threshold under every dimension is the plain batch-mean KL.
  np.testing.assert_allclose(objectives.free_bits_kl(mean, logvar, 0.0), plain, rtol=1e-12)


def text_batch():
  tokens = np.array([[1, 5, 6, 7, 2], [1, 8, 9, 2, 0], [1, 4, 2, 0, 0]], np.int32)
  return {"tokens": tf.constant(tokens), "lengths": tf.constant([5, 4, 3], np.int32)}


@pytest.mark.parametrize("mode", ["vae", "savae"])
def test_free_bits_changes_the_training_loss_only(mode):
  def model(free_bits):
    keras.utils.set_random_seed(0)
    return SemiAmortizedVAE(LSTMDecoder(10, 4, 4, 3), LSTMEncoder(10, 4, 4, 3), mode=mode,
                            latent_dim=3, svi_config=SVIConfig(steps=2, lr=0.1),
                            free_bits=free_bits)
  plain, free = model(0.0), model(5.0)  # 5 nats: every dimension's KL is under it
  seed = tf.constant([1, 2])
  terms = [m.forward(text_batch(), seed, True, tf.constant(1.0), 2, None) for m in (plain, free)]
  for name in ("nll_bound", "kl") + (("refined_nll_bound",) if mode == "savae" else ()):
    np.testing.assert_array_equal(terms[0][name], terms[1][name])
  kl = terms[0]["kl"].numpy().mean()
  # Every dimension under lambda: the KL term is the constant 3 x 5 nats instead of the KL.
  np.testing.assert_allclose(terms[1]["loss"] - terms[0]["loss"], 15.0 - kl, rtol=1e-5)
  scores = [m.score(text_batch(), 2, 0) for m in (plain, free)]  # evaluation: true bounds
  np.testing.assert_array_equal(scores[0]["refined_nll_bound"], scores[1]["refined_nll_bound"])
  with pytest.raises(ValueError, match="free_bits must be >= 0"):
    model(-1.0)


def test_savae_composes_with_free_bits_a_cyclical_schedule_and_pretraining():
  from savae_tf import schedules
  keras.utils.set_random_seed(0)
  model = SemiAmortizedVAE(LSTMDecoder(10, 4, 4, 3), LSTMEncoder(10, 4, 4, 3), mode="savae",
                           latent_dim=3, svi_config=SVIConfig(steps=2, lr=0.1), free_bits=0.2,
                           kl_schedule=schedules.Cyclical(8, 2, 0.5), pretrain_steps=2)
  model.compile(optimizer=keras.optimizers.Adam(1e-2))
  step = tf.function(model.train_step)
  losses = [float(step(text_batch())["loss"]) for _ in range(6)]
  assert np.all(np.isfinite(losses))
  np.testing.assert_allclose([float(model.kl_weight(t)) for t in range(2, 8)],
                             [0.0, 0.5, 1.0, 1.0, 0.0, 0.5], atol=1e-6)


FREE_BITS_ON_TWO_REPLICAS = """
import json
import numpy as np
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from savae_tf import objectives
rng = np.random.default_rng(0)
# Dimension 1 is far from the prior in the first half of the batch only: its batch-mean KL is
# above the threshold, the second replica's own mean would be under it.
mean = rng.normal(size=(8, 2)) * 0.05
mean[:4, 1] += 2.0
mean, logvar = tf.constant(mean), tf.constant(rng.normal(size=(8, 2)) * 0.05)
threshold = 0.3

def value_and_gradients(m, l):
  with tf.GradientTape() as tape:
    tape.watch([m, l])
    value = objectives.free_bits_kl(m, l, threshold)
  return value, tape.gradient(value, [m, l])

single_value, single_grads = value_and_gradients(mean, logvar)
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
halves = strategy.experimental_distribute_values_from_function(
    lambda context: (mean[4 * context.replica_id_in_sync_group:][:4],
                     logvar[4 * context.replica_id_in_sync_group:][:4]))
values, grads = strategy.run(lambda inputs: value_and_gradients(*inputs), args=(halves,))
local = lambda x: strategy.experimental_local_results(x)
print(json.dumps({
    "single": float(single_value), "replicas": [float(v) for v in local(values)],
    "grad_error": max(float(np.abs(np.concatenate(local(g)) - s).max())
                      for g, s in zip(grads, single_grads))}))
"""


def test_free_bits_over_two_replicas_is_the_whole_batchs():
  import json, os, subprocess, sys
  result = subprocess.run([sys.executable, "-c", FREE_BITS_ON_TWO_REPLICAS], capture_output=True,
                          text=True, timeout=300, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads(result.stdout.strip().splitlines()[-1])
  assert sum(report["replicas"]) == pytest.approx(report["single"], rel=1e-12)
  assert report["grad_error"] < 1e-12
