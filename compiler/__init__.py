"""Model side: checkpoints, float and fixed-point reference models, lowering to IR, placement."""
