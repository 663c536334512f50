"""Reading, validating, formatting, tokenizing and splitting training data."""
