"""Device check: savae-tf on the GPU at hand, in at most ten minutes, as one markdown report.

  python bench/device_check.py            # on a machine with a GPU: the paper's sizes
  python bench/device_check.py --quick    # the same phases at tiny sizes (any device; the test
                                          # suite runs it, tests/test_device_check.py)

Every phase runs in its own process with its own time limit, so this process never holds the
GPU and a phase that fails or hangs is reported and the next one runs:

  environment    the devices, TensorFlow's CUDA / cuDNN build, TF32, XLA (`savae_tf.devices`)
  train:*        each training binary a few steps on data written here, then exported: text
                 SA-VAE (the default gradient, auto), text VAE (cuDNN's LSTM on a GPU), image
                 SA-VAE, and text SA-VAE under mixed_bfloat16
  serve:*        each export loaded in a CPU-only process (CUDA_VISIBLE_DEVICES="") and scored
  agreement      a fixed batch's scores from the text SA-VAE export here and on the CPU
  gpu tests      the test suite's tests marked `gpu` (skipped without a GPU)
  timing:*       synchronised training steps with peak device memory: text at the paper's size
                 (VAE and SA-VAE, K = 20, each gradient mode and auto), images at OMNIGLOT's

The report ends with one table of the phases and the timing tables. Exit status 0 when every
phase that ran passed.
"""

import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags

ROOT = pathlib.Path(__file__).resolve().parents[1]
BIN, BENCH = ROOT / "bin", ROOT / "bench"

flags.DEFINE_bool("quick", False, "Tiny sizes and short limits: the phases' plumbing, not the "
                  "device's speed (what the test suite runs).")
flags.DEFINE_integer("budget", 600, "Seconds for the whole check; a phase gets what is left.")
flags.DEFINE_string("work_dir", None, "Where data, runs and exports go (default: a temporary "
                    "directory, removed at the end).")
flags.DEFINE_list("phases", None, "Run only the phases whose names start with one of these "
                  "(default: every phase).")
FLAGS = flags.FLAGS

ENVIRONMENT = """
import json
import tensorflow as tf
from savae_tf import devices
build = tf.sysconfig.get_build_info()
gpus = tf.config.list_physical_devices("GPU")
devices.set_tf32(False)  # what the binaries do
print(json.dumps({
    "tensorflow": tf.__version__, "cuda": build.get("cuda_version", "none"),
    "cudnn": build.get("cudnn_version", "none"),
    "gpus": [tf.config.experimental.get_device_details(g).get("device_name", g.name)
             for g in gpus],
    "tf32 (binaries)": devices.tf32_enabled(),
    "xla_sweeps auto": devices.use_xla("auto"),
    "memory": f"{devices.memory_source()} of {devices.memory_device()}",
}))
"""

SCORE = """
import json, sys
import tensorflow as tf
score = tf.saved_model.load(sys.argv[1]).signatures["score"]
key = "images" if "images" in score.structured_input_signature[1] else "sentences"
if key == "images":  # the 28 x 28 images `write_data` writes
  import numpy as np
  inputs = tf.constant((np.random.default_rng(0).random((4, 28, 28, 1)) < 0.3).astype("float32"))
else:
  inputs = tf.constant(["the cat sat on the mat", "a dog ran", "the red mat"])
out = score(**{key: inputs}, steps=tf.constant(5), num_samples=tf.constant(10))
print(json.dumps({name: out[name].numpy().tolist() for name in
                  ("nll_bound", "refined_nll_bound", "iw_nll")}))
"""


def sizes(quick):
  """Flags per phase: tiny with --quick, GPU-sized otherwise."""
  if quick:
    text = ["--enc_word_dim=4", "--enc_h_dim=4", "--dec_word_dim=4", "--dec_h_dim=4",
            "--latent_dim=2", "--svi_steps=2", "--batch_size=8"]
    images = ["--latent_dim=2", "--enc_channels=4", "--enc_stages=1", "--dec_channels=4",
              "--kernel_sizes=3,3", "--svi_steps=2", "--batch_size=8"]
    # Fewer rows than the full check: the script's plumbing, not the device's speed.
    step_bench = ["--word_dim=8", "--hidden_dim=8", "--latent_dim=2", "--vocab=50", "--batch=4",
                  "--length=5", "--steps=2", "--repeats=1", "--gradients=auto"]
    image_bench = ["--latent_dim=2", "--enc_channels=4", "--enc_stages=1", "--dec_channels=4",
                   "--kernel_sizes=3,3", "--size=8", "--batch=4", "--steps=2", "--repeats=1",
                   "--gradients=auto"]
    return dict(text=text, images=images, step_bench=step_bench, image_bench=image_bench,
                sentences=40, images_count=24, limits=dict(train=240, serve=120, timing=240))
  text = ["--enc_word_dim=256", "--enc_h_dim=256", "--dec_word_dim=256", "--dec_h_dim=256",
          "--latent_dim=32", "--svi_steps=10", "--batch_size=32"]
  images = ["--latent_dim=32", "--enc_channels=64", "--enc_stages=3", "--dec_channels=32",
            "--svi_steps=10", "--batch_size=16"]
  step_bench = ["--word_dim=512", "--hidden_dim=1024", "--steps=20", "--repeats=3",
                "--gradients=auto,reverse,unrolled,finite_difference"]
  image_bench = ["--steps=20", "--repeats=2", "--gradients=auto,reverse"]
  return dict(text=text, images=images, step_bench=step_bench, image_bench=image_bench,
              sentences=320, images_count=96, limits=dict(train=90, serve=45, timing=150))


