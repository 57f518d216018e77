"""The audio source (listing, decoding, resampling, channels, clip positions), the mel spectrogram of
mel-input autoencoders against their diffusers pipeline's, and every audio autoencoder class measured
end to end against its own encode() on the same waveform."""

from __future__ import annotations

import sys
import types
import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from family_cases import AUDIO_CASES
from latent_scale.sources import audio

RATE = 16000  # the tiny Oobleck's and KVAE's rate (family_cases.AUDIO_CASES)


def read_wav(path: Path) -> np.ndarray:
    """The naive reader: Python's `wave`, 16-bit samples / 32768, as (channels, samples) float32."""
    with wave.open(str(path), "rb") as w:
        raw = np.frombuffer(w.readframes(w.getnframes()), "<i2").reshape(-1, w.getnchannels())
    return (raw.T / 32768.0).astype(np.float32)


def test_clip_starts_are_evenly_spaced_first_at_zero_last_at_the_end() -> None:
    assert audio.clip_starts(100, 10, 1) == [0]
    assert audio.clip_starts(100, 10, 3) == [0, 45, 90]
    assert audio.clip_starts(10, 10, 4) == [0, 0, 0, 0]
    with pytest.raises(ValueError, match="9 samples, fewer than a clip of 10 samples"):
        audio.clip_starts(9, 10, 1)


def test_clip_length_rounds_half_up() -> None:
    assert audio.clip_samples(1.0, 44100) == 44100
    assert audio.clip_samples(0.5 / 44100 * 3, 44100) == 2  # 1.5 samples
    assert audio.clip_samples(47.55, 44100) == 2096955


def test_channels_as_stable_audio_converts_them() -> None:
    mono = torch.tensor([[0.25, -0.5, 1.0]])
    stereo = torch.tensor([[0.25, -0.5, 1.0], [0.75, 0.5, -1.0]])
    assert torch.equal(audio.to_channels(mono, 2), torch.tensor([[0.25, -0.5, 1.0], [0.25, -0.5, 1.0]]))
    assert torch.equal(audio.to_channels(stereo, 1), torch.tensor([[0.5, 0.0, 0.0]]))
    assert audio.to_channels(stereo, 2) is stereo
    with pytest.raises(ValueError) as err:
        audio.to_channels(torch.zeros(6, 3), 2)
    assert "6 audio channels" in str(err.value) and "\n" not in str(err.value)


def test_read_window_at_the_file_rate_is_the_wav_samples(tmp_path: Path, write_wav: Any) -> None:
    path = tmp_path / "a.wav"
    write_wav(path, RATE, channels=2, seconds=1.0)
    want = read_wav(path)
    got = audio.read_window(str(path), RATE, 1234, 3000)
    assert got.dtype == np.float32 and np.array_equal(got, want[:, 1234:4234])
    with pytest.raises(ValueError, match="fewer than a clip"):
        audio.read_window(str(path), RATE, RATE - 1000, 3000)


def test_resampling_keeps_a_tone_where_it_was(tmp_path: Path) -> None:
    """A 440 Hz tone written at 44.1 kHz and read at 48 kHz is the same tone sampled at 48 kHz (FFmpeg's
    resampler: within 1e-3 away from the edges), and the length scales with the rate."""
    path = tmp_path / "tone.wav"
    t = np.arange(44100) / 44100
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(44100)
        w.writeframes(np.round(0.5 * np.sin(2 * np.pi * 440 * t) * 32767).astype("<i2").tobytes())
    assert audio.total_samples(str(path), 48000, (0, 0)) == 48000
    got = audio.read_window(str(path), 48000, 0, 48000)[0]
    want = 0.5 * np.sin(2 * np.pi * 440 * np.arange(48000) / 48000)
    assert np.abs(got[200:-200] - want[200:-200]).max() < 1e-3


