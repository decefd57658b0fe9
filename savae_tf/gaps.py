"""The inference gap decomposition (Cremer, Li and Duvenaud, "Inference Suboptimality in
Variational Autoencoders", ICML 2018), as an evaluation of a trained model.

For each example x, with the decoder fixed:

    log p(x) - ELBO(lambda_0) = [log p(x) - ELBO(lambda*)]  +  [ELBO(lambda*) - ELBO(lambda_0)]
                                 approximation gap             amortization gap

lambda_0 is the encoder's posterior (the prior's for a model without one), lambda_K the model's K
refinement steps from it, and lambda* the best diagonal Gaussian for that example, found by
optimising lambda alone (Adam on the ELBO's reparameterised gradient) until a convergence rule
holds. `refinement_closed` is the share of the amortization gap the K steps close,

    (ELBO(lambda_K) - ELBO(lambda_0)) / (ELBO(lambda*) - ELBO(lambda_0)),

a ratio of the data set's means. log p(x) is exact where the caller knows it (the synthetic
oracle's quadrature), else the importance-weighted estimate with `eval_samples` samples from
q(lambda*) (a stochastic lower bound, so the approximation gap is then a lower estimate).

The three final ELBOs of an example are estimated with the same `eval_samples` noise draws
(common random numbers), so their differences are far less noisy than each ELBO. Each gap's
standard error is that of its mean over the examples (it holds both the spread over examples and
the Monte Carlo noise); `refinement_closed`'s is the delta method's.

Everything an example gets depends on that example alone: its noise is keyed by its content, and
each example's Adam iterate stops when its own rule holds (the others' do not move it).
"""

import dataclasses
import hashlib
import os
import sys
import zipfile
from typing import Dict, Iterable, Optional

import numpy as np
import tensorflow as tf

from savae_tf import domains
from savae_tf import scoring

GAPS = ("approximation_gap", "amortization_gap", "refinement_closed")
# The ELBO seeds of the final estimates and of the convergence checks; Adam's steps use 1, 2, ...
_FINAL_SEED, _CHECK_SEED = -1, -2


@dataclasses.dataclass(frozen=True)
class GapConfig:
  """How lambda* is found and how the final ELBOs are estimated.

  Adam (`learning_rate`) takes steps on each example's ELBO with `optimizer_samples` fresh samples
  per step. Every `check_every` steps the ELBO is estimated with `check_samples` samples of one
  fixed draw (so two checks differ by the move of lambda, not by noise); an example has converged
  when a check rose by less than `tolerance` nats over the previous one, and its lambda stops
  there. `max_steps` caps the search (an example stopped by it is reported as not converged).
  """
  optimizer_samples: int = 16
  learning_rate: float = 0.01
  check_every: int = 50
  check_samples: int = 200
  tolerance: float = 0.01
  max_steps: int = 5000
  eval_samples: int = 1000

  def __post_init__(self):
    for name in ("optimizer_samples", "check_every", "check_samples", "max_steps",
                 "eval_samples"):
      if getattr(self, name) < 1:
        raise ValueError(f"GapConfig.{name} must be >= 1; got {getattr(self, name)}.")
    if self.learning_rate <= 0 or self.tolerance <= 0:
      raise ValueError("GapConfig's learning_rate and tolerance must be > 0.")


