"""The OpenAI-compatible client against a real local HTTP server: a reply, a refusing port, a hanging server, an
HTTP error and malformed replies."""
import socket
import time

import pytest

from analysis.explain.chat import (
    ChatOptions,
    EmbeddedChat,
    EndpointChat,
    MalformedReply,
    Unreachable,
    open_chat,
    reply_text,
)

ASK = [{"role": "system", "content": "s"}, {"role": "user", "content": "Examples:\n1. a<< cat>> b"}]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_reply_and_the_request_sent(chat_server):
    server = chat_server()
    chat = EndpointChat(server.url + "/", "canned-7b", timeout=5)
    assert chat.complete(ASK, 42) == "Explanation: The token ' cat'."
    assert server.requests == [{"model": "canned-7b", "messages": ASK, "max_tokens": 42, "temperature": 0.0,
                                "stream": False}]


def test_a_refused_connection_is_unreachable():
    url = f"http://127.0.0.1:{_free_port()}/v1"
    with pytest.raises(Unreachable, match=r"cannot reach http://127\.0\.0\.1:\d+/v1/chat/completions "
                                          r"\(connection refused\)"):
        EndpointChat(url, "m", timeout=5).complete(ASK, 5)


def test_a_hanging_server_times_out(chat_server):
    server = chat_server(hang_on=" cat")
    t0 = time.monotonic()
    with pytest.raises(Unreachable, match=r"did not answer within 0\.3 s"):
        EndpointChat(server.url, "m", timeout=0.3).complete(ASK, 5)
    assert time.monotonic() - t0 < 5


def test_an_http_error_is_unreachable(chat_server):
    server = chat_server()
    with pytest.raises(Unreachable, match="answered HTTP 404"):
        EndpointChat(server.url.removesuffix("/v1") + "/nope", "m", timeout=5).complete(ASK, 5)


def test_a_reply_without_a_message_is_malformed(chat_server):
    server = chat_server(malformed=frozenset({" cat"}))
    with pytest.raises(MalformedReply, match="not a chat completion"):
        EndpointChat(server.url, "m", timeout=5).complete(ASK, 5)


@pytest.mark.parametrize("raw", [b"not json", b"{}", b'{"choices": []}', b'{"choices": [{"message": {}}]}',
                                 b'[1, 2]'])
def test_reply_text_refuses_what_is_not_a_completion(raw):
    with pytest.raises(MalformedReply):
        reply_text(raw)
    with pytest.raises(MalformedReply, match="no text"):
        reply_text(b'{"choices": [{"message": {"content": null}}]}')


def test_open_chat_picks_the_backend():
    assert isinstance(open_chat(ChatOptions("http://h:1/v1", "m")), EndpointChat)
    local = open_chat(ChatOptions(model="tiny-random"))
    assert isinstance(local, EmbeddedChat) and local._model is None  # nothing loaded before the first call


def test_the_tiny_model_answers_through_the_same_interface(one_thread):
    chat = EmbeddedChat("tiny-random", device="cpu")
    reply = chat.complete(ASK, 4)
    assert isinstance(reply, str) and reply == chat.complete(ASK, 4)  # greedy: the same twice
