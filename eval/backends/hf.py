"""The transformers backend: batched A-D logit scoring with a per-subject shared-prefix KV cache,
and batched greedy generation. Runs on CPU or one GPU.

Few-shot prompts of one subject share a long prefix (header + 5 solved dev questions, ~80% of the
tokens). The prefix is run once, and only the questions run on top of its KV cache (broadcast,
not copied, across rows): packed several to a row with a block mask (SDPA models: next to no
padding, attention spans only the prefix and the question's row) or as a padded batch (other
attention kernels). The token sequence is exactly the no-reuse one: the
full prompt is tokenised, and a question whose tokens do not start with the prefix's tokens (a BPE
merge across the boundary) runs without the cache. `prefix_cache=False` gives the plain path (tested equal).

A model whose FFN mixes positions (soft_moe: its causal slot average is a running sum over the row)
is scored without any of that: a KV cache carries attention state only, so a question on a cached
prefix, several questions packed in one row, a left-padded row or cached generation would each feed
that sum something else than the plain forward pass does. Such a model gets plain rows, one prompt
per generate call without a cache (exact, slower; tests/stages/test_eval_hf_exact.py).
"""
from __future__ import annotations

import copy

import torch

from core import models
from core.compat import cache_keyword, output_cache
from core.runs import RunError


def load_tokenizer(model_path):
    """The tokenizer of a model folder (or hub id) to evaluate: the folder must hold weights too (a
    tokenizer-only folder is a mistake caught here, before any scoring), and a tokenizer without a
    pad token pads with its eos token (batches need one)."""
    models.check_weights(model_path)
    tok = models.load_tokenizer(model_path)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def letter_token_ids(tokenizer) -> list[int]:
    """Token ids of the bare letters A-D (the answer follows "答案：" with no space)."""
    ids = []
    for letter in "ABCD":
        enc = tokenizer.encode(letter, add_special_tokens=False)
        if len(enc) != 1:
            raise RunError(f"the tokenizer splits {letter!r} into {len(enc)} tokens; logit scoring needs one")
        ids.append(enc[0])
    return ids


def bos_ids(tokenizer) -> list[int]:
    """[bos] when the tokenizer adds one by default (Llama/MiniCPM-style): plain-text prompts are scored
    the way the model saw documents in pretraining. Chat prompts carry their own template tokens."""
    bos = tokenizer.bos_token_id
    if bos is None:
        return []
    enc = tokenizer("A").input_ids
    return [bos] if enc and enc[0] == bos else []


def pick_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def pick_dtype(dtype: str, device: str):
    if dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    return {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
            "float16": torch.float16, "fp16": torch.float16}[dtype]


# Attention cost of one (query, key) pair relative to one token through the matmuls, measured on
# CPU with SDPA at ~0.1B (0.29 us vs 1.1 ms): it trades longer rows (less padding) against attention.
ATTN_PAIR_COST = 2.6e-4


def pack_rows(lengths: list[int], n_prefix: int, row_tokens: int = 0) -> list[list[int]]:
    """Group question indices into rows (first fit, longest first) of at most `row_tokens` tokens,
    or, with row_tokens=0, the row length of least estimated cost: padded tokens times
    (1 + ATTN_PAIR_COST * keys per query), the keys being the prefix plus the row."""
    longest = max(lengths)
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])

    def first_fit(cap):
        bins, fill = [], []
        for i in order:
            j = next((j for j, f in enumerate(fill) if f + lengths[i] <= cap), None)
            if j is None:
                bins.append([])
                fill.append(0)
                j = len(bins) - 1
            bins[j].append(i)
            fill[j] += lengths[i]
        return bins, max(fill)

    if row_tokens > 0:
        return first_fit(max(row_tokens, longest))[0]
    best = None
    # Rows past ~1k tokens never pay: attention to the row outgrows the padding it saves.
    for cap in sorted({longest, *range(max(longest, 64), max(longest, min(sum(lengths), 1024)) + 32, 32)}):
        bins, width = first_fit(cap)
        cost = len(bins) * width * (1 + ATTN_PAIR_COST * (n_prefix + width))
        if best is None or cost < best[0]:
            best = (cost, bins)
        if len(bins) == 1:
            break
    return best[1]


