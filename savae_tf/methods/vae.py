"""The VAE: encoder and decoder on the amortized ELBO."""

from savae_tf.methods.base import Method


class VAE(Method):
  """Encoder and decoder on f(lambda_0), lambda_0 = enc(x). (Refined only at evaluation, which
  then reports lambda_K's terms.)"""
  name = "vae"
