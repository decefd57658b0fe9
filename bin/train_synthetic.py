"""The synthetic experiment of Kim et al. (2018), Table 1: VAE, SVI and SA-VAE on sequences from
a known oracle, with the oracle's generator fixed ("oracle") or learned ("learned").

  python bin/train_synthetic.py --model=all --generator=both --model_dir=runs/synthetic \
      --export_dir=export/synthetic

Prints each run's test metrics and, with --model=all, the table beside the paper's numbers; writes
the table's metrics.json into --model_dir and each trained model into --model_dir/<generator>-<model>
(savae_tf/runs.py), and with --export_dir a SavedModel of each into
--export_dir/<generator>-<model>/<version>. Assumptions about the oracle: savae_tf/data/synthetic.py.

Then it draws (with matplotlib; without it, one line says why not) into --model_dir/pictures/, also
as TensorBoard images in --model_dir/logs/pictures, and lists them in metrics.json ("pictures"):
  posteriors-oracle.png       for the first test sequences, the true posterior p(z | x) of the
                              oracle (quadrature) beside each oracle-generator model's q (the VAE's
                              encoder's, SVI's and SA-VAE's after K steps); with a learned
                              generator the truth would be that model's own, so none is drawn.
  posterior_means-<kind>.png  each model's posterior means of the test set, a panel per model, over
                              the true posterior means for the oracle generator.
and each trained model's training curves into --model_dir/<generator>-<model>/pictures/.
"""

import os
import sys
import time

# TensorFlow's INFO and WARNING logs off; savae_tf, imported before TensorFlow, also hides the
# start-up lines TensorFlow prints regardless (savae_tf.console).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# TensorFlow's CPU allocator then tracks its peak: --refine_gradient=auto measures exactly on a
# CPU too, as the benchmarks do (savae_tf.devices.PeakMemory).
os.environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "true")
import savae_tf  # noqa: E402,F401  pylint: disable=unused-import,wrong-import-position

from absl import app
from absl import flags
import keras

from savae_tf import export
from savae_tf import figures
from savae_tf import flags as savae_flags
from savae_tf import methods
from savae_tf import runs
from savae_tf import training
from savae_tf.data import synthetic
from savae_tf.evaluate import evaluate_rows
from savae_tf.model import MODES
from savae_tf.networks.synthetic import SyntheticGenerator
from savae_tf.networks.text import LSTMEncoder

# Per-example step for the synthetic data: chosen on its validation set (RESULTS.md).
savae_flags.define_svi_flags(per_example_lr=0.003)
savae_flags.define_seed_flag()
savae_flags.define_device_flags()
savae_flags.define_xla_sweeps_flag()
savae_flags.define_training_flags(epochs=5, optimizer="adam", learning_rate=1e-3, warmup=0)
flags.adopt_module_key_flags(savae_flags)  # list the shared flags in --help
# The methods that train by plain `fit` (the synthetic data has no training-loop corpus).
FIT_MODES = tuple(m for m in MODES if not methods.METHODS[m].needs_training_loop)
flags.DEFINE_enum("model", "all", FIT_MODES + ("all",),
                  "Training variant, or 'all' for Table 1's VAE, SVI and SA-VAE.")
flags.DEFINE_enum("generator", "both", ["oracle", "learned", "both"],
                  "'oracle': the decoder is the fixed true generator; 'learned': a generator of "
                  "the same architecture is trained; 'both': one run of each.")
flags.DEFINE_integer("num_train", 5000, "Training sequences.", lower_bound=1)
flags.DEFINE_integer("num_valid", 1000, "Validation sequences.", lower_bound=1)
flags.DEFINE_integer("num_test", 1000, "Test sequences.", lower_bound=1)
flags.DEFINE_bool("select_on_validation", True,
                  "Evaluate the validation set after every epoch and test the best epoch's "
                  "weights (the paper's protocol); otherwise test the last epoch's.")
flags.DEFINE_string("model_dir", "runs/synthetic",
                    "Where metrics.json and each trained model (<generator>-<model>/) go.")
flags.register_validator("model_dir", training.validate_model_dir,
                         message="--model_dir names an existing file; give a directory.")
flags.DEFINE_string("export_dir", None, "If set, each trained model is also exported as a "
                    "SavedModel into <export_dir>/<generator>-<model>/<version>.")
flags.register_validator("export_dir", lambda path: path is None or not os.path.isfile(path),
                         message="--export_dir names an existing file; give a directory.")
FLAGS = flags.FLAGS

TABLE_MODES = ("vae", "svi", "savae")
PAPER = {("vae", "oracle"): 21.77, ("vae", "learned"): 27.06, ("svi", "oracle"): 22.33,
         ("svi", "learned"): 25.82, ("savae", "oracle"): 20.13, ("savae", "learned"): 25.21}
