"""The model zoo: registry, TorchScript, training, and the sizes the papers give."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from streamtag import nets
from streamtag.nets.cp_resnet import FreqAwareConv2d, shake
from streamtag.nets.samplecnn import BLOCK_CHANNELS

# TorchScript is how streamtag ships models; torch >= 2.9 marks torch.jit deprecated.
pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning:torch.jit"),
              pytest.mark.usefixtures("one_torch_thread")]

N_TAGS = 5

# A small input (and options) each architecture accepts, to keep the suite fast on a small CPU.
SMALL: dict[str, tuple[dict, tuple[int, ...]]] = {
    "vggish": ({}, (96, 1280)),  # its pools need 96 x 1280
    # 200 frames leave two time steps after the pools, so the GRUs' recurrent weights get a
    # gradient (with one step they multiply the zero initial state)
    "crnn": ({}, (96, 200)),
    "mobilenet": ({}, (96, 96)),
    "mobilenet_attn": ({"segment_frames": 96, "n_segments": 4}, (96, 192)),
    "cp_resnet": ({}, (48, 48)),
    "fa_resnet": ({}, (48, 48)),
    "shake_fa_resnet": ({}, (48, 48)),
    "vqvae": ({"channels": 64, "n_codes": 64}, (128, 8)),
    "vqvae_gru": ({"channels": 64, "n_codes": 64, "gru_units": 32}, (128, 8)),
    "vqvae_cnn": ({"channels": 64, "n_codes": 64}, (128, 8)),
    "samplecnn": ({}, (59049,)),
    "mel_cnn": ({}, (128, 261)),
    "lstm": ({}, (128, 227)),
    "short_chunk_resnet": ({}, (64, 32)),
    "musicnn": ({"frontend_width": 0.25, "midend_filters": 8, "backend_units": 32}, (96, 40)),
    "musicnn_vgg": ({"n_mels": 64, "n_frames": 66, "filters": 8}, (64, 66)),
    "musicnn_pair": ({"first_tags": 4, "second_tags": 3, "frontend_width": 0.25,
                      "midend_filters": 8, "backend_units": 32}, (96, 40)),
}


def _small(name: str, **extra) -> tuple[torch.nn.Module, torch.Tensor]:
    options, shape = SMALL[name]
    torch.manual_seed(0)
    model = nets.build(name, N_TAGS, **options, **extra)
    x = torch.randn(2, *shape)
    return model, x


def _loss(name: str, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if name == "vqvae":
        # The reconstruction error: in the first steps the codebook terms of pretrain_loss grow
        # while the codes, which start near zero as in the authors' code, catch up with z_e.
        return F.mse_loss(model(x), x)
    if name == "mobilenet_attn":
        return nets.two_head_loss(model.forward_heads(x), y)
    return F.binary_cross_entropy_with_logits(model(x), y)


def test_every_registered_model_has_a_small_case():
    assert sorted(SMALL) == sorted(nets.names())


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(ValueError, match="known models: .*cp_resnet"):
        nets.build("resnet9000", 10)
    with pytest.raises(ValueError, match="unknown model"):
        nets.spec("resnet9000")


def test_unknown_option_is_named():
    with pytest.raises(TypeError, match="'rhoo'.*rho"):
        nets.build("cp_resnet", 10, rhoo=3)
    # Options that define a registry entry are not options of that entry.
    with pytest.raises(TypeError, match="frequency_aware"):
        nets.build("fa_resnet", 10, frequency_aware=False)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_spec_describes_the_input(name):
    info = nets.spec(name)
    assert info["input_kind"] in ("logmel", "waveform")
    assert len(info["default_input"]) == (2 if info["input_kind"] == "logmel" else 1)
    assert all(m <= d for m, d in zip(info["min_input"], info["default_input"], strict=True))
    assert info["description"]
    assert set(SMALL[name][0]) <= set(info["options"])
    # The declared capabilities callers use instead of comparing names.
    assert info["task"] in nets.TASKS and info["loss"] in nets.LOSSES
    assert (info["task"] == "autoencode") == (info["loss"] == "vq_reconstruction")
    if info["encoder_from"] is not None:
        assert nets.spec(info["encoder_from"])["task"] == "autoencode"
        assert hasattr(nets.build(name, N_TAGS, **SMALL[name][0]), "load_encoder_state_dict")
    if info["segment_option"] is not None:
        assert info["segment_option"] in info["options"]
    if info["loss"] == "two_head_bce":
        assert hasattr(nets.build(name, N_TAGS, **SMALL[name][0]), "forward_heads")
    assert info["window_reuse"] is None or (info["window_reuse"] in nets.WINDOW_REUSE
                                            and info["input_kind"] == "logmel")


def test_window_reuse_is_declared_for_the_layouts_it_knows():
    declared = {n: nets.spec(n)["window_reuse"] for n in nets.names()}
    assert {n: s for n, s in declared.items() if s is not None} == {
        "mel_cnn": "pooled_columns", "short_chunk_resnet": "first_block",
        "musicnn": "frontend_columns", "musicnn_vgg": "second_convolution",
        "musicnn_pair": "frontend_columns"}


def test_names_by_task():
    assert nets.names("autoencode") == ["vqvae"]
    assert set(nets.names("tag")) == set(nets.names()) - {"vqvae"}


@pytest.mark.parametrize("name", sorted(SMALL))
def test_eval_is_deterministic_and_scripts_to_the_same_output(name, tmp_path):
    model, x = _small(name)
    model.eval()
    with torch.no_grad():
        y = model(x)
        assert torch.equal(y, model(x))
    expected = x.shape if name == "vqvae" else (2, N_TAGS)
    assert y.shape == expected

    scripted = torch.jit.script(model)
    path = tmp_path / f"{name}.pt"
    torch.jit.save(scripted, str(path))
    loaded = torch.jit.load(str(path))
    with torch.no_grad():
        assert (scripted(x) - y).abs().max() <= 1e-5
        assert (loaded(x) - y).abs().max() <= 1e-5


@pytest.mark.parametrize(
    # where the small case already is the smallest input, the tests above have run it
    "name",
    [name for name in sorted(SMALL) if SMALL[name] != ({}, nets.spec(name)["min_input"])],
)
def test_runs_at_its_smallest_documented_input(name):
    assert_runs_at_documented_input(name, "min_input")


def assert_runs_at_documented_input(name: str, which: str) -> None:
    """The network maps one input of the shape its spec documents as ``which`` to the tags'
    outputs (vqvae, an autoencoder: to its input's shape)."""
    torch.manual_seed(0)
    model = nets.build(name, N_TAGS).eval()
    x = torch.randn(1, *nets.spec(name)[which])
    with torch.no_grad():
        y = model(x)
    assert y.shape == (x.shape if name == "vqvae" else (1, N_TAGS))


# The tagging loss does not reach these by design: the straight-through estimator hands the
# gradient to the encoder, and only pre-training's codebook loss moves the codebook.
NO_TAGGING_GRADIENT = {"vqvae_gru": {"codebook.embedding.weight"},
                       "vqvae_cnn": {"codebook.embedding.weight"}}
# The largest small cases learn on fewer windows, to keep the suite fast; the two largest learn
# in the slow suite only (the gradient test above still reaches each of their parameters).
LEARNING_BATCH = {"crnn": 4, "mobilenet_attn": 4, "samplecnn": 4, "vggish": 4}
SLOW_LEARNERS = {"samplecnn", "vggish"}


def _training_loss(name: str, model: torch.nn.Module, x: torch.Tensor,
                   y: torch.Tensor) -> torch.Tensor:
    """The loss each model trains on (vqvae: reconstruction + codebook + commitment)."""
    if name == "vqvae":
        reconstruction, vq_loss, commitment_loss, _ = model.forward_vq(x)
        return F.mse_loss(reconstruction, x) + vq_loss + 0.25 * commitment_loss
    return _loss(name, model, x, y)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_every_trainable_parameter_gets_a_finite_nonzero_gradient(name):
    options, shape = SMALL[name]
    torch.manual_seed(0)
    model = nets.build(name, N_TAGS, **options).train()
    x = torch.randn(4, *shape)  # distinct inputs: batch norm sees varied values
    y = torch.tensor([[1.0, 0, 1, 0, 0], [0, 1, 0, 1, 0], [1, 1, 0, 0, 1], [0, 0, 1, 1, 1]])
    _training_loss(name, model, x, y).backward()
    missing, nonfinite = [], []
    for key, p in model.named_parameters():
        if not p.requires_grad or key in NO_TAGGING_GRADIENT.get(name, ()):
            continue
        if p.grad is None or not bool(p.grad.abs().sum() > 0):
            missing.append(key)
        elif not bool(torch.isfinite(p.grad).all()):
            nonfinite.append(key)
    assert not missing, f"no gradient reaches {missing}"
    assert not nonfinite, f"non-finite gradient in {nonfinite}"
    for key in NO_TAGGING_GRADIENT.get(name, ()):  # the exemption is what it says it is
        grad = dict(model.named_parameters())[key].grad
        assert grad is None or not bool(grad.abs().sum() > 0)


# 4-5 s each on 2 cores: in the default run the architectures whose siblings are not (fa_resnet
# stays for shake_fa_resnet, mobilenet_attn's body is mobilenet's; cp_resnet is short_chunk's kin)
SLOW_IN_DEFAULT_RUN = {"shake_fa_resnet", "mobilenet", "cp_resnet", "mel_cnn", "crnn",
                       "mobilenet_attn"}


@pytest.mark.parametrize("name", [
    pytest.param(name, marks=pytest.mark.slow)
    if name in SLOW_LEARNERS | SLOW_IN_DEFAULT_RUN else name
    for name in sorted(SMALL)])
def test_training_steps_lower_the_loss_clearly(name):
    # Eight Adam steps on a batch of distinct windows with fixed labels: the loss (measured with
    # the same dropout and Shake-Shake draws before and after) must fall by well over what
    # kernel rounding could move it. vqvae: its reconstruction error, since the codebook terms
    # grow at first while the codes, which start near zero as in the authors' code, catch up.
    options, shape = SMALL[name]
    batch = LEARNING_BATCH.get(name, 8)
    torch.manual_seed(0)
    model = nets.build(name, N_TAGS, **options).train()
    x = torch.randn(batch, *shape)
    y = (torch.rand(batch, N_TAGS) > 0.5).float()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)

    def measured() -> float:
        torch.manual_seed(1)
        with torch.no_grad():
            return _loss(name, model, x, y).item()

    before = measured()
    for _ in range(8):
        optimizer.zero_grad()
        torch.manual_seed(1)
        _training_loss(name, model, x, y).backward()
        optimizer.step()
    after = measured()
    assert after < 0.85 * before, (before, after)


