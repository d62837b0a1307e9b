"""Raw directions from text: combinations of decoder directions and vector files confined to the workspace."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from analysis.steering.directions import combine, is_feature, parse_terms, read_vector
from store.errors import InputError


def test_terms_and_single_features():
    assert parse_terms("2*topk-l6:3 - 0.5*mp.x:7+ topk-l6:1") == [
        (2.0, "topk-l6", 3), (-0.5, "mp.x", 7), (1.0, "topk-l6", 1)]
    assert parse_terms("-1e-1 * a:0") == [(-0.1, "a", 0)]
    assert is_feature(" topk-l6:12 ") == ("topk-l6", 12) and is_feature("2*topk-l6:12") is None
    for bad in ("", "topk-l6", "a:1 b:2", "2*", "a:-1"):
        with pytest.raises(InputError):
            parse_terms(bad)


def test_combination_is_the_sum_of_scaled_decoder_rows(dicts):
    vector, hook = combine(parse_terms("2*topk:3 - relu:5"), dicts)
    rows = [dicts[name].target(feature) for name, feature in (("topk", 3), ("relu", 5))]
    expected = 2 * rows[0].unit * rows[0].norm - rows[1].unit * rows[1].norm
    torch.testing.assert_close(torch.tensor(vector, dtype=torch.float32), expected, atol=1e-6, rtol=1e-5)
    assert hook == dicts["topk"].hook
    with pytest.raises(InputError, match="zero vector"):
        combine(parse_terms("topk:3 - topk:3"), dicts)
    with pytest.raises(InputError, match="unknown dictionary 'nope'"):
        combine(parse_terms("nope:3"), dicts)


def test_vector_files_stay_inside_the_workspace(tmp_path):
    root = tmp_path / "ws"
    root.mkdir()
    np.save(root / "v.npy", np.arange(4.0))
    np.save(tmp_path / "out.npy", np.arange(4.0))
    assert read_vector("v.npy", root) == (0.0, 1.0, 2.0, 3.0) == read_vector(str(root / "v.npy"), root)
    with pytest.raises(InputError, match="outside the workspace"):
        read_vector("../out.npy", root)
    (root / "link.npy").symlink_to(tmp_path / "out.npy")
    with pytest.raises(InputError, match="outside the workspace"):
        read_vector("link.npy", root)
    np.save(root / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(InputError, match="cannot read"):
        read_vector("obj.npy", root)
