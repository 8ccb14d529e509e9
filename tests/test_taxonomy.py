import numpy as np
import pytest

from carcheck.data.taxonomy import (IGNORE, MAPPINGS, TAXONOMIES, Taxonomy, TaxonomyError, TaxonomyMapping, get_mapping,
                                    get_taxonomy)


def test_every_declared_mapping_covers_every_source_class():
    assert MAPPINGS, "no mappings declared"
    for (src, dst), m in MAPPINGS.items():
        assert set(m.table) == set(TAXONOMIES[src].classes), (src, dst)
        for target in m.table.values():
            assert target is None or target == IGNORE or target in TAXONOMIES[dst].classes


def test_incomplete_mapping_is_rejected():
    a = Taxonomy("a", ("x", "y"), source="test")
    b = Taxonomy("b", ("z",), source="test")
    with pytest.raises(TaxonomyError, match="unmapped=\\['y'\\]"):
        TaxonomyMapping(a, b, {"x": "z"})
    with pytest.raises(TaxonomyError, match="unknown_target"):
        TaxonomyMapping(a, b, {"x": "z", "y": "nope"})
    TaxonomyMapping(a, b, {"x": "z", "y": None})  # explicit drop is fine


def test_known_sizes_of_the_papers_taxonomies():
    assert get_taxonomy("dsmlr_parts").num_classes == 18
    assert get_taxonomy("reduced_parts").num_classes == 13
    assert get_taxonomy("lplenka_parts").num_classes == 5
    assert get_taxonomy("cardd_damage").num_classes == 6
    assert get_taxonomy("socar_state").num_classes == 14
    with pytest.raises(TaxonomyError):
        get_taxonomy("nope")


def test_flip_permutation_swaps_the_cars_own_left_and_right():
    t = get_taxonomy("dsmlr_parts")
    perm = t.flip_permutation()
    l, r = t.index("left_mirror") + 1, t.index("right_mirror") + 1
    assert perm[l] == r and perm[r] == l
    assert perm[t.index("hood") + 1] == t.index("hood") + 1
    assert perm[0] == 0
    assert sorted(perm) == list(range(t.num_classes + 1))


def test_lut_maps_masks_and_drops_to_background():
    m = get_mapping("lensor_damage", "damage_type")
    lut = np.array(m.lut())
    src = get_taxonomy("lensor_damage")
    mask = np.array([0, src.index("severe-dent") + 1, src.index("minor-scratch") + 1, src.index("moderate-broken") + 1])
    out = lut[mask]
    dst = get_taxonomy("damage_type")
    assert out.tolist() == [0, dst.index("dent") + 1, dst.index("scratch") + 1, dst.index("broken") + 1]
    drop = np.array(get_mapping("dsmlr_parts", "lplenka_parts").lut())
    assert drop[get_taxonomy("dsmlr_parts").index("wheel") + 1] == 0


def test_make_of_keeps_two_word_makes_whole():
    from carcheck.data.taxonomy import make_of

    assert make_of("Audi_A5_Coupe_2012") == "Audi"
    assert make_of("Mercedes-Benz_C-Class_Sedan_2012") == "Mercedes-Benz"
    assert make_of("Land_Rover_LR2_SUV_2012") == "Land Rover"
    assert make_of("Aston_Martin_V8_Vantage_Coupe_2012") == "Aston Martin"
    assert make_of("AM_General_Hummer_SUV_2000") == "AM General"
