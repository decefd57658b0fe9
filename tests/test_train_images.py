"""End-to-end tests of bin/train_images.py: outputs, resume, pictures, bad data."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

ROOT = pathlib.Path(__file__).resolve().parents[1]
# An explicit gradient mode: auto's measurement is tested by tests/test_flags.py and the device
# check, not here.
TINY = ["--dataset=npz", "--data_dir=images.npz", "--latent_dim=2", "--enc_channels=4",
        "--enc_stages=1", "--dec_channels=4", "--kernel_sizes=3,3", "--svi_steps=2",
        "--batch_size=8", "--warmup=1", "--num_samples=4", "--checkpoint_every=2",
        "--refine_gradient=reverse"]
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")


def write_images(directory, size=8, scale=1.0):
  rng = np.random.default_rng(0)
  # Grey-level strokes: each image a random horizontal bar, so there is something to learn.
  def make(n):
    images = 0.05 * rng.random((n, size, size))
    rows = rng.integers(0, size, n)
    images[np.arange(n), rows] = 0.9
    return (images * scale).astype(np.float32)
  np.savez(directory / "images.npz", train=make(32), valid=make(8), test=make(8))


def run(args, cwd):
  return subprocess.run([sys.executable, str(ROOT / "bin" / "train_images.py"), *TINY, *args],
                        cwd=cwd, env=ENV, capture_output=True, text=True, timeout=600)


def two_epochs(directory, mode):
  """Trains `mode` for two epochs into directory / "run" (images, pictures and checkpoints)."""
  write_images(directory)
  result = run([f"--method={mode}", "--epochs=2", "--num_pictures=3", "--model_dir=run"],
               directory)
  assert result.returncode == 0, result.stderr[-3000:]
  return directory


@pytest.fixture(scope="module")
def savae_run(tmp_path_factory):
  """An uninterrupted SA-VAE run, shared by the tests that read it."""
  return two_epochs(tmp_path_factory.mktemp("savae"), "savae")


@pytest.mark.parametrize("mode", ["autoreg", "savae"])  # the PixelCNN, and a latent model
def test_a_run_writes_metrics_pictures_and_a_loadable_model(tmp_path, mode, request):
  tmp_path = (request.getfixturevalue("savae_run") if mode == "savae"
              else two_epochs(tmp_path, mode))
  report = json.loads((tmp_path / "run" / "metrics.json").read_text())
  assert [e["epoch"] for e in report["epochs"]] == [1, 2]
  expected = {"nll_bound", "kl", "iw_nll"} | ({"active_units"} if mode != "autoreg" else set())
  assert expected <= set(report["test"]) and "ppl_bound" not in report["test"]
  assert report["flags"]["method"] == mode
  if mode == "savae":  # images' own default step (per example), recorded with the model
    svi_config = json.loads((tmp_path / "run" / "config.json").read_text())["svi_config"]
    assert (svi_config["step_scale"], svi_config["lr"]) == ("per_example", 0.02)
  names = {"samples"} | ({"reconstructions", "traversal"} if mode != "autoreg" else set())
  if mode != "autoreg":
    names |= {"posterior_means"}
  assert {p.stem for p in (tmp_path / "run" / "pictures").glob("*.png")} == names | {
      "training_curves"}
  for name in names:
    assert (tmp_path / "run" / "pictures" / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
  assert list((tmp_path / "run" / "logs" / "pictures").glob("events.*"))


def test_a_stopped_run_resumes_to_the_uninterrupted_result(tmp_path, savae_run):
  write_images(tmp_path)
  first = run(["--epochs=1", "--num_pictures=0", "--model_dir=split"], tmp_path)
  assert first.returncode == 0, first.stderr[-3000:]
  second = run(["--epochs=2", "--num_pictures=0", "--model_dir=split"], tmp_path)
  assert second.returncode == 0, second.stderr[-3000:]
  assert "Resuming from" in second.stdout
  expected = json.loads((savae_run / "run" / "metrics.json").read_text())
  got = json.loads((tmp_path / "split" / "metrics.json").read_text())
  for name in ("nll_bound", "refined_nll_bound", "kl", "iw_nll"):
    assert got["test"][name] == pytest.approx(expected["test"][name], rel=1e-5), name


@pytest.mark.parametrize("setup, args, message", [
    (lambda d: write_images(d, scale=255.0), [], r"must lie in [0, 1]"),
    (lambda d: None, [], "does not exist"),
    (lambda d: write_images(d), ["--kernel_sizes=4"], "odd"),
    (lambda d: write_images(d), ["--enc_stages=4"], "downsample"),
])
def test_bad_data_and_settings_are_named_before_any_training(tmp_path, setup, args, message):
  setup(tmp_path)
  result = run(args + ["--model_dir=run"], tmp_path)
  assert result.returncode != 0
  assert message in result.stderr and "Traceback" not in result.stderr, result.stderr[-2000:]
  assert not (tmp_path / "run" / "checkpoints").exists()
