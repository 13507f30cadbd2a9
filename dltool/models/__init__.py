"""Models: the YAML layer-list builder with shape inference, layers, blocks, backbones, init, fine-tuning."""
