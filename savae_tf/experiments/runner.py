"""The experiment runner: one training run, from an untrained model to its tested, saved and
exported best model. Every training binary is flags -> `Experiment` -> `run_experiment`.

    build (the caller, inside the strategy's scope) -> resume or start (`training.train`, with the
    actions) -> validate every epoch, save the best model -> restore it -> test -> metrics.json,
    pictures -> export

On a multi-worker cluster every worker trains and writes the same, each into its
`cluster.worker_directory`: only the chief's is `model_dir`, and only the chief tests.
"""

import dataclasses
import os
import sys
from typing import Any, Dict, List, NamedTuple, Optional, Sequence

import numpy as np
import tensorflow as tf

from savae_tf import actions as actions_lib
from savae_tf import cluster
from savae_tf import export
from savae_tf import figures
from savae_tf import gaps as gaps_lib
from savae_tf import runs
from savae_tf import training
from savae_tf.evaluate import evaluate, evaluate_rows


@dataclasses.dataclass
class Experiment:
  """One run, as a binary's flags describe it.

  `model` is built and compiled (inside `strategy`'s scope) and not yet trained; `train` are the
  training batches (`dataset(epoch, start)`, `draw(key)`, a length), `valid` a tf.data pipeline
  or None (no selection: the last epoch's model is tested), `test` batches with `dataset()`.
  `artefacts` are what the model's domain saves beside its weights (a vocabulary).
  """
  model: Any
  train: Any
  valid: Optional[tf.data.Dataset]
  test: Any
  model_dir: str
  epochs: int
  artefacts: Any = None
  strategy: Optional[tf.distribute.Strategy] = None
  checkpoint_every: int = 0
  num_samples: int = 500  # importance samples of the test's iw_nll
  flags: Dict[str, Any] = dataclasses.field(default_factory=dict)  # recorded in metrics.json
  actions: Sequence[actions_lib.Action] = ()  # besides the model's own (`actions.of_model`)
  num_pictures: int = 8  # examples the domain's pictures show (0: none)
  export_dir: Optional[str] = None
  title: str = ""  # of the pictures (default: the method and directory)
  verbose: Optional[int] = None  # Keras' (default: a progress bar on a terminal, else 0)
  gaps: Optional[gaps_lib.GapConfig] = None  # the test set's gap decomposition (None: not asked)
  gap_examples: int = 0  # N test examples for it, evenly spaced over the test set (0: all)
  # Exact log p(x) of each test example where the data knows it (the synthetic oracle's).
  log_likelihood: Optional[np.ndarray] = None


class Outcome(NamedTuple):
  """The best model, its test report and the test set's per-example rows."""
  model: Any
  metrics: Dict[str, Any]
  rows: Dict[str, np.ndarray]
  history: List[Dict[str, float]]
  # The validation report of a model with nothing to train (no epochs to select among), which
  # still chooses its settings on validation: SVI with a fixed generator. None otherwise.
  validation: Optional[Dict[str, float]] = None


