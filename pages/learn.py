"""Learn: the three objectives' losses, what each does to the embedding space, and a temperature toy."""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from core.toy import contrastive_toy, hardest_share_curve
from pages import _seeds_ui as seeds
from pages._ui import OBJECTIVE_COLORS, ensure_router

ensure_router()

CLASS_COLORS = ("#4C78A8", "#E45756")  # anchor's class, the other class
# Where EmbedLab's defaults differ from each method's paper, and why (README: "EmbedLab vs the papers")
DEPTH = ("**Depth.** On a GPU every objective fine-tunes the whole backbone (`trainable` auto → `all`), as the papers "
         "do. On a CPU the default trains the last block only, on cached features of the frozen rest: a 60-step "
         "comparison on 2 cores would otherwise spend most of its time recomputing layers that barely move. Pick "
         "`all` under *Fine-tuning depth* on the Train page (or `--trainable all`) for the papers' setup anywhere.")
VIEWS = ("**Augmentation.** All three objectives share SupCon's augmentation (random resized crop 20–100 %, flip where "
         "the dataset allows it, colour jitter 0.4 / hue 0.1 on 80 % of the images, grey on 20 %; on greyscale data crop, "
         "flip and brightness/contrast jitter), so the runs of one comparison differ only in their loss. Uncached "
         "inputs get fresh views every step; with the feature cache, each training image has a bank of "
         "`feature_views` (default 2; raise it for long runs) cached augmented views, drawn from the run's seed, and every step draws "
         "distinct views from it at random; the clean view is used for evaluation only.")
DIFFERS = {
    "ce": [DEPTH, VIEWS,
           "**Reference.** CE is the standard fine-tuning baseline of the LaCViT and FLYP papers: a linear head on the "
           "embedding, trained with the backbone."],
    "lacvit": [DEPTH,
               "**Fresh views.** The paper (like SupCon) draws two fresh augmentations of every image in every epoch. "
               "On a GPU EmbedLab does the same; on cached features it draws two distinct views per step from a "
               "per-run bank of `feature_views` augmentations, never forcing the clean view in (BENCHMARKS.md measures "
               "the bank size).",
               "**Stage 2.** The paper fine-tunes the encoder with a task head. EmbedLab does that on a GPU "
               "(`stage2_train_encoder` auto → on); on a CPU it keeps the encoder frozen and trains the head only "
               "(a linear probe of the contrastive embedding: no backward pass through the encoder, and "
               "Explore then shows the space stage 1 built). Choose either under *Fine-tuning depth*.",
               "**Head start — EmbedLab's own choice.** The stage-2 head starts as the nearest-class-mean classifier "
               "of the stage-1 embedding (not a fresh random head as in the paper), so accuracy does not drop at the "
               "stage switch of a short budget.",
               "**Budget.** Both stages share one step budget (70 % contrastive by default); the paper trains each "
               "stage on its own schedule."],
    "flyp": [DEPTH,
             "**Towers.** The paper fine-tunes a jointly pre-trained CLIP. Offline, EmbedLab's default `lite0-minilm` "
             "is EfficientNet-Lite0 and MiniLM joined through ImageNet labels (not a CLIP), so its zero-shot start is "
             "weak; online the default is a real CLIP (ViT-B-16 on a GPU).",
             "**Augmentation.** The paper trains with CLIP's mild preprocessing; EmbedLab gives FLYP the same "
             "SupCon-strength views as CE and LaCViT, so the comparison isolates the loss.",
             "**Prompts.** One template in training (the paper's Fig. 4: more do not help), the mean of three for "
             "evaluation; WiSE-FT is swept over 11 alphas after training, as in the paper."],
}


def _differs(method: str) -> None:
    with st.expander("Where EmbedLab's defaults differ from the paper, and why", icon=":material/compare:"):
        st.markdown("\n".join(f"- {line}" for line in DIFFERS[method]))


TAUS = [0.02, 0.03, 0.05, 0.07, 0.1, 0.15, 0.2, 0.3, 0.5, 0.7, 1.0, 2.0]  # slider stops (log-spaced)

st.title("Learn", anchor=False)
st.caption("What each objective optimises, what that does to the embedding space, and the knob that matters most.")

ce, lacvit, flyp, content_style, vecaf = st.tabs(["CE · cross-entropy", "LaCViT · label-aware contrastive",
                                                  "FLYP · finetune like you pretrain", "Content-style · semi-supervised",
                                                  "VeCAF · data selection"])
with content_style:
    seeds.learn_content_style(st)
with vecaf:
    seeds.learn_vecaf(st)

