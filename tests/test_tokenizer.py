"""Tokenizer parity with llama.cpp on the real vocabularies (fixtures from `scripts/make_fixtures.py tokenizer`)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gguf_runtime.gguf_file import GGUFFile
from gguf_runtime.tokenizer import StreamDecoder, Tokenizer, special

# catalog name -> conftest fixture giving its path
MODELS = {"smollm2-135m": "smollm2_path", "qwen2.5-coder-0.5b": "qwen05_path", "gemma-3-270m": "gemma_path"}
PIECE_BLOCK = 8192  # as in scripts/make_fixtures.py
# Other `tokenizer.ggml.pre` values, recorded on SmolLM2's vocabulary (differences from its own pre-tokenizer)
PRETOKENIZERS = json.loads((Path(__file__).parent / "fixtures" / "tokenizer" / "pretokenizers.json").read_text(
    encoding="utf-8"))


class Loaded:
    def __init__(self, name: str, metadata: dict, fixture: dict, corpus: list[str]):
        self.name, self.metadata, self.fixture, self.corpus = name, metadata, fixture, corpus
        self.tok = Tokenizer.from_metadata(metadata)


_loaded: dict[str, Loaded] = {}


@pytest.fixture(scope="module", params=list(MODELS))
def model(request, fixtures_dir) -> Loaded:
    name = request.param
    if name not in _loaded:
        path = request.getfixturevalue(MODELS[name])
        fixture = json.loads((fixtures_dir / "tokenizer" / f"{name}.json").read_text(encoding="utf-8"))
        corpus = json.loads((fixtures_dir / "tokenizer" / "corpus.json").read_text(encoding="utf-8"))
        _loaded[name] = Loaded(name, GGUFFile(path).metadata, fixture, corpus)
    return _loaded[name]


def _mismatches(model: Loaded, mode: str) -> list[str]:
    parse_special = mode == "special"
    bad = []
    for text, case in zip(model.corpus, model.fixture["cases"]):
        got = model.tok.encode(text, add_special=True, parse_special=parse_special)
        if got != case[mode]["ids"]:
            bad.append(f"{text!r}: got {got} want {case[mode]['ids']}")
    return bad


def test_corpus_ids_match_llama_cpp_plain(model):
    assert _mismatches(model, "plain") == []


def test_corpus_ids_match_llama_cpp_parse_special(model):
    assert _mismatches(model, "special") == []


@pytest.mark.parametrize("mode", ["plain", "special"])
def test_decode_matches_llama_detokenize(model, mode):
    for text, case in zip(model.corpus, model.fixture["cases"]):
        ids = case[mode]["ids"]
        assert model.tok.decode(ids) == case[mode]["text"], text
        assert model.tok.decode(ids, skip_special=True) == case[mode]["text_skip"], text


def test_decode_of_encode_round_trips_where_llama_cpp_does(model):
    round_trips = 0
    for text, case in zip(model.corpus, model.fixture["cases"]):
        ours = model.tok.decode(model.tok.encode(text), skip_special=True)
        assert ours == case["plain"]["text_skip"]
        round_trips += ours == text
    assert round_trips >= len(model.corpus) * 3 // 4


def test_bos_eos_flags_match_llama_cpp(model):
    tok, fx = model.tok, model.fixture
    assert (tok.add_bos, tok.add_eos) == (fx["add_bos"], fx["add_eos"])
    for sample in fx["flags"]:
        assert tok.encode(sample["text"], add_special=False) == sample["ids_plain"]
        assert tok.encode(sample["text"], add_special=False, parse_special=True) == sample["ids_special"]
    with_bos = tok.encode("Hello", add_special=True)
    without = tok.encode("Hello", add_special=False)
    assert with_bos == ([tok.bos_id] if tok.add_bos else []) + without + ([tok.eos_id] if tok.add_eos else [])


def test_special_ids_match_llama_cpp(model):
    tok, fx = model.tok, model.fixture
    assert tok.n_vocab == fx["n_vocab"]
    assert (tok.bos_id, tok.eos_id) == (fx["bos_id"], fx["eos_id"])
    assert tok.eog_ids == frozenset(fx["eog_ids"])
    if tok.eot_id != fx["eot_id"]:
        # Known difference: without an eot id in the file, llama.cpp takes the first EOT-looking token in
        # std::unordered_map order (SmolLM2: <|endoftext|>); we take the first in its list (<|im_end|>).
        assert "tokenizer.ggml.eot_token_id" not in model.metadata
        assert {tok.token_text(tok.eot_id), tok.token_text(fx["eot_id"])} <= {"<|im_end|>", "<|endoftext|>"}
        assert {tok.eot_id, fx["eot_id"]} <= tok.eog_ids


def _block_digests(values_of_block, n: int) -> list[str]:
    return [hashlib.sha256(values_of_block(range(start, min(start + PIECE_BLOCK, n)))).hexdigest()[:16]
            for start in range(0, n, PIECE_BLOCK)]


def _pieces_blob(tok: Tokenizer, skip_special: bool):
    def blob(ids) -> bytes:
        pieces = (tok.token_bytes(i, skip_special) for i in ids)
        return b"".join(len(p).to_bytes(4, "little") + p for p in pieces)
    return blob


def test_every_token_piece_matches_llama_cpp(model):
    tok, fx = model.tok, model.fixture
    for key, skip in (("special", False), ("plain", True)):
        got = _block_digests(_pieces_blob(tok, skip), tok.n_vocab)
        bad = [i * PIECE_BLOCK for i, (a, b) in enumerate(zip(got, fx["piece_digests"][key])) if a != b]
        assert bad == [], f"pieces differ (special={not skip}) in blocks starting at ids {bad}"


def test_every_token_attribute_matches_llama_cpp(model):
    attrs = model.tok.vocab.attrs
    got = _block_digests(lambda ids: json.dumps([attrs[i] for i in ids]).encode(), model.tok.n_vocab)
    assert got == model.fixture["attr_digests"]


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_streaming_any_split_equals_whole_decode(model, data):
    tok = model.tok
    text = data.draw(st.sampled_from(model.corpus) | st.text(max_size=40))
    ids = tok.encode(text, parse_special=data.draw(st.booleans()))
    # arbitrary extra tokens, e.g. lone UTF-8 continuation bytes
    ids += data.draw(st.lists(st.integers(0, tok.n_vocab - 1), max_size=6))
    skip = data.draw(st.booleans())
    decoder = StreamDecoder(tok, skip_special=skip)
    streamed = "".join(decoder.push(token) for token in ids) + decoder.flush()
    assert streamed == tok.decode(ids, skip_special=skip)


@settings(max_examples=40, deadline=None)
@given(text=st.text(st.sampled_from("ab <>/▁\n"), max_size=30) | st.sampled_from(["a >  </b", "x> </y"]))
def test_spm_segments_tokenize_like_the_whole_text(model, text):
    """Cutting SPM text before ▁ (except inside "bridge" tokens like ">▁</") never changes the result."""
    if model.tok.model != "llama":
        return
    encoder = model.tok._encoder
    spm_text = text.replace(" ", "▁")
    whole = list(encoder._encode_segment(spm_text)) if spm_text else []
    out: list[int] = []
    encoder.encode(spm_text, out)
    assert out == whole


def test_token_bytes_and_text(model):
    tok = model.tok
    ids = tok.encode(" Hello world\n", add_special=False)
    assert b"".join(tok.token_bytes(i) for i in ids) == b" Hello world\n"
    assert "".join(tok.token_text(i) for i in ids).replace("Ġ", " ").replace("▁", " ").replace("Ċ", "\n") \
        == " Hello world\n"
    assert tok.is_special(tok.eos_id) and not tok.is_special(ids[0])
    assert tok.token_bytes(tok.eos_id, skip_special=True) == b""


@pytest.fixture(scope="module")
def smollm2_metadata(smollm2_path) -> dict:
    return GGUFFile(smollm2_path).metadata


@pytest.mark.parametrize("pre", sorted(PRETOKENIZERS["pre"]))
def test_other_pre_tokenizers_match_llama_cpp(smollm2_metadata, fixtures_dir, pre):
    """Same vocabulary, another pre-tokenizer: ids and (space clean-up included) decoded text as llama.cpp."""
    metadata = dict(smollm2_metadata)
    metadata["tokenizer.ggml.pre"] = pre
    tok = Tokenizer.from_metadata(metadata)
    base = json.loads((fixtures_dir / "tokenizer" / "smollm2-135m.json").read_text(encoding="utf-8"))["cases"]
    corpus = json.loads((fixtures_dir / "tokenizer" / "corpus.json").read_text(encoding="utf-8"))
    expected = PRETOKENIZERS["pre"][pre]
    bad = []
    for i, text in enumerate(corpus):
        want_ids = expected["ids"].get(str(i), base[i]["plain"]["ids"])
        want_text = expected["text_skip"].get(str(i), base[i]["plain"]["text_skip"])
        ids = tok.encode(text)
        if ids != want_ids or tok.decode(ids, skip_special=True) != want_text:
            bad.append(f"{text!r}: got {ids} {tok.decode(ids, skip_special=True)!r}, want {want_ids} {want_text!r}")
    assert bad == []


def test_special_token_search_by_trie_regex_agrees_with_direct_scan(model, monkeypatch):
    """Long texts find special tokens with a trie regex, short ones test each token: same fragments."""
    vocab = model.tok.vocab
    texts = model.corpus + ["".join(model.corpus)]
    direct = [special.SpecialSplitter(vocab, list(vocab.special_ids)).split(text) for text in texts]
    monkeypatch.setattr(special, "_DIRECT_SCAN_LIMIT", 0)
    trie = special.SpecialSplitter(vocab, list(vocab.special_ids))
    assert [trie.split(text) for text in texts] == direct
