"""savae-tf: Semi-Amortized Variational Autoencoders (Kim et al., ICML 2018) in TensorFlow."""

import importlib

__all__ = ["GRADIENT_MODES", "GaussianParams", "refine"]
__version__ = "0.1.0"

# Where each public name lives. They load on first use, so that `savae_tf.console` can quieten
# TensorFlow's start-up logs before anything imports TensorFlow.
_PUBLIC = {"GRADIENT_MODES": "savae_tf.svi", "refine": "savae_tf.svi",
           "GaussianParams": "savae_tf.distributions"}


def __getattr__(name):
  if name not in _PUBLIC:
    raise AttributeError(f"module 'savae_tf' has no attribute {name!r}")
  return getattr(importlib.import_module(_PUBLIC[name]), name)
