"""Tiny but real assets for tests: a 2-layer BERT and a WordPiece tokenizer saved with ``save_pretrained``.

Tests then load them through the same ``from_pretrained`` path users take with hub names, with no network.
"""

from __future__ import annotations

import csv
import random
from pathlib import Path

POSITIVE = ["good", "great", "excellent", "wonderful", "superb", "delightful", "moving", "brilliant"]
NEGATIVE = ["bad", "awful", "boring", "terrible", "dull", "weak", "messy", "tedious"]
NEUTRAL = ["the", "movie", "film", "plot", "was", "acting", "story", "and", "really", "quite", "a", "it"]


def build_tiny_bert(folder: Path, dropout: float = 0.1) -> Path:
    """A BertModel (no head, like sentence-transformers checkpoints) and its tokenizer in ``folder``."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *POSITIVE, *NEGATIVE, *NEUTRAL]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    # transformers 5 takes the vocabulary itself (`vocab=`); a `vocab_file=` keyword is silently ignored and
    # leaves a tokenizer that maps every word to [UNK]
    BertTokenizerFast(vocab={token: i for i, token in enumerate(vocab)}, do_lower_case=True).save_pretrained(folder)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
    )
    BertModel(config).save_pretrained(folder)
    return folder


def write_sentiment_csv(path: Path, rows: int, seed: int = 0, labels: tuple[str, ...] = ("pos", "neg")) -> Path:
    """A learnable two-class corpus: the label decides which sentiment words a sentence carries."""
    rng = random.Random(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        out = csv.writer(f)
        out.writerow(["sentence", "sentiment"])
        for i in range(rows):
            label = labels[i % len(labels)]
            words = POSITIVE if label == labels[0] else NEGATIVE
            sentence = rng.sample(NEUTRAL, 3) + rng.sample(words, 2)
            rng.shuffle(sentence)
            out.writerow([" ".join(sentence), label])
    return path
