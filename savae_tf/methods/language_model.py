"""The LSTM language model / PixelCNN baseline: no latent, exact NLL."""

import tensorflow as tf

from savae_tf.methods.base import Batch, Method


class LanguageModel(Method):
  """The decoder alone, trained on -log p(x)."""
  name = "autoreg"
  uses_latent = False
  uses_encoder = False

  def forward(self, model, batch: Batch, refine: bool):
    del refine  # nothing to refine
    logits = model.decoder.logits(batch.context, None, training=batch.training,
                                  seed=batch.seed_0 if batch.training else None)
    nll = batch.obs.nll(logits)
    return {"nll": nll, "nll_bound": nll, "kl": tf.zeros_like(nll), "loss": batch.mean(nll)}
