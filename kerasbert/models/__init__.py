"""Backbones, tokenizers, classifier heads, and the layer groups that unfreezing toggles."""
