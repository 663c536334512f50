"""Base models, tokenizers and the fine-tuning methods applied to them."""
