"""Shared by the attribution tests: the prompt, the last residual stream of tiny-random, and random dictionaries
spliced at chosen hooks."""
import torch

from analysis.attribution import make_sites
from sae.dictionaries import build_training_sae
from tests.factories import TINY_MODEL, dict_spec

PROMPT = "the cat sat on the mat and the dog"
LAST = "blocks.1.hook_resid_post"  # tiny-random has 2 blocks: the last residual stream


def _dictionary(hook: str, arch: str = "topk", d_sae: int = 128, k: int | None = 8, seed: int = 0):
    torch.manual_seed(seed)
    sae = build_training_sae(dict_spec(arch=arch, hook_name=hook, d_sae=d_sae, k=k))
    with torch.no_grad():  # a nonzero decoder bias, so the zero baseline is not the zero vector
        sae.b_dec.normal_(0, 0.1)
    return sae


def _sites(model, *named):
    return make_sites(model, [(name, TINY_MODEL, hook, sae) for name, hook, sae in named])
