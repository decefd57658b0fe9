"""Smoke tests: every script in bin/ runs with tiny flags and prints what it promises."""

import importlib
import importlib.metadata
import inspect
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

# Every binary, its tiny flags, and a line fragment its output must contain. "{model}" is a tiny
# saved model directory, "{saved_model}" its SavedModel (see `tiny_model`), "{data}" a tiny corpus,
# "{images}" a tiny .npz of images.
SMOKE_RUNS = {
    "refine_demo.py": (["--svi_steps=3", "--batch_size=4"], "relative difference to unrolled"),
    # Two copies of a binary, each with its TF_CONFIG (real clusters: tests/test_multi_worker.py).
    "launch_local_cluster.py": (["--workers=2", "--", str(ROOT / "bin" / "refine_demo.py"),
                                 "--svi_steps=3", "--batch_size=4"],
                                "[worker 1] gradient of the refined bound"),
    # The oracle's table; test_train_synthetic_writes_metrics_json_and_exports checks more of it.
    "train_synthetic.py": (["--method=all", "--generator=oracle", "--epochs=1", "--num_train=32",
                            "--num_test=10", "--num_samples=5", "--svi_steps=2", "--gaps",
                            "--gap_examples=4", "--gap_max_steps=10", "--gap_samples=10",
                            "--model_dir=run", "--export_dir=exp"], "| savae |"),
    "export_savedmodel.py": (["--model_dir={model}", "--export_dir=exp"],
                             "SavedModel written to exp/1"),
    "evaluate.py": (["--model_dir={saved_model}", "--data=synthetic", "--num_test=20",
                     "--svi_steps=2", "--num_samples=3", "--output=m.json", "--gaps",
                     "--gap_examples=3", "--gap_max_steps=10", "--gap_samples=10"],
                    "amortization_gap_stderr"),
    "generate.py": (["--model_dir={model}", "--num=2", "--reconstruct=w1 w2 w3",
                     "--interpolate=w1 w2|w3 w4", "--max_length=4"], "== interpolation"),
    # The training binaries with the aggressive method (a VAE with an inner encoder loop).
    "train_text.py": (["--data_dir={data}", "--model=aggressive", "--enc_word_dim=4", "--enc_h_dim=4",
                       "--dec_word_dim=4", "--dec_h_dim=4", "--latent_dim=2", "--epochs=1",
                       "--num_samples=2", "--mixed_precision=mixed_bfloat16", "--model_dir=run",
                       "--export_dir=exp"],
                      "SavedModel written to exp/1"),
    "train_images.py": (["--dataset=npz", "--data_dir={images}", "--model=aggressive", "--latent_dim=2",
                         "--enc_channels=4", "--enc_stages=1", "--dec_channels=4",
                         "--kernel_sizes=3,3", "--svi_steps=2", "--epochs=1", "--batch_size=10",
                         "--num_samples=3", "--num_pictures=3", "--mixed_precision=mixed_bfloat16",
                         "--model_dir=run", "--export_dir=exp"], "SavedModel written to exp/1"),
}


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
  """Saved once per module (the binaries only read them): a small untrained synthetic-vocabulary
  SA-VAE as a model directory and a SavedModel, and a small image SA-VAE's model directory."""
  tmp_path = tmp_path_factory.mktemp("models")
  return (*tiny_model(tmp_path), tiny_image_model(tmp_path))


def tiny_model(tmp_path):
  """A small untrained synthetic-vocabulary SA-VAE saved as a model directory and a SavedModel."""
  from savae_tf import export, runs
  from savae_tf.data import synthetic
  from savae_tf.model import SemiAmortizedVAE, SVIConfig
  from savae_tf.networks.synthetic import SyntheticGenerator
  from savae_tf.networks.text import LSTMEncoder
  model = SemiAmortizedVAE(SyntheticGenerator(1000, 4, 4, 8), LSTMEncoder(1001, 4, 4, 2),
                           mode="savae", latent_dim=2, svi_config=SVIConfig(steps=2),
                           generation_length=synthetic.SEQUENCE_LENGTH)
  model_dir = runs.save_model(model, synthetic.vocabulary(), str(tmp_path / "model"))
  return model_dir, export.export(model, synthetic.vocabulary(), str(tmp_path / "saved"))


