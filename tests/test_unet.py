"""VideoUNet: the official golden outputs, equivalences with diffusers' 2-D U-Net, loading, checkpointing, params."""

import json
from pathlib import Path

import pytest
import torch
from diffusers import UNet2DConditionModel
from safetensors.torch import load_file

from vidrd_model.checkpoints import unet_config_from_2d, unet_config_from_release
from vidrd_model.params import freeze_for_training, trainable_parameters
from vidrd_model.temporal import TemporalConvLayer, frame_pooled_group_norm, sinusoidal_frame_embedding
from vidrd_model.unet import VideoUNet

SPECS = Path(__file__).resolve().parents[1].parent / "shared" / "specs"
GOLDEN = SPECS / "golden"
requires_golden = pytest.mark.skipif(
    not GOLDEN.is_dir(), reason=f"official golden vectors not found at {GOLDEN} (../shared/specs/golden)"
)
requires_spec = pytest.mark.skipif(
    not (SPECS / "vidrd_official_state_dict.json").is_file(),
    reason=f"release key/shape spec not found at {SPECS / 'vidrd_official_state_dict.json'}",
)
GOLDEN_ATOL = 2e-5

TINY_2D = {
    "sample_size": 8,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D"),
    "block_out_channels": (32, 64),
    "layers_per_block": 1,
    "cross_attention_dim": 32,
    "attention_head_dim": (2, 4),
    "use_linear_projection": True,
    "norm_num_groups": 32,
}
# SD 1.x style: Conv2d projections and one head count for every level.
TINY_2D_SD1 = {**TINY_2D, "use_linear_projection": False, "attention_head_dim": 2}


def randomize_(model: torch.nn.Module, seed: int, only: str | None = None) -> torch.nn.Module:
    """Overwrites parameters (those whose name contains `only`, or all): norms 1 + 0.02r, everything else 0.02r."""
    generator = torch.Generator().manual_seed(seed)
    norm_weights = {
        f"{name}.weight"
        for name, module in model.named_modules()
        if isinstance(module, (torch.nn.GroupNorm, torch.nn.LayerNorm))
    }
    with torch.no_grad():
        for name, param in model.named_parameters():
            if only is not None and only not in name:
                continue
            r = 0.02 * torch.randn(param.shape, generator=generator)
            param.copy_(1 + r if name in norm_weights else r)
    return model


def rel_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def frames_to_batch(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 2, 1, 3, 4).flatten(0, 1)


def batch_to_frames(x: torch.Tensor, num_frames: int) -> torch.Tensor:
    return x.unflatten(0, (-1, num_frames)).permute(0, 2, 1, 3, 4)


class ReleaseSemanticsHooks:
    """Hooks diffusers' 2-D U-Net into the release's documented changes for clips of `num_frames` frames.

    `pooled_norms`: ResNet and output GroupNorms pool statistics over a clip's frames;
    `frame_embedding`: each transformer block adds PE[f] to frame f's residual after cross-attention.
    """

    def __init__(self, unet_2d: UNet2DConditionModel, num_frames: int, pooled_norms=True, frame_embedding=True):
        self.handles = []
        for name, module in unet_2d.named_modules():
            is_resnet_norm = ".resnets." in name and name.endswith(("norm1", "norm2"))
            if pooled_norms and (is_resnet_norm or name == "conv_norm_out"):
                self.handles.append(module.register_forward_hook(
                    lambda m, args, out: frames_to_batch(torch.nn.functional.group_norm(
                        batch_to_frames(args[0], num_frames), m.num_groups, m.weight, m.bias, m.eps))
                ))
            if frame_embedding and name.endswith("transformer_blocks.0.attn2"):
                self.handles.append(module.register_forward_hook(
                    lambda m, args, out: out + sinusoidal_frame_embedding(num_frames, out.shape[-1]).repeat(
                        out.shape[0] // num_frames, 1)[:, None, :]
                ))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for handle in self.handles:
            handle.remove()


@pytest.fixture(scope="module")
def unet_2d_dir(tmp_path_factory):
    """A seeded random tiny SD-2-style diffusers UNet2DConditionModel saved as an SD pipeline folder."""
    root = tmp_path_factory.mktemp("sd")
    torch.manual_seed(0)
    randomize_(UNet2DConditionModel(**TINY_2D), seed=1).save_pretrained(root / "unet")
    return root


@pytest.fixture(scope="module")
def unet_2d(unet_2d_dir):
    return UNet2DConditionModel.from_pretrained(unet_2d_dir, subfolder="unet").eval()


def inputs(batch=1, frames=4, seed=3, static=False):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 4, 1 if static else frames, 16, 16, generator=generator)
    if static:
        x = x.expand(-1, -1, frames, -1, -1).contiguous()
    text = torch.randn(batch, 77, 32, generator=generator)
    return x, torch.tensor([501] * batch), text


