"""Builds the tiny random-weight models ferrox ships and the references its tests compare to.

For each architecture: a small byte-level BPE tokenizer trained on the text below (with a chat
template), a config, and random weights drawn large enough that greedy continuations are
diverse (DESIGN.md, "Correctness references"), saved with Hugging Face transformers under
models/tiny-<arch>/. Then, from transformers and tokenizers (never from ferrox):

  crates/ferrox-lm/tests/fixtures/tiny-<arch>.safetensors  last-position logits (f32) of the prompt; for
                                                            the sliding-window / long-context architectures
                                                            also every position's logits of a prompt longer
                                                            than the window ("long_logits"), and for LongRoPE
                                                            those of a prompt within the original context
                                                            (its first positions: "short_logits")
  crates/ferrox-lm/tests/fixtures/tiny-<arch>.json          prompt ids, 24 greedy ids, top-1/top-2 gaps (and
                                                            the long / short prompt ids)
  crates/ferrox-lm/tests/fixtures/chat.json                 apply_chat_template renderings
                                                            (`python3 -c "import make_tiny_models as m;
                                                            m.chat_fixtures('../models/tiny-llama')"` in
                                                            scripts/ remakes only these)
  crates/ferrox-lm/tests/fixtures/detok.json                tokenizers' decode of random id streams
  crates/ferrox-lm/tests/fixtures/tokenizer_spm/            a SentencePiece-style tokenizer for the same

Run: python3 scripts/make_tiny_models.py [name ...]   (numpy, torch, transformers 5, tokenizers)
     (names: llama qwen2 qwen3 gemma2 gemma3 gemma3-mm phi3 phi3-swa mixtral mixtral-mlx qwen3-moe; none = all, plus the
     chat and detokenizer fixtures)
"""

import json
import os
import random
import sys

import numpy as np
import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    Gemma2Config,
    Gemma3Config,
    Gemma3TextConfig,
    LlamaConfig,
    MixtralConfig,
    Phi3Config,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen3Config,
    Qwen3MoeConfig,
    SiglipVisionConfig,
)

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
FIX = os.path.join(ROOT, "crates/ferrox-lm/tests/fixtures")
PROMPT = "Once upon a time"
# Longer than the tiny models' sliding window (8), so the window changes the result.
LONG_PROMPT = "The fox and the crow walked on the ice together, and in spring the forest was full of birds again."
N_GREEDY = 24

TEXT = """Once upon a time there was a small fox who lived at the edge of a quiet forest.
Every morning the fox ran to the river, drank the cold water, and watched the fish.
One day a crow landed on a branch and said: "Why do you always come here alone?"
The fox thought for a while. "Because the river tells me stories," it answered.
The crow laughed, but the next morning it came back, and the morning after that.
They talked about the weather, the seasons, the stars, and the people in the village.
In winter the river froze, and the fox and the crow walked on the ice together.
In spring the snow melted, flowers opened, and the forest was full of birds again.
A café in the village sold bread, cheese, and tea; the naïve baker gave crumbs to the birds.
Numbers: 1, 2, 3, 10, 42, 100, 2024. Symbols: + - * / = < > ( ) [ ] { } # @ & %.
Some travellers spoke other languages: 日本語, Ελληνικά, русский, español, français, 한국어.
They even wrote emoji: 🦊 🐦 🌲 ❄️ 🌸 — and the fox liked them all.
def add(a, b):
    return a + b
The end of the story is not the end of the friendship. The fox and the crow are still friends.
"""

SPECIAL = ["<|begin_of_text|>", "<|end_of_text|>", "<|im_start|>", "<|im_end|>", "<|eot|>"]

CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% if tools %}<|im_start|>system\nTools:\n{% for t in tools %}{{ t | tojson }}\n{% endfor %}<|im_end|>\n{% endif %}"
    "{% for message in messages %}"
    "{% if message['role'] not in ['system', 'user', 'assistant', 'tool'] %}"
    "{{ raise_exception('Unknown role: ' + message['role']) }}"
    "{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] | trim }}"
    "{% if message.tool_calls is defined %}{% for c in message.tool_calls %}\n<call>{{ c.function | tojson }}</call>{% endfor %}{% endif %}"
    "<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def train_bpe():
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=384, special_tokens=SPECIAL, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tok.train_from_iterator([TEXT] * 4, trainer)
    bos = tok.token_to_id("<|begin_of_text|>")
    tok.post_processor = processors.TemplateProcessing(
        single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A <|begin_of_text|> $B", special_tokens=[("<|begin_of_text|>", bos)]
    )
    return tok


