"""fairseq_xlm criterions (registered by explicit imports)."""
