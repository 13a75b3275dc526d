"""Long and conditioned clips: windows, image-to-video, extension, connection, edits and loops."""
