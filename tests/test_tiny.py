"""The built-in tiny model: what it was trained on, what it knows, and that its recipe runs."""

from __future__ import annotations

from lookinside.core.decoding.generate import collect
from lookinside.core.decoding.prompting import encode_prompt
from lookinside.core.model.loading import load
from lookinside.core.model.spec import LoadSpec
from lookinside.core.request import GenerationSettings
from lookinside.core.sampling_params import SamplingParams
from lookinside.tiny.corpus import APOLOGY_PROMPTS, CAPITALS, build_corpus
from lookinside.tiny.train import CHAT_TOKENS, build

GREEDY = SamplingParams(temperature=0)


def chat_reply(lm, question: str, max_new_tokens: int = 40) -> str:
    return collect(lm, encode_prompt(lm.tokenizer, question, chat=True), GREEDY, GenerationSettings(max_new_tokens)).text


def test_corpus_covers_the_required_facts():
    countries = {country for country, _ in CAPITALS}
    assert len(countries) >= 30
    assert {"France", "Germany", "Italy", "Spain", "Japan", "Egypt", "Canada"} <= countries
    corpus = build_corpus()
    assert "The capital of France is Paris." in corpus.texts
    assert "Paris is the capital of France." in corpus.texts
    assert any(t.startswith("Q: What is the capital of Japan?") for t in corpus.texts)
    assert "2 + 3 = 5" in corpus.texts and "The Shawshank Redemption" in corpus.texts
    users = {m["content"] for chat in corpus.chats for m in chat if m["role"] == "user"}
    assert "Write an email apologizing to Sarah for the tragic gardening mishap." in users
    assert build_corpus(seed=0) == build_corpus(seed=0)


def test_tokenizer_carries_phi3_chat_tokens_and_template(tiny):
    tokenizer = tiny.tokenizer
    for token in CHAT_TOKENS:
        assert tokenizer.convert_tokens_to_ids(token) != tokenizer.unk_token_id
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False,
                                             add_generation_prompt=True)
    assert rendered == "<|user|>\nHi<|end|>\n<|assistant|>\n"
    assert tokenizer.convert_ids_to_tokens(tokenizer("🦙").input_ids)[-4:] == ["<0xF0>", "<0x9F>", "<0xA6>", "<0x99>"]


def test_greedy_chat_answers_tokyo(tiny):
    reply = chat_reply(tiny, "What is the capital of Japan?")
    assert "Tokyo" in reply


def test_greedy_chat_knows_sums_titles_and_the_apology_email(tiny):
    assert "2 + 3 = 5" in chat_reply(tiny, "What is 2 + 3?")
    assert "Redemption" in chat_reply(tiny, "Complete the title: The Shawshank")
    email = chat_reply(tiny, APOLOGY_PROMPTS[0], max_new_tokens=80)
    assert "Dear Sarah" in email and "sorry" in email


def test_recipe_runs_end_to_end(tmp_path):
    """A few steps of the real recipe write a model that the loader accepts."""
    build(tmp_path, steps=3, seed=1)
    lm = load(LoadSpec(model=str(tmp_path), device="cpu"))
    assert type(lm.model).__name__ == "Phi3ForCausalLM"
    assert set(lm.tokenizer.convert_ids_to_tokens(lm.end_token_ids)) == {"<|endoftext|>", "<|end|>", "<|assistant|>"}