def run_experiment(experiment: Experiment) -> Optional[Outcome]:
  """Trains (resuming if `model_dir` has checkpoints), tests the best validation model, writes
  <model_dir>/metrics.json ({"flags", "epochs", "test"}, and "validation" for a model with nothing
  to train) and the pictures, exports; returns the
  outcome (None on a cluster's other workers). Raises training.NonFiniteLossError on a NaN loss,
  cluster.LostWorkerError when another worker stops."""
  e, model = experiment, experiment.model
  strategy = e.strategy or tf.distribute.get_strategy()
  title = e.title or f"{model.mode}: {e.model_dir}"
  verbose = (1 if sys.stdout.isatty() else 0) if e.verbose is None else e.verbose
  save_best = lambda m: runs.save_model(m, e.artefacts, run_dir)  # noqa: E731
  with strategy.scope(), cluster.worker_directory(e.model_dir) as run_dir:
    if not tf.train.latest_checkpoint(os.path.join(e.model_dir, runs.CHECKPOINTS)):
      save_best(model)  # the untrained model, until there is a best
    history = []
    if model.trainable_variables:
      with cluster.lost_worker_as_error("training"):
        history = training.train(
            model, e.train, e.epochs, run_dir, e.valid, e.checkpoint_every,
            [*e.actions, actions_lib.TrainingCurves(title)],
            on_best=save_best if e.valid is not None else None, verbose=verbose,
            resume_dir=e.model_dir)
      if e.valid is None:
        save_best(model)
    if cluster.in_cluster():
      print("Variables checksum (the same on every worker): "
            + cluster.variables_checksum(model.variables + model.optimizer.variables), flush=True)
    if run_dir != e.model_dir:
      return None
    runs.restore_weights(model, e.model_dir)
    validation = None
    if not model.trainable_variables and e.valid is not None:
      validation = evaluate(model, e.valid, num_samples=0)
      validation.pop("svi_steps")
      print("validation: " + runs.metrics_line(validation), flush=True)
    metrics, rows = evaluate_rows(model, e.test.dataset(), num_samples=e.num_samples,
                                  progress=f"test: bounds and iw_nll ({e.num_samples} samples)")
    gap_report = _gaps(e, model) if e.gaps and model.latent_dim else None
    metrics.update(gap_report or {})
  runs.write_metrics(e.model_dir, {"flags": e.flags, "epochs": history, "test": metrics,
                                   **({"validation": validation} if validation else {})})
  print("test: " + runs.metrics_line(metrics), flush=True)
  _draw(e, model, rows, title, gap_report)
  if e.export_dir:
    print(f"SavedModel written to {export.export(model, e.artefacts, e.export_dir)}", flush=True)
  return Outcome(model, metrics, rows, history, validation)


def _gaps(e: Experiment, model) -> Dict[str, Any]:
  """The gap decomposition of `e.gap_examples` test examples, evenly spaced over the test set
  (`savae_tf.gaps`); a killed run's rerun goes on from its last decomposed batch."""
  size = lambda data: int(tf.shape(tf.nest.flatten(data)[0])[0])  # noqa: E731
  keep = gaps_lib.evenly_spaced(sum(size(data) for data in e.test.dataset()), e.gap_examples)

  def batches():
    start = 0
    for data in e.test.dataset():
      rows = keep[(keep >= start) & (keep < start + size(data))] - start
      start += size(data)
      if len(rows):
        yield tf.nest.map_structure(lambda t: tf.gather(t, rows), data)  # pylint: disable=cell-var-from-loop

  exact = None if e.log_likelihood is None else e.log_likelihood[keep]
  report, _ = gaps_lib.evaluate_gaps(gaps_lib.ModelInference(model), batches(),
                                     model.test_svi_steps, e.gaps, exact,
                                     progress="test: gap decomposition",
                                     journal=os.path.join(e.model_dir, "gaps-partial.npz"))
  return report


def _draw(e: Experiment, model, rows, title: str, gap_report=None):
  """The test set's posterior means (<model_dir>/pictures/posterior_means.png), the gap
  decomposition's bar (gaps.png) when asked, and the domain's pictures of the model."""
  if not (e.num_pictures or gap_report):
    return
  try:
    paths = []
    if gap_report:
      paths.append(figures.save(
          figures.inference_gaps({model.mode: gap_report}, f"{title}: inference gaps"),
          os.path.join(e.model_dir, "pictures", "gaps.png"),
          os.path.join(e.model_dir, "logs", "pictures")))
    if e.num_pictures and model.latent_dim:
      colour, label = model.domain.posterior_colour(rows)
      figure = figures.posterior_means(
          rows["mean0"], f"{title}: the test set's posterior means (encoder's q)", colour, label)
      paths.append(figures.save(figure, os.path.join(e.model_dir, "pictures",
                                                     "posterior_means.png"),
                                os.path.join(e.model_dir, "logs", "pictures")))
    if e.num_pictures:
      paths += sorted(model.domain.pictures(model, e.test, e.model_dir, model.seed,
                                            e.num_pictures).values())
  except figures.MissingPlotting as error:
    print(f"pictures skipped: {error}")
    return
  print("pictures: " + ", ".join(paths))
