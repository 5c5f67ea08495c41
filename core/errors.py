"""User-facing errors.

Every failure a user can cause (a bad name, a bad setting, a bad file, weights that cannot be
fetched) is raised as an `EmbedLabError` whose message is one plain sentence naming the thing and
what to do. The CLI prints it on one line and exits 2; the app shows it in an `st.error` box.
"""


class EmbedLabError(Exception):
    """Base class: the message is meant for the user, not for a traceback."""


class UnknownName(EmbedLabError, KeyError):
    """A backbone, dataset, objective or run name that does not exist."""

    def __str__(self) -> str:  # KeyError would otherwise wrap the message in quotes
        return str(self.args[0]) if self.args else ""


class InvalidConfig(EmbedLabError, ValueError):
    """A setting outside its valid range (NaN learning rate, tau <= 0, zero budget, ...)."""


class WeightsUnavailable(EmbedLabError):
    """Pretrained weights were asked for but cannot be fetched or read."""


class DatasetError(EmbedLabError):
    """A dataset that cannot be built, downloaded or imported."""


class UnsafePath(EmbedLabError):
    """A user-supplied name or path that would escape EMBEDLAB_HOME."""


class NotAllowed(EmbedLabError):
    """Workshop mode: someone other than a run's owner or the instructor tried to cancel, delete or resume it."""


class QueueFull(InvalidConfig):
    """Workshop mode: a person already has as many runs waiting as the per-person cap (EMBEDLAB_QUEUE_CAP)."""


class NoCheckpoint(InvalidConfig):
    """A resume of a run with no (usable) checkpoint: it would start over from step 0, so it must be asked for."""
