"""Model compression: magnitude pruning during training (`prune.py`, an optax transformation), int8 quantisation
with Google's qwix (`quantize.py`: quantisation-aware training and post-training quantisation) and knowledge
distillation from a frozen teacher run (`distill.py`; its loss is `research/objectives/distillation.py`).
Settings: `config.py`. Results and commands: docs/compression.md."""
