"""Tests for savae_tf.flags: the refiner's convention and step size from the shared flags."""

from absl import app
from absl import flags
import keras
import pytest

from savae_tf import flags as savae_flags
from savae_tf import schedules
from savae_tf.networks import text
from savae_tf.networks.text import LSTMDecoder, LSTMEncoder


@pytest.fixture(scope="module")
def parse():
  values = flags.FLAGS
  if "svi_step_scale" not in values:  # this process's registry, defined once
    savae_flags.define_svi_flags()
    savae_flags.define_training_flags(epochs=1, optimizer="adam", learning_rate=1e-3, warmup=0)
    savae_flags.define_seed_flag()
    savae_flags.define_precision_flag()

  def parse_args(*args, model=False):
    values.unparse_flags()
    values(["prog", *args])
    savae_flags.set_precision_policy()
    built = savae_flags.model_from_flags(LSTMDecoder(9, 4, 4, 2), LSTMEncoder(9, 4, 4, 2),
                                         "savae", 2, 10)
    keras.mixed_precision.set_dtype_policy("float32")
    return built if model else built.svi_config

  yield parse_args
  values.unparse_flags()


def test_the_step_size_defaults_to_the_convention_and_batch_mean_records_the_batch(parse):
  per_example = parse()
  assert (per_example.step_scale, per_example.lr, per_example.batch_size) == (
      "per_example", 0.003, None)
  batch_mean = parse("--svi_step_scale=batch_mean", "--batch_size=16")
  assert (batch_mean.step_scale, batch_mean.lr, batch_mean.batch_size) == ("batch_mean", 1.0, 16)
  assert parse("--svi_lr=0.05").lr == 0.05
  with pytest.raises(flags.IllegalFlagValueError):
    parse("--svi_step_scale=sum")


def test_the_kl_schedule_and_free_bits_reach_the_model(parse):
  model = parse(model=True)  # --warmup=0 (this registry's default): beta = 1
  assert (model.kl_schedule, model.free_bits) == (schedules.Constant(1.0), 0.0)
  assert parse("--warmup=3", model=True).kl_schedule == schedules.Linear(30)  # 10 steps an epoch
  assert parse("--kl_schedule=constant", "--beta=0.2", model=True).kl_schedule == (
      schedules.Constant(0.2))
  cyclical = parse("--kl_schedule=cyclical", "--epochs=8", "--kl_cycles=2",
                   "--kl_cycle_rise=0.25", "--free_bits=0.5", model=True)
  assert cyclical.kl_schedule == schedules.Cyclical(80, 2, 0.25) and cyclical.free_bits == 0.5
  with pytest.raises(flags.IllegalFlagValueError):
    parse("--kl_schedule=sigmoid")
  pretrained = parse("--epochs=5", "--pretrain_epochs=2", "--kl_schedule=cyclical", model=True)
  assert pretrained.pretrain_steps == 20  # 10 steps an epoch
  assert pretrained.kl_schedule == schedules.Cyclical(30, 4, 0.5)  # after the pretraining
  with pytest.raises(app.UsageError, match="cycles <= total_steps"):  # 1 epoch of 10 steps
    parse("--epochs=1", "--kl_schedule=cyclical", "--kl_cycles=11")
  with pytest.raises(flags.IllegalFlagValueError, match="fewer than --epochs"):
    parse("--epochs=2", "--pretrain_epochs=2")


def test_the_reverse_sweeps_memory_budget_reaches_the_refiner(parse):
  assert parse().keep_steps == 0
  assert parse("--refine_keep_steps=3").keep_steps == 3
  assert parse("--refine_gradient=finite_difference", "--refine_keep_steps=2").keep_steps == 2
  with pytest.raises(flags.IllegalFlagValueError, match="needs --refine_gradient"):
    parse("--refine_gradient=unrolled", "--refine_keep_steps=3")


def as_on_a_gpu(use_cudnn):
  return use_cudnn is True or use_cudnn == "auto"


@pytest.mark.parametrize("mode", ["autoreg", "vae", "vae_svi", "savae"])
@pytest.mark.parametrize("gradient", ["unrolled", "reverse", "finite_difference", "none"])
def test_only_a_decoder_inside_an_exact_refinement_is_kept_off_cudnn(parse, monkeypatch, mode,
                                                                      gradient):
  parse(f"--refine_gradient={gradient}")
  monkeypatch.setattr(text, "runs_keras_lstm", as_on_a_gpu)
  decoder = LSTMDecoder(9, 4, 4, 2, use_cudnn=savae_flags.decoder_use_cudnn(mode))
  model = savae_flags.model_from_flags(decoder, LSTMEncoder(9, 4, 4, 2), mode, 2, 10)
  exact = mode == "savae" and gradient in ("unrolled", "reverse")
  # Exact refinement: the hand-written recurrence; otherwise Keras' layer, free to pick cuDNN.
  assert model.decoder.has_second_order_gradient == exact
  assert model.decoder.use_cudnn == (False if exact else "auto")


def test_an_exact_refinement_refuses_a_decoder_that_would_run_cudnn(parse, monkeypatch):
  parse("--refine_gradient=reverse")
  monkeypatch.setattr(text, "runs_keras_lstm", as_on_a_gpu)
  with pytest.raises(ValueError, match="no second-order gradient"):
    savae_flags.model_from_flags(LSTMDecoder(9, 4, 4, 2), LSTMEncoder(9, 4, 4, 2), "savae", 2, 10)


@pytest.mark.parametrize("policy, loss_scaled", [("float32", False), ("mixed_bfloat16", False),
                                                 ("mixed_float16", True)])
def test_mixed_precision_sets_the_networks_policy_and_scales_float16s_loss(parse, policy,
                                                                          loss_scaled):
  model = parse(f"--mixed_precision={policy}", model=True)
  assert model.decoder.dtype_policy.name == model.encoder.dtype_policy.name == policy
  assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer) == loss_scaled