class SignatureInference:
  """What the decomposition needs of a model, from its signatures (an export's, or a model
  directory's built in memory: `export.load_signatures`), on a batch of raw inputs."""

  def __init__(self, signatures):
    if "elbo" not in signatures:
      raise ValueError("This SavedModel has no `elbo` signature (it was exported before the "
                       "gap decomposition existed): export the model again.")
    self.signatures = signatures
    self.input_name = domains.of_signatures(signatures).input_name

  def _call(self, name, inputs, **kwargs):
    out = self.signatures[name](**{self.input_name: tf.constant(inputs)}, **kwargs)
    return {key: value.numpy() for key, value in out.items()}

  def encode(self, inputs):
    out = self._call("encode", inputs)
    return out["mean"], out["logvar"]

  def refine(self, inputs, mean, logvar, steps):
    out = self._call("refine", inputs, mean=tf.constant(mean), logvar=tf.constant(logvar),
                     steps=tf.constant(steps))
    return out["mean"], out["logvar"]

  def elbo(self, inputs, mean, logvar, num_samples, seed):
    return self._call("elbo", inputs, mean=tf.constant(mean, tf.float32),
                      logvar=tf.constant(logvar, tf.float32),
                      num_samples=tf.constant(num_samples), seed=tf.constant(seed))


class ModelInference:
  """The same of a Keras model (a `SemiAmortizedVAE`), on batches of its data pipeline; the
  functions are those the export's signatures call."""

  def __init__(self, model):
    if not model.latent_dim:
      raise ValueError(f"The gap decomposition needs a latent variable; {model.mode!r} has none.")
    self.model = model
    self._encode = tf.function(lambda data: tuple(model.initial_params(model.observe(data))),
                               reduce_retracing=True, autograph=False)
    self._refine = tf.function(
        lambda data, mean, logvar, steps: tuple(model.refine_for_evaluation(data, mean, logvar,
                                                                            steps)),
        reduce_retracing=True, autograph=False)
    self._elbo = tf.function(
        lambda data, mean, logvar, num_samples, seed: scoring.elbo_estimate(
            model, data, mean, logvar, num_samples, seed), reduce_retracing=True, autograph=False)

  def encode(self, data):
    return tuple(x.numpy() for x in self._encode(data))

  def refine(self, data, mean, logvar, steps):
    return tuple(x.numpy() for x in self._refine(data, tf.constant(mean), tf.constant(logvar),
                                                 tf.constant(steps)))

  def elbo(self, data, mean, logvar, num_samples, seed):
    out = self._elbo(data, tf.constant(mean, tf.float32), tf.constant(logvar, tf.float32),
                     tf.constant(num_samples), tf.constant(seed))
    return {key: value.numpy() for key, value in out.items()}


def evenly_spaced(total: int, count: int) -> np.ndarray:
  """`count` indices spread evenly over range(total), all of them when `count` is 0 or at least
  `total`: the decomposed examples of a test set (one batched by length is then represented at
  every length, not only by its shortest sentences)."""
  if not count or count >= total:
    return np.arange(total)
  return (np.arange(count) * total) // count


def optimal_posterior(inference, inputs, mean, logvar, config: GapConfig):
  """lambda* of each example of `inputs`, by Adam from (mean, logvar) (see `GapConfig`).

  Returns (mean*, logvar*, steps [B] taken, converged [B] bool, last_rise [B]: the ELBO's rise
  over the last check window, nats)."""
  params = np.concatenate([mean, logvar], -1).astype(np.float64)
  latent = mean.shape[-1]
  first, second = np.zeros_like(params), np.zeros_like(params)
  beta1, beta2, eps = 0.9, 0.999, 1e-8
  batch = params.shape[0]
  active = np.ones(batch, bool)
  steps = np.zeros(batch, np.int64)
  last_rise = np.full(batch, np.inf)

  def check():
    return inference.elbo(inputs, params[:, :latent], params[:, latent:], config.check_samples,
                          _CHECK_SEED)["elbo"].astype(np.float64)

  previous = check()
  for step in range(1, config.max_steps + 1):
    out = inference.elbo(inputs, params[:, :latent], params[:, latent:],
                         config.optimizer_samples, step)
    ascent = np.concatenate([out["d_mean"], out["d_logvar"]], -1).astype(np.float64)
    first = np.where(active[:, None], beta1 * first + (1 - beta1) * ascent, first)
    second = np.where(active[:, None], beta2 * second + (1 - beta2) * ascent**2, second)
    # Each example's own bias correction: its step count, which stops when it converges.
    steps += active
    t = np.maximum(steps, 1)[:, None]
    update = (config.learning_rate * (first / (1 - beta1**t))
              / (np.sqrt(second / (1 - beta2**t)) + eps))
    params = np.where(active[:, None], params + update, params)
    if step % config.check_every == 0:
      current = check()
      last_rise = np.where(active, current - previous, last_rise)
      active &= last_rise >= config.tolerance
      previous = current
      if not active.any():
        break
  return (params[:, :latent].astype(np.float32), params[:, latent:].astype(np.float32), steps,
          ~active, last_rise)