def test_crnn_high_level_features_and_attention():
    torch.manual_seed(0)
    model = nets.build("crnn", N_TAGS, attention=True, n_features=3).eval()
    x, features = torch.randn(2, 96, 40), torch.randn(2, 3)
    scripted = torch.jit.script(model)
    with torch.no_grad():
        y = model(x, features)
        assert y.shape == (2, N_TAGS)
        assert (scripted(x, features) - y).abs().max() <= 1e-5
        assert not torch.allclose(y, model(x, torch.zeros(2, 3)))
    with pytest.raises(ValueError, match="pass features"):
        model(x)
    assert model.fuse.out_features == 128


def test_mel_cnn_has_the_keras_parameter_count():
    convs = (9 * 1 * 32 + 32) + (9 * 32 * 64 + 64) + 2 * (9 * 64 * 64 + 64)
    batch_norms = 4 * (32 + 64 + 64 + 64)
    # 128 x 261 -> (conv valid, pool 2) x 4 -> 6 x 14 positions of 64 channels
    dense = 64 * 6 * 14 * 50 + 50
    assert convs + batch_norms + dense == 362_418
    assert nets.keras_param_count(nets.build("mel_cnn", 50)) == 362_418


def test_lstm_has_the_keras_parameter_count():
    def keras_lstm(inputs: int, units: int) -> int:  # one bias per gate, as Keras has
        return 4 * (units * (inputs + units) + units)

    lstms = 2 * keras_lstm(128, 100) + 2 * keras_lstm(200, 100)
    convs = (3 * 200 * 50 + 50) + 2 * (3 * 50 * 50 + 50)
    dense = (227 - 6) * 50 * 50 + 50
    assert (lstms, convs, dense) == (424_000, 45_150, 552_550)
    assert lstms + convs + dense == 1_021_700
    model = nets.build("lstm", 50)
    assert nets.keras_param_count(model) == 1_021_700
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == 1_021_700


