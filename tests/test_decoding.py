"""Tests for savae_tf.decoding: drawing sentences from a decoder."""

import keras
import numpy as np
import tensorflow as tf

from savae_tf import decoding
from savae_tf.networks.text import LSTMDecoder

VOCAB, BOS, EOS, PAD = 9, 2, 3, 0


def decoder():
  keras.utils.set_random_seed(0)
  return LSTMDecoder(VOCAB, 5, 7, 2, init_scale=1.0)


def test_greedy_decoding_takes_the_argmax_given_the_tokens_so_far():
  dec, z = decoder(), tf.constant([[0.3, -1.0], [1.5, 0.2], [0.0, 0.0]])
  out = decoding.decode(dec, z, BOS, 6, 0.0, tf.constant([0, 0]))
  for row in range(3):
    prefix = [BOS]
    for t in range(int(out.lengths[row])):
      logits = dec(tf.constant([prefix + [PAD]]), z[row:row + 1])[0, -1]
      assert out.tokens[row, t] == int(tf.argmax(logits))
      prefix.append(int(out.tokens[row, t]))
    assert prefix[-1] == EOS or len(prefix) == 7


def test_tokens_after_the_end_token_are_padding_and_lengths_count_it():
  dec = decoder()
  z = tf.constant(np.random.default_rng(1).normal(size=(200, 2)), tf.float32)
  out = decoding.decode(dec, z, BOS, 10, 1.0, tf.constant([4, 2]), eos_id=EOS, pad_id=PAD)
  tokens, lengths = out.tokens.numpy(), out.lengths.numpy()
  ended = 0
  for row, length in zip(tokens, lengths):
    assert EOS not in row[:length - 1] and (row[length:] == PAD).all()
    ended += row[length - 1] == EOS
  assert 0 < ended < len(tokens)  # some rows ended early, some ran to max_length


def test_sampling_follows_the_softmax_and_replays_with_the_seed():
  dec = decoder()
  z = tf.zeros([4000, 2])
  out = decoding.decode(dec, z, BOS, 1, 1.0, tf.constant([7, 7]))
  again = decoding.decode(dec, z, BOS, 1, 1.0, tf.constant([7, 7]))
  np.testing.assert_array_equal(out.tokens, again.tokens)
  probs = tf.nn.softmax(dec(tf.constant([[BOS, PAD]]), z[:1])[0, 0]).numpy()
  freq = np.bincount(out.tokens[:, 0].numpy(), minlength=VOCAB) / 4000
  np.testing.assert_allclose(freq, probs, atol=4 * np.sqrt(probs.max() / 4000))
  cold = decoding.decode(dec, z, BOS, 1, 0.05, tf.constant([7, 7]))
  assert (cold.tokens[:, 0].numpy() == probs.argmax()).mean() > 0.99


