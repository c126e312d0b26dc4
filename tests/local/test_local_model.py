"""The forward pass, pinned: prompt ids and greedy answers of fixed prompts.

How the pinned values were recorded (2026-11-22): llama.cpp could not be built
here (it compiles for ~10 minutes on the two shared cores), so the ids are this
engine's own output, accepted only after an independent check that
``test_greedy_path_matches_float64_reference`` repeats on every run: the
``gguf`` package's dequantisation and a plain float64 forward pass written
separately (tests/local/local_support.py) agree with the engine's logits to
about 5e-5 at every position, and their argmax equals every pinned token. The
smallest top-1/top-2 logit gap along these paths is 0.05 (the France answer's
first token, "The" over "L", is 0.08: the near-tie llama.cpp, which also
quantises activations, resolves the other way), three orders of magnitude above
the float32 error, so BLAS kernels of other CPUs cannot flip them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from local_support import ReferenceLlama

from ssegate.local import LlamaModel, LocalEngine, SamplingParams
from ssegate.local._model import Segment

SYSTEM_IDS = [1, 9690, 198, 2683, 359, 253, 5356, 5646, 11173, 3365, 3511, 308, 34519, 28]
SYSTEM_IDS += [7018, 411, 407, 19712, 8182, 2, 198, 1, 4093, 198]
ASSISTANT_IDS = [2, 198, 1, 520, 9531, 198]

# prompt -> (user content ids, first 16 greedy ids (fewer if it stopped), answer text)
PINNED = {
    "What is the capital of France?": (
        [1780, 314, 260, 3575, 282, 4649, 47],
        [504, 3575, 282, 4649, 314, 7042, 30],
        "The capital of France is Paris.",
    ),
    "Write a haiku about the sea.": (
        [19161, 253, 421, 30614, 563, 260, 3426, 30],
        [504, 6147, 282, 260, 3426, 28, 253, 13879, 6122, 28, 198, 49, 9154, 303, 5082, 282],
        "The waves of the sea, a silent beauty,\nA gentle lapping of",
    ),
    "What is a CPU?": (
        [1780, 314, 253, 17756, 47],
        [49, 17756, 365, 20486, 18784, 4730, 25, 314, 260, 2106, 282, 253, 2583, 338, 45438, 6388],
        "A CPU (Central Processing Unit) is the brain of a computer that executes instructions",
    ),
    "List three fruits.": (
        [6106, 1296, 5574, 30],
        [4590, 359, 1296, 5574, 338, 359, 3468, 327, 253, 2458, 284, 8609, 2714, 42, 1116, 33],
        "Here are three fruits that are perfect for a healthy and balanced diet:\n\n1",
    ),
}  # fmt: skip


@pytest.fixture(scope="module")
def reference(model_path: str) -> ReferenceLlama:
    return ReferenceLlama(model_path)


@pytest.mark.parametrize("prompt", PINNED)
def test_pinned_prompt_and_greedy_answer(engine: LocalEngine, prompt: str) -> None:
    content_ids, answer_ids, answer = PINNED[prompt]
    ids = engine.encode_chat([{"role": "user", "content": prompt}])
    assert ids == SYSTEM_IDS + content_ids + ASSISTANT_IDS
    generation = engine.generate([], SamplingParams.greedy(16), prompt_ids=ids)
    assert "".join(generation) == answer
    assert generation.output_ids == answer_ids
    assert generation.finish_reason == ("stop" if len(answer_ids) < 16 else "length")


def test_capital_of_france_is_paris(engine: LocalEngine) -> None:
    question = [{"role": "user", "content": "What is the capital of France?"}]
    assert "Paris" in "".join(engine.generate(question, SamplingParams.greedy(24)))
    # and with the default (sampled) settings too, for a few seeds
    for seed in (1, 2, 3):
        answer = "".join(engine.generate(question, SamplingParams(seed=seed, max_tokens=24)))
        assert "Paris" in answer, (seed, answer)


@pytest.fixture(scope="module")
def france(reference: ReferenceLlama) -> tuple[list[int], list[int], np.ndarray]:
    """The France prompt, it and its greedy answer, and the reference's logits of the latter."""
    content_ids, answer_ids, _ = PINNED["What is the capital of France?"]
    prompt = SYSTEM_IDS + content_ids + ASSISTANT_IDS
    sequence = prompt + answer_ids[:-1]
    return prompt, sequence, reference.logits(sequence)  # float64, every position


