"""Drawing sentences and images from a decoder p(x | z), one token or pixel at a time.

Sentences: the decoder carries its recurrent state (`initial_state(z, batch_size)` and
`step(tokens, z, state) -> (logits, state)`), so drawing n tokens costs n decoder steps. Three
ways to choose tokens: ancestral sampling, greedy (temperature 0) and beam search.

Images: a PixelCNN has no state to carry; step i runs the decoder over the whole image drawn so
far and reads pixel i (the decoder is causal, so pixels not yet drawn do not matter).
"""

from typing import NamedTuple, Optional

import tensorflow as tf

from savae_tf import distributions


class SampledImages(NamedTuple):
  means: tf.Tensor    # float32 [batch, height, width, 1]: p(x_i = 1 | x_<i, z) at each pixel
  samples: tf.Tensor  # float32 [batch, height, width, 1] in {0, 1}, drawn pixel by pixel


class Decoded(NamedTuple):
  tokens: tf.Tensor   # int32 [batch, max_length], without <s>; pad after the end token
  lengths: tf.Tensor  # int32 [batch], tokens up to and including the end token


def _batch_size(z, batch_size):
  return tf.shape(z)[0] if z is not None else tf.convert_to_tensor(batch_size, tf.int32)


def _after_checks(checks, *values):
  """`values` as tensors no op can use before `checks` have passed (so a bad argument is named
  by its check, not by the first op it breaks)."""
  with tf.control_dependencies(checks):
    return [tf.identity(value) for value in values]


def decode(decoder, z, bos_id: int, max_length, temperature, seed, eos_id: Optional[int] = None,
           pad_id: int = 0, batch_size=None) -> Decoded:
  """Tokens drawn from p(x | z) by ancestral sampling, or greedily when temperature == 0.

  Token t is drawn from softmax(logits_t / temperature) with the stateless seed
  `fold_in(seed, t)`; temperature 0 takes the argmax. After `eos_id` every position is `pad_id`.

  Args:
    decoder: `initial_state(z, batch_size)` and `step(tokens, z, state)`.
    z: [batch, latent], or None for a decoder without a latent (then give `batch_size`).
    max_length: tokens to draw (a Python int or int32 scalar tensor), >= 0.
    temperature: float scalar >= 0.
    seed: int32 [2].
  """
  max_length = tf.convert_to_tensor(max_length, tf.int32)
  temperature = tf.convert_to_tensor(temperature, tf.float32)
  checks = [tf.debugging.assert_non_negative(max_length, message="max_length must be >= 0"),
            tf.debugging.assert_non_negative(temperature, message="temperature must be >= 0")]
  batch, max_length, temperature = _after_checks(checks, _batch_size(z, batch_size), max_length,
                                                 temperature)
  finished = tf.zeros([batch], tf.bool)
  lengths = tf.zeros([batch], tf.int32)
  drawn_tokens = tf.TensorArray(tf.int32, size=max_length)

  def body(t, previous, state, finished, lengths, drawn_tokens):
    logits, state = decoder.step(previous, z, state)
    step_seed = tf.random.experimental.stateless_fold_in(seed, t)
    drawn = tf.random.stateless_categorical(
        logits / tf.maximum(temperature, 1e-6), 1, step_seed, dtype=tf.int32)[:, 0]
    greedy = tf.argmax(logits, axis=-1, output_type=tf.int32)
    token = tf.where(temperature > 0, drawn, greedy)
    token = tf.where(finished, pad_id, token)
    lengths += tf.cast(~finished, tf.int32)
    if eos_id is not None:
      finished |= tf.equal(token, eos_id)
    return t + 1, token, state, finished, lengths, drawn_tokens.write(t, token)

  *_, lengths, drawn_tokens = tf.while_loop(
      lambda t, *_: t < max_length, body,
      (tf.constant(0), tf.fill([batch], bos_id), decoder.initial_state(z, batch), finished,
       lengths, drawn_tokens))
  tokens = tf.reshape(tf.transpose(drawn_tokens.stack()), [batch, max_length])
  return Decoded(tokens, lengths)


class Beams(NamedTuple):
  tokens: tf.Tensor     # int32 [batch, beam_size, max_length], best first; pad after the end
  lengths: tf.Tensor    # int32 [batch, beam_size], tokens up to and including the end token
  log_probs: tf.Tensor  # float32 [batch, beam_size]: log p(tokens | z), the score


