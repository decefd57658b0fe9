"""Per-example objectives and the evaluation estimators.

Everything returns one value per example ([batch]) except the data-set statistics (`mi`,
`active_units`), which take the whole evaluation set at once; averaging over a batch happens in
the model's train_step, once.

Text convention: a sentence is `<s> w_1 ... w_n </s>` with length n + 2; the decoder predicts
tokens 1..n+1, so `</s>` is counted in the token count (and in perplexity) and `<s>` is not.
"""

import math

import tensorflow as tf

from savae_tf import distributions


def target_mask(lengths, num_targets):
  """[batch, num_targets] mask of real targets: target t (token t + 1) is real iff t < length - 1."""
  return tf.sequence_mask(lengths - 1, maxlen=num_targets)


def token_nll(logits, targets, mask):
  """-log p(x | z) per example: the masked sum of the token cross-entropies
  logsumexp(logits) - logits[target].

  logits: [..., time, vocab]; targets, mask: [..., time]. Written out rather than with the fused
  `sparse_softmax_cross_entropy_with_logits`: the same values and derivatives, but the fused
  kernel forms the softmax in its forward pass (wasted on values never differentiated, such as
  `iw_nll`'s samples) and is slower to differentiate once and twice at a 10,000-word vocabulary
  (bench/nll_bench.py), which the exact refinement does at every step.
  """
  targets = tf.convert_to_tensor(targets)
  target_logits = tf.gather(logits, targets[..., None], batch_dims=targets.shape.rank)[..., 0]
  nll = tf.reduce_logsumexp(logits, -1) - target_logits
  return tf.reduce_sum(tf.where(mask, nll, tf.zeros_like(nll)), axis=-1)


def pixel_nll(logits, images):
  """-log p(x | z) per example for binary images: the Bernoulli cross-entropies summed over every
  pixel. logits, images: [batch, height, width, channels]; images may be Bernoulli means."""
  nll = tf.nn.sigmoid_cross_entropy_with_logits(labels=images, logits=logits)
  return tf.reduce_sum(tf.reshape(nll, [tf.shape(nll)[0], -1]), axis=-1)


def iw_log_likelihood(log_likelihood_fn, mean, logvar, num_samples, seed, chunk_size=50):
  """Importance-weighted estimate of log p(x) per example, with q(z; mean, logvar) as proposal.

      log p(x) ~ log (1/S) sum_s p(x | z_s) p(z_s) / q(z_s),   z_s ~ q

  It is a stochastic lower bound whose expectation rises to log p(x) as S grows. Samples are drawn
  `chunk_size` at a time and combined by a running log-sum-exp, so memory does not grow with S.

  Args:
    log_likelihood_fn: z [chunk, batch, latent] -> log p(x | z) [chunk, batch].
    mean, logvar: the proposal, [batch, latent].
    num_samples: S >= 1, a Python int or an int32 scalar tensor.
    seed: a `distributions` seed; samples are numbered 0..S-1 and drawn with
      `first_sample`, so with `ExampleSeeds` the estimate does not depend on `chunk_size`.
    chunk_size: samples per chunk, a Python int or an int32 scalar tensor >= 1.
  """
  num_samples = tf.convert_to_tensor(num_samples, tf.int32)
  with tf.control_dependencies([tf.debugging.assert_positive(
      num_samples, message="iw_log_likelihood: num_samples must be >= 1")]):
    num_chunks = (num_samples + chunk_size - 1) // chunk_size
  latent_dim = tf.shape(mean)[-1]
  prior = distributions.prior(latent_dim, mean.dtype)
  proposal = distributions.posterior(mean, logvar)

  def body(c, running):
    z = distributions.sample(mean, logvar, seed, chunk_size, first_sample=c * chunk_size)
    log_weights = log_likelihood_fn(z) + prior.log_prob(z) - proposal.log_prob(z)
    index = c * chunk_size + tf.range(chunk_size)
    log_weights = tf.where((index < num_samples)[:, None], log_weights,
                           tf.constant(-math.inf, mean.dtype))
    return c + 1, tf.reduce_logsumexp(tf.concat([running[None], log_weights], 0), axis=0)

  initial = tf.fill(tf.shape(mean)[:1], tf.constant(-math.inf, mean.dtype))
  _, total = tf.while_loop(lambda c, _: c < num_chunks, body, (tf.constant(0), initial))
  return total - tf.math.log(tf.cast(num_samples, mean.dtype))


