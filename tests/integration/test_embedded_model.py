"""The embedded SmolLM2-135M-Instruct: TransformerLens conversion vs transformers on the same GGUF."""
import pytest
import torch

pytestmark = pytest.mark.slow

PROMPTS = ["The capital of France is", "def fibonacci(n):\n    return",
           "In 1905 Albert Einstein published four papers that"]


@pytest.fixture(scope="module")
def both():
    from sae import smollm2
    from sae.models import load_model

    hf_model, tokenizer = smollm2.load_hf()
    return load_model(smollm2.NAME, device="cpu"), hf_model, tokenizer


def test_logits_match_transformers(both):
    tl_model, hf_model, tokenizer = both
    for prompt in PROMPTS:
        ids = tokenizer(prompt, return_tensors="pt").input_ids
        with torch.no_grad():
            diff = (tl_model(ids) - hf_model(ids).logits).abs().max().item()
        assert diff < 1e-3, (prompt, diff)


def test_chat_answers_paris(both):
    tl_model, _, _ = both
    tokenizer = tl_model.tokenizer
    chat = [{"role": "user", "content": "What is the capital of France?"}]
    prompt = tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    out = tl_model.generate(ids, max_new_tokens=16, do_sample=False, verbose=False, eos_token_id=end)
    answer = tokenizer.decode(out[0, ids.shape[1]:])
    assert "Paris" in answer, answer


def test_hooks_and_dimensions(both):
    from sae.models import check_hook, hook_output_dim

    tl_model, _, _ = both
    assert tl_model.cfg.n_layers == 30 and tl_model.cfg.d_model == 576
    assert check_hook(tl_model, "blocks.6.hook_resid_post") == 6
    assert hook_output_dim(tl_model, "blocks.6.attn.hook_z") == 9 * 64
    # SmolLM2 is trained without a BOS token: neither the tokenizer nor to_tokens may add one
    assert tl_model.tokenizer("hi").input_ids == tl_model.to_tokens("hi")[0].tolist()
    assert tl_model.to_tokens("hi")[0, 0].item() != tl_model.tokenizer.bos_token_id
