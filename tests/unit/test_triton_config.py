"""Generated Triton configs parse as Triton's own ModelConfig protobuf message."""

from __future__ import annotations

import doctest

import pytest

import sluice.serving.triton_config
from sluice.errors import SpecError
from sluice.serving.triton_config import (
    TRITON_TYPES,
    Tensor,
    TritonModel,
    model_config,
    parse_model_config,
    write_model_repository,
)

MLP = TritonModel("fraud", inputs=[Tensor("x", "FP32", (64,))],
                  outputs=[Tensor("y", "FP32", (8,))], max_batch=64, latency_ms=2)


def test_doctest():
    assert doctest.testmod(sluice.serving.triton_config).failed == 0


def enum(config, message: str, field: str, value: int) -> str:
    return config.DESCRIPTOR.file.message_types_by_name[message].fields_by_name[
        field].enum_type.values_by_number[value].name


def test_the_batching_settings_become_triton_dynamic_batching_on_cpu():
    config = parse_model_config(model_config(MLP))
    assert config.name == "fraud" and config.backend == "python"
    assert config.max_batch_size == 64
    assert config.dynamic_batching.max_queue_delay_microseconds == 2000
    [group] = config.instance_group
    assert group.count == 1 and enum(config, "ModelInstanceGroup", "kind", group.kind) == \
        "KIND_CPU"
    assert [(i.name, list(i.dims)) for i in config.input] == [("x", [64])]
    assert enum(config, "ModelInput", "data_type", config.input[0].data_type) == "TYPE_FP32"


def test_a_gpu_request_becomes_kind_gpu_instances():
    spec = TritonModel("fraud", MLP.inputs, MLP.outputs, gpus=2, instances=3,
                       platform="pytorch_libtorch", preferred_batch=(32, 64))
    config = parse_model_config(model_config(spec))
    [group] = config.instance_group
    assert enum(config, "ModelInstanceGroup", "kind", group.kind) == "KIND_GPU"
    assert group.count == 3 and list(group.gpus) == [0, 1]
    assert config.platform == "pytorch_libtorch"
    assert list(config.dynamic_batching.preferred_batch_size) == [32, 64]


@pytest.mark.parametrize("datatype", sorted(TRITON_TYPES))
def test_every_v2_datatype_maps_to_a_triton_type(datatype):
    spec = TritonModel("m", [Tensor("in", datatype, (-1, 3))], [Tensor("out", datatype, (1,))])
    config = parse_model_config(model_config(spec))
    assert enum(config, "ModelInput", "data_type", config.input[0].data_type) == \
        TRITON_TYPES[datatype]
    assert list(config.input[0].dims) == [-1, 3]


def test_a_broken_config_is_refused():
    with pytest.raises(SpecError, match="not a valid Triton model config"):
        parse_model_config('name: "m" max_batch_size: "many"')


@pytest.mark.parametrize(("build", "message"), [
    (lambda: Tensor("x", "FLOAT", (1,)), "datatype 'FLOAT' is not one of"),
    (lambda: Tensor("x", "FP32", ()), "dims [] must be positive sizes"),
    (lambda: Tensor("x y", "FP32", (1,)), "tensor name 'x y'"),
    (lambda: TritonModel("m", [], []), "at least one input and one output"),
    (lambda: TritonModel("m", MLP.inputs, MLP.outputs, max_batch=0), "max_batch must be"),
    (lambda: TritonModel("m", MLP.inputs, MLP.outputs, preferred_batch=(128,)),
     "preferred batch sizes [128]"),
])
def test_bad_descriptions_name_what_is_wrong(build, message):
    with pytest.raises(SpecError) as info:
        build()
    assert message in str(info.value)


def test_model_repository_layout(tmp_path):
    folder = write_model_repository(tmp_path, MLP, {"model.py": b"# the python backend"}, 3)
    assert (folder / "config.pbtxt").read_text() == model_config(MLP)
    assert (folder / "3" / "model.py").read_bytes() == b"# the python backend"
    with pytest.raises(SpecError, match="a plain file name"):
        write_model_repository(tmp_path, MLP, {"../evil.py": b""})


def test_the_spec_the_codec_and_triton_know_the_same_datatypes():
    # three lists by necessity (the spec stays light, the codec needs a Literal type, Triton
    # needs its own names): this keeps them from drifting apart
    from sluice.serving.protocol import DATATYPES
    from sluice.spec import V2_DATATYPES

    assert set(V2_DATATYPES) == set(DATATYPES) == set(TRITON_TYPES)
