"""Data pipelines: synthetic (the oracle of Table 1), text and binarized images."""


class DataError(ValueError):
  """A data file is missing, empty or unusable; the message names the file and the problem."""
