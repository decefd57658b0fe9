"""Multi-worker training with real worker processes: bin/launch_local_cluster.py starts N copies
of a training binary on localhost, each with its TF_CONFIG, under --strategy=multi_worker.

Every example draws its noise from its position in the global batch (`distributions.BatchRows`),
so a cluster takes the steps of one process with the same global batch, up to float32 rounding."""

import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import time

import pytest

from conftest import write_text_corpus
from test_train_images import write_images

ROOT = pathlib.Path(__file__).resolve().parents[1]
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
TEXT = ["train_text.py", "--data_dir=data", "--model=savae", "--enc_word_dim=8",
        "--enc_h_dim=8", "--dec_word_dim=8", "--dec_h_dim=8", "--latent_dim=2", "--svi_steps=2",
        "--num_samples=5", "--batch_size=8", "--warmup=2", "--dropout=0.2", "--epochs=2",
        "--checkpoint_every=3"]
IMAGES = ["train_images.py", "--dataset=npz", "--data_dir=images.npz", "--model=savae",
          "--latent_dim=2", "--enc_channels=4", "--enc_stages=1", "--dec_channels=4",
          "--kernel_sizes=3,3", "--svi_steps=2", "--batch_size=8", "--warmup=1",
          "--num_samples=4", "--epochs=2", "--num_pictures=0", "--sync_batchnorm"]
TIMEOUT = 600  # a hung collective must fail the test, not the suite


def single(binary, args, cwd):
  """One process, the default strategy."""
  return subprocess.run([sys.executable, str(ROOT / "bin" / binary), *args], cwd=cwd, env=ENV,
                        capture_output=True, text=True, timeout=TIMEOUT)


def cluster_command(workers, binary, args):
  return [sys.executable, str(ROOT / "bin" / "launch_local_cluster.py"), f"--workers={workers}",
          "--grace_seconds=60", "--", str(ROOT / "bin" / binary), *args,
          "--strategy=multi_worker"]


def cluster_env(cwd):
  """Each worker's temporary files go to cwd/tmp, where the test can see what is left."""
  (cwd / "tmp").mkdir(exist_ok=True)
  return dict(ENV, TMPDIR=str(cwd / "tmp"))


def cluster(workers, binary, args, cwd):
  return subprocess.run(cluster_command(workers, binary, args), cwd=cwd, env=cluster_env(cwd),
                        capture_output=True, text=True, timeout=TIMEOUT)


def checksums(output):
  """Each worker's 'Variables checksum' line, by worker (the chief's lines have no prefix)."""
  found = {}
  for line in output.splitlines():
    match = re.match(r"(?:\[worker (\d+)\] )?Variables checksum .*: (\w+)$", line)
    if match:
      found[int(match.group(1) or 0)] = match.group(2)
  return found


def assert_same_run(got, expected, epoch_names=("loss", "val_nll_bound", "val_kl"), rel=2e-5,
                    nats=1e-4):
  """Epoch by epoch and at test, the metrics of `expected` within float32 rounding."""
  assert [e["epoch"] for e in got["epochs"]] == [e["epoch"] for e in expected["epochs"]]
  for a, b in zip(got["epochs"], expected["epochs"]):
    for name in epoch_names:
      assert a[name] == pytest.approx(b[name], rel=rel, abs=nats), (a["epoch"], name)
  for name in ("iw_nll", "nll_bound", "refined_nll_bound", "kl", "mi"):
    assert got["test"][name] == pytest.approx(expected["test"][name], rel=rel, abs=nats), name


def metrics(directory):
  return json.loads((directory / "metrics.json").read_text())


