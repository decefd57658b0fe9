"""A multi-worker cluster (tf.distribute.MultiWorkerMirroredStrategy over TF_CONFIG) seen from
one worker: is there one, is this worker the chief, where it writes, and whether its variables
equal the others'. Outside a cluster every function answers as for a single process."""

import contextlib
import hashlib
import shutil
import tempfile

import tensorflow as tf


class LostWorkerError(RuntimeError):
  """A collective operation failed because another worker of the cluster stopped."""


def in_cluster() -> bool:
  """Whether the current strategy spans several worker processes."""
  strategy = tf.distribute.get_strategy()
  return (isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
          and strategy.extended._in_multi_worker_mode())  # pylint: disable=protected-access


def is_chief() -> bool:
  """Whether this process owns the run's directory: always, except on the non-chief workers of a
  cluster (the chief is task "chief", or worker 0 if there is none)."""
  if not in_cluster():
    return True
  resolver = tf.distribute.get_strategy().cluster_resolver
  if resolver.task_type in (None, "chief"):
    return True
  return (resolver.task_type == "worker" and resolver.task_id == 0
          and "chief" not in resolver.cluster_spec().as_dict())


@contextlib.contextmanager
def worker_directory(model_dir: str):
  """The directory this process writes the run into: `model_dir` on the chief; on any other
  worker a temporary directory, removed at the end. Every worker does the same work and writes
  the same files (saving is a collective operation on several workers, and work done by one
  worker only desynchronises them); only the chief's files outlive the run. Every worker resumes
  from `model_dir`, which must be on storage all workers share."""
  if is_chief():
    yield model_dir
    return
  directory = tempfile.mkdtemp(prefix="savae-worker-")
  try:
    yield directory
  finally:
    shutil.rmtree(directory, ignore_errors=True)


def variables_checksum(variables) -> str:
  """A digest of the variables' values as this worker holds them; equal on every worker of a
  cluster that stayed in sync."""
  digest = hashlib.sha256()
  for variable in variables:
    digest.update(tf.convert_to_tensor(variable).numpy().tobytes())
  return digest.hexdigest()[:16]


@contextlib.contextmanager
def lost_worker_as_error(what: str):
  """Re-raises the error of a collective operation whose peer died (the strategy's health check
  aborts every collective) as LostWorkerError, naming `what` was running."""
  try:
    yield
  except (tf.errors.UnavailableError, tf.errors.DeadlineExceededError) as error:
    if not in_cluster():
      raise
    detail = error.message.strip().splitlines()
    raise LostWorkerError(
        f"a worker of the cluster stopped during {what} ({detail[0] if detail else error}); "
        "restart every worker with the same command: training resumes from the last checkpoint"
    ) from None