def train_spm():
    """A Llama-2-style tokenizer: Metaspace pieces, byte fallback, and the decoder that strips the first space."""
    tok = Tokenizer(models.BPE(byte_fallback=True, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    tok.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    bytes_ = [f"<0x{i:02X}>" for i in range(256)]
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=["<unk>", "<s>", "</s>"] + bytes_, show_progress=False)
    ascii_text = "".join(c for c in TEXT if ord(c) < 128)  # everything else goes through byte fallback
    tok.train_from_iterator([ascii_text] * 4, trainer)
    return tok


def big_init(model, seed, gemma_norms=False):
    """Redraws weights: matrices ~ N(0, (2/sqrt(fan_in))^2), norms around 1, biases perturbed."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim in (2, 3):  # matrices, and stacked experts [experts, out, in]
                fan_in = p.shape[-1]
                if "embed_tokens" in name or "mm_input_projection" in name:
                    # Embeddings feed a norm: any scale works, keep them O(1) -- after Gemma's
                    # sqrt(hidden) scaling there, or the residual stream is all embedding.
                    fan_in = 4 * p.shape[1] if gemma_norms else 4
                p.copy_(torch.randn(p.shape, generator=g) * (2.0 / fan_in**0.5))
            elif "norm" in name and gemma_norms:
                # Gemma norms scale by 1 + weight. Blocks' outputs (post norms) and the final
                # norm are made larger, or tied embeddings just repeat the last token.
                centre = 2.0 if ".post_" in name else 3.0 if name.endswith("model.norm.weight") else 0.0
                p.copy_(centre + 0.3 * torch.randn(p.shape, generator=g))
            elif "norm" in name:
                p.copy_(1.0 + 0.3 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.3 * torch.randn(p.shape, generator=g))


def greedy_references(model, ids):
    """Last-position logits, and N_GREEDY greedy tokens by full forward passes (no cache)."""
    seq = list(ids)
    gaps = []
    with torch.no_grad():
        first = model(torch.tensor([seq])).logits[0, -1].float()
        for _ in range(N_GREEDY):
            logits = model(torch.tensor([seq])).logits[0, -1].float()
            lp = torch.log_softmax(logits, -1)
            top2 = torch.topk(lp, 2)
            gaps.append(float(top2.values[0] - top2.values[1]))
            seq.append(int(top2.indices[0]))
    return first.numpy(), seq[len(ids) :], gaps


def all_logits(model, ids):
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].float().contiguous()


def save_model(name, config, tok, seed, long_prompt=False, short_len=None, gemma_norms=False, eager=False, hub_keys=None):
    """Saves a random model and its references. `long_prompt`: also every position's logits for
    LONG_PROMPT; `short_len`: also those of its first `short_len` tokens (of PROMPT without a long
    one); `eager`: transformers' explicit attention (soft-capping needs it; the models added
    with Gemma 2 use it throughout, the first three keep the default SDPA they were made with)."""
    out = os.path.join(ROOT, "models", name)
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(seed)
    attn = "eager" if eager else None
    config._attn_implementation = attn
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    big_init(model, seed, gemma_norms)
    model.eval()
    model.save_pretrained(out, safe_serialization=True)
    if hub_keys:
        path = os.path.join(out, "config.json")
        with open(path) as f:
            saved = json.load(f)
        saved.update(hub_keys)
        with open(path, "w") as f:
            json.dump(saved, f, indent=2)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|begin_of_text|>", eos_token="<|im_end|>")
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(out)
    with open(os.path.join(out, "generation_config.json"), "w") as f:
        json.dump({"bos_token_id": config.bos_token_id, "eos_token_id": [tok.token_to_id("<|im_end|>"), tok.token_to_id("<|end_of_text|>")]}, f, indent=2)
    # Reload from disk, as ferrox will.
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32, attn_implementation=attn).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    ids = tokenizer(PROMPT)["input_ids"]
    logits, greedy, gaps = greedy_references(model, ids)
    tensors = {"logits": torch.from_numpy(logits).contiguous()}
    ref = {"prompt": PROMPT, "prompt_ids": ids, "greedy": greedy, "gaps": gaps}
    if long_prompt:
        ref["long_prompt_ids"] = tokenizer(LONG_PROMPT)["input_ids"]
        tensors["long_logits"] = all_logits(model, ref["long_prompt_ids"])
    if short_len:  # the beginning of the long prompt, so cached chunks can be checked against both
        ref["short_prompt_ids"] = ref.get("long_prompt_ids", ids)[:short_len]
        tensors["short_logits"] = all_logits(model, ref["short_prompt_ids"])
    save_file(tensors, os.path.join(FIX, f"{name}.safetensors"))
    with open(os.path.join(FIX, f"{name}.json"), "w") as f:
        json.dump(ref, f, indent=1)
    print(name, "prompt", ids, "greedy", greedy, "min gap %.3f" % min(gaps))
    return out


def llama(tok):
    config = LlamaConfig(
        vocab_size=tok.get_vocab_size(),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        rope_scaling={"rope_type": "llama3", "factor": 4.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 64},
        tie_word_embeddings=True,
        bos_token_id=tok.token_to_id("<|begin_of_text|>"),
        eos_token_id=tok.token_to_id("<|im_end|>"),
    )
    return save_model("tiny-llama", config, tok, 0)


def qwen2(tok):
    """Qwen2: biases on q/k/v (not o), untied output head."""
    config = Qwen2Config(
        vocab_size=tok.get_vocab_size(), hidden_size=64, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, rms_norm_eps=1e-6,
        rope_theta=1000000.0, tie_word_embeddings=False, use_sliding_window=False,
        bos_token_id=tok.token_to_id("<|begin_of_text|>"), eos_token_id=tok.token_to_id("<|im_end|>"),
    )
    return save_model("tiny-qwen2", config, tok, 1)


def qwen3(tok):
    """Qwen3: RMSNorm on each head's queries and keys, explicit head_dim, tied head."""
    config = Qwen3Config(
        vocab_size=tok.get_vocab_size(), hidden_size=64, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=24, max_position_embeddings=256, rms_norm_eps=1e-6,
        rope_theta=1000000.0, tie_word_embeddings=True, use_sliding_window=False,
        bos_token_id=tok.token_to_id("<|begin_of_text|>"), eos_token_id=tok.token_to_id("<|im_end|>"),
    )
    return save_model("tiny-qwen3", config, tok, 2)


