"""Core messages in the app's words (issue 17.7): a message that names a CLI flag ("--steps S or
--epochs E") names the page's control instead when the app shows it. The core keeps one message for
both (the CLI prints it as it is); the pages pass what they show through `ui_message`.
"""
from __future__ import annotations

# CLI phrase in a core message -> the control the pages offer for it (applied longest phrase first)
UI_WORDS = (
    ("--steps S or --epochs E", "a number of “Steps” (under Budget)"),
    ("lower it or raise --n-per-class", "lower “Budget (images)” or use a larger dataset"),
    ("--n-per-class", "“Images per class”"),
    ("--steps", "“Steps”"),
    ("--seeds", "“Seeds”"),
    ("--objective", "“Objectives”"),
    ("--batch-size", "“Batch size”"),
    ("--weights PATH", "“Weights: file”"),
    ("--weights random", "“Weights: random”"),
    ("--labels N", "a labelled-image count"),
    ("--image-size", "“Image size”"),
    ("--labels", "“Labelled training images”"),
    ("--trainable", "“Trainable blocks”"),
)


def ui_message(exc_or_text) -> str:
    """The message of an EmbedLabError (or a string) with CLI flags replaced by the app's control names."""
    text = str(exc_or_text)
    for flag, words in sorted(UI_WORDS, key=lambda pair: -len(pair[0])):
        text = text.replace(flag, words)
    return text
