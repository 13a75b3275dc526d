"""Bundles: the typed manifest, reading and checking a bundle folder, writing one, scanning graphs."""

from .load import Bundle, VideoRules, default_bundle_path, load_bundle, sha256_file

__all__ = ["Bundle", "VideoRules", "default_bundle_path", "load_bundle", "sha256_file"]
