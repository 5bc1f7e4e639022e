"""Weight files of a checkpoint directory: which ones, and whether each is a whole safetensors file."""

import json
import struct

import pytest
import torch
from safetensors.torch import save_file

from nla_probe.errors import ContractError
from nla_probe.nla.weights import (
    check_finite_parameters,
    safetensors_header,
    verify_weight_files,
    weight_files,
)


def _shard(path, **tensors):
    save_file({k: torch.as_tensor(v, dtype=torch.float32) for k, v in tensors.items()}, str(path))
    return path


def _index(d, weight_map):
    (d / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


def test_sharded_checkpoint_lists_every_shard_and_reads_headers(tmp_path):
    _shard(tmp_path / "model-00001-of-00002.safetensors", a=[[1.0, 2.0], [3.0, 4.0]])
    _shard(tmp_path / "model-00002-of-00002.safetensors", b=[5.0, 6.0, 7.0])
    _index(tmp_path, {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"})
    assert [p.name for p in weight_files(tmp_path)] == ["model-00001-of-00002.safetensors",
                                                        "model-00002-of-00002.safetensors"]
    headers = verify_weight_files(tmp_path)
    assert headers["model-00001-of-00002.safetensors"]["a"] == {"dtype": "F32", "shape": [2, 2],
                                                                "data_offsets": [0, 16]}
    assert headers["model-00002-of-00002.safetensors"]["b"]["data_offsets"] == [0, 12]


def test_index_naming_a_missing_or_outside_shard_is_refused(tmp_path):
    _shard(tmp_path / "one.safetensors", a=[1.0])
    _index(tmp_path, {"a": "one.safetensors", "b": "two.safetensors"})
    with pytest.raises(ContractError, match=r"weight_map': expected the 2 shard file\(s\).*missing \['two.safetensors'\]"):
        weight_files(tmp_path)
    _index(tmp_path, {"a": "../one.safetensors"})
    with pytest.raises(ContractError, match="shard file names inside the checkpoint directory"):
        weight_files(tmp_path)
    (tmp_path / "model.safetensors.index.json").write_text("{not json")
    with pytest.raises(ContractError, match="expected a JSON shard index"):
        weight_files(tmp_path)


def test_no_weights_and_pickle_weights(tmp_path):
    with pytest.raises(ContractError, match="found 'no weight file'"):
        weight_files(tmp_path)
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x04.")
    with pytest.raises(ContractError, match="pytorch_model.bin.*found 'a pickle file'.*no option to allow it"):
        weight_files(tmp_path)


def test_truncation_and_corruption_are_told_apart(tmp_path):
    path = _shard(tmp_path / "model.safetensors", a=[1.0, 2.0, 3.0, 4.0])
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    assert len(data) == 8 + n + 16  # header, then four float32 values
    path.write_bytes(data[:-1])
    with pytest.raises(ContractError, match=rf"'<data>': expected {8 + n + 16} bytes .* found '{8 + n + 15} bytes'"):
        safetensors_header(path)
    path.write_bytes(data[:5])
    with pytest.raises(ContractError, match="8-byte header length"):
        safetensors_header(path)
    path.write_bytes(struct.pack("<Q", 10**9) + data[8:])
    with pytest.raises(ContractError, match="header length of at most"):
        safetensors_header(path)
    path.write_bytes(data[:8] + b"{" * n + data[8 + n:])
    with pytest.raises(ContractError, match="expected a JSON header"):
        safetensors_header(path)


def test_finite_parameter_check_names_the_tensors(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Linear(3, 2))
    check_finite_parameters(model, tmp_path)
    with torch.no_grad():
        model[1].bias[1] = float("inf")
    with pytest.raises(ContractError, match=r"field '1.bias': expected finite weights, found \"NaN/inf in \['1.bias'\]\""):
        check_finite_parameters(model, tmp_path)
