"""Report JSON stays readable: a schema 1.3 report (flat config, verification threshold in it)
validates as the current CaseReport, with its numbers where the new schema keeps them."""

from carcheck.schema import SCHEMA_VERSION, AssessConfig, CaseReport

OLD_13 = {
    "schema_version": "1.3", "case_id": "demo", "created": "2026-12-01T11:50:50+00:00", "carcheck_version": "0.1.0",
    "models": {"segmenter": "segmenter_parts_lite0.safetensors", "backbone": "lite0"},
    "config": {"vehicle_threshold": 0.035, "part_coverage_threshold": 0.25, "min_region_fraction": 0.001,
               "visible_part_fraction": 0.005, "closeup_max_parts": 3, "size_thresholds": [0.05, 0.3],
               "review_threshold": 0.6, "longest_side_px": 448, "precision": "bf16", "engine": "torch", "threads": 2,
               "presence_threshold": 0.5, "clean_threshold": None, "verification_threshold": 0.8036},
    "summary": {"photos": 1, "assessed": 1, "skipped": 0, "failed": 0, "findings": 0, "findings_for_review": 0,
                "damaged_parts": [], "verdict": "No damage found on 1 assessed photo(s)."},
    "findings": [],
    "photos": [{"path": "a.jpg", "status": "assessed", "width": 640, "height": 480,
                "detections": [{"part": "hood", "damage": "dent", "area_px": 10.0, "area_fraction_of_part": 0.01,
                                "area_fraction_of_image": 0.001, "size_class": "small", "c_base": 0.7,
                                "bbox_xywh": [1, 2, 3, 4]}]}],
    "privacy": "blurred",
}


def test_a_schema_13_report_reads_as_the_current_schema():
    r = CaseReport.model_validate(OLD_13)
    assert r.schema_version == "1.3" != SCHEMA_VERSION
    c = r.config
    assert isinstance(c, AssessConfig)
    assert (c.fusion.min_region_fraction, c.fusion.closeup_max_parts, c.fusion.size_thresholds) == (0.001, 3, (0.05, 0.3))
    assert (c.longest_side, c.review_threshold, c.precision, c.threads) == (448, 0.6, "bf16", 2)
    assert c.clean_threshold == AssessConfig().clean_threshold  # None in 1.3 (no head): the default now
    assert r.model_thresholds == {"verification": 0.8036}
    assert r.photos[0].detections[0].reassigned_from is None and r.photos[0].detections[0].review_reasons == []
    # and it round-trips through the current schema
    assert CaseReport.model_validate_json(r.model_dump_json()) == r


def test_the_config_rejects_unknown_and_out_of_range_settings():
    import pytest
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="review_treshold"):
        AssessConfig(review_treshold=0.4)  # a typo is an error, not a silently ignored setting
    with pytest.raises(ValidationError):
        AssessConfig(review_threshold=1.5)
    with pytest.raises(ValidationError):
        AssessConfig(engine="tpu")
