"""Tests for savae_tf.networks.text: padding never changes a result, dropout replays, configs."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from savae_tf import objectives
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