def elbo_estimate(log_likelihood_fn, mean, logvar, num_samples, seed, chunk_size=50):
  """The ELBO of q(z; mean, logvar) and its gradient with respect to (mean, logvar), estimated
  with `num_samples` reparameterised samples, per example; and, from the same samples, the
  importance-weighted log p(x) with q as proposal (`iw_log_likelihood`'s estimator).

      ELBO ~ (1/S) sum_s log p(x | z_s) - KL(q || p(z)),   z_s = mean + exp(logvar / 2) eps_s

  (the KL exactly). Samples are drawn `chunk_size` at a time and each chunk's gradient is taken
  and summed inside the loop, so memory does not grow with S. Samples are numbered 0..S-1
  (`first_sample`), so with `ExampleSeeds` nothing depends on `chunk_size` or on the batch.

  Args:
    log_likelihood_fn: z [chunk, batch, latent] -> log p(x | z) [chunk, batch]; it must depend on
      the latent only through z (its gradient is taken with respect to z's mean and logvar).
    mean, logvar: q's parameters, [batch, latent].
    num_samples: S >= 1, a Python int or an int32 scalar tensor.
    seed: a `distributions` seed.
    chunk_size: samples per chunk (>= 1).

  Returns:
    (elbo [batch], iw_log_likelihood [batch], d_mean [batch, latent], d_logvar [batch, latent]):
    the gradients are of each example's own ELBO.
  """
  num_samples = tf.convert_to_tensor(num_samples, tf.int32)
  with tf.control_dependencies([tf.debugging.assert_positive(
      num_samples, message="elbo_estimate: num_samples must be >= 1")]):
    num_chunks = (num_samples + chunk_size - 1) // chunk_size
  count = tf.cast(num_samples, mean.dtype)
  prior = distributions.prior(tf.shape(mean)[-1], mean.dtype)

  def body(c, expected, running, d_mean, d_logvar):
    index = c * chunk_size + tf.range(chunk_size)
    real = (index < num_samples)[:, None]
    with tf.GradientTape(watch_accessed_variables=False) as tape:
      tape.watch([mean, logvar])
      z = distributions.sample(mean, logvar, seed, chunk_size, first_sample=c * chunk_size)
      log_likelihood = log_likelihood_fn(z)
      total = tf.reduce_sum(tf.where(real, log_likelihood, tf.zeros_like(log_likelihood)))
    g_mean, g_logvar = tape.gradient(total, [mean, logvar])
    log_weights = (log_likelihood + prior.log_prob(z)
                   - distributions.posterior(mean, logvar).log_prob(z))
    log_weights = tf.where(real, log_weights, tf.constant(-math.inf, mean.dtype))
    expected += tf.reduce_sum(tf.where(real, log_likelihood, tf.zeros_like(log_likelihood)), 0)
    running = tf.reduce_logsumexp(tf.concat([running[None], log_weights], 0), axis=0)
    return c + 1, expected, running, d_mean + g_mean, d_logvar + g_logvar

  zeros = tf.zeros_like(mean[:, 0])
  initial = (tf.constant(0), zeros, zeros - math.inf, tf.zeros_like(mean), tf.zeros_like(logvar))
  _, expected, running, d_mean, d_logvar = tf.while_loop(
      lambda c, *_: c < num_chunks, body, initial)
  with tf.GradientTape(watch_accessed_variables=False) as tape:
    tape.watch([mean, logvar])
    kl = distributions.kl_to_prior(mean, logvar)
  d_kl_mean, d_kl_logvar = tape.gradient(kl, [mean, logvar])
  return (expected / count - kl, running - tf.math.log(count),
          d_mean / count - d_kl_mean, d_logvar / count - d_kl_logvar)


def mutual_information(mean, logvar, z, max_floats: int = 2**24):
  """I_q(x; z) over a whole data set, with He et al.'s (2019) estimator:

      I = E_x E_q(z|x)[log q(z | x)] - E_z[log q(z)],  q(z) ~ (1/N) sum_n q(z | x_n)

  with one draw z_n ~ q(z | x_n) per example (`z`, [N, latent]) and the aggregate posterior over
  all N examples. He et al. average the same estimator over evaluation batches, which biases it
  low and makes it depend on the batching; over the whole set it does not. The N x N densities
  are computed a block of rows at a time (at most `max_floats` floats each).
  """
  latent_dim = tf.cast(tf.shape(mean)[-1], mean.dtype)
  count = tf.shape(mean)[0]
  neg_entropy = tf.reduce_mean(
      -0.5 * latent_dim * math.log(2 * math.pi) - 0.5 * tf.reduce_sum(1.0 + logvar, -1))
  posterior = distributions.posterior(mean, logvar)
  rows = tf.maximum(1, max_floats // tf.maximum(1, count * tf.shape(mean)[-1]))

  def body(start, total):
    # log q(z_i | x_j) for the block's i and every j: [i, j].
    log_density = posterior.log_prob(z[start:start + rows, None, :])
    return start + rows, total + tf.reduce_sum(tf.reduce_logsumexp(log_density, axis=1))

  _, total = tf.while_loop(lambda start, _: start < count, body,
                           (tf.constant(0), tf.constant(0.0, mean.dtype)))
  log_aggregate = total / tf.cast(count, mean.dtype) - tf.math.log(tf.cast(count, mean.dtype))
  return neg_entropy - log_aggregate


def active_units(mean_variance, threshold: float = 0.01):
  """Number of latent dimensions whose posterior mean varies across the data: Var_x E_q[z_d] >
  threshold (Burda et al. 2016). `mean_variance` is that variance per dimension, [latent]."""
  return tf.reduce_sum(tf.cast(mean_variance > threshold, tf.int32))


def free_bits_kl(mean, logvar, threshold: float):
  """sum_d max(threshold, KL_d), KL_d the mean over the whole batch (across tf.distribute
  replicas) of latent dimension d's KL(q || N(0, I)): the free-bits KL term.

  Its gradient reaches only the dimensions with KL_d above the threshold. Under several replicas
  each returns its share: the values and the gradients summed over replicas are the whole
  batch's.
  """
  per_dim = tf.reduce_sum(distributions.kl_to_prior_per_dimension(mean, logvar), 0)  # [D]
  batch = tf.cast(tf.shape(mean)[0], per_dim.dtype)
  replicas = 1
  context = tf.distribute.get_replica_context()
  total, whole_batch = tf.stop_gradient(per_dim), batch
  if context is not None and context.num_replicas_in_sync > 1:
    replicas = context.num_replicas_in_sync
    total = context.all_reduce(tf.distribute.ReduceOp.SUM, total)
    whole_batch = context.all_reduce(tf.distribute.ReduceOp.SUM, batch)
  above = total / whole_batch > threshold
  return tf.reduce_sum(tf.where(above, per_dim / whole_batch,
                                tf.cast(threshold / replicas, per_dim.dtype)))
