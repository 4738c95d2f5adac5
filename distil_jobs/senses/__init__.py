"""Sense distillation: gathering per-token teacher vectors and clustering them into a sense dictionary."""