def test_samplecnn_size_and_length():
    model = nets.build("samplecnn", 50)
    count = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert count == 2_017_714
    assert abs(count - 2.1e6) <= 0.05 * 2.1e6
    assert len(BLOCK_CHANNELS) == 9
    with torch.device("meta"):
        model = nets.build("samplecnn", 50).eval()
        out = model.features(torch.empty(1, 1, 3**10))
    assert out.shape == (1, 512, 1)


@pytest.mark.parametrize(("vq_type", "rows"), [(1, 4), (2, 1)])
def test_vqvae_code_map_shape(vq_type, rows):
    # Shapes only, on the meta device: the full-size encoder is ~50 GMAC.
    with torch.device("meta"):
        model = nets.build("vqvae", 1, vq_type=vq_type).eval()
        x = torch.empty(1, 128, 1024)
        codes, indices = model.encode(x)
        reconstruction = model(x)
    assert codes.shape == (1, 256, rows, 512)
    assert indices.shape == (1, rows, 512)
    assert reconstruction.shape == x.shape
    assert model.codebook.embedding.weight.shape == (1024, 256)


def test_vqvae_forward_vq_losses_are_scriptable():
    model, x = _small("vqvae")
    scripted = torch.jit.script(model.eval())
    reconstruction, vq_loss, commitment_loss, indices = scripted.forward_vq(x)
    assert reconstruction.shape == x.shape
    assert vq_loss.ndim == 0 and commitment_loss.ndim == 0
    assert indices.dtype == torch.int64 and int(indices.max()) < 64


