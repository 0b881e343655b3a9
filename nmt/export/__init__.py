"""Export trained checkpoints to other inference engines (CTranslate2)."""
