"""Evaluation of a trained model on a data set into one report of named metrics.

The names are the project's: `nll_bound` (amortized -ELBO, nats per example),
`refined_nll_bound` (after `svi_steps` test-time SVI steps), `kl`, `iw_nll` (importance-weighted,
`num_samples` samples, proposal q at the refined posterior for refining models, at the encoder's
posterior otherwise), `ppl`, `ppl_bound`, `mi` and
`active_units` (He et al. 2019's, of the encoder's posterior q(z | x; lambda_0)), and for refined
models `refined_mi` and `refined_active_units` (the same of the refined posterior lambda_K, where
the refiner's noise spreads the means). Evaluation uses KL weight 1, no dropout, and a stopped
refinement gradient.

Both entry points, a Keras model (`evaluate`) and exported signatures (`evaluate_sentences`),
score batches into per-example rows and reduce them with one function (`report`). Every row
depends on its example alone (per-example refinement, noise keyed by the example), and `mi` and
`active_units` are computed over the whole set, so the report does not depend on the batching.
"""

import sys
import weakref
from typing import Dict, Mapping, Optional, Sequence, Tuple

import keras
import numpy as np
import tensorflow as tf

from savae_tf import domains
from savae_tf import objectives
from savae_tf import scoring

PER_EXAMPLE = ("nll_bound", "refined_nll_bound", "kl", "iw_nll")


def report(rows: Mapping[str, np.ndarray], domain: domains.Domain,
           active_unit_threshold: float = 0.01) -> Dict[str, float]:
  """The metrics of a data set from its per-example rows: every reported number comes from here.

  `rows` holds [N] arrays for any of `PER_EXAMPLE`, `tokens` (predicted units per example), and
  for models with a latent [N, latent] `mean0`, `logvar0` (the encoder's posterior) and `z0`
  (one draw from it per example), and `mean`, `logvar`, `z` likewise of the refined posterior
  when `refined_nll_bound` is there. The domain adds its metrics per unit (text: `ppl_bound`,
  `ppl`).
  """
  result = {name: float(np.mean(rows[name], dtype=np.float64)) for name in PER_EXAMPLE
            if name in rows}
  result.update(domain.unit_metrics(rows))
  posteriors = {"": "0", "refined_": ""} if "refined_nll_bound" in rows else {"": "0"}
  for prefix, suffix in posteriors.items():
    if f"mean{suffix}" in rows and rows[f"mean{suffix}"].shape[-1]:
      mean, logvar, z = (tf.constant(rows[name + suffix], tf.float64)
                         for name in ("mean", "logvar", "z"))
      result[f"{prefix}mi"] = float(objectives.mutual_information(mean, logvar, z))
      variance = np.var(rows[f"mean{suffix}"].astype(np.float64), axis=0)
      result[f"{prefix}active_units"] = int(objectives.active_units(variance,
                                                                    active_unit_threshold))
  return result


def _gather(batches, total: Optional[int] = None, progress: str = "") -> Dict[str, np.ndarray]:
  """Per-example rows of several scored batches, concatenated; with a `progress` title and
  `total` batches, a progress bar (rate and time left) on a terminal."""
  bar = None
  if progress and total and sys.stdout.isatty():
    print(progress, flush=True)
    bar = keras.utils.Progbar(total, unit_name="batch")
  rows = {}
  for batch in batches:
    for name, value in batch.items():
      rows.setdefault(name, []).append(np.asarray(value))
    if bar is not None:
      bar.add(1)
  return {name: np.concatenate(values) for name, values in rows.items()}


def _cardinality(dataset) -> Optional[int]:
  count = int(dataset.cardinality())
  return count if count >= 0 else None


def evaluate(model, dataset, svi_steps: Optional[int] = None, num_samples: int = 500,
             progress: str = "") -> Dict[str, float]:
  """The report of `model` (a SemiAmortizedVAE) on `dataset`, with test-time K `svi_steps`
  (default: the model's) and `num_samples` importance samples (0 skips `iw_nll`). Refining modes
  report `refined_nll_bound`, `refined_mi`, `refined_active_units` and use the refined posterior
  for `iw_nll`. A `progress` title shows a progress bar on a terminal."""
  return evaluate_rows(model, dataset, svi_steps, num_samples, progress)[0]


