"""arca: adapter-residual and intrinsic token-level credit assignment for LLM RL with LoRA."""

__version__ = "0.1.0"
