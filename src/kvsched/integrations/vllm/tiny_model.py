"""A tiny random-weight Llama, built locally with transformers (no download), for engine tests.

Its outputs are meaningless; what matters for scheduling is that it is a real decoder whose KV
cache vLLM manages in paged blocks. Prompts are token ids (run vLLM with
``skip_tokenizer_init=True``) and output lengths are fixed (``ignore_eos=True`` with
``max_tokens``).
"""

from __future__ import annotations

from pathlib import Path

TINY_VOCAB_SIZE = 512


def build_tiny_llama(directory: str | Path, *, hidden_size: int = 128, num_layers: int = 4,
                     num_heads: int = 4, num_kv_heads: int = 2, vocab_size: int = TINY_VOCAB_SIZE,
                     max_position_embeddings: int = 4096, seed: int = 0) -> Path:
    """Save a random-weight `LlamaForCausalLM` (bfloat16) to `directory`; return the path.

    Idempotent: a directory that already holds a ``config.json`` is left as it is.
    """
    directory = Path(directory)
    if (directory / "config.json").exists():
        return directory
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab_size, hidden_size=hidden_size,
                         intermediate_size=2 * hidden_size, num_hidden_layers=num_layers,
                         num_attention_heads=num_heads, num_key_value_heads=num_kv_heads,
                         max_position_embeddings=max_position_embeddings, bos_token_id=1,
                         eos_token_id=2, tie_word_embeddings=False)
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    return directory


def kv_bytes_per_block(block_size: int = 16, *, num_layers: int = 4, num_kv_heads: int = 2,
                       head_dim: int = 32, dtype_bytes: int = 2) -> int:
    """Bytes of K and V for one block of the tiny model (all layers)."""
    return 2 * num_layers * num_kv_heads * head_dim * block_size * dtype_bytes


_TOKENIZER_TEXT = (
    "the quick brown fox jumps over the lazy dog. a scheduler decides which requests run in each "
    "iteration under a limit on the key value cache. yes no maybe true false null 0 1 2 3 4 5 6 7 8 9 "
    '{"name": "value", "count": 12, "ok": true} [1, 2, 3] user assistant system: hello world. '
)


def build_tiny_tokenizer(directory: str | Path, *, vocab_size: int = TINY_VOCAB_SIZE) -> Path:
    """Save a byte-level BPE tokenizer of at most `vocab_size` tokens to `directory` (no download).

    Trained here on a few sentences: ``<unk>``, ``<s>`` and ``</s>`` are ids 0, 1, 2 (the tiny
    Llama's bos and eos), then the 256 bytes, then merges. Byte-level, so every string encodes,
    and grammar back ends (xgrammar) can read its vocabulary: enough for the OpenAI-compatible
    server, text prompts, chat (a plain chat template) and structured outputs.
    """
    directory = Path(directory)
    if (directory / "tokenizer.json").exists():
        return directory
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator([_TOKENIZER_TEXT] * 8, vocab_size=vocab_size, min_frequency=1,
                            special_tokens=["<unk>", "<s>", "</s>"], show_progress=False)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, bos_token="<s>", eos_token="</s>",
                                        unk_token="<unk>", model_max_length=4096)
    tokenizer.chat_template = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                               "{% if add_generation_prompt %}assistant: {% endif %}")
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(directory)
    return directory
