"""A real local HTTP server speaking the OpenAI chat-completions JSON, answering from canned rules, for the tests
of the `llm` explainer and judges and for bench/explain.py. No pytest here.

    with CannedChatServer() as server:          # http://127.0.0.1:PORT/v1
        run_explain(store, ExplainRequest("planted", explainer="llm", endpoint=server.url, model="canned"))

The rules read the prompts the way a careful model would:
- an explain prompt (the user message starts with "Examples:"): the commonest marked text, `The token 'X'.`
- a judge prompt ("Description: ... Excerpt: ..."), where the description names a token 'X': with marks in the
  excerpt (fuzz), yes when every mark is X; without (detection), yes when X occurs in the excerpt.
Faults, to test the client, each set by the marked text of an explain prompt (so by a feature, whatever the
order of requests): `malformed` (the reply is JSON without a message), `refuse_on` (the server stops listening
before it answers: later connections are refused), `hang_on` (that request and every later one get no answer
until the server closes).
"""
from __future__ import annotations

import json
import re
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_MARK = re.compile(r"<<(.*?)>>")
_JUDGE = re.compile(r"Description: (.*)\n\nExcerpt: (.*)\n\nAnswer", re.DOTALL)
_NAMED = re.compile(r"'(.*)'")


def canned_reply(messages: list[dict]) -> str:
    user = messages[-1]["content"]
    if user.startswith("Examples:"):
        common = Counter(_MARK.findall(user)).most_common(1)
        return f"Explanation: The token '{common[0][0]}'." if common else "Explanation: nothing."
    judged = _JUDGE.search(user)
    if not judged:
        return "I do not understand."
    named = _NAMED.search(judged.group(1))
    token, excerpt = (named.group(1) if named else None), judged.group(2)
    marks = _MARK.findall(excerpt)
    if marks:
        return "Yes." if token is not None and all(m == token for m in marks) else "No."
    return "Yes" if token and token in excerpt else "No"


class CannedChatServer:
    def __init__(self, malformed: frozenset[str] = frozenset(), refuse_on: str | None = None,
                 hang_on: str | None = None):
        self.malformed, self.refuse_on, self.hang_on = malformed, refuse_on, hang_on
        self.hanging = False
        self.requests: list[dict] = []
        """Every request body received, in order."""
        self.released = threading.Event()
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02},
                                        daemon=True)
        self._serving = False

    def __enter__(self) -> "CannedChatServer":
        self._thread.start()
        self._serving = True
        return self

    def __exit__(self, *exc) -> None:
        self.released.set()
        self.stop()

    def stop(self) -> None:
        """Stop listening (later connections are refused)."""
        with self._lock:
            if self._serving:
                self._serving = False
                self._httpd.shutdown()
                self._httpd.server_close()

    def _answer(self, body: dict) -> tuple[int, bytes]:
        with self._lock:
            self.requests.append(body)
            n = len(self.requests)
        user = body["messages"][-1]["content"]
        marks = Counter(_MARK.findall(user)).most_common(1) if user.startswith("Examples:") else []
        explained = marks[0][0] if marks else None
        if explained is not None and explained == self.refuse_on:
            self.stop()  # before answering: the next request finds nobody listening
        self.hanging |= explained is not None and explained == self.hang_on
        if self.hanging:
            self.released.wait(30)
            return 503, b""
        if explained in self.malformed:
            return 200, b'{"choices": [{"text": "no message here"}]}'
        text = canned_reply(body["messages"])
        reply = {"id": f"c{n}", "object": "chat.completion", "model": body.get("model"),
                 "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                              "finish_reason": "stop"}]}
        return 200, json.dumps(reply).encode()

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (the http.server name)
                if self.path != "/v1/chat/completions":
                    self.send_error(404)
                    return
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                status, payload = server._answer(body)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        return Handler
