"""The indirect-object-identification (IOI) task: templated prompts whose attributes are known per prompt.

    "Then, Mary and John went to the store. John gave a drink to" -> " Mary"
    attributes: io = Mary, s = John, order = ABB (IO first; BAB: "John and Mary ..., John ...")

The answer is the indirect object (IO); the logit difference logit(IO) - logit(S) at the last token measures how
well the model solves it. Every name is one token after a space, so the prompts of one template have one length
and the IO, S and order attributes are read off the prompt, not the tokens. A counterfactual prompt changes one
attribute (a new IO name in the same slots), which is what the control evaluation edits toward.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field

import torch

from store.errors import InputError

NAMES = ("Mary", "John", "Tom", "James", "Dan", "Sarah", "Anna", "Paul", "Mark", "Lisa", "Kate", "Alex", "Emma",
         "Jack", "Mike", "Sam", "Ben", "Joe", "Tim", "Amy", "Eric", "Adam", "Steve", "Chris", "Laura", "Rose",
         "David", "Peter", "Jane", "Ryan", "Kevin", "Brian", "Daniel", "Alice", "George", "Henry")
"""36 common names, each a single token after a space in SmolLM2's (and GPT-2's) vocabulary."""
TEMPLATES = (
    "Then, {A} and {B} went to the store. {C} gave a drink to",
    "When {A} and {B} got a snack at the cafe, {C} decided to give it to",
    "After the meeting, {A} and {B} went to the park. {C} handed a ball to",
    "After the lunch, {A} and {B} went to the store. {C} gave a gift to",
    "While {A} and {B} were working at the office, {C} passed a note to",
    "Then, {A} and {B} had a long argument. Afterwards, {C} said to",
)
"""{A} and {B} are the two names, {C} the subject again: ABB when {A} is the IO, BAB when {B} is. Each is solved
by SmolLM2-135M-Instruct on 30 prompts (IO > S in all; "Friends {A} and {B} found a book at school. {C} gave the
book to" was not: IO > S in 13% of its ABB prompts)."""
ORDERS = ("ABB", "BAB")
ATTRIBUTES = ("io", "s", "order")
"""The attributes of an IOI prompt, in the order results list them."""
MIN_NAMES = 3
"""Fewest single-token names the task can use: a prompt takes two, its counterfactual a third."""


@dataclass(frozen=True)
class IOIPrompt:
    template: int
    io: int
    """Index into the task's names."""
    s: int
    order: int
    """Index into ORDERS."""

    def text(self, names: tuple[str, ...], templates: tuple[str, ...], io: int | None = None) -> str:
        """The prompt (with `io` in place of its IO name: the counterfactual)."""
        io_name, s_name = names[self.io if io is None else io], names[self.s]
        first, second = (io_name, s_name) if ORDERS[self.order] == "ABB" else (s_name, io_name)
        return templates[self.template].format(A=first, B=second, C=s_name)


@dataclass
class IOITask:
    """Prompts with their attributes, tokenised per template (one length each), and counterfactual IO names."""
    names: tuple[str, ...]
    templates: tuple[str, ...]
    name_tokens: torch.Tensor
    """[n_names] token id of " NAME" (the answer token a name is predicted as)."""
    prompts: list[IOIPrompt]
    cf_io: torch.Tensor
    """[n_prompts] the counterfactual's IO name: neither the IO nor the S of the prompt."""
    tokens: dict[int, torch.Tensor] = field(default_factory=dict)
    """Per template: [n, seq] token ids of its prompts, in prompt order."""
    cf_tokens: dict[int, torch.Tensor] = field(default_factory=dict)
    """Per template: the same for the counterfactual prompts."""
    rows: dict[int, torch.Tensor] = field(default_factory=dict)
    """Per template: indices of its prompts in `prompts`."""

    def __len__(self) -> int:
        return len(self.prompts)

    def attribute(self, name: str) -> torch.Tensor:
        """[n_prompts] value index of attribute `name` per prompt."""
        return torch.tensor([getattr(p, name) for p in self.prompts], dtype=torch.long)

    def n_values(self, name: str) -> int:
        return len(ORDERS) if name == "order" else len(self.names)

    def value_label(self, name: str, value: int) -> str:
        return ORDERS[value] if name == "order" else self.names[value]

    @property
    def io_tokens(self) -> torch.Tensor:
        return self.name_tokens[self.attribute("io")]

    @property
    def s_tokens(self) -> torch.Tensor:
        return self.name_tokens[self.attribute("s")]

    @property
    def cf_io_tokens(self) -> torch.Tensor:
        return self.name_tokens[self.cf_io]


def name_tokens(tokenizer, names: tuple[str, ...], prefix: str = " ") -> tuple[tuple[str, ...], list[int]]:
    """The names that are one token after `prefix` in `tokenizer`, with their token ids."""
    kept, ids = [], []
    for name in names:
        encoded = tokenizer.encode(prefix + name, add_special_tokens=False)
        if len(encoded) == 1:
            kept.append(name)
            ids.append(encoded[0])
    return tuple(kept), ids


def build_ioi(model, n_prompts: int, seed: int = 0, names: tuple[str, ...] = NAMES,
              templates: tuple[str, ...] = TEMPLATES, prefix: str = " ") -> IOITask:
    """`n_prompts` IOI prompts for `model` (half ABB, half BAB, templates in turn), drawn with `seed`.

    InputError when fewer than MIN_NAMES of `names` are single tokens for the model's tokenizer (a byte-level
    tokenizer has none), or when n_prompts < 2.
    """
    if n_prompts < 2:
        raise InputError(f"the IOI task needs at least 2 prompts (got {n_prompts})")
    kept, ids = name_tokens(model.tokenizer, names, prefix)
    if len(kept) < MIN_NAMES:
        raise InputError(f"the IOI task needs names that are single tokens for {model.cfg.model_name}: only "
                         f"{len(kept)} of {len(names)} are (at least {MIN_NAMES} needed)")
    rng = random.Random(seed)
    prompts, cf = [], []
    for i in range(n_prompts):
        io, s, other = rng.sample(range(len(kept)), 3)
        prompts.append(IOIPrompt(template=i % len(templates), io=io, s=s, order=(i // len(templates)) % 2))
        cf.append(other)
    task = IOITask(kept, tuple(templates), torch.tensor(ids), prompts, torch.tensor(cf))
    _tokenize(task, model)
    return task


def _tokenize(task: IOITask, model) -> None:
    for t in range(len(task.templates)):
        rows = [i for i, p in enumerate(task.prompts) if p.template == t]
        if not rows:
            continue
        texts = [task.prompts[i].text(task.names, task.templates) for i in rows]
        cf_texts = [task.prompts[i].text(task.names, task.templates, io=int(task.cf_io[i])) for i in rows]
        tokens, cf_tokens = model.to_tokens(texts), model.to_tokens(cf_texts)
        lengths = {model.to_tokens(x).shape[1] for x in (*texts, *cf_texts)}  # padding would move the end
        if len(lengths) != 1:
            raise InputError(f"IOI template {t} tokenises to prompts of different lengths")
        task.tokens[t], task.cf_tokens[t], task.rows[t] = tokens, cf_tokens, torch.tensor(rows)
