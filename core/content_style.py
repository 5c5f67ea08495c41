"""Seed 001: semi-supervised fine-tuning by content-style decomposition (Drozdova et al.).

    $ python -m core train --backbone test_vit --dataset mnist-stripes --objective content-style --labels 100

The backbone's pooled embedding (the paper's latent [CLS] token) y = f(x) [B, D] is split by two heads
and put back together:

    content  z = W_c y           [B, C] class logits,  c = softmax(z)
    style    s = g_s(y)          [B, S] low-dimensional (S = cs_style_dim, 8 by default)
    decoder  y_hat = g_d([c, s]) [B, D] reconstruction of the latent token

and trained with (weights are the cs_*_weight settings, TrainConfig's `content_style` section; a batch has labelled mask M, |M| = m):

    L = w_ce  * 1/m sum_{i in M} CE(z_i, y_i)                 supervised, labelled only
      + w_pri * R_c(q(c) -> pi)                                content codes -> the class prior (all samples)
      + w_sty * R_s(q(s) -> N(0, I))                           style codes -> standard normal (all samples)
      + w_rec * 1/B sum_i ||y_hat_i - y_i||^2 / (1/B sum_i ||y_i - y_bar||^2)

`cs_regulariser` picks the two prior-matching terms R_c, R_s:

* "adversarial" (default, the paper's): as in adversarial autoencoders, a small discriminator per code
  estimates the density ratio behind KL(q || prior). D_c tells softmax content codes of the batch from
  samples of a smoothed categorical prior (a class k ~ pi, relaxed to the simplex with Gumbel-softmax at
  temperature PRIOR_TEMPERATURE: mostly near-one-hot vectors); D_s tells style codes from N(0, I) draws.
  R_c, R_s are the generators' non-saturating losses -log D(code).
* "moments": closed-form surrogates of the same two KLs (kept as an option, named as such):
  content KL(c_bar || pi) + w_ent * mean_i H(c_i) (the marginal matches pi and every c_i is one-hot,
  which is all a categorical prior asks; with pi uniform log C - I(x; c), the RIM / IIC objective), style
  the KL of the batch's Gaussian fit 1/2 (tr Sigma + mu'mu - S - log det Sigma) (+ 1e-3 I). Cheap and
  smooth, but the style term is biased at small batch: a true N(0, I) sample scores on average 16.7 at
  batch 4, 1.76 at 16, 0.087 at 256 (S = 8, mean of 2000 batches, `style_surrogate_bias`), because a
  B-sample covariance is singular for B <= S (its log det is then set by the ridge) and its log det is
  biased low for any finite B. The adversarial terms have no such closed-form bias: D only sees samples.

How both players are trained with one loss and one optimizer step (core/train.py runs one loss per
step; the discriminators' parameters are in the stage's head params). The returned loss is a sum of
two parts whose gradients reach only their own player:

    generator part      w_pri * -log D_c(c) + w_sty * -log D_s(s)    D evaluated with *detached* weights
                                                                     (torch.func.functional_call): the
                                                                     gradient reaches the codes, never D
    discriminator part  BCE(D(prior sample), 0.9) + BCE(D(sg(code)), 0) codes detached: reaches D only

So the generator gradient never trains a discriminator toward fooling itself, and the discriminator
loss never moves the encoder (the run's logged `loss` is the sum of both parts; each term is logged
on its own too, see below). A gradient-reversal layer would do the same with one forward, but only
for the saturating minimax loss (its reversed gradient is that of log(1 - D)), which gives the encoder
almost no signal while D wins; the two-part form keeps the non-saturating generator loss.

Stability over 20..1000 steps (tests/test_content_style.py plays the game for 1000 steps on fixed
embeddings; both discriminator losses settle near the equilibrium 2 log 2 = 1.39 and the generator
terms near 0.8, with no oscillation or blow-up). What it took:
* tiny discriminators (one hidden layer of DISC_HIDDEN, LeakyReLU), spectrally normalised: D is
  Lipschitz, cannot saturate, and its gradient to the codes stays bounded;
* a Lipschitz bound in the code's own units (the input is scaled by CONTENT_LIPSCHITZ / STYLE_LIPSCHITZ):
  the simplex is only sqrt(2) wide, so a 1-Lipschitz D_c could hardly score two codes apart and gave the
  encoder no signal;
* a sharp smoothed-categorical prior (Gumbel-softmax temperature PRIOR_TEMPERATURE = 0.05: near-one-hot
  but continuous). At 0.5 the prior's samples are far from one-hot and the matched codes unconfident.
  Measured on the 20-class blobs of the tests (5 labels a class, 300 steps, test accuracy, seeds 0 / 1;
  CE 0.93 / 0.89, moments 1.00 / 1.00): temperature 0.5 with bound 1: 0.89 / 0.84, with bound 5:
  0.73 / 0.71; temperature 0.1 with bound 1: 0.95 / 0.91, bound 5: 0.98 / 0.98; 0.05 with 10: 0.99 / 0.99;
* one-sided label smoothing (real target REAL_TARGET = 0.9).
No warm-up of the adversarial weight and no separate discriminator learning rate were needed: a fresh
spectrally normalised D scores about 0 on everything, so -log D starts near log 2 and grows only as D
learns. The unweighted terms of every step, the discriminators' losses included, are exposed by
`step_metrics` and stored as run metrics (cs_ce, cs_prior, cs_style, cs_recon, cs_d_content, cs_d_style).

The reconstruction target is the latent token itself, as in the paper (cs_recon_detach=False): the
gradient reaches y through both y_hat and y, so a trainable backbone is pulled toward embeddings that
(content, style) explain. Normalising by the batch's total variance (kept in the graph, i.e. the loss
is 1 - R^2) makes that faithful version safe: shrinking or collapsing y no longer lowers the loss (it
is scale-free, and a decoder outputting the batch mean scores 1), which is why earlier versions had
to detach the target. cs_recon_detach=True restores the detached target (then only "make y decodable
from (content, style)" reaches the encoder). With a frozen backbone the two are the same.

The style bottleneck (S = 8 << D) forces the class information needed for reconstruction through
the content code, which is what lets unlabelled samples shape the content head.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call
from torch.nn.utils.parametrizations import spectral_norm

from .config import CS_PREFIX as PREFIX, ContentStyleConfig  # noqa: F401  (the settings live with TrainConfig)
from .errors import InvalidConfig
from .objectives import Method, Stage, labelled_ce, register_objective

NAME = "content-style"
REGULARISERS = ("adversarial", "moments")  # cs_regulariser: the paper's discriminators | closed-form surrogates
STYLE_RIDGE = 1e-3  # added to the style covariance so a small batch still has a finite log det
DISC_HIDDEN = 64  # discriminator width: small, so D cannot run away from the heads it plays against
REAL_TARGET = 0.9  # one-sided label smoothing of the discriminators' "real" target
CONTENT_LIPSCHITZ = 10.0  # D_c's Lipschitz bound: the simplex is only sqrt(2) wide, at 1 D_c could not tell anything
STYLE_LIPSCHITZ = 1.0  # D_s's: style codes live at the scale of N(0, I)
PRIOR_TEMPERATURE = 0.05  # Gumbel-softmax temperature of the content prior's samples (smoothed categorical)
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
    """Share of the batch's embedding variance the decoder fails to explain (1 - R^2).

        L = (1/B sum_i ||y_hat_i - y_i||^2) / (1/B sum_i ||y_i - y_bar||^2 + eps)

    The gradient reaches the target (the latent token) too, unless `detach_target`: the ratio is
    scale-free, so the encoder cannot lower it by shrinking y (see the module docstring).

    Args (forward):
        recon: [B, D] decoder output; target: [B, D] encoder embedding.
    Returns: scalar loss.
    """

    def __init__(self, eps: float = 1e-6, detach_target: bool = False):
        super().__init__()
        self.eps = eps
        self.detach_target = detach_target

    def forward(self, recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = (target.detach() if self.detach_target else target).float()
        err = (recon.float() - target).pow(2).sum(-1).mean()
        var = (target - target.mean(0)).pow(2).sum(-1).mean()
        return err / (var + self.eps)


class Discriminator(nn.Module):
    """D: [B, K] code -> [B] logit of "drawn from the prior". Two spectrally normalised linear layers."""

    def __init__(self, dim: int, hidden: int = DISC_HIDDEN, lipschitz: float = 1.0):
        super().__init__()
        self.net = nn.Sequential(spectral_norm(nn.Linear(dim, hidden)), nn.LeakyReLU(0.2),
                                 spectral_norm(nn.Linear(hidden, 1)))  # K -> H -> 1
        self.lipschitz = lipschitz  # input scale = the Lipschitz bound of D in the code's own units

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.lipschitz * x.float()).squeeze(-1)

    def frozen(self, x: torch.Tensor) -> torch.Tensor:
        """D(x) with detached weights: the gradient reaches x and never D (the generator's view of D)."""
        weights = {n: p.detach() for n, p in self.net.named_parameters()}
        return functional_call(self.net, weights, (self.lipschitz * x.float(),)).squeeze(-1)


class AdversarialPrior(nn.Module):
    """Match q(code) to a prior by a discriminator game; returns (generator loss, discriminator loss).

        generator      -log D(code)                                  (non-saturating; reaches the code only)
        discriminator  BCE(D(p sample), REAL_TARGET) + BCE(D(sg(code)), 0)   (reaches D only)

    Args:
        dim: code size K; sample: (n, device) -> [n, K] draws of the prior.
    Args (forward):
        codes: [B, K] codes of all samples in the batch.
    """

    def __init__(self, dim: int, sample, lipschitz: float = 1.0):
        super().__init__()
        self.critic = Discriminator(dim, lipschitz=lipschitz)
        self.sample = sample

    def forward(self, codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            real = self.sample(len(codes), codes.device)
        d_real, d_fake = self.critic(real), self.critic(codes.detach())
        disc = (F.binary_cross_entropy_with_logits(d_real, torch.full_like(d_real, REAL_TARGET))
                + F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake)))
        g = self.critic.frozen(codes)
        gen = F.binary_cross_entropy_with_logits(g, torch.ones_like(g))
        return gen, disc