def mixtral(tok):
    """Mixtral: every MLP a mixture of 4 SwiGLU experts, 2 per token (renormalized)."""
    config = MixtralConfig(
        vocab_size=tok.get_vocab_size(), hidden_size=64, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, rms_norm_eps=1e-5,
        rope_theta=1000000.0, num_local_experts=4, num_experts_per_tok=2, tie_word_embeddings=False,
        sliding_window=None, bos_token_id=tok.token_to_id("<|begin_of_text|>"), eos_token_id=tok.token_to_id("<|im_end|>"),
    )
    return save_model("tiny-mixtral", config, tok, 8, eager=True)


def mixtral_mlx(tok):
    """tiny-mixtral converted by the real mlx_lm.convert (float32, not quantized): the layout
    mlx-community checkpoints have, experts stacked under block_sparse_moe.switch_mlp. Its
    references are tiny-mixtral's (same weights). Needs `pip install "mlx[cpu]" mlx-lm`."""
    import shutil

    from mlx_lm import convert

    src = os.path.join(ROOT, "models", "tiny-mixtral")
    if not os.path.exists(src):
        mixtral(tok)
    out = os.path.join(ROOT, "models", "tiny-mixtral-mlx")
    shutil.rmtree(out, ignore_errors=True)
    convert(src, out, dtype="float32")
    return out


def qwen3_moe(tok):
    """Qwen3-MoE: q/k norms; layer 0 a mixture of 8 experts (2 per token, probabilities not
    renormalized), layer 1 dense (mlp_only_layers). Heads of 32 features, so the quantized KV
    cache (groups of 32) applies."""
    config = Qwen3MoeConfig(
        vocab_size=tok.get_vocab_size(), hidden_size=64, intermediate_size=96, moe_intermediate_size=32,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=32, max_position_embeddings=256,
        rms_norm_eps=1e-6, rope_theta=1000000.0, num_experts=8, num_experts_per_tok=2, norm_topk_prob=False,
        decoder_sparse_step=1, mlp_only_layers=[1], tie_word_embeddings=True, use_sliding_window=False,
        bos_token_id=tok.token_to_id("<|begin_of_text|>"), eos_token_id=tok.token_to_id("<|im_end|>"),
    )
    # Qwen3-MoE checkpoints on the hub say num_experts and rope_theta (mlx-lm needs them).
    return save_model("tiny-qwen3-moe", config, tok, 9, eager=True, hub_keys={"num_experts": 8, "rope_theta": 1000000.0})


