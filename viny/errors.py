"""User-facing errors. The CLI prints these as one line (no traceback)."""


class VinyError(Exception):
    """Bad input or configuration: the message names the file or parameter and what to do."""


class DataError(VinyError):
    """A dataset root, layout or file that cannot be used."""


class TrainingDiverged(VinyError):
    """A non-finite loss; the last good checkpoint is kept."""