@pytest.mark.parametrize("name", ["vqvae_gru", "vqvae_cnn"])
@pytest.mark.parametrize("freeze", [True, False])
def test_vqvae_tagger_freezes_its_encoder(name, freeze):
    model, x = _small(name, freeze_encoder=freeze)
    model.train()
    assert model.encoder.training is not freeze
    before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    F.binary_cross_entropy_with_logits(model(x), torch.ones(2, N_TAGS)).backward()
    optimizer.step()
    after = model.encoder.state_dict()
    unchanged = all(torch.equal(before[k], after[k]) for k in before)
    assert unchanged is freeze


def test_vqvae_tagger_loads_a_pretrained_encoder():
    options = {"channels": 64, "n_codes": 64}
    autoencoder = nets.build("vqvae", 1, **options)
    tagger = nets.build("vqvae_gru", N_TAGS, **options)
    tagger.load_encoder_state_dict(autoencoder.state_dict())
    for key, value in autoencoder.encoder.state_dict().items():
        assert torch.equal(tagger.encoder.state_dict()[key], value)
    assert torch.equal(tagger.codebook.embedding.weight, autoencoder.codebook.embedding.weight)
    with pytest.raises(RuntimeError):
        nets.build("vqvae_gru", N_TAGS, vq_type=2, **options).load_encoder_state_dict(autoencoder)


def test_shake_mixes_with_alpha_forward_and_beta_backward():
    torch.manual_seed(0)
    a = torch.ones(64, 1, 1, 1, requires_grad=True)
    b = torch.zeros(64, 1, 1, 1, requires_grad=True)
    mixed = shake(a, b, training=True)  # = alpha
    mixed.sum().backward()  # a.grad = beta, b.grad = 1 - beta
    assert torch.allclose(a.grad + b.grad, torch.ones_like(a))
    assert ((mixed > 0) & (mixed < 1)).all()
    assert not torch.allclose(mixed, a.grad)
    assert len(set(mixed.flatten().tolist())) == 64  # one weight per sample
    assert torch.equal(shake(a, b, training=False), torch.full_like(a, 0.5))


def test_shake_shake_is_random_in_training_only():
    torch.manual_seed(0)
    model = nets.build("shake_fa_resnet", N_TAGS, base_channels=8)
    x = torch.randn(2, 32, 32)
    with torch.no_grad():
        model.train()
        assert not torch.allclose(model(x), model(x))
        model.eval()
        assert torch.equal(model(x), model(x))


def test_frequency_aware_conv_sees_the_frequency_position():
    conv = FreqAwareConv2d(2, 1, (1, 1))
    with torch.no_grad():
        conv.conv.weight.zero_()
        conv.conv.weight[0, 2] = 1.0  # only the extra channel
        out = conv(torch.zeros(1, 2, 5, 3))
    assert torch.allclose(out[0, 0, :, 0], torch.linspace(-1, 1, 5))

    torch.manual_seed(0)
    model = nets.build("fa_resnet", N_TAGS, base_channels=8).eval()
    plain = nets.build("cp_resnet", N_TAGS, base_channels=8)
    first = model.stage1[0].branch1.conv1
    assert first.conv.in_channels == plain.stage1[0].branch1.conv1.in_channels + 1 == 9
    x = torch.randn(2, 32, 32)
    with torch.no_grad():
        y = model(x)
        first.conv.weight[:, -1] = 0.0
        assert not torch.allclose(y, model(x))


