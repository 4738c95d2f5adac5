"""Training students: the loop (DDP or DeepSpeed), checkpoints, tracking and the distillation methods."""
