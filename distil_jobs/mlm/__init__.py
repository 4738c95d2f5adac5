"""Masked-LM distillation pieces: token counts, masking, teacher top-k logits, model loading and the batcher."""