def smoothed_categorical(prior: torch.Tensor, temperature: float = PRIOR_TEMPERATURE):
    """Sampler of the content prior: class k ~ prior, relaxed onto the simplex (Gumbel-softmax) -> [n, C]."""

    def sample(n: int, device) -> torch.Tensor:
        logits = torch.log(prior.to(device)).expand(n, -1)
        return F.gumbel_softmax(logits, tau=temperature, hard=False)

    return sample


def standard_normal(dim: int):
    """Sampler of the style prior N(0, I_dim) -> [n, dim]."""
    return lambda n, device: torch.randn(n, dim, device=device)


@torch.no_grad()
def style_surrogate_bias(batch_sizes=(4, 16, 256), dim: int = 8, trials: int = 200, seed: int = 0) -> dict[int, float]:
    """Mean moment-surrogate style score of batches drawn from N(0, I) itself, per batch size.

    An unbiased KL estimate would give ~0 at every size; the Gaussian-fit KL does not (its log det of a
    B-sample covariance blows up for B <= dim). What the Learn page shows next to the adversarial term.
    """
    gen = torch.Generator().manual_seed(seed)
    loss = StyleNormalLoss()
    return {b: float(torch.stack([loss(torch.randn(b, dim, generator=gen)) for _ in range(trials)]).mean())
            for b in batch_sizes}


