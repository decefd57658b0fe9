"""The synthetic experiment of Kim et al. (2018), Table 1, from bin/train_synthetic.py's flags
(`savae_tf.flags.define_synthetic_flags`): one `Experiment` per (generator, method), each run
by the same runner as every binary (so each resumes, and any method trains, aggressive
included), then the table beside the paper's numbers and the pictures against the truth.

    <model_dir>/metrics.json                  the table's runs, the true NLL, the flags
    <model_dir>/<generator>-<method>/         each run's directory (`savae_tf.runs`, checkpoints)
    <model_dir>/pictures/posteriors-oracle.png, posterior_means-<generator>.png

Every model is built in order from the one seeded stream, also when a resumed job finds a run
finished, so each run's initial weights are those of an uninterrupted job.
"""

import os
import sys
import time
from typing import Dict, Tuple

from absl import flags
import numpy as np

from savae_tf import factories
from savae_tf import figures
from savae_tf import flags as savae_flags
from savae_tf import runs
from savae_tf import training
from savae_tf.data import synthetic
from savae_tf.experiments.runner import Experiment, run_experiment
from savae_tf.networks.synthetic import SyntheticGenerator
from savae_tf.networks.text import LSTMEncoder

FLAGS = flags.FLAGS

TABLE_METHODS = ("vae", "svi", "savae")
PAPER = {("vae", "oracle"): 21.77, ("vae", "learned"): 27.06, ("svi", "oracle"): 22.33,
         ("svi", "learned"): 25.82, ("savae", "oracle"): 20.13, ("savae", "learned"): 25.21}
PAPER_TRUE_NLL = 19.63
EVAL_BATCH_SIZE = 250  # evaluation refines per example: the batch size sets speed and memory
NAMES = {"vae": "VAE", "svi": "SVI", "savae": "SA-VAE"}
PICTURED_SEQUENCES = 4  # panels of the posterior picture
# Its grid over [-5, 5]^2, finer than the NLL's 41 points: the oracle's posteriors are a few
# tenths wide, and four sequences cost little.
PICTURE_GRID_SIZE = 121


def _model(method, generator, oracle, train):
  decoder = oracle if generator == "oracle" else SyntheticGenerator(
      vocab_size=oracle.vocab_size, latent_dim=oracle.latent_dim)
  encoder = LSTMEncoder(oracle.vocab_size + 1, 100, 100, oracle.latent_dim,
                        xla_sweeps=FLAGS.xla_sweeps)
  return factories.model_from_flags(decoder, encoder, method, oracle.latent_dim, len(train),
                                    train.largest_batch(), synthetic.SEQUENCE_LENGTH)


def posterior_label(method, model):
  """Which model and which posterior: the encoder's q, or q_K after K refinement steps."""
  name = NAMES.get(method, method)
  return f"{name}: q_K, K = {model.test_svi_steps}" if model.refines else f"{name}: encoder's q"


def _best_epoch(history, metric) -> Tuple[int, float]:
  values = [entry[metric] for entry in history]
  best = min(range(len(values)), key=values.__getitem__)
  return best + 1, values[best]


