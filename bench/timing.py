"""The one measurement both benchmarks use: median time and allocator peak of repeated calls."""

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
