"""What a Keras training or evaluation step does differently under tf.distribute: whole-batch
reductions, the paper's clip of the whole batch's gradient, each example's noise as on one
device, and the workarounds Keras needs on several workers. Each is exact however unevenly a
batch is split, also for a replica that got no example."""

import keras
import tensorflow as tf

from savae_tf import cluster
from savae_tf import distributions
from savae_tf import svi


def replicas():
  """(replica context, number of replicas in sync); the context is None outside a replica."""
  context = tf.distribute.get_replica_context()
  return context, 1 if context is None else context.num_replicas_in_sync


def training_seed(seed, data):
  """The seed of one replica's share of a training batch: with the batch's "rows" (the
  corpora's datasets) each example draws the noise it would draw on one device; batches without
  them get independent noise per replica."""
  replica, count = replicas()
  if count == 1:
    return seed
  if "rows" in data:
    total = tf.cast(svi.global_batch_size(tf.shape(data["rows"])[0]), tf.int32)
    return distributions.BatchRows(seed, data["rows"], total)
  return tf.random.experimental.stateless_fold_in(seed, replica.replica_id_in_sync_group)


def whole_batch_means(out, names):
  """Each of `names` as the whole batch's mean over every replica, the same on each: `loss` is
  already this replica's share of it; the others are per-example values."""
  context, count = replicas()
  if count == 1:
    return {name: out[name] if name == "loss" else tf.reduce_mean(out[name]) for name in names}
  size = svi.global_batch_size(tf.shape(out["nll_bound"])[0])
  shares = [out[name] if name == "loss" else tf.reduce_sum(out[name]) / size for name in names]
  return dict(zip(names, context.all_reduce(tf.distribute.ReduceOp.SUM, shares)))


def whole_batch_sums(values):
  """Sums over every replica (the same on each) of the tensors in `values`."""
  context, count = replicas()
  return values if count == 1 else context.all_reduce(tf.distribute.ReduceOp.SUM, values)


def clipped_gradients(grads, optimizer, applied=None):
  """The gradients the optimizer applies: the first `applied` of `grads` (default all), clipped
  by the global norm of all of `grads` at the optimizer's `global_clipnorm`. The rest count in
  the norm without being applied: He et al.'s aggressive steps clip every parameter's gradient
  jointly and then update one network.

  Keras clips each replica's share before summing them; the paper clips the whole batch's
  gradient: with several replicas the sum is clipped here, and each share is then at most
  clip / replicas, so the optimizer's own clip never binds."""
  replica, count = replicas()
  applied = len(grads) if applied is None else applied
  clip = getattr(optimizer, "inner_optimizer", optimizer).global_clipnorm
  if not clip or (count == 1 and applied == len(grads)):
    return grads[:applied]
  if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
    clip = clip * optimizer.dynamic_scale  # the gradients are still scaled
  if count > 1:
    grads = replica.all_reduce(tf.distribute.ReduceOp.SUM, grads)
  return [tf.math.scalar_mul(1.0 / count, g)
          for g in tf.clip_by_global_norm(grads, clip)[0][:applied]]


def logs(results):
  """Keras 3 reduces each log of a multi-worker step with MEAN over axis 0, which a scalar lacks
  (tensorflow/tensorflow#72388); the logs are equal on every replica, so a length-1 axis changes
  no value."""
  if cluster.in_cluster():
    return {name: value[None] for name, value in results.items()}
  return results


def one_replica_batch(model, iterator):
  """A batch of one replica's share from Keras' epoch iterator, to build `model` from.

  Under a distribution strategy Keras builds from the first batch averaged over replicas, which
  MultiWorkerMirroredStrategy cannot do for a dict of inputs; one replica's share has the shapes
  and dtypes that building needs."""
  for _, _, batches in iterator:
    return tf.nest.map_structure(
        lambda v: model.distribute_strategy.experimental_local_results(v)[0], next(batches))
  return None
