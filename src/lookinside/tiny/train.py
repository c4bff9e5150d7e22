"""The reproducible recipe that makes the built-in tiny model.

`python -m lookinside.tiny.train` trains a SentencePiece-style BPE tokenizer
(byte fallback, Phi-3's chat tokens and template) and a small `Phi3ForCausalLM`
with grouped-query attention on the generated corpus, then writes config,
weights, tokenizer and generation config into the package's assets folder.
Fixed seeds; a few minutes on two CPU cores. See docs/tiny-model.md.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path

import torch
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import GenerationConfig, Phi3Config, Phi3ForCausalLM, PreTrainedTokenizerFast

from lookinside.tiny import ASSETS
from lookinside.tiny.corpus import CAPITALS, Corpus, build_corpus

SPECIAL_TOKENS = ("<unk>", "<s>", "</s>")
# Phi-3's added tokens, in Phi-3's order; each strips the whitespace on its right.
CHAT_TOKENS = ("<|endoftext|>", "<|assistant|>", "<|system|>", "<|end|>", "<|user|>")
BYTE_TOKENS = tuple(f"<0x{b:02X}>" for b in range(256))
END_TOKENS = ("<|endoftext|>", "<|end|>", "<|assistant|>")

# Phi-3-mini's chat template, written out: system/user/assistant turns closed by <|end|>.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] in ['system', 'user', 'assistant'] %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + '<|end|>\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}"
)

CONTEXT_LENGTH = 512
BPE_VOCAB = 1000


def train_tokenizer(corpus: Corpus) -> PreTrainedTokenizerFast:
    """A Llama/Phi-3-style tokenizer: Metaspace, BPE with byte fallback, <s> prepended."""
    texts = corpus.texts + [m["content"] for chat in corpus.chats for m in chat]
    # Words keep their leading "▁"; punctuation and digits stand alone, so " Paris" is one token.
    pre_tokenize = pre_tokenizers.Sequence([
        pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always"),
        pre_tokenizers.Punctuation(behavior="isolated"),
        pre_tokenizers.Digits(individual_digits=True),
    ])
    draft = Tokenizer(models.BPE())
    draft.pre_tokenizer = pre_tokenize
    draft.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=BPE_VOCAB, special_tokens=list(SPECIAL_TOKENS), show_progress=False))
    learned = json.loads(draft.to_str())["model"]

    # Llama's layout: specials, then the 256 byte pieces, then the learned pieces.
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + BYTE_TOKENS)}
    for piece in sorted(learned["vocab"], key=learned["vocab"].get):
        vocab.setdefault(piece, len(vocab))
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in learned["merges"]]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, byte_fallback=True, fuse_unk=True))
    tok.pre_tokenizer = pre_tokenize
    tok.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", vocab["<s>"])]
    )
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False, rstrip=True) for t in CHAT_TOKENS])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="<|endoftext|>",
        unk_token="<unk>",
        pad_token="<|endoftext|>",
        model_max_length=CONTEXT_LENGTH,
        clean_up_tokenization_spaces=False,
        chat_template=CHAT_TEMPLATE,
    )


def model_config(tokenizer: PreTrainedTokenizerFast) -> Phi3Config:
    """Phi-3-mini's architecture, shrunk; 4 query heads share 2 KV heads (GQA)."""
    return Phi3Config(
        vocab_size=64 * math.ceil(len(tokenizer) / 64),  # padded like Phi-3's 32064
        hidden_size=128,
        intermediate_size=384,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=CONTEXT_LENGTH,
        original_max_position_embeddings=CONTEXT_LENGTH,
        rms_norm_eps=1e-5,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )


def encode_corpus(tokenizer: PreTrainedTokenizerFast, corpus: Corpus) -> list[list[int]]:
    """Token ids per example: plain texts with <s> ... <|endoftext|>, chats as the template renders them."""
    eos = tokenizer.eos_token_id
    examples = [tokenizer(text).input_ids + [eos] for text in corpus.texts]
    for chat in corpus.chats:
        rendered = tokenizer.apply_chat_template(chat, tokenize=False)
        examples.append(tokenizer(rendered, add_special_tokens=False).input_ids)
    return examples


def batch(examples: list[list[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded input ids, attention mask and labels (-100 on padding)."""
    width = max(len(e) for e in examples)
    ids = torch.full((len(examples), width), pad_id)  # (batch, seq)
    mask = torch.zeros_like(ids)
    for row, example in enumerate(examples):
        ids[row, : len(example)] = torch.tensor(example)
        mask[row, : len(example)] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, -100)}


def learning_rate(step: int, steps: int, peak: float, warmup: int = 100) -> float:
    """Linear warm-up, then cosine decay to a tenth of the peak."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return peak * (0.1 + 0.45 * (1 + math.cos(math.pi * progress)))


def train(model: Phi3ForCausalLM, examples: list[list[int]], pad_id: int, steps: int, seed: int) -> None:
    """AdamW over random batches of whole examples."""
    rng = random.Random(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    model.train()
    start = time.perf_counter()
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, steps, peak=3e-3)
        loss = model(**batch(rng.sample(examples, 32), pad_id)).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step % 200 == 0 or step == steps - 1:
            print(f"step {step:5d}  loss {loss.item():.3f}  {time.perf_counter() - start:6.1f}s", file=sys.stderr)
    model.eval()


@torch.no_grad()
def capital_accuracy(model: Phi3ForCausalLM, tokenizer: PreTrainedTokenizerFast) -> float:
    """Share of countries whose capital's first token is the top next token."""
    hits = 0
    for country, capital in CAPITALS:
        ids = tokenizer(f"The capital of {country} is", return_tensors="pt").input_ids
        want = tokenizer(f"The capital of {country} is {capital}").input_ids[ids.shape[1]]
        hits += int(model(ids).logits[0, -1].argmax()) == want
    return hits / len(CAPITALS)


def build(out: Path, steps: int, seed: int) -> None:
    """Train the tokenizer and the model, check them, and save both to `out`."""
    torch.manual_seed(seed)
    corpus = build_corpus(seed)
    tokenizer = train_tokenizer(corpus)
    examples = encode_corpus(tokenizer, corpus)
    config = model_config(tokenizer)
    model = Phi3ForCausalLM(config)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"{len(examples)} examples, vocab {len(tokenizer)}, {n_params:,} parameters", file=sys.stderr)
    train(model, examples, tokenizer.pad_token_id, steps, seed)
    print(f"capital accuracy: {capital_accuracy(model, tokenizer):.0%}", file=sys.stderr)

    out.mkdir(parents=True, exist_ok=True)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.convert_tokens_to_ids(list(END_TOKENS)),
        pad_token_id=tokenizer.pad_token_id,
    )
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def main(argv: list[str] | None = None) -> None:
    """Command line: python -m lookinside.tiny.train [--out DIR] [--steps N] [--seed S]."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=ASSETS, help="where to write the model (default: the package)")
    parser.add_argument("--steps", type=int, default=2500)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    build(args.out, args.steps, args.seed)


if __name__ == "__main__":
    main()
