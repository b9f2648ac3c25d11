"""Training: from a store or files to a versioned model artifact; `auto` picks the model."""
