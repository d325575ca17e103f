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
