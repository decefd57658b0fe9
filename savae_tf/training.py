"""The training loop (`train`): epochs of Keras' `fit` with checkpoints, resume, validation,
the best model, and the actions (`savae_tf.actions`) that make every extra; a clear stop when the
loss turns NaN."""

import os
import time
from typing import Callable, Dict, List, Optional, Sequence

import keras
import tensorflow as tf

from savae_tf import actions as actions_lib
from savae_tf import evaluate
from savae_tf import runs
from savae_tf.actions import Action


class NonFiniteLossError(RuntimeError):
  """Training stopped because the loss became NaN or Inf."""


def selection_metric(model) -> str:
  """The validation metric the paper selects epochs by: the refined bound for refining modes,
  the amortized bound (the LM's exact NLL) otherwise."""
  return "refined_nll_bound" if model.refines else "nll_bound"


def _non_finite(error: tf.errors.InvalidArgumentError) -> Exception:
  """The model's non-finite-loss assertion as a NonFiniteLossError; other errors unchanged."""
  if "not finite" not in error.message:
    return error
  detail = next(line for line in error.message.splitlines() if "not finite" in line)
  return NonFiniteLossError(f"Training stopped: {detail.strip()}")


def train(model, corpus, epochs: int, model_dir: str, validation=None, checkpoint_every: int = 0,
          actions: Sequence[Action] = (), on_best: Optional[Callable] = None, verbose=2,
          max_to_keep: int = 3, resume_dir: Optional[str] = None) -> List[Dict[str, float]]:
  """Trains on `corpus` (batches with `dataset(epoch, start)`, `draw(key)` and a length) for
  `epochs` epochs, resumable at any moment.

  Checkpoints (model, optimizer with its learning rate, epoch, position in the epoch's batch
  order, best validation value, and every action's state) go to <model_dir>/checkpoints after
  every epoch and every `checkpoint_every` training steps (0: epochs only). If a checkpoint
  exists, training resumes from it: the epoch's batch order is a function of (seed, epoch) and
  every random draw of a step a function of the optimizer's step count, so a killed and resumed
  run takes the same steps as an uninterrupted one and loses only the steps since its last
  checkpoint.

  After every epoch: validation (`evaluate.evaluate`, selected by `selection_metric`),
  `on_best(model)` when it improved, TensorBoard summaries in <model_dir>/logs, the actions
  (`actions.of_model(model)`, then `actions`; any may stop the run), <model_dir>/metrics.json
  (one entry per epoch). Returns those entries. `resume_dir` (default `model_dir`) is the run
  directory whose checkpoints and metrics.json a restart resumes from (see
  `cluster.worker_directory`).
  """
  resume_dir = resume_dir or model_dir
  actions = [*actions_lib.of_model(model), *actions]
  state = {"epoch": tf.Variable(0, dtype=tf.int64), "position": tf.Variable(0, dtype=tf.int64),
           "best": tf.Variable(float("inf"), dtype=tf.float64)}
  model.optimizer.build(model.trainable_variables)
  for action in actions:
    state.update(action.state(model))
  checkpoint = tf.train.Checkpoint(model=model, optimizer=model.optimizer, **state)
  manager = tf.train.CheckpointManager(checkpoint, os.path.join(model_dir, runs.CHECKPOINTS),
                                       max_to_keep=max_to_keep)
  history = []
  latest = tf.train.latest_checkpoint(os.path.join(resume_dir, runs.CHECKPOINTS))
  if latest:
    try:
      checkpoint.restore(latest).assert_existing_objects_matched()
    except AssertionError as error:
      raise runs.RunDirectoryError(
          f"{latest} lacks part of this run's state (written by another method, or by a "
          "version of savae-tf that kept other state): resume it with the version that wrote "
          f"it, or start afresh (--overwrite). TensorFlow: {str(error).splitlines()[0][:200]}"
      ) from None
    history = runs.recorded_epochs(resume_dir)[:int(state["epoch"].numpy())]
    print(f"Resuming from {latest}: epoch {int(state['epoch'].numpy()) + 1}, "
          f"batch {int(state['position'].numpy())} of {len(corpus)}", flush=True)

  class SaveEverySteps(keras.callbacks.Callback):
    def __init__(self, start):
      super().__init__()
      self.start = start

    def on_train_batch_end(self, batch, logs=None):
      state["position"].assign(self.start + batch + 1)
      if checkpoint_every and int(model.optimizer.iterations.numpy()) % checkpoint_every == 0:
        manager.save(checkpoint_number=model.optimizer.iterations)

  tensorboard = keras.callbacks.TensorBoard(os.path.join(model_dir, "logs"))
  progress = [_ProgressBar(epochs)] if verbose == 1 else []
  callbacks = [callback for action in actions for callback in action.callbacks(model, corpus)]
  monitor = selection_metric(model)
  while int(state["epoch"].numpy()) < epochs:
    epoch, start = int(state["epoch"].numpy()), int(state["position"].numpy())
    began = time.time()
    entry = {}  # empty: killed after the epoch's last step but before its end-of-epoch save
    if start < len(corpus):
      try:
        fit_history = model.fit(corpus.dataset(epoch, start), initial_epoch=epoch,
                                epochs=epoch + 1, verbose=verbose, shuffle=False,
                                callbacks=[*callbacks, SaveEverySteps(start), tensorboard,
                                           *progress])
      except tf.errors.InvalidArgumentError as error:
        error = _non_finite(error)
        if isinstance(error, NonFiniteLossError):
          error = NonFiniteLossError(f"{error} (epoch {epoch + 1}, batch "
                                     f"{int(state['position'].numpy()) + 1} of {len(corpus)})")
        raise error from None
      entry = {name: float(values[-1]) for name, values in fit_history.history.items()}
    entry.update(epoch=epoch + 1, learning_rate=float(model.optimizer.learning_rate.numpy()),
                 step=int(model.optimizer.iterations.numpy()))
    improved, results = True, {}
    if validation is not None:
      results = evaluate.evaluate(model, validation, num_samples=0,
                                  progress="validation" if verbose == 1 else "")
      results.pop("svi_steps")
      entry.update({f"val_{name}": float(value) for name, value in results.items()})
      improved = entry[f"val_{monitor}"] < float(state["best"].numpy())
      if improved:
        state["best"].assign(entry[f"val_{monitor}"])
        if on_best is not None:
          on_best(model)
      with tf.summary.create_file_writer(os.path.join(model_dir, "logs", "validation")).as_default():
        for name, value in results.items():
          tf.summary.scalar(f"epoch_{name}", value, step=epoch)
    print(epoch_line(entry, epochs, time.time() - began, start,
                     improved and validation is not None), flush=True)
    history.append(entry)
    end = actions_lib.EpochEnd(epoch, entry, results, improved, history, corpus, model_dir,
                               lambda: state["best"].assign(float("inf")))
    stops = [reason for reason in (action.after_epoch(model, end) for action in actions) if reason]
    state["epoch"].assign(epoch + 1)
    state["position"].assign(0)
    manager.save(checkpoint_number=model.optimizer.iterations)
    runs.write_metrics(model_dir, {"epochs": history})
    if stops:
      print(stops[0], flush=True)
      break
  return history


class _ProgressBar(keras.callbacks.ProgbarLogger):
  """Keras' progress bar, its header saying the run's epochs ("Epoch 3/30", not Keras' "3/3" of
  a `fit` that runs one epoch)."""

  def __init__(self, epochs: int):
    super().__init__()
    self.total = epochs

  def set_params(self, params):
    super().set_params(params)
    self.epochs = self.total


def epoch_line(entry: Dict[str, float], epochs: int, seconds: float, start: int = 0,
               best: bool = False) -> str:
  """The one line an epoch prints: 'Epoch k/N (time): training metrics | validation metrics'."""
  skip = ("epoch", "learning_rate", "step")
  train = ", ".join(f"{name} {value:.3f}" for name, value in entry.items()
                    if not name.startswith("val_") and name not in skip)
  valid = ", ".join(f"{name[4:]} {value:.3f}" for name, value in entry.items()
                    if name.startswith("val_"))
  line = f"Epoch {entry['epoch']}/{epochs} ({seconds:.0f} s"
  line += f", resumed at batch {start + 1})" if start else ")"
  line += f": {train or 'no step left'}"
  if valid:
    line += f" | validation: {valid}" + (" (best so far)" if best else "")
  return line


