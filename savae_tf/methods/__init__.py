"""The training methods, by name: one class each (savae_tf/methods/<name>.py), registered here.

Adding a method: a `Method` subclass in its own file, a test, and one entry below (or, outside
this package, `register` it).
"""

from typing import Dict, Type, TypeVar

from savae_tf import svi

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


M = TypeVar("M", bound=Type[Method])


def register(method: M) -> M:
  """Adds a `Method` subclass to `METHODS` under its `name` (usable as a class decorator), so that
  models (`SemiAmortizedVAE(mode=name)`) and the binaries' --method take it."""
  if not (isinstance(method, type) and issubclass(method, Method)):
    raise TypeError(f"register takes a Method subclass; got {method!r}.")
  if method.name in METHODS and METHODS[method.name] is not method:
    raise ValueError(f"A method named {method.name!r} is registered already.")
  METHODS[method.name] = method
  return method


def decoder_use_cudnn(name: str, gradient: str):
  """`use_cudnn` for the LSTM decoder of method `name` refining with gradient mode `gradient`:
  False where it runs inside an exact refinement ("unrolled", "reverse", or "auto", which picks
  one of them; cuDNN has no second-order gradient), else "auto" (cuDNN when a GPU is present)."""
  exact = METHODS[name].differentiates_refinement and (gradient == "auto"
                                                       or gradient in svi.EXACT_MODES)
  return False if exact else "auto"


def get(name: str) -> Method:
  if name not in METHODS:
    raise ValueError(f"Unknown method {name!r}; expected one of {tuple(METHODS)}.")
  return METHODS[name]()


__all__ = ["Batch", "METHODS", "Method", "decoder_use_cudnn", "get", "register"]
