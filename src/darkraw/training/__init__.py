"""Training and measuring networks: datasets of pairs, the training loop, SID's file lists,
evaluation against the classic pipeline, the seed's experiment.

Imports every layer below it; only the commands import it.
"""
