"""SavedModel export: raw sentences or images in, refinement inside the graph.

The contract (signatures, names, dtypes, edge cases) is written in export/README.md and held by
tests/test_export.py and tests/test_export_images.py; the signatures every model has are
`savae_tf.signatures.ModelExport`'s, and its domain's export module adds the rest. `export(model, artefacts, export_dir)`
writes `<export_dir>/<version>/`: the signatures (for TF Serving) and, beside each, a one-dict
endpoint `<name>_dict` (for Keras' `TFSMLayer`).
"""

import logging
import os
import re
from typing import Any, Optional

from absl import logging as absl_logging
import tensorflow as tf

from savae_tf import devices
from savae_tf import domains
from savae_tf import runs


def _versions(export_dir: str):
  if not os.path.isdir(export_dir):
    return []
  return [int(n) for n in os.listdir(export_dir) if re.fullmatch(r"\d+", n)]


def next_version(export_dir: str) -> int:
  """1 + the largest integer version directory under `export_dir` (TF Serving's layout)."""
  return max(_versions(export_dir), default=0) + 1


def latest_version(path: str) -> str:
  """`path` itself if it is a SavedModel, else its newest version directory holding one (as TF
  Serving picks), else `path` unchanged."""
  if tf.saved_model.contains_saved_model(path):
    return path
  for version in sorted(_versions(path), reverse=True):
    candidate = os.path.join(path, str(version))
    if tf.saved_model.contains_saved_model(candidate):
      return candidate
  return path


def model_export(model, artefacts: Any = None):
  """The export module of `model`'s domain (`Domain.export_module`), with the artefacts its
  domain saves beside the weights (a text model's vocabulary; None for images)."""
  return domains.of(model).export_module(model, artefacts)


def export(model, artefacts: Any, export_dir: str, version: Optional[int] = None) -> str:
  """Writes the SavedModel to `<export_dir>/<version>/` (default: the next version); returns it.
  `artefacts`: what the model's domain saves beside its weights (a text model's vocabulary).

  Traced portably (`devices.portable`): whatever device this runs on, the graphs hold no GPU-only
  kernel (cuDNN's LSTM) and no XLA cluster, so a model trained on a GPU serves on a CPU."""
  path = os.path.join(export_dir, str(version or next_version(export_dir)))
  if os.path.exists(path):
    raise FileExistsError(f"{path} exists; export versions are never overwritten.")
  with devices.portable():
    module = model_export(model, artefacts)
    module.add_dict_endpoints()
    tf.saved_model.save(module, path, signatures=module.signatures())
  return path


def error_message(error: tf.errors.OpError) -> str:
  """The contract's message inside a failed call ("empty sentence: ..."), without the graph
  execution noise around it."""
  found = re.search(r"assertion failed: \[(.*?)\](?: \[|\s*$)", error.message, re.MULTILINE)
  text = found.group(1) if found else error.message.strip().splitlines()[-1]
  return text.replace("\\'", "'").strip()


class _UnsavedGradientWarnings(logging.Filter):
  """Drops TensorFlow's warning, once per refinement function, that a loaded function has ops
  with custom gradients: the signatures compute their own gradients inside and are called for
  their outputs only."""

  def filter(self, record):
    return "with ops with unsaved custom gradients" not in record.getMessage()


def load_signatures(path: str):
  """{name: function} of the contract's signatures, from a SavedModel directory or an export
  directory of versions (the newest; no code of ours runs), or from a model directory saved by
  `runs.save_model` (built in memory)."""
  path = latest_version(path)
  if tf.saved_model.contains_saved_model(path):
    quiet = _UnsavedGradientWarnings()
    absl_logging.get_absl_logger().addFilter(quiet)  # where the loader logs it
    try:
      return tf.saved_model.load(path).signatures
    finally:
      absl_logging.get_absl_logger().removeFilter(quiet)
  return model_export(*runs.load_model(path)).signatures()
