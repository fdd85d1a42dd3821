"""The pipeline's stages, one module each; ``base`` holds what they share."""
