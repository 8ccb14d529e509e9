"""The /v1 routers, one per resource: :mod:`.cases` (cases, photos, report), :mod:`.assessments`
(jobs) and :mod:`.ops` (/healthz, /metrics, unversioned)."""
