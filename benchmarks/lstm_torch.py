"""2-layer LSTM language model training throughput (tokens/s): ours vs a PyTorch twin using `nn.LSTM`.

The word-language-model setting: embedding 200, hidden 200, 2 layers, BPTT 35, batch 20, vocabulary 10,000,
SGD (lr 1) with global-norm clipping 0.25, hidden state carried across batches. Ours is `CharLMTask`'s train
step (the same code `launch.rnn --task=char_lm` runs) on random tokens, timed per dispatched step and with 10
steps per compiled call (`--steps_per_call`). Target: ours >= 1.0x PyTorch.
"""

from __future__ import annotations

import jax
import numpy as np

from benchmarks.timing import median_seconds, table

VOCAB, EMB, HIDDEN, BPTT, BATCH, SCAN = 10_000, 200, 200, 35, 20, 10


def ours(repeats: int) -> tuple[float, float]:
    from research.data.registry import Dataset
    from research.models.rnn import CharLM
    from research.optim import OptimizerConfig
    from research.tasks.char_lm import CharLMTask

    chars = "".join(chr(0x4E00 + i) for i in range(VOCAB))
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, VOCAB, 50_000).astype(np.int32)
    corpus = Dataset("random", {"train": {"tokens": tokens}, "validation": {"tokens": tokens[:5000]}},
                     info={"vocab": chars})
    task = CharLMTask(CharLM(VOCAB, embed=EMB, hidden=HIDDEN, layers=2),
                      corpus, OptimizerConfig("sgd", 1.0, clip_global_norm=0.25), batch_size=BATCH, unroll=BPTT,
                      steps=100)
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


def torch_twin(repeats: int) -> float:
    import torch

    from benchmarks.torch_twins import TorchLMTrainer

    torch.set_num_threads(max(torch.get_num_threads(), 1))
    trainer = TorchLMTrainer(VOCAB, EMB, HIDDEN, BPTT, BATCH)
    return BATCH * BPTT / median_seconds(trainer.step, repeats * 4, warmup=2)


def main(repeats: int = 5) -> str:
    theirs = torch_twin(repeats)
    single, scanned = ours(repeats)
    return table("2-layer LSTM LM (emb 200, hidden 200, bptt 35, batch 20, vocab 10k): training tokens/s "
                 "(target ours >= 1.0x PyTorch)",
                 ["implementation", "tokens/s", "vs PyTorch"],
                 [["PyTorch nn.LSTM (twin)", theirs, 1.0], ["ours, 1 step per call", single, single / theirs],
                  [f"ours, {SCAN} steps per call", scanned, scanned / theirs]])


if __name__ == "__main__":
    main()
