"""Every autoencoder class diffusers exports is supported or refused: for each supported class the
estimate equals the naive float64 script, the encoder sees the input its class's pipelines give it,
and only the encoder half is placed on the device; each refused class says why in one sentence.

Each class is a tiny model built from a small config and saved with save_pretrained; the
reference encodes the same images (clips, waveforms) with the diffusers model directly, as its
pipeline prepares them (tests/cases.py and tests/family_cases.py).
"""

from __future__ import annotations

import importlib
import inspect
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import diffusers
import pytest
import torch

from cases import CASES, WAN, Case
from family_cases import AUDIO_CASES, CLIP_CASES, PIXEL_CASES, Tiny
from latent_scale.errors import InputError
from latent_scale.models import DECODER_PARTS, FAMILIES, REFUSED, AudioModel, Encoder, audio_of, load_model

if TYPE_CHECKING:
    from conftest import Cli

SIZE = 32
TOL = 1e-6
pipeline_module = importlib.import_module("latent_scale.estimation")


DETERMINISTIC = {"latent", "latents"}


@pytest.fixture(scope="module")
def photos(photo_set: Callable[..., Path]) -> Path:
    """Six real photographs; at SIZE the batches of 4 split them 4 + 2."""
    return photo_set(6, size=40)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Callable[[Case], tuple[torch.nn.Module, Path]]:
    """Each case's model, built once from its config and saved with save_pretrained."""
    cache: dict[str, tuple[torch.nn.Module, Path]] = {}

    def get(case: Case | Tiny) -> tuple[torch.nn.Module, Path]:
        if case.id not in cache:
            if not hasattr(diffusers, case.cls):
                pytest.skip(f"diffusers {diffusers.__version__} has no {case.cls}")
            if getattr(case, "needs", None):
                pytest.importorskip(case.needs, reason=f"{case.cls} needs {case.needs}")
            torch.manual_seed(0)
            vae = getattr(diffusers, case.cls)(**case.kwargs).eval()
            path = tmp_path_factory.mktemp(case.id)
            vae.save_pretrained(path)
            cache[case.id] = vae, path
        return cache[case.id]

    return get


