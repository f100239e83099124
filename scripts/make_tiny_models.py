"""Builds the tiny random-weight models ferrox ships and the references its tests compare to.

For each architecture: a small byte-level BPE tokenizer trained on the text below (with a chat
template), a config, and random weights drawn large enough that greedy continuations are
diverse (DESIGN.md, "Correctness references"), saved with Hugging Face transformers under
models/tiny-<arch>/. Then, from transformers and tokenizers (never from ferrox):

  crates/ferrox-lm/tests/fixtures/tiny-<arch>.safetensors  last-position logits (f32) of the prompt
  crates/ferrox-lm/tests/fixtures/tiny-<arch>.json          prompt ids, 24 greedy ids, top-1/top-2 gaps
  crates/ferrox-lm/tests/fixtures/chat.json                 apply_chat_template renderings
  crates/ferrox-lm/tests/fixtures/detok.json                tokenizers' decode of random id streams
  crates/ferrox-lm/tests/fixtures/tokenizer_spm/            a SentencePiece-style tokenizer for the same

Run: python3 scripts/make_tiny_models.py   (numpy, torch, transformers 5, tokenizers)
"""

import json
import os
import random

import numpy as np
import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, PreTrainedTokenizerFast, Qwen2Config, Qwen3Config

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
FIX = os.path.join(ROOT, "crates/ferrox-lm/tests/fixtures")
PROMPT = "Once upon a time"
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


def big_init(model, seed):
    """Redraws weights: matrices ~ N(0, (2/sqrt(fan_in))^2), norms around 1, biases perturbed."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 2:
                fan_in = p.shape[1]
                if "embed_tokens" in name:
                    fan_in = 4  # embeddings feed a norm: any scale works, keep them O(1)
                p.copy_(torch.randn(p.shape, generator=g) * (2.0 / fan_in**0.5))
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


def save_model(name, config, tok, seed):
    out = os.path.join(ROOT, "models", name)
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    big_init(model, seed)
    model.eval()
    model.save_pretrained(out, safe_serialization=True)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|begin_of_text|>", eos_token="<|im_end|>")
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(out)
    with open(os.path.join(out, "generation_config.json"), "w") as f:
        json.dump({"bos_token_id": config.bos_token_id, "eos_token_id": [tok.token_to_id("<|im_end|>"), tok.token_to_id("<|end_of_text|>")]}, f, indent=2)
    # Reload from disk, as ferrox will.
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    ids = AutoTokenizer.from_pretrained(out)(PROMPT)["input_ids"]
    logits, greedy, gaps = greedy_references(model, ids)
    save_file({"logits": torch.from_numpy(logits).contiguous()}, os.path.join(FIX, f"{name}.safetensors"))
    with open(os.path.join(FIX, f"{name}.json"), "w") as f:
        json.dump({"prompt": PROMPT, "prompt_ids": ids, "greedy": greedy, "gaps": gaps}, f, indent=1)
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
    ]
    for c in cases:
        c["expected"] = t.apply_chat_template(c["messages"], tools=c.get("tools"), add_generation_prompt=c["add_generation_prompt"], tokenize=False)
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


def main():
    os.makedirs(FIX, exist_ok=True)
    bpe = train_bpe()
    d = llama(bpe)
    qwen2(bpe)
    qwen3(bpe)
    chat_fixtures(d)
    detok_fixtures(bpe, train_spm())


if __name__ == "__main__":
    main()
