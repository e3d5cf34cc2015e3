"""The paper's VAEs: an MLP for dSprites, a convolutional net for 64×64 faces (1 or 3 channels).

Encoders map images (B, C, 64, 64) in [0, 1] to posterior parameters mu, logvar (B, D) of a diagonal
Gaussian q(z|x); decoders map z (B, D) to Bernoulli logits (B, C, 64, 64). The prior is N(0, I).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

Arch = Literal["mlp", "conv"]


def mlp_encoder(latents: int, channels: int, width: int = 1200) -> nn.Module:
    # Chen et al. 2018, App. (dSprites): 4096-1200-1200-2·D, ReLU
    return nn.Sequential(nn.Flatten(), nn.Linear(channels * 4096, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
                         nn.Linear(width, 2 * latents))


def mlp_decoder(latents: int, channels: int, width: int = 1200) -> nn.Module:
    # D-1200-1200-1200-4096, tanh
    return nn.Sequential(nn.Linear(latents, width), nn.Tanh(), nn.Linear(width, width), nn.Tanh(),
                         nn.Linear(width, width), nn.Tanh(), nn.Linear(width, channels * 4096),
                         nn.Unflatten(1, (channels, 64, 64)))


def conv_encoder(latents: int, channels: int, width: int = 0) -> nn.Module:
    # the paper's code (3D faces): 4×4 stride-2 convolutions with batch norm, 64 → 32 → 16 → 8 → 4 → 1
    def down(cin: int, cout: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 4, 2, 1), nn.BatchNorm2d(cout), nn.ReLU()]
    return nn.Sequential(*down(channels, 32), *down(32, 32), *down(32, 64), *down(64, 64),
                         nn.Conv2d(64, 512, 4), nn.BatchNorm2d(512), nn.ReLU(), nn.Conv2d(512, 2 * latents, 1),
                         nn.Flatten())


def conv_decoder(latents: int, channels: int, width: int = 0) -> nn.Module:
    def up(cin: int, cout: int) -> list[nn.Module]:
        return [nn.ConvTranspose2d(cin, cout, 4, 2, 1), nn.BatchNorm2d(cout), nn.ReLU()]
    return nn.Sequential(nn.Unflatten(1, (latents, 1, 1)), nn.ConvTranspose2d(latents, 512, 1), nn.BatchNorm2d(512),
                         nn.ReLU(), nn.ConvTranspose2d(512, 64, 4), nn.BatchNorm2d(64), nn.ReLU(),
                         *up(64, 64), *up(64, 32), *up(32, 32), nn.ConvTranspose2d(32, channels, 4, 2, 1))


class VAE(nn.Module):
    """Encoder, decoder and the reparameterised sample between them."""

    def __init__(self, arch: Arch = "mlp", latents: int = 10, channels: int = 1, width: int = 1200):
        """width: the MLP's hidden units (the paper's 1200); the conv net's widths are the paper's, fixed."""
        super().__init__()
        self.latents = latents
        build = {"mlp": (mlp_encoder, mlp_decoder), "conv": (conv_encoder, conv_decoder)}[arch]
        self.encoder, self.decoder = build[0](latents, channels, width), build[1](latents, channels, width)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, C, 64, 64) → mu, logvar (B, D)."""
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        return mu, logvar

    def sample(self, mu: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """z = mu + σ·ε, ε ~ N(0, I) drawn from `generator` (B, D)."""
        eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        return mu + (0.5 * logvar).exp() * eps

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, D) → Bernoulli logits (B, C, 64, 64)."""
        return self.decoder(z)


class Discriminator(nn.Module):
    """FactorVAE's (Kim & Mnih 2018) critic: z (B, D) → logits (B, 2) of [q(z), ∏ q(z_j)]."""

    def __init__(self, latents: int = 10, width: int = 1000, depth: int = 6):
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(depth - 1):
            layers += [nn.Linear(latents if i == 0 else width, width), nn.LeakyReLU(0.2)]
        self.net = nn.Sequential(*layers, nn.Linear(width, 2))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)
