def test_chat_template_and_assistant_mask(tiny_tokenizer):
    tok = tiny_tokenizer
    msgs = [{"role": "user", "content": "你是谁？"}, {"role": "assistant", "content": "我是小钢。"}]
    text = tok.apply_chat_template(msgs, tokenize=False)
    assert text == "<|im_start|>user\n你是谁？<|im_end|>\n<|im_start|>assistant\n我是小钢。<|im_end|>\n"
    out = tok.apply_chat_template(msgs, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    kept = [i for i, m in zip(out["input_ids"], out["assistant_masks"]) if m]
    assert tok.decode(kept) == "我是小钢。<|im_end|>"
    prompt = tok.apply_chat_template(msgs[:1], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|im_start|>assistant\n")
    assert tok.decode(tok("北京是中国的首都。")["input_ids"]) == "北京是中国的首都。"