def write_data(directory: pathlib.Path, sentences: int, images: int):
  """A corpus (train/val/test.txt) and a .npz of 28 x 28 grey images (a bar each)."""
  import numpy as np
  rng = np.random.default_rng(0)
  words = "the a cat dog sat ran on mat big small red".split()
  text = directory / "text"
  text.mkdir(parents=True, exist_ok=True)
  for split, n in (("train.txt", sentences), ("val.txt", 16), ("test.txt", 16)):
    lines = [" ".join(rng.choice(words, rng.integers(2, 9))) for _ in range(n)]
    (text / split).write_text("\n".join(lines) + "\n")

  def bars(n):
    pictures = 0.05 * rng.random((n, 28, 28))
    pictures[np.arange(n), rng.integers(0, 28, n)] = 0.9
    return pictures.astype(np.float32)

  np.savez(directory / "images.npz", train=bars(images), valid=bars(16), test=bars(16))


class Report:
  """The phases' outcomes, in order, within one time budget."""

  def __init__(self, budget: float, work_dir: str, env=None, phases=None):
    self.deadline = time.monotonic() + budget
    self.work_dir = work_dir
    self.env = env or {}  # for every phase
    self.phases = phases  # name prefixes of the phases to run (None: all)
    self.rows, self.tables = [], []

  def asked(self, name) -> bool:
    return self.phases is None or name.startswith(tuple(self.phases))

  def run(self, name, args, limit, env=None, figure=None):
    """Runs `args` as a phase of at most `limit` seconds (less if the budget is nearly spent);
    `figure(stdout)` is the phase's one-line result. Returns stdout, or None if it failed or was
    not asked for."""
    if not self.asked(name):
      return None
    left = self.deadline - time.monotonic()
    if left < 5:
      self.rows.append((name, "not run: out of time", 0.0, ""))
      return None
    start = time.monotonic()
    environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", **self.env, **(env or {}))
    try:
      result = subprocess.run(args, capture_output=True, text=True, timeout=min(limit, left),
                              env=environment, cwd=self.work_dir)
    except subprocess.TimeoutExpired:
      self.rows.append((name, f"FAILED: over {min(limit, left):.0f} s", time.monotonic() - start,
                        ""))
      return None
    seconds = time.monotonic() - start
    if result.returncode != 0:
      last = (result.stderr.strip().splitlines() or ["(no message)"])[-1][:160]
      self.rows.append((name, f"FAILED (exit {result.returncode}): {last}", seconds, ""))
      print(f"--- {name} failed; its last output:\n{result.stderr[-3000:]}", file=sys.stderr)
      return None
    try:
      shown = figure(result.stdout) if figure else ""
    except Exception as error:  # a phase that ran but printed something unexpected
      self.rows.append((name, f"FAILED: unexpected output ({error})", seconds, ""))
      return None
    self.rows.append((name, "ok", seconds, shown))
    return result.stdout

  def skip(self, name, why):
    if self.asked(name):
      self.rows.append((name, f"skipped: {why}", 0.0, ""))

  @property
  def failed(self):
    return any(status.startswith("FAILED") for _, status, _, _ in self.rows)

  def markdown(self):
    lines = ["| phase | result | seconds | figure |", "|---|---|---|---|"]
    lines += [f"| {name} | {status} | {seconds:.0f} | {shown} |"
              for name, status, seconds, shown in self.rows]
    for title, table in self.tables:
      lines += ["", f"{title}:", "", table]
    return "\n".join(lines)


def last_json(stdout):
  return json.loads(stdout.strip().splitlines()[-1])


