"""A trained model on disk, as the training binaries leave it and the other binaries load it.

    <model_dir>/config.json      SemiAmortizedVAE.get_config() (encoder and decoder included)
    <model_dir>/vocab.json       the Vocabulary (text models only)
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
import sys
import tempfile
from typing import Any, Dict, Optional, Tuple

import tensorflow as tf

from savae_tf import cluster
from savae_tf import figures
from savae_tf import training
from savae_tf.evaluate import evaluate_rows

from savae_tf.data.text import Vocabulary
from savae_tf.model import SemiAmortizedVAE

CONFIG, VOCAB, WEIGHTS, RUN = "config.json", "vocab.json", "weights", "run.json"
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
                        write: bool = True):
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
  someone else's.
  """
  defining = json.loads(json.dumps(defining))  # the values as run.json will hold them
  recorded = _recorded_run(model_dir)
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


def save_model(model: SemiAmortizedVAE, vocabulary: Optional[Vocabulary], model_dir: str) -> str:
  """Writes the model's config, vocabulary (text models) and weights into `model_dir`; returns
  the directory."""
  if (vocabulary is None) != (model.decoder.data_kind == "images"):
    raise ValueError("A text model is saved with its vocabulary, an image model without one.")
  os.makedirs(model_dir, exist_ok=True)
  with open(os.path.join(model_dir, CONFIG), "w") as f:
    json.dump(model.get_config(), f, indent=2)
  if vocabulary is not None:
    vocabulary.save(os.path.join(model_dir, VOCAB))
  _checkpoint(model).write(os.path.join(model_dir, WEIGHTS, "model"))
  return model_dir


def load_model(model_dir: str) -> Tuple[SemiAmortizedVAE, Optional[Vocabulary]]:
  """The model and vocabulary (None for an image model) saved by `save_model`, with clear
  errors for a wrong directory."""
  if not os.path.isdir(model_dir):
    raise FileNotFoundError(f"Model directory {model_dir!r} does not exist.")
  if not os.path.isfile(os.path.join(model_dir, CONFIG)):
    raise FileNotFoundError(f"{model_dir!r} is not a saved model directory: no {CONFIG}.")
  with open(os.path.join(model_dir, CONFIG)) as f:
    model = SemiAmortizedVAE.from_config(json.load(f))
  vocabulary = None
  if model.decoder.data_kind == "text":
    if not os.path.isfile(os.path.join(model_dir, VOCAB)):
      raise FileNotFoundError(f"{model_dir!r} is not a saved model directory: no {VOCAB}.")
    vocabulary = Vocabulary.load(os.path.join(model_dir, VOCAB))
  if vocabulary is not None and (
      len(vocabulary) != model.decoder.vocab_size + _extra_input_ids(model)):
    raise ValueError(f"{model_dir!r}: vocab.json has {len(vocabulary)} words but the model was "
                     f"built for {model.decoder.vocab_size + _extra_input_ids(model)}.")
  prefix = os.path.join(model_dir, WEIGHTS, "model")
  if not tf.io.gfile.exists(prefix + ".index"):
    raise FileNotFoundError(f"{model_dir!r} has no weights ({prefix}.index).")
  _checkpoint(model).read(prefix).assert_existing_objects_matched()
  return model, vocabulary


def _checkpoint(model):
  """The networks' variables by attribute path (no optimizer or metric state)."""
  networks = {"decoder": model.decoder, "encoder": model.encoder}
  return tf.train.Checkpoint(**{name: net for name, net in networks.items() if net is not None})


def _extra_input_ids(model) -> int:
  """Input-only ids beyond the decoder's output vocabulary (the synthetic start token)."""
  return getattr(model.decoder, "input_only_ids", 0)


def train_and_test(model: SemiAmortizedVAE, vocabulary: Optional[Vocabulary], train_batches,
                   valid: tf.data.Dataset, test: tf.data.Dataset,
                   strategy: tf.distribute.Strategy, model_dir: str, epochs: int,
                   checkpoint_every: int, num_samples: int, flag_values: Dict[str, Any],
                   decay: training.LearningRateDecay = training.LearningRateDecay()
                   ) -> Optional[SemiAmortizedVAE]:
  """A training binary's whole run, resumable: `training.train` with the best validation model
  saved into `model_dir` as it improves, then that model's test metrics (`iw_nll` with
  `num_samples` samples) printed and written to <model_dir>/metrics.json with the run's flags and
  every epoch, and pictures: training curves after every epoch and the test set's posterior means
  (`figures`). Returns the best model. On a multi-worker cluster every worker trains and writes
  the same, each into its `cluster.worker_directory`: only the chief's is `model_dir`, and only
  the chief tests and returns the model (the others return None). Raises
  training.NonFiniteLossError on a NaN loss, cluster.LostWorkerError when another worker stops."""
  with strategy.scope(), cluster.worker_directory(model_dir) as run_dir:
    if not tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints")):
      save_model(model, vocabulary, run_dir)  # the untrained model, until there is a best
    with cluster.lost_worker_as_error("training"):
      history = training.train(model, train_batches, epochs, run_dir, valid, checkpoint_every,
                               decay, on_best=lambda m: save_model(m, vocabulary, run_dir),
                               verbose=1 if sys.stdout.isatty() else 0, resume_dir=model_dir)
    if cluster.in_cluster():
      print("Variables checksum (the same on every worker): "
            + cluster.variables_checksum(model.variables + model.optimizer.variables), flush=True)
    chief = run_dir == model_dir
  if not chief:
    return None
  best, _ = load_model(model_dir)
  best.compile()
  metrics, rows = evaluate_rows(best, test, num_samples=num_samples,
                                progress=f"test: bounds and iw_nll ({num_samples} samples)")
  training.write_metrics(model_dir, {"flags": flag_values, "epochs": history, "test": metrics})
  print("test: " + ", ".join(f"{name} {value:.3f}" for name, value in sorted(metrics.items())))
  if best.latent_dim:
    _draw_posterior_means(rows, best, model_dir)
  return best


def _draw_posterior_means(rows: Dict[str, Any], model: SemiAmortizedVAE, model_dir: str):
  """<model_dir>/pictures/posterior_means.png: the test set's encoder means on their first two
  principal axes, coloured by each example's tokens (text) or bound (images)."""
  text = model.decoder.data_kind == "text"
  try:
    figure = figures.posterior_means(
        rows["mean0"], f"{model.mode}: the test set's posterior means (encoder's q)",
        rows["tokens"] if text else rows["nll_bound"],
        "tokens in the sentence" if text else "-ELBO (nats)")
    path = figures.save(figure, os.path.join(model_dir, "pictures", "posterior_means.png"),
                        os.path.join(model_dir, "logs", "pictures"))
  except figures.MissingPlotting as error:
    print(f"pictures skipped: {error}")
    return
  print(f"pictures: {os.path.join(model_dir, 'pictures', 'training_curves.png')}, {path}")
