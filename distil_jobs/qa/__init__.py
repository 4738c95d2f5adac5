"""Extractive question answering: SQuAD data, features, post-processing, metrics and losses."""