def test_receptive_field_follows_rho():
    def rf(**options):
        return nets.receptive_field(nets.build("cp_resnet", N_TAGS, base_channels=8, **options))

    # Stem 5 (stride 2); 3x3 then 1x1; pool; two 3x3; pool; two 3x3; one 3x3 (p = 5); pool.
    assert rf(rho=5) == (87, 87)
    assert rf(rho=3)[0] < rf(rho=4)[0] < rf(rho=5)[0] < rf(rho=7)[0] < rf(rho=10)[0]
    freq, time = rf(rho=5, rho_t=2)
    assert freq == 87 and time < 87
    fa = nets.build("shake_fa_resnet", N_TAGS, base_channels=8, rho=5)
    assert nets.receptive_field(fa) == (87, 87)
    with pytest.raises(ValueError):
        nets.receptive_field(nets.build("lstm", N_TAGS))


def test_mobilenet_attn_heads_and_inference_logits():
    model, x = _small("mobilenet_attn")
    model.eval()
    y = torch.tensor([[1.0, 0.0, 1.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0, 1.0]])
    with torch.no_grad():
        attention_logits, average_logits = model.forward_heads(x)
        logits = model(x)
    assert attention_logits.shape == average_logits.shape == logits.shape == (2, N_TAGS)
    mean_prob = 0.5 * (attention_logits.sigmoid() + average_logits.sigmoid())
    assert torch.allclose(logits.sigmoid(), mean_prob, atol=1e-5)
    expected = 0.5 * (
        F.binary_cross_entropy_with_logits(attention_logits, y)
        + F.binary_cross_entropy_with_logits(average_logits, y)
    )
    assert torch.allclose(nets.two_head_loss((attention_logits, average_logits), y), expected)
    with pytest.raises(ValueError, match="whole number of segments"):
        model(torch.randn(1, 96, 100))


def test_mobilenet_body_loads_another_instances_weights():
    source = nets.build("mobilenet", N_TAGS)
    target = nets.build("mobilenet_attn", N_TAGS)
    target.load_body_state_dict(source.body.state_dict())
    for key, value in source.body.state_dict().items():
        assert torch.equal(target.body.state_dict()[key], value)
    # torchvision's mobilenet_v2 state-dict layout: features.* (used) and classifier.* (ignored)
    other = nets.build("mobilenet", N_TAGS)
    prefixed = {f"features.{k}": v for k, v in other.body.state_dict().items()}
    prefixed["classifier.1.weight"] = torch.zeros(1000, 1280)
    target.load_body_state_dict(prefixed)
    assert torch.equal(target.body[0][0].weight, other.body[0][0].weight)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SMALL))
def test_default_input(name):
    assert_runs_at_documented_input(name, "default_input")


@pytest.mark.slow
@pytest.mark.parametrize(("vq_type", "rows"), [(1, 4), (2, 1)])
def test_vqvae_code_map_computed(vq_type, rows):
    torch.manual_seed(0)
    model = nets.build("vqvae", 1, vq_type=vq_type).eval()
    with torch.no_grad():
        codes, _ = model.encode(torch.randn(1, 128, 1024))
    assert codes.shape == (1, 256, rows, 512)


# The MobileNets take ~10 s each here and shake_fa_resnet 6 s (fa_resnet, its body without the
# shake, stays): slow; the other architectures stay in the default run.
@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n.startswith(
    "mobilenet") or n == "shake_fa_resnet" else n
    for n in sorted(SMALL) if n != "vqvae"])  # vqvae: no tags
def test_every_tagger_becomes_a_model_file_giving_probabilities(name, tmp_path):
    from streamtag.frontend import LogMelOptions
    from streamtag.model import modelfile

    model, x = _small(name)
    waveform = nets.spec(name)["input_kind"] == "waveform"
    manifest = {"name": name, "tags": [f"t{i}" for i in range(N_TAGS)],
                "input_kind": "waveform" if waveform else "logmel",
                "frontend": LogMelOptions(n_mels=96 if waveform else x.shape[1]),
                "window": x.shape[-1], "hop": x.shape[-1] // 2 or 1,
                "architecture": {"name": name, "options": SMALL[name][0]}}
    modelfile.save(model, tmp_path / f"{name}.pt", manifest)
    loaded = modelfile.load(tmp_path / f"{name}.pt", device="cpu")
    probs = loaded(x)
    assert probs.shape == (2, N_TAGS)
    assert bool(((probs >= 0) & (probs <= 1)).all())
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(probs, torch.sigmoid(model(x)), atol=1e-5, rtol=1e-5)
