"""End-to-end tests of bin/train_synthetic.py: every method through the one runner, aggressive
included, resumed after kill -9 to the uninterrupted result."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
# Aggressive with a learned generator: three batches an epoch, each after an inner loop of the
# encoder's; checkpoints every two steps, so the kill lands inside the second epoch.
ARGS = ["--method=aggressive", "--generator=learned", "--epochs=2", "--num_train=24",
        "--num_valid=16", "--num_test=16", "--batch_size=8", "--num_samples=5",
        "--checkpoint_every=2"]


def command(model_dir):
  return [sys.executable, str(ROOT / "bin" / "train_synthetic.py"), *ARGS,
          f"--model_dir={model_dir}"]


def run(model_dir, cwd):
  result = subprocess.run(command(model_dir), cwd=cwd, env=ENV, capture_output=True, text=True,
                          timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  return result


def test_an_aggressive_job_killed_mid_run_resumes_to_the_uninterrupted_table(tmp_path):
  whole = run("whole", tmp_path)
  assert "aggressive: validation mi" in whole.stdout or "Epoch 2/2" in whole.stdout
  expected = json.loads((tmp_path / "whole" / "metrics.json").read_text())
  process = subprocess.Popen(command("killed"), cwd=tmp_path, env=ENV,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  checkpoints = tmp_path / "killed" / "learned-aggressive" / "checkpoints"
  deadline = time.time() + 300
  while time.time() < deadline and process.poll() is None:
    steps = [int(p.name.split("-")[1].split(".")[0]) for p in checkpoints.glob("ckpt-*.index")]
    if any(3 < s < 6 for s in steps):
      break
    time.sleep(0.05)
  assert process.poll() is None, "the job ended before it could be killed"
  process.send_signal(signal.SIGKILL)
  process.wait()
  resumed = run("killed", tmp_path)
  assert "Resuming from" in resumed.stdout
  got = json.loads((tmp_path / "killed" / "metrics.json").read_text())
  want, have = expected["runs"]["learned/aggressive"], got["runs"]["learned/aggressive"]
  for name in ("nll_bound", "kl", "iw_nll", "mi", "val_nll_bound"):
    assert have[name] == pytest.approx(want[name], rel=1e-5), name
  assert have["best_epoch"] == want["best_epoch"]
  # Each run's own directory is a run of the runner's: its epochs, flags and test report.
  run_report = json.loads((tmp_path / "killed" / "learned-aggressive" / "metrics.json")
                          .read_text())
  assert [e["epoch"] for e in run_report["epochs"]] == [1, 2]
  assert run_report["flags"]["method"] == "aggressive"
  assert run_report["test"]["nll_bound"] == pytest.approx(have["nll_bound"])
