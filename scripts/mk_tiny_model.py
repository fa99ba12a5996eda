"""Build a tiny random-weight Llama checkpoint that a real vLLM can serve, fully offline.

    python scripts/mk_tiny_model.py OUT_DIR [--hidden 256 --layers 2 ...]

Theory of operation
-------------------
vLLM loads a Hugging Face style folder: ``config.json`` (architecture and sizes),
``model.safetensors`` (weights), ``tokenizer.json`` + ``tokenizer_config.json`` (a fast
tokenizer), a chat template and ``generation_config.json``. None of that needs torch or a
model hub, so this script makes every file itself:

1. Tokenizer: a byte-level BPE trained with the ``tokenizers`` package on text every Python
   install carries (the standard library's own ``.py`` sources), with Llama-3-like special
   tokens and a post-processor that prepends BOS.
2. Weights: normal(0, 0.02) from a seeded numpy generator (norm weights are ones), rounded to
   bfloat16 and written in the safetensors layout (8-byte little-endian header length, JSON
   header with byte offsets, then raw little-endian tensor bytes).

The output is deterministic for a given Python stdlib and seed. Head size (hidden / heads)
must be one vLLM's CPU attention kernels support; the defaults give 64.
Needs only numpy and tokenizers.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

CPU_HEAD_SIZES = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)
SPECIAL_TOKENS = (
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
)
BOS_ID, PAD_ID, EOS_ID = 0, 1, 4  # indexes into SPECIAL_TOKENS (ids are assigned in order)
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "<|start_header_id|>{{ message['role'] }}<|end_header_id|>\n\n"
    "{{ message['content'] }}<|eot_id|>"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
CORPUS_FILE_LIMIT = 200


@dataclass(frozen=True)
class Shape:
    """Model dimensions; ``head_dim`` is derived."""

    hidden: int
    ffn: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int
    context: int

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    def check(self) -> None:
        if self.hidden % self.heads or self.head_dim not in CPU_HEAD_SIZES:
            raise SystemExit(
                f"hidden/heads = {self.hidden}/{self.heads}: head size must be one of "
                f"{CPU_HEAD_SIZES} (vLLM CPU attention)"
            )
        if self.heads % self.kv_heads:
            raise SystemExit("heads must be a multiple of kv_heads")
        if self.vocab <= len(SPECIAL_TOKENS) + 256:
            raise SystemExit("vocab must exceed the byte alphabet plus special tokens")


def corpus_files() -> list[str]:
    """Local training text: the standard library's sources (present on every Python)."""
    stdlib = os.path.dirname(os.__file__)
    files = sorted(glob.glob(os.path.join(stdlib, "*.py")))[:CORPUS_FILE_LIMIT]
    if not files:
        raise SystemExit(f"no .py files under {stdlib} to train the tokenizer on")
    return files


def train_tokenizer(vocab: int) -> Tokenizer:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train(corpus_files(), trainer)
    if tokenizer.get_vocab_size() != vocab:
        raise SystemExit(f"tokenizer has {tokenizer.get_vocab_size()} tokens, wanted {vocab}")
    bos = SPECIAL_TOKENS[BOS_ID]
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A $B", special_tokens=[(bos, BOS_ID)]
    )
    return tokenizer


def write_json(path: Path, obj: object) -> None:
    path.write_text(json.dumps(obj, indent=1) + "\n", encoding="utf-8")


def write_tokenizer(out: Path, shape: Shape) -> None:
    train_tokenizer(shape.vocab).save(str(out / "tokenizer.json"))
    (out / "chat_template.jinja").write_text(CHAT_TEMPLATE, encoding="utf-8")
    write_json(
        out / "tokenizer_config.json",
        {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "bos_token": SPECIAL_TOKENS[BOS_ID],
            "eos_token": SPECIAL_TOKENS[EOS_ID],
            "pad_token": SPECIAL_TOKENS[PAD_ID],
            "add_bos_token": True,
            "model_max_length": shape.context,
            "chat_template": CHAT_TEMPLATE,
        },
    )