# Each model's compiled scoring functions, so that validating every epoch traces once.
_SCORERS = weakref.WeakKeyDictionary()


def _scorer(model, spec):
  """The tf.function that scores one batch of `spec` into rows at (K, importance samples); traced
  once per model, batch signature and model configuration (a changed setting is a new one)."""
  key = (repr(spec), repr(model.get_config()))
  functions = _SCORERS.setdefault(model, {})
  if key not in functions:
    names = PER_EXAMPLE + ("tokens", "mean", "logvar", "z", "mean0", "logvar0", "z0")

    @tf.function(input_signature=[spec, tf.TensorSpec([], tf.int32), tf.TensorSpec([], tf.int32)],
                 autograph=False)
    def score(data, steps, num_samples):
      out = model.score(data, steps, 0, refine=model.refines)
      # 0 samples: no importance sampling (its row is dropped), in the same traced function.
      out["iw_nll"] = tf.cond(num_samples > 0,
                              lambda: scoring.iw_nll(model, data, out, num_samples),
                              lambda: tf.zeros_like(out["nll_bound"]))
      if not model.refines:
        out.pop("refined_nll_bound")
      return {name: out[name] for name in names if name in out}

    functions[key] = score
  return functions[key]


def evaluate_rows(model, dataset, svi_steps: Optional[int] = None, num_samples: int = 500,
                  progress: str = "") -> Tuple[Dict[str, float], Dict[str, np.ndarray]]:
  """`evaluate`'s report and the per-example rows it comes from (`report`'s input: the bounds,
  and for a latent model the encoder's `mean0`, `logvar0` and the refined `mean`, `logvar`)."""
  if num_samples < 0:
    raise ValueError(f"num_samples must be >= 0 (0 skips iw_nll); got {num_samples}.")
  steps = model.test_svi_steps if svi_steps is None else svi_steps
  if steps < 0:
    raise ValueError(f"svi_steps must be >= 0; got {steps}.")
  score = _scorer(model, dataset.element_spec)
  rows = _gather((score(data, tf.constant(steps), tf.constant(num_samples)) for data in dataset),
                 _cardinality(dataset), progress)
  if not rows:
    raise ValueError("The evaluation data set is empty.")
  if not num_samples:
    rows.pop("iw_nll")
  result = report(rows, model.domain, model.active_unit_threshold)
  if num_samples:
    result["iw_num_samples"] = num_samples
  result["svi_steps"] = steps
  return result, rows


def evaluate_sentences(signatures, sentences: Sequence[str], batch_size: int = 32,
                       svi_steps: int = 20, num_samples: int = 500,
                       active_unit_threshold: float = 0.01,
                       progress: str = "") -> Dict[str, float]:
  """The report above for raw sentences, through the exported `score` signature (a loaded
  SavedModel's `signatures`, or `export.load_signatures` of a model directory).

  `refined_nll_bound` is reported for every model with a latent (a VAE is refined at test time
  too; `svi_steps=0` gives a VAE's training-binary numbers), and `ppl_bound` is computed from it.
  `batch_size` changes only speed and memory, never a number. A `progress` title shows a
  progress bar on a terminal.
  """
  if not sentences:
    raise ValueError("No sentences to evaluate.")
  if svi_steps < 0 or num_samples < 1 or batch_size < 1:
    raise ValueError("Need svi_steps >= 0, num_samples >= 1 and batch_size >= 1.")
  steps, samples = tf.constant(svi_steps), tf.constant(num_samples)

  def batches():
    for start in range(0, len(sentences), batch_size):
      out = signatures["score"](sentences=tf.constant(list(sentences[start:start + batch_size])),
                                steps=steps, num_samples=samples)
      out["tokens"] = out.pop("num_tokens")
      yield out

  rows = _gather(batches(), -(-len(sentences) // batch_size), progress)
  result = report(rows, domains.get("text"), active_unit_threshold)
  result.update(num_sentences=len(sentences), num_tokens=int(np.sum(rows["tokens"])),
                svi_steps=svi_steps, iw_num_samples=num_samples)
  return result
