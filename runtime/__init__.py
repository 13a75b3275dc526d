"""kinema.runtime."""