PAPER_TRUE_NLL = 19.63
EVAL_BATCH_SIZE = 250
NAMES = {"vae": "VAE", "svi": "SVI", "savae": "SA-VAE"}
PICTURED_SEQUENCES = 4  # panels of the posterior picture
# Its grid over [-5, 5]^2, finer than the NLL's 41 points: the oracle's posteriors are a few
# tenths wide, and four sequences cost little.
PICTURE_GRID_SIZE = 121


def build_model(mode, generator_kind, oracle, steps_per_epoch, largest_batch):
  if generator_kind == "oracle":
    decoder = oracle
  else:
    decoder = SyntheticGenerator(vocab_size=oracle.vocab_size, latent_dim=oracle.latent_dim)
  encoder = LSTMEncoder(oracle.vocab_size + 1, 100, 100, oracle.latent_dim,
                        xla_sweeps=FLAGS.xla_sweeps)
  return savae_flags.model_from_flags(decoder, encoder, mode, oracle.latent_dim,
                                      steps_per_epoch, largest_batch, synthetic.SEQUENCE_LENGTH)


def reported_bound(mode, metrics):
  """The row's number: the refined bound for refining variants, the amortized one otherwise."""
  return metrics.get("refined_nll_bound", metrics["nll_bound"])


def posterior_label(mode, model):
  """Which model and which posterior: the encoder's q, or q_K after K refinement steps."""
  name = NAMES.get(mode, mode)
  if not model.refines:
    return f"{name}: encoder's q"
  return f"{name}: q_K, K = {model.test_svi_steps}"


def draw_pictures(data, vocabulary, truth, approximations, model_dir):
  """The pictures of the module docstring; returns their paths. `approximations`: {kind:
  {label: (mean, logvar) of the test set}}."""
  pictures_dir = os.path.join(model_dir, "pictures")
  log_dir = os.path.join(model_dir, "logs", "pictures")
  tokens = data.splits["test"]["tokens"]
  paths = []
  if "oracle" in approximations:
    count = min(PICTURED_SEQUENCES, len(tokens))
    posterior = synthetic.grid_posterior(data.oracle, tokens[:count], PICTURE_GRID_SIZE)
    figure = figures.true_and_approximate_posteriors(
        posterior,
        [f"test sequence {i}: {vocabulary.decode(tokens[i])}" for i in range(count)],
        {label: (mean[:count], logvar[:count])
         for label, (mean, logvar) in approximations["oracle"].items()},
        "Oracle generator (every model's decoder, so its posterior is the truth for each)")
    paths.append(figures.save(figure, os.path.join(pictures_dir, "posteriors-oracle.png"),
                              log_dir))
  for kind, models in approximations.items():
    figure = figures.aggregate_posterior_means(
        {label: mean for label, (mean, _) in models.items()},
        f"{kind.capitalize()} generator: posterior means of the {len(tokens)} test sequences"
        + (" (grey: the oracle's true posterior means)" if kind == "oracle" else ""),
        truth.posterior_mean if kind == "oracle" else None)
    paths.append(figures.save(figure, os.path.join(pictures_dir, f"posterior_means-{kind}.png"),
                              log_dir))
  return paths


