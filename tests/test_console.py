"""Tests for savae_tf.console: TensorFlow's start-up lines hidden, everything else passed on."""

import os

import pytest

from savae_tf import console

NOISE = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n",
    "I0000 00:00:1796217336.877117    8501 port.cc:153] oneDNN custom operations are on.\n",
    "W0000 00:00:1796217336.877117    8501 cpu_feature_guard.cc:227] This TensorFlow binary\n",
    "To enable the following instructions: AVX2 AVX512F FMA, in other operations, rebuild "
    "TensorFlow with the appropriate compiler flags.\n",
    "E0000 00:00:1796217354.452622    8501 cuda_platform.cc:52] failed call to cuInit: INTERNAL\n",
]
KEPT = [
    "E0000 00:00:1796217354.452622    8501 util.cc:131] oneDNN supports DT_BOOL only on AVX-512\n",
    "F0000 00:00:1796217354.452622    8501 check.cc:1] Check failed: shape\n",
    "Traceback (most recent call last):\n",
    "error: --model_dir=run is not writable\n",
]


@pytest.mark.parametrize("line", NOISE)
def test_start_up_noise_is_recognised(line):
  assert console.is_start_up_noise(line)


@pytest.mark.parametrize("line", KEPT)
def test_errors_and_everything_else_are_not_noise(line):
  assert not console.is_start_up_noise(line)


def test_the_block_passes_on_what_is_not_noise_written_to_the_descriptor(capfd, monkeypatch):
  monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
  monkeypatch.setattr("sys.argv", ["binary"])
  with console.start_up_logs_hidden():
    for line in NOISE + KEPT:  # as C++ writes: to file descriptor 2, not through sys.stderr
      os.write(2, line.encode())
  assert capfd.readouterr().err == "".join(KEPT)


@pytest.mark.parametrize("level, argv", [("0", ["binary"]), ("2", ["binary", "--verbosity=1"]),
                                         ("2", ["binary", "-v", "1"])])
def test_nothing_is_hidden_without_the_level_or_with_verbosity(capfd, monkeypatch, level, argv):
  monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", level)
  monkeypatch.setattr("sys.argv", argv)
  with console.start_up_logs_hidden():
    os.write(2, NOISE[1].encode())
  assert capfd.readouterr().err == NOISE[1]
