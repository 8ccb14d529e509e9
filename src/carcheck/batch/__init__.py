"""Fleet batches: many cases (one sub-folder each) assessed in one resumable run (``carcheck batch``)."""

from .run import SUMMARY_FIELDS, CaseResult, find_cases, read_complete, run_batch, write_summary

__all__ = ["SUMMARY_FIELDS", "CaseResult", "find_cases", "read_complete", "run_batch", "write_summary"]
