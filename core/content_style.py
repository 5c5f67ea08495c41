"""Seed 001: semi-supervised fine-tuning by content-style decomposition (Drozdova et al.).

    $ python -m core train --backbone test_vit --dataset mnist-stripes --objective content-style --labels 100

The backbone's pooled embedding y = f(x) [B, D] is split by two heads and put back together:

    content  z = W_c y           [B, C] class logits,  c = softmax(z)
    style    s = g_s(y)          [B, S] low-dimensional (S = cs_style_dim, 8 by default)
    decoder  y_hat = g_d([c, s]) [B, D] reconstruction of the embedding

and trained with (weights are TrainConfig's cs_*_weight; a batch has labelled mask M, |M| = m):

    L = w_ce  * 1/m sum_{i in M} CE(z_i, y_i)                              supervised, labelled only
      + w_pri * [ KL(c_bar || pi) + w_ent * 1/B sum_i H(c_i) ]             content -> categorical prior
      + w_sty * KL( N(mu_s, Sigma_s) || N(0, I) )                          style -> standard normal
      + w_rec * 1/B sum_i ||y_hat_i - sg(y_i)||^2 / (1/B sum_i ||sg(y_i) - sg(y_bar)||^2)

with c_bar = 1/B sum_i c_i (the batch's content marginal), pi the class prior (uniform: EmbedLab's
splits are class-balanced), H the entropy, mu_s / Sigma_s the batch mean and (biased) covariance of
the style vectors (+ 1e-3 I), sg = stop-gradient.

Why moment surrogates instead of the paper's adversarial discriminators. The paper matches the
aggregate posteriors q(c) and q(s) to their priors with two GAN-style discriminators (density-ratio
estimates of the KL terms). On workshop-sized batches and 20..1000-step budgets those add two more
networks, a min-max schedule and a noisy loss curve. We use closed-form surrogates of the same two KLs:

* content: the prior is a categorical distribution over one-hot vectors, so q(c) matches it when
  (a) the marginal c_bar equals pi and (b) every c_i is one-hot. KL(c_bar || pi) is (a); the mean
  entropy 1/B sum H(c_i) is (b) (zero exactly for one-hot outputs). With pi uniform the sum is
  log C - I(x; c), the mutual-information objective of discriminative clustering (RIM / IIC).
* style: a discriminator against N(0, I) sees the batch's style cloud; the closed-form KL of the
  cloud's Gaussian fit, 1/2 (tr Sigma + mu'mu - S - log det Sigma), matches its first two moments.

Why the reconstruction target is detached. Without sg(.) the encoder can lower the reconstruction
error by moving the *target*: shrinking or collapsing y (all embeddings equal -> error 0), which also
destroys what the classifier needs. With the target detached, the encoder only gets the gradient of
"make y decodable from (content, style)". The error is divided by the batch's (detached) total
variance, i.e. it is 1 - R^2: independent of the backbone's feature scale (1280-d EfficientNet vs 64-d
ViT) and equal to 1 for a decoder that outputs the batch mean.

The style bottleneck (S = 8 << D) forces the class information needed for reconstruction through
the content code, which is what lets unlabelled samples shape the content head.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .errors import InvalidConfig
from .objectives import OBJECTIVES, Method, ObjectiveEntry, Stage, _labelled_ce

NAME = "content-style"
STYLE_RIDGE = 1e-3  # added to the style covariance so a small batch still has a finite log det
_EPS = 1e-8


# ------------------------------------------------------------------------------------- losses
class ContentPriorLoss(nn.Module):
    """Content regulariser: KL(c_bar || pi) + entropy_weight * mean_i H(c_i).

    Args (forward):
        logits: [B, C] content logits of all samples (labelled or not).
    Returns: scalar loss, >= 0 (0 for one-hot outputs whose marginal is pi).
    """

    def __init__(self, num_classes: int, prior: torch.Tensor | None = None, entropy_weight: float = 1.0):
        super().__init__()
        prior = torch.full((num_classes,), 1.0 / num_classes) if prior is None else torch.as_tensor(prior, dtype=torch.float32)
        if prior.shape != (num_classes,) or (prior <= 0).any():
            raise InvalidConfig(f"the class prior must have {num_classes} positive entries")
        self.register_buffer("prior", prior / prior.sum(), persistent=False)  # [C]
        self.entropy_weight = entropy_weight

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        log_c = F.log_softmax(logits.float(), dim=-1)  # [B, C]
        c = log_c.exp()
        c_bar = c.mean(0)  # [C]
        marginal_kl = (c_bar * (torch.log(c_bar + _EPS) - torch.log(self.prior))).sum()
        entropy = -(c * log_c).sum(-1).mean()
        return marginal_kl + self.entropy_weight * entropy


class StyleNormalLoss(nn.Module):
    """Style regulariser: closed-form KL(N(mu, Sigma) || N(0, I)) of the batch's Gaussian fit.

        KL = 1/2 (tr Sigma + mu'mu - S - log det Sigma),  Sigma = 1/B sum (s_i - mu)(s_i - mu)' + ridge I

    Args (forward):
        style: [B, S] style vectors.
    Returns: scalar loss, >= 0 up to the ridge (0 when the batch is exactly white and centred).
    """

    def __init__(self, ridge: float = STYLE_RIDGE):
        super().__init__()
        self.ridge = ridge

    def forward(self, style: torch.Tensor) -> torch.Tensor:
        with torch.autocast(style.device.type, enabled=False):  # log det in full precision
            s = style.float()
            b, d = s.shape
            mu = s.mean(0)  # [S]
            centred = s - mu
            sigma = centred.T @ centred / b + self.ridge * torch.eye(d, device=s.device)  # [S, S]
            return 0.5 * (torch.diagonal(sigma).sum() + mu @ mu - d - torch.logdet(sigma))


class ReconstructionLoss(nn.Module):
    """Share of the batch's embedding variance the decoder fails to explain (1 - R^2), target detached.

        L = (1/B sum_i ||y_hat_i - sg(y_i)||^2) / (1/B sum_i ||sg(y_i) - sg(y_bar)||^2 + eps)

    Args (forward):
        recon: [B, D] decoder output; target: [B, D] encoder embedding (detached here).
    Returns: scalar loss.
    """

    def __init__(self, eps: float = 1e-6):
        super().__init__()
        self.eps = eps

    def forward(self, recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = target.detach().float()
        err = (recon.float() - target).pow(2).sum(-1).mean()
        var = (target - target.mean(0)).pow(2).sum(-1).mean()
        return err / (var + self.eps)


# ------------------------------------------------------------------------------------- method
class ContentStyleMethod(Method):
    """`content-style`: content head (the classifier), style head and decoder on the encoder embedding."""

    name = NAME

    def __init__(self, backbone, encoder, num_classes, *, cs_style_dim: int = 8, cs_ce_weight: float = 1.0,
                 cs_prior_weight: float = 1.0, cs_entropy_weight: float = 1.0, cs_style_weight: float = 1.0,
                 cs_recon_weight: float = 1.0, cs_hidden: int = 256, **_):
        super().__init__(backbone, encoder, num_classes)
        d = backbone.embed_dim
        self.content_head = nn.Linear(d, num_classes)  # D -> C, the same capacity as CE's linear head
        self.style_head = nn.Sequential(nn.Linear(d, cs_hidden), nn.GELU(), nn.Linear(cs_hidden, cs_style_dim))  # D -> H -> S
        self.decoder = nn.Sequential(nn.Linear(num_classes + cs_style_dim, cs_hidden), nn.GELU(),
                                     nn.Linear(cs_hidden, d))  # C + S -> H -> D
        self.content_prior = ContentPriorLoss(num_classes, entropy_weight=cs_entropy_weight)
        self.style_normal = StyleNormalLoss()
        self.reconstruction = ReconstructionLoss()
        self.weights = {"ce": cs_ce_weight, "prior": cs_prior_weight, "style": cs_style_weight, "recon": cs_recon_weight}

    def stages(self):
        heads = [*self.content_head.parameters(), *self.style_head.parameters(), *self.decoder.parameters()]
        return [Stage(NAME, 1.0, head_params=heads)]

    def decompose(self, emb: torch.Tensor) -> dict[str, torch.Tensor]:
        """[B, D] embedding -> logits [B, C], content [B, C] (softmax), style [B, S], recon [B, D]."""
        logits = self.content_head(emb)
        content = logits.float().softmax(-1)
        style = self.style_head(emb)
        recon = self.decoder(torch.cat([content.to(style.dtype), style], dim=-1))
        return {"logits": logits, "content": content, "style": style, "recon": recon}

    def terms(self, emb: torch.Tensor, batch) -> dict[str, torch.Tensor]:
        """The four unweighted loss terms of one batch (see the module docstring)."""
        parts = self.decompose(emb)
        return {"ce": _labelled_ce(parts["logits"], batch), "prior": self.content_prior(parts["logits"]),
                "style": self.style_normal(parts["style"]), "recon": self.reconstruction(parts["recon"], emb)}

    def loss(self, stage, batch):
        terms = self.terms(self.encode(batch.views[0]), batch)
        return sum(self.weights[k] * v for k, v in terms.items() if self.weights[k])

    def classify(self, emb, stage=None):
        return self.content_head(emb)

    def outputs(self, emb):
        parts = self.decompose(emb)
        return {"encoder": emb, "content": parts["content"], "style": parts["style"]}


def check_config(cfg) -> None:
    """Validate the content-style settings of a TrainConfig (called by core.train.validate)."""
    if not isinstance(cfg.cs_style_dim, int) or isinstance(cfg.cs_style_dim, bool) or not 1 <= cfg.cs_style_dim <= 1024:
        raise InvalidConfig(f"style dimension must be a whole number in 1..1024, not {cfg.cs_style_dim}")
    for name in ("cs_ce_weight", "cs_prior_weight", "cs_entropy_weight", "cs_style_weight", "cs_recon_weight"):
        value = getattr(cfg, name)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
            raise InvalidConfig(f"{name.removeprefix('cs_').replace('_', ' ')} must be a finite number >= 0, not {value}")
    if cfg.cs_ce_weight == 0 and cfg.cs_prior_weight == 0 and cfg.cs_style_weight == 0 and cfg.cs_recon_weight == 0:
        raise InvalidConfig("content-style needs at least one non-zero loss weight")


OBJECTIVES[NAME] = ObjectiveEntry(ContentStyleMethod, "content-style (seed 001): CE on the labelled samples, content/style "
                                  "priors and reconstruction on all; semi-supervised with --labels N")
