"""Datasets: OpenKE reader, modality feature tables, the embedded synthetic graph, statistics.

Triples are ``LongTensor[n, 3]`` with columns (head, relation, tail).  See ``docs/architecture.md``.
"""

from dhns_search.data.features import (
    PUBLISHED_TABLES,
    FeatureTable,
    discover_feature_files,
    load_feature_table,
    published_name,
    table_warnings,
)
from dhns_search.data.openke import (
    KGDataset,
    cache_root,
    check_splits,
    dataset_warnings,
    load_dataset,
    load_from_config,
)
from dhns_search.data.stats import DatasetSummary, relation_categories, summarize
from dhns_search.data.synth import SyntheticGraph, generate, synthesize

__all__ = [
    "PUBLISHED_TABLES",
    "DatasetSummary",
    "FeatureTable",
    "KGDataset",
    "SyntheticGraph",
    "cache_root",
    "check_splits",
    "dataset_warnings",
    "discover_feature_files",
    "generate",
    "load_dataset",
    "load_feature_table",
    "load_from_config",
    "published_name",
    "relation_categories",
    "summarize",
    "synthesize",
    "table_warnings",
]
