"""The training methods, by name: one class each (savae_tf/methods/<name>.py), registered here.

Adding a method: a `Method` subclass in its own file, a test, and one entry below.
"""

from typing import Dict, Type

from savae_tf.methods.aggressive import Aggressive
from savae_tf.methods.base import Batch, Method
from savae_tf.methods.language_model import LanguageModel
from savae_tf.methods.prior_svi import PriorSVI
from savae_tf.methods.savae import SAVAE
from savae_tf.methods.vae import VAE
from savae_tf.methods.vae_svi import VAESVI
from savae_tf.methods.vae_svi_kl import VAESVIKL

METHODS: Dict[str, Type[Method]] = {
    method.name: method for method in (LanguageModel, VAE, PriorSVI, VAESVI, VAESVIKL, SAVAE,
                                       Aggressive)}


def get(name: str) -> Method:
  if name not in METHODS:
    raise ValueError(f"Unknown mode {name!r}; expected one of {tuple(METHODS)}.")
  return METHODS[name]()


__all__ = ["Batch", "METHODS", "Method", "get"]
