"""Glue shared by the training binaries: the model directory, the metrics JSON, the optimizer,
and a clear stop when the loss turns NaN."""

import dataclasses
import json
import os
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import keras
import tensorflow as tf

from savae_tf import cluster
from savae_tf import devices
from savae_tf import evaluate
from savae_tf import figures


class NonFiniteLossError(RuntimeError):
  """Training stopped because the loss became NaN or Inf."""


def validate_model_dir(path: str) -> bool:
  """absl validator: the model directory may exist, but not as a file."""
  return not os.path.isfile(path)


def write_metrics(model_dir: str, metrics: Dict[str, Any], name: str = "metrics.json") -> str:
  os.makedirs(model_dir, exist_ok=True)
  path = os.path.join(model_dir, name)
  with open(path, "w") as f:
    json.dump(metrics, f, indent=2, sort_keys=True)
  return path


def flag_values(flag_values, modules) -> Dict[str, Any]:
  """{name: value} of the flags the given modules define (what a run was asked to do)."""
  return {flag.name: flag.value for module in modules
          for flag in flag_values.get_flags_for_module(module)}


OPTIMIZERS = ("sgd", "adam")


def make_optimizer(name: str, learning_rate: float, max_grad_norm: float):
  """SGD (the paper's text recipe) or Adam (its image recipe, eps 1e-8 as in PyTorch), with a
  global-norm clip over all parameters when max_grad_norm > 0."""
  clip = max_grad_norm if max_grad_norm > 0 else None
  if name == "sgd":
    return keras.optimizers.SGD(learning_rate, global_clipnorm=clip)
  if name == "adam":
    return keras.optimizers.Adam(learning_rate, epsilon=1e-8, global_clipnorm=clip)
  raise ValueError(f"Unknown optimizer {name!r}; expected one of {OPTIMIZERS}.")


def refinement_memory(model, batch) -> Tuple[int, int]:
  """(base, per step): the bytes one training gradient of `model` on `batch` needs when its
  refinement is unrolled, apart from the K steps' activations, and per step of them. Measured
  (`devices.PeakMemory`) at K = 0 and K = 1, so whatever the networks are, and on the device that
  trains; the model's state (BatchNorm's moving statistics) is left as it was."""
  state = [v.numpy() for v in model.non_trainable_variables]
  config = model.svi_config
  model.svi_config = dataclasses.replace(config, gradient="unrolled", keep_steps=0)
  data = {name: tf.constant(value) for name, value in batch.items()}

  def gradient_fn(steps):
    def replica_gradient():
      with tf.GradientTape() as tape:
        out = model.forward(data, tf.constant([model.seed, 0]), True, tf.constant(1.0), steps,
                            None)
        objective = out["loss"] + out.get("encoder_loss", 0.0)
      return tape.gradient(objective, model.trainable_variables)
    # Each replica takes the whole batch: an upper bound for its share.
    return tf.function(lambda: tf.distribute.get_strategy().run(replica_gradient))

  try:
    with devices.PeakMemory() as memory:
      none, one = (memory.measure(gradient_fn(steps)) for steps in (0, 1))
  finally:
    model.svi_config = config
    for variable, value in zip(model.non_trainable_variables, state):
      variable.assign(value)
  return none, max(one - none, 0)


def choose_refine_gradient(model, batch, memory_fraction: float) -> devices.GradientChoice:
  """Gradient mode "auto": sets `model.svi_config`'s gradient and keep_steps to
  `devices.choose_refine_gradient`'s for its K, measured on `batch` (the largest a run trains
  on), within `memory_fraction` of the device's free memory; returns the choice."""
  base, step = refinement_memory(model, batch)
  choice = devices.choose_refine_gradient(model.svi_config.steps, base, step,
                                          devices.memory_budget(memory_fraction))
  model.svi_config = dataclasses.replace(model.svi_config, gradient=choice.gradient,
                                         keep_steps=choice.keep_steps)
  return choice