def test_greedy_path_matches_float64_reference(
    engine: LocalEngine, france: tuple[list[int], list[int], np.ndarray]
) -> None:
    prompt, sequence, expected = france
    answer_ids = PINNED["What is the capital of France?"][1]
    assert expected[len(prompt) - 1 :].argmax(-1).tolist() == answer_ids
    cache = engine.model.new_cache(64)
    for position, token in enumerate(sequence):  # one token at a time: the decode path
        logits = engine.model.forward([token], cache)
        assert logits.dtype == np.float32
        assert np.abs(logits - expected[position]).max() < 2e-3
    cache = engine.model.new_cache(64)  # the whole sequence at once: the prefill path
    assert np.abs(engine.model.forward(sequence, cache) - expected[-1]).max() < 2e-3


def test_float64_reference_holds_inside_a_batch_of_mixed_lengths(
    engine: LocalEngine, france: tuple[list[int], list[int], np.ndarray]
) -> None:
    """The France answer's logits, computed in passes shared with two other conversations."""
    prompt, sequence, expected = france
    model = engine.model
    cache = model.new_cache(64)
    longer, shorter = model.new_cache(160), model.new_cache(160)
    model.forward(SYSTEM_IDS + PINNED["Write a haiku about the sea."][0] * 8, longer)  # 88
    model.forward([1, 4093, 198, 19161], shorter)
    for i in range(0, len(prompt), 16):  # the prompt in chunks, beside their decode steps
        last = i + 16 >= len(prompt)
        chunk = Segment(prompt[i : i + 16], cache, logits=last)
        out = model.forward_batch(
            [Segment([504], longer), chunk, Segment([30], shorter)], engine._worker
        )
        if last:
            assert out[1] is not None
            assert np.abs(out[1] - expected[len(prompt) - 1]).max() < 2e-3
    for position in range(len(prompt), len(sequence)):  # then one token per pass
        out = model.forward_batch(
            [Segment([282], longer), Segment([sequence[position]], cache), Segment([28], shorter)]
        )
        assert out[1] is not None
        assert out[1].dtype == np.float32
        assert np.abs(out[1] - expected[position]).max() < 2e-3
    assert (cache.length, longer.length, shorter.length) == (len(sequence), 88 + 9, 4 + 9)


def test_tiny_model_matches_reference(tiny_path: Path) -> None:
    """Every tensor type, an untied head, GQA 4/2, prefill in several chunks."""
    with LocalEngine.load(tiny_path, n_ctx=96, blas_threads=None) as tiny:
        assert tiny.model._embeddings is not None  # output.weight is its own matrix
        tokens = [int(t) for t in np.random.default_rng(5).integers(3, 256, 90)]
        expected = ReferenceLlama(tiny_path).logits(tokens)
        cache = tiny.model.new_cache(96)
        first = tiny.model.forward(tokens[:50], cache)
        assert np.abs(first - expected[49]).max() < 1e-3
        for i in range(50, 90):
            logits = tiny.model.forward([tokens[i]], cache)
            assert np.abs(logits - expected[i]).max() < 1e-3
        assert cache.length == 90


