"""PyTorch twins of our models, for speed baselines measured in the same run (needs the `bench` extra).

- `TorchDCGAN`: the pytorch/examples DCGAN (64x64, nz 100, ngf = ndf = 64): G = ConvTranspose 4x4 blocks
  with BatchNorm + ReLU and tanh; D = strided 4x4 convs with LeakyReLU(0.2), BatchNorm after the first, a
  sigmoid logit; BCE loss, Adam(2e-4, betas (0.5, 0.999)). One step = D on real + fake, then G.
- `TorchLSTMLM` / `TorchLMTrainer`: PyTorch examples' word_language_model (LSTM, untied, dropout on embeddings,
  between layers and on outputs), its training step: SGD with gradient clipping, truncated BPTT with the hidden
  state carried and detached between batches.
"""

from __future__ import annotations

import torch
from torch import nn


def _dcgan_init(m: nn.Module) -> None:
    if isinstance(m, nn.Conv2d | nn.ConvTranspose2d):
        nn.init.normal_(m.weight, 0.0, 0.02)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


class TorchDCGAN:
    def __init__(self, nz: int = 100, ngf: int = 64, ndf: int = 64, nc: int = 3, batch: int = 64, seed: int = 0):
        torch.manual_seed(seed)
        self.nz, self.batch = nz, batch
        self.g = nn.Sequential(
            nn.ConvTranspose2d(nz, ngf * 8, 4, 1, 0, bias=False), nn.BatchNorm2d(ngf * 8), nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 8, ngf * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 4), nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 2), nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf), nn.ReLU(True),
            nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False), nn.Tanh())
        self.d = nn.Sequential(
            nn.Conv2d(nc, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 2), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 2, ndf * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 4), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 4, ndf * 8, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 8), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 8, 1, 4, 1, 0, bias=False), nn.Sigmoid())
        self.g.apply(_dcgan_init)
        self.d.apply(_dcgan_init)
        self.opt_g = torch.optim.Adam(self.g.parameters(), lr=2e-4, betas=(0.5, 0.999))
        self.opt_d = torch.optim.Adam(self.d.parameters(), lr=2e-4, betas=(0.5, 0.999))
        self.loss = nn.BCELoss()
        self.real = torch.rand(batch, nc, 64, 64) * 2 - 1  # random data, as in the benchmark spec

    def step(self) -> float:
        ones, zeros = torch.ones(self.batch), torch.zeros(self.batch)
        self.d.zero_grad()
        err_real = self.loss(self.d(self.real).view(-1), ones)
        err_real.backward()
        fake = self.g(torch.randn(self.batch, self.nz, 1, 1))
        err_fake = self.loss(self.d(fake.detach()).view(-1), zeros)
        err_fake.backward()
        self.opt_d.step()
        self.g.zero_grad()
        err_g = self.loss(self.d(fake).view(-1), ones)
        err_g.backward()
        self.opt_g.step()
        return err_g.item()


class TorchLSTMLM(nn.Module):
    """word_language_model's RNNModel (LSTM, untied): dropout on the embeddings, between layers and on the
    outputs; encoder and decoder weights uniform(-0.1, 0.1), decoder bias 0; log-probabilities out."""

    def __init__(self, vocab: int = 33278, emb: int = 200, hidden: int = 200, layers: int = 2,
                 dropout: float = 0.2, seed: int = 0):
        torch.manual_seed(seed)
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.encoder = nn.Embedding(vocab, emb)
        self.rnn = nn.LSTM(emb, hidden, layers, dropout=dropout)
        self.decoder = nn.Linear(hidden, vocab)
        nn.init.uniform_(self.encoder.weight, -0.1, 0.1)
        nn.init.zeros_(self.decoder.bias)
        nn.init.uniform_(self.decoder.weight, -0.1, 0.1)
        self.layers, self.hidden, self.vocab = layers, hidden, vocab

    def forward(self, tokens, state):
        out, state = self.rnn(self.drop(self.encoder(tokens)), state)
        decoded = self.decoder(self.drop(out)).view(-1, self.vocab)
        return nn.functional.log_softmax(decoded, dim=1), state


class TorchLMTrainer:
    """word_language_model's `train()` loop body over random tokens: (bptt, batch) inputs, next-token targets,
    hidden state repackaged (detached) between batches, NLL loss, clip_grad_norm_, then p -= lr * grad."""

    def __init__(self, vocab: int = 33278, emb: int = 200, hidden: int = 200, bptt: int = 35, batch: int = 20, *,
                 layers: int = 2, dropout: float = 0.2, lr: float = 20.0, clip: float = 0.25, seed: int = 0):
        self.model = TorchLSTMLM(vocab, emb, hidden, layers, dropout, seed=seed)
        self.model.train()
        self.criterion = nn.NLLLoss()
        g = torch.Generator().manual_seed(seed)
        self.tokens = torch.randint(0, vocab, (bptt + 1, batch), generator=g)
        self.state = tuple(torch.zeros(layers, batch, hidden) for _ in range(2))
        self.lr, self.clip = lr, clip

    def step(self) -> float:
        self.state = tuple(s.detach() for s in self.state)
        self.model.zero_grad()
        output, self.state = self.model(self.tokens[:-1], self.state)
        loss = self.criterion(output, self.tokens[1:].reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
        with torch.no_grad():
            for p in self.model.parameters():
                p.add_(p.grad, alpha=-self.lr)
        return loss.item()
