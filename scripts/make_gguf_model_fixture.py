"""GGUF model fixtures for ferrox-lm's GGUF import (crates/ferrox-lm/tests/gguf.rs).

Usage: python scripts/make_gguf_model_fixture.py /path/to/llama.cpp
  (llama.cpp's source tree: its convert_hf_to_gguf.py, conversion/ and gguf-py/; the copy that
  ships in llama-cpp-python's sdist works. Needs torch, transformers, gguf, numpy, safetensors,
  tokenizers, sentencepiece.)

Writes crates/ferrox-lm/tests/fixtures/gguf/:
- tiny-llama-f32.gguf, tiny-llama-q8_0.gguf: models/tiny-llama converted by llama.cpp's own
  convert_hf_to_gguf.py (--outtype f32 / q8_0). Its BPE pre-tokenizer check does not know this
  tiny tokenizer, so the script runs the converter in-process and answers "gpt2" (the
  tokenizer's pre-tokenizer is GPT-2's byte-level regex) where the converter gives up.
- tiny-llama-q4_0.gguf: the f32 file with every 2-D weight quantized to q4_0 by gguf-py's
  quants module (llama-quantize's reference rounding), metadata copied.
- tiny-llama-mixed.gguf: the same with one ggml type per kind of tensor (q4_1, f16, bf16, q8_0,
  q4_0), as mixed llama.cpp quantizations do.
- reference.safetensors / reference.json: for each quantized file, the logits of the prompt's
  last position and 24 greedy tokens from Hugging Face transformers running tiny-llama with the
  file's weights dequantized by gguf-py (gguf.quants.dequantize) and llama.cpp's Q/K row
  permutation undone in NumPy; and the tokenizer cases: sample texts encoded by the original
  tokenizer.json (tokenizers) with their decoded text.
- tiny-spm-vocab.gguf: a GGUF holding only a SentencePiece ("llama") vocabulary (tokens, scores,
  token types, special ids) of a small BPE model trained here with sentencepiece, written as
  llama.cpp's converter writes one; reference.json holds sentencepiece's own encodings (of each
  stretch between user-defined tokens, with a space prefix each, as llama.cpp runs it).
- tiny-qwen3-f32.gguf: models/tiny-qwen3 converted the same way (no Q/K reordering for Qwen;
  per-head q/k norms; head_dim from attention.key_length).
(The f32 files' references are the existing tests/fixtures/tiny-{llama,qwen3}.{json,safetensors}.)
"""

import io
import json
import runpy
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "models/tiny-llama"
OUT = ROOT / "crates/ferrox-lm/tests/fixtures/gguf"
PROMPT = "Once upon a time"
TEXTS = [
    "Once upon a time",
    "Hello world! How are you?",
    "  leading spaces and trailing  ",
    "numbers 3 33 333 3333 and 3.14159",
    "tabs\tand\nnew lines\n\n",
    "café naïve résumé — “quotes”",
    "日本語のテキスト and emoji 🦙🚀",
    "<|im_start|>user\nhi<|im_end|>",
    "don't won't I'll we've they're",
    "",
]


def convert(llama_cpp, outtype, outfile, model=MODEL):
    """Runs llama.cpp's convert_hf_to_gguf.py in this process (see the module docs)."""
    sys.path.insert(0, str(llama_cpp))
    import conversion.base as base

    original = base.TextModel.get_vocab_base_pre

    def pre(self, tokenizer):
        try:
            return original(self, tokenizer)
        except NotImplementedError:
            return "gpt2"

    base.TextModel.get_vocab_base_pre = pre
    argv = sys.argv
    sys.argv = ["convert_hf_to_gguf.py", str(model), "--outtype", outtype, "--outfile", str(outfile)]
    try:
        runpy.run_path(str(Path(llama_cpp) / "convert_hf_to_gguf.py"), run_name="__main__")
    finally:
        sys.argv = argv
        base.TextModel.get_vocab_base_pre = original


