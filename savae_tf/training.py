"""Glue shared by the training binaries: the model directory, the metrics JSON, the optimizer,
and a clear stop when the loss turns NaN."""

import json
import os
from typing import Any, Dict

import keras
import tensorflow as tf


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


def selection_metric(model) -> str:
  """The validation metric the paper selects epochs by: the refined bound for refining modes,
  the amortized bound (the LM's exact NLL) otherwise."""
  return "refined_nll_bound" if model.refines else "nll_bound"


def fit(model, dataset, epochs: int, validation=None, verbose=2):
  """`model.fit`, turning the model's non-finite-loss assertion into a NonFiniteLossError.

  With `validation`, evaluates it after every epoch and ends with the weights of the epoch whose
  `selection_metric` was lowest (the paper keeps the best validation model).
  """
  callbacks = []
  if validation is not None:
    callbacks.append(keras.callbacks.EarlyStopping(
        monitor="val_" + selection_metric(model), mode="min", patience=epochs,
        restore_best_weights=True, verbose=verbose))
  try:
    return model.fit(dataset, epochs=epochs, verbose=verbose, shuffle=False,
                     validation_data=validation, callbacks=callbacks)
  except tf.errors.InvalidArgumentError as error:
    if "not finite" not in error.message:
      raise
    detail = next(line for line in error.message.splitlines() if "not finite" in line)
    raise NonFiniteLossError(f"Training stopped: {detail.strip()}") from None
