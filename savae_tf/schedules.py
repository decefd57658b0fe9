"""KL weight schedules: beta_t, the weight of the KL term at the t-th training batch (0-based).

Every training method composes with any schedule. beta weights the KL inside the refinement too;
evaluation always uses beta = 1.

  constant   beta_t = beta (1: the plain ELBO; beta < 1: a beta-VAE).
  linear     beta_t = min(1, start + (t + 1) / warmup_steps): the paper's warm-up (with
             warmup_steps = warm-up epochs x batches per epoch).
  cyclical   Fu et al. (2019): training is cut into `cycles` equal cycles of total_steps / cycles
             batches; in each, beta rises linearly from 0 to 1 over the first `rise` fraction and
             stays at 1 for the rest. At position tau in [0, 1) of its cycle,
             beta_t = min(1, tau / rise).

A schedule is a frozen dataclass, callable on the int step tensor, and Keras-serializable: its
config (`get_config`) is its name and fields, which `from_config` reads back.
"""

import dataclasses
from typing import Any, ClassVar, Dict

import keras
import tensorflow as tf


class Schedule:
  """What the schedules share: their config."""
  name: ClassVar[str]

  def get_config(self) -> Dict[str, Any]:
    return {"name": self.name, **dataclasses.asdict(self)}

  @classmethod
  def from_config(cls, config: Dict[str, Any]):
    fields = dict(config)
    name = fields.pop("name", cls.name)
    if name != cls.name:
      raise ValueError(f"A {cls.name!r} KL schedule cannot load the config of {name!r}.")
    return cls(**fields)


@keras.saving.register_keras_serializable(package="savae_tf")
@dataclasses.dataclass(frozen=True)
class Constant(Schedule):
  name: ClassVar[str] = "constant"
  beta: float = 1.0

  def __post_init__(self):
    if self.beta < 0:
      raise ValueError(f"The KL weight beta must be >= 0; got {self.beta}.")

  def __call__(self, step) -> tf.Tensor:
    del step
    return tf.constant(self.beta, tf.float32)


@keras.saving.register_keras_serializable(package="savae_tf")
@dataclasses.dataclass(frozen=True)
class Linear(Schedule):
  name: ClassVar[str] = "linear"
  warmup_steps: int
  start: float = 0.1

  def __post_init__(self):
    if self.warmup_steps < 1:
      raise ValueError(f"A linear KL warm-up needs warmup_steps >= 1; got {self.warmup_steps}.")

  def __call__(self, step) -> tf.Tensor:
    t = tf.cast(step + 1, tf.float32)
    return tf.minimum(1.0, self.start + t / float(self.warmup_steps))


@keras.saving.register_keras_serializable(package="savae_tf")
@dataclasses.dataclass(frozen=True)
class Cyclical(Schedule):
  name: ClassVar[str] = "cyclical"
  total_steps: int
  cycles: int = 4
  rise: float = 0.5

  def __post_init__(self):
    if self.cycles < 1 or self.total_steps < self.cycles:
      raise ValueError(f"A cyclical KL schedule needs 1 <= cycles <= total_steps; got "
                       f"{self.cycles} cycles over {self.total_steps} steps.")
    if not 0 < self.rise <= 1:
      raise ValueError(f"The rising fraction of a KL cycle must lie in (0, 1]; got {self.rise}.")

  def __call__(self, step) -> tf.Tensor:
    period = self.total_steps / self.cycles
    tau = tf.math.floormod(tf.cast(step, tf.float64), period) / period
    return tf.cast(tf.minimum(tau / self.rise, 1.0), tf.float32)


SCHEDULES = {schedule.name: schedule for schedule in (Constant, Linear, Cyclical)}


def from_config(config: Dict[str, Any]) -> Schedule:
  """The schedule of any `Schedule.get_config`, by its name."""
  name = config["name"]
  if name not in SCHEDULES:
    raise ValueError(f"Unknown KL schedule {name!r}; expected one of {sorted(SCHEDULES)}.")
  return SCHEDULES[name].from_config(config)