def selection_metric(model) -> str:
  """The validation metric the paper selects epochs by: the refined bound for refining modes,
  the amortized bound (the LM's exact NLL) otherwise."""
  return "refined_nll_bound" if model.refines else "nll_bound"


def fit(model, dataset, epochs: int, validation=None, verbose=2):
  """`model.fit`, turning the model's non-finite-loss assertion into a NonFiniteLossError.
  Methods whose updates span batches (`needs_training_loop`) train through `train` instead.

  With `validation`, evaluates it after every epoch and ends with the weights of the epoch whose
  `selection_metric` was lowest (the paper keeps the best validation model).
  """
  if model.method.needs_training_loop:
    raise ValueError(f"Method {model.mode!r} needs the training loop's hooks: train it with "
                     "savae_tf.training.train.")
  callbacks = []
  if validation is not None:
    callbacks.append(keras.callbacks.EarlyStopping(
        monitor="val_" + selection_metric(model), mode="min", patience=epochs,
        restore_best_weights=True, verbose=verbose))
  try:
    return model.fit(dataset, epochs=epochs, verbose=verbose, shuffle=False,
                     validation_data=validation, callbacks=callbacks)
  except tf.errors.InvalidArgumentError as error:
    raise _non_finite(error) from None


def _non_finite(error: tf.errors.InvalidArgumentError) -> Exception:
  """The model's non-finite-loss assertion as a NonFiniteLossError; other errors unchanged."""
  if "not finite" not in error.message:
    return error
  detail = next(line for line in error.message.splitlines() if "not finite" in line)
  return NonFiniteLossError(f"Training stopped: {detail.strip()}")


@dataclasses.dataclass
class LearningRateDecay:
  """The paper's text schedule: from epoch `start_epoch` on, the first epoch whose validation does
  not improve sets a sticky flag, after which the learning rate halves after every epoch;
  training stops once it falls below `stop_below`. `start_epoch` None: constant rate."""
  start_epoch: Optional[int] = None
  factor: float = 0.5
  stop_below: float = 0.03


