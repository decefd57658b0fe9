"""What the training loop (`savae_tf.training.train`) does besides its steps, one small action
each: the method's own hooks, autoencoder pretraining's decoder reset, the paper's learning-rate
decay, the training curves. The loop calls every action the same way; a new extra is a new
action, not a branch in the loop.

An action may keep state across epochs (`state`: trackables checkpointed with the run, under
names that are stable across versions, so a killed run resumes exactly), add Keras callbacks to
each epoch's `fit`, and act after each epoch (`after_epoch`), where it may stop the run.
"""

import dataclasses
from typing import Any, Callable, Dict, List, Optional

import keras
import tensorflow as tf

from savae_tf import figures


@dataclasses.dataclass
class EpochEnd:
  """What an action sees after an epoch's validation."""
  epoch: int  # 0-based
  entry: Dict[str, float]  # the epoch's metrics.json entry
  validation: Dict[str, float]  # its validation report (empty without validation)
  improved: bool  # the selection metric improved (True without validation)
  history: List[Dict[str, float]]  # every epoch's entry, this one included
  corpus: Any  # the training batches
  model_dir: str
  restart_selection: Callable[[], None]  # forget the best validation value so far


class Action:
  """The no-op action; subclasses override what they need."""

  def state(self, model) -> Dict[str, Any]:
    """Trackables to checkpoint with the run, by name."""
    del model
    return {}

  def callbacks(self, model, corpus) -> List[keras.callbacks.Callback]:
    del model, corpus
    return []

  def after_epoch(self, model, end: EpochEnd) -> Optional[str]:
    """Acts after epoch `end.epoch`; returns why training stops now, or None."""
    del model, end
    return None


class MethodHooks(Action):
  """The training method's hooks (`methods.Method`), for methods whose updates span batches."""

  def __init__(self, method):
    self.method = method

  def state(self, model):
    return self.method.training_state(model)

  def callbacks(self, model, corpus):
    return self.method.callbacks(model, corpus)

  def after_epoch(self, model, end):
    end.entry.update(self.method.after_epoch(model, end.validation))


def reinitialize_decoder(model, data, seed: int):
  """Fresh initial weights for the model's decoder (drawn from `seed`), as a newly built one of
  the same configuration gets; the encoder keeps its own. `data`: any batch, to build it."""
  keras.utils.set_random_seed(seed)
  fresh = model.decoder.__class__.from_config(model.decoder.get_config())
  obs = model.observe(data)
  z = tf.zeros([tf.shape(obs.targets)[0], model.latent_dim]) if model.latent_dim else None
  fresh.logits(fresh.prepare(obs.decoder_inputs), z)
  model.decoder.set_weights(fresh.get_weights())


class PretrainingReset(Action):
  """Li et al. (2019): after the model's `pretrain_steps` of autoencoder pretraining, the
  pretrained encoder with a fresh decoder; epochs are then selected among those after it."""

  def __init__(self):
    self.pretrained = None

  def state(self, model):
    self.pretrained = tf.Variable(False)  # whether the decoder was re-initialised
    return {"pretrained": self.pretrained}

  def after_epoch(self, model, end):
    if (bool(self.pretrained.numpy())
        or int(model.optimizer.iterations.numpy()) < model.pretrain_steps):
      return None
    reinitialize_decoder(model, end.corpus.draw(0), model.seed + 1)
    self.pretrained.assign(True)
    end.restart_selection()
    print(f"Autoencoder pretraining done after epoch {end.epoch + 1}: the decoder starts afresh.",
          flush=True)
    return None


@dataclasses.dataclass
class LearningRateDecay(Action):
  """The paper's text schedule: from epoch `start_epoch` on, the first epoch whose validation does
  not improve sets a sticky flag, after which the learning rate halves after every epoch;
  training stops once it falls below `stop_below`."""
  start_epoch: int
  factor: float = 0.5
  stop_below: float = 0.03

  def state(self, model):
    self.decaying = tf.Variable(False)  # pylint: disable=attribute-defined-outside-init
    return {"decaying": self.decaying}

  def after_epoch(self, model, end):
    if not end.improved and end.epoch + 1 >= self.start_epoch:
      self.decaying.assign(True)
    if not bool(self.decaying.numpy()):
      return None
    rate = model.optimizer.learning_rate
    rate.assign(rate * self.factor)
    if float(rate.numpy()) < self.stop_below:
      return (f"Learning rate {float(rate.numpy()):.4f} < {self.stop_below}: stopping after "
              f"epoch {end.epoch + 1}.")
    return None


@dataclasses.dataclass
class TrainingCurves(Action):
  """<model_dir>/pictures/training_curves.png after every epoch (with matplotlib)."""
  title: str

  def after_epoch(self, model, end):
    figures.write_training_curves(end.model_dir, end.history, self.title)


def of_model(model) -> List[Action]:
  """The actions every run of `model` needs: its method's hooks, and pretraining's reset."""
  return [MethodHooks(model.method)] + ([PretrainingReset()] if model.pretrain_steps else [])
