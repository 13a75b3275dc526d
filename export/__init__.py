"""kinema.export."""
