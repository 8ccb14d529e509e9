"""Human review of assessed cases (issue 18): reviewer accounts and sessions, decisions on findings
(stored with before -> after in the audit log), added damage, the reviewed state of a case, review
statistics and the review threshold they suggest, and the COCO export for retraining."""
