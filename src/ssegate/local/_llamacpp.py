"""The optional second engine: llama.cpp through ``llama-cpp-python``, when installed.

It is 2.5-3x faster at decoding and uses a quarter of the memory, but installing
it compiles llama.cpp for about ten minutes and needs a C++ toolchain, so it is
never required: ``load_engine(engine="auto")`` uses it when ``llama_cpp`` imports
and falls back to the numpy engine otherwise; ``engine="llamacpp"`` insists on it
and says how to install it when it is missing.

The prompt is built by our own tokenizer and chat template (read from the same
GGUF), and llama.cpp is given token ids, so both engines see identical prompts
and stop on the same control tokens.

Concurrency: this engine answers one request at a time and queues the others
(``Queued`` events tell them their place). llama-cpp-python's ``Llama`` holds a
single sequence's KV cache and offers no batched multi-sequence generation
(its "Add batched inference" issue, #771, is open; llama.cpp's own server has
``--parallel``), while the numpy engine batches up to ``max_concurrency``
answers per step: under many concurrent chats the numpy engine's total
throughput can exceed this one's.

Checked by hand with llama-cpp-python 0.3.36 (answers, usage, cancellation
through the ``local`` provider; about 52 tok/s decode against 32 for numpy
here). Its default ``-march=native`` build crashed in ``llama_decode`` on this
Xeon with AMX under a VM; a build without AMX/AVX-512 kernels works:
``CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON
-DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF" pip install
llama-cpp-python``. The test suite does not build it (ten minutes of both cores).
"""

from __future__ import annotations

import importlib.util
import os
import time
from collections.abc import Callable, Iterator
from typing import Any, Literal

from ._engine import DEFAULT_SLOTS, Engine, LocalEngine, default_model_path
from ._generation import Generation
from ._gguf import GGUFFile
from ._sampling import SamplingParams
from ._template import CHATML, ChatTemplate
from ._tokenizer import Tokenizer

__all__ = ["LlamaCppEngine", "llama_cpp_available", "load_engine"]

_INSTALL_HINT = (
    "pip install llama-cpp-python (it compiles llama.cpp: about 10 minutes, needs g++ and cmake)"
)


def llama_cpp_available() -> bool:
    """Whether ``llama_cpp`` (llama-cpp-python) can be imported, without importing it."""
    return importlib.util.find_spec("llama_cpp") is not None


class LlamaCppEngine(Engine):
    """The same interface as ``LocalEngine``, computed by llama.cpp."""

    name = "llamacpp"

    def __init__(
        self,
        llama: Any,
        tokenizer: Tokenizer,
        template: ChatTemplate,
        *,
        path: str = "",
        n_ctx: int = 2048,
        max_concurrency: int = 1,
        max_queue: int | None = 64,
        load_s: float = 0.0,
    ) -> None:
        # one llama.cpp context holds one conversation's KV cache, and
        # llama-cpp-python's Llama class decodes one sequence at a time (its
        # generate() has no batch of sequences; llama.cpp's multi-sequence
        # llama_batch is only reachable through the low-level C bindings): answers
        # take turns (the FIFO queue), whatever max_concurrency says
        super().__init__(max_concurrency=1, max_queue=max_queue)
        del max_concurrency
        self.llama = llama
        self.tokenizer = tokenizer
        self.template = template
        self.path = path
        self.n_ctx = n_ctx
        self.load_s = load_s

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str] | None = None,
        *,
        n_ctx: int = 2048,
        max_concurrency: int = 1,
        max_queue: int | None = 64,
        threads: int = 1,
        chat_template: str | None = None,
        system_prompt: str | None = None,
    ) -> LlamaCppEngine:
        """Load a GGUF with llama.cpp; ``RuntimeError`` if llama-cpp-python is missing."""
        if not llama_cpp_available():
            raise RuntimeError(f"the llama.cpp engine needs llama-cpp-python: {_INSTALL_HINT}")
        import llama_cpp

        started = time.perf_counter()
        file_path = os.fspath(path) if path is not None else default_model_path()
        with GGUFFile(file_path) as gguf:
            metadata = gguf.metadata
        tokenizer = Tokenizer.from_gguf_metadata(metadata)
        tokens = metadata["tokenizer.ggml.tokens"]
        template = ChatTemplate(
            chat_template or metadata.get("tokenizer.chat_template") or CHATML,
            tokenizer,
            bos_token=tokens[tokenizer.bos_id] if tokenizer.bos_id is not None else "",
            eos_token=tokens[tokenizer.eos_id] if tokenizer.eos_id is not None else "",
            default_system=system_prompt,
        )
        # one thread: on a shared 2-core machine OpenMP spin-waiting against the
        # other core's work made a 0.8 s answer take 12-46 s
        llama = llama_cpp.Llama(
            model_path=file_path,
            n_ctx=n_ctx,
            n_threads=threads,
            n_threads_batch=threads,
            verbose=False,
        )
        return cls(
            llama,
            tokenizer,
            template,
            path=file_path,
            n_ctx=n_ctx,
            max_concurrency=max_concurrency,
            max_queue=max_queue,
            load_s=time.perf_counter() - started,
        )

    def close(self) -> None:
        close = getattr(self.llama, "close", None)
        if close is not None:
            close()

    def _tokens(self, ids: list[int], params: SamplingParams) -> Iterator[int]:
        greedy = params.temperature == 0.0
        if params.seed is not None:
            self.llama.set_seed(params.seed)
        tokens = self.llama.generate(
            ids,
            temp=params.temperature,
            top_k=1 if greedy else params.top_k,
            top_p=params.top_p,
            min_p=0.0,  # ours has no min-p; llama-cpp-python defaults to 0.05
            repeat_penalty=params.repetition_penalty,
            reset=True,
        )
        for produced, token in enumerate(tokens, start=1):
            yield int(token)
            if len(ids) + produced >= self.n_ctx:
                return

    def _open(
        self, ids: list[int], params: SamplingParams
    ) -> tuple[Generation, Callable[[], None]]:
        return Generation(self.tokenizer, ids, params, self._tokens(ids, params)), _nothing


def _nothing() -> None:
    pass


def load_engine(
    path: str | os.PathLike[str] | None = None,
    *,
    engine: Literal["numpy", "llamacpp", "auto"] = "numpy",
    n_ctx: int = 2048,
    max_concurrency: int = DEFAULT_SLOTS,
    max_queue: int | None = 64,
    chat_template: str | None = None,
    system_prompt: str | None = None,
    decode_threads: int | None = None,
) -> Engine:
    """Load a model with the engine asked for.

    ``"numpy"`` (the default) needs nothing compiled; ``"llamacpp"`` raises
    ``RuntimeError`` with install advice when llama-cpp-python is missing;
    ``"auto"`` uses llama.cpp when it is installed and numpy otherwise.
    ``decode_threads`` is the numpy engine's (``LocalEngine.load``), and so is
    ``max_concurrency``: the answers it batches at once (llama.cpp answers one
    at a time and queues the rest).
    """
    if engine not in ("numpy", "llamacpp", "auto"):
        raise ValueError(f"engine must be 'numpy', 'llamacpp' or 'auto', not {engine!r}")
    options: dict[str, Any] = {
        "n_ctx": n_ctx,
        "max_concurrency": max_concurrency,
        "max_queue": max_queue,
        "chat_template": chat_template,
        "system_prompt": system_prompt,
    }
    if engine == "llamacpp" or (engine == "auto" and llama_cpp_available()):
        return LlamaCppEngine.load(path, **options)
    return LocalEngine.load(path, decode_threads=decode_threads, **options)