with ce:
    st.latex(r"\mathcal{L}_{\mathrm{CE}} = -\frac{1}{B}\sum_{i=1}^{B} \log "
             r"\frac{\exp(w_{y_i}^{\top} h_i + b_{y_i})}{\sum_{c=1}^{C} \exp(w_c^{\top} h_i + b_c)}")
    st.markdown(
        "A linear head $W$ on the embedding $h_i$ is trained with the backbone's last blocks to score the right class "
        "highest. It only asks that classes end up on the correct side of the head's hyperplanes, so they become "
        "linearly separable, but nothing pulls same-class embeddings together: clusters may stay wide and can keep "
        "spread along directions the head ignores.")
    st.markdown("**Key knob:** the learning rate (and how many blocks are trainable). Too high and the pretrained "
                "features are overwritten; too low and only the head moves.")
    _differs("ce")

with lacvit:
    st.latex(r"\mathcal{L} = \sum_{i} \frac{-1}{|P(i)|} \sum_{p \in P(i)} \log "
             r"\frac{\exp(z_i \cdot z_p / \tau)}{\sum_{a \neq i} \exp(z_i \cdot z_a / \tau)}")
    st.markdown(
        "$z$ are L2-normalised projections of two augmented views of every image; $P(i)$ are the other samples "
        "with $i$'s label. Every same-class pair is pulled together and every other class pushed away on the unit "
        "sphere, so classes form tight, well-separated clusters before any classifier exists; stage 2 then trains a "
        "linear head with cross-entropy (with the encoder, as in the paper, or on the frozen embedding). EmbedLab averages over the anchors that have a positive (same "
        "minimiser, batch-size-independent scale).")
    st.markdown("**Key knob:** the temperature $\\tau$. A negative's share of the push is "
                "$\\exp(s_j/\\tau) / \\sum_k \\exp(s_k/\\tau)$ over the negatives, so a low $\\tau$ concentrates the "
                "gradient on the hardest negatives (tighter, more uniform clusters, noisier), a high $\\tau$ spreads it "
                "evenly. Try it in the toy below.")
    _differs("lacvit")

with flyp:
    st.latex(r"\mathcal{L}_{\mathrm{CLIP}} = \frac{1}{2B}\sum_{i=1}^{B}\Big["
             r"-\log\frac{\exp(s\, x_i \cdot t_i)}{\sum_{j} \exp(s\, x_i \cdot t_j)}"
             r"-\log\frac{\exp(s\, x_i \cdot t_i)}{\sum_{j} \exp(s\, x_j \cdot t_i)}\Big]")
    st.latex(r"\theta(\alpha) = (1-\alpha)\,\theta_{\mathrm{zs}} + \alpha\,\theta_{\mathrm{ft}}")
    st.markdown(
        "FLYP fine-tunes the way CLIP was pre-trained: image embedding $x_i$ is pulled toward the text embedding "
        "$t_i$ of its class prompt (\"a photo of a dress.\") and pushed from the other prompts in the batch, in both "
        "directions, with both towers updated and the learned scale $s = 1/\\tau$. The image space stays aligned with "
        "language, so zero-shot knowledge carries over; WiSE-FT then interpolates the weights between the zero-shot "
        "($\\alpha=0$) and fine-tuned ($\\alpha=1$) models, often beating both under distribution shift.")
    st.markdown("**Key knob:** a small learning rate for both towers, then the WiSE-FT mixing weight $\\alpha$ "
                "(the run stores the whole accuracy-vs-$\\alpha$ curve).")
    _differs("flyp")

st.divider()
st.subheader("Play: temperature and hard negatives", anchor=False)
st.caption("One anchor's label-aware contrastive loss on the unit circle. Move the hard negative and the temperature and "
           "watch where the gradient goes. Computed live by `core.toy.contrastive_toy`.")