# ------------------------------------------------------------------------------------- method
def check_config(cfg) -> None:
    """Validate the content-style settings of a TrainConfig (its `check` trait, run by core.train.validate
    after the RANGES rows, which cover the numeric ones)."""
    cs = cfg.content_style
    if cs.regulariser not in REGULARISERS:
        raise InvalidConfig(f"content-style regulariser must be one of {', '.join(REGULARISERS)}, not {cs.regulariser!r}")
    if not isinstance(cs.recon_detach, bool):
        raise InvalidConfig(f"cs_recon_detach must be true or false, not {cs.recon_detach!r}")
    if cs.ce_weight == 0 and cs.prior_weight == 0 and cs.style_weight == 0 and cs.recon_weight == 0:
        raise InvalidConfig("content-style needs at least one non-zero loss weight")


@register_objective(NAME, "content-style: CE on the labelled samples, adversarial content/style priors and "
                    "reconstruction on all; semi-supervised with --labels N", label="Content-style", colour="#B279A2",
                    help="Content-style: semi-supervised content + style heads, uses unlabelled images",
                    trained_space="content", stages=(NAME,), semi_supervised=True, check=check_config,
                    options=lambda cfg: cfg.content_style.flat())
class ContentStyleMethod(Method):
    """`content-style`: content head (the classifier), style head and decoder on the encoder embedding,
    plus (cs_regulariser="adversarial") one discriminator per code."""

    name = NAME

    def __init__(self, backbone, encoder, num_classes, *, cs_style_dim: int = 8, cs_ce_weight: float = 1.0,
                 cs_prior_weight: float = 1.0, cs_entropy_weight: float = 1.0, cs_style_weight: float = 1.0,
                 cs_recon_weight: float = 1.0, cs_hidden: int = 256, cs_regulariser: str = "adversarial",
                 cs_recon_detach: bool = False, **_):
        super().__init__(backbone, encoder, num_classes)
        if cs_regulariser not in REGULARISERS:
            raise InvalidConfig(f"content-style regulariser must be one of {', '.join(REGULARISERS)}, not {cs_regulariser!r}")
        d = backbone.embed_dim
        self.content_head = nn.Linear(d, num_classes)  # D -> C, the same capacity as CE's linear head
        self.style_head = nn.Sequential(nn.Linear(d, cs_hidden), nn.GELU(), nn.Linear(cs_hidden, cs_style_dim))  # D -> H -> S
        self.decoder = nn.Sequential(nn.Linear(num_classes + cs_style_dim, cs_hidden), nn.GELU(),
                                     nn.Linear(cs_hidden, d))  # C + S -> H -> D
        self.regulariser = cs_regulariser
        prior = torch.full((num_classes,), 1.0 / num_classes)  # EmbedLab's splits are class-balanced
        if cs_regulariser == "adversarial":
            self.content_adv = AdversarialPrior(num_classes, smoothed_categorical(prior), lipschitz=CONTENT_LIPSCHITZ)
            self.style_adv = AdversarialPrior(cs_style_dim, standard_normal(cs_style_dim), lipschitz=STYLE_LIPSCHITZ)
        else:
            self.content_prior = ContentPriorLoss(num_classes, prior=prior, entropy_weight=cs_entropy_weight)
            self.style_normal = StyleNormalLoss()
        self.reconstruction = ReconstructionLoss(detach_target=cs_recon_detach)
        self.weights = {"ce": cs_ce_weight, "prior": cs_prior_weight, "style": cs_style_weight, "recon": cs_recon_weight}
        self._last: dict[str, torch.Tensor] = {}

    def stages(self):
        heads = [*self.content_head.parameters(), *self.style_head.parameters(), *self.decoder.parameters()]
        if self.regulariser == "adversarial":  # the discriminators train in the same step (see the module docstring)
            heads += [*self.content_adv.parameters(), *self.style_adv.parameters()]
        return [Stage(NAME, 1.0, head_params=heads)]

    def decompose(self, emb: torch.Tensor) -> dict[str, torch.Tensor]:
        """[B, D] embedding -> logits [B, C], content [B, C] (softmax), style [B, S], recon [B, D]."""
        logits = self.content_head(emb)
        content = logits.float().softmax(-1)
        style = self.style_head(emb)
        recon = self.decoder(torch.cat([content.to(style.dtype), style], dim=-1))
        return {"logits": logits, "content": content, "style": style, "recon": recon}

    def terms(self, emb: torch.Tensor, batch) -> dict[str, torch.Tensor]:
        """The unweighted loss terms of one batch (see the module docstring): ce, prior, style, recon, and
        for the adversarial regulariser the discriminators' own losses d_content, d_style."""
        parts = self.decompose(emb)
        out = {"ce": labelled_ce(parts["logits"], batch), "recon": self.reconstruction(parts["recon"], emb)}
        if self.regulariser == "adversarial":
            out["prior"], out["d_content"] = self.content_adv(parts["content"])
            out["style"], out["d_style"] = self.style_adv(parts["style"])
        else:
            out["prior"], out["style"] = self.content_prior(parts["logits"]), self.style_normal(parts["style"])
        return out

    def loss(self, stage, batch):
        terms = self.terms(self.encode(batch.views[0]), batch)
        self._last = {k: v.detach() for k, v in terms.items()}
        total = sum(self.weights[k] * terms[k] for k in self.weights if self.weights[k])
        # the discriminators' part: its gradient reaches only their weights (codes detached), and a
        # discriminator whose generator term is off has nothing to learn
        if self.weights["prior"] and "d_content" in terms:
            total = total + terms["d_content"]
        if self.weights["style"] and "d_style" in terms:
            total = total + terms["d_style"]
        return total

    def step_metrics(self) -> dict[str, torch.Tensor]:
        """The last step's unweighted terms (detached, on device), logged as cs_<term> metrics."""
        return {f"cs_{k}": v for k, v in self._last.items()}

    def classify(self, emb, stage=None):
        return self.content_head(emb)

    def outputs(self, emb):
        parts = self.decompose(emb)
        return {"encoder": emb, "content": parts["content"], "style": parts["style"]}
