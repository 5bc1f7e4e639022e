"""The toy tokenizer trainer: transformers reloads it with identical ids, markers are one token."""

import pytest
from transformers import AutoTokenizer

from nla_probe.errors import InputError
from nla_probe.toy.tokenizer import train_tokenizer

TEXTS = ["The cat sat on the mat. It's a \"quoted\" (word), isn't it?\n"] * 50 + [
    "Hackers write code; kludges abound. 42 bugs -- all fixed!\n"] * 50
MARK = "\u320e"


@pytest.mark.parametrize("add_bos", [False, True])
def test_reload_gives_identical_ids_and_single_token_marker(tmp_path, add_bos):
    from tokenizers import Tokenizer

    tok = train_tokenizer(TEXTS, 400, tmp_path, marker_chars=[MARK], add_bos=add_bos)
    again = AutoTokenizer.from_pretrained(str(tmp_path))
    raw = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    text = "The \"cat\" isn't (here) -- 42 kludges!\n\n  x" + MARK + "y"
    assert again(text)["input_ids"] == raw.encode(text).ids == tok(text)["input_ids"]
    assert len(again.encode(MARK, add_special_tokens=False)) == 1
    assert 300 < len(again) <= 400  # this tiny corpus runs out of merges before 400
    starts_bos = again("x", add_special_tokens=True)["input_ids"][0] == again.bos_token_id
    assert starts_bos == add_bos


def test_chat_template_single_user_turn(tmp_path):
    tok = train_tokenizer(TEXTS, 400, tmp_path, marker_chars=[MARK])
    ids = tok.apply_chat_template([{"role": "user", "content": "hi " + MARK + " there"}],
                                  tokenize=True, add_generation_prompt=True, return_dict=False)
    text = tok.decode(ids)
    assert text == "<|im_start|>user\nhi " + MARK + " there<|im_end|>\n<|im_start|>assistant\n"
    assert tok.eos_token == "<|im_end|>" and tok.bos_token is None


def test_bad_inputs(tmp_path):
    with pytest.raises(InputError, match="vocab_size"):
        train_tokenizer(TEXTS, 100, tmp_path)
    with pytest.raises(InputError, match="marker_chars"):
        train_tokenizer(TEXTS, 400, tmp_path, marker_chars=["ab"])