def _fingerprint(inference, inputs, mean0, logvar0, steps, config, exact) -> str:
  """What a journal's rows depend on: the settings, and the model as its first batch shows it
  (the encoder's posterior and a few-sample ELBO under the decoder), rounded so that a rerun of
  the same model on the same machine reproduces it."""
  probe = inference.elbo(inputs, mean0, logvar0, 4, _CHECK_SEED)["elbo"]
  digest = hashlib.sha256(repr((steps, dataclasses.astuple(config), exact)).encode())
  for values in (mean0, logvar0, probe):
    digest.update(np.round(np.asarray(values, np.float64), 3).tobytes())
  return digest.hexdigest()


def _read_journal(path: str, key: str):
  """(rows, batches done) of a journal written for `key`; nothing if there is none or it was
  written for another model or other settings."""
  if not os.path.exists(path):
    return {}, 0
  try:
    with np.load(path) as saved:
      if str(saved["key"]) == key:
        return ({name: [saved[name]] for name in saved.files if name not in ("key", "batches")},
                int(saved["batches"]))
      reason = "was written for another model or other settings"
  except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:
    reason = f"is not a readable journal ({error})"
  print(f"{path} {reason}: starting anew.", file=sys.stderr)
  return {}, 0


def _write_journal(path: str, key: str, rows: Dict[str, list], batches: int):
  # Written aside and renamed: a run killed mid-write keeps the previous journal whole.
  partial = path + ".tmp.npz"
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  np.savez(partial, key=key, batches=batches,
           **{name: np.concatenate(values) for name, values in rows.items()})
  os.replace(partial, path)


def decompose(inference, batches: Iterable, steps: int, config: GapConfig = GapConfig(),
              log_likelihood: Optional[np.ndarray] = None, progress: str = "",
              journal: Optional[str] = None) -> Dict[str, np.ndarray]:
  """Per-example rows of the decomposition over `batches` (raw inputs for `SignatureInference`,
  data batches for `ModelInference`): `log_likelihood` (the given exact values, in order, else the
  importance-weighted estimate), `elbo_encoder`, `elbo_refined` (K = `steps`), `elbo_optimal`,
  `optimizer_steps`, `converged`, `last_rise`.

  With `journal` (an .npz path) the rows are saved after every batch, and a rerun over the same
  batches with the same model and settings starts after the last saved batch (the search for
  lambda* takes minutes per batch); the journal is removed once every batch is done."""
  rows: Dict[str, list] = {}
  done = skip = 0
  key = None
  for index, inputs in enumerate(batches):
    if index < skip:
      continue
    mean0, logvar0 = inference.encode(inputs)
    if journal and key is None:
      key = _fingerprint(inference, inputs, mean0, logvar0, steps, config,
                         log_likelihood is not None)
      rows, skip = _read_journal(journal, key)
      done = len(rows["elbo_encoder"][0]) if rows else 0
      if skip:
        print(f"{progress or 'gap decomposition'}: {done} examples from {journal}",
              file=sys.stderr)
        continue
    mean_k, logvar_k = inference.refine(inputs, mean0, logvar0, steps)
    mean_s, logvar_s, taken, converged, last_rise = optimal_posterior(
        inference, inputs, mean_k, logvar_k, config)
    final = [inference.elbo(inputs, m, v, config.eval_samples, _FINAL_SEED)
             for m, v in ((mean0, logvar0), (mean_k, logvar_k), (mean_s, logvar_s))]
    encoder, refined, optimal = (f["elbo"].astype(np.float64) for f in final)
    count = len(encoder)
    if log_likelihood is not None:
      exact = np.asarray(log_likelihood[done:done + count], np.float64)
      if len(exact) != count:
        raise ValueError(f"log_likelihood has {len(log_likelihood)} values for more examples.")
    batch_rows = {
        "log_likelihood": (exact if log_likelihood is not None
                           else final[2]["iw_log_likelihood"].astype(np.float64)),
        "elbo_encoder": encoder, "elbo_refined": refined,
        # lambda* is the best posterior found: a start the search did not improve on is it.
        "elbo_optimal": np.maximum(optimal, np.maximum(encoder, refined)),
        "optimizer_steps": taken, "converged": converged, "last_rise": last_rise}
    for name, value in batch_rows.items():
      rows.setdefault(name, []).append(value)
    done += count
    if journal:
      _write_journal(journal, key, rows, index + 1)
    if progress:
      print(f"\r{progress}: {done} examples", end="", file=sys.stderr, flush=True)
  if progress:
    print(file=sys.stderr)
  if not rows:
    raise ValueError("No examples for the gap decomposition.")
  if journal and os.path.exists(journal):
    os.remove(journal)
  return {name: np.concatenate(values) for name, values in rows.items()}


