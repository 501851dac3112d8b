"""What pretraining and fine-tuning share to optimise a model: the warmup-cosine schedule
(`schedule`), the parameter groups with their no-decay rule (`groups`) and seeding (`seed`)."""