def run_2d(unet_2d, x, t, text):
    frames = x.shape[2]
    out = unet_2d(frames_to_batch(x), t.repeat_interleave(frames), text.repeat_interleave(frames, dim=0)).sample
    return batch_to_frames(out, frames)


# ---------------------------------------------------------------- official golden vectors


@pytest.fixture(scope="module")
def golden_unet():
    config = json.loads((GOLDEN / "unet_tiny.json").read_text())["config"]
    model = VideoUNet(**unet_config_from_release(config)).eval()
    model.load_state_dict(load_file(GOLDEN / "unet_tiny.safetensors"), strict=True)
    return model, load_file(GOLDEN / "unet_tiny_io.safetensors"), json.loads((GOLDEN / "unet_tiny.json").read_text())


GOLDEN_CALLS = {
    "out": ("x", "timestep", "encoder_hidden_states"),
    "out_f1": ("x_f1", "timestep", "encoder_hidden_states"),
    "out_b2": ("x_b2", "timestep_b2", "encoder_hidden_states_b2"),
}


@requires_golden
@pytest.mark.parametrize("output", sorted(GOLDEN_CALLS))
def test_golden_unet_outputs_match_official_code(golden_unet, output):
    model, io, _ = golden_unet
    x, t, text = (io[k] for k in GOLDEN_CALLS[output])
    with torch.no_grad():
        out = model(x, t, encoder_hidden_states=text).sample
    assert out.shape == io[output].shape
    assert (out - io[output]).abs().max().item() <= GOLDEN_ATOL


@requires_golden
def test_golden_sensitivity_to_each_temporal_part_matches_official_code(golden_unet):
    """Removing each temporal part moves the output exactly as much as it moves the official model's."""
    model, io, meta = golden_unet
    expected = meta["sensitivity_relative_L2"]
    x, t, text = io["x"], io["timestep"], io["encoder_hidden_states"]
    state = model.state_dict()

    def variant(**config_changes):
        config = unet_config_from_release(meta["config"], **config_changes)
        other = VideoUNet(**config).eval()
        other.load_state_dict({k: v for k, v in state.items() if k in other.state_dict()}, strict=True)
        return other

    no_temp_attn = variant()
    with torch.no_grad():
        for name, param in no_temp_attn.named_parameters():
            if "temp_attn" in name or "temp_norm" in name:
                param.zero_()
        measured = {
            "zero_all_temp_convs": rel_l2(variant(add_temp_conv=False)(x, t, text).sample, io["out"]),
            "zero_all_temp_attn_and_temp_norm": rel_l2(no_temp_attn(x, t, text).sample, io["out"]),
            "disable_add_temp_embed": rel_l2(variant(add_temp_embed=False)(x, t, text).sample, io["out"]),
            "disable_add_temp_embed_F1": rel_l2(
                variant(temp_embed_single_frame=False)(io["x_f1"], t, text).sample, io["out_f1"]
            ),
        }
    for key, value in measured.items():
        assert value == pytest.approx(expected[key], rel=1e-3), key


# ---------------------------------------------------------------- structure at the released size


