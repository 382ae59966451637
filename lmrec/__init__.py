"""lmrec: language-model recommender.

`lmrec` holds what both sides share (text builders, the gRPC API stubs, the CLI entry);
`lmrec.export` is the offline side, `lmrec.server` the online side, `lmrec.client` the client.
"""

__version__ = "0.1.0"
