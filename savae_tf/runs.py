"""A trained model on disk, as the training binaries leave it and the other binaries load it.

    <model_dir>/config.json      SemiAmortizedVAE.get_config() (encoder and decoder included)
    <model_dir>/vocab.json       the Vocabulary (text models: their domain's artefacts)
    <model_dir>/weights/model-*  a tf.train.Checkpoint of the model's variables
    <model_dir>/metrics.json     what the run measured (written by the binary)
    <model_dir>/run.json         the flags that define the run's model, data and method

A training binary claims its directory (`claim_run_directory`) before it loads any data, so a
resume with other flags, a directory that holds something else, or one it cannot write is one
clear error instead of a mixed history or a late traceback.
"""

import json
import os
import shutil
import tempfile
from typing import Any, Dict, List, Optional, Tuple

import tensorflow as tf

from savae_tf.model import SemiAmortizedVAE

CONFIG, WEIGHTS, RUN, METRICS = "config.json", "weights", "run.json", "metrics.json"
CHECKPOINTS = "checkpoints"


class RunDirectoryError(ValueError):
  """A directory cannot serve this run; the message says why and what to do instead."""


def ensure_writable(path: str, name: str):
  """Creates directory `path` if needed and checks that a file can be written in it; raises
  RunDirectoryError naming `name` (the flag, say) otherwise."""
  try:
    os.makedirs(path, exist_ok=True)
    with tempfile.TemporaryFile(dir=path):
      pass
  except OSError as error:
    raise RunDirectoryError(f"{name}={path} is not writable: {error.strerror or error}.") from None


def claim_run_directory(model_dir: str, defining: Dict[str, Any], overwrite: bool = False,
                        write: bool = True, defaults: Optional[Dict[str, Any]] = None):
  """Makes `model_dir` the directory of a run defined by the flags `defining` ({name: value}),
  writing them to <model_dir>/run.json.

  Claimed: a new or empty directory, or one whose run never checkpointed (a run stopped by bad
  data, say; it starts afresh); resumed: a run with checkpoints and the same `defining` (or with
  checkpoints from before run.json existed). Refused with a RunDirectoryError: a run with
  checkpoints and other flags (the message names each differing flag with both values), unless
  `overwrite`, which deletes it and starts afresh; a non-empty directory that is no run's
  (`overwrite` never deletes what this library did not write); an unwritable directory.
  `write=False` (a multi-worker cluster's other workers) only refuses other flags: the chief
  checks, writes and deletes, and the others must not mistake its files in progress for
  someone else's. `defaults`: the value each flag had before it existed (its default), for a
  run.json written before then (a flag added later does not make an old run another's).
  """
  defining = json.loads(json.dumps(defining))  # the values as run.json will hold them
  recorded = _recorded_run(model_dir)
  if recorded and "method" in defining and "method" not in recorded and "model" in recorded:
    recorded["method"] = recorded.pop("model")  # run.json of a run from before --method
  if recorded is not None and defaults:
    recorded = {**json.loads(json.dumps(
        {name: value for name, value in defaults.items() if name not in recorded})), **recorded}
  trained = bool(tf.io.gfile.glob(os.path.join(model_dir, CHECKPOINTS, "*")))
  if trained and recorded is not None and recorded != defining:
    if not overwrite:
      differences = ", ".join(
          f"--{name}={recorded.get(name)} (now {defining.get(name)})"
          for name in sorted(set(recorded) | set(defining))
          if recorded.get(name) != defining.get(name))
      raise RunDirectoryError(
          f"{model_dir} holds a run with other flags: {differences}. Resume it with its own "
          "flags, give a new --model_dir, or add --overwrite to delete it and start afresh.")
    if write:
      shutil.rmtree(model_dir)
  elif (write and recorded is None and not trained and os.path.isdir(model_dir)
        and os.listdir(model_dir)):
    raise RunDirectoryError(
        f"{model_dir} is not empty and holds no training run (no {RUN} or {CHECKPOINTS}/): give "
        "a new or empty --model_dir.")
  if write:
    ensure_writable(model_dir, "--model_dir")
    # Written whole, then renamed: another worker may be reading it.
    with open(os.path.join(model_dir, RUN + ".partial"), "w") as f:
      json.dump(defining, f, indent=2, sort_keys=True)
    os.replace(os.path.join(model_dir, RUN + ".partial"), os.path.join(model_dir, RUN))