# FFN modules whose output at a position depends on other positions of the row (not only on the
# hidden state there), so no KV cache carries their state.
POSITION_MIXING_FFNS = (models.CausalSoftMoE,)


def position_local(model) -> bool:
    """Whether every FFN of `model` is position-local (prefix reuse, packing and cached generation exact)."""
    return not any(isinstance(m, POSITION_MIXING_FFNS) for m in model.modules())


# Our name for transformers' SDPA attention plus the `sdpa_gqa` switch below (registered with
# transformers' attention and mask registries under this new name; nothing existing is changed).
SDPA_GQA = "zhllm_sdpa_gqa"


def sdpa_gqa_attention(module, query, key, value, attention_mask, *, sdpa_gqa: bool = False, **kwargs):
    """transformers' SDPA attention; a forward called with `sdpa_gqa=True` (the packed rows on CPU)
    hands the grouped K/V heads to SDPA as they are (`enable_gqa`) where transformers would copy
    them up to the query heads (`repeat_kv`, its choice whenever there is a mask). On CPU SDPA's GQA
    gives the same logits, ~5% faster at ~0.1B; on CUDA a mask plus GQA can fall back to the math
    kernel, so there it stays off. The packed rows always carry their 4D mask, so is_causal is off
    (as transformers sets it when a mask is given)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    if not sdpa_gqa or getattr(module, "num_key_value_groups", 1) <= 1:   # no grouped heads: nothing to do
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    out = torch.nn.functional.scaled_dot_product_attention(
        query, key, value, attn_mask=attention_mask, dropout_p=kwargs.get("dropout", 0.0),
        scale=kwargs.get("scaling"), is_causal=False, enable_gqa=True)
    return out.transpose(1, 2).contiguous(), None


def use_sdpa_gqa(model) -> bool:
    """Switch an SDPA model to `SDPA_GQA` (the same attention until a forward passes sdpa_gqa=True);
    False when the model cannot take it (e.g. remote code without transformers' attention registry)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
    AttentionInterface.register(SDPA_GQA, sdpa_gqa_attention)
    AttentionMaskInterface.register(SDPA_GQA, sdpa_mask)    # masks are built exactly as for "sdpa"
    model.set_attn_implementation(SDPA_GQA)
    return getattr(model.config, "_attn_implementation", None) == SDPA_GQA


class HFBackend:
    name = "hf"

    def __init__(self, model_path, device: str = "auto", dtype: str = "auto", batch_size: int = 8,
                 prefix_cache: bool = True, packing: bool = True, pack_row_tokens: int = 0, model=None,
                 tokenizer=None):
        self.device = pick_device(device)
        self.dtype = pick_dtype(dtype, self.device)
        self.tokenizer = tokenizer or load_tokenizer(model_path)
        if model is None:
            model = models.load_model(model_path, dtype=self.dtype)
        self.model = model.to(self.device).eval()
        self.batch_size = max(1, int(batch_size))
        self.prefix_cache = prefix_cache
        self.pack_row_tokens = max(0, int(pack_row_tokens))   # packed row length; 0: chosen per batch (pack_rows)
        self.letter_ids = letter_token_ids(self.tokenizer)
        self.bos = bos_ids(self.tokenizer)
        self._prefix: tuple[str, list[int], object] | None = None   # (text, ids, cache) of the last subject
        # The decoder stack without the LM head, so only the last position of each row is projected.
        base = getattr(self.model, getattr(self.model, "base_model_prefix", ""), None)
        self._base = base if base is not None and base is not self.model else None
        self._head = self.model.get_output_embeddings()
        # transformers 5.24 renamed `past_key_values` to `cache`; remote-code models keep the old name.
        self._cache_kw = cache_keyword(self._base or self.model)
        # Packing several questions into one row needs a custom 4D boolean mask, which the SDPA
        # attention of standard transformers models honours (flash-attention kernels do not).
        attn = getattr(self.model.config, "_attn_implementation", None)
        self.packing = packing and attn == "sdpa" and self._base is not None and self._head is not None
        self.position_local = position_local(self.model)
        if not self.position_local:    # see the module docstring: exact, without reuse
            self.prefix_cache = self.packing = False
        self._gqa = attn == "sdpa" and self.device == "cpu" and use_sdpa_gqa(self.model)

    # ---- logits -------------------------------------------------------------------------------------
    def _last_logits(self, ids: list[list[int]], cache=None) -> torch.Tensor:
        """Letter logits at the last real token of each right-padded row. Right padding is exact
        without a mask: with causal attention no real token sees the pads that follow it."""
        lens = [len(x) for x in ids]
        width = max(lens)
        pad = self.tokenizer.pad_token_id
        batch = torch.tensor([x + [pad] * (width - len(x)) for x in ids], device=self.device)
        rows, idx = list(range(len(ids))), [n - 1 for n in lens]   # index lists: taken on any device
        if self._base is not None and self._head is not None:
            hidden = self._base(input_ids=batch, use_cache=cache is not None, **{self._cache_kw: cache}).last_hidden_state
            logits = self._head(hidden[rows, idx])
        else:
            logits = self.model(input_ids=batch, use_cache=cache is not None, **{self._cache_kw: cache}).logits[rows, idx]
        return logits[:, self.letter_ids].float()

    def _prefix_state(self, prefix: str):
        if self._prefix is None or self._prefix[0] != prefix:
            ids = self.bos + self.tokenizer.encode(prefix, add_special_tokens=False)
            with torch.inference_mode():
                out = (self._base or self.model)(input_ids=torch.tensor([ids], device=self.device), use_cache=True)
            self._prefix = (prefix, ids, output_cache(out))
        return self._prefix[1], self._prefix[2]

    def _cache_for(self, cache, rows: int):
        """A copy of the one-row prefix cache for `rows` rows. The prefix tensors are broadcast views
        (`expand`, no copy): each layer's update concatenates the new keys onto them anyway."""
        c = copy.deepcopy(cache)
        layers = getattr(c, "layers", None)
        if layers and all(torch.is_tensor(getattr(l, "keys", None)) and torch.is_tensor(getattr(l, "values", None))
                          for l in layers):
            for l in layers:
                l.keys = l.keys.expand(rows, -1, -1, -1)
                l.values = l.values.expand(rows, -1, -1, -1)
        elif rows > 1:
            c.batch_repeat_interleave(rows)
        return c

    def _batched_logits(self, rows: list[list[int]], cache) -> torch.Tensor:
        """Questions as a right-padded batch on the prefix cache broadcast per row."""
        return self._last_logits(rows, self._cache_for(cache, len(rows)))

    def _packed_logits(self, rows: list[list[int]], cache, n: int) -> torch.Tensor:
        """Questions packed several to a row after the prefix (rows from `pack_rows`): next to no
        padding, and each question's attention spans the prefix plus its own row only, not every
        packed token (one long row made attention ~30% of the time). A 4D mask lets each question
        see the prefix and its own earlier tokens; its positions restart at n, so it computes
        exactly what it would alone."""
        bins = pack_rows([len(r) for r in rows], n, self.pack_row_tokens)
        fill = [sum(len(rows[i]) for i in members) for members in bins]
        R, T = len(bins), max(fill)
        pad = self.tokenizer.pad_token_id
        ids = torch.full((R, T), pad, dtype=torch.long)
        pos = torch.full((R, T), n, dtype=torch.long)
        mask = torch.zeros(R, 1, T, n + T, dtype=torch.bool)
        mask[..., :n] = True                # everyone (pads too: no all-masked rows) sees the prefix
        row_of, end_of = [0] * len(rows), [0] * len(rows)
        for b, members in enumerate(bins):
            o = 0
            for i in members:
                L = len(rows[i])
                ids[b, o:o + L] = torch.tensor(rows[i])
                pos[b, o:o + L] = torch.arange(n, n + L)
                mask[b, 0, o:o + L, n + o:n + o + L] = torch.ones(L, L, dtype=torch.bool).tril()
                row_of[i], end_of[i] = b, o + L - 1
                o += L
        dev = self.device
        gqa = {"sdpa_gqa": True} if self._gqa else {}
        hidden = self._base(input_ids=ids.to(dev), position_ids=pos.to(dev), attention_mask=mask.to(dev),
                            use_cache=True, **{self._cache_kw: self._cache_for(cache, R)}, **gqa).last_hidden_state
        last = hidden[row_of, end_of]
        return self._head(last)[:, self.letter_ids].float()

    @torch.inference_mode()
    def score_subject(self, prefix: str, suffixes: list[str]) -> list[list[float]]:
        """Logits of A/B/C/D after prefix+suffix for each suffix (same order)."""
        enc = self.tokenizer([prefix + s for s in suffixes], add_special_tokens=False).input_ids
        full = [self.bos + ids for ids in enc]
        out: list[list[float] | None] = [None] * len(full)
        plain = list(range(len(full)))
        if self.prefix_cache and prefix:
            p_ids, cache = self._prefix_state(prefix)
            n = len(p_ids)
            reuse = [i for i, f in enumerate(full) if f[:n] == p_ids and len(f) > n]
            plain = [i for i in plain if i not in set(reuse)]
            # One forward takes as many tokens as batch_size full prompts would (small matmuls are
            # slow on CPU); questions alone are ~5x shorter, so ~5x more of them go in.
            reuse.sort(key=lambda i: -len(full[i]))
            budget = self.batch_size * (len(full[reuse[0]]) if reuse else 1)
            chunks, cur, used = [], [], 0
            for i in reuse:
                q_len = len(full[i]) - n
                if cur and used + q_len > budget:
                    chunks.append(cur)
                    cur, used = [], 0
                cur.append(i)
                used += q_len
            if cur:
                chunks.append(cur)
            for chunk in chunks:
                rows = [full[i][n:] for i in chunk]
                logits = self._packed_logits(rows, cache, n) if self.packing else self._batched_logits(rows, cache)
                for i, row in zip(chunk, logits.tolist()):
                    out[i] = row
        # Longest first so rows of one batch have similar lengths (less padding).
        plain.sort(key=lambda i: -len(full[i]))
        for s in range(0, len(plain), self.batch_size):
            chunk = plain[s:s + self.batch_size]
            for i, row in zip(chunk, self._last_logits([full[i] for i in chunk]).tolist()):
                out[i] = row
        return out  # type: ignore[return-value]

    # ---- generation ---------------------------------------------------------------------------------
    @torch.inference_mode()
    def generate(self, prompts: list[str], max_new_tokens: int) -> list[str]:
        tok = self.tokenizer
        eos = [t for t in {tok.eos_token_id, tok.convert_tokens_to_ids("<|im_end|>")} if isinstance(t, int) and t >= 0]
        texts: list[str] = []
        # A position-mixing FFN: one prompt per call (no pads in its running sum), no cache (each
        # step recomputes the row, as the plain forward pass does).
        step = self.batch_size if self.position_local else 1
        for s in range(0, len(prompts), step):
            chunk = prompts[s:s + step]
            # Left padding: generation continues from the right edge of every row.
            enc = tok(chunk, return_tensors="pt", padding=True, padding_side="left",
                      add_special_tokens=False).to(self.device)
            gen = self.model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                      eos_token_id=eos or None, pad_token_id=tok.pad_token_id,
                                      temperature=None, top_p=None, top_k=None, use_cache=self.position_local)
            new = gen[:, enc["input_ids"].shape[1]:]
            texts += tok.batch_decode(new, skip_special_tokens=True)
        return texts

    def num_params(self) -> int:
        return models.count_parameters(self.model)
