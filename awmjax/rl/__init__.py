"""GRPO for multi-turn tool use: rewards, group advantages, the clipped policy loss."""
