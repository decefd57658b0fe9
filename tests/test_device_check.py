"""bench/device_check.py: its --quick form passes here (so the GPU check cannot rot), and a
failing or hanging phase is reported while the next phases still run."""

import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import device_check  # noqa: E402  pylint: disable=wrong-import-position


def test_a_failing_or_hanging_phase_is_reported_and_the_next_one_runs(tmp_path):
  report = device_check.Report(budget=60, work_dir=str(tmp_path))
  assert report.run("fails", [sys.executable, "-c", "import sys; sys.exit('broken: 3')"], 30) is None
  assert report.run("hangs", [sys.executable, "-c", "import time; time.sleep(30)"], 1) is None
  assert report.run("odd output", [sys.executable, "-c", "print('x')"], 30,
                    figure=device_check.last_json) is None
  assert report.run("works", [sys.executable, "-c", "print('{\"a\": 1}')"], 30,
                    figure=lambda out: device_check.last_json(out)["a"]) is not None
  report.skip("needs a GPU", "no GPU")
  rows = {name: status for name, status, _, _ in report.rows}
  assert rows["fails"] == "FAILED (exit 1): broken: 3"
  assert rows["hangs"].startswith("FAILED: over 1 s")
  assert rows["odd output"].startswith("FAILED: unexpected output")
  assert rows["works"] == "ok" and rows["needs a GPU"] == "skipped: no GPU"
  assert report.failed and "| works | ok |" in report.markdown()
  late = device_check.Report(budget=0, work_dir=str(tmp_path))
  assert late.run("late", [sys.executable, "-c", "pass"], 30) is None
  assert late.rows[0][1] == "not run: out of time"


def quick_check(tmp_path, *args):
  result = subprocess.run([sys.executable, str(ROOT / "bench" / "device_check.py"), "--quick",
                           f"--work_dir={tmp_path}", *args], capture_output=True, text=True,
                          timeout=900)
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  return result.stdout


def test_the_quick_check_of_one_model_passes_on_this_machine(tmp_path):
  # One model's phases: train (auto), serve on a CPU, agree. The other phases are the same code
  # with other binaries and flags (each binary and benchmark has its smoke test); the whole quick
  # check (6 minutes here) is the slow test below.
  table = quick_check(tmp_path, "--phases=environment,train: text SA-VAE (auto),"
                      "serve on a CPU: text SA-VAE (auto),agreement,gpu tests")
  for phase in ("environment", "train: text SA-VAE (auto)", "serve on a CPU: text SA-VAE (auto)",
                "agreement: this device vs the CPU"):
    assert f"| {phase} | ok |" in table, phase
  assert "| gpu tests | skipped: no GPU |" in table
  assert "train: image" not in table and "timing" not in table
  assert "refine gradient auto: unrolled" in table


@pytest.mark.slow  # 6 minutes on 2 cores
def test_the_quick_check_passes_on_this_machine(tmp_path):
  result = subprocess.run([sys.executable, str(ROOT / "bench" / "device_check.py"), "--quick",
                           f"--work_dir={tmp_path}"], capture_output=True, text=True,
                          timeout=900)
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  table = result.stdout
  for phase in ("environment", "train: text SA-VAE (auto)", "train: text VAE (cuDNN on a GPU)",
                "train: image SA-VAE", "train: text SA-VAE, mixed_bfloat16",
                "serve on a CPU: image SA-VAE", "agreement: this device vs the CPU",
                "timing: text", "timing: images"):
    assert f"| {phase} | ok |" in table, phase
  assert "| gpu tests | skipped: no GPU |" in table
  assert "refine gradient auto: unrolled" in table  # tiny models fit: the fastest exact mode
  assert "| savae | 2 | auto |" in table
  assert (tmp_path / "export0" / "1" / "saved_model.pb").exists()
