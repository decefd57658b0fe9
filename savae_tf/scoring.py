"""Per-example evaluation of one batch: the rows every reported metric is computed from
(`savae_tf.evaluate.report`), for the Keras model and the exported `score` signature alike.

Every row depends on its example alone: evaluation refines per example
(`SVIConfig.per_example_equivalent`) and keys every draw by the example's own content
(`Observation.example_seeds`, with a purpose number per kind of draw), not by its batch or
position. Evaluation uses KL weight 1, no dropout, and a stopped refinement gradient.
"""

import tensorflow as tf

from savae_tf import distributions
from savae_tf import objectives

# The purposes of evaluation draws, folded into each example's key.
_TERMS, _REFINED_Z, _IW_SAMPLES, _ENCODER_Z, _GAP_SAMPLES = 1, 2, 3, 4, 5


def evaluation_seed(model, obs, purpose: int) -> distributions.ExampleSeeds:
  """Noise keys of each example's content, so an example's evaluation is the same in any batch,
  and Monte Carlo noise still differs between examples."""
  return obs.example_seeds(model.seed, purpose)


def score(model, data, steps, num_samples, refine=None):
  """Per-example evaluation of one batch of `model` (a `SemiAmortizedVAE`).

  Returns the forward dict with `nll_bound` (amortized), `refined_nll_bound` (after `steps`
  test-time SVI steps; with `refine` None every model with a latent refines here, a VAE too),
  `kl` (at the refined posterior), `mean`, `logvar` (the refined posterior), `z` (one draw from
  it, for the refined mutual information), `mean0`, `logvar0`, `z0` (the same of the encoder's
  posterior lambda_0, for He et al.'s mutual information and active units), `iw_nll`
  (`num_samples` importance samples, proposal q at the refined posterior; skipped when
  `num_samples` is the Python int 0) and `tokens` (predicted units per example: tokens, pixels).
  The autoregressive baseline's three NLLs are its exact NLL.
  """
  obs = model.observe(data)
  refine = model.latent_dim > 0 if refine is None else refine
  out = model.forward(data, evaluation_seed(model, obs, _TERMS), False, tf.constant(1.0), steps,
                      "none", refine=refine)
  out.setdefault("refined_nll_bound", out["nll_bound"])
  if model.latent_dim:
    out.setdefault("mean", out["mean0"])
    out.setdefault("logvar", out["logvar0"])
    out["z"] = distributions.sample(out["mean"], out["logvar"],
                                    evaluation_seed(model, obs, _REFINED_Z))
    out["z0"] = distributions.sample(out["mean0"], out["logvar0"],
                                     evaluation_seed(model, obs, _ENCODER_Z))
  if not (isinstance(num_samples, int) and num_samples == 0):
    out["iw_nll"] = iw_nll(model, data, out, num_samples)
  return out


def iw_nll(model, data, out, num_samples):
  """-log p(x) per example by importance sampling, proposal q at the refined lambda of `out`."""
  if not model.latent_dim:
    return out["nll"]
  obs = model.observe(data)
  mean, logvar = out.get("mean", out["mean0"]), out.get("logvar", out["logvar0"])
  return -objectives.iw_log_likelihood(log_likelihood_fn(model, obs), mean, logvar, num_samples,
                                       evaluation_seed(model, obs, _IW_SAMPLES),
                                       iw_chunk_size(model.decoder, obs.targets))


def elbo_estimate(model, data, mean, logvar, num_samples, seed):
  """Each example's ELBO at lambda = (mean, logvar) with `num_samples` samples, its gradient
  with respect to lambda, and the importance-weighted log p(x) with q(lambda) as proposal
  (`objectives.elbo_estimate`): {"elbo", "iw_log_likelihood", "d_mean", "d_logvar"}. The samples
  are keyed by each example's content and `seed` (an int32 scalar), so a row is its own."""
  if not model.latent_dim:  # the language model's bound is its exact log-likelihood
    log_likelihood = -score(model, data, 0, 0)["nll_bound"]
    return {"elbo": log_likelihood, "iw_log_likelihood": log_likelihood,
            "d_mean": tf.zeros_like(mean), "d_logvar": tf.zeros_like(logvar)}
  obs = model.observe(data)
  seeds = distributions.fold_in(evaluation_seed(model, obs, _GAP_SAMPLES), seed)
  elbo, iw, d_mean, d_logvar = objectives.elbo_estimate(
      log_likelihood_fn(model, obs), mean, logvar, num_samples, seeds,
      iw_chunk_size(model.decoder, obs.targets))
  return {"elbo": elbo, "iw_log_likelihood": iw, "d_mean": d_mean, "d_logvar": d_logvar}


def log_likelihood_fn(model, obs):
  """z [S, B, D] -> log p(x | z) [S, B] for the examples of `obs` (evaluation: no dropout)."""
  context = model.decoder.prepare(obs.decoder_inputs, training=False)

  def log_likelihood(z):
    samples, batch = tf.shape(z)[0], tf.shape(z)[1]
    tiled = tf.tile(context, tf.concat([[samples], tf.ones([tf.rank(context) - 1], tf.int32)], 0))
    logits = model.decoder.logits(tiled, tf.reshape(z, [samples * batch, -1]), training=False)
    return -tf.reshape(obs.tiled(samples).nll(logits), [samples, batch])

  return log_likelihood


def iw_chunk_size(decoder, targets, max_floats: int = 2**25, max_chunk: int = 50):
  """Samples per importance-sampling chunk: at most `max_chunk`, and few enough that one chunk's
  decoder outputs (chunk x targets x `decoder.floats_per_target` floats: the logits of a text
  decoder) stay under `max_floats` (128 MiB), so a batch of 1,000 sentences does not run out of
  memory. (Samples are keyed by their number, so the chunking changes no draw.)"""
  per_sample = tf.size(targets, out_type=tf.int64) * decoder.floats_per_target
  return tf.cast(tf.clip_by_value(max_floats // tf.maximum(per_sample, 1), 1, max_chunk),
                 tf.int32)


def refine_for_evaluation(model, data, mean, logvar, steps):
  """lambda_K from a given lambda_0, with the noise `score` uses for these examples."""
  if not model.latent_dim:
    return distributions.GaussianParams(mean, logvar)
  batch = model.batch(data, evaluation_seed(model, model.observe(data), _TERMS), False,
                      tf.constant(1.0), steps, "none")
  return model.refiner.posterior(model.objective, batch, mean, logvar, "none")