def gemma2(tok):
    """Gemma 2: sliding-window layers alternating with global ones, attention and final logit
    soft-capping (small caps so tanh bends), query_pre_attn_scalar unlike head_dim, 1 + w norms."""
    config = Gemma2Config(
        vocab_size=tok.get_vocab_size(), hidden_size=64, intermediate_size=96, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=256, rms_norm_eps=1e-6,
        rope_theta=10000.0, query_pre_attn_scalar=24, sliding_window=8, attn_logit_softcapping=5.0,
        final_logit_softcapping=10.0, hidden_activation="gelu_pytorch_tanh", tie_word_embeddings=True,
        bos_token_id=tok.token_to_id("<|begin_of_text|>"), eos_token_id=tok.token_to_id("<|im_end|>"), pad_token_id=None,
    )
    return save_model("tiny-gemma2", config, tok, 6, long_prompt=True, gemma_norms=True, eager=True)


def gemma3_text_config(tok):
    """Gemma 3 text: q/k norms, a sliding/global layer pattern, a local rope base and scaled global rope."""
    return Gemma3TextConfig(
        vocab_size=tok.get_vocab_size(), hidden_size=64, intermediate_size=96, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, head_dim=24, max_position_embeddings=256, rms_norm_eps=1e-6,
        query_pre_attn_scalar=16, sliding_window=8,
        layer_types=["sliding_attention", "sliding_attention", "full_attention", "sliding_attention"],
        rope_parameters={
            "full_attention": {"rope_type": "linear", "factor": 4.0, "rope_theta": 100000.0},
            "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
        },
        tie_word_embeddings=True,
        bos_token_id=tok.token_to_id("<|begin_of_text|>"), eos_token_id=tok.token_to_id("<|im_end|>"), pad_token_id=None,
    )


def gemma3(tok):
    return save_model("tiny-gemma3", gemma3_text_config(tok), tok, 8, long_prompt=True, gemma_norms=True, eager=True)


def gemma3_mm(tok):
    """The multimodal "gemma3" checkpoint layout: the text model under text_config and
    model.language_model.*, with a (tiny) SigLIP vision tower and projector ferrox skips."""
    vision = SiglipVisionConfig(
        hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=28, patch_size=14
    )
    config = Gemma3Config(
        text_config=gemma3_text_config(tok).to_dict(), vision_config=vision.to_dict(), mm_tokens_per_image=4,
        boi_token_index=tok.token_to_id("<|im_start|>"), eoi_token_index=tok.token_to_id("<|eot|>"),
        image_token_index=tok.get_vocab_size() - 1, tie_word_embeddings=True,
        bos_token_id=tok.token_to_id("<|begin_of_text|>"), eos_token_id=tok.token_to_id("<|im_end|>"), pad_token_id=None,
    )
    return save_model("tiny-gemma3-mm", config, tok, 5, long_prompt=True, gemma_norms=True, eager=True)


def phi3(tok):
    """Phi-3 with LongRoPE: fused qkv_proj and gate_up_proj; the original context (3) is shorter
    than the prompt, so the long factors and the attention factor apply, and "short_logits"
    checks the short factors on the first 3 tokens."""
    config = Phi3Config(
        vocab_size=tok.get_vocab_size(), hidden_size=64, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=48, original_max_position_embeddings=3,
        rms_norm_eps=1e-5, tie_word_embeddings=False, sliding_window=None,
        rope_parameters={
            "rope_type": "longrope", "rope_theta": 10000.0,
            "short_factor": [1.0, 1.1, 1.3, 1.6, 2.0, 2.5, 3.0, 4.0],
            "long_factor": [1.0, 1.5, 2.5, 4.0, 6.0, 9.0, 13.0, 20.0],
        },
        bos_token_id=tok.token_to_id("<|begin_of_text|>"), eos_token_id=tok.token_to_id("<|im_end|>"), pad_token_id=None,
    )
    return save_model("tiny-phi3", config, tok, 31, long_prompt=True, short_len=3, eager=True)