@requires_spec
def test_full_size_state_dict_has_exactly_the_release_keys_and_shapes():
    spec = json.loads((SPECS / "vidrd_official_state_dict.json").read_text())
    with torch.device("meta"):
        model = VideoUNet()
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert ours == spec["unet"]
    assert sum(p.numel() for p in model.parameters()) == spec["param_counts"]["unet_total"]
    temporal = sum(p.numel() for n, p in model.named_parameters() if "temp_" in n)
    assert temporal == spec["param_counts"]["unet_temporal"]


def test_full_size_model_has_the_released_parameter_counts():
    with torch.device("meta"):
        model = VideoUNet()
    counts = {"temp_convs": 0, "temp_attn": 0, "temp_norm": 0}
    for name, param in model.named_parameters():
        for part in counts:
            counts[part] += param.numel() if f".{part}." in name else 0
    assert sum(p.numel() for p in model.parameters()) == 1_182_401_284
    assert counts == {"temp_convs": 266_891_520, "temp_attn": 49_574_080, "temp_norm": 24_960}
    assert sum(1 for n in model.state_dict() if ".temp_convs." in n) // 16 == 22
    assert sum(1 for n in model.state_dict() if n.endswith("temp_attn.to_q.weight")) == 16


# ---------------------------------------------------------------- equivalences with the 2-D U-Net


def test_from_pretrained_2d_copies_2d_weights_and_initialises_temporal_layers_to_zero_residual(unet_2d_dir, unet_2d):
    model = VideoUNet.from_pretrained_2d(unet_2d_dir)
    ours = model.state_dict()
    for key, value in unet_2d.state_dict().items():
        assert torch.equal(ours[key], value), key
    temporal = [k for k in ours if k not in unet_2d.state_dict()]
    assert temporal and all("temp_" in k for k in temporal)
    last_convs = [k for k in temporal if ".convs.15." in k or "temp_attn.to_out.0." in k]
    assert last_convs and all(ours[k].abs().max() == 0 for k in last_convs)


def test_static_video_with_initial_temporal_layers_equals_2d_unet_per_frame(unet_2d_dir, unet_2d):
    """Identity at init: with Temp-Conv/Temp-Attn at init and no frame embedding, each frame is SD's output.

    The frames are identical because the release's GroupNorms pool over frames, which equals per-frame statistics
    only when all frames agree (the next test covers distinct frames).
    """
    model = VideoUNet.from_pretrained_2d(unet_2d_dir, add_temp_embed=False).eval()
    x, t, text = inputs(frames=4, static=True)
    with torch.no_grad():
        assert torch.allclose(model(x, t, text).sample, run_2d(unet_2d, x, t, text), atol=1e-5)


def test_initial_model_equals_2d_unet_with_frame_pooled_norms_on_any_video(unet_2d_dir, unet_2d):
    model = VideoUNet.from_pretrained_2d(unet_2d_dir, add_temp_embed=False).eval()
    x, t, text = inputs(frames=4)
    with torch.no_grad():
        out = model(x, t, text).sample
        with ReleaseSemanticsHooks(unet_2d, num_frames=4, frame_embedding=False):
            expected = run_2d(unet_2d, x, t, text)
        plain = run_2d(unet_2d, x, t, text)
    assert torch.allclose(out, expected, atol=1e-5)
    assert not torch.allclose(out, plain, atol=1e-3)


def test_frame_embedding_at_init_only_adds_pe_to_each_transformer_residual(unet_2d_dir, unet_2d):
    """With the embedding on, the only change at init is PE[f] added to frame f after cross-attention."""
    model = VideoUNet.from_pretrained_2d(unet_2d_dir).eval()
    x, t, text = inputs(frames=4)
    with torch.no_grad():
        out = model(x, t, text).sample
        with ReleaseSemanticsHooks(unet_2d, num_frames=4):
            expected = run_2d(unet_2d, x, t, text)
        with ReleaseSemanticsHooks(unet_2d, num_frames=4, frame_embedding=False):
            without_embedding = run_2d(unet_2d, x, t, text)
    assert torch.allclose(out, expected, atol=1e-5)
    assert not torch.allclose(out, without_embedding, atol=1e-3)