def _mean_and_stderr(values):
  values = np.asarray(values, np.float64)
  stderr = values.std(ddof=1) / np.sqrt(len(values)) if len(values) > 1 else float("nan")
  return float(values.mean()), float(stderr)


def report(rows: Dict[str, np.ndarray], exact: bool = False,
           eval_samples: Optional[int] = None) -> Dict[str, float]:
  """The data set's gaps (nats per example) from `decompose`'s rows, each with `_stderr`; the
  mean ELBOs; and how converged the search for lambda* was."""
  approximation = rows["log_likelihood"] - rows["elbo_optimal"]
  amortization = rows["elbo_optimal"] - rows["elbo_encoder"]
  closed = rows["elbo_refined"] - rows["elbo_encoder"]
  result = {}
  for name, values in (("approximation_gap", approximation),
                       ("amortization_gap", amortization)):
    result[name], result[name + "_stderr"] = _mean_and_stderr(values)
  share = closed.mean() / amortization.mean() if amortization.mean() > 0 else float("nan")
  n = len(closed)
  # Delta method for a ratio of means: Var(a - R b) / (n b_mean^2).
  share_stderr = (np.std(closed - share * amortization, ddof=1) / np.sqrt(n)
                  / abs(amortization.mean())) if n > 1 and amortization.mean() > 0 else float("nan")
  result.update(refinement_closed=float(share), refinement_closed_stderr=float(share_stderr))
  for name in ("log_likelihood", "elbo_encoder", "elbo_refined", "elbo_optimal"):
    result[f"gap_{name}"] = float(rows[name].mean())
  result.update(gap_examples=n,
                gap_log_likelihood_kind="exact" if exact else f"iw {eval_samples}",
                gap_converged=float(rows["converged"].mean()),
                gap_optimizer_steps_mean=float(rows["optimizer_steps"].mean()),
                gap_optimizer_steps_max=int(rows["optimizer_steps"].max()),
                gap_last_rise_max=float(rows["last_rise"].max()))
  return result


def evaluate_gaps(inference, batches: Iterable, steps: int, config: GapConfig = GapConfig(),
                  log_likelihood: Optional[np.ndarray] = None, progress: str = "",
                  journal: Optional[str] = None):
  """`report` of `decompose`: (the report, the rows)."""
  rows = decompose(inference, batches, steps, config, log_likelihood, progress, journal)
  return report(rows, log_likelihood is not None, config.eval_samples), rows
