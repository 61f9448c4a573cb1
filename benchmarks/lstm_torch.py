"""2-layer LSTM language model training throughput (tokens/s): ours vs a PyTorch twin of word_language_model.

The exact PyTorch examples word_language_model setting (`main.py --model LSTM`): embedding 200, hidden 200,
2 layers, dropout 0.2 (embeddings, between layers, outputs), untied weights, BPTT 35, batch 20, SGD lr 20 with
global-norm clipping 0.25, hidden state carried (detached) across batches. Main row: WikiText-2's vocabulary,
33,278 words, where the decoder (200 -> vocabulary) and its softmax cross-entropy dominate the step; second row:
a 10,000-word vocabulary. Tokens are random (speed does not depend on them). Ours is `CharLMTask`'s train step
(the code `launch.rnn --task=char_lm` runs; at these vocabularies it takes the fused cross-entropy path of
`research/objectives/fused_cross_entropy.py`), timed per dispatched step and with 10 steps per compiled call
(`--steps_per_call`, a `lax.scan`). Target: ours >= 1.0x PyTorch at 1 step per call, >= 1.2x at 10.
"""

from __future__ import annotations

import jax
import numpy as np

from benchmarks.timing import median_seconds, table

VOCAB, SMALL_VOCAB = 33_278, 10_000  # WikiText-2 (main row), and the second row
EMB, HIDDEN, LAYERS, DROPOUT, BPTT, BATCH, LR, CLIP, SCAN = 200, 200, 2, 0.2, 35, 20, 20.0, 0.25, 10


def ours(repeats: int, vocab: int | None = None) -> tuple[float, float]:
    from research.data.registry import Dataset
    from research.models.rnn import CharLM
    from research.optim import OptimizerConfig
    from research.tasks.char_lm import CharLMTask

    vocab = vocab or VOCAB
    chars = "".join(chr(0x4E00 + i) for i in range(vocab))
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, vocab, 50_000).astype(np.int32)
    corpus = Dataset("random", {"train": {"tokens": tokens}, "validation": {"tokens": tokens[:5000]}},
                     info={"vocab": chars})
    model = CharLM(vocab, embed=EMB, hidden=HIDDEN, layers=LAYERS, dropout=DROPOUT, io_dropout=True)
    task = CharLMTask(model, corpus, OptimizerConfig("sgd", LR, clip_global_norm=CLIP), batch_size=BATCH,
                      unroll=BPTT, steps=100)
    state = jax.jit(task.init_state)(jax.random.PRNGKey(0))
    x = tokens[:SCAN * BATCH * BPTT].reshape(SCAN, BATCH, BPTT)
    batch = {"x": x, "y": np.roll(x, -1, axis=-1), "reset": np.zeros((SCAN, BATCH), bool)}
    one = {k: jax.device_put(v[0]) for k, v in batch.items()}
    many = jax.device_put(batch)
    step = jax.jit(task.train_step, donate_argnums=0)
    scan = jax.jit(lambda s, b: jax.lax.scan(task.train_step, s, b), donate_argnums=0)
    holder = [state]

    def single():
        holder[0], m = step(holder[0], one)
        jax.block_until_ready(m)

    def scanned():
        holder[0], m = scan(holder[0], many)
        jax.block_until_ready(m)

    tokens_per_step = BATCH * BPTT
    return (tokens_per_step / median_seconds(single, repeats * 4, warmup=2),
            SCAN * tokens_per_step / median_seconds(scanned, repeats, warmup=1))


def torch_twin(repeats: int, vocab: int | None = None) -> float:
    import torch

    from benchmarks.torch_twins import TorchLMTrainer

    torch.set_num_threads(max(torch.get_num_threads(), 1))
    trainer = TorchLMTrainer(vocab or VOCAB, EMB, HIDDEN, BPTT, BATCH, layers=LAYERS, dropout=DROPOUT, lr=LR, clip=CLIP)
    return BATCH * BPTT / median_seconds(trainer.step, repeats * 4, warmup=2)


def main(repeats: int = 5) -> str:
    rows = []
    for vocab in (VOCAB, SMALL_VOCAB):
        theirs = torch_twin(repeats, vocab)
        single, scanned = ours(repeats, vocab)
        rows += [[f"{vocab:,}", "PyTorch word_language_model (twin)", theirs, 1.0],
                 [f"{vocab:,}", "ours, 1 step per call", single, single / theirs],
                 [f"{vocab:,}", f"ours, {SCAN} steps per call", scanned, scanned / theirs]]
    return table("2-layer LSTM LM, PyTorch word_language_model setting (emb 200, hidden 200, dropout 0.2, bptt 35, "
                 "batch 20, SGD lr 20, clip 0.25): training tokens/s (target ours >= 1.0x PyTorch at 1 step per "
                 "call, >= 1.2x at 10)",
                 ["vocabulary", "implementation", "tokens/s", "vs PyTorch"], rows)


if __name__ == "__main__":
    main()
