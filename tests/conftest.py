"""Shared test configuration: offline hub, CPU threads, fixture pairs built once per session."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
# Tiny models: one thread per forward is faster than two contending ones (set before torch loads).
os.environ.setdefault("OMP_NUM_THREADS", "1")
# Checkpoint digests are cached per session, not in the user's ~/.cache.
import tempfile  # noqa: E402

os.environ.setdefault("NLA_PROBE_DIGEST_CACHE", os.path.join(tempfile.mkdtemp(prefix="nla-probe-digests-"),
                                                             "digests.json"))

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def fixture_pairs(tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    """Random-weight AV/AR pairs in the released layout, one per architecture (built once)."""
    from nla_probe.toy.fixtures import make_fixture_pair

    root = tmp_path_factory.mktemp("fixtures")
    return {arch: make_fixture_pair(root / arch, arch) for arch in ("qwen2", "gemma3")}


@pytest.fixture(scope="session")
def qwen_pair(fixture_pairs):
    from nla_probe import load_pair

    return load_pair(*fixture_pairs["qwen2"])


@pytest.fixture(scope="session")
def gemma_pair(fixture_pairs):
    from nla_probe import load_pair

    return load_pair(*fixture_pairs["gemma3"])