def tiny_image_model(tmp_path):
  """A small untrained image SA-VAE saved as a model directory."""
  from savae_tf import runs
  from savae_tf.model import SemiAmortizedVAE
  from savae_tf.networks.image import GatedPixelCNN, ResNetEncoder
  model = SemiAmortizedVAE(GatedPixelCNN(2, channels=4, kernel_sizes=(3,), image_shape=(6, 6)),
                           ResNetEncoder(2, channels=4, stages=1, image_shape=(6, 6)),
                           latent_dim=2)
  return runs.save_model(model, None, str(tmp_path / "image_model"))


def tiny_images(tmp_path, size=8):
  """An .npz of grey-level images, 30 / 6 / 6 of size x size; returns its path."""
  import numpy as np
  rng = np.random.default_rng(0)
  splits = {name: rng.random((n, size, size)).astype(np.float32)
            for name, n in [("train", 30), ("valid", 6), ("test", 6)]}
  path = tmp_path / "images.npz"
  np.savez(path, **splits)
  return str(path)


def run_binary(name, args, tmp_path):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
  return subprocess.run([sys.executable, str(ROOT / "bin" / name), *args], cwd=tmp_path,
                        env=env, capture_output=True, text=True, timeout=600)


def test_every_binary_has_a_smoke_test():
  binaries = {path.name for path in (ROOT / "bin").glob("*.py") if not path.name.startswith("_")}
  assert binaries == set(SMOKE_RUNS), "add the new binary to SMOKE_RUNS"


