"""fairseq_xlm tasks (registered by explicit imports)."""
