"""TensorFlow's start-up logs hidden when TF_CPP_MIN_LOG_LEVEL asks for it (the binaries set 2)
and the command line has no --verbosity.

TensorFlow 2.21 writes its C++ start-up lines (oneDNN, the CUDA probe, CPU features) to file
descriptor 2 before its logging reads TF_CPP_MIN_LOG_LEVEL, so the variable does not hide them
(tensorflow/tensorflow#100442). So TensorFlow is imported, and its devices are started, with file
descriptor 2 sent to a temporary file, and every line of it that is not one of those is passed on:
anything else printed meanwhile still reaches the user. Should the import itself crash (a CPU
TensorFlow's build cannot run on), its last words are in that file and are lost: run again with
--verbosity to see them. Nothing here imports TensorFlow at module level.
"""

import contextlib
import os
import re
import sys
import tempfile

# C++ log lines at INFO or WARNING level ("I0000 00:00:1796217336.877117  8501 port.cc:153] ...")
# and their continuation lines, absl's notice before its logging starts, and the failed CUDA
# probe of a machine without a GPU driver (an error-level line about nothing the user can act on).
_START_UP_NOISE = re.compile(
    r"^(?:[IW]\d{4} \d\d:\d\d:[\d.]+ +\d+ \S+:\d+\] "
    r"|WARNING: All log messages before absl::InitializeLog\(\) is called"
    r"|To enable the following instructions: .* rebuild TensorFlow"
    r"|E\d{4} \d\d:\d\d:[\d.]+ +\d+ cuda_\w+\.cc:\d+\] failed call to cuInit)")


def hiding() -> bool:
  """Whether start-up logs are hidden: TF_CPP_MIN_LOG_LEVEL is 2 or more (warnings off) and the
  command line has no --verbosity / -v (read before flags are parsed)."""
  try:
    level = int(os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0"))
  except ValueError:
    return False
  verbose = any(arg.startswith(("--verbosity", "-v=")) or arg == "-v" for arg in sys.argv[1:])
  return level >= 2 and not verbose


def is_start_up_noise(line: str) -> bool:
  return bool(_START_UP_NOISE.match(line))


@contextlib.contextmanager
def start_up_logs_hidden():
  """Within the block, file descriptor 2 goes to a temporary file; at its end, every line that is
  not TensorFlow's start-up noise is written to the real standard error. Does nothing unless
  `hiding()`."""
  if not hiding():
    yield
    return
  sys.stderr.flush()
  saved = os.dup(2)
  with tempfile.TemporaryFile(mode="w+b") as captured:
    os.dup2(captured.fileno(), 2)
    try:
      yield
    finally:
      sys.stderr.flush()
      os.dup2(saved, 2)
      os.close(saved)
      captured.seek(0)
      kept = [line for line in captured.read().decode("utf-8", "replace").splitlines(True)
              if not is_start_up_noise(line)]
      if kept:
        sys.stderr.write("".join(kept))
        sys.stderr.flush()


def import_tensorflow_quietly():
  """Imports TensorFlow and Keras and probes the GPUs (which logs; it does not start the
  runtime, so a cluster's strategy can still be made), with their start-up lines hidden if
  `hiding()`. Does nothing if TensorFlow is already imported."""
  if "tensorflow" in sys.modules:
    return
  with start_up_logs_hidden():
    # pylint: disable=g-import-not-at-top,unused-import,import-outside-toplevel
    import keras
    import tensorflow as tf
    tf.config.list_physical_devices()