def _recorded_run(model_dir: str) -> Optional[Dict[str, Any]]:
  path = os.path.join(model_dir, RUN)
  if not os.path.isfile(path):
    return None
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError) as error:
    raise RunDirectoryError(f"{path} cannot be read ({error}); give a new --model_dir.") from None


def save_model(model: SemiAmortizedVAE, artefacts: Any, model_dir: str) -> str:
  """Writes the model's config, its domain's artefacts (a text model's vocabulary) and its
  weights into `model_dir`; returns the directory."""
  os.makedirs(model_dir, exist_ok=True)
  model.domain.save_artefacts(artefacts, model_dir)
  with open(os.path.join(model_dir, CONFIG), "w") as f:
    json.dump(model.get_config(), f, indent=2)
  _checkpoint(model).write(os.path.join(model_dir, WEIGHTS, "model"))
  return model_dir


def load_model(model_dir: str) -> Tuple[SemiAmortizedVAE, Any]:
  """The model and its domain's artefacts (a text model's vocabulary; None for images) saved by
  `save_model`, with clear errors for a wrong directory."""
  if not os.path.isdir(model_dir):
    raise FileNotFoundError(f"Model directory {model_dir!r} does not exist.")
  if not os.path.isfile(os.path.join(model_dir, CONFIG)):
    raise FileNotFoundError(f"{model_dir!r} is not a saved model directory: no {CONFIG}.")
  with open(os.path.join(model_dir, CONFIG)) as f:
    model = SemiAmortizedVAE.from_config(json.load(f))
  artefacts = model.domain.load_artefacts(model, model_dir)
  restore_weights(model, model_dir)
  return model, artefacts


def restore_weights(model: SemiAmortizedVAE, model_dir: str):
  """Reads the weights `save_model` wrote into `model` (the networks' variables only)."""
  prefix = os.path.join(model_dir, WEIGHTS, "model")
  if not tf.io.gfile.exists(prefix + ".index"):
    raise FileNotFoundError(f"{model_dir!r} has no weights ({prefix}.index).")
  _checkpoint(model).read(prefix).assert_existing_objects_matched()


def _checkpoint(model):
  """The networks' variables by attribute path (no optimizer or metric state)."""
  networks = {"decoder": model.decoder, "encoder": model.encoder,
              "refiner": model.learned_refiner}
  return tf.train.Checkpoint(**{name: net for name, net in networks.items() if net is not None})


def metrics_line(metrics: Dict[str, Any]) -> str:
  """`name value, ...` of a report, sorted by name: numbers to 3 decimals, other values as
  they are (a report may name a kind, such as `gap_log_likelihood_kind`)."""
  return ", ".join(f"{name} {value:.3f}" if isinstance(value, float) else f"{name} {value}"
                   for name, value in sorted(metrics.items()))


def write_metrics(model_dir: str, metrics: Dict[str, Any], name: str = METRICS) -> str:
  """Writes <model_dir>/<name> (metrics.json: {"epochs": [...]} while training; then with
  "flags" and "test" at the end of a run); returns its path."""
  os.makedirs(model_dir, exist_ok=True)
  path = os.path.join(model_dir, name)
  with open(path, "w") as f:
    json.dump(metrics, f, indent=2, sort_keys=True)
  return path


def recorded_epochs(model_dir: str) -> List[Dict[str, Any]]:
  """The epochs <model_dir>/metrics.json holds (none if there is no file)."""
  path = os.path.join(model_dir, METRICS)
  if not os.path.isfile(path):
    return []
  with open(path) as f:
    return json.load(f).get("epochs", [])
