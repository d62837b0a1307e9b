"""The language model the `llm` explainer and the LLM judges talk to: one small interface, two backends.

    chat = open_chat(ChatOptions(endpoint="http://127.0.0.1:8080/v1", model="qwen2.5-7b-instruct"))
    reply = chat.complete([{"role": "system", "content": "..."}, {"role": "user", "content": "..."}], 60)

- EndpointChat: any OpenAI-compatible chat endpoint (a llama.cpp server, vLLM, Ollama's /v1): one POST of the
  messages to {endpoint}/chat/completions per call, with the standard library only, to that address only.
- EmbeddedChat: a local TransformerLens model (sae.models.load_model; the embedded SmolLM2-135M-Instruct by
  default), prompted through its tokenizer's chat template when it has one, decoded greedily (with the key/value
  cache). It also answers many yes/no questions at once (yes_no): one forward pass of the batch that reads the
  next-token logits of "yes" and "no", instead of generating a reply to each.

Two failures are told apart: Unreachable (the endpoint refuses, times out or answers with an HTTP error: the whole
run stops, keeping what it wrote) and MalformedReply (a reply without a usable message: only the feature at hand
fails).
"""
from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Protocol

TEMPERATURE = 0.0
"""Every call is greedy, so a rerun asks and answers the same."""
YES_WORDS = ("yes", "y", "true", "1", "active")
NO_WORDS = ("no", "n", "false", "0", "inactive")
"""The words read as a verdict, a reply's first word (judges.parse_verdict) or first token (EmbeddedChat.yes_no)."""


class Unreachable(Exception):
    """The endpoint cannot be used at all (refused, timed out, HTTP error): one line saying so."""


class MalformedReply(Exception):
    """The endpoint answered, but not with a chat completion carrying text."""


class Chat(Protocol):
    name: str
    """Where the replies come from, for messages."""

    def complete(self, messages: list[dict[str, str]], max_tokens: int) -> str:
        """The assistant's reply to `messages` ({"role", "content"} dicts), at most `max_tokens` tokens long."""
        ...


@dataclass(frozen=True)
class ChatOptions:
    endpoint: str | None = None
    """Base URL of an OpenAI-compatible API (the part before /chat/completions); None: a local model."""
    model: str | None = None
    """The model the endpoint serves; without an endpoint, a local model name (None: the embedded model)."""
    timeout: float = 60.0
    """Seconds one endpoint call may take."""


def open_chat(options: ChatOptions) -> Chat:
    if options.endpoint:
        return EndpointChat(options.endpoint, options.model or "", options.timeout)
    return EmbeddedChat(options.model)