def test_prefill_in_chunks_equals_one_by_one(
    tiny_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with LocalEngine.load(tiny_path, n_ctx=96, blas_threads=None) as tiny:
        model: LlamaModel = tiny.model
        tokens = [int(t) for t in np.random.default_rng(6).integers(3, 256, 80)]
        chunked = model.new_cache(96)
        with monkeypatch.context() as patch:
            patch.setattr("ssegate.local._model.PREFILL_CHUNK", 7)  # 12 chunks, the last short
            logits = model.forward(tokens, chunked)
        single = model.new_cache(96)
        for token in tokens:
            one = model.forward([token], single)
        assert np.abs(logits - one).max() < 1e-4
        for shard_k, shard_single in zip(chunked.k, single.k, strict=True):
            assert np.abs(shard_k[:, :, :80] - shard_single[:, :, :80]).max() < 1e-4


def test_everything_stays_float32(engine: LocalEngine) -> None:
    """A float64 scalar anywhere promotes the activations and costs 25x."""
    model = engine.model
    for layer in model.layers:
        for shard in layer.shards:
            for array in (shard.wqkv, shard.wo, shard.wgu, shard.wdown):
                assert array.dtype == np.float32
                assert array.flags.c_contiguous
    for part in model.head_parts:
        assert part.dtype == np.float32
        assert part.flags.c_contiguous
    # (in, out) in column blocks (blocks, in, 64); embeddings are its columns
    assert [part.shape for part in model.head_parts] == [(384, 576, 64)] * 2
    cache = model.new_cache(16)
    assert all(k.dtype == np.float32 for k in cache.k)
    assert model.forward([1, 2, 3], cache).dtype == np.float32
    assert model.forward([4], cache).dtype == np.float32


def test_context_limits(engine: LocalEngine) -> None:
    cache = engine.model.new_cache(4)
    engine.model.forward([1, 2, 3], cache)
    with pytest.raises(ValueError, match="5 positions do not fit the context of 4"):
        engine.model.forward([4, 5], cache)
    with pytest.raises(ValueError, match="needs at least one token"):
        engine.model.forward([], cache)
    with pytest.raises(ValueError, match="n_ctx must be between 1 and the model's 8192"):
        engine.model.new_cache(8193)


def test_unsupported_architecture_is_refused(tmp_path: Path) -> None:
    import gguf

    path = tmp_path / "gpt2.gguf"
    w = gguf.GGUFWriter(str(path), "gpt2")
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(ValueError, match="tokenizer model None is not supported"):
        LocalEngine.load(path, blas_threads=None)
    from ssegate.local import LlamaConfig

    with pytest.raises(ValueError, match="architecture 'gpt2' is not supported"):
        LlamaConfig.from_metadata({"general.architecture": "gpt2"})
    with pytest.raises(ValueError, match=r"the GGUF lacks llama\.embedding_length"):
        LlamaConfig.from_metadata({"general.architecture": "llama"})
    base = {
        "general.architecture": "llama",
        "llama.block_count": 2,
        "llama.embedding_length": 64,
        "llama.attention.head_count": 4,
        "llama.feed_forward_length": 128,
        "llama.context_length": 64,
        "llama.vocab_size": 300,
    }
    assert LlamaConfig.from_metadata(base).head_dim == 16
    for extra, message in [
        ({"llama.rope.scaling.type": "yarn"}, r"RoPE scaling \('yarn'\) is not supported"),
        ({"llama.rope.scaling.factor": 8.0}, "RoPE scaling"),
        ({"llama.attention.key_length": 32}, "key_length != embedding_length / head_count"),
        ({"llama.expert_count": 8}, "mixture-of-experts"),
        ({"llama.attention.head_count_kv": 3}, "inconsistent heads"),
    ]:
        with pytest.raises(ValueError, match=message):
            LlamaConfig.from_metadata({**base, **extra})


def test_default_sampling_does_not_loop(engine: LocalEngine) -> None:
    """Greedy decoding of a 135M model falls into loops; the defaults must not."""
    question = [{"role": "user", "content": "List three fruits."}]
    generation = engine.generate(question, SamplingParams(seed=2, max_tokens=96))
    text = "".join(generation)
    ids = generation.output_ids
    grams = [tuple(ids[i : i + 8]) for i in range(len(ids) - 7)]
    assert len(grams) == len(set(grams)), text
    assert len(ids) > 50