def beam_search(decoder, z, bos_id: int, eos_id: Optional[int], max_length, beam_size,
                pad_id: int = 0, batch_size=None) -> Beams:
  """The `beam_size` most probable sentences under p(x | z) that a beam of that width finds.

  Each step extends every live hypothesis by every token and keeps the `beam_size` best by
  log p(prefix | z); a hypothesis that drew `eos_id` is finished and keeps its score (it is only
  ever extended by padding, at no cost). Hypotheses that reach `max_length` without the end token
  compete with the same score (without `eos_id`, all run to `max_length`). Deterministic: no
  noise. Beam size 1 is greedy decoding.
  """
  max_length = tf.convert_to_tensor(max_length, tf.int32)
  beam_size = tf.convert_to_tensor(beam_size, tf.int32)
  checks = [tf.debugging.assert_non_negative(max_length, message="max_length must be >= 0"),
            tf.debugging.assert_positive(beam_size, message="beam_size must be >= 1")]
  batch, max_length, beam_size = _after_checks(checks, _batch_size(z, batch_size), max_length,
                                               beam_size)
  flat = batch * beam_size
  z_beams = None if z is None else tf.repeat(z, beam_size, axis=0)
  state = decoder.initial_state(z_beams, flat)
  # Only the first copy of each example's hypothesis is live at the start (the others would be
  # duplicates), so its siblings start at -inf.
  log_probs = tf.tile(tf.concat([[0.0], tf.fill([beam_size - 1], -float("inf"))], 0), [batch])
  history = tf.zeros([flat, 0], tf.int32)
  finished = tf.zeros([flat], tf.bool)
  lengths = tf.zeros([flat], tf.int32)

  def body(t, previous, state, log_probs, history, finished, lengths):
    logits, state = decoder.step(previous, z_beams, state)
    vocab = tf.shape(logits)[-1]
    step_log_probs = tf.nn.log_softmax(logits)
    # A finished hypothesis continues only with padding, at no cost.
    padding_only = tf.where(tf.equal(tf.range(vocab), pad_id), 0.0, -float("inf"))
    step_log_probs = tf.where(finished[:, None], padding_only[None, :], step_log_probs)
    candidates = tf.reshape(log_probs[:, None] + step_log_probs, [batch, beam_size * vocab])
    best, index = tf.math.top_k(candidates, k=beam_size)
    parent = tf.reshape(index // vocab + tf.range(batch)[:, None] * beam_size, [flat])
    token = tf.reshape(index % vocab, [flat])
    state = tf.nest.map_structure(lambda s: tf.gather(s, parent), state)
    was_finished = tf.gather(finished, parent)
    lengths = tf.gather(lengths, parent) + tf.cast(~was_finished, tf.int32)
    finished = was_finished if eos_id is None else was_finished | tf.equal(token, eos_id)
    history = tf.concat([tf.gather(history, parent), token[:, None]], axis=1)
    return t + 1, token, state, tf.reshape(best, [flat]), history, finished, lengths

  _, _, _, log_probs, history, _, lengths = tf.while_loop(
      lambda t, *_: t < max_length, body,
      (tf.constant(0), tf.fill([flat], bos_id), state, log_probs, history, finished, lengths),
      shape_invariants=(tf.TensorShape([]), tf.TensorShape([None]),
                        tf.nest.map_structure(lambda s: s.shape, state), tf.TensorShape([None]),
                        tf.TensorShape([None, None]), tf.TensorShape([None]),
                        tf.TensorShape([None])))
  return Beams(tf.reshape(history, [batch, beam_size, max_length]),
               tf.reshape(lengths, [batch, beam_size]),
               tf.reshape(log_probs, [batch, beam_size]))


def sample_images(decoder, z, seed, batch_size=None, shared_noise: bool = False) -> SampledImages:
  """Binary images drawn from p(x | z) pixel by pixel in raster order (ancestral sampling).

  Pixel i is 1 when u_i < p(x_i = 1 | x_<i, z), with u_i uniform from `fold_in(seed, i)`, so
  the same seed gives the same images. With `shared_noise` every image of the batch uses the same
  u_i, so images differ only through z (a latent traversal). With `distributions.ExampleSeeds`,
  image b's u_i come from key b alone (not from its position in the batch).

  Args:
    decoder: `prepare(images)`, `logits(context, z)` and `image_shape` (height, width).
    z: [batch, latent], or None for a decoder without a latent (then give `batch_size`).
    seed: int32 [2], or `distributions.ExampleSeeds` (one key per image).
  """
  height, width = decoder.image_shape
  batch = _batch_size(z, batch_size)
  images = tf.zeros([batch, height, width, 1])
  means = tf.zeros([batch, height, width, 1])
  pixel_ids = tf.reshape(tf.range(height * width), [1, height, width, 1])

  def body(i, images, means):
    row, col = i // width, i % width
    mean = tf.sigmoid(decoder.logits(decoder.prepare(images), z)[:, row, col, 0])
    uniform = distributions.uniform(distributions.fold_in(seed, i),
                                    [1 if shared_noise else batch])
    pixel = tf.cast(uniform < mean, tf.float32)
    here = tf.equal(pixel_ids, i)
    images = tf.where(here, pixel[:, None, None, None], images)
    means = tf.where(here, mean[:, None, None, None], means)
    return i + 1, images, means

  _, images, means = tf.while_loop(lambda i, *_: i < height * width, body,
                                   (tf.constant(0), images, means))
  return SampledImages(means, images)
