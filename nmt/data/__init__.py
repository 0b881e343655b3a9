"""Data pipeline: parallel text -> sentencepiece ids -> token-budget batches."""