def test_listing_folders_lists_globs_and_video_tracks(tmp_path: Path, write_wav: Any) -> None:
    for name in ("b/one.wav", "a/two.flac", "c/clip.mp4", "notes.txt", "img.png"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    paths, root = audio.list_audio(str(tmp_path))
    assert root == str(tmp_path)
    assert [Path(p).relative_to(tmp_path).as_posix() for p in paths] == ["a/two.flac", "b/one.wav", "c/clip.mp4"]
    listing = tmp_path / "list.txt"
    listing.write_text("b/one.wav\nimg.png\n# a comment\nc/clip.mp4\n")
    assert audio.list_audio(str(listing))[0] == [str(tmp_path / "b/one.wav"), str(tmp_path / "c/clip.mp4")]
    assert audio.list_audio(str(tmp_path / "*" / "*.wav")) == ([str(tmp_path / "b/one.wav")], str(tmp_path))
    assert audio.list_audio(str(tmp_path / "img.png")) == ([], str(tmp_path))


def test_probe_reads_rate_and_channels_and_says_why_not(tmp_path: Path, write_wav: Any) -> None:
    write_wav(tmp_path / "s.wav", 22050, channels=2, seconds=0.1)
    (tmp_path / "broken.wav").write_bytes(b"RIFF not really")
    assert audio.probe(str(tmp_path / "s.wav")) == audio.AudioInfo(22050, 2)
    broken = audio.probe(str(tmp_path / "broken.wav"))
    assert broken.error and "\n" not in broken.error
    assert audio.probe(str(tmp_path / "missing.wav")).error


# --- mel spectrograms: the tool's against the diffusers pipeline's own ---------------------------------

def _slaney_mel_hz(m: np.ndarray) -> np.ndarray:
    return np.where(m >= 15, 1000 * np.exp(np.log(6.4) / 27 * (m - 15)), m * 200 / 3)


def _float64_mel(wave_: np.ndarray, rate: int, n_fft: int, hop: int, bins: int) -> np.ndarray:
    """torchaudio's MelSpectrogram(center, reflect, hann, power=1, slaney scale and norm) from its
    definition, in float64 with numpy's FFT: (..., bins, frames)."""
    x = np.pad(wave_.astype(np.float64), [(0, 0)] * (wave_.ndim - 1) + [(n_fft // 2, n_fft // 2)], mode="reflect")
    starts = range(0, x.shape[-1] - n_fft + 1, hop)
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
    mag = np.abs(np.fft.rfft(np.stack([x[..., s:s + n_fft] for s in starts], axis=-2) * window, axis=-1))
    freqs = np.linspace(0, rate / 2, n_fft // 2 + 1)
    top = 15 + np.log(rate / 2 / 1000) / (np.log(6.4) / 27)
    pts = _slaney_mel_hz(np.linspace(0.0, top, bins + 2))
    lower = (freqs[None] - pts[:-2, None]) / (pts[1:-1] - pts[:-2])[:, None]
    upper = (pts[2:, None] - freqs[None]) / (pts[2:] - pts[1:-1])[:, None]
    fb = np.maximum(0, np.minimum(lower, upper)) * (2 / (pts[2:] - pts[:-2]))[:, None]
    return np.swapaxes(mag @ fb.T, -1, -2)


class _Float64MelSpectrogram:
    """A stand-in for torchaudio.transforms.MelSpectrogram (not installable beside this torch) that
    computes _float64_mel for the arguments the Echo pipeline passes."""

    def __init__(self, sample_rate: int, n_fft: int, hop_length: int, n_mels: int, **_: Any) -> None:
        self.args = sample_rate, n_fft, hop_length, n_mels

    def to(self, device: Any) -> _Float64MelSpectrogram:
        return self

    def __call__(self, wave_: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(_float64_mel(wave_.numpy(), *self.args))


def _echo_mel(monkeypatch: pytest.MonkeyPatch, wave_: torch.Tensor, config: dict[str, Any]
              ) -> tuple[torch.Tensor, bool]:
    """The mel diffusers' Echo pipeline feeds AutoencoderKLLTX2Audio for `wave_` (C, S) at the model's
    rate, taken from its own `_encode_audio`; and whether torchaudio itself computed it."""
    import diffusers  # noqa: F401 - decides which optional packages exist before the stand-ins below

    # transformers first: importing it asks find_spec("torchaudio"), which a stand-in without a spec breaks
    if "transformers" not in sys.modules:
        try:
            import transformers  # noqa: F401
        except ImportError:
            stub = types.ModuleType("transformers")
            stub.PreTrainedModel = stub.PreTrainedTokenizerBase = object
            monkeypatch.setitem(sys.modules, "transformers", stub)
    try:
        import torchaudio  # noqa: F401
        real = True
    except ImportError:
        real = False
        fake = types.ModuleType("torchaudio")
        fake.transforms = types.SimpleNamespace(MelSpectrogram=_Float64MelSpectrogram)
        monkeypatch.setitem(sys.modules, "torchaudio", fake)
    from diffusers.modular_pipelines.echo.encoders import _encode_audio

    seen: list[torch.Tensor] = []
    settings = types.SimpleNamespace(**config)

    class Capture:
        dtype = torch.float32
        config = settings

        def encode(self, mel: torch.Tensor) -> Any:
            seen.append(mel)
            mode = torch.zeros(1, 1, mel.shape[2], 1)
            return types.SimpleNamespace(latent_dist=types.SimpleNamespace(mode=lambda: mode))

    _encode_audio(Capture(), torch.zeros(1), torch.ones(1), wave_, config["sample_rate"], torch.device("cpu"))
    return seen[0], real


def test_ltx2_mel_is_torchaudios_definition() -> None:
    """The log-mel of each channel, (B, C, frames, bins), against a float64 reference of torchaudio's
    MelSpectrogram: 1e-5 (the float32 filterbank's rounding at the triangles' edges is ~2e-6 relative)."""
    from latent_scale.models.mel import ltx2_mel

    wave_ = torch.randn(3, 2, 4000, generator=torch.Generator().manual_seed(1)) * 0.3
    want = np.log(np.maximum(np.swapaxes(_float64_mel(wave_.numpy(), 8000, 1024, 80, 16), -1, -2), 1e-5))
    got = ltx2_mel(wave_, {"sample_rate": 8000, "mel_hop_length": 80, "mel_bins": 16})
    assert got.dtype == torch.float32 and got.shape == want.shape == (3, 2, 51, 16)
    assert np.abs(got.double().numpy() - want).max() <= 1e-5


@pytest.mark.slow  # importing diffusers' modular Echo pipeline takes ~10 s
@pytest.mark.parametrize("channels", [1, 2])
def test_ltx2_mel_is_the_echo_pipelines(monkeypatch: pytest.MonkeyPatch, channels: int) -> None:
    """The tool's LTX-2 mel equals the one diffusers' Echo pipeline computes: bit for bit with torchaudio
    (the same float32 arithmetic); without it, a float64 reference of torchaudio's definition agrees to
    1e-5 (the float32 filterbank's rounding at the triangles' edges is ~2e-6 relative)."""
    from latent_scale.models.mel import ltx2_mel

    config = {"sample_rate": 16000, "mel_hop_length": 160, "mel_bins": 64}
    wave_ = (torch.randn(channels, 16000, generator=torch.Generator().manual_seed(0)) * 0.3).clamp(-1, 1)
    want, real = _echo_mel(monkeypatch, wave_, config)
    got = ltx2_mel(audio.to_channels(wave_, 2)[None], config)
    assert got.shape == want.shape == (1, 2, 101, 64)
    assert (got.double() - want.double()).abs().max().item() <= (1e-6 if real else 1e-5)


# --- end to end: every audio autoencoder class against its own encode() ----------------------------

AUDIO = {case.cls: case for case in AUDIO_CASES}  # tiny configs, and how each pipeline feeds and reads it
OOBLECK = AUDIO["AutoencoderOobleck"].kwargs


@pytest.fixture(scope="session")
def audio_vae(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """`audio_vae(cls)`: the folder of a saved tiny model of that class (AUDIO), built once per session."""
    import functools

    import diffusers

    @functools.cache
    def get(cls: str) -> Path:
        torch.manual_seed(0)
        folder = tmp_path_factory.mktemp(cls)
        getattr(diffusers, cls)(**AUDIO[cls].kwargs).save_pretrained(folder)
        return folder

    return get


def naive_factor(folder: Path, clips: list[torch.Tensor]) -> float:
    """The throw-away script: the stacked clips as the class's pipeline feeds them (its mel, (B, samples),
    one clip per call where it takes one), its own encode(), the posterior mean, float64 std of it all."""
    import json

    import diffusers

    case = AUDIO[json.loads((folder / "config.json").read_text())["_class_name"]]
    vae = getattr(diffusers, case.cls).from_pretrained(folder).eval()
    x = case.feed(torch.stack(clips))
    with torch.no_grad():
        z = torch.cat([case.read(vae, vae.encode(u, **case.encode_kwargs))[0]
                       for u in (x.split(1) if case.one_at_a_time else [x])])
    return 1 / z.double().std().item()


def test_oobleck_on_wav_files_is_the_naive_factor(tmp_path: Path, write_wav: Any, audio_vae: Any,
                                                  measure: Any) -> None:
    """1 s mono WAVs at the model's rate: the factor of `wave` + duplicated mono + encode().mode(),
    float64 std, to 1e-6; a file shorter than one clip is skipped and listed."""
    for k in range(3):
        write_wav(tmp_path / "clips" / f"c{k}.wav", RATE, seconds=1.0, seed=k)
    write_wav(tmp_path / "clips" / "short.wav", RATE, seconds=0.5, seed=9)
    res = measure(audio_vae("AutoencoderOobleck"), tmp_path / "clips", seconds=1.0, posterior="mode")
    want = naive_factor(audio_vae("AutoencoderOobleck"),
                        [torch.from_numpy(read_wav(tmp_path / "clips" / f"c{k}.wav")).repeat(2, 1) for k in range(3)])
    assert res.scale_factor == pytest.approx(want, rel=1e-6)
    assert res.num_images == 3
    assert [s["path"] for s in res.skipped] == ["short.wav#clip0"]
    assert f"fewer than a clip of {RATE} samples" in res.skipped[0]["error"]
    assert res.recipe["resampled"] is False and res.recipe["sampling_rate"] == RATE
    assert res.recipe["channels_from"] == [1] and res.recipe["channels"] == 2  # mono duplicated


def test_a_file_at_another_rate_is_resampled_and_the_result_says_so(tmp_path: Path, write_wav: Any, audio_vae: Any,
                                                                    measure: Any) -> None:
    write_wav(tmp_path / "clips" / "native.wav", RATE, seconds=1.0)
    write_wav(tmp_path / "clips" / "cd.wav", 44100, seconds=1.0, seed=1)
    res = measure(audio_vae("AutoencoderOobleck"), tmp_path / "clips", seconds=1.0, posterior="mode")
    assert res.num_images == 2 and not res.skipped
    assert res.recipe["resampled"] is True and res.recipe["resampled_from"] == [44100]


def test_stereo_is_averaged_for_a_mono_model(tmp_path: Path, write_wav: Any, audio_vae: Any, measure: Any) -> None:
    for k in range(2):
        write_wav(tmp_path / "clips" / f"s{k}.wav", RATE, channels=2, seconds=1.0, seed=k)
    res = measure(audio_vae("AutoencoderKLKVAEAudio"), tmp_path / "clips", seconds=1.0, posterior="mode")
    clips = [torch.from_numpy(read_wav(tmp_path / "clips" / f"s{k}.wav")).mean(0, keepdim=True) for k in range(2)]
    want = naive_factor(audio_vae("AutoencoderKLKVAEAudio"), clips)
    assert res.scale_factor == pytest.approx(want, rel=1e-6)
    assert res.recipe["channels_from"] == [2] and res.recipe["channels"] == 1


def test_three_channels_are_refused_in_one_sentence(tmp_path: Path, write_wav: Any, audio_vae: Any, measure: Any,
                                                     cli: Any) -> None:
    write_wav(tmp_path / "clips" / "stereo.wav", RATE, channels=2, seconds=1.0)
    write_wav(tmp_path / "clips" / "surround.wav", RATE, channels=3, seconds=1.0)
    res = measure(audio_vae("AutoencoderOobleck"), tmp_path / "clips", seconds=1.0, posterior="mode")
    assert res.num_images == 1 and [s["path"] for s in res.skipped] == ["surround.wav#clip0"]
    assert "3 audio channels" in res.skipped[0]["error"]
    cli.fails("estimate", "--model", audio_vae("AutoencoderOobleck"), "--data", tmp_path / "clips", "--seconds", 1,
              "--strict", "--workers", 0, "--no-progress", says=["surround.wav", "3 audio channels"])


def test_clips_per_file_are_evenly_spaced(tmp_path: Path, write_wav: Any, audio_vae: Any, measure: Any) -> None:
    """Three 0.5 s clips of a 2 s file start at 0, 0.75 and 1.5 s (the last ends at the file's end)."""
    write_wav(tmp_path / "long.wav", RATE, seconds=2.0)
    res = measure(audio_vae("AutoencoderKLKVAEAudio"), tmp_path / "long.wav", seconds=0.5, clips_per_file=3,
                  posterior="mode")
    wave_ = torch.from_numpy(read_wav(tmp_path / "long.wav"))
    clips = [wave_[:, s:s + RATE // 2] for s in (0, RATE * 3 // 4, RATE * 3 // 2)]
    assert res.num_images == 3
    want = naive_factor(audio_vae("AutoencoderKLKVAEAudio"), clips)
    assert res.scale_factor == pytest.approx(want, rel=1e-6)


@pytest.mark.parametrize("cls", list(AUDIO))
def test_every_audio_class_matches_its_own_encode(cls: str, tmp_path: Path, write_wav: Any, audio_vae: Any,
                                                  measure: Any) -> None:
    """WAVs already at the model's rate and channels: the tool's factor is the one of the class's own
    encode() as its pipeline feeds it (its mel, one clip per call where it takes one) to 1e-6."""
    case = AUDIO[cls]
    for k in range(3):
        write_wav(tmp_path / "clips" / f"c{k}.wav", case.rate, channels=case.inputs, seconds=0.5, seed=k)
    res = measure(audio_vae(cls), tmp_path / "clips", seconds=0.5, posterior="mode", batch_size=2)
    clips = [torch.from_numpy(read_wav(tmp_path / "clips" / f"c{k}.wav")) for k in range(3)]
    assert res.num_images == 3 and not res.skipped
    assert res.scale_factor == pytest.approx(naive_factor(audio_vae(cls), clips), rel=1e-6)


def _video_with_sound(path: Path, seconds: float) -> None:
    """An MP4 with a video track (black frames) and an AAC tone at RATE, written with PyAV."""
    import av

    t = np.arange(round(seconds * RATE)) / RATE
    tone = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None]
    with av.open(str(path), "w") as container:
        video = container.add_stream("mpeg4", rate=8)
        video.width, video.height, video.pix_fmt = 32, 32, "yuv420p"
        sound = container.add_stream("aac", rate=RATE, layout="mono")
        for _ in range(round(seconds * 8)):
            container.mux(video.encode(av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")))
        for start in range(0, tone.shape[1], 1024):
            frame = av.AudioFrame.from_ndarray(tone[:, start:start + 1024].copy(), format="fltp", layout="mono")
            frame.sample_rate = RATE
            container.mux(sound.encode(frame))
        container.mux(video.encode())
        container.mux(sound.encode())


def test_the_audio_track_of_a_video_file_is_measured(tmp_path: Path, audio_vae: Any, measure: Any) -> None:
    """Given an audio autoencoder, a folder of videos goes to the audio source; the clip is the track's
    first second as FFmpeg decodes it (read here with PyAV's own decode loop)."""
    import av

    (tmp_path / "clips").mkdir()
    _video_with_sound(tmp_path / "clips" / "talk.mp4", 1.5)
    res = measure(audio_vae("AutoencoderKLKVAEAudio"), tmp_path / "clips", seconds=1.0, posterior="mode")
    with av.open(str(tmp_path / "clips" / "talk.mp4")) as container:
        track = np.concatenate([f.to_ndarray() for f in container.decode(audio=0)], axis=1)
    want = naive_factor(audio_vae("AutoencoderKLKVAEAudio"), [torch.from_numpy(track[:, :RATE])])
    assert res.num_images == 1 and res.recipe["source"] == "audio"
    assert res.scale_factor == pytest.approx(want, rel=1e-6)


# --- damaged and hostile audio files: each skipped with one line, the factor that of the good files ----

def _wav_header(channels: int, rate: int, bits: int, data_bytes: int) -> bytes:
    """A 44-byte PCM WAV header that claims whatever it is given (no check of the data behind it)."""
    import struct

    block = channels * bits // 8
    return (b"RIFF" + struct.pack("<I", min(36 + data_bytes, 0xFFFFFFFF)) + b"WAVEfmt "
            + struct.pack("<IHHIIHH", 16, 1, channels, rate, rate * block, block, bits)
            + b"data" + struct.pack("<I", data_bytes))


def _hostile_files(folder: Path, pcm: bytes) -> dict[str, str]:
    """Damaged files beside the good ones: {file: what its skip reason says}."""
    files = {"truncated.wav": (_wav_header(1, RATE, 16, 4 * len(pcm)) + pcm[:len(pcm) // 4], "fewer than a clip"),
             "claims-2^31-frames.wav": (_wav_header(1, RATE, 16, 2**32 - 2) + pcm[:len(pcm) // 4], "fewer than a clip"),
             "header-only.wav": (_wav_header(1, RATE, 16, len(pcm)), "holds 0 samples"),
             "zero-channels.wav": (_wav_header(0, RATE, 16, len(pcm)) + pcm, "no sampling rate or channels"),
             "32-channels.wav": (_wav_header(32, RATE, 16, len(pcm)) + pcm, "32 audio channels"),
             "zero-bit-samples.wav": (_wav_header(1, RATE, 0, len(pcm)) + pcm, "no decoder"),
             "text.mp3": (b"this is not an mp3, just text\n" * 10, "Invalid data"),
             "empty.wav": (b"", "Invalid data")}
    for name, (content, _) in files.items():
        (folder / name).write_bytes(content)
    (folder / "loop").symlink_to(".")  # a link to its own folder, and a link to itself: never followed forever
    (folder / "self.wav").symlink_to("self.wav")
    return {name: says for name, (_, says) in files.items()}


def test_damaged_and_hostile_audio_files_are_skipped_with_one_line_each(tmp_path: Path, write_wav: Any,
                                                                        audio_vae: Any, measure: Any) -> None:
    """Truncated, lying or empty headers, 0 or 32 channels, samples FFmpeg cannot decode, text named .mp3,
    links in loops: each is skipped with a one-line reason and the factor is the good files' own."""
    folder = tmp_path / "clips"
    good = [write_wav(folder / f"g{k}.wav", RATE, seconds=1.0, seed=k) for k in range(2)]
    says = _hostile_files(folder, good[0].tobytes())
    res = measure(audio_vae("AutoencoderOobleck"), folder, seconds=1.0, posterior="mode")
    want = naive_factor(audio_vae("AutoencoderOobleck"),
                        [torch.from_numpy(read_wav(folder / f"g{k}.wav")).repeat(2, 1) for k in range(2)])
    assert res.num_images == 2 and res.scale_factor == pytest.approx(want, rel=1e-6)
    reasons = {s["path"].removesuffix("#clip0"): s["error"] for s in res.skipped}
    assert sorted(reasons) == sorted(says)
    for name, needle in says.items():
        assert needle in reasons[name] and "\n" not in reasons[name], (name, reasons[name])


def test_saved_audio_latents_measure_the_runs_own_factor(tmp_path: Path, write_wav: Any, audio_vae: Any,
                                                         measure: Any) -> None:
    """--save-latents keeps each audio clip's (C, L) latent; --latents on the folder read none of them
    ("a latent is (C, H, W)") and now gives the audio run's own factors, its posterior and seed."""
    for k in range(2):
        write_wav(tmp_path / "clips" / f"c{k}.wav", RATE, seconds=0.25, seed=k)
    run = measure(audio_vae("AutoencoderOobleck"), tmp_path / "clips", seconds=0.25, seed=3,
                  save_latents=str(tmp_path / "saved"))
    again = measure(latents=str(tmp_path / "saved"))
    assert again.num_units == 2 and not again.skipped and again.recipe["posterior"] == "sample"
    for posterior in ("mode", "sample", "expected_sample"):
        assert again.estimates[posterior]["scale_factor"] == pytest.approx(
            run.estimates[posterior]["scale_factor"], rel=1e-12)


@pytest.mark.parametrize("args, says", [
    (["--seconds", "0.0001"], "cannot encode units of shape (2, 2)"),  # was torch's traceback from a convolution
    (["--seconds", "inf"], "--seconds must be a finite number"),  # every clip was skipped with an OverflowError
    (["--clips-per-file", "1000000000"], "--clips-per-file 1,000,000,000 is more than"),  # listed for minutes
])
def test_clip_lengths_and_counts_no_model_can_take_are_one_sentence(tmp_path: Path, write_wav: Any,
                                                                   audio_vae: Any, cli: Any, args: list[str],
                                                                   says: str) -> None:
    write_wav(tmp_path / "clips" / "a.wav", RATE, seconds=0.5)
    cli.fails("estimate", "--model", audio_vae("AutoencoderOobleck"), "--data", tmp_path / "clips", *args,
              "--workers", 0, "--no-progress", "--dtype", "float32", says=[says])


def test_clips_that_would_repeat_a_start_are_skipped(tmp_path: Path, write_wav: Any, audio_vae: Any,
                                                     measure: Any) -> None:
    """Five clips of 1000 samples over a file of 1002: starts 0, 0.5, 1, 1.5, 2 round to 0, 1, 1, 2, 2, so
    clips 2 and 4 would count samples twice; they are skipped and named, the others measured."""
    wave_ = write_wav(tmp_path / "a.wav", RATE, seconds=1002 / RATE)
    res = measure(audio_vae("AutoencoderOobleck"), tmp_path / "a.wav", seconds=1000 / RATE, clips_per_file=5,
                  posterior="mode")
    skipped = sorted(res.skipped, key=lambda s: s["path"])
    assert [s["path"] for s in skipped] == ["a.wav#clip2", "a.wav#clip4"]
    assert "same sample as clip 1" in skipped[0]["error"] and "same sample as clip 3" in skipped[1]["error"]
    clips = [torch.from_numpy(wave_[s:s + 1000].T / 32768.0).float().repeat(2, 1) for s in (0, 1, 2)]
    assert res.num_images == 3 and res.scale_factor == pytest.approx(naive_factor(
        audio_vae("AutoencoderOobleck"), clips), rel=1e-6)


def test_an_image_autoencoder_given_audio_files_is_told_what_they_are(tmp_path: Path, write_wav: Any,
                                                                       vae_dir: Path, cli: Any) -> None:
    """It said "holds no images (looked for .bmp, ...)", as if the folder were empty."""
    write_wav(tmp_path / "music" / "a.wav", RATE, seconds=0.1)
    cli.fails("estimate", "--model", vae_dir, "--data", tmp_path / "music", "--no-progress",
              says=["holds audio clips", "an autoencoder of audio clips with --model"])
