"""Copy detection: do the "quotes" of an explanation occur in the source text, beyond chance?

Holds the word-run engine (:mod:`~nla_probe.copying.wordruns`: words, normalizers, the longest
shared run), the null sources drawn from other documents (:mod:`~nla_probe.copying.nulls`), the
detection itself, in memory or streamed to parquet (:mod:`~nla_probe.copying.detection`), and its
summaries with clustered CIs (:mod:`~nla_probe.copying.summary`).  Needs no model.

May import: :mod:`nla_probe.text`, :mod:`nla_probe.analysis` and the core modules.
"""

from nla_probe.copying.detection import (
                                         RESULT_VERSION,
                                         CopyResult,
                                         CopySettings,
                                         copy_detection,
                                         copy_detection_to_parquet,
                                         iter_copy_detection,
)
from nla_probe.copying.nulls import doc_derangement, null_sources, source_context
from nla_probe.copying.summary import summarize_copying, summarize_span_counts, summarize_spans
from nla_probe.copying.wordruns import (
                                         DEFAULT_NORMALIZER,
                                         PUNCTUATION_MODES,
                                         SharedRun,
                                         WordNormalizer,
                                         Words,
                                         longest_shared_run,
                                         shared_run_lengths,
)

__all__ = [
    "DEFAULT_NORMALIZER", "PUNCTUATION_MODES", "RESULT_VERSION", "CopyResult", "CopySettings", "SharedRun",
    "WordNormalizer", "Words", "copy_detection", "copy_detection_to_parquet", "doc_derangement",
    "iter_copy_detection", "longest_shared_run", "null_sources", "shared_run_lengths", "source_context",
    "summarize_copying", "summarize_span_counts", "summarize_spans",
]
