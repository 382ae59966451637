"""Which exceptions are the user's to fix (printed as one line by the CLI) rather than bugs."""

from __future__ import annotations


def user_facing_errors() -> tuple[type[BaseException], ...]:
    from lmrec.client.client import ClientError
    from lmrec.export.cleaning import DataError
    from lmrec.export.encoder_export import ParityError
    from lmrec.server.bundle import BundleError
    from lmrec.server.triton_launcher import TritonError

    return (DataError, ParityError, BundleError, TritonError, ClientError, OSError, ValueError)
