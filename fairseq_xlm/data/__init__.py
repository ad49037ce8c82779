"""Dataset wrappers and the shared data-bin layout."""
