import numpy as np
import pytest
import torch

from darkraw.cli import main
from darkraw.nn.infer import save_model_file
from darkraw.nn.model import ModelConfig, build_model
from darkraw.nn.onnx_export import ONNX_TOLERANCE, export_onnx

onnx = pytest.importorskip("onnx")
onnxruntime = pytest.importorskip("onnxruntime")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny(in_channels=4):
    config = ModelConfig(in_channels=in_channels, width=4, fc_hidden=8)
    return build_model(config, torch.Generator().manual_seed(0)).eval()


def run_both(model, path, shape):
    x = torch.rand(*shape, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        expected = model(x).clamp(0, 1).numpy()
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["rgb"], {"raw": x.numpy()})[0], expected


# (1, 4, 37, 45) needs padding on both sides, (2, 4, 32, 48) none; neither is the traced size.
@pytest.mark.parametrize("shape", [(1, 4, 37, 45), (2, 4, 32, 48), (1, 4, 9, 70)])
def test_onnx_matches_pytorch_at_dynamic_sizes(tmp_path, shape):
    model = tiny()
    path = export_onnx(model, tmp_path / "m.onnx")
    got, expected = run_both(model, path, shape)
    assert got.shape == expected.shape == (shape[0], 3, 2 * shape[2], 2 * shape[3])
    assert np.abs(got - expected).max() <= ONNX_TOLERANCE


def test_xtrans_model_exports_with_upscale_three(tmp_path):
    model = tiny(9)
    path = export_onnx(model, tmp_path / "x.onnx")
    got, expected = run_both(model, path, (1, 9, 21, 26))
    assert got.shape == (1, 3, 63, 78)
    assert np.abs(got - expected).max() <= ONNX_TOLERANCE


def test_raw_output_model_exports_its_planes(tmp_path):
    config = ModelConfig(width=4, fc_hidden=8, output="raw")
    model = build_model(config, torch.Generator().manual_seed(0)).eval()
    path = export_onnx(model, tmp_path / "raw.onnx")
    x = torch.rand(1, 4, 21, 26, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        expected = model(x).clamp(0, 1).numpy()
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["planes"]
    got = session.run(["planes"], {"raw": x.numpy()})[0]
    assert got.shape == (1, 4, 21, 26)
    assert np.abs(got - expected).max() <= ONNX_TOLERANCE


def test_metadata_travels_and_nothing_else_is_left(tmp_path):
    path = export_onnx(tiny(), tmp_path / "m.onnx", card={"name": "tiny"})
    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert '"width": 4' in props["darkraw.config"]
    assert props["darkraw.card"] == '{"name": "tiny"}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


def test_cli_export_onnx(tmp_path, capsys):
    model = save_model_file(tmp_path / "tiny.safetensors", tiny(), card={"name": "tiny"})
    out = tmp_path / "tiny.onnx"
    assert main(["export-onnx", "--model", str(model), "-o", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    props = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert props["darkraw.card"] == '{"name": "tiny"}'


def test_cli_export_onnx_bad_model_writes_nothing(tmp_path, capsys):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a model")
    out = tmp_path / "out.onnx"
    assert main(["export-onnx", "--model", str(bad), "-o", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"darkraw: error: {bad}: ")
    assert not out.exists()


def test_the_denoisers_export_sums_convolutions_instead_of_concatenating(tmp_path):
    """OpenVINO runs a channel concatenation of bf16 channels-last tensors in a reference kernel;
    the export computes each decoder level's first convolution as two, one per part, summed."""
    import onnx

    from darkraw.nn.denoiser import DenoiserConfig, RawDenoiser

    model = RawDenoiser(DenoiserConfig(width=4, levels=3), torch.Generator().manual_seed(0))
    torch.nn.init.normal_(model.out.weight, std=0.1, generator=torch.Generator().manual_seed(1))
    x = torch.rand(1, 8, 24, 40, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(
            model.raw_correction(x, split_concat=True), model.raw_correction(x), atol=1e-6, rtol=0
        )
    graph = onnx.load(export_onnx(model, tmp_path / "d.onnx")).graph
    conv_inputs = {name for node in graph.node if node.op_type == "Conv" for name in node.input}
    concats = [node for node in graph.node if node.op_type == "Concat"]
    assert not any(set(node.output) & conv_inputs for node in concats)
    assert sum(node.op_type == "Conv" for node in graph.node) == 2 * 3 + 2 * 2 + 2 + 1
