"""Distillation methods: each turns a batch into a loss and evaluates a dev split."""
