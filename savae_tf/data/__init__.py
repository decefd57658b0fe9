"""Data pipelines: synthetic (the oracle of Table 1), text and binarized images."""

from typing import Callable, Dict, Iterable

import numpy as np
import tensorflow as tf


class DataError(ValueError):
  """A data file is missing, empty or unusable; the message names the file and the problem."""


def batch_dataset(batches: Callable[[], Iterable[Dict[str, np.ndarray]]],
                  signature: Dict[str, tf.TensorSpec], count: int) -> tf.data.Dataset:
  """The `count` batches that `batches()` yields, as a prefetched tf.data pipeline in which each
  batch also carries "rows", its examples' positions 0..n-1.

  Under tf.distribute, Keras splits every batch across the replicas (and, on several workers,
  each worker keeps its replicas' parts: sharding by data), so every step sees the same examples
  as on one device; "rows" goes along, so that each example draws the noise it would draw there
  (`distributions.BatchRows`)."""
  def with_rows():
    for batch in batches():
      size = len(next(iter(batch.values())))
      # Copies: TensorFlow may wrap a yielded array without copying it and later write an op's
      # output into that buffer (under tf.distribute it did, corrupting cached batches).
      yield dict({name: np.array(value) for name, value in batch.items()},
                 rows=np.arange(size, dtype=np.int32))

  signature = dict(signature, rows=tf.TensorSpec([None], tf.int32))
  dataset = tf.data.Dataset.from_generator(with_rows, output_signature=signature)
  options = tf.data.Options()
  options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
  # A known length lets Keras show progress and ETA and end the epoch cleanly.
  return (dataset.with_options(options)
          .apply(tf.data.experimental.assert_cardinality(count)).prefetch(tf.data.AUTOTUNE))
