"""What the step benchmarks share: the measurement (median time and allocator peak of repeated
calls) and the least work an exact SA-VAE step needs."""

import time

import numpy as np
import tensorflow as tf


def measure(fn, repeats):
  """(median seconds per call, peak MiB allocated during the calls) after one warm-up call.

  Peak is TensorFlow's CPU allocator peak minus what was allocated before the calls.
  """
  fn()  # trace and warm up
  tf.config.experimental.reset_memory_stats("CPU:0")
  before = tf.config.experimental.get_memory_info("CPU:0")["current"]
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  peak = tf.config.experimental.get_memory_info("CPU:0")["peak"] - before
  return float(np.median(times)), peak / 2**20


def exact_savae_floor(steps, decoder_flops, encoder_flops):
  """Least multiply FLOPs of an exact SA-VAE step over a VAE step's, counting only the matmuls
  and convolutions of decoder and encoder forwards D and E.

  A gradient costs two such products (data and weight) per forward product, so a VAE step is
  3 (D + E). An SA-VAE step needs, per refinement step, the lambda-gradient (forward + data
  gradient: 2 D) and in the reverse sweep the gradient with respect to (lambda, theta) of
  g = <u, d f / d lambda>, which is at least twice g's own 2 D, 4 D even if g's forward work were
  free; then the final loss's gradient 3 D and the encoder's 3 E. Total (6 K + 3) D + 3 E.
  """
  d, e = decoder_flops, encoder_flops
  return ((6 * steps + 3) * d + 3 * e) / (3 * (d + e))
