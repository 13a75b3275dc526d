"""A bundle's graphs at work: sessions, the tokenizer, text encoding, denoising and streaming decode."""
