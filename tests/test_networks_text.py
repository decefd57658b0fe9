"""Tests for savae_tf.networks.text: padding never changes a result, dropout replays, configs."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from savae_tf import objectives
from savae_tf.networks import text
from savae_tf.networks.text import LSTMDecoder, LSTMEncoder

VOCAB = 13


def ragged_batch():
  rng = np.random.default_rng(0)
  lengths = np.array([7, 3, 5])
  tokens = np.zeros((3, 7), np.int32)
  for i, n in enumerate(lengths):
    tokens[i, :n] = rng.integers(1, VOCAB, n)
  return tf.constant(tokens), tf.constant(lengths, tf.int32)


def test_encoder_reads_each_sentence_at_its_own_last_token():
  keras.utils.set_random_seed(0)
  encoder = LSTMEncoder(VOCAB, word_dim=4, hidden_dim=6, latent_dim=3)
  tokens, lengths = ragged_batch()
  mean, logvar = encoder(tokens, lengths)
  assert mean.shape == (3, 3) and logvar.shape == (3, 3)
  for i, n in enumerate(lengths.numpy()):
    alone_mean, alone_logvar = encoder(tokens[i:i + 1, :n], lengths[i:i + 1])
    np.testing.assert_allclose(mean[i], alone_mean[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(logvar[i], alone_logvar[0], rtol=1e-5, atol=1e-6)
  # Changing the padding changes nothing.
  noisy = tf.where(tf.sequence_mask(lengths, 7), tokens, 5)
  np.testing.assert_allclose(encoder(noisy, lengths)[0], mean, rtol=1e-6)


@pytest.mark.parametrize("latent_dim", [0, 3])
def test_decoder_nll_of_a_ragged_batch_equals_sentences_run_one_by_one(latent_dim):
  keras.utils.set_random_seed(1)
  decoder = LSTMDecoder(VOCAB, word_dim=4, hidden_dim=6, latent_dim=latent_dim)
  tokens, lengths = ragged_batch()
  z = tf.random.normal([3, 3]) if latent_dim else None
  logits = decoder(tokens, z)
  assert logits.shape == (3, 6, VOCAB)
  nll = objectives.token_nll(logits, tokens[:, 1:], objectives.target_mask(lengths, 6))
  for i, n in enumerate(lengths.numpy()):
    alone = decoder(tokens[i:i + 1, :n], None if z is None else z[i:i + 1])
    alone_nll = objectives.token_nll(alone, tokens[i:i + 1, 1:n], tf.ones([1, n - 1], bool))
    np.testing.assert_allclose(nll[i], alone_nll[0], rtol=1e-5)


def test_decoder_uses_z_through_the_input_and_the_initial_state():
  keras.utils.set_random_seed(2)
  decoder = LSTMDecoder(VOCAB, word_dim=4, hidden_dim=6, latent_dim=3)
  tokens, _ = ragged_batch()
  z = tf.random.normal([3, 3])
  with tf.GradientTape() as tape:
    tape.watch(z)
    first = decoder(tokens, z)[:, 0]
  # The first prediction sees z both ways; its gradient is nonzero.
  assert float(tf.norm(tape.gradient(first, z))) > 0
  assert decoder.lstm.cell.kernel.shape[0] == 4 + 3


def test_dropout_replays_with_a_seed_and_is_off_at_evaluation():
  keras.utils.set_random_seed(3)
  decoder = LSTMDecoder(VOCAB, word_dim=8, hidden_dim=8, latent_dim=2, dropout=0.5)
  tokens, _ = ragged_batch()
  z = tf.zeros([3, 2])
  a = decoder(tokens, z, training=True, seed=tf.constant([1, 2]))
  b = decoder(tokens, z, training=True, seed=tf.constant([1, 2]))
  c = decoder(tokens, z, training=True, seed=tf.constant([1, 3]))
  np.testing.assert_array_equal(a, b)
  assert float(tf.reduce_max(tf.abs(a - c))) > 1e-3
  np.testing.assert_array_equal(decoder(tokens, z), decoder(tokens, z, training=False,
                                                             seed=tf.constant([1, 2])))
  with pytest.raises(ValueError, match="needs a seed"):
    decoder(tokens, z, training=True)


def test_paper_initialisation_is_uniform_within_the_scale():
  encoder = LSTMEncoder(VOCAB, 4, 6, 3, init_scale=0.1)
  decoder = LSTMDecoder(VOCAB, 4, 6, 3, init_scale=0.1)
  for variable in encoder.trainable_variables + decoder.trainable_variables:
    values = variable.numpy()
    assert np.all(np.abs(values) <= 0.1), variable.path
    assert len(np.unique(values)) == values.size, variable.path  # not a constant default bias


@pytest.mark.parametrize("cls, args", [(LSTMEncoder, (VOCAB, 4, 6, 3)),
                                       (LSTMDecoder, (VOCAB, 4, 6, 3))])
def test_config_round_trip(cls, args):
  layer = cls(*args, init_scale=0.1, use_cudnn=False)
  clone = cls.from_config(layer.get_config())
  assert clone.get_config() == layer.get_config()
  assert [v.shape for v in clone.weights] == [v.shape for v in layer.weights]


def test_lstm_sequence_computes_the_keras_lstm_with_masks():
  keras.utils.set_random_seed(4)
  layer = keras.layers.LSTM(6, return_sequences=True, return_state=True)
  inputs = tf.random.normal([3, 7, 5])
  _, lengths = ragged_batch()
  mask = tf.sequence_mask(lengths, 7)
  h0, c0 = tf.random.normal([3, 6]), tf.random.normal([3, 6])
  for kwargs in ({}, {"mask": mask}):
    expected, h, c = layer(inputs, initial_state=[h0, c0], **kwargs)
    outputs, state = text.lstm_sequence(layer, text.input_gates(layer, inputs),
                                        text.LSTMState(h0, c0), **kwargs)
    np.testing.assert_allclose(state.h, h, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(state.c, c, rtol=1e-5, atol=1e-6)
    real = mask if kwargs else tf.ones_like(mask)  # Keras' outputs at masked steps differ
    np.testing.assert_allclose(tf.boolean_mask(outputs, real), tf.boolean_mask(expected, real),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("latent_dim", [0, 3])
def test_the_hoisted_recurrence_and_the_keras_layer_give_the_same_model(latent_dim,
                                                                         monkeypatch):
  keras.utils.set_random_seed(5)
  decoder = LSTMDecoder(VOCAB, 4, 6, latent_dim, dropout=0.3)
  encoder = LSTMEncoder(VOCAB, 4, 6, 3)
  tokens, lengths = ragged_batch()
  z = tf.random.normal([3, 3]) if latent_dim else None
  seed = tf.constant([3, 1])

  def run():
    return (decoder(tokens, z), decoder(tokens, z, training=True, seed=seed),
            *encoder(tokens, lengths))

  ours = run()
  monkeypatch.setattr(text, "runs_keras_lstm", lambda use_cudnn: True)
  for a, b in zip(ours, run()):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_one_embedding_dropout_mask_per_batch_shared_by_every_z():
  keras.utils.set_random_seed(6)
  decoder = LSTMDecoder(VOCAB, 8, 8, 2, dropout=0.5)
  tokens, _ = ragged_batch()
  context = decoder.prepare(tokens, training=True, seed=tf.constant([5, 5]))
  np.testing.assert_array_equal(context, decoder.prepare(tokens, True, tf.constant([5, 5])))
  assert float(tf.reduce_max(tf.abs(
      context - decoder.prepare(tokens, True, tf.constant([5, 6]))))) > 1e-3
  # The mask lives in the context, so logits at any z (any refinement step) see the same one:
  # with output dropout off, training logits equal evaluation logits of the dropped context.
  decoder.dropout = 0.0
  z = tf.random.normal([3, 2])
  np.testing.assert_allclose(decoder.logits(context, z, training=True, seed=tf.constant([1, 1])),
                             decoder.logits(context, z), rtol=1e-6)


def test_second_order_gradient_through_the_recurrence_matches_differences_in_float64():
  keras.backend.set_floatx("float64")
  try:
    keras.utils.set_random_seed(7)
    decoder = LSTMDecoder(VOCAB, 4, 5, 2, dtype="float64")
    tokens, lengths = ragged_batch()
    mask = objectives.target_mask(lengths, 6)
    context = decoder.prepare(tokens)
    z = tf.constant(np.random.default_rng(0).normal(size=(3, 2)))
    u = tf.constant(np.random.default_rng(1).normal(size=(3, 2)))

    def gradient(z):
      with tf.GradientTape() as tape:
        tape.watch(z)
        nll = tf.reduce_sum(objectives.token_nll(decoder.logits(context, z), tokens[:, 1:], mask))
      return tape.gradient(nll, z)

    with tf.GradientTape() as outer:
      outer.watch(z)
      directional = tf.reduce_sum(gradient(z) * u)
    hvp = outer.gradient(directional, z)
    h = 1e-5
    numerical = (gradient(z + h * u) - gradient(z - h * u)) / (2 * h)
    np.testing.assert_allclose(hvp, numerical, rtol=1e-6, atol=1e-8)
  finally:
    keras.backend.set_floatx("float32")


@pytest.mark.parametrize("latent_dim", [0, 2])
def test_step_carries_the_state_as_the_whole_sequence_does(latent_dim):
  keras.utils.set_random_seed(8)
  decoder = LSTMDecoder(VOCAB, 4, 6, latent_dim)
  tokens, _ = ragged_batch()
  z = tf.random.normal([3, 2]) if latent_dim else None
  expected = decoder(tokens, z)
  state = decoder.initial_state(z, 3)
  for t in range(tokens.shape[1] - 1):
    logits, state = decoder.step(tokens[:, t], z, state)
    np.testing.assert_allclose(logits, expected[:, t], rtol=1e-5, atol=1e-6)


def step_by_step(gates, h0, c0, recurrent_kernel, mask=None):
  """The reference recurrence: `lstm_cell` in a Python loop (TensorFlow differentiates it),
  carrying the state where `mask` [batch, time] is False; (outputs, final state)."""
  h, c, outputs = h0, c0, []
  for t in range(gates.shape[1]):
    new = text.lstm_cell(gates[:, t], text.LSTMState(h, c), recurrent_kernel)
    if mask is not None:
      keep = mask[:, t, None]
      new = text.LSTMState(tf.where(keep, new.h, h), tf.where(keep, new.c, c))
    h, c = new
    outputs.append(h)
  return tf.stack(outputs, 1), text.LSTMState(h, c)


@pytest.mark.parametrize("xla", [False, True])  # each sweep compiled by XLA: the same numbers
@pytest.mark.parametrize("masked", [True, False])  # without a mask no step selects
def test_the_hand_written_reverse_sweep_is_the_gradient_of_the_recurrence_in_float64(masked,
                                                                                      xla):
  rng = np.random.default_rng(9)
  batch, steps, hidden = 3, 7, 4
  layer = keras.layers.LSTM(hidden, dtype="float64")
  layer.build((None, None, 2))
  gates = tf.constant(rng.normal(size=(batch, steps, 4 * hidden)))
  state = text.LSTMState(tf.constant(rng.normal(size=(batch, hidden))),
                         tf.constant(rng.normal(size=(batch, hidden))))
  _, lengths = ragged_batch()
  mask = tf.sequence_mask(lengths, steps) if masked else None
  weights = tf.constant(rng.normal(size=(batch, steps, hidden)))
  kernel = layer.cell.recurrent_kernel

  def loss(outputs, final):
    return tf.reduce_sum(outputs * weights) + tf.reduce_sum(final.h * final.c)

  def reference():
    return loss(*step_by_step(gates, state.h, state.c, tf.convert_to_tensor(kernel), mask))

  sources = [gates, state.h, state.c, kernel]
  with tf.GradientTape() as tape:
    tape.watch(sources[:3])
    expected_value = reference()
  expected = tape.gradient(expected_value, sources)
  def gradient():
    with tf.GradientTape() as tape:
      tape.watch(sources[:3])
      value = loss(*text.lstm_sequence(layer, gates, state, mask, xla=xla))
    return value, tape.gradient(value, sources)

  results = [gradient()]  # no other tape
  with tf.GradientTape():
    results.append(gradient())  # a recording tape: the gradient is recorded for a second order
  for value, got in results:
    np.testing.assert_allclose(value, expected_value, rtol=1e-12)
    for a, b in zip(got, expected):
      np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("compiled,masked,xla", [
    (False, True, False), (True, True, False), (True, False, False),
    (False, True, True), (True, True, True), (True, False, True)])
def test_the_hand_written_second_order_sweep_matches_autodiff_of_the_recurrence_in_float64(
    compiled, masked, xla):
  """Gradient of a gradient (the Hessian of a loss times a direction) in every input of the
  recurrence, with padding and without a mask, against TensorFlow differentiating the
  step-by-step loop twice; with the sweeps as they are and each compiled by XLA."""
  rng = np.random.default_rng(10)
  batch, steps, hidden = 3, 7, 4
  layer = keras.layers.LSTM(hidden, dtype="float64")
  layer.build((None, None, 2))
  _, lengths = ragged_batch()
  mask = tf.sequence_mask(lengths, steps) if masked else None
  weights = tf.constant(rng.normal(size=(batch, steps, hidden)))
  kernel = tf.convert_to_tensor(layer.cell.recurrent_kernel)
  point = [tf.constant(rng.normal(size=(batch, steps, 4 * hidden))),
           tf.constant(rng.normal(size=(batch, hidden))),
           tf.constant(rng.normal(size=(batch, hidden))), kernel]
  directions = [tf.constant(rng.normal(size=x.shape)) for x in point]

  def loss(outputs, final):  # nonlinear in the outputs and both final states
    return tf.reduce_sum(tf.sin(outputs * weights)) + tf.reduce_sum(final.h * final.c ** 2)

  def ours(gates, h0, c0, recurrent_kernel):
    class Layer:  # lstm_sequence reads only the units and the recurrent kernel
      units = hidden
      cell = type("Cell", (), {"recurrent_kernel": recurrent_kernel})
    return loss(*text.lstm_sequence(Layer, gates, text.LSTMState(h0, c0), mask, xla=xla))

  def reference(gates, h0, c0, recurrent_kernel):
    return loss(*step_by_step(gates, h0, c0, recurrent_kernel, mask))

  def hessian_vector_product(fn):
    with tf.GradientTape() as outer:
      outer.watch(point)
      with tf.GradientTape() as inner:
        inner.watch(point)
        value = fn(*point)
      directional = tf.add_n([tf.reduce_sum(g * d) for g, d in
                              zip(inner.gradient(value, point), directions)])
    return outer.gradient(directional, point)

  got = (tf.function(hessian_vector_product) if compiled else hessian_vector_product)(ours)
  expected = hessian_vector_product(reference)
  for a, b in zip(got, expected):
    np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_dropout_is_tensorflows_stateless_dropout_and_splits_by_rows():
  from savae_tf import distributions
  from savae_tf.networks.text import dropout
  x = tf.random.stateless_normal([6, 5, 4], [1, 2])
  seed = tf.constant([3, 9])
  expected = tf.nn.experimental.stateless_dropout(x, rate=0.4, seed=seed)
  np.testing.assert_array_equal(dropout(x, 0.4, seed, training=True), expected)
  rows = tf.constant([4, 5])  # a replica's part of the batch
  part = dropout(tf.gather(x, rows), 0.4, distributions.BatchRows(seed, rows, tf.constant(6)),
                 training=True)
  np.testing.assert_array_equal(part, tf.gather(expected, rows))


def test_xla_sweeps_is_kept_in_the_config_computes_the_same_and_a_wrong_value_is_named():
  keras.utils.set_random_seed(7)
  plain = LSTMDecoder(VOCAB, 4, 6, 3)
  compiled = LSTMDecoder.from_config({**plain.get_config(), "xla_sweeps": "on"})
  compiled.set_weights(plain.get_weights())
  assert compiled.get_config()["xla_sweeps"] == "on" and plain.xla_sweeps == "auto"
  tokens, _ = ragged_batch()
  z = tf.random.normal([3, 3])
  np.testing.assert_allclose(compiled(tokens, z), plain(tokens, z), rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="Unknown XLA setting 'yes'"):
    LSTMEncoder(VOCAB, 4, 6, 3, xla_sweeps="yes")
