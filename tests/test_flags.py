"""Tests for savae_tf.flags: the refiner's convention and step size from the shared flags."""

from absl import app
from absl import flags
import keras
import numpy as np
import pytest

from savae_tf import domains
from savae_tf import factories
from savae_tf import methods
from savae_tf import flags as savae_flags
from savae_tf import schedules
from savae_tf.networks import text
from savae_tf.networks.synthetic import SyntheticGenerator
from savae_tf.networks.text import LSTMDecoder, LSTMEncoder


LARGEST_BATCH = {"tokens": np.ones([4, 6], np.int32), "lengths": np.full([4], 6, np.int32)}


@pytest.fixture(scope="module")
def parse():
  values = flags.FLAGS
  if "svi_step_scale" not in values:  # this process's registry, defined once
    savae_flags.define_svi_flags()
    savae_flags.define_training_flags(epochs=1, optimizer="adam", learning_rate=1e-3, warmup=0)
    savae_flags.define_seed_flag()
    savae_flags.define_precision_flag()

  def parse_args(*args, model=False, mode="savae", decoder=None, build=True):
    values.unparse_flags()
    if not any(arg.startswith("--refine_gradient") for arg in args):
      # Not auto, whose measurement (two traced steps) the tests of auto take.
      args = ("--refine_gradient=reverse", *args)
    values(["prog", *args])
    if not build:  # the flags only
      return None
    factories.set_precision_policy()
    built = factories.model_from_flags(decoder or LSTMDecoder(9, 4, 4, 2),
                                         LSTMEncoder(9, 4, 4, 2), mode, 2, 10, LARGEST_BATCH)
    keras.mixed_precision.set_dtype_policy("float32")
    return built if model else built.svi_config

  yield parse_args
  values.unparse_flags()


def test_the_step_size_defaults_to_the_convention_and_batch_mean_records_the_batch(parse):
  per_example = parse()  # SA-VAE on text: the step chosen on Penn Treebank's validation
  assert (per_example.step_scale, per_example.lr, per_example.batch_size) == (
      "per_example", domains.get("text").svi_lr, None)
  batch_mean = parse("--svi_step_scale=batch_mean", "--batch_size=16")
  assert (batch_mean.step_scale, batch_mean.lr, batch_mean.batch_size) == ("batch_mean", 1.0, 16)
  assert parse("--svi_lr=0.05").lr == 0.05
  with pytest.raises(flags.IllegalFlagValueError):
    parse("--svi_step_scale=sum")


@pytest.mark.parametrize("mode", ["svi", "vae_svi", "vae_svi_kl", "savae"])
@pytest.mark.parametrize("domain", ["synthetic", "text"])
def test_each_refining_method_refines_at_the_step_chosen_for_it_on_its_data(parse, mode, domain):
  decoder = (SyntheticGenerator(8, 4, 4, 4, latent_dim=2) if domain == "synthetic"
             else LSTMDecoder(9, 4, 4, 2))
  method, data = methods.METHODS[mode], domains.get(domain)
  config = parse(mode=mode, decoder=decoder)
  assert config.lr == method.svi_lrs.get(domain, data.svi_lr)
  assert parse("--svi_lr=0.05", mode=mode, decoder=decoder).lr == 0.05  # the flag wins
  assert parse("--svi_step_scale=batch_mean", mode=mode, decoder=decoder).lr == 1.0
  if domain == "synthetic" and mode == "svi":  # from the prior: a longer way than from q_0
    assert config.lr > methods.METHODS["savae"].svi_lrs.get(domain, data.svi_lr)


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
  assert parse("--refine_gradient=reverse", "--refine_keep_steps=3").keep_steps == 3
  assert parse("--refine_gradient=finite_difference", "--refine_keep_steps=2").keep_steps == 2
  with pytest.raises(flags.IllegalFlagValueError, match="needs --refine_gradient"):
    parse("--refine_gradient=unrolled", "--refine_keep_steps=3")
  with pytest.raises(flags.IllegalFlagValueError, match="needs --refine_gradient"):
    parse("--refine_gradient=auto", "--refine_keep_steps=3")  # auto chooses it


def as_on_a_gpu(use_cudnn):
  return use_cudnn is True or use_cudnn == "auto"


