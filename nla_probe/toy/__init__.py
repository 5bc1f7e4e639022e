"""The toy NLA pairs shipped in ``data/toy/`` (demonstration and testing only).

Two families, each built by :mod:`nla_probe.toy.build` from the committed corpus
(``data/corpus/``) and written in the released checkpoint layout:

- ``qwen_small`` (default): Qwen2 architecture, d_model 128, 4 blocks, K = 2, 4,096-token BPE.
- ``qwen_tiny``: Qwen2 architecture, d_model 96, 4 blocks, K = 2, 3,000-token BPE.

``data/toy/<family>/{av,ar}`` are the checkpoints, ``data/toy/<family>/eval.parquet`` the
held-out activations and ``data/toy/<family>/metrics.json`` the measured numbers; paths are
resolved by :mod:`nla_probe.defaults`. The model card is ``docs/toy.md``.
"""