def test_frame_embedding_outside_residual_leaves_initial_model_equal_to_2d_unet(unet_2d_dir, unet_2d):
    model = VideoUNet.from_pretrained_2d(unet_2d_dir, temp_embed_in_residual=False).eval()
    x, t, text = inputs(frames=4, static=True)
    with torch.no_grad():
        assert torch.allclose(model(x, t, text).sample, run_2d(unet_2d, x, t, text), atol=1e-5)


@pytest.mark.parametrize("config_2d", [TINY_2D, TINY_2D_SD1], ids=["sd2", "sd1"])
@pytest.mark.parametrize("grad", [False, True], ids=["no_grad", "grad"])
def test_single_frame_equals_2d_unet_even_with_trained_temporal_layers(tmp_path, config_2d, grad):
    torch.manual_seed(0)
    unet_2d = randomize_(UNet2DConditionModel(**config_2d), seed=5).eval()
    unet_2d.save_pretrained(tmp_path)
    model = VideoUNet.from_pretrained_2d(tmp_path, subfolder=None, temp_embed_single_frame=False).eval()
    randomize_(model, seed=6, only="temp_")
    x, t, text = inputs(frames=1)
    with torch.set_grad_enabled(grad):
        out, expected = model(x, t, text).sample, run_2d(unet_2d, x, t, text)
    assert torch.allclose(out, expected, atol=1e-5)


def test_single_frame_with_release_quirk_adds_pe0_to_each_transformer_residual(unet_2d_dir, unet_2d):
    model = VideoUNet.from_pretrained_2d(unet_2d_dir).eval()
    randomize_(model, seed=6, only="temp_")
    x, t, text = inputs(frames=1)
    with torch.no_grad():
        out = model(x, t, text).sample
        with ReleaseSemanticsHooks(unet_2d, num_frames=1):
            expected = run_2d(unet_2d, x, t, text)
    assert torch.allclose(out, expected, atol=1e-5)
    assert not torch.allclose(out, run_2d(unet_2d, x, t, text), atol=1e-3)


def test_frame_pooled_group_norm_equals_group_norm_over_the_whole_clip():
    norm = randomize_(torch.nn.GroupNorm(8, 32), seed=0)
    clip = torch.randn(2, 32, 5, 6, 6) * 3 + 1
    folded = frames_to_batch(clip)
    pooled = batch_to_frames(frame_pooled_group_norm(norm, folded, 5), 5)
    assert torch.allclose(pooled, norm(clip), atol=1e-6)
    assert not torch.allclose(batch_to_frames(norm(folded), 5), pooled, atol=1e-3)


def test_pooled_group_norm_with_silu_is_the_same_with_and_without_gradients_and_lands_folded():
    norm = randomize_(torch.nn.GroupNorm(8, 32), seed=1)
    clip = torch.randn(2, 32, 5, 6, 6) * 3 + 1
    expected = torch.nn.functional.silu(norm(clip))
    folded = frames_to_batch(clip)
    with torch.no_grad():
        fused = frame_pooled_group_norm(norm, folded, 5, silu=True)  # SiLU writes the folded layout itself
    plain = frame_pooled_group_norm(norm, folded.requires_grad_(), 5, silu=True)
    assert fused.is_contiguous() and plain.is_contiguous()
    assert torch.allclose(batch_to_frames(fused, 5), expected, atol=1e-6)
    assert torch.allclose(batch_to_frames(plain.detach(), 5), expected, atol=1e-6)


