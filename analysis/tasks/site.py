"""Reading and patching a task's site, the activation at one hook at the last token, with TransformerLens hooks.

Activations are flat rows [n_prompts, d_in] as every dictionary takes them (hook_z: heads x d_head, head-major).
"""
from __future__ import annotations

import torch

from sae.models import check_hook, stop_layer
from store.errors import InputError


def check_site(model, hook: str) -> int:
    """The width of `hook`'s activation per token, when the task can read and patch it there: a hook of `model`
    (InputError for a layer out of range or an unknown name) inside a block that holds one activation per
    position."""
    if check_hook(model, hook) < 0:
        raise InputError(f"the task cannot use hook {hook!r}: it patches a site inside a block "
                         "(blocks.L.hook_resid_post, blocks.L.attn.hook_z, ...)")
    seq = model.cfg.n_heads + 1  # a per-head hook (attention pattern) has n_heads where positions would be
    with torch.no_grad():
        tokens = torch.zeros((1, seq), dtype=torch.long, device=model.cfg.device)
        _, cache = model.run_with_cache(tokens, names_filter=hook, stop_at_layer=stop_layer(model, hook))
    act = cache[hook]
    if act.ndim < 3 or act.shape[1] != seq or not act.is_floating_point():
        raise InputError(f"the task cannot use hook {hook!r}: it holds no activation per token position "
                         f"(shape {tuple(act.shape)} for {seq} tokens)")
    return int(act[0, 0].numel())


def last_acts(model, task, hook: str) -> torch.Tensor:
    """[n_prompts, d_in] the activation at `hook` at each prompt's last token."""
    out = None
    with torch.no_grad():
        for t, tokens in task.tokens.items():
            _, cache = model.run_with_cache(tokens, names_filter=hook, stop_at_layer=stop_layer(model, hook))
            rows = cache[hook][:, -1].reshape(tokens.shape[0], -1)
            if out is None:
                out = rows.new_zeros((len(task), rows.shape[1]))
            out[task.rows[t]] = rows
    return out


def cf_last_acts(model, task, hook: str) -> torch.Tensor:
    """[n_prompts, d_in] the same on the counterfactual prompts."""
    from dataclasses import replace

    return last_acts(model, replace(task, tokens=task.cf_tokens), hook)


class SitePatcher:
    """Last-token logits of a task's prompts with the activation at `hook` patched at the last token.

    A patch changes nothing before the site's block, so the residual stream entering that block is cached once
    and every patched run starts there (TransformerLens start_at_layer); only the last position is unembedded.
    At layer 24 of 30 that is about a sixth of a full run.
    """

    def __init__(self, model, task, hook: str):
        self.model, self.task, self.hook = model, task, hook
        self.layer = check_hook(model, hook)
        entry = f"blocks.{self.layer}.hook_resid_pre"
        self.resid: dict[int, torch.Tensor] = {}
        with torch.no_grad():
            for t, tokens in task.tokens.items():
                _, cache = model.run_with_cache(tokens, names_filter=entry, stop_at_layer=self.layer + 1)
                self.resid[t] = cache[entry]  # (batch, pos, d_model)

    def logits(self, patch: torch.Tensor | None = None) -> torch.Tensor:
        """[n_prompts, d_vocab] logits at the last token, with the activation at the hook there replaced by the
        rows of `patch` [n_prompts, d_in] (None: the clean run)."""
        model, out = self.model, None
        with torch.no_grad():
            for t, resid in self.resid.items():
                hooks = []
                if patch is not None:
                    rows = patch[self.task.rows[t]]

                    def replace_last(act, hook, rows=rows):  # act: (batch, pos, ...) ; rows: (batch, d_in)
                        act[:, -1] = rows.reshape(act[:, -1].shape).to(act.dtype)
                        return act

                    hooks = [(self.hook, replace_last)]
                final = model.run_with_hooks(resid, start_at_layer=self.layer, stop_at_layer=model.cfg.n_layers,
                                             fwd_hooks=hooks)  # (batch, pos, d_model) before the final norm
                logits = model.unembed(model.ln_final(final[:, -1:]))[:, 0]  # (batch, d_vocab)
                if out is None:
                    out = logits.new_zeros((len(self.task), logits.shape[-1]))
                out[self.task.rows[t]] = logits
        return out
