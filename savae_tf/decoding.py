"""Drawing sentences from a decoder p(x | z), one token at a time.

One mechanism for every decoder with the `prepare`/`logits` interface (networks/text.py): the
tokens so far live in a fixed buffer [batch, max_length + 1] that starts with `<s>`; step t runs
the decoder over the whole buffer and reads the logits at position t. The decoder is causal, so the
not-yet-written positions do not matter. This costs O(max_length^2) decoder positions instead of
O(max_length) with a carried LSTM state, and in exchange works unchanged for any decoder, with a
tensor `max_length` and no retracing.
"""

from typing import NamedTuple, Optional

import tensorflow as tf


class Decoded(NamedTuple):
  tokens: tf.Tensor   # int32 [batch, max_length], without <s>; pad after the end token
  lengths: tf.Tensor  # int32 [batch], tokens up to and including the end token


def decode(decoder, z, bos_id: int, max_length, temperature, seed, eos_id: Optional[int] = None,
           pad_id: int = 0, batch_size=None) -> Decoded:
  """Tokens drawn from p(x | z) by ancestral sampling, or greedily when temperature == 0.

  Token t is drawn from softmax(logits_t / temperature) with the stateless seed
  `fold_in(seed, t)`; temperature 0 takes the argmax. After `eos_id` every position is `pad_id`.

  Args:
    decoder: `prepare(tokens)` and `logits(context, z)`.
    z: [batch, latent], or None for a decoder without a latent (then give `batch_size`).
    max_length: tokens to draw (a Python int or int32 scalar tensor), >= 0.
    temperature: float scalar >= 0.
    seed: int32 [2].
  """
  max_length = tf.convert_to_tensor(max_length, tf.int32)
  temperature = tf.convert_to_tensor(temperature, tf.float32)
  checks = [tf.debugging.assert_non_negative(max_length, message="max_length must be >= 0"),
            tf.debugging.assert_non_negative(temperature, message="temperature must be >= 0")]
  with tf.control_dependencies(checks):
    batch = tf.shape(z)[0] if z is not None else tf.convert_to_tensor(batch_size, tf.int32)
  buffer = tf.concat([tf.fill([batch, 1], bos_id),
                      tf.fill([batch, max_length], pad_id)], axis=1)
  positions = tf.range(max_length + 1)[None, :]
  finished = tf.zeros([batch], tf.bool)
  lengths = tf.zeros([batch], tf.int32)

  def body(t, buffer, finished, lengths):
    logits = decoder.logits(decoder.prepare(buffer), z)[:, t]
    step_seed = tf.random.experimental.stateless_fold_in(seed, t)
    drawn = tf.random.stateless_categorical(
        logits / tf.maximum(temperature, 1e-6), 1, step_seed, dtype=tf.int32)[:, 0]
    greedy = tf.argmax(logits, axis=-1, output_type=tf.int32)
    token = tf.where(temperature > 0, drawn, greedy)
    token = tf.where(finished, pad_id, token)
    lengths += tf.cast(~finished, tf.int32)
    if eos_id is not None:
      finished |= tf.equal(token, eos_id)
    buffer = tf.where(tf.equal(positions, t + 1), token[:, None], buffer)
    return t + 1, buffer, finished, lengths

  _, buffer, _, lengths = tf.while_loop(
      lambda t, *_: t < max_length, body, (tf.constant(0), buffer, finished, lengths))
  return Decoded(buffer[:, 1:], lengths)