def test_pooled_group_norm_with_silu_keeps_the_norms_dtype_as_under_cuda_autocast():
    """CUDA autocast runs GroupNorm in float32 on bf16 activations; the fused SiLU must write float32 (out= would
    refuse a bf16 buffer), as the unfused path returns."""

    class Float32Norm(torch.nn.GroupNorm):
        def forward(self, x):
            return super().forward(x.float())

    norm = randomize_(Float32Norm(8, 32), seed=5)
    x = (torch.randn(10, 32, 4, 4) * 2).to(torch.bfloat16)
    with torch.no_grad():
        fused = frame_pooled_group_norm(norm, x, 5, silu=True)
    assert fused.dtype == torch.float32
    assert torch.allclose(batch_to_frames(fused, 5), torch.nn.functional.silu(norm(batch_to_frames(x, 5))), atol=1e-6)


def test_frame_embedding_cached_under_inference_mode_still_trains():
    from vidrd_model import temporal

    temporal._TABLES.clear()
    with torch.inference_mode():
        table = sinusoidal_frame_embedding(3, 32)  # fills the cache inside inference mode
    assert not table.is_inference()  # a plain tensor: usable by later in-place and autograd code
    assert sinusoidal_frame_embedding(3, 32) is table
    layer = randomize_(VideoUNet(**unet_config_from_2d(TINY_2D)), seed=2).down_blocks[0].attentions[0]
    block = layer.transformer_blocks[0]
    x = torch.randn(6, 4, 32, requires_grad=True)
    block.temporal_attention(x, num_frames=3).sum().backward()
    assert x.grad is not None and block.temp_attn.to_q.weight.grad is not None


def test_the_whole_forward_is_one_graph_for_torch_compile_and_cuda_graphs():
    """fullgraph=True raises at any graph break (the eager fast paths must step aside while compiling)."""
    unet = randomize_(VideoUNet(**unet_config_from_2d(TINY_2D)), seed=4).eval()
    x, t, text = inputs(frames=3)
    with torch.no_grad():
        expected = unet(x, t, text).sample
        traced = torch.compile(unet, fullgraph=True, backend="eager")(x, t, text).sample
    assert torch.allclose(traced, expected, atol=1e-5)


def test_a_frame_embedding_made_under_fake_tensors_is_not_cached():
    from torch._subclasses.fake_tensor import FakeTensorMode

    from vidrd_model import temporal

    temporal._TABLES.clear()
    with FakeTensorMode():
        sinusoidal_frame_embedding(5, 16)
    table = sinusoidal_frame_embedding(5, 16)
    assert type(table) is torch.Tensor and torch.equal(table[0, :4], torch.tensor([0.0, 1.0, 0.0, 1.0]))


def test_attend_equals_calling_the_attention_module():
    from vidrd_model.unet import attend

    block = randomize_(VideoUNet(**unet_config_from_2d(TINY_2D)), seed=3).down_blocks[0].attentions[0]
    block = block.transformer_blocks[0]
    x, context = torch.randn(2, 4, 32), torch.randn(2, 7, 32)
    with torch.no_grad():
        assert torch.equal(attend(block.attn2, x, context), block.attn2(x, encoder_hidden_states=context))
        assert torch.equal(attend(block.attn1, x), block.attn1(x))
        seen = []
        handle = block.attn1.register_forward_hook(lambda module, args, out: seen.append(out.shape) or out * 2)
        hooked = attend(block.attn1, x)  # a hooked module goes through its normal call: the hook runs
        handle.remove()
        assert seen == [x.shape] and torch.equal(hooked, 2 * block.attn1(x))


def test_temp_conv_layer_matches_its_formula_over_frames():
    """Self-contained check of Temp-Conv with non-zero weights: 4 × (clip GroupNorm → SiLU → conv over f±1) + x."""
    layer = randomize_(TemporalConvLayer(32), seed=11).eval()
    clip = torch.randn(2, 32, 5, 3, 3)
    h = clip
    for k in range(4):
        norm, conv = layer.convs[4 * k], layer.convs[4 * k + 3]
        h = torch.nn.functional.silu(torch.nn.functional.group_norm(h, 32, norm.weight, norm.bias, norm.eps))
        padded = torch.nn.functional.pad(h, (0, 0, 0, 0, 1, 1))
        w = conv.weight[..., 0, 0]  # (out, in, 3)
        h = sum(torch.einsum("oi,bifxy->bofxy", w[:, :, j], padded[:, :, j : j + 5]) for j in range(3))
        h = h + conv.bias[None, :, None, None, None]
    with torch.no_grad():
        folded = layer(frames_to_batch(clip), num_frames=5)
    assert folded.is_contiguous()  # the residual add writes the folded layout: no copy after it
    assert torch.allclose(batch_to_frames(folded, 5), clip + h, atol=1e-5)


