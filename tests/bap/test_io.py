"""bap.save / bap.load: one weights_only file for unpruned, pruned and single-domain models."""

import pytest
import torch

import json

from bap import ModelFileError, build_model, load, materialize, save
from tests.bap.helpers import random_masks, randomize_bn


@pytest.fixture(scope="module")
def trained_like():
    torch.manual_seed(0)
    model = build_model("resnet26", {"a": 4, "b": 6}, width=0.25)
    randomize_bn(model)
    model.set_masks(random_masks(model, (0.4, 0.7)))
    return model.eval()


@pytest.mark.parametrize("kind", ["unpruned", "pruned", "single"])
def test_round_trip_gives_identical_logits(tmp_path, trained_like, kind):
    model = {"unpruned": trained_like, "pruned": materialize(trained_like), "single": materialize(trained_like, "b")}[kind]
    path = str(tmp_path / "m.bap")
    save(model, path)
    raw = torch.load(path, weights_only=True)  # no pickled code inside
    assert set(raw) == {"format", "version", "arch", "shapes", "state_dict", "sha256"}
    loaded = load(path).eval()
    assert loaded.domains == model.domains
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x, "b"), model(x, "b"))
    assert sum(p.numel() for p in loaded.parameters()) == sum(p.numel() for p in model.parameters())


def test_truncated_corrupted_and_foreign_files_are_named(tmp_path, trained_like):
    path = tmp_path / "m.bap"
    save(materialize(trained_like), str(path))
    data = path.read_bytes()
    (tmp_path / "short.bap").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="short.bap.*truncated, corrupted"):
        load(str(tmp_path / "short.bap"))
    corrupted = bytearray(data)
    corrupted[100:400] = bytes(300)
    (tmp_path / "bad.bap").write_bytes(bytes(corrupted))
    with pytest.raises(ValueError, match="bad.bap"):
        load(str(tmp_path / "bad.bap"))
    torch.save(trained_like.state_dict(), tmp_path / "plain.pt")
    with pytest.raises(ValueError, match="plain.pt.*not a bap model file"):
        load(str(tmp_path / "plain.pt"))
    with pytest.raises(FileNotFoundError, match="absent.bap"):
        load(str(tmp_path / "absent.bap"))


def _tampered(tmp_path, model, change):
    path = tmp_path / "m.bap"
    save(model, str(path))
    payload = torch.load(path, weights_only=True)
    change(payload)
    torch.save(payload, tmp_path / "tampered.bap")
    return str(tmp_path / "tampered.bap")


@pytest.mark.parametrize("width", [0.3, 0.125])
def test_widths_that_round_load(tmp_path, width):
    model = build_model("resnet26", {"a": 3}, width=width)  # 32 * 0.3 = 9.6 stem channels: rounded to 10
    save(model, str(tmp_path / "m.bap"))
    assert load(str(tmp_path / "m.bap")).conv1.weight.shape == model.conv1.weight.shape


def test_changed_tensors_fail_the_digest(tmp_path, trained_like):
    def flip(payload):
        payload["state_dict"]["fc.heads.a.weight"][0, 0] += 1.0

    with pytest.raises(ModelFileError, match="tampered.bap' fails its SHA-256 check"):
        load(_tampered(tmp_path, materialize(trained_like), flip))
    path = tmp_path / "m.bap"  # 64 bytes flipped inside the file: no silent load, whatever breaks first
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 64] = bytes(b ^ 0xFF for b in data[middle:middle + 64])
    (tmp_path / "flipped.bap").write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="flipped.bap"):
        load(str(tmp_path / "flipped.bap"))


@pytest.mark.parametrize("lie", ["width", "classes", "shape", "missing", "backbone"])
def test_an_architecture_its_tensors_contradict_is_refused_before_allocation(tmp_path, trained_like, lie):
    def change(payload):
        arch, shapes = json.loads(payload["arch"]), json.loads(payload["shapes"])
        if lie == "width":
            arch["width"] = 400.0  # would allocate a ~100 GB backbone
        elif lie == "classes":
            arch["num_classes"]["a"] = 10**9
        elif lie == "shape":
            shapes["layer1.0.conv2"]["in"] = 10**6
        elif lie == "missing":
            del arch["num_classes"]
        else:
            arch["backbone"] = "vgg"
        payload["arch"], payload["shapes"] = json.dumps(arch), json.dumps(shapes)

    message = {"width": "width 400", "classes": "1000000000 classes", "shape": "layer1.0.conv2",
               "missing": "unreadable architecture", "backbone": "backbone 'vgg'"}[lie]
    with pytest.raises(ModelFileError, match=message):
        load(_tampered(tmp_path, materialize(trained_like), change))


def test_a_version_1_file_says_what_to_do(tmp_path, trained_like):
    def old(payload):
        payload["version"] = 1
        del payload["sha256"]

    with pytest.raises(ModelFileError, match="format version 1.*no digest"):
        load(_tampered(tmp_path, trained_like, old))


@pytest.mark.gpu
def test_model_saved_on_cuda_loads_on_cpu(tmp_path, trained_like):
    cuda_model = materialize(trained_like).cuda()
    save(cuda_model, str(tmp_path / "m.bap"))
    loaded = load(str(tmp_path / "m.bap"))
    assert next(loaded.parameters()).device.type == "cpu"
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(loaded(x, "a"), cuda_model(x.cuda(), "a").cpu(), atol=1e-4)
