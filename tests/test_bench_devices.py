"""The benchmarks on a GPU: they wait for the device before stopping the clock, and build the
decoders of exact refinements off cuDNN (which `SemiAmortizedVAE` refuses on a GPU otherwise)."""

import os
import pathlib
import subprocess
import sys

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import timing  # noqa: E402  pylint: disable=wrong-import-position


def test_each_timed_call_waits_for_its_results(monkeypatch):
  waited, calls = [], []

  def fn():
    calls.append(len(calls))
    return {"loss": np.float32(len(calls))}

  monkeypatch.setattr(timing.devices, "synchronize", waited.append)
  seconds, _ = timing.measure(fn, repeats=3)
  assert len(calls) == 4 and seconds >= 0  # a warm-up call and three timed ones
  # Each call's own results were waited for (and the memory measurement waits once more).
  assert [w["loss"] for w in waited if w is not None] == [1, 2, 3, 4]


# Builds the benchmarks' exact-refinement models where TensorFlow reports a GPU.
ON_A_GPU = """
import sys
sys.path[:0] = [sys.argv[1] + "/tests", sys.argv[1] + "/bench"]
from absl import flags
import numpy as np
import tensorflow as tf
from conftest import simulated_gpu
import step_bench
flags.FLAGS(["step_bench", "--word_dim=4", "--hidden_dim=4", "--vocab=20", "--latent_dim=2"])
batch = {"tokens": tf.ones([2, 5], tf.int32), "lengths": tf.fill([2], 5)}
with simulated_gpu():
  for gradient in ("reverse", "unrolled", "reverse:1", "finite_difference"):
    model = step_bench.make_step("savae", batch, 2, gradient)
    print(gradient, model.decoder.use_cudnn, model.decoder.has_second_order_gradient)
"""
REFINE_BENCH_ON_A_GPU = """
import sys
sys.path[:0] = [sys.argv[1] + "/tests", sys.argv[1] + "/bench"]
from conftest import simulated_gpu
import refine_bench
with simulated_gpu():
  print("refine_bench", refine_bench.Decoder(20, 4).lstm.use_cudnn)
"""


def run(script):
  result = subprocess.run([sys.executable, "-c", script, str(ROOT)], capture_output=True,
                          text=True, timeout=300,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES=""))
  assert result.returncode == 0, result.stderr[-3000:]
  return result.stdout.strip().splitlines()


def test_the_benchmarks_exact_refinements_run_off_cudnn_on_a_gpu():
  lines = run(ON_A_GPU)
  assert lines[:3] == ["reverse False True", "unrolled False True", "reverse:1 False True"]
  assert lines[3] == "finite_difference auto False"  # first order only: cuDNN is fine
  assert run(REFINE_BENCH_ON_A_GPU)[-1] == "refine_bench False"