def test_images_are_drawn_pixel_by_pixel_from_the_decoders_conditionals():
  from savae_tf.networks.image import GatedPixelCNN
  keras.utils.set_random_seed(1)
  pixel_cnn = GatedPixelCNN(2, channels=4, kernel_sizes=(3, 3), image_shape=(4, 5))
  z, seed = tf.random.normal([3, 2]), tf.constant([4, 2])
  means, samples = decoding.sample_images(pixel_cnn, z, seed)
  assert samples.shape == means.shape == (3, 4, 5, 1)
  # The decoder is causal, so run once on the finished images it gives every pixel's
  # conditional given the pixels drawn before it: those are the means...
  np.testing.assert_allclose(means, tf.sigmoid(pixel_cnn(samples, z)), rtol=1e-5, atol=1e-6)
  # ...and pixel i is 1 exactly when its uniform draw fell below its mean.
  for i in range(20):
    u = tf.random.stateless_uniform([3], tf.random.experimental.stateless_fold_in(seed, i))
    np.testing.assert_array_equal(samples[:, i // 5, i % 5, 0],
                                  tf.cast(u < means[:, i // 5, i % 5, 0], tf.float32))
  again = decoding.sample_images(pixel_cnn, z, seed)
  np.testing.assert_array_equal(again.samples, samples)
  baseline = GatedPixelCNN(0, channels=4, kernel_sizes=(3,), image_shape=(4, 5))
  assert decoding.sample_images(baseline, None, seed, batch_size=2).samples.shape == (2, 4, 5, 1)


def decode_by_rerunning_the_prefix(dec, z, max_length, temperature, seed):
  """The quadratic reference: every step reruns the decoder over the whole prefix."""
  batch = z.shape[0]
  tokens = np.full((batch, max_length + 1), PAD, np.int32)
  tokens[:, 0] = BOS
  for t in range(max_length):
    logits = dec(tf.constant(tokens), z)[:, t]
    drawn = tf.random.stateless_categorical(logits / max(temperature, 1e-6), 1,
                                            tf.random.experimental.stateless_fold_in(seed, t),
                                            dtype=tf.int32)[:, 0]
    tokens[:, t + 1] = drawn if temperature > 0 else tf.argmax(logits, -1)
  return tokens[:, 1:]


def test_carrying_the_state_draws_the_sentences_rerunning_the_prefix_draws():
  dec = decoder()
  z = tf.constant(np.random.default_rng(2).normal(size=(50, 2)), tf.float32)
  for temperature in (1.0, 0.0):
    out = decoding.decode(dec, z, BOS, 7, temperature, tf.constant([3, 1]))
    np.testing.assert_array_equal(
        out.tokens, decode_by_rerunning_the_prefix(dec, z, 7, temperature, tf.constant([3, 1])))


def sequence_log_prob(dec, z, tokens):
  """log p(tokens | z) of one sentence (tokens without <s>), by one decoder pass."""
  inputs = tf.constant([[BOS] + list(tokens)])
  log_probs = tf.nn.log_softmax(dec(inputs, z[None]))[0]
  return float(sum(log_probs[t, token] for t, token in enumerate(tokens)))


def test_beam_search_finds_the_most_probable_sentence_when_the_beam_holds_them_all():
  dec, z = decoder(), tf.constant([[0.3, -1.0], [1.5, 0.2]])
  length = 3
  beams = decoding.beam_search(dec, z, BOS, EOS, length, VOCAB ** (length - 1), PAD)
  for row in range(2):
    # Every sentence of at most `length` tokens (ending at EOS, or running to the limit).
    candidates = []
    for prefix in np.ndindex(*(VOCAB,) * length):
      cut = prefix.index(EOS) + 1 if EOS in prefix else length
      candidates.append(tuple(prefix[:cut]))
    scores = {c: sequence_log_prob(dec, z[row], c) for c in set(candidates)}
    best = max(scores, key=scores.get)
    n = int(beams.lengths[row, 0])
    assert tuple(beams.tokens[row, 0, :n].numpy()) == best
    assert (beams.tokens[row, 0, n:].numpy() == PAD).all()
    np.testing.assert_allclose(beams.log_probs[row, 0], scores[best], rtol=1e-5)
    # Every returned hypothesis is scored by its exact log-probability, best first.
    for k in range(5):
      n = int(beams.lengths[row, k])
      np.testing.assert_allclose(beams.log_probs[row, k],
                                 scores[tuple(beams.tokens[row, k, :n].numpy())], rtol=1e-5)
    assert np.all(np.diff(beams.log_probs[row].numpy()) <= 1e-6)


def test_a_beam_of_one_is_greedy_decoding():
  dec = decoder()
  z = tf.constant(np.random.default_rng(3).normal(size=(20, 2)), tf.float32)
  greedy = decoding.decode(dec, z, BOS, 8, 0.0, tf.constant([0, 0]), eos_id=EOS, pad_id=PAD)
  beams = decoding.beam_search(dec, z, BOS, EOS, 8, 1, PAD)
  np.testing.assert_array_equal(beams.tokens[:, 0], greedy.tokens)
  np.testing.assert_array_equal(beams.lengths[:, 0], greedy.lengths)
