"""Which exceptions are the user's to fix (printed as one line by the CLI) rather than bugs."""

from __future__ import annotations


def user_facing_errors() -> tuple[type[BaseException], ...]:
    from lmrec.client.client import ClientError
    from lmrec.export.cleaning import DataError
    from lmrec.export.encoder_export import ParityError
    from lmrec.server.bundle import BundleError
    from lmrec.server.event_store import EventStoreError
    from lmrec.server.model_control import ModelControlError
    from lmrec.server.triton_launcher import TritonError

    # EventStoreError: a --state-dir whose events file is not a usable store; ModelControlError: a Triton
    # that does not answer at --triton-url, or refuses to load the bundle's models.
    return (DataError, ParityError, BundleError, TritonError, ClientError, EventStoreError, ModelControlError,
            OSError, ValueError)
