"""kinema.quantize."""