def table_of(stdout):
  """The markdown table a benchmark printed (its `|` lines), with the lines before it."""
  return "\n".join(line for line in stdout.strip().splitlines()
                   if line.startswith(("|", "machine:", "refine gradient auto", "text model",
                                       "image model")))


def check(report: Report, quick: bool):
  python = sys.executable
  size = sizes(quick)
  limits = size["limits"]
  work = pathlib.Path(report.work_dir)
  write_data(work, size["sentences"], size["images_count"])

  environment = report.run("environment", [python, "-c", ENVIRONMENT], 120,
                           figure=lambda out: ", ".join(f"{k}: {v}"
                                                        for k, v in last_json(out).items()))
  has_gpu = bool(environment and last_json(environment)["gpus"])

  text = [python, str(BIN / "train_text.py"), "--data_dir=text", "--epochs=1",
          "--num_samples=0", *size["text"]]
  trainings = {
      "text SA-VAE (auto)": text + ["--model=savae"],
      "text VAE (cuDNN on a GPU)": text + ["--model=vae"],
      "image SA-VAE": [python, str(BIN / "train_images.py"), "--dataset=npz",
                       "--data_dir=images.npz", "--model=savae", "--epochs=1", "--num_samples=0",
                       "--num_pictures=0", *size["images"]],
      "text SA-VAE, mixed_bfloat16": text + ["--model=savae", "--mixed_precision=mixed_bfloat16"],
  }
  exports = {}
  for index, (name, args) in enumerate(trainings.items()):
    out = report.run(f"train: {name}", args + [f"--model_dir=run{index}",
                                               f"--export_dir=export{index}"], limits["train"],
                     figure=lambda out: next((line for line in out.splitlines()
                                              if line.startswith("refine gradient auto")),
                                             "trained and exported"))
    written = [line.split(" to ", 1)[1] for line in (out or "").splitlines()
               if line.startswith("SavedModel written to ")]
    if written:
      exports[name] = str(work / written[-1])

  cpu_only = {"CUDA_VISIBLE_DEVICES": ""}
  served = {}
  for name, path in exports.items():
    out = report.run(f"serve on a CPU: {name}", [python, "-c", SCORE, path], limits["serve"],
                     env=cpu_only, figure=lambda out: "refined_nll_bound " + ", ".join(
                         f"{v:.2f}" for v in last_json(out)["refined_nll_bound"]))
    if out is not None:
      served[name] = last_json(out)

  reference = "text SA-VAE (auto)"
  if reference in served:
    def agreement(out):
      here, cpu = last_json(out), served[reference]
      worst = max(abs(a - b) / max(abs(b), 1e-6) for name in here
                  for a, b in zip(here[name], cpu[name]))
      if worst > 1e-3:
        raise ValueError(f"this device and the CPU differ by {worst:.1e} relative")
      return f"largest relative difference to the CPU: {worst:.1e}"
    report.run("agreement: this device vs the CPU", [python, "-c", SCORE, exports[reference]],
               limits["serve"], figure=agreement)
  else:
    report.skip("agreement: this device vs the CPU", "the text SA-VAE was not exported")

  if has_gpu:
    report.run("gpu tests", [python, "-m", "pytest", "-m", "gpu", "-n", "0", "-q",
                             "-p", "no:cacheprovider", str(ROOT / "tests")],
               limits["timing"], env={"SAVAE_TF_GPU_TESTS": "1"},
               figure=lambda out: out.strip().splitlines()[-1])
  else:
    report.skip("gpu tests", "no GPU")

  for name, script, args in (
      ("timing: text", "step_bench.py", size["step_bench"] + ["--variants=vae,savae"]),
      ("timing: images", "image_step_bench.py", size["image_bench"] + ["--variants=vae,savae"])):
    out = report.run(name, [python, str(BENCH / script), *args], limits["timing"],
                     figure=lambda out: f"{len(table_of(out).splitlines())} lines below")
    if out is not None:
      report.tables.append((name, table_of(out)))


def main(_):
  work_dir = FLAGS.work_dir or tempfile.mkdtemp(prefix="device_check-")
  os.makedirs(work_dir, exist_ok=True)
  # Tiny models gain nothing from threads; one each keeps the quick check from crowding the
  # test suite's other worker.
  one_thread = {"TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1"}
  report = Report(FLAGS.budget, work_dir, one_thread if FLAGS.quick else None, FLAGS.phases)
  try:
    check(report, FLAGS.quick)
  finally:
    if not FLAGS.work_dir:
      shutil.rmtree(work_dir, ignore_errors=True)
  print(report.markdown())
  sys.exit(1 if report.failed else 0)


if __name__ == "__main__":
  app.run(main)
