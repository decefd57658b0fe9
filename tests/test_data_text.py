"""Tests for savae_tf.data.text: the vocabulary."""

import pytest

from savae_tf.data.text import Vocabulary


def test_build_puts_specials_first_then_words_by_count():
  vocabulary = Vocabulary.build(["b a b", "c b a", "d"], max_size=6)
  assert vocabulary.words == ["<pad>", "<unk>", "<s>", "</s>", "b", "a"]
  assert (vocabulary.pad_id, vocabulary.unk_id, vocabulary.bos_id, vocabulary.eos_id) == (0, 1, 2, 3)
  assert Vocabulary.build(["b a b", "c b a"], min_count=2).words[4:] == ["b", "a"]


def test_encode_adds_start_and_end_and_maps_unknown_words_to_unk():
  vocabulary = Vocabulary.build(["the cat sat"])
  assert vocabulary.encode("the  dog\tsat") == [2, vocabulary.ids["the"], 1,
                                               vocabulary.ids["sat"], 3]
  assert vocabulary.decode(vocabulary.encode("the cat sat") + [0, 0]) == "the cat sat"


def test_a_vocabulary_without_unk_or_end_token():
  vocabulary = Vocabulary(["x", "y", "<s>"], pad=None, unk=None, eos=None)
  assert vocabulary.encode("y x") == [2, 1, 0]
  assert vocabulary.pad_id == 0 and vocabulary.eos_id is None
  with pytest.raises(ValueError, match="'z' is not in the vocabulary"):
    vocabulary.encode("x z")


@pytest.mark.parametrize("sentence", ["", "  \t "])
def test_an_empty_sentence_is_an_error(sentence):
  with pytest.raises(ValueError, match="Empty sentence"):
    Vocabulary.build(["a b"]).encode(sentence)


@pytest.mark.parametrize("words, kwargs, message", [
    (["a", "a", "<s>"], {}, "distinct"),
    (["a b", "<s>"], {}, "whitespace"),
    (["a", "<s>"], {"unk": "<unk>"}, "unk token"),
])
def test_malformed_vocabularies_are_rejected(words, kwargs, message):
  kwargs = {"pad": None, "unk": None, "eos": None, **kwargs}
  with pytest.raises(ValueError, match=message):
    Vocabulary(words, **kwargs)


def test_save_and_load_round_trip(tmp_path):
  vocabulary = Vocabulary(["x", "y", "<s>"], pad=None, unk=None, eos=None)
  vocabulary.save(str(tmp_path / "vocab.json"))
  assert Vocabulary.load(str(tmp_path / "vocab.json")) == vocabulary