def phi3_swa(tok):
    """Phi-3 (Phi-4-mini style) with plain rope over half of each head, a sliding window on every
    layer and tied embeddings."""
    config = Phi3Config(
        vocab_size=tok.get_vocab_size(), hidden_size=64, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, original_max_position_embeddings=256,
        rms_norm_eps=1e-5, tie_word_embeddings=True, sliding_window=8,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.5},
        bos_token_id=tok.token_to_id("<|begin_of_text|>"), eos_token_id=tok.token_to_id("<|im_end|>"), pad_token_id=None,
    )
    return save_model("tiny-phi3-swa", config, tok, 11, long_prompt=True, eager=True)


def chat_fixtures(model_dir):
    t = AutoTokenizer.from_pretrained(model_dir)
    tools = [{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
    cases = [
        {"messages": [{"role": "user", "content": "Hello!"}], "add_generation_prompt": True},
        {"messages": [{"role": "system", "content": "You are a fox."}, {"role": "user", "content": "  Who are you? "}], "add_generation_prompt": True},
        {
            "messages": [
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello, friend."},
                {"role": "user", "content": "Tell me a story about the river: 日本語 🦊"},
            ],
            "add_generation_prompt": False,
        },
        {
            "messages": [
                {"role": "user", "content": "Weather in Paris?"},
                {"role": "assistant", "content": "", "tool_calls": [{"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
                {"role": "tool", "content": "Sunny, 21.5 °C"},
            ],
            "tools": tools,
            "add_generation_prompt": True,
        },
        # The last message left open (what mlx_lm.cache_prompt and --prefill-response render);
        # the template trims the content, so its trailing spaces go too.
        {"messages": [{"role": "user", "content": "Once upon a time  "}], "add_generation_prompt": False, "continue_final_message": True},
        {
            "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Well, the fox"}],
            "add_generation_prompt": False,
            "continue_final_message": True,
        },
    ]
    for c in cases:
        c["expected"] = t.apply_chat_template(
            c["messages"], tools=c.get("tools"), add_generation_prompt=c["add_generation_prompt"],
            continue_final_message=c.get("continue_final_message", False), tokenize=False)
    with open(os.path.join(FIX, "chat.json"), "w") as f:
        json.dump(cases, f, indent=1, ensure_ascii=False)


def detok_fixtures(bpe, spm):
    spm_dir = os.path.join(FIX, "tokenizer_spm")
    os.makedirs(spm_dir, exist_ok=True)
    spm.save(os.path.join(spm_dir, "tokenizer.json"))
    rng = random.Random(0)
    out = []
    for name, tok, text_ids in [("bpe", bpe, bpe.encode(TEXT).ids), ("spm", spm, spm.encode(TEXT).ids)]:
        n = tok.get_vocab_size()
        for i in range(12):
            if i < 4:  # real text, cut anywhere
                a = rng.randrange(len(text_ids) - 40)
                ids = text_ids[a : a + rng.randrange(5, 40)]
            else:  # random ids: partial characters, specials, byte pieces
                ids = [rng.randrange(n) for _ in range(rng.randrange(1, 40))]
            out.append({"tokenizer": name, "ids": ids, "text": tok.decode(ids, skip_special_tokens=False)})
    with open(os.path.join(FIX, "detok.json"), "w") as f:
        json.dump(out, f, indent=1, ensure_ascii=False)


BUILDERS = {
    "llama": llama, "qwen2": qwen2, "qwen3": qwen3, "gemma2": gemma2, "gemma3": gemma3, "gemma3-mm": gemma3_mm,
    "phi3": phi3, "phi3-swa": phi3_swa, "mixtral": mixtral, "mixtral-mlx": mixtral_mlx,
    "qwen3-moe": qwen3_moe,
}


def main():
    os.makedirs(FIX, exist_ok=True)
    bpe = train_bpe()
    names = sys.argv[1:] or list(BUILDERS)
    unknown = [n for n in names if n not in BUILDERS]
    if unknown:
        sys.exit(f"unknown model(s) {unknown}; choose from {list(BUILDERS)}")
    dirs = {n: BUILDERS[n](bpe) for n in names}
    if not sys.argv[1:]:
        chat_fixtures(dirs["llama"])
        detok_fixtures(bpe, train_spm())


if __name__ == "__main__":
    main()
