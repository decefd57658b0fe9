"""savae-tf: Semi-Amortized Variational Autoencoders (Kim et al., ICML 2018) in TensorFlow."""

from savae_tf.distributions import GaussianParams
from savae_tf.svi import GRADIENT_MODES, refine

__all__ = ["GRADIENT_MODES", "GaussianParams", "refine"]
__version__ = "0.1.0"