def test_temp_attn_matches_softmax_attention_over_frames_after_adding_the_frame_embedding():
    """Self-contained check of Temp-Attn: x + PE, then x + W_o·softmax(QKᵀ/√d)V over frames, per token and head."""
    opts = dict(add_temp_embed=True, temp_embed_in_residual=True, temp_embed_single_frame=True)
    unet = VideoUNet(**unet_config_from_2d(TINY_2D, **opts))
    block = randomize_(unet.down_blocks[0].attentions[0].transformer_blocks[0], seed=12).eval()
    b, f, d, c, heads = 2, 3, 4, 32, 2
    x = torch.randn(b * f, d, c)
    with torch.no_grad():
        out = block.temporal_attention(x, num_frames=f)
        h = x.view(b, f, d, c) + sinusoidal_frame_embedding(f, c)[None, :, None, :]
        n = torch.nn.functional.layer_norm(h, (c,), block.temp_norm.weight, block.temp_norm.bias)
        attn = block.temp_attn
        q, k, v = (lin(n).view(b, f, d, heads, c // heads) for lin in (attn.to_q, attn.to_k, attn.to_v))
        weights = torch.einsum("bfdhe,bgdhe->bdhfg", q, k).mul((c // heads) ** -0.5).softmax(-1)
        mixed = torch.einsum("bdhfg,bgdhe->bfdhe", weights, v).reshape(b, f, d, c)
        expected = h + attn.to_out[0](mixed)
    assert torch.allclose(out, expected.view(b * f, d, c), atol=1e-5)


def test_temporal_layers_mix_frames_only_when_they_are_non_zero(unet_2d_dir):
    model = VideoUNet.from_pretrained_2d(unet_2d_dir, add_temp_embed=False).eval()
    x, t, text = inputs(frames=4)
    with torch.no_grad():
        initial = model(x, t, text).sample
        randomize_(model, seed=7, only="temp_")
        trained = model(x, t, text).sample
        x_moved = x.clone()
        x_moved[:, :, 3] += 1.0
        moved = model(x_moved, t, text).sample
    assert rel_l2(trained, initial) > 0.05
    assert not torch.allclose(moved[:, :, 0], trained[:, :, 0], atol=1e-4)


def test_bfloat16_forward_stays_close_to_float32(unet_2d_dir):
    model = VideoUNet.from_pretrained_2d(unet_2d_dir).eval()
    randomize_(model, seed=8, only="temp_")
    x, t, text = inputs(frames=4)
    with torch.no_grad():
        reference = model(x, t, text).sample
        low = model.to(torch.bfloat16)(x.bfloat16(), t, text.bfloat16()).sample
    assert low.dtype == torch.bfloat16 and torch.isfinite(low).all()
    assert rel_l2(low.float(), reference) < 0.05


# ---------------------------------------------------------------- training behaviour


def test_gradient_checkpointing_gives_the_same_gradients_with_dropout_active(unet_2d_dir):
    model = VideoUNet.from_pretrained_2d(unet_2d_dir).train()
    randomize_(model, seed=9, only="temp_")
    x, t, text = inputs(frames=3)

    def gradients():
        model.zero_grad()
        torch.manual_seed(123)
        model(x, t, text).sample.square().mean().backward()
        return {n: p.grad.clone() for n, p in model.named_parameters()}

    plain = gradients()
    model.enable_gradient_checkpointing()
    assert model.gradient_checkpointing
    checkpointed = gradients()
    for name, grad in plain.items():
        assert torch.allclose(checkpointed[name], grad, atol=1e-6, rtol=1e-4), name


def test_single_frame_training_step_keeps_every_temporal_parameter_in_the_graph(unet_2d_dir):
    model = VideoUNet.from_pretrained_2d(unet_2d_dir).train()
    x, t, text = inputs(frames=1)
    model(x, t, text).sample.mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert missing == []


def test_paper_mode_trains_temporal_and_spatial_attention_layers_only(unet_2d_dir):
    model = VideoUNet.from_pretrained_2d(unet_2d_dir)
    vae_stand_in = torch.nn.Linear(2, 2)
    trainable = freeze_for_training(model, "paper", frozen=[vae_stand_in])
    names = set(trainable_parameters(model, "paper"))
    assert len(trainable) == len(names) > 0
    assert all(any(p in n for p in ("temp_convs", "temp_attn", "temp_norm", "attn1", "attn2")) for n in names)
    assert not any("resnets" in n or ".ff." in n or "norm1" in n for n in names)
    assert {n for n, p in model.named_parameters() if p.requires_grad} == names
    assert not any(p.requires_grad for p in vae_stand_in.parameters())
    assert set(trainable_parameters(model, "temporal")) == {n for n in names if "temp_" in n}
    assert set(trainable_parameters(model, "full")) == set(dict(model.named_parameters()))
    with pytest.raises(ValueError, match="unknown training mode"):
        trainable_parameters(model, "everything")


@requires_spec
def test_paper_mode_at_full_size_is_the_temporal_layers_plus_spatial_attention_of_the_spec():
    spec = json.loads((SPECS / "vidrd_official_state_dict.json").read_text())
    attention = sum(
        torch.Size(shape).numel() for key, shape in spec["unet"].items() if ".attn1." in key or ".attn2." in key
    )
    with torch.device("meta"):
        model = VideoUNet()
    paper = sum(p.numel() for p in trainable_parameters(model, "paper").values())
    assert paper == spec["param_counts"]["unet_temporal"] + attention


# ---------------------------------------------------------------- saving, loading, config errors


def test_save_pretrained_writes_config_and_safetensors_that_reload_identically(unet_2d_dir, tmp_path):
    model = VideoUNet.from_pretrained_2d(unet_2d_dir, temp_embed_single_frame=False).eval()
    randomize_(model, seed=10, only="temp_")
    model.save_pretrained(tmp_path)
    assert (tmp_path / "config.json").is_file() and (tmp_path / "diffusion_pytorch_model.safetensors").is_file()
    reloaded = VideoUNet.from_pretrained(tmp_path).eval()
    assert reloaded.config.temp_embed_single_frame is False
    saved = model.state_dict()
    assert all(torch.equal(value, saved[key]) for key, value in reloaded.state_dict().items())
    x, t, text = inputs(frames=2)
    with torch.no_grad():
        assert torch.allclose(reloaded(x, t, text).sample, model(x, t, text).sample, atol=1e-5)


def test_unknown_block_type_is_rejected():
    with pytest.raises(ValueError, match="unknown block type"):
        VideoUNet(**unet_config_from_2d({**TINY_2D, "down_block_types": ("AttnDownBlock2D", "DownBlock2D")}))


def test_2d_config_with_unsupported_option_is_rejected():
    with pytest.raises(ValueError, match="class_embed_type"):
        unet_config_from_2d({**TINY_2D, "class_embed_type": "timestep"})


def test_release_config_with_temporal_transformer_is_rejected():
    with pytest.raises(ValueError, match="add_temp_transformer"):
        unet_config_from_release({**TINY_2D, "add_temp_transformer": True})


def test_forward_rejects_a_4d_sample(unet_2d_dir):
    model = VideoUNet.from_pretrained_2d(unet_2d_dir)
    with pytest.raises(ValueError, match="frames"):
        model(torch.randn(1, 4, 16, 16), 1, torch.randn(1, 77, 32))