def files(directory):
  """The run directory's files by relative path, TensorBoard's host-and-time-stamped event files
  by their folder only."""
  return sorted(str(p.parent.relative_to(directory)) + "/events" if ".tfevents." in p.name
                else str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def text_runs(tmp_path_factory):
  """The tiny corpus trained by one process and by a 2-worker cluster (exported)."""
  directory = tmp_path_factory.mktemp("text")
  write_text_corpus(directory / "data")
  one = single(TEXT[0], TEXT[1:] + ["--model_dir=one"], directory)
  assert one.returncode == 0, one.stderr[-3000:]
  two = cluster(2, TEXT[0], TEXT[1:] + ["--model_dir=two", "--export_dir=export"], directory)
  assert two.returncode == 0, two.stdout[-3000:] + two.stderr[-3000:]
  return directory, two.stdout


def test_two_workers_train_as_one_process(text_runs):
  directory, _ = text_runs
  assert_same_run(metrics(directory / "two"), metrics(directory / "one"))


def test_the_workers_variables_are_identical_after_training(text_runs):
  found = checksums(text_runs[1])
  assert sorted(found) == [0, 1] and found[0] == found[1]


def test_only_the_chief_writes_and_nothing_else_outlives_the_run(text_runs):
  directory, _ = text_runs
  assert files(directory / "two") == files(directory / "one")
  assert (directory / "export" / "1" / "saved_model.pb").is_file()
  # The other worker wrote into a temporary directory, which is gone; nothing else appeared.
  assert list((directory / "tmp").iterdir()) == []
  assert not list(directory.rglob("savae-worker-*"))


@pytest.mark.slow  # 2 minutes on 2 cores
def test_three_workers_train_as_one_process(text_runs):
  # 8 examples over 3 workers: uneven shares (3, 3, 2), and a last batch that leaves one empty.
  directory, _ = text_runs
  three = cluster(3, TEXT[0], TEXT[1:] + ["--model_dir=three"], directory)
  assert three.returncode == 0, three.stdout[-3000:] + three.stderr[-3000:]
  assert_same_run(metrics(directory / "three"), metrics(directory / "one"))
  found = checksums(three.stdout)
  assert sorted(found) == [0, 1, 2] and len(set(found.values())) == 1


@pytest.mark.slow  # 2 minutes on 2 cores
def test_two_image_workers_with_synchronised_batchnorm_train_as_one_process(tmp_path):
  write_images(tmp_path)
  one = single(IMAGES[0], IMAGES[1:] + ["--model_dir=one"], tmp_path)
  assert one.returncode == 0, one.stderr[-3000:]
  two = cluster(2, IMAGES[0], IMAGES[1:] + ["--model_dir=two"], tmp_path)
  assert two.returncode == 0, two.stdout[-3000:] + two.stderr[-3000:]
  # The training losses agree to 1e-7; evaluation, after the weights have taken the rounding of
  # the all-reduced BatchNorm moments for 8 steps, to about 4e-5.
  assert_same_run(metrics(tmp_path / "two"), metrics(tmp_path / "one"), rel=1e-4, nats=1e-3)
  assert len(set(checksums(two.stdout).values())) == 1


def test_a_killed_worker_stops_the_cluster_and_a_restart_resumes_exactly(text_runs):
  directory, _ = text_runs
  args = TEXT[1:] + ["--model_dir=killed"]
  log = open(directory / "killed.log", "w+")
  launcher = subprocess.Popen(cluster_command(2, TEXT[0], args), cwd=directory,
                              env=cluster_env(directory), stdout=log, stderr=subprocess.STDOUT,
                              text=True)
  checkpoints = directory / "killed" / "checkpoints"
  deadline = time.time() + TIMEOUT
  # Kill worker 1 once the chief has checkpointed inside the first epoch (22 steps).
  while time.time() < deadline and launcher.poll() is None:
    steps = [int(p.name.split("-")[1].split(".")[0]) for p in checkpoints.glob("ckpt-*.index")]
    if any(0 < s < 20 for s in steps):
      break
    time.sleep(0.05)
  assert launcher.poll() is None, "the cluster ended before a worker could be killed"
  log.seek(0)
  pid = int(re.search(r"worker 1 at \S+, pid (\d+)", log.read()).group(1))
  os.kill(pid, signal.SIGKILL)
  launcher.wait(timeout=TIMEOUT)  # the chief fails by itself: no hang
  log.seek(0)
  output = log.read()
  assert launcher.returncode != 0
  assert "error: a worker of the cluster stopped during training" in output, output[-3000:]
  assert "Traceback" not in output, output[-3000:]
  resumed = cluster(2, TEXT[0], args, directory)
  assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
  assert "Resuming from" in resumed.stdout
  # An epoch's logged training loss covers the steps since the restart; the rest is the same.
  assert_same_run(metrics(directory / "killed"), metrics(directory / "two"),
                  epoch_names=("val_nll_bound", "val_kl"))
