"""Source of the Triton model repository: generated configs and the thin python-backend adapters.

`lmrec build` writes a served repository (this config + `N/` version folders with weights) into its
output directory; the version folders here are git-ignored build outputs.
"""
