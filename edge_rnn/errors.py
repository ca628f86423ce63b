"""Project exceptions: every user-facing failure is one of these, with a fix in the message."""


class EdgeRNNError(Exception):
    """Base class; the CLI prints its message on one line and exits with code 2."""


class ModelFileError(EdgeRNNError):
    """A model file is missing, corrupt, or does not follow the model-file contract."""


class CorpusError(EdgeRNNError):
    """A text or corpus cannot be used (empty, binary, not UTF-8, ...)."""


class VocabularyError(EdgeRNNError):
    """Token ids or characters that do not fit the model's vocabulary."""


class CheckpointError(EdgeRNNError):
    """A training checkpoint is missing, corrupt, or belongs to another model."""


class StateError(EdgeRNNError):
    """A stream state that belongs to another model or has the wrong shape."""


class SettingsError(EdgeRNNError):
    """Impossible settings (k2 < k1, negative learning rate, unknown rule, ...)."""


class DivergenceError(EdgeRNNError):
    """Adaptation diverged and could not be recovered by rolling back."""