def requantize(src, dst, type_of):
    """Copies GGUF `src` to `dst`, 2-D tensors re-quantized to `type_of(name)` (None: kept)."""
    import gguf

    r = gguf.GGUFReader(str(src))
    arch = r.fields["general.architecture"].contents()
    w = gguf.GGUFWriter(str(dst), arch)
    for key, f in r.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue
        vtype = f.types[0]
        sub = f.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        w.add_key_value(key, f.contents(), vtype, sub)
    for t in r.tensors:
        data = np.array(t.data)
        qtype = type_of(t.name) if data.ndim == 2 else None
        if qtype is None:
            w.add_tensor(t.name, data)
        else:
            w.add_tensor(t.name, gguf.quants.quantize(data.astype(np.float32), qtype), raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def unpermute(w, heads):
    """Undoes convert_hf_to_gguf's rope permutation of Q/K rows (per head: halves interleaved)."""
    rows = w.shape[0]
    return w.reshape(heads, rows // heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def hf_state_dict(path, cfg):
    """The GGUF's tensors dequantized by gguf-py, under Hugging Face names."""
    import gguf

    r = gguf.GGUFReader(str(path))
    names = {
        "token_embd": "model.embed_tokens",
        "output_norm": "model.norm",
        "output": "lm_head",
        "attn_q": "self_attn.q_proj",
        "attn_k": "self_attn.k_proj",
        "attn_v": "self_attn.v_proj",
        "attn_output": "self_attn.o_proj",
        "ffn_gate": "mlp.gate_proj",
        "ffn_up": "mlp.up_proj",
        "ffn_down": "mlp.down_proj",
        "attn_norm": "input_layernorm",
        "ffn_norm": "post_attention_layernorm",
    }
    sd = {}
    for t in r.tensors:
        if t.name == "rope_freqs.weight":
            continue
        x = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32).reshape(tuple(reversed(t.shape)))
        parts = t.name.split(".")
        if parts[0] == "blk":
            kind = parts[2]
            if kind == "attn_q":
                x = unpermute(x, cfg.num_attention_heads)
            if kind == "attn_k":
                x = unpermute(x, cfg.num_key_value_heads)
            name = f"model.layers.{parts[1]}.{names[kind]}.weight"
        else:
            name = f"{names[parts[0]]}.weight"
        sd[name] = x
    return sd


def reference(path, prompt_ids):
    """transformers' last logits and 24 greedy tokens for tiny-llama with `path`'s weights."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.from_pretrained(MODEL)
    model = AutoModelForCausalLM.from_pretrained(MODEL, dtype=torch.float32)
    sd = {k: torch.from_numpy(v) for k, v in hf_state_dict(path, cfg).items()}
    sd["lm_head.weight"] = sd["model.embed_tokens.weight"]
    missing, unexpected = model.load_state_dict(sd, strict=False)
    assert not unexpected and all("rotary" in m for m in missing), (missing, unexpected)
    model.eval()
    ids = list(prompt_ids)
    gaps = []
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0, -1].clone()
        first = logits
        for _ in range(24):
            top2 = torch.topk(torch.log_softmax(logits, -1), 2).values
            gaps.append(float(top2[0] - top2[1]))
            ids.append(int(logits.argmax()))
            logits = model(torch.tensor([ids])).logits[0, -1]
    return first.numpy(), ids[len(prompt_ids) :], gaps


def spm_vocab(path):
    """Trains a small SentencePiece BPE model and writes its vocabulary as a GGUF."""
    import gguf
    import sentencepiece as spm

    corpus = [
        "the quick brown fox jumps over the lazy dog",
        "once upon a time there was a little llama who lived on a hill",
        "she said hello to the world and the world said hello back",
        "numbers like 12 and 345 and 6789 appear in text",
        "café résumé naïve — unicode words",
    ] * 40
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus),
        model_writer=buf,
        vocab_size=420,
        model_type="bpe",
        byte_fallback=True,
        character_coverage=1.0,
        bos_id=1,
        eos_id=2,
        unk_id=0,
        user_defined_symbols=["<|user|>"],
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
    )
    sp = spm.SentencePieceProcessor(model_proto=buf.getvalue())
    w = gguf.GGUFWriter(str(path), "llama")
    tokens, scores, types = [], [], []
    for i in range(sp.get_piece_size()):
        tokens.append(sp.id_to_piece(i))
        scores.append(sp.get_score(i))
        if sp.is_unknown(i):
            types.append(gguf.TokenType.UNKNOWN)
        elif sp.is_control(i):
            types.append(gguf.TokenType.CONTROL)
        elif sp.is_unused(i):
            types.append(gguf.TokenType.UNUSED)
        elif sp.is_byte(i):
            types.append(gguf.TokenType.BYTE)
        elif tokens[-1] == "<|user|>":
            types.append(gguf.TokenType.USER_DEFINED)
        else:
            types.append(gguf.TokenType.NORMAL)
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_unk_token_id(0)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    w.add_add_space_prefix(True)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    texts = [t for t in TEXTS if "<|" not in t] + ["hello <|user|> world", "the little llama"]
    cases = []
    user = sp.piece_to_id("<|user|>")
    for t in texts:
        # llama.cpp splits the text at user-defined (and control) tokens and tokenizes each piece
        # with sentencepiece's dummy prefix (a space after every such token included).
        ids = [1]
        for i, piece in enumerate(t.split("<|user|>")):
            if i:
                ids.append(user)
            if piece or i == 0:
                ids += sp.encode(piece)
        cases.append({"text": t, "ids": ids, "decoded": sp.decode(ids[1:])})
    return cases


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    llama_cpp = Path(sys.argv[1])
    OUT.mkdir(parents=True, exist_ok=True)
    # First, so that the converter imports its own gguf-py.
    convert(llama_cpp, "f32", OUT / "tiny-llama-f32.gguf")
    convert(llama_cpp, "q8_0", OUT / "tiny-llama-q8_0.gguf")
    convert(llama_cpp, "f32", OUT / "tiny-qwen3-f32.gguf", ROOT / "models/tiny-qwen3")

    from gguf import GGMLQuantizationType as T
    from safetensors.numpy import save_file
    from tokenizers import Tokenizer

    requantize(OUT / "tiny-llama-f32.gguf", OUT / "tiny-llama-q4_0.gguf", lambda name: T.Q4_0)
    mixed = {"attn_q": T.Q4_1, "attn_k": T.F16, "attn_v": T.Q8_0, "attn_output": T.BF16, "token_embd": T.Q4_1}
    requantize(
        OUT / "tiny-llama-f32.gguf",
        OUT / "tiny-llama-mixed.gguf",
        lambda name: next((t for k, t in mixed.items() if f"{k}.weight" in name), T.Q4_0),
    )

    tok = Tokenizer.from_file(str(MODEL / "tokenizer.json"))
    prompt_ids = tok.encode(PROMPT).ids
    ref = {"prompt_ids": prompt_ids, "models": {}, "tokenizer": []}
    tensors = {}
    for name in ["q8_0", "q4_0", "mixed"]:
        logits, greedy, gaps = reference(OUT / f"tiny-llama-{name}.gguf", prompt_ids)
        tensors[f"{name}.logits"] = logits
        ref["models"][name] = {"greedy": greedy, "gaps": gaps}
    for t in TEXTS:
        ids = tok.encode(t).ids
        ref["tokenizer"].append({"text": t, "ids": ids, "decoded": tok.decode(ids, skip_special_tokens=False)})
    ref["spm"] = spm_vocab(OUT / "tiny-spm-vocab.gguf")
    save_file(tensors, str(OUT / "reference.safetensors"))
    (OUT / "reference.json").write_text(json.dumps(ref, indent=1, ensure_ascii=False) + "\n")
    print("wrote", OUT)


if __name__ == "__main__":
    main()