def naive(vae: torch.nn.Module, case: Case, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The throw-away script: every image in one encode call, as diffusers' pipelines call it
    (video VAEs get a one-frame clip), latents kept in float64."""
    with torch.no_grad():
        out = getattr(vae.encode(x.unsqueeze(2) if case.video else x), case.output)
    if case.output == "latent_dist":
        return out.mean.double(), out.std.double()
    return out.double(), None


def naive_tiny(vae: torch.nn.Module, case: Tiny, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The throw-away script for a newer class: its pipeline's preparation (case.feed), one encode call
    (one per unit where the class takes one at a time), the posterior read as its pipeline reads it."""
    model = case.reference(vae) if case.reference else vae
    x = case.feed(x.unsqueeze(2) if x.dim() == 4 and case.video else x)
    with torch.no_grad():
        parts = [case.read(model, model.encode(u, **case.encode_kwargs)) for u in (x.split(1) if case.one_at_a_time
                                                                                   else [x])]
    mean = torch.cat([p[0] for p in parts]).double()
    return mean, None if parts[0][1] is None else torch.cat([p[1] for p in parts]).double()


def rel(a: float, b: float) -> float:
    return abs(a - b) / abs(b)


def differences(r: Any, mu: torch.Tensor, sigma: torch.Tensor | None) -> list[float]:
    """Relative differences of a result from the naive float64 statistics of the same latents, after
    checking what the result says it counted."""
    channels = mu.shape[1]
    rows = mu.transpose(0, 1).reshape(channels, -1)
    std = float(mu.std())
    diffs = [rel(r.std, std), abs(r.mean - float(mu.mean())) / std, rel(r.scale_factor, 1 / std)]
    diffs += [rel(a, float(b)) for a, b in zip(r.per_channel["std"], rows.std(1), strict=True)]
    diffs += [abs(a - float(b)) / std for a, b in zip(r.per_channel["mean"], rows.mean(1), strict=True)]
    assert r.num_elements == mu.numel() and r.latent_shape == list(mu.shape[1:])
    assert r.model["stochastic"] == (sigma is not None)
    if sigma is not None:
        expected = (float(mu.var()) + float((sigma**2).mean())) ** 0.5
        diffs.append(rel(r.estimates["expected_sample"]["std"], expected))
        assert set(r.estimates) == {"mode", "sample", "expected_sample"}
    else:
        assert set(r.estimates) == {"mode"}
    return diffs


def test_registry_lists_exactly_the_tested_classes() -> None:
    tested = {c.cls for c in [*CASES, *PIXEL_CASES, *CLIP_CASES, *AUDIO_CASES]}
    assert set(FAMILIES) == tested and not tested & set(REFUSED)
    for case in CASES:
        assert FAMILIES[case.cls].stochastic == (case.output == "latent_dist")
        assert FAMILIES[case.cls].video == case.video
        assert FAMILIES[case.cls].output == case.output


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_estimate_equals_naive_reference(case: Case, built: Callable, photos: Path, monkeypatch: pytest.MonkeyPatch,
                                         record_property: Callable[[str, object], None], measure: Callable[..., Any],
                                         classic_pixels: Callable[..., torch.Tensor]) -> None:
    vae, path = built(case)
    ranges: dict[str, list[float]] = {"encoder": [], "inner": []}

    def watch(module: torch.nn.Module, key: str) -> None:
        def hook(_: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            ranges[key] += [float(args[0].min()), float(args[0].max())]
        module.register_forward_pre_hook(hook)

    def load_and_watch(*args: Any, **kwargs: Any) -> Encoder:
        enc = load_model(*args, **kwargs)
        watch(enc.vae.encoder, "encoder")
        if case.inner:
            watch(case.inner(enc.vae), "inner")
        return enc

    monkeypatch.setattr(pipeline_module, "load_model", load_and_watch)
    r = measure(path, photos, batch_size=4, posterior="mode")

    mu, sigma = naive(vae, case, classic_pixels(sorted(photos.rglob("*.png")), SIZE))
    channels = mu.shape[1]
    diffs = differences(r, mu, sigma)
    assert r.num_images == 6 and r.model["class"] == case.cls
    record_property("max_rel_diff", max(diffs))
    assert max(diffs) < TOL, diffs

    # Every class is fed [-1, 1] (diffusers' pipelines normalise images so); Tiny rescales inside.
    assert ranges["encoder"] and -1 <= min(ranges["encoder"]) < 0 < max(ranges["encoder"]) <= 1
    if case.inner:
        assert ranges["inner"] and 0 <= min(ranges["inner"]) < 0.5 < max(ranges["inner"]) <= 1

    if case.video:  # one-frame clip, channels on dim 1: per-channel numbers line up with latents_mean/std
        assert r.latent_shape[1] == 1
        norm = r.model["config_latents_std"]
        assert norm is None or len(norm) == len(r.per_channel["std"]) == channels


def waveforms(channels: int, samples: int = 4096, count: int = 2) -> torch.Tensor:
    """`count` clips of a chord with a rising tone over a little noise, in [-1, 1]: (count, channels, samples)."""
    t = torch.arange(samples, dtype=torch.float64) / 16000
    clips = [0.3 * torch.sin(2 * torch.pi * (220 * (k + 1) + 400 * t) * t) + 0.2 * torch.sin(2 * torch.pi * 330 * t)
             for k in range(count)]
    noise = torch.randn(count, channels, samples, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return (torch.stack(clips)[:, None] + 0.05 * noise).clamp(-1, 1).float()


def unit_input(case: Case | Tiny, count: int = 1) -> torch.Tensor:
    """What a source hands the encoder for `case`: images, clips of 5 frames, or waveforms."""
    if case in AUDIO_CASES:
        return waveforms(case.inputs, count=count)
    frames = (5,) if case in CLIP_CASES else ()
    return torch.rand(count, 3, *frames, SIZE, SIZE, generator=torch.Generator().manual_seed(0)) * 2 - 1


def uses(path: Path, case: Case | Tiny, children: set[str]) -> bool:
    """Whether encode() reads `children`: with their weights and buffers set to NaN, does any latent
    come out NaN (whether encode calls them or only reads their weights)?"""
    enc = load_model(str(path), device="cpu")
    with torch.no_grad():
        for name in children:
            for tensor in [*getattr(enc.vae, name).parameters(), *getattr(enc.vae, name).buffers()]:
                if tensor.is_floating_point():
                    tensor.fill_(float("nan"))
    return any(bool(part.isnan().any()) for part in enc.posterior(unit_input(case)) if part is not None)


@pytest.mark.parametrize("case", [*CASES, *PIXEL_CASES, *CLIP_CASES, *AUDIO_CASES], ids=lambda c: c.id)
def test_only_the_encoder_half_is_placed(case: Case | Tiny, built: Callable) -> None:
    """DECODER_PARTS must be exactly the children encode() never uses, so nothing the encoder needs
    is left behind and the decoder never takes device memory (children holding no weights cost none)."""
    _, path = built(case)
    children = {name for name, child in load_model(str(path), device="cpu").vae.named_children()
                if any(t.is_floating_point() for t in [*child.parameters(), *child.buffers()])}
    assert not uses(path, case, children & DECODER_PARTS)
    assert [name for name in children - DECODER_PARTS if not uses(path, case, {name})] == []

    # A device other than the CPU (meta: no memory, no GPU needed) gets only the encoder half.
    enc = load_model(str(path), device="meta", dtype="bfloat16")
    for name, child in enc.vae.named_children():
        for p in child.parameters():
            placed = (p.device.type, p.dtype)
            assert placed == (("cpu", torch.float32) if name in DECODER_PARTS else ("meta", torch.bfloat16)), name


@pytest.mark.parametrize("case", PIXEL_CASES, ids=lambda c: c.id)
def test_newer_class_estimate_equals_naive_reference(case: Tiny, built: Callable, photos: Path,
                                                     record_property: Callable[[str, object], None],
                                                     measure: Callable[..., Any],
                                                     classic_pixels: Callable[..., torch.Tensor]) -> None:
    """Images in [-1, 1] prepared as each class's pipeline prepares them (a one-frame clip, an opaque
    alpha, [0, 1] for RAE, one image per call for HunyuanVideo 1.5); RAE's statistics are of its raw
    features, before the normalisation its encode() applies."""
    vae, path = built(case)
    r = measure(path, photos, batch_size=4, posterior="mode")
    mu, sigma = naive_tiny(vae, case, classic_pixels(sorted(photos.rglob("*.png")), SIZE))
    diffs = differences(r, mu, sigma)
    assert r.num_images == 6 and r.model["class"] == case.cls
    assert r.model["latent_channels"] == mu.shape[1]
    record_property("max_rel_diff", max(diffs))
    assert max(diffs) < TOL, diffs


@pytest.mark.parametrize("case", CLIP_CASES, ids=lambda c: c.id)
def test_clip_only_class_estimate_equals_naive_reference(case: Tiny, built: Callable, tmp_path: Path,
                                                         measure: Callable[..., Any],
                                                         classic_pixels: Callable[..., torch.Tensor]) -> None:
    """VidTok encodes clips of several frames: a 5-frame GIF pan over a photograph, decoded frame by
    frame with PIL for the reference; an image is refused in one sentence."""
    from PIL import Image, ImageSequence
    from skimage import data

    photo = Image.fromarray(data.astronaut())
    frames = [photo.crop((40 * i, 40, 40 * i + 256, 296)).resize((48, 48)) for i in range(5)]
    frames[0].save(tmp_path / "pan.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    vae, path = built(case)
    r = measure(path, tmp_path / "pan.gif", frames=5, posterior="mode")
    decoded = [f.convert("RGB") for f in ImageSequence.Iterator(Image.open(tmp_path / "pan.gif"))]
    clip = classic_pixels(decoded, SIZE).transpose(0, 1).unsqueeze(0)  # (1, 3, 5, H, W)
    mu, sigma = naive_tiny(vae, case, clip)
    assert r.num_images == 1 and max(differences(r, mu, sigma)) < TOL
    with pytest.raises(InputError, match=f"{case.cls} encodes clips of several frames, not single images"):
        load_model(str(path), device="cpu").posterior(unit_input(PIXEL_CASES[0]))


@pytest.mark.parametrize("case", [c for c in [*PIXEL_CASES, *CLIP_CASES] if FAMILIES[c.cls].temporal],
                         ids=lambda c: c.id)
def test_clips_of_one_plus_k_t_frames_are_the_class_own_encode(case: Tiny, built: Callable) -> None:
    """Clips of 1 + 2·t frames (t read from the config as the class's pipelines read it) give the
    latents of the class's own encode(): 1 + 2 latent frames for the causal VAEs, 2 for VidTok."""
    vae, path = built(case)
    enc = load_model(str(path), device="cpu", dtype="float32")
    t = FAMILIES[case.cls].temporal(dict(vae.config))
    x = torch.rand(2, 3, 1 + 2 * t, SIZE, SIZE, generator=torch.Generator().manual_seed(1)) * 2 - 1
    mean, _ = enc.posterior(x)
    ref, _ = naive_tiny(vae, case, x)
    assert mean.shape == ref.shape and mean.shape[2] == (2 if case in CLIP_CASES else 3)
    assert rel(1 / float(mean.double().std()), 1 / float(ref.std())) < TOL


@pytest.mark.parametrize(("cls", "t"), [("AutoencoderKLHunyuanVideo15", 4), ("AutoencoderKLLTX2Video", 8),
                                        ("AutoencoderKLKVAEVideo", 4), ("AutoencoderKLMagvit", 4),
                                        ("AutoencoderVidTok", 4), ("AutoencoderKLCosmos", 8),
                                        ("AutoencoderKLMiniMaxH3", 4), ("Kandinsky6SRVAE", 4)])
def test_temporal_compression_of_the_newer_defaults(cls: str, t: int) -> None:
    """The class's default config (what the published checkpoints mostly keep) gives its published t."""
    init = inspect.signature(getattr(diffusers, cls).__init__).parameters.items()
    assert FAMILIES[cls].temporal({k: p.default for k, p in init if k != "self"}) == t


@pytest.mark.parametrize("case", AUDIO_CASES, ids=lambda c: c.id)
def test_audio_class_posterior_is_its_own_encode(case: Tiny, built: Callable) -> None:
    """Waveforms (B, channels, samples) give the latents of the class's own encode() on its pipeline's
    input (the mel for LTX-2 audio, (B, samples) for MMAudio), to 1e-6 in the float64 factor; rate and
    channels come from the config; images are refused in one sentence."""
    vae, path = built(case)
    enc = load_model(str(path), device="cpu", dtype="float32")
    x = waveforms(case.inputs, count=3)
    mean, logvar = enc.posterior(x)
    ref_mean, ref_std = naive_tiny(vae, case, x)
    assert mean.shape == ref_mean.shape and rel(1 / float(mean.double().std()), 1 / float(ref_mean.std())) < TOL
    assert (logvar is None) == (ref_std is None) == (not FAMILIES[case.cls].stochastic)
    if logvar is not None:
        torch.testing.assert_close(torch.exp(0.5 * logvar.double()), ref_std, rtol=1e-5, atol=1e-7)
    mel = "ltx2-echo-mel-v1" if FAMILIES[case.cls].input == "mel" else None
    assert audio_of(enc) == AudioModel(case.rate, case.inputs, case.seconds, mel)
    assert enc.info.latent_channels == mean.shape[1]
    with pytest.raises(InputError, match=f"^{case.cls} encodes audio; pass audio files with --data$"):
        enc.posterior(unit_input(PIXEL_CASES[0], count=2))


def test_image_autoencoders_have_no_audio_input(built: Callable) -> None:
    enc = load_model(str(built(CASES[0])[1]), device="cpu")
    with pytest.raises(InputError, match="AutoencoderKL encodes images or clips, not audio"):
        audio_of(enc)
    with pytest.raises(InputError, match="AutoencoderKL encodes images or clips, not audio"):
        enc.posterior(waveforms(2))


@pytest.mark.parametrize("case", [c for c in CASES if c.video] + [CASES[0]], ids=lambda c: c.id)
def test_channels_last_placement_encodes_the_same(case: Case, built: Callable) -> None:
    """The CUDA path converts weights to channels_last; video VAEs mix 4-D and 5-D weights."""
    vae, path = built(case)
    enc = load_model(str(path), device="cpu")
    enc.to_device(torch.device("cpu"), channels_last=True)
    weights = [p for part in enc.encode_parts() for p in part.parameters() if p.dim() in (4, 5)]
    assert weights and all(p.is_contiguous(memory_format=torch.channels_last if p.dim() == 4
                                           else torch.channels_last_3d) for p in weights)
    x = torch.rand(2, 3, SIZE, SIZE) * 2 - 1
    mu, _ = enc.posterior(x)
    ref, _ = naive(vae, case, x)
    torch.testing.assert_close(mu.double(), ref, rtol=1e-4, atol=1e-5)


def test_deterministic_encoder_reports_the_mode(built: Callable, photos: Path, measure: Callable[..., Any]) -> None:
    """By default without a word; asked for a sample, with a warning."""
    _, path = built(next(c for c in CASES if c.cls == "AutoencoderTiny"))
    r = measure(path, photos, limit=2)
    assert r.recipe["posterior"] == "mode" and set(r.estimates) == {"mode"}
    with pytest.warns(UserWarning, match="AutoencoderTiny is deterministic"):
        r = measure(path, photos, limit=2, posterior="sample")
    assert set(r.estimates) == {"mode"}


def test_video_config_normalisation_is_reported(built: Callable) -> None:
    """latents_mean/std come from the config, or from LTX-Video's buffers; z_dim is the channel count."""
    wan = next(c for c in CASES if c.cls == "AutoencoderKLWan")
    info = load_model(str(built(wan)[1]), device="cpu").info
    assert info.config_latents_std == WAN["latents_std"] and info.latent_channels == WAN["z_dim"]
    ltx = next(c for c in CASES if c.cls == "AutoencoderKLLTXVideo")
    info = load_model(str(built(ltx)[1]), device="cpu").info
    assert info.config_latents_mean == [0.0] * 8 and info.config_latents_std == [1.0] * 8


# Where the autoencoder lives: pipeline folders and repos, bare folders, single files.

def case_of(cls: str) -> Case:
    return next(c for c in CASES if c.cls == cls)


def make_pipeline(root: Path, built: Callable, components: dict[str, str]) -> Path:
    """A pipeline folder: model_index.json naming each component's class, one folder per component."""
    index: dict[str, Any] = {"_class_name": "SomePipeline", "_diffusers_version": diffusers.__version__,
                             "scheduler": ["diffusers", "DDIMScheduler"], "safety_checker": [None, None]}
    root.mkdir(parents=True, exist_ok=True)
    for name, cls in components.items():
        shutil.copytree(built(case_of(cls))[1], root / name)
        index[name] = ["diffusers", cls]
    (root / "model_index.json").write_text(json.dumps(index))
    return root


@pytest.mark.parametrize("components, subfolder, found", [
    ({"vae": "AutoencoderKL"}, None, ("vae", "AutoencoderKL")),
    ({"movq": "VQModel"}, None, ("movq", "VQModel")),  # Kandinsky 2.2 names its VQModel `movq`
    ({"vae": "AutoencoderDC", "movq": "VQModel"}, None, ("vae", "AutoencoderDC")),
    ({"vae": "AutoencoderDC", "movq": "VQModel"}, "movq", ("movq", "VQModel")),
])
def test_pipeline_folder(tmp_path: Path, built: Callable, components: dict[str, str], subfolder: str | None,
                         found: tuple[str, str]) -> None:
    root = make_pipeline(tmp_path, built, components)
    info = load_model(str(root), subfolder=subfolder, device="cpu").info
    assert (info.where.subfolder, info.class_name) == found


def test_pipeline_without_autoencoder_is_exit_2(tmp_path: Path, built: Callable, cli: Cli, photos: Path) -> None:
    root = make_pipeline(tmp_path / "pipe", built, {})
    with pytest.raises(InputError, match="no autoencoder found .*model_index.json"):
        load_model(str(root), device="cpu")
    with pytest.raises(InputError, match="no config.json in .*check --subfolder"):
        load_model(str(root), subfolder="unet", device="cpu")
    cli.fails("estimate", "--model", root, "--data", photos, "--workers", 0, "--no-progress",
              says=["no autoencoder found"])


@pytest.mark.parametrize("cls", sorted(REFUSED))
def test_refused_class_says_why_and_what_to_do(cls: str, tmp_path: Path, cli: Cli, photos: Path) -> None:
    (tmp_path / "vae").mkdir()
    (tmp_path / "vae" / "config.json").write_text(json.dumps({"_class_name": cls}))
    with pytest.raises(InputError, match=f"^{cls} .*; .*--latents$"):
        load_model(str(tmp_path / "vae"), device="cpu")
    cli.fails("estimate", "--model", tmp_path / "vae", "--data", photos, "--no-progress", says=[cls, "--latents"])


def test_unknown_class_names_the_supported_ones(tmp_path: Path, cli: Cli, photos: Path) -> None:
    (tmp_path / "future").mkdir()
    (tmp_path / "future" / "config.json").write_text(json.dumps({"_class_name": "AutoencoderKLFuture"}))
    with pytest.raises(InputError, match="'AutoencoderKLFuture' is not supported; supported classes: "
                                         "AsymmetricAutoencoderKL, AutoencoderDC, .*, VQModel$"):
        load_model(str(tmp_path / "future"), device="cpu")
    cli.fails("estimate", "--model", tmp_path / "future", "--data", photos, "--no-progress",
              says=["supported classes: "])
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "config.json").write_text(json.dumps({"hidden_size": 8}))
    with pytest.raises(InputError, match="has no _class_name"):
        load_model(str(tmp_path / "plain"), device="cpu")


def warm_hub_cache(cache: Path, repo: str, files: Path) -> None:
    """What a download leaves in a Hugging Face cache: a snapshot per commit and refs/main naming it."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    folder = cache / f"models--{repo.replace('/', '--')}"
    shutil.copytree(files, folder / "snapshots" / commit)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(commit)


def test_hub_repos_from_a_warm_cache_offline(tmp_path: Path, built: Callable) -> None:
    cache = tmp_path / "cache"
    warm_hub_cache(cache, "acme/kandinsky", make_pipeline(tmp_path / "pipe", built, {"movq": "VQModel"}))
    warm_hub_cache(cache, "acme/taesd", built(case_of("AutoencoderTiny"))[1])
    info = load_model("acme/kandinsky", cache_dir=str(cache), device="cpu").info
    assert (info.where.kind, info.where.subfolder, info.class_name) == ("hub", "movq", "VQModel")
    info = load_model("acme/taesd", cache_dir=str(cache), device="cpu").info
    assert (info.where.subfolder, info.class_name) == (None, "AutoencoderTiny")
    with pytest.raises(InputError, match="could not load model 'acme/missing': the Hugging Face cache has no copy"):
        load_model("acme/missing", cache_dir=str(cache), device="cpu")
    with pytest.raises(InputError, match="could not load model 'acme/kandinsky'"):
        load_model("acme/kandinsky", subfolder="vae", cache_dir=str(cache), device="cpu")


@pytest.mark.parametrize("cls", ["AutoencoderKL", "AutoencoderDC", "AutoencoderKLWan"])
def test_single_file_with_its_config_beside_it(tmp_path: Path, built: Callable, cls: str) -> None:
    """Offline, from_single_file needs the diffusers config: the config.json next to the file."""
    case = case_of(cls)
    vae, path = built(case)
    shutil.copy(path / "config.json", tmp_path / "config.json")
    shutil.copy(path / "diffusion_pytorch_model.safetensors", tmp_path / "finetune.safetensors")
    enc = load_model(str(tmp_path / "finetune.safetensors"), device="cpu")
    assert (enc.info.where.kind, enc.info.class_name) == ("file", cls)
    x = torch.rand(2, 3, SIZE, SIZE) * 2 - 1
    # same weights; only float32 rounding differs (the tool runs channels_last)
    torch.testing.assert_close(enc.posterior(x)[0].double(), naive(vae, case, x)[0], rtol=1e-4, atol=1e-5)


def test_single_file_errors(tmp_path: Path, built: Callable) -> None:
    kl = built(case_of("AutoencoderKL"))[1]
    lone = tmp_path / "lone"
    lone.mkdir()
    shutil.copy(kl / "diffusion_pytorch_model.safetensors", lone / "vae.safetensors")
    with pytest.raises(InputError, match="could not load .*vae.safetensors as an AutoencoderKL single file .*"
                                         "config.json beside the file"):
        load_model(str(lone / "vae.safetensors"), device="cpu")
    with pytest.raises(InputError, match="--subfolder applies to folders and hub repos"):
        load_model(str(lone / "vae.safetensors"), subfolder="vae", device="cpu")
    tiny = built(case_of("AutoencoderTiny"))[1]
    with pytest.raises(InputError, match="AutoencoderTiny cannot be loaded from a single file"):
        load_model(str(tiny / "diffusion_pytorch_model.safetensors"), device="cpu")