@pytest.mark.parametrize("mode, gradient", [
    (mode, gradient) for mode in ["autoreg", "vae", "vae_svi", "savae"]
    for gradient in ["unrolled", "reverse", "finite_difference", "none"]] + [("savae", "auto")])
def test_only_a_decoder_inside_an_exact_refinement_is_kept_off_cudnn(parse, monkeypatch, mode,
                                                                      gradient):
  parse(f"--refine_gradient={gradient}", build=False)
  monkeypatch.setattr(text, "runs_keras_lstm", as_on_a_gpu)
  decoder = LSTMDecoder(9, 4, 4, 2, use_cudnn=factories.decoder_use_cudnn(mode))
  model = factories.model_from_flags(decoder, LSTMEncoder(9, 4, 4, 2), mode, 2, 10,
                                       LARGEST_BATCH)
  exact = mode == "savae" and gradient in ("auto", "unrolled", "reverse")
  # Exact refinement: the hand-written recurrence; otherwise Keras' layer, free to pick cuDNN.
  assert model.decoder.has_second_order_gradient == exact
  assert model.decoder.use_cudnn == (False if exact else "auto")


def test_an_exact_refinement_refuses_a_decoder_that_would_run_cudnn(parse, monkeypatch):
  parse("--refine_gradient=reverse")
  monkeypatch.setattr(text, "runs_keras_lstm", as_on_a_gpu)
  with pytest.raises(ValueError, match="no second-order gradient"):
    factories.model_from_flags(LSTMDecoder(9, 4, 4, 2), LSTMEncoder(9, 4, 4, 2), "savae", 2, 10,
                                 LARGEST_BATCH)


@pytest.mark.parametrize("policy, loss_scaled", [("float32", False), ("mixed_bfloat16", False),
                                                 ("mixed_float16", True)])
def test_mixed_precision_sets_the_networks_policy_and_scales_float16s_loss(parse, policy,
                                                                          loss_scaled):
  model = parse(f"--mixed_precision={policy}", model=True)
  assert model.decoder.dtype_policy.name == model.encoder.dtype_policy.name == policy
  assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer) == loss_scaled


@pytest.mark.parametrize("budget, expected", [(2**40, ("unrolled", 0)), (None, ("reverse", 3)),
                                              (1, ("reverse", 0))])
def test_auto_measures_the_largest_batch_and_picks_the_mode_that_fits(parse, monkeypatch, capsys,
                                                                      budget, expected):
  from savae_tf import devices, training
  measured, measure = [], factories.refinement_memory

  def memory(model, batch):
    measured.append(measure(model, batch))
    return measured[-1]

  monkeypatch.setattr(factories, "refinement_memory", memory)
  if budget is None:  # room for the base and exactly 4 steps' activations: 3 kept + 1 swept
    budget_of = lambda fraction: measured[-1][0] + 4 * measured[-1][1]  # noqa: E731
  else:
    budget_of = lambda fraction: budget  # noqa: E731
  monkeypatch.setattr(devices, "memory_budget", budget_of)
  config = parse("--refine_gradient=auto", "--svi_steps=5")
  base, step = measured[-1]
  assert step > 0 and base > 0  # each unrolled step keeps activations
  assert (config.gradient, config.keep_steps) == expected
  assert f"refine gradient auto: {expected[0]}" in capsys.readouterr().out


def test_auto_leaves_what_it_measured_as_it_was(parse):
  from savae_tf import training
  from test_model import image_data, make_image_model
  model = make_image_model("savae")
  batch = {name: value.numpy() for name, value in image_data().items()}
  model.train_step(image_data())  # BatchNorm's moving statistics move away from their start
  before = [v.numpy() for v in model.non_trainable_variables]
  config = model.svi_config
  base, step = factories.refinement_memory(model, batch)
  assert base > 0 and step > 0
  assert model.svi_config == config
  for a, b in zip(before, model.non_trainable_variables):
    np.testing.assert_array_equal(a, b.numpy())


def test_xla_for_the_whole_step_is_off_unless_asked(parse):
  assert not parse(model=True).jit_compile
  assert parse("--jit_compile", model=True).jit_compile
