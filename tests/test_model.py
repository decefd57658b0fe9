"""Tests for savae_tf.model: each mode routes gradients as the paper's variant does."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import assert_close_to_scale, simulated_gpu
from savae_tf import schedules
from savae_tf import evaluate
from savae_tf import methods
from savae_tf.model import MODES, SemiAmortizedVAE, SVIConfig
from savae_tf.networks.text import LSTMDecoder, LSTMEncoder

VOCAB, LATENT = 15, 3


def ragged_data(n=8, max_len=7, seed=0):
  rng = np.random.default_rng(seed)
  lengths = rng.integers(3, max_len + 1, n).astype(np.int32)
  tokens = np.zeros((n, max_len), np.int32)
  for i, length in enumerate(lengths):
    tokens[i, :length] = rng.integers(1, VOCAB, length)
  return {"tokens": tf.constant(tokens), "lengths": tf.constant(lengths)}


def make_model(mode, gradient="reverse", steps=3, dropout=0.0, warmup=0, keep_steps=0):
  keras.utils.set_random_seed(0)
  encoder = LSTMEncoder(VOCAB, 6, 6, LATENT)
  decoder = LSTMDecoder(VOCAB, 6, 6, 0 if mode == "autoreg" else LATENT, dropout=dropout)
  model = SemiAmortizedVAE(decoder, encoder, mode=mode, latent_dim=LATENT,
                           svi_config=SVIConfig(steps=steps, lr=1.0, gradient=gradient,
                                                keep_steps=keep_steps),
                           kl_schedule=(schedules.Linear(warmup) if warmup
                                        else schedules.Constant()))
  model.compile(optimizer=keras.optimizers.SGD(1.0))
  return model


def one_step_updates(model, data):
  """{variable path: its change in one SGD(lr=1) step} = the gradient that step applied."""
  before = {v.path: v.numpy().copy() for v in model.trainable_variables}
  model.train_step(data)
  return {v.path: before[v.path] - v.numpy() for v in model.trainable_variables}


def gradients_of(model, data, loss_names, variables):
  seed = tf.random.experimental.stateless_fold_in(tf.constant([model.seed, 0]), tf.constant(0,
                                                                                         tf.int64))
  with tf.GradientTape(persistent=True) as tape:
    out = model.forward(data, seed, True, model.kl_schedule(0), model.svi_config.steps, None)
  grads = {}
  for name, vs in zip(loss_names, variables):
    for v, g in zip(vs, tape.gradient(out[name], vs)):
      grads[v.path] = np.zeros(v.shape) if g is None else tf.convert_to_tensor(g).numpy()
  return grads


def assert_updates_equal(updates, expected):
  """Two float32 computations of one gradient, {variable path: array}, agree to rounding."""
  assert set(updates) == set(expected)
  paths = sorted(updates)
  assert_close_to_scale([updates[p] for p in paths], [expected[p] for p in paths], names=paths)


def test_gradient_comparisons_allow_rounding_at_the_gradients_scale_and_catch_a_wrong_one():
  # The image SA-VAE's gradient as two CPU kinds computed it (an AVX-512 Xeon and an EPYC): the
  # first convolution bias, before BatchNorm, is zero in exact arithmetic and holds rounding
  # only; its two values differ by more than any fixed tolerance of the bias' own size.
  rng = np.random.default_rng(0)
  kernel = rng.normal(size=(3, 3, 1, 4))
  xeon = [kernel, np.array([-4.56e-06, -2.35e-07, 1.45e-06, -4.19e-09])]
  epyc = [kernel * (1 + 1e-7), np.array([-2.45e-06, 1.25e-07, -5.20e-07, 2.98e-07])]
  assert_close_to_scale(xeon, epyc)
  with pytest.raises(AssertionError):  # the old comparison: a fixed atol of 1e-6
    np.testing.assert_allclose(xeon[1], epyc[1], rtol=1e-4, atol=1e-6)
  # A real difference, in one variable of many, is still caught: one element off by 1%.
  wrong = [kernel.copy(), epyc[1]]
  wrong[0][0, 0, 0, 0] *= 1.01
  with pytest.raises(AssertionError):
    assert_close_to_scale(wrong, epyc)
  # So is a wrong small variable: the bias itself scaled by 100 (its values reach 4.6e-4).
  with pytest.raises(AssertionError):
    assert_close_to_scale([kernel, 100 * xeon[1]], epyc)


@pytest.mark.parametrize("mode", MODES)
def test_every_mode_trains_and_evaluates_with_ragged_batches(mode):
  model = make_model(mode, dropout=0.3, warmup=4)
  data = ragged_data()
  dataset = tf.data.Dataset.from_tensor_slices(
      {k: v.numpy() for k, v in data.items()}).batch(4)
  if model.method.needs_training_loop:  # aggressive: its inner loop is the training loop's
    with pytest.raises(ValueError, match="needs the training loop"):
      model.fit(dataset, epochs=1, verbose=0)
    return
  history = model.fit(dataset, epochs=2, verbose=0, shuffle=False)
  assert np.all(np.isfinite(history.history["loss"]))
  # Keras' evaluate shows progress (running means); the report is `evaluate.evaluate`'s, and
  # the two agree on what both show.
  results = model.evaluate(dataset, verbose=0, return_dict=True)
  expected = {"nll_bound", "kl"}
  if mode in ("svi", "vae_svi", "vae_svi_kl", "savae"):
    expected |= {"refined_nll_bound"}
  assert expected <= set(results)
  assert all(np.isfinite(float(v)) for v in results.values())
  report = evaluate.evaluate(model, dataset, num_samples=0)
  assert "ppl_bound" in report
  for name in expected:
    assert float(results[name]) == pytest.approx(report[name], rel=1e-5), name
  assert (model.encoder is None) == (mode in ("autoreg", "svi"))


def test_savae_step_with_the_reverse_sweep_equals_the_unrolled_one():
  data = ragged_data()
  unrolled = one_step_updates(make_model("savae", gradient="unrolled"), data)
  for keep_steps in (0, 2):  # all steps through the reverse sweep, or the last two kept
    reverse = one_step_updates(make_model("savae", keep_steps=keep_steps), data)
    # Two models, so the variable paths differ: compare in creation order.
    assert_close_to_scale(list(reverse.values()), list(unrolled.values()), names=list(unrolled))
  model = make_model("savae")
  updates = one_step_updates(model, data)
  assert all(np.abs(updates[v.path]).max() > 0 for v in model.encoder.trainable_variables)  # the encoder learns through lambda_0


def test_vae_svi_trains_the_decoder_only_at_lambda_k_and_the_encoder_only_at_lambda_0():
  model = make_model("vae_svi")
  data = ragged_data()
  enc, dec = model.encoder.trainable_variables, model.decoder.trainable_variables
  expected = gradients_of(model, data, ["encoder_loss", "loss"], [enc, dec])
  leaked = gradients_of(model, data, ["amortized_loss"], [dec])  # f(lambda_0) w.r.t. theta
  assert_updates_equal(one_step_updates(model, data), expected)
  assert any(np.abs(g).max() > 1e-4 for g in leaked.values())  # so the routing matters


def test_vae_svi_kl_trains_the_encoder_toward_the_refined_posterior():
  model = make_model("vae_svi_kl")
  data = ragged_data()
  enc, dec = model.encoder.trainable_variables, model.decoder.trainable_variables
  expected = gradients_of(model, data, ["encoder_loss", "loss"], [enc, dec])
  assert_updates_equal(one_step_updates(model, data), expected)


def test_vae_trains_everything_on_the_amortized_bound():
  model = make_model("vae")
  data = ragged_data()
  expected = gradients_of(model, data, ["loss"], [model.trainable_variables])
  assert_updates_equal(one_step_updates(model, data), expected)


def test_a_nan_loss_stops_training_with_the_step_named():
  model = make_model("vae")
  model.decoder.out.kernel.assign(tf.fill(model.decoder.out.kernel.shape, np.nan))
  with pytest.raises(tf.errors.InvalidArgumentError, match="not finite.*at step"):
    model.train_step(ragged_data())


@pytest.mark.parametrize("kwargs, message", [
    ({"mode": "beta_vae"}, "Unknown method"),
    ({"mode": "savae", "encoder": None}, "needs an encoder"),
])
def test_bad_configuration_is_a_clear_error(kwargs, message):
  decoder = LSTMDecoder(VOCAB, 6, 6, LATENT)
  with pytest.raises(ValueError, match=message):
    SemiAmortizedVAE(decoder, **{"encoder": LSTMEncoder(VOCAB, 6, 6, LATENT), **kwargs})


def test_svi_config_rejects_bad_settings():
  with pytest.raises(ValueError, match="steps must be >= 0"):
    SVIConfig(steps=-1)
  with pytest.raises(ValueError, match="Unknown refine gradient"):
    SVIConfig(gradient="adjoint")
  with pytest.raises(ValueError, match="Unknown SVI step_scale"):
    SVIConfig(step_scale="sum")
  with pytest.raises(ValueError, match="needs the training batch_size"):
    SVIConfig(step_scale="batch_mean")
  with pytest.raises(ValueError, match="keep_steps must be >= 0"):
    SVIConfig(keep_steps=-1)
  with pytest.raises(ValueError, match="keep_steps is a budget of the reverse sweep"):
    SVIConfig(gradient="unrolled", keep_steps=2)


def test_a_batch_mean_model_evaluates_with_the_per_example_equivalent_step():
  config = SVIConfig(step_scale="batch_mean", batch_size=8, lr=2.0, max_grad_norm=5.0)
  equivalent = config.per_example_equivalent()
  assert (equivalent.step_scale, equivalent.lr, equivalent.max_grad_norm) == (
      "per_example", 0.25, 40.0)
  assert SVIConfig().per_example_equivalent() == SVIConfig()
  assert SVIConfig().lr == 0.003 and config.lr == 2.0
  assert SVIConfig(step_scale="batch_mean", batch_size=8).lr == 1.0  # the paper's default
  # Evaluation of a batch_mean model: each example refined at lr / B whatever the batch.
  data = ragged_data()
  models = {}
  for name, svi_config in (("batch_mean", config), ("per_example", equivalent)):
    model = make_model("savae")
    model.svi_config = svi_config
    models[name] = model.score(data, 4, 5)
  for name in ("refined_nll_bound", "iw_nll", "mean"):
    np.testing.assert_allclose(models["batch_mean"][name], models["per_example"][name],
                               rtol=1e-6, err_msg=name)
  alone = models["batch_mean"]
  model = make_model("savae")
  model.svi_config = config
  first_two = model.score({k: v[:2] for k, v in data.items()}, 4, 5)
  np.testing.assert_allclose(first_two["refined_nll_bound"], alone["refined_nll_bound"][:2],
                             rtol=1e-5)


# --- Image models: the same modes and routing over a ResNet encoder and a gated PixelCNN. ---

def image_data(n=6, size=6, seed=0):
  rng = np.random.default_rng(seed)
  return {"images": tf.constant((rng.random((n, size, size, 1)) < 0.4).astype(np.float32))}


def make_image_model(mode, gradient="reverse", steps=2, optimizer=None):
  from savae_tf.networks.image import GatedPixelCNN, ResNetEncoder
  keras.utils.set_random_seed(0)
  encoder = ResNetEncoder(LATENT, channels=4, stages=1, image_shape=(6, 6))
  decoder = GatedPixelCNN(0 if mode == "autoreg" else LATENT, channels=4, kernel_sizes=(3, 3),
                          image_shape=(6, 6))
  model = SemiAmortizedVAE(decoder, encoder, mode=mode, latent_dim=LATENT,
                           svi_config=SVIConfig(steps=steps, gradient=gradient),
                           eval_num_samples=7)
  # SGD with lr 1 by default, so one step's update is the gradient (`one_step_updates`).
  model.compile(optimizer=optimizer or keras.optimizers.SGD(1.0))
  return model


# Aggressive trains through the training loop only (the text case checks that fit refuses it).
@pytest.mark.parametrize("mode", [m for m in MODES if not methods.METHODS[m].needs_training_loop])
def test_every_mode_trains_and_evaluates_on_images(mode):
  model = make_image_model(mode, optimizer=keras.optimizers.Adam(1e-3, global_clipnorm=5.0))
  dataset = tf.data.Dataset.from_tensor_slices(
      {k: v.numpy() for k, v in image_data().items()}).batch(3)
  history = model.fit(dataset, epochs=1, verbose=0, shuffle=False)
  assert np.all(np.isfinite(history.history["loss"]))
  results = model.evaluate(dataset, verbose=0, return_dict=True)
  assert "ppl_bound" not in results  # nats per image, no perplexity
  assert {"nll_bound", "kl", "iw_nll"} <= set(results)
  assert all(np.isfinite(float(v)) for v in results.values())
  if mode != "autoreg":
    # The importance-weighted NLL is a tighter estimate than the single-sample bound (up to
    # the noise of one sample).
    assert 0 < float(results["iw_nll"]) <= float(results["nll_bound"]) + 1.0


def test_image_savae_step_with_the_reverse_sweep_equals_the_unrolled_one():
  data = image_data()
  updates = {g: one_step_updates(make_image_model("savae", gradient=g), data)
             for g in ("unrolled", "reverse")}
  # The encoder's first two convolution biases feed BatchNorm: their gradient is zero in exact
  # arithmetic, so only a tolerance scaled to the whole gradient holds on every CPU kind.
  assert_close_to_scale(list(updates["reverse"].values()), list(updates["unrolled"].values()),
                        names=list(updates["unrolled"]))


def test_image_vae_svi_routes_gradients_as_for_text():
  model = make_image_model("vae_svi")
  data = image_data()
  enc, dec = model.encoder.trainable_variables, model.decoder.trainable_variables
  expected = gradients_of(model, data, ["encoder_loss", "loss"], [enc, dec])
  assert_updates_equal(one_step_updates(model, data), expected)


def test_a_batch_of_the_wrong_kind_is_a_clear_error():
  with pytest.raises(ValueError, match="image model needs batches"):
    make_image_model("vae").train_step(ragged_data())
  with pytest.raises(ValueError, match="text model needs batches"):
    make_model("vae").train_step(image_data())


def test_xla_is_off_unless_asked_where_keras_would_turn_it_on():
  with simulated_gpu():
    model = make_image_model("savae")  # compiled with the defaults
    assert model.jit_compile is False
    model.compile(optimizer=keras.optimizers.SGD(1.0), jit_compile=True)
    assert model.jit_compile is True
    # Keras' own resolution of "auto" turns it on here: the default above is ours.
    assert keras.Model._resolve_auto_jit_compile(model) is True
  assert keras.Model._resolve_auto_jit_compile(model) is False  # and on a CPU, off
