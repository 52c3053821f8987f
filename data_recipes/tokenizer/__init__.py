"""A Chinese byte-level BPE tokenizer with ChatML specials and a chat template.

`build_tokenizer(texts, vocab_size)` returns a transformers `PreTrainedTokenizerFast`:
- byte-level BPE with Qwen2's pre-tokenizer split regex (CJK runs stay together, digits split one by one),
- specials `<|endoftext|>` (document separator, pad), `<|im_start|>`, `<|im_end|>` (eos),
- a ChatML chat template with `{% generation %}` tags so TRL's assistant-only loss works.

The data build (data_recipes/build.py, data_recipes/tokenizer_train.py) trains it; `python -m
data_recipes.tokenizer` (this package's __main__.py) runs the build's tokenizer step alone.
"""
from __future__ import annotations

from typing import Iterable

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

# Qwen2's split pattern: contractions, letter runs, single digits, punctuation runs, newlines, spaces.
SPLIT_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
               r"|\s*[\r\n]+|\s+(?!\S)|\s+")

# The same, but every Han character is its own pre-token (BPE merges stay inside one character) and
# punctuation never joins the letters after it ("答案：B" -> 答 案 ： B). For small, repetitive corpora
# such as the demo's: there BPE on whole CJK runs learns phrase tokens, so one name tokenises
# differently depending on the words after it, and "：B" becomes one token that an eval prompt ending
# in "答案：" never produces (measured: README, demo section).
SPLIT_REGEX_CJK_CHARS = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|\p{Han}|[^\r\n\p{L}\p{N}\p{P}]?[\p{L}&&[^\p{Han}]]+"
                         r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
SPLITS = {"qwen2": SPLIT_REGEX, "cjk_chars": SPLIT_REGEX_CJK_CHARS}

# ChatML. Newlines are emitted inside {{ }} because trim_blocks swallows a literal one after a tag.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'assistant' -%}"
    "{{ '<|im_start|>assistant\\n' }}"
    "{%- generation -%}{{ message['content'] + '<|im_end|>' }}{%- endgeneration -%}"
    "{{ '\\n' }}"
    "{%- else -%}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)


def _bpe_trainer_and_model(vocab_size: int, min_frequency: int, split_regex: str | None):
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE(unk_token=None, byte_fallback=False))
    if split_regex:
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(split_regex), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
    else:  # plain GPT-2-style byte BPE (the comparison baseline)
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                  special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    return tok, trainer


def build_tokenizer(texts: Iterable[str], vocab_size: int = 8000, min_frequency: int = 2,
                    chinese_split: bool = True, model_max_length: int = 4096, split: str = "qwen2"):
    """Train on `texts` and wrap as an HF fast tokenizer with the chat template. `split`: a SPLITS key."""
    from transformers import PreTrainedTokenizerFast
    tok, trainer = _bpe_trainer_and_model(vocab_size, min_frequency, SPLITS[split] if chinese_split else None)
    tok.train_from_iterator(texts, trainer=trainer)
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                 additional_special_tokens=["<|im_start|>"],
                                 model_max_length=model_max_length, clean_up_tokenization_spaces=False)
    hf.chat_template = CHAT_TEMPLATE
    return hf


def document_separator_id(tokenizer) -> int:
    return tokenizer.convert_tokens_to_ids("<|endoftext|>")
