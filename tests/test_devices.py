"""Tests for savae_tf.devices: each device-dependent choice, on this CPU with a simulated GPU, and
(marked gpu) on a real one."""

import numpy as np
import pytest
import tensorflow as tf

from conftest import simulated_gpu
from savae_tf import devices


def test_a_gpu_is_seen_where_tensorflow_reports_one_except_when_tracing_portably():
  assert not devices.gpu_present()
  with simulated_gpu():
    assert devices.gpu_present() and devices.memory_device() == "GPU:0"
    with devices.portable():
      assert devices.tracing_portably() and not devices.gpu_present()
      assert devices.memory_device() == "CPU:0"
    assert devices.gpu_present() and not devices.tracing_portably()
  assert not devices.gpu_present()


def test_xla_is_on_where_asked_auto_on_a_gpu_and_never_when_tracing_portably():
  assert [devices.use_xla(s) for s in ("auto", "on", "off")] == [False, True, False]
  with simulated_gpu():
    assert [devices.use_xla(s) for s in ("auto", "on", "off")] == [True, True, False]
    with devices.portable():
      assert [devices.use_xla(s) for s in ("auto", "on", "off")] == [False, False, False]
  with pytest.raises(ValueError, match="Unknown XLA setting 'yes'"):
    devices.use_xla("yes")


def test_tf32_is_switched_as_asked():
  try:
    devices.set_tf32(False)
    assert not devices.tf32_enabled()
    devices.set_tf32(True)
    assert devices.tf32_enabled()
  finally:
    devices.set_tf32(True)  # TensorFlow's default, for the other tests of this process


@pytest.mark.parametrize("steps, base, step, budget, expected", [
    (20, 100, 10, 300, ("unrolled", 0)),  # 100 + 20 * 10 fits exactly
    (20, 100, 10, 299, ("reverse", 18)),  # (18 + 1) steps held fit, 20 would not
    (20, 100, 10, 125, ("reverse", 1)),
    (20, 100, 10, 115, ("reverse", 0)),  # only the reverse sweep's one step fits
    (20, 100, 10, 50, ("reverse", 0)),  # nothing fits: the least memory an exact mode needs
    (1, 100, 10, 105, ("reverse", 0)),  # keep_steps stays below K
    (5, 100, -3, 100, ("unrolled", 0)),  # a measured negative step (noise) counts as free
])
def test_auto_picks_unrolled_when_it_fits_else_reverse_keeping_what_fits(steps, base, step,
                                                                          budget, expected):
  choice = devices.choose_refine_gradient(steps, base, step, budget)
  assert (choice.gradient, choice.keep_steps) == expected
  assert choice.gradient in choice.describe()


def test_the_memory_budget_is_a_fraction_of_the_free_memory():
  free = devices.free_memory_bytes()
  assert free > 2**20
  assert abs(devices.memory_budget(0.5) - free // 2) < 0.1 * free  # free memory moves a little
  with pytest.raises(ValueError, match=r"in \(0, 1\]"):
    devices.memory_budget(1.5)


def test_peak_memory_sees_an_allocation_of_known_size():
  size = 64 * 2**20

  def allocate(megabytes):
    return lambda: tf.reduce_sum(tf.ones([megabytes * 2**18])).numpy()  # float32: 4 bytes each

  with devices.PeakMemory() as memory:
    small = memory.measure(allocate(16))
    large = memory.measure(allocate(64))
  assert large >= 0.9 * size and large > small
  with devices.PeakMemory() as memory:
    assert memory.measure(lambda: None) < size


@pytest.mark.gpu
def test_on_a_real_gpu_the_allocator_reports_and_tf32_is_what_the_binaries_set():
  assert devices.gpu_present() and devices.memory_source() == "allocator"
  assert devices.free_memory_bytes() > 0
  devices.set_tf32(False)
  a = tf.random.stateless_normal([512, 512], [1, 2])
  exact = np.matmul(a.numpy().astype(np.float64), a.numpy().astype(np.float64))
  error = np.abs(tf.matmul(a, a).numpy() - exact).max() / np.abs(exact).max()
  assert error < 1e-5  # float32 proper, not TF32's 10-bit mantissa (~1e-3)


TF32_OF_A_BINARY = """
import sys
from absl import flags
from savae_tf import flags as savae_flags
import tensorflow as tf
if sys.argv[1] == "with_flag":
  savae_flags.define_device_flags()
savae_flags.run(lambda argv: print(tf.config.experimental.tensor_float_32_execution_enabled()))
"""


@pytest.mark.parametrize("kind, args, expected", [("with_flag", [], "False"),
                                                  ("with_flag", ["--tf32"], "True"),
                                                  ("without_flag", [], "False")])
def test_binaries_run_in_full_float32_unless_tf32_is_asked_for(kind, args, expected):
  import os, subprocess, sys
  assert devices.tf32_enabled()  # TensorFlow's own default, which the binaries change
  result = subprocess.run([sys.executable, "-c", TF32_OF_A_BINARY, kind, *args],
                          capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
  assert result.returncode == 0, result.stderr[-2000:]
  assert result.stdout.strip().splitlines()[-1] == expected


def graph_ops(concrete_function):
  graph = concrete_function.graph.as_graph_def()
  return ({node.op for node in graph.node}
          | {node.op for function in graph.library.function for node in function.node_def})


@pytest.mark.gpu
def test_on_a_real_gpu_cudnn_serves_first_order_work_and_never_an_exact_refinement_or_export(
    tmp_path):
  import keras
  from savae_tf import export, methods
  from savae_tf.data.text import Vocabulary
  from savae_tf.model import SemiAmortizedVAE, SVIConfig
  from savae_tf.networks.text import LSTMDecoder, LSTMEncoder
  from savae_tf.refiners import LearnedRefiner
  vocabulary = Vocabulary.build(["the cat sat on the mat", "a dog ran"])
  batch = {"tokens": tf.ones([2, 6], tf.int32), "lengths": tf.fill([2], 6)}
  cudnn = {}
  # The learned refiner differentiates the decoder twice as SGD does: the same rule must hold.
  for mode, refiner in (("vae", None), ("savae", None), ("savae", "learned")):
    keras.utils.set_random_seed(0)
    model = SemiAmortizedVAE(
        LSTMDecoder(len(vocabulary), 8, 8, 2, use_cudnn=methods.decoder_use_cudnn(mode, "auto")),
        LSTMEncoder(len(vocabulary), 8, 8, 2), mode=mode, latent_dim=2,
        svi_config=SVIConfig(steps=2, gradient="unrolled"),
        refiner=LearnedRefiner(2, units=4) if refiner else None)
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    step = tf.function(model.train_step).get_concrete_function(batch)
    cudnn[mode, refiner] = any(op.startswith("Cudnn") for op in graph_ops(step))
    model.train_step(batch)  # runs: the exact refinement's decoder has second-order gradients
    path = export.export(model, vocabulary, str(tmp_path / f"{mode}-{refiner}"))
    loaded = tf.saved_model.load(path)
    assert not any(op.startswith("Cudnn") for op in graph_ops(loaded.signatures["score"]))
  assert all(cudnn.values())  # the encoders run cuDNN in each