class EndpointChat:
    def __init__(self, endpoint: str, model: str, timeout: float):
        self.url = endpoint.rstrip("/") + "/chat/completions"
        self.model, self.timeout = model, timeout
        self.name = f"{model} at {endpoint}"

    def complete(self, messages: list[dict[str, str]], max_tokens: int) -> str:
        body = json.dumps({"model": self.model, "messages": messages, "max_tokens": max_tokens,
                           "temperature": TEMPERATURE, "stream": False}).encode()
        request = urllib.request.Request(self.url, data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            raise Unreachable(f"{self.url} answered HTTP {exc.code} {exc.reason}") from None
        except urllib.error.URLError as exc:
            reason = exc.reason
            if isinstance(reason, (TimeoutError, socket.timeout)):
                raise Unreachable(f"{self.url} did not answer within {self.timeout:g} s") from None
            raise Unreachable(f"cannot reach {self.url} ({_reason(reason)})") from None
        except (TimeoutError, socket.timeout):
            raise Unreachable(f"{self.url} did not answer within {self.timeout:g} s") from None
        except (ConnectionError, OSError) as exc:  # dropped mid-reply
            raise Unreachable(f"the connection to {self.url} failed ({_reason(exc)})") from None
        return reply_text(raw)


def _reason(reason: object) -> str:
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror.lower()
    return str(reason) or reason.__class__.__name__


def reply_text(raw: bytes) -> str:
    """The first choice's message text of a chat-completions reply; MalformedReply for anything else."""
    try:
        data = json.loads(raw)
        content = data["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        raise MalformedReply(f"not a chat completion: {raw[:80]!r}") from None
    if not isinstance(content, str):
        raise MalformedReply("the reply's message has no text")
    return content


class EmbeddedChat:
    """A local model, loaded on the first call (a run whose features are all done never loads it)."""

    def __init__(self, model_name: str | None = None, device: str | None = None):
        self.model_name, self.device = model_name, device
        self.name = model_name or "the embedded model"
        self._model = None

    @property
    def model(self):
        if self._model is None:
            from sae.models import DEFAULT_MODEL, load_model

            self._model = inference_layout(load_model(self.model_name or DEFAULT_MODEL, device=self.device))
        return self._model

    def prompt_ids(self, messages: list[dict[str, str]]):
        """[P] token ids: the chat template with the assistant turn opened, or a plain transcript for a model
        without one (the tiny test model)."""
        tokenizer = self.model.tokenizer
        if getattr(tokenizer, "chat_template", None):
            text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            return self.model.to_tokens(text, prepend_bos=False)[0]
        text = "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant:"
        return self.model.to_tokens(text)[0]

    def complete(self, messages: list[dict[str, str]], max_tokens: int) -> str:
        import torch

        model = self.model
        ids = self.prompt_ids(messages)
        room = model.cfg.n_ctx - len(ids)
        if room < 1:
            raise MalformedReply(f"the prompt ({len(ids)} tokens) fills {model.cfg.model_name}'s context")
        stops = _stop_ids(model.tokenizer)
        with torch.no_grad():
            out = model.generate(ids[None], max_new_tokens=min(max_tokens, room), do_sample=False,
                                 stop_at_eos=bool(stops), eos_token_id=stops or None, verbose=False,
                                 return_type="tokens")
        new = out[0, len(ids):].tolist()
        cut = next((i for i, t in enumerate(new) if t in stops), len(new))
        return model.tokenizer.decode(new[:cut], skip_special_tokens=True)


    def yes_no(self, conversations: list[list[dict[str, str]]]) -> list[bool]:
        """Whether the model answers yes (True) or no to each conversation: the likelier first token of the reply
        among the verdict words held as one token (YES_WORDS against NO_WORDS, any case, with or without a leading
        space; yes_no.answer_tokens). It is the greedy reply's verdict whenever that reply starts with one of them,
        and a verdict still when it would start otherwise.

        The prompts share their start (system prompt, description): its keys and values are computed once, then
        the rest of every prompt runs in batches (yes_no.BATCH), right-padded (causal attention: the padding
        never reaches a prompt's last token), and only the last token's residual is unembedded."""
        from analysis.explain.yes_no import yes_no_verdicts

        if not conversations:
            return []
        model = self.model
        prompts = [self.prompt_ids(messages) for messages in conversations]
        longest = max(len(ids) for ids in prompts)
        if longest >= model.cfg.n_ctx:
            raise MalformedReply(f"the prompt ({longest} tokens) fills {model.cfg.model_name}'s context")
        return yes_no_verdicts(model, prompts)


def inference_layout(model):
    """`model` with the weights TransformerLens transposes on every call (`W.T.contiguous()`: the gated MLP's and
    the unembedding's) stored transposed, so that copy is free; the values are unchanged. Decoding a token at a
    time otherwise copies about 150 MB of weights per token (SmolLM2-135M)."""
    from transformer_lens.components import Unembed
    from transformer_lens.components.mlps.gated_mlp import GatedMLP

    for module in model.modules():
        names = ("W_gate", "W_in", "W_out") if isinstance(module, GatedMLP) else \
            ("W_U",) if isinstance(module, Unembed) else ()
        for name in names:
            weight = getattr(module, name)
            if not weight.T.is_contiguous():
                weight.data = weight.data.T.contiguous().T
    return model


_STOP_TOKENS = ("<|im_end|>", "<|endoftext|>")


def _stop_ids(tokenizer) -> list[int]:
    vocab = tokenizer.get_vocab()
    found = {vocab[t] for t in _STOP_TOKENS if t in vocab}
    if tokenizer.eos_token_id is not None:
        found.add(tokenizer.eos_token_id)
    return sorted(found)
