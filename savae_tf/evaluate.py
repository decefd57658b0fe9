"""Evaluation of a trained model on a data set into one report of named metrics.

The names are the project's (DESIGN.md): `nll_bound` (amortized -ELBO, nats per example),
`refined_nll_bound` (after `svi_steps` test-time SVI steps), `kl`, `iw_nll` (importance-weighted,
`num_samples` samples, proposal q at the refined posterior), `ppl`, `ppl_bound`, `mi`,
`active_units`. Evaluation uses KL weight 1, no dropout, and a stopped refinement gradient.
"""

import collections
import math
from typing import Dict, Optional, Sequence

import tensorflow as tf

from savae_tf import objectives


def evaluate(model, dataset, svi_steps: Optional[int] = None,
             num_samples: int = 500) -> Dict[str, float]:
  """Runs `model.evaluate` with the given test-time K and importance sample count."""
  if num_samples < 0:
    raise ValueError(f"num_samples must be >= 0 (0 skips iw_nll); got {num_samples}.")
  if svi_steps is not None:
    if svi_steps < 0:
      raise ValueError(f"svi_steps must be >= 0; got {svi_steps}.")
    model.test_svi_steps = svi_steps
  model.eval_num_samples = num_samples
  model.test_function = None  # the settings above are baked into the traced test step
  results = model.evaluate(dataset, verbose=0, return_dict=True)
  report = {name: float(value) for name, value in results.items()}
  if num_samples:
    report["iw_num_samples"] = num_samples
  report["svi_steps"] = model.test_svi_steps
  return report


def evaluate_sentences(signatures, sentences: Sequence[str], batch_size: int = 32,
                       svi_steps: int = 20, num_samples: int = 500,
                       active_unit_threshold: float = 0.01, seed: int = 0) -> Dict[str, float]:
  """The report above for raw sentences, through the exported signatures (a loaded SavedModel's
  `signatures`, or `export.load_signatures` of a model directory).

  Differences from `evaluate`: `refined_nll_bound` is reported for every model with a latent (a
  VAE is refined at test time too), and `ppl_bound` is computed from it; `mi` and
  `active_units` use the refined posterior. Keep `batch_size` at the training batch size: the
  refiner's step is per batch mean.
  """
  if not sentences:
    raise ValueError("No sentences to evaluate.")
  if svi_steps < 0 or num_samples < 1 or batch_size < 1:
    raise ValueError("Need svi_steps >= 0, num_samples >= 1 and batch_size >= 1.")
  sums = collections.defaultdict(float)
  means, mi_total = [], 0.0
  steps, samples = tf.constant(svi_steps), tf.constant(num_samples)
  for index, start in enumerate(range(0, len(sentences), batch_size)):
    batch = tf.constant(list(sentences[start:start + batch_size]))
    scores = signatures["score"](sentences=batch, steps=steps, num_samples=samples)
    for name in ("nll_bound", "refined_nll_bound", "kl", "iw_nll", "num_tokens"):
      sums[name] += float(tf.reduce_sum(tf.cast(scores[name], tf.float64)))
    encoded = signatures["encode"](sentences=batch)
    if encoded["mean"].shape[-1]:
      refined = signatures["refine"](sentences=batch, mean=encoded["mean"],
                                     logvar=encoded["logvar"], steps=steps)
      means.append(refined["mean"])
      mi_total += float(objectives.mutual_information(
          refined["mean"], refined["logvar"], tf.constant([seed, index]))) * len(batch)
  count = len(sentences)
  report = {name: sums[name] / count for name in ("nll_bound", "refined_nll_bound", "kl",
                                                   "iw_nll")}
  tokens = max(sums["num_tokens"], 1.0)
  report["ppl_bound"] = math.exp(sums["refined_nll_bound"] / tokens)
  report["ppl"] = math.exp(sums["iw_nll"] / tokens)
  if means:
    report["mi"] = mi_total / count
    variance = tf.math.reduce_variance(tf.concat(means, 0), axis=0)
    report["active_units"] = int(objectives.active_units(variance, active_unit_threshold))
  report.update(num_sentences=count, num_tokens=int(sums["num_tokens"]),
                svi_steps=svi_steps, iw_num_samples=num_samples)
  return report
