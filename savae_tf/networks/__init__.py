"""Keras layers for the encoders and decoders."""