def run(binary):
  """Trains and tests every (generator, method) of the flags; prints and writes the table."""
  modules = [binary, savae_flags]
  factories.seed_everything()
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
  valid = (synthetic.SequenceBatches(data.splits["valid"], EVAL_BATCH_SIZE).dataset()
           if FLAGS.select_on_validation else None)
  test = synthetic.SequenceBatches(data.splits["test"], EVAL_BATCH_SIZE)
  methods = TABLE_METHODS if FLAGS.method == "all" else (FLAGS.method,)
  generators = ("oracle", "learned") if FLAGS.generator == "both" else (FLAGS.generator,)
  vocabulary = synthetic.vocabulary(data.oracle.vocab_size)
  defining = {name: value for name, value in factories.flag_values(FLAGS, modules).items()
              if name not in savae_flags.RESUMABLE_CHANGES}
  results, approximations, curves = {}, {}, []
  trained = 0  # runs with something to train so far: each continues the shuffle's passes
  for generator in generators:
    for method in methods:
      name = f"{generator}-{method}"
      run_dir = os.path.join(FLAGS.model_dir, name)
      factories.claim(run_dir, dict(defining, method=method, generator=generator))
      train = synthetic.SequenceBatches(data.splits["train"], FLAGS.batch_size, FLAGS.seed,
                                        first_pass=synthetic.PASSES_PER_EPOCH * trained * FLAGS.epochs)
      model = _model(method, generator, data.oracle, train)
      trained += bool(model.trainable_variables)
      if model.trainable_variables:
        print(f"== {generator} generator, {method}: training {FLAGS.epochs} epochs", flush=True)
      start = time.time()
      outcome = run_experiment(Experiment(
          model, train, valid, test, run_dir, FLAGS.epochs, vocabulary,
          checkpoint_every=FLAGS.checkpoint_every, num_samples=FLAGS.num_samples,
          flags=factories.flag_values(FLAGS, modules), num_pictures=0,
          export_dir=FLAGS.export_dir and os.path.join(FLAGS.export_dir, name),
          title=f"{generator} generator, {method}", verbose=1 if sys.stdout.isatty() else 2,
          gaps=factories.gap_config(), gap_examples=FLAGS.gap_examples,
          log_likelihood=-truth.nll if generator == "oracle" else None))
      metrics = dict(outcome.metrics)
      metric = "val_" + training.selection_metric(model)
      if valid is not None and outcome.history:
        best_epoch, best_value = _best_epoch(outcome.history, metric)
        metrics.update(best_epoch=best_epoch, **{metric: best_value})
      elif outcome.validation:
        metrics[metric] = outcome.validation[metric[len("val_"):]]
      metrics["train_seconds"] = round(time.time() - start, 1)
      if model.refines and model.learned_refiner is None:
        metrics["svi_lr"] = model.svi_config.lr
      if generator == "oracle":
        metrics["true_nll"] = true_nll
      if model.latent_dim:
        # The posterior the metrics come from: q_K for refining models, the encoder's q else.
        approximations.setdefault(generator, {})[posterior_label(method, model)] = (
            outcome.rows["mean"], outcome.rows["logvar"])
      if no_pictures is None and outcome.history:
        curves.append(os.path.join(run_dir, "pictures", "training_curves.png"))
      results[f"{generator}/{method}"] = metrics
      print(f"== {generator} generator, {method}: " + runs.metrics_line(metrics), flush=True)
  report = {"flags": factories.flag_values(FLAGS, modules), "true_nll": true_nll,
            "true_nll_quadrature_error": truth.error, "runs": results}
  print(f"metrics written to {runs.write_metrics(FLAGS.model_dir, report)}")
  if FLAGS.method == "all":
    _print_table(results, methods, generators, true_nll)
  if no_pictures is not None:
    print(f"pictures skipped: {no_pictures}")
  elif approximations:
    report["pictures"] = (_draw(data, vocabulary, truth, approximations, FLAGS.model_dir)
                          + _draw_gaps(results, generators, methods, FLAGS.model_dir) + curves)
    runs.write_metrics(FLAGS.model_dir, report)  # again, now listing the pictures
    print("pictures: " + ", ".join(report["pictures"]))


def _print_table(results, methods, generators, true_nll):
  """The table: each run's reported bound (the refined one for refining methods) beside the
  paper's."""
  print("\n| model | " + " | ".join(f"{k} gen (ours) | {k} gen (paper)" for k in generators)
        + " |")
  print("|---|" + "---|---|" * len(generators))
  for method in methods:
    cells = []
    for generator in generators:
      metrics = results[f"{generator}/{method}"]
      cells.append(f"{metrics.get('refined_nll_bound', metrics['nll_bound']):.2f} | "
                   f"{PAPER[(method, generator)]:.2f}")
    print(f"| {method} | " + " | ".join(cells) + " |")
  if "oracle" in generators:
    print(f"| true NLL | {true_nll:.2f} | {PAPER_TRUE_NLL:.2f}"
          + " | - | -" * (len(generators) - 1) + " |")
  refining = [results[f"{generators[0]}/{method}"] for method in methods]
  refined = ", ".join(f"{NAMES.get(method, method)} {run['svi_lr']:g}"
                      for method, run in zip(methods, refining) if "svi_lr" in run)
  if refined:
    steps = max(run.get("svi_steps", 0) for run in refining)
    print(f"Refined bounds: K = {steps:.0f} steps {FLAGS.svi_step_scale.replace('_', ' ')}, each "
          f"method at its own step size ({refined}; --svi_lr sets one for all).")


def _draw_gaps(results, generators, methods, model_dir):
  """pictures/gaps-<generator>.png: each method's inference gap (with --gaps)."""
  paths = []
  for generator in generators:
    reports = {NAMES.get(method, method): results[f"{generator}/{method}"] for method in methods
               if "amortization_gap" in results[f"{generator}/{method}"]}
    if reports:
      truth = "exact log p(x)" if generator == "oracle" else "importance-weighted log p(x)"
      figure = figures.inference_gaps(
          reports, f"{generator.capitalize()} generator: inference gaps of the test set ({truth})")
      paths.append(figures.save(figure, os.path.join(model_dir, "pictures",
                                                     f"gaps-{generator}.png"),
                                os.path.join(model_dir, "logs", "pictures")))
  return paths


def _draw(data, vocabulary, truth, approximations: Dict[str, Dict[str, Tuple[np.ndarray, ...]]],
          model_dir):
  """The pictures of the module docstring; returns their paths. `approximations`: {generator:
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
  for generator, models in approximations.items():
    figure = figures.aggregate_posterior_means(
        {label: mean for label, (mean, _) in models.items()},
        f"{generator.capitalize()} generator: posterior means of the {len(tokens)} test sequences"
        + (" (grey: the oracle's true posterior means)" if generator == "oracle" else ""),
        truth.posterior_mean if generator == "oracle" else None)
    paths.append(figures.save(figure, os.path.join(pictures_dir,
                                                   f"posterior_means-{generator}.png"), log_dir))
  return paths