def check_synthetic_report(tmp_path, stdout):
  report = json.loads((tmp_path / "run" / "metrics.json").read_text())
  metrics = report["runs"]["oracle/savae"]
  assert {"nll_bound", "refined_nll_bound", "kl", "iw_nll", "mi", "active_units",
          "true_nll"} <= set(metrics)
  assert report["flags"]["svi_steps"] == 2 and report["flags"]["method"] == "all"
  assert metrics["true_nll"] == pytest.approx(report["true_nll"])
  # --gaps: the decomposition of 4 of the 10 test sequences, log p(x) the quadrature's.
  from savae_tf import gaps
  decomposed = gaps.evenly_spaced(10, 4)
  np.testing.assert_array_equal(decomposed, [0, 2, 5, 7])
  for method in ("vae", "svi", "savae"):
    gap = report["runs"][f"oracle/{method}"]
    assert gap["gap_examples"] == 4 and gap["gap_log_likelihood_kind"] == "exact", method
    assert gap["gap_optimizer_steps_max"] <= 10
    assert (gap["approximation_gap"] + gap["amortization_gap"] + gap["gap_elbo_encoder"]
            == pytest.approx(-np.mean(np.load(tmp_path / "run" / "true_nll-seed3435.npz")["nll"][
                decomposed]), abs=1e-4)), method
    # The decomposition's journal (what a killed run resumes from) is gone once it is whole.
    assert not (tmp_path / "run" / f"oracle-{method}" / "gaps-partial.npz").exists(), method
  # SVI with the oracle trains nothing, yet validation chooses its step: its report has one.
  svi_run = json.loads((tmp_path / "run" / "oracle-svi" / "metrics.json").read_text())
  assert svi_run["epochs"] == [] and report["runs"]["oracle/svi"][
      "val_refined_nll_bound"] == pytest.approx(svi_run["validation"]["refined_nll_bound"])
  # Each refining model refines at the step chosen for its method on this data.
  from savae_tf import domains, methods, refiners
  for method in ("svi", "savae"):
    config = json.loads((tmp_path / "run" / f"oracle-{method}" / "config.json").read_text())
    assert config["svi_config"]["lr"] == refiners.default_lr(methods.METHODS[method],
                                                            domains.get("synthetic"))
    assert report["runs"][f"oracle/{method}"]["svi_lr"] == config["svi_config"]["lr"]
  assert (f"Refined bounds: K = 2 steps per example, each method at its own step size (SVI "
          f"{report['runs']['oracle/svi']['svi_lr']:g}, SA-VAE ") in stdout
  assert sorted(p.name for p in (tmp_path / "exp").iterdir()) == [
      "oracle-savae", "oracle-svi", "oracle-vae"]
  # The pictures: PNGs listed in the report, and the same as TensorBoard images.
  # With the oracle's generator SVI trains nothing, so it has no training curves.
  pictures = ["run/pictures/posteriors-oracle.png", "run/pictures/posterior_means-oracle.png",
              "run/pictures/gaps-oracle.png", "run/oracle-vae/pictures/training_curves.png",
              "run/oracle-savae/pictures/training_curves.png"]
  assert report["pictures"] == pictures and "pictures: " + ", ".join(pictures) in stdout
  for path in pictures:
    assert (tmp_path / path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
  import tensorflow as tf
  events = list((tmp_path / "run" / "logs" / "pictures").glob("events.out.tfevents.*"))
  tags = {value.tag for path in events for event in tf.compat.v1.train.summary_iterator(str(path))
          for value in event.summary.value}
  assert tags == {"posteriors-oracle", "posterior_means-oracle", "gaps-oracle"}
  assert (tmp_path / "run" / "oracle-savae" / "pictures" / "gaps.png").exists()


def check_evaluate_report(tmp_path, stdout):
  report = json.loads((tmp_path / "m.json").read_text())
  for name in ("approximation_gap", "amortization_gap", "refinement_closed"):
    assert np.isfinite(report[name]) and report[name + "_stderr"] >= 0, name
  assert report["gap_examples"] == 3 and report["gap_log_likelihood_kind"] == "iw 10"
  assert (tmp_path / "m-gaps.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  assert not (tmp_path / "m-gaps-partial.npz").exists()


# What a binary's smoke run must have written, beyond the line it prints: (tmp_path, stdout).
SMOKE_CHECKS = {"train_synthetic.py": check_synthetic_report,
                "evaluate.py": check_evaluate_report}


@pytest.mark.parametrize("name", sorted(SMOKE_RUNS))
def test_binary_runs(name, tmp_path, text_corpus, tiny_models):
  args, expected = SMOKE_RUNS[name]
  if any("{model}" in arg or "{saved_model}" in arg for arg in args):
    model_dir, saved_model, _ = tiny_models
    args = [arg.format(model=model_dir, saved_model=saved_model) for arg in args]
  if any("{data}" in arg for arg in args):
    args = [arg.format(data=text_corpus()) for arg in args]
  if any("{images}" in arg for arg in args):
    args = [arg.format(images=tiny_images(tmp_path)) for arg in args]
  result = run_binary(name, args, tmp_path)
  assert result.returncode == 0, result.stderr[-3000:]
  assert expected in result.stdout
  # No INFO or WARNING log line of Python's absl or TensorFlow's C++ (I<mmdd> <time> <thread>
  # <file>:<line>]), nor absl's notice that precedes TensorFlow's start-up lines.
  assert not re.search(r"^[IW]\d{4} \S+ +\d+ \S+:\d+\]|before absl::InitializeLog",
                       result.stdout + result.stderr, re.MULTILINE), result.stderr[-3000:]
  SMOKE_CHECKS.get(name, lambda *_: None)(tmp_path, result.stdout)


# The console commands setup.py installs, and the binary each runs.
COMMANDS = {"savae-train-text": "train_text", "savae-train-images": "train_images",
            "savae-train-synthetic": "train_synthetic", "savae-evaluate": "evaluate",
            "savae-generate": "generate", "savae-export": "export_savedmodel"}


def test_pip_installs_a_console_command_per_binary():
  installed = {entry.name: entry.value
               for entry in importlib.metadata.entry_points(group="console_scripts")
               if entry.value.startswith("savae_tf_bin")}
  assert set(installed) == set(COMMANDS), "reinstall (pip install -e .) after editing setup.py"
  for command, binary in COMMANDS.items():
    module, function = installed[command].split(":")
    runs = inspect.getsource(getattr(importlib.import_module(module), function))
    assert f'"{binary}"' in runs, (command, runs)
    assert (ROOT / "bin" / f"{binary}.py").is_file()
    assert shutil.which(command, path=os.path.dirname(sys.executable)), command


def test_a_console_command_runs_its_binary(tmp_path, tiny_models):
  model_dir, _, _ = tiny_models
  args = [f"--model_dir={model_dir}", "--num=2", "--seed=7"]
  command = shutil.which("savae-generate", path=os.path.dirname(sys.executable))
  installed = subprocess.run([command, *args], cwd=tmp_path, capture_output=True, text=True,
                             env=dict(os.environ, CUDA_VISIBLE_DEVICES=""), timeout=600)
  assert installed.returncode == 0, installed.stderr[-3000:]
  lines = installed.stdout.splitlines()
  assert lines[0] == "== 2 samples from the prior"  # what `python bin/generate.py` prints
  # No --max_length: the model's own length (the oracle's 5 words; its vocabulary has no </s>).
  assert [len(line.split()) for line in lines[1:]] == [5, 5]
  assert "InitializeLog" not in installed.stderr  # quiet like the binary
  help_text = subprocess.run([command, "--helpshort"], capture_output=True, text=True,
                             timeout=600).stdout
  assert "--beam_size" in help_text  # the binary's own flags, as `python bin/generate.py`


def test_generate_decodes_every_z_by_beam_search(tmp_path, tiny_models):
  model_dir = tiny_models[0]
  result = run_binary("generate.py", [f"--model_dir={model_dir}", "--num=2", "--reconstruct=w1 w2 w3",
                                      "--interpolate=w1 w2|w3 w4", "--interpolation_steps=3",
                                      "--max_length=4", "--beam_size=3"], tmp_path)
  assert result.returncode == 0, result.stderr[-3000:]
  out = result.stdout
  assert "each decoded by a beam of 3" in out and "(K = 20, beam of 3)" in out
  assert "interpolation (beam of 3)" in out
  # Every printed sentence carries its log-probability: 2 samples, 1 reconstruction, 3 points.
  log_ps = [float(line.split("log p ")[1].rstrip(")")) for line in out.splitlines()
            if "(log p " in line]
  assert len(log_ps) == 6 and all(v < 0 for v in log_ps)


def test_refine_demo_refinement_tightens_the_bound_and_modes_agree(tmp_path):
  result = run_binary("refine_demo.py", ["--svi_steps=10"], tmp_path)
  assert result.returncode == 0, result.stderr[-3000:]
  lines = result.stdout.splitlines()
  exact = float(lines[0].split(":")[1].split()[0])
  bounds = [float(line.split("=")[-1]) for line in lines if line.startswith("K=")]
  assert len(bounds) == 11 and bounds[-1] < bounds[0] and min(bounds) >= exact
  errors = [float(line.split()[-1]) for line in lines if "relative difference" in line]
  assert len(errors) == 3 and max(errors) < 1e-8


@pytest.mark.parametrize("name, args, named", [
    ("refine_demo.py", ["--refine_gradient=backprop"], "refine_gradient"),
    ("train_synthetic.py", ["--refine_gradient=adjoint"], "refine_gradient"),
    ("train_synthetic.py", ["--epochs=0"], "epochs"),
    ("train_synthetic.py", ["--model_dir=a_file"], "model_dir"),
])
def test_a_bad_flag_is_a_clear_error_before_any_work(name, args, named, tmp_path):
  (tmp_path / "a_file").write_text("not a directory")
  result = run_binary(name, args, tmp_path)
  assert result.returncode != 0
  assert named in result.stderr and "Traceback" not in result.stderr
  assert "true NLL" not in result.stdout  # no work was done


def test_readme_commands_name_existing_files():
  readme = (ROOT / "README.md").read_text()
  for marker in ("<!-- main-command -->", "<!-- test-command -->"):
    command = readme.split(marker)[1].split("```")[1].strip()
    assert "pip install -r requirements.txt -e ." in command
    for word in command.split():
      if word.startswith("bin/"):
        assert (ROOT / word).is_file(), word


# Every benchmark script runs with tiny settings (the figures come from full runs, BENCHMARKS.md).
BENCH_RUNS = {
    "refine_bench.py": ["--steps=2", "--modes=reverse,none", "--repeats=1", "--hidden=8", "--vocab=20", "--batch=4",
                        "--length=5", "--latent=3"],
    "step_bench.py": ["--steps=2", "--gradients=reverse:1", "--variants=vae,savae",
                      "--repeats=1", "--word_dim=8", "--hidden_dim=8", "--vocab=30", "--batch=4",
                      "--length=5", "--latent_dim=3"],
    "image_step_bench.py": ["--steps=2", "--variants=vae,savae", "--repeats=1", "--latent_dim=2", "--enc_channels=4",
                            "--enc_stages=1", "--dec_channels=4", "--kernel_sizes=3,3",
                            "--size=6", "--batch=3"],
    "score_bench.py": ["--vocab=20", "--hidden=4", "--mlp=8", "--batch=4", "--num_samples=1,3",
                       "--steps=2", "--total=8", "--repeats=1"],
    "generate_bench.py": ["--word_dim=4", "--hidden_dim=6", "--latent_dim=2", "--vocab=20",
                          "--batch=3", "--lengths=2,5", "--repeats=1"],
    "nll_bench.py": ["--tokens=12", "--hidden=4", "--vocab=20", "--repeats=1"],
    "refiner_bench.py": ["--steps=1", "--units=4", "--encoder_units=4", "--batch=3",
                         "--repeats=1"],
    "cluster_bench.py": ["--workers=1", "--batch_size=4", "--length=4", "--hidden=4",
                         "--vocab=20", "--warmup=1", "--steps=2"],
}


def test_every_benchmark_has_a_smoke_run():
  scripts = {p.name for p in (ROOT / "bench").glob("*_bench.py")}
  assert scripts == set(BENCH_RUNS), "add the new benchmark to BENCH_RUNS"


@pytest.mark.parametrize("name", sorted(BENCH_RUNS))
def test_benchmark_runs(name, tmp_path):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
  result = subprocess.run([sys.executable, str(ROOT / "bench" / name), *BENCH_RUNS[name]],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  rows = [line for line in result.stdout.splitlines() if line.startswith("| ")
          and not line.startswith("| mode") and not line.startswith("| variant")]
  assert len(rows) >= 2 and all("nan" not in row for row in rows)



def test_bad_input_to_the_model_binaries_is_named_without_a_traceback(tmp_path, tiny_models):
  model_dir, saved_model, image_model = tiny_models
  (tmp_path / "empty.txt").write_text("\n  \n")
  cases = [
      ("generate.py", [f"--model_dir={model_dir}", "--reconstruct=w1 hello"], "not in the vocabulary"),
      ("generate.py", [f"--model_dir={saved_model}"], "Nothing to do"),
      ("evaluate.py", [f"--model_dir={saved_model}", "--sentences_file=missing.txt"], "does not exist"),
      ("evaluate.py", [f"--model_dir={saved_model}", "--sentences_file=empty.txt"], "is empty"),
      ("evaluate.py", [f"--model_dir={saved_model}", "--data=synthetic", "--sentences_file=empty.txt"],
       "exactly one of --data and --sentences_file"),
      ("export_savedmodel.py", ["--model_dir=nowhere", "--export_dir=e"], "does not exist"),
      ("generate.py", [f"--model_dir={image_model}", "--num=2"], "is an image model"),
  ]
  for name, args, message in cases:
    result = run_binary(name, args, tmp_path)
    assert result.returncode != 0, (name, args)
    assert message in result.stderr and "Traceback" not in result.stderr, (name, args,
                                                                            result.stderr[-2000:])
