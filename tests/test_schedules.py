"""Tests for savae_tf.schedules: beta at chosen steps, configs, bad settings."""

import keras
import numpy as np
import pytest

from savae_tf import schedules
from savae_tf.model import SemiAmortizedVAE


def betas(schedule, steps):
  return [float(schedule(t)) for t in steps]


def test_linear_rises_from_0_1_to_1_over_the_warmup():
  np.testing.assert_allclose(betas(schedules.Linear(10), [0, 4, 8, 9, 50]),
                             [0.2, 0.6, 1.0, 1.0, 1.0], rtol=1e-6)


def test_constant_is_beta_throughout():
  assert betas(schedules.Constant(0.25), [0, 7, 10**6]) == [0.25] * 3
  assert betas(schedules.Constant(), [0]) == [1.0]


def test_cyclical_rises_over_the_first_part_of_each_cycle_then_holds_1():
  schedule = schedules.Cyclical(total_steps=100, cycles=4, rise=0.5)  # cycles of 25 steps
  steps = [0, 5, 10, 12, 13, 24, 25, 30, 99]
  expected = [0.0, 0.4, 0.8, 0.96, 1.0, 1.0, 0.0, 0.4, 1.0]
  np.testing.assert_allclose(betas(schedule, steps), expected, atol=1e-6)
  # rise = 1: a sawtooth from 0 to 1 over each whole cycle.
  np.testing.assert_allclose(betas(schedules.Cyclical(10, 2, 1.0), [0, 1, 4, 5, 9]),
                             [0.0, 0.2, 0.8, 0.0, 0.8], atol=1e-6)


@pytest.mark.parametrize("schedule", [schedules.Constant(0.5), schedules.Linear(7, 0.2),
                                      schedules.Cyclical(40, 3, 0.25)])
def test_a_config_round_trip_gives_the_same_schedule(schedule):
  assert schedules.from_config(schedule.get_config()) == schedule
  # Registered with Keras, so a user's model that holds one serializes it.
  serialized = keras.saving.serialize_keras_object(schedule)
  assert keras.saving.deserialize_keras_object(serialized) == schedule


@pytest.mark.parametrize("make, message", [
    (lambda: schedules.Constant(-1.0), "beta must be >= 0"),
    (lambda: schedules.Linear(0), "warmup_steps >= 1"),
    (lambda: schedules.Cyclical(3, cycles=4), "cycles <= total_steps"),
    (lambda: schedules.Cyclical(10, rise=0.0), r"\(0, 1\]"),
    (lambda: schedules.from_config({"name": "sigmoid"}), "Unknown KL schedule 'sigmoid'"),
    (lambda: schedules.Linear.from_config({"name": "constant", "beta": 1.0}),
     "'linear' KL schedule cannot load the config of 'constant'"),
])
def test_bad_settings_are_named(make, message):
  with pytest.raises(ValueError, match=message):
    make()


def test_a_model_config_saved_before_schedules_loads_its_warmup():
  from savae_tf.networks.text import LSTMDecoder, LSTMEncoder
  model = SemiAmortizedVAE(LSTMDecoder(9, 3, 3, 2), LSTMEncoder(9, 3, 3, 2), mode="vae",
                           latent_dim=2, kl_schedule=schedules.Linear(5))
  config = model.get_config()
  assert config["kl_schedule"] == {"name": "linear", "warmup_steps": 5, "start": 0.1}
  old = {k: v for k, v in config.items() if k not in ("kl_schedule", "free_bits")}
  assert SemiAmortizedVAE.from_config(
      dict(old, kl_warmup_steps=5, kl_start=0.1)).kl_schedule == schedules.Linear(5)
  assert SemiAmortizedVAE.from_config(
      dict(old, kl_warmup_steps=0, kl_start=0.1)).kl_schedule == schedules.Constant()