def write_configs(out: Path, shape: Shape) -> None:
    ids = {"bos_token_id": BOS_ID, "eos_token_id": EOS_ID, "pad_token_id": PAD_ID}
    write_json(
        out / "config.json",
        {
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "hidden_size": shape.hidden,
            "intermediate_size": shape.ffn,
            "num_hidden_layers": shape.layers,
            "num_attention_heads": shape.heads,
            "num_key_value_heads": shape.kv_heads,
            "head_dim": shape.head_dim,
            "hidden_act": "silu",
            "max_position_embeddings": shape.context,
            "rms_norm_eps": 1e-5,
            "rope_theta": 10000.0,
            "vocab_size": shape.vocab,
            "tie_word_embeddings": False,
            "attention_bias": False,
            "mlp_bias": False,
            "torch_dtype": "bfloat16",
            **ids,
        },
    )
    write_json(out / "generation_config.json", ids)


def weight_shapes(shape: Shape) -> dict[str, tuple[int, ...]]:
    h, d = shape.hidden, shape.head_dim
    result: dict[str, tuple[int, ...]] = {
        "model.embed_tokens.weight": (shape.vocab, h),
        "model.norm.weight": (h,),
        "lm_head.weight": (shape.vocab, h),
    }
    per_layer = {
        "input_layernorm.weight": (h,),
        "post_attention_layernorm.weight": (h,),
        "self_attn.q_proj.weight": (shape.heads * d, h),
        "self_attn.k_proj.weight": (shape.kv_heads * d, h),
        "self_attn.v_proj.weight": (shape.kv_heads * d, h),
        "self_attn.o_proj.weight": (h, shape.heads * d),
        "mlp.gate_proj.weight": (shape.ffn, h),
        "mlp.up_proj.weight": (shape.ffn, h),
        "mlp.down_proj.weight": (h, shape.ffn),
    }
    for layer in range(shape.layers):
        for name, dims in per_layer.items():
            result[f"model.layers.{layer}.{name}"] = dims
    return result


def bf16_bits(values: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bit patterns (uint16), rounding to nearest, ties to even."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
    return rounded.astype(np.uint16)


def random_weights(shape: Shape, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    weights = {}
    for name, dims in weight_shapes(shape).items():
        if name.endswith("norm.weight"):
            values = np.ones(dims, dtype=np.float32)
        else:
            values = rng.normal(0.0, 0.02, dims).astype(np.float32)
        weights[name] = bf16_bits(values)
    return weights


def write_safetensors(path: Path, tensors: dict[str, np.ndarray], dtype: str = "BF16") -> None:
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, array in tensors.items():
        header[name] = {
            "dtype": dtype,
            "shape": list(array.shape),
            "data_offsets": [offset, offset + array.nbytes],
        }
        offset += array.nbytes
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)  # keep the data section 8-byte aligned
    with path.open("wb") as f:
        f.write(len(encoded).to_bytes(8, "little"))
        f.write(encoded)
        for array in tensors.values():
            f.write(array.astype("<u2", copy=False).tobytes())


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out_dir", type=Path)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--ffn", type=int, default=512)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--kv-heads", type=int, default=2)
    p.add_argument("--vocab", type=int, default=4096)
    p.add_argument("--context", type=int, default=32768)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    shape = Shape(
        args.hidden, args.ffn, args.layers, args.heads, args.kv_heads, args.vocab, args.context
    )
    shape.check()
    out: Path = args.out_dir
    out.mkdir(parents=True, exist_ok=True)
    write_tokenizer(out, shape)
    write_configs(out, shape)
    weights = random_weights(shape, args.seed)
    write_safetensors(out / "model.safetensors", weights)
    params = sum(w.size for w in weights.values())
    print(f"{out}: {params / 1e6:.1f} M parameters, vocab {shape.vocab}, head {shape.head_dim}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