def main(_):
  keras.utils.set_random_seed(FLAGS.seed)
  data = synthetic.make_synthetic_data(FLAGS.seed, num_train=FLAGS.num_train,
                                       num_valid=FLAGS.num_valid, num_test=FLAGS.num_test)
  def progress(done, total):
    print(f"\rtrue NLL by quadrature: {done}/{total} test sequences", end="", file=sys.stderr,
          flush=True)

  truth = synthetic.cached_truth(
      data.oracle, data.splits["test"]["tokens"],
      os.path.join(FLAGS.model_dir, f"true_nll-seed{FLAGS.seed}.npz"), progress=progress)
  true_nll = float(truth.nll.mean())
  print(file=sys.stderr)
  print(f"true NLL of the test set (quadrature): {true_nll:.3f} nats per sequence "
        f"(grid error ~{truth.error:.1e}; paper's oracle: {PAPER_TRUE_NLL})", flush=True)
  try:
    figures.pyplot()
    no_pictures = None
  except figures.MissingPlotting as error:
    no_pictures = str(error)
  train = synthetic.as_dataset(data.splits["train"], FLAGS.batch_size, shuffle_seed=FLAGS.seed)
  # Evaluation refines per example: the batch size only sets speed and memory.
  test = synthetic.as_dataset(data.splits["test"], EVAL_BATCH_SIZE)
  valid = (synthetic.as_dataset(data.splits["valid"], EVAL_BATCH_SIZE)
           if FLAGS.select_on_validation else None)
  steps_per_epoch = -(-FLAGS.num_train // FLAGS.batch_size)
  # Every sequence has the same length: any full batch is the largest.
  largest_batch = {name: value[:FLAGS.batch_size] for name, value in data.splits["train"].items()}
  modes = TABLE_MODES if FLAGS.model == "all" else (FLAGS.model,)
  kinds = ("oracle", "learned") if FLAGS.generator == "both" else (FLAGS.generator,)
  vocabulary = synthetic.vocabulary(data.oracle.vocab_size)
  results = {}
  approximations = {}  # kind -> {label: test-set posteriors}, for the pictures
  curves = []  # each trained model's training_curves.png
  for kind in kinds:
    for mode in modes:
      model = build_model(mode, kind, data.oracle, steps_per_epoch, largest_batch)
      start = time.time()
      best_epoch = None
      if model.trainable_variables:
        print(f"== {kind} generator, {mode}: training {FLAGS.epochs} epochs", flush=True)
        try:
          # Keras' progress bar (rate, time left) on a terminal; a line per epoch otherwise.
          history = training.fit(model, train, FLAGS.epochs, valid,
                                 verbose=1 if sys.stdout.isatty() else 2)
        except training.NonFiniteLossError as error:
          raise app.UsageError(f"{kind}/{mode}: {error}") from None
        if valid is not None:
          metric = "val_" + training.selection_metric(model)
          curve = history.history[metric]
          best_epoch = 1 + min(range(len(curve)), key=curve.__getitem__)
          best_valid = {metric: curve[best_epoch - 1]}
      metrics, rows = evaluate_rows(model, test, num_samples=FLAGS.num_samples,
                                    progress=f"{kind}/{mode}: test")
      if best_epoch:
        metrics.update(best_epoch=best_epoch, **best_valid)
      metrics["train_seconds"] = round(time.time() - start, 1)
      if kind == "oracle":
        metrics["true_nll"] = true_nll
      if no_pictures is None and model.latent_dim:
        # The posterior the metrics come from: q_K for refining models, the encoder's q else.
        approximations.setdefault(kind, {})[posterior_label(mode, model)] = (rows["mean"],
                                                                           rows["logvar"])
      results[f"{kind}/{mode}"] = metrics
      run_dir = runs.save_model(model, vocabulary,
                                os.path.join(FLAGS.model_dir, f"{kind}-{mode}"))
      training.write_metrics(run_dir, metrics)
      if no_pictures is None and model.trainable_variables:
        curves.append(figures.write_training_curves(
            run_dir, [dict({name: float(values[i]) for name, values in history.history.items()},
                           epoch=i + 1) for i in range(len(history.epoch))],
            f"{kind} generator, {mode}"))
      if FLAGS.export_dir:
        path = export.export(model, vocabulary, os.path.join(FLAGS.export_dir, f"{kind}-{mode}"))
        print(f"== {kind} generator, {mode}: SavedModel written to {path}", flush=True)
      print(f"== {kind} generator, {mode}: " + ", ".join(
          f"{name} {value:.3f}" for name, value in sorted(metrics.items())), flush=True)

  report = {"flags": training.flag_values(FLAGS, [sys.modules[__name__], savae_flags]),
            "true_nll": true_nll, "true_nll_quadrature_error": truth.error,
            "runs": results}
  path = training.write_metrics(FLAGS.model_dir, report)
  print(f"metrics written to {path}")
  if FLAGS.model == "all":
    print("\n| model | " + " | ".join(f"{k} gen (ours) | {k} gen (paper)" for k in kinds) + " |")
    print("|---|" + "---|---|" * len(kinds))
    for mode in modes:
      cells = [f"{reported_bound(mode, results[f'{k}/{mode}']):.2f} | {PAPER[(mode, k)]:.2f}"
               for k in kinds]
      print(f"| {mode} | " + " | ".join(cells) + " |")
    if "oracle" in kinds:
      print(f"| true NLL | {true_nll:.2f} | {PAPER_TRUE_NLL:.2f}" + " | - | -" * (len(kinds) - 1)
            + " |")
  if no_pictures is not None:
    print(f"pictures skipped: {no_pictures}")
  elif approximations:
    report["pictures"] = (draw_pictures(data, vocabulary, truth, approximations,
                                        FLAGS.model_dir) + curves)
    training.write_metrics(FLAGS.model_dir, report)  # again, now listing the pictures
    print("pictures: " + ", ".join(report["pictures"]))


if __name__ == "__main__":
  savae_flags.run(main)
