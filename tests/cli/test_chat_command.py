"""``ssegate chat`` as a user drives it: the real command in a subprocess, good input and bad.

Remote models are a ``FakeUpstream`` replaying real bytes captured from
llama-cpp-python's OpenAI-compatible server (captures/); the embedded model
runs for real where the test is about it (the spinner while it loads).
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_support import (
    MALFORMED_URLS,
    SSEGATE,
    env_for,
    head_1,
    interrupt_after,
    on_a_terminal,
    ssegate,
    url_message,
)

from ssegate.testing import FakeUpstream, Reply

CAPTURES = Path(__file__).parent / "captures"
# llama.cpp's server names each model after its file: the id ends in .gguf.
LLAMACPP_MODEL = "SmolLM2-135M-Instruct.Q4_1.gguf"
KEY = {"SSEGATE_API_KEY": "sk-test"}


def chunk(content: str, finish: str | None = None) -> bytes:
    delta = {"content": content} if content else {}
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    body = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    return b"data: " + json.dumps({**body, "choices": [choice]}).encode() + b"\n\n"


HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\n"
LONG_LINES = 2000  # ~120 kB: more than a pipe holds, so `| head -1` must close it mid-answer


@pytest.fixture(scope="module")
def upstream() -> Iterator[tuple[FakeUpstream, str]]:
    fake = FakeUpstream()
    fake.add("/llamacpp/v1/chat/completions", Reply.load(CAPTURES / "llamacpp_server.http"))
    fake.add("/length/v1/chat/completions", Reply.load(CAPTURES / "llamacpp_server_length.http"))
    fake.add(
        "/long/v1/chat/completions",
        Reply.from_http(
            HEAD
            + b"".join(
                chunk(f"line {n} of a long answer, padded to sixty bytes...\n")
                for n in range(LONG_LINES)
            )
            + chunk("", "stop")
            + b"data: [DONE]\n\n"
        ),
    )
    fake.add("/slow/v1/chat/completions", Reply.from_http(HEAD + chunk("Hello"), hold=True))
    fake.add("/silent/v1/chat/completions", Reply.from_http(HEAD, hold=True))
    with fake.run() as url:
        yield fake, url


def _sent_to(fake: FakeUpstream, path: str) -> dict[str, object]:
    sent = [r for r in fake.requests if r.path == path]
    assert sent, f"nothing was sent to {path}"
    body: dict[str, object] = sent[-1].json()
    return body


# -- the model name --------------------------------------------------------


def test_a_provider_prefix_wins_over_the_gguf_ending(upstream: tuple[FakeUpstream, str]) -> None:
    fake, url = upstream
    done = ssegate(
        *("chat", "What is the capital of France?", "--temperature", "0"),
        *("--model", f"openai:{LLAMACPP_MODEL}", "--base-url", f"{url}/llamacpp/v1"),
        env=KEY,
    )
    assert (done.code, done.stderr) == (0, "")
    assert done.stdout == (
        "L'Étoile, la Marseillaise. Paris is the capital of France and a major city in "
        "Europe's capital of France.\n"
    )
    assert _sent_to(fake, "/llamacpp/v1/chat/completions")["model"] == LLAMACPP_MODEL


def test_a_gguf_path_without_a_prefix_is_still_a_file(tmp_path: Path) -> None:
    missing = tmp_path / "model.gguf"
    done = ssegate("chat", "hi", "--model", str(missing))
    assert (done.code, done.stdout) == (2, "")
    assert done.stderr == f"error: --model '{missing}': no GGUF file at {missing}\n"


# -- feedback --------------------------------------------------------------


def test_an_answer_cut_at_max_tokens_says_so(upstream: tuple[FakeUpstream, str]) -> None:
    _, url = upstream
    done = ssegate(
        *("chat", "Write a long story about a dragon.", "--max-tokens", "8"),
        *("-m", f"openai:{LLAMACPP_MODEL}", "--base-url", f"{url}/length/v1"),
        env=KEY,
    )
    assert (done.code, done.stdout) == (0, "Once upon a time, there was a\n")
    assert done.stderr == "note: the answer stopped at --max-tokens 8; raise it for a longer one\n"


def test_ctrl_c_ends_the_line_and_exits_130(upstream: tuple[FakeUpstream, str]) -> None:
    _, url = upstream
    done = interrupt_after(
        b"Hello",
        *("chat", "hi", "-m", "openai:m", "--base-url", f"{url}/slow/v1"),
        env=KEY,
    )
    assert (done.code, done.stdout, done.stderr) == (130, "Hello\n", "")


def test_ctrl_c_before_any_text_ends_the_terminal_line(
    upstream: tuple[FakeUpstream, str],
) -> None:
    _, url = upstream
    done = on_a_terminal(
        *("chat", "hi", "-m", "openai:m", "--base-url", f"{url}/silent/v1"),
        env=KEY,
        interrupt_at="Waiting for the answer…",
    )
    assert (done.code, done.stdout) == (130, "")
    # the spinner is erased, then the shell's prompt gets a line of its own
    assert done.stderr.rsplit("\x1b[2K", 1)[1] == "\r\n"


def test_a_reader_that_leaves_ends_it_with_0(upstream: tuple[FakeUpstream, str]) -> None:
    _, url = upstream
    line, done = head_1("chat", "hi", "-m", "openai:m", "--base-url", f"{url}/long/v1", env=KEY)
    assert line == b"line 0 of a long answer, padded to sixty bytes...\n"
    assert (done.code, done.stderr) == (0, "")


def test_a_spinner_on_a_terminal_while_the_model_loads_and_reads() -> None:
    done = on_a_terminal(
        *("chat", "What is the capital of France?", "--temperature", "0"),
        *("--max-tokens", "4", "--n-ctx", "256"),
        env={"SSEGATE_ENGINE": "numpy"},
    )
    assert (done.code, done.stdout) == (0, "The capital of France\n")
    frames = done.stderr
    assert "Loading the model…" in frames
    assert "Reading the prompt…" in frames
    assert "\x1b[32m" in frames  # the spinner is green...
    # ...and erased: what stays on the terminal is the note.
    assert frames.rsplit("\x1b[2K", 1)[1] == (
        "note: the answer stopped at --max-tokens 4; raise it for a longer one\r\n"
    )


def test_no_color_on_a_terminal(upstream: tuple[FakeUpstream, str]) -> None:
    _, url = upstream
    args = ["chat", "hi", "-m", f"openai:{LLAMACPP_MODEL}", "--base-url", f"{url}/length/v1"]
    done = on_a_terminal(*args, env={**KEY, "NO_COLOR": "1"})
    assert (done.code, done.stdout) == (0, "Once upon a time, there was a\n")
    assert "Waiting for the answer…" in done.stderr
    assert re.findall(r"\x1b\[[0-9;]*m", done.stderr) == []  # no colour, no style
    assert done.stderr.rsplit("\x1b[2K", 1)[1] == (
        "note: the answer stopped at --max-tokens 256; raise it for a longer one\r\n"
    )


# -- the prompt ------------------------------------------------------------


def test_dash_reads_the_prompt_from_stdin(upstream: tuple[FakeUpstream, str]) -> None:
    fake, url = upstream
    done = ssegate(
        *("chat", "-", "-m", f"openai:{LLAMACPP_MODEL}", "--base-url", f"{url}/length/v1"),
        stdin="Write a long story\nabout a dragon.\n",
        env=KEY,
    )
    assert (done.code, done.stdout) == (0, "Once upon a time, there was a\n")
    assert _sent_to(fake, "/length/v1/chat/completions")["messages"] == [
        {"role": "user", "content": "Write a long story\nabout a dragon."}
    ]


@pytest.mark.parametrize(
    ("prompt", "stdin", "message"),
    [
        ("", "", "error: the prompt is empty: say what to ask (or - to read it from stdin)\n"),
        (" \n\t", "", "error: the prompt is empty: say what to ask (or - to read it from stdin)\n"),
        ("-", "", "error: the prompt read from stdin is empty\n"),
        ("-", "\n  \n", "error: the prompt read from stdin is empty\n"),
    ],
)
def test_an_empty_prompt_is_refused(prompt: str, stdin: str, message: str) -> None:
    done = ssegate("chat", prompt, "-m", "openai:m", stdin=stdin)
    assert (done.code, done.stdout, done.stderr) == (2, "", message)


def test_a_prompt_that_is_not_utf8_is_refused() -> None:
    done = subprocess.run(
        [str(SSEGATE), "chat", "-", "-m", "openai:m"],
        input=b"caf\xe9\n",
        capture_output=True,
        timeout=60,
        check=False,
        env=env_for(None),
    )
    assert (done.returncode, done.stdout) == (2, b"")
    assert done.stderr == (
        b"error: the prompt read from stdin is not UTF-8 text: 'utf-8' codec can't decode "
        b"byte 0xe9 in position 3: invalid continuation byte\n"
    )


# -- bad URLs ----------------------------------------------------------------


@pytest.mark.parametrize("base_url", MALFORMED_URLS)
def test_a_malformed_base_url_is_one_line_and_exit_2(base_url: str) -> None:
    done = ssegate("chat", "hi", "-m", "openai:gpt-4o-mini", "--base-url", base_url)
    expected = f"error: --base-url {url_message(base_url)}\n"
    assert (done.code, done.stdout, done.stderr) == (2, "", expected)


def test_help_documents_the_exit_codes() -> None:
    done = ssegate("chat", "--help", env={"COLUMNS": "200"})
    assert (done.code, done.stderr) == (0, "")
    text = " ".join(done.stdout.split())
    assert (
        "Exit status: 0 the answer is complete, or cut at --max-tokens, or its reader went away "
        "(`| head`); 1 the generation failed after it started; 2 bad arguments (an empty "
        "prompt, a malformed URL, an unknown model); 3 the provider refused or could not be "
        "reached before answering; 130 interrupted (Ctrl-C)."
    ) in text
