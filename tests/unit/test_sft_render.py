"""Chat rendering and assistant-only loss masks against golden token ids built independently: each
text piece between special tokens is tokenized on its own and the specials are looked up by name."""
import pytest

from data_recipes import sft_formats


def _golden(tok, msgs):
    """(ids, labels) assembled piece by piece, not through the chat template."""
    enc = lambda s: tok.encode(s, add_special_tokens=False)  # noqa: E731
    start, end = tok.convert_tokens_to_ids("<|im_start|>"), tok.convert_tokens_to_ids("<|im_end|>")
    ids, labels = [], []
    for m in msgs:
        if m["role"] == "assistant":
            head = [start] + enc("assistant\n")
            body = enc(m["content"]) + [end]
            ids += head + body
            labels += [-100] * len(head) + body
        else:
            turn = [start] + enc(m["role"] + "\n" + m["content"]) + [end]
            ids += turn
            labels += [-100] * len(turn)
        nl = enc("\n")
        ids += nl
        labels += [-100] * len(nl)
    return ids, labels


@pytest.mark.parametrize("msgs", [
    [{"role": "user", "content": "广东省的省会是哪里？"}, {"role": "assistant", "content": "广东省的省会是广州。"}],
    [{"role": "system", "content": "你是一个乐于助人的助手。"},
     {"role": "user", "content": "你是谁？"}, {"role": "assistant", "content": "我是知微。"},
     {"role": "user", "content": "十二加七等于多少？"}, {"role": "assistant", "content": "等于十九。"}],
])
def test_render_matches_golden_ids_and_masks(tiny_tokenizer, msgs):
    ids, labels = sft_formats.render(tiny_tokenizer, msgs)
    gold_ids, gold_labels = _golden(tiny_tokenizer, msgs)
    assert ids == gold_ids
    assert labels == gold_labels
    # The loss covers exactly the assistant contents and their <|im_end|>.
    n_assistant = sum(m["role"] == "assistant" for m in msgs)
    kept = [t for t in labels if t != -100]
    assert tiny_tokenizer.decode(kept) == "".join(m["content"] + "<|im_end|>" for m in msgs if m["role"] == "assistant")
    assert kept.count(tiny_tokenizer.eos_token_id) == n_assistant


def test_truncate_keeps_start_and_drops_when_no_assistant_left(tiny_tokenizer):
    msgs = [{"role": "user", "content": "请介绍一下长城。" * 5}, {"role": "assistant", "content": "长城很长。"}]
    ids, labels = sft_formats.render(tiny_tokenizer, msgs)
    first_loss = next(i for i, l in enumerate(labels) if l != -100)
    cut = sft_formats.truncate(ids, labels, first_loss + 2)
    assert cut is not None and cut[0] == ids[:first_loss + 2] and cut[1] == labels[:first_loss + 2]
    assert sft_formats.truncate(ids, labels, first_loss) is None


def test_template_without_generation_tags_is_refused(tiny_tokenizer):
    import copy
    tok = copy.deepcopy(tiny_tokenizer)
    tok.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    with pytest.raises(ValueError, match="generation"):
        sft_formats.check_template(tok)
    sft_formats.check_template(tiny_tokenizer)


def test_training_rows_count_truncation_and_drops(tiny_tokenizer):
    from data_recipes.sft_mix import Example
    from sft.train import DataOptions, training_rows
    long_user = [{"role": "user", "content": "长" * 200}, {"role": "assistant", "content": "好。"}]
    long_answer = [{"role": "user", "content": "你好"}, {"role": "assistant", "content": "好" * 200}]
    short = [{"role": "user", "content": "你好"}, {"role": "assistant", "content": "你好！"}]
    exs = []
    for i, m in enumerate([long_user, long_answer, short]):
        ids, labels = sft_formats.render(tiny_tokenizer, m)
        exs.append(Example(m, "s", f"f.jsonl:{i + 1}", ids, labels))
    rows, counts = training_rows(exs, DataOptions(max_seq_len_tokens=40))
    assert counts["truncated"] == 1 and counts["dropped_no_assistant_tokens"] == 1
    assert len(rows) == 2 and all(len(r["input_ids"]) <= 40 for r in rows)
    assert "f.jsonl:2" in counts["truncated_where"][0]
    rows, counts = training_rows(exs, DataOptions(max_seq_len_tokens=40, truncation="drop"))
    assert counts["dropped_too_long"] == 2 and len(rows) == 1


def test_labels_equal_trl_assistant_only_loss(tmp_path, tiny_tokenizer, tiny_model_dir):
    """Our precomputed labels are what TRL's own `assistant_only_loss=True` pipeline builds."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    from core.compat import checkpointing_argument
    convs = [[{"role": "user", "content": "广东省的省会是哪里？"}, {"role": "assistant", "content": "广州。"}],
             [{"role": "user", "content": "你是谁？"}, {"role": "assistant", "content": "我是知微。"},
              {"role": "user", "content": "谁做了你？"}, {"role": "assistant", "content": "测试组。"}]]
    args = SFTConfig(output_dir=str(tmp_path), assistant_only_loss=True, use_cpu=True, report_to="none",
                     max_length=128, dataset_num_proc=None, shuffle_dataset=False,
                     **checkpointing_argument(SFTConfig, False))
    trainer = SFTTrainer(model=AutoModelForCausalLM.from_pretrained(tiny_model_dir), args=args,
                         train_dataset=Dataset.from_list([{"messages": c} for c in convs]),
                         processing_class=tiny_tokenizer)
    for row, conv in zip(trainer.train_dataset, convs):
        ids, labels = sft_formats.render(tiny_tokenizer, conv)
        assert row["input_ids"] == ids and row["labels"] == labels
