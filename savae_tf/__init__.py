"""savae-tf: Semi-Amortized Variational Autoencoders (Kim et al., ICML 2018) in TensorFlow.

Importing the package registers every Keras-serializable class of it (the model, the networks,
`SVIConfig`, the KL schedules), so `keras.saving.load_model("m.keras")` needs only
`import savae_tf`.
"""

from savae_tf import console

# Before anything here imports TensorFlow: with TF_CPP_MIN_LOG_LEVEL=2 set (as the binaries do),
# the start-up lines TensorFlow prints despite it are hidden (see `console`).
console.import_tensorflow_quietly()

# pylint: disable=wrong-import-position
from savae_tf import networks
from savae_tf.distributions import GaussianParams
from savae_tf.model import SemiAmortizedVAE, SVIConfig
from savae_tf.svi import GRADIENT_MODES, refine

__all__ = ["GRADIENT_MODES", "GaussianParams", "SVIConfig", "SemiAmortizedVAE", "networks",
           "refine"]
__version__ = "0.1.0"