def train(model, corpus, epochs: int, model_dir: str, validation=None, checkpoint_every: int = 0,
          decay: LearningRateDecay = LearningRateDecay(), on_best: Optional[Callable] = None,
          verbose=2, max_to_keep: int = 3,
          resume_dir: Optional[str] = None) -> List[Dict[str, float]]:
  """Trains on a `data.text.BatchedCorpus` for `epochs` epochs, resumable at any moment.

  Checkpoints (model, optimizer with its learning rate, epoch, position in the epoch's batch
  order, best validation value, decay flag, and what the method and pretraining keep) go to
  <model_dir>/checkpoints after every epoch and
  every `checkpoint_every` training steps (0: epochs only). If a checkpoint exists, training
  resumes from it: the epoch's batch order is a function of (seed, epoch) and every random draw
  of a step a function of the optimizer's step count, so a killed and resumed run takes the same
  steps as an uninterrupted one and loses only the steps since its last checkpoint.

  After every epoch: validation (`selection_metric`), `on_best(model)` when it improved,
  TensorBoard summaries in <model_dir>/logs, <model_dir>/metrics.json (one entry per epoch) and
  its curves in <model_dir>/pictures/training_curves.png (with matplotlib). Returns those
  entries. `resume_dir` (default `model_dir`) is the run directory whose
  checkpoints and metrics.json a restart resumes from (see `cluster.worker_directory`).
  """
  resume_dir = resume_dir or model_dir
  state = {"epoch": tf.Variable(0, dtype=tf.int64), "position": tf.Variable(0, dtype=tf.int64),
           "best": tf.Variable(float("inf"), dtype=tf.float64),
           "decaying": tf.Variable(False)}
  if model.pretrain_steps:  # whether the decoder was re-initialised after pretraining
    state["pretrained"] = tf.Variable(False)
  model.optimizer.build(model.trainable_variables)
  method = model.method
  checkpoint = tf.train.Checkpoint(model=model, optimizer=model.optimizer, **state,
                                   **method.training_state(model))
  manager = tf.train.CheckpointManager(checkpoint, os.path.join(model_dir, "checkpoints"),
                                       max_to_keep=max_to_keep)
  history_path = os.path.join(resume_dir, "metrics.json")
  history = []
  latest = tf.train.latest_checkpoint(os.path.join(resume_dir, "checkpoints"))
  if latest:
    checkpoint.restore(latest).assert_existing_objects_matched()
    if os.path.isfile(history_path):
      with open(history_path) as f:
        history = json.load(f)["epochs"][:int(state["epoch"].numpy())]
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
  method_callbacks = method.callbacks(model, corpus)
  monitor = selection_metric(model)
  while int(state["epoch"].numpy()) < epochs:
    epoch, start = int(state["epoch"].numpy()), int(state["position"].numpy())
    began = time.time()
    if start < len(corpus):
      try:
        fit_history = model.fit(corpus.dataset(epoch, start), initial_epoch=epoch,
                                epochs=epoch + 1, verbose=verbose, shuffle=False,
                                callbacks=[*method_callbacks, SaveEverySteps(start),
                                           tensorboard, *progress])
      except tf.errors.InvalidArgumentError as error:
        error = _non_finite(error)
        if isinstance(error, NonFiniteLossError):
          error = NonFiniteLossError(f"{error} (epoch {epoch + 1}, batch "
                                     f"{int(state['position'].numpy()) + 1} of {len(corpus)})")
        raise error from None
      entry = {name: float(values[-1]) for name, values in fit_history.history.items()}
    else:  # killed after the epoch's last step but before its end-of-epoch checkpoint
      entry = {}
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
    method.after_epoch(model, results)
    if (model.pretrain_steps and not bool(state["pretrained"].numpy())
        and int(model.optimizer.iterations.numpy()) >= model.pretrain_steps):
      # Li et al. (2019): the pretrained encoder with a fresh decoder; epochs are selected
      # among those after pretraining.
      model.reinitialize_decoder(corpus.draw(0), model.seed + 1)
      state["pretrained"].assign(True)
      state["best"].assign(float("inf"))
      print(f"Autoencoder pretraining done after epoch {epoch + 1}: the decoder starts afresh.",
            flush=True)
    stop = False
    if decay.start_epoch is not None:
      if not improved and epoch + 1 >= decay.start_epoch:
        state["decaying"].assign(True)
      if bool(state["decaying"].numpy()):
        model.optimizer.learning_rate.assign(model.optimizer.learning_rate * decay.factor)
        stop = float(model.optimizer.learning_rate.numpy()) < decay.stop_below
    history.append(entry)
    state["epoch"].assign(epoch + 1)
    state["position"].assign(0)
    manager.save(checkpoint_number=model.optimizer.iterations)
    write_metrics(model_dir, {"epochs": history})
    figures.write_training_curves(model_dir, history, f"{model.mode}: {model_dir}")
    if stop:
      print(f"Learning rate {float(model.optimizer.learning_rate.numpy()):.4f} < "
            f"{decay.stop_below}: stopping after epoch {epoch + 1}.", flush=True)
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


STRATEGIES = ("default", "mirrored", "multi_worker")


def make_strategy(name: str) -> tf.distribute.Strategy:
  """TensorFlow's own distribution: `default` (one device), `mirrored` (every local GPU, or the
  local logical devices), `multi_worker` (the cluster in TF_CONFIG). Build and compile the model
  inside `strategy.scope()`; Keras' fit then splits each batch across the replicas."""
  if name == "default":
    return tf.distribute.get_strategy()
  if name == "mirrored":
    return tf.distribute.MirroredStrategy()
  if name == "multi_worker":
    if "TF_CONFIG" not in os.environ:
      raise ValueError("--strategy=multi_worker needs the cluster in the TF_CONFIG variable.")
    return tf.distribute.MultiWorkerMirroredStrategy()
  raise ValueError(f"Unknown strategy {name!r}; expected one of {STRATEGIES}.")
