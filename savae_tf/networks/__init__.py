"""Keras layers for the encoders and decoders. Each module is imported here so that importing the
package registers every layer with Keras (for `keras.saving.load_model`)."""

from savae_tf.networks import image, linear_gaussian, synthetic, text

__all__ = ["image", "linear_gaussian", "synthetic", "text"]