@st.fragment
def toy() -> None:
    controls, circle, bars = st.columns([1, 1.3, 1.3], gap="medium")
    with controls:
        tau = st.select_slider("Temperature τ", TAUS, value=0.2, key="toy_tau", persist_state="session",
                               help="Divides every similarity before the softmax.")
        hard = st.slider("Hard negative's angle (°)", 5, 180, 30, step=5, key="toy_hard", persist_state="session",
                         help="Angle between the anchor and the closest point of the other class.")
        spread = st.slider("Positives' spread (°)", 5, 120, 70, step=5, key="toy_spread", persist_state="session",
                           help="How far the two same-class points sit from the anchor.")
    angles = [0, spread, -0.8 * spread, hard, 100, 165, 235]  # the anchor first
    labels = [0, 0, 0, 1, 1, 1, 1]
    t = contrastive_toy(angles, labels, tau)
    names = [f"{'pos' if p else 'neg'} {a % 360:.0f}°" for a, p in zip(angles[1:], t.is_positive)]
    hardest = int(np.argmax(t.negative_share))
    with controls:
        st.metric("Anchor loss", f"{t.loss:.3f}")
        st.metric("Hardest negative's share of the push", f"{100 * t.negative_share[hardest]:.0f}%",
                  help="softmax over the negatives of s/τ")
        st.caption("Lower τ → the hardest negative takes almost all the push; higher τ → all negatives pushed alike.")

    with circle:
        fig = go.Figure()
        theta = np.linspace(0, 2 * np.pi, 200)
        fig.add_scatter(x=np.cos(theta), y=np.sin(theta), mode="lines", line=dict(color="#bbb", width=1),
                        hoverinfo="skip", showlegend=False)
        weight = np.abs(t.grad_coeff) / max(1e-12, np.abs(t.grad_coeff).max())
        anchor = t.points[0]
        for (x, y), w, c, name in zip(t.points[1:], weight, t.grad_coeff, names):
            fig.add_scatter(x=[anchor[0], x], y=[anchor[1], y], mode="lines", hoverinfo="skip", showlegend=False,
                            line=dict(color="#2ca02c" if c < 0 else "#d62728", width=1 + 9 * w), opacity=0.35 + 0.6 * w)
        for cls, label in ((0, "anchor's class"), (1, "other class")):
            mask = t.labels[1:] == cls
            fig.add_scatter(x=t.points[1:][mask, 0], y=t.points[1:][mask, 1], mode="markers+text", name=label,
                            text=[n.split(" ")[1] for n, m in zip(names, mask) if m], textposition="top center",
                            marker=dict(size=14, color=CLASS_COLORS[cls], line=dict(color="white", width=1)))
        fig.add_scatter(x=[anchor[0]], y=[anchor[1]], mode="markers", name="anchor",
                        marker=dict(size=20, symbol="star", color=CLASS_COLORS[0], line=dict(color="black", width=1)))
        step = -t.grad / max(1e-12, np.linalg.norm(t.grad)) * 0.45  # the anchor moves along -grad
        fig.add_annotation(x=anchor[0] + step[0], y=anchor[1] + step[1], ax=anchor[0], ay=anchor[1], xref="x", yref="y",
                           axref="x", ayref="y", showarrow=True, arrowhead=3, arrowwidth=2, arrowcolor="black")
        fig.update_layout(height=360, margin=dict(l=0, r=0, t=30, b=0),
                          title=dict(text="Gradient on the anchor", font=dict(size=14)),
                          xaxis=dict(range=[-1.35, 1.35], visible=False), legend=dict(orientation="h", y=-0.02),
                          yaxis=dict(range=[-1.35, 1.35], visible=False, scaleanchor="x"))
        st.plotly_chart(fig, key="toy_circle", config={"displayModeBar": False})
        st.caption("Line width = gradient weight |∂L/∂s|; green pulls, red pushes; the arrow is the anchor's update.")

    with bars:
        order = np.argsort(-t.similarity)
        share = np.where(t.is_positive, np.nan, 100 * t.negative_share)
        fig = go.Figure()
        fig.add_bar(x=[names[i] for i in order], y=[t.grad_coeff[i] for i in order], name="∂L/∂s",
                    marker_color=["#2ca02c" if t.grad_coeff[i] < 0 else "#d62728" for i in order],
                    text=[("" if np.isnan(share[i]) else f"{share[i]:.0f}%") for i in order], textposition="outside",
                    hovertemplate="%{x}<br>∂L/∂s = %{y:.3f}<extra></extra>")
        fig.update_layout(height=250, margin=dict(l=0, r=0, t=30, b=0), showlegend=False,
                          title=dict(text="Gradient weight per point", font=dict(size=14)),
                          yaxis_title="∂L/∂s (push > 0, pull < 0)")
        st.plotly_chart(fig, key="toy_bars", config={"displayModeBar": False})
        st.caption("% above a negative = its share of the push (softmax of s/τ over the negatives).")
        curve_taus = np.geomspace(0.02, 2.0, 40)
        curve = hardest_share_curve(angles, labels, curve_taus)
        fig = go.Figure()
        fig.add_scatter(x=curve_taus, y=100 * curve, mode="lines", line=dict(color=OBJECTIVE_COLORS["lacvit"], width=2),
                        hovertemplate="τ=%{x:.3f}: %{y:.0f}%<extra></extra>")
        fig.add_scatter(x=[tau], y=[100 * t.negative_share[hardest]], mode="markers", marker=dict(size=10, color="black"),
                        hoverinfo="skip")
        fig.update_layout(height=170, margin=dict(l=0, r=12, t=26, b=0), showlegend=False,
                          title=dict(text="Hardest negative's share vs τ", font=dict(size=13)),
                          xaxis=dict(type="log", title="τ", tickvals=[0.02, 0.05, 0.1, 0.2, 0.5, 1, 2]),
                          yaxis=dict(title="%", range=[0, 105]))
        st.plotly_chart(fig, key="toy_curve", config={"displayModeBar": False})


toy()
