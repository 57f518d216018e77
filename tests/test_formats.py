"""Tensor files: each format reads exactly what its own library reads (numpy, safetensors, torch.load with
weights_only=True), or refuses; offsets, lengths and storage bounds the library refuses are refused; a file
rewritten after listing is never read with its old header; compressed .npz batches decompress once.

The fuzz tests build files the libraries wrote, change one header field or offset to an arbitrary value,
and compare with the library's answer on the same bytes: the same tensor, or a refusal, never a crash
or another number."""

from __future__ import annotations

import collections
import io
import json
import math
import os
import pickle
import struct
import tarfile
import time
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.numpy import save_file

import latent_scale.formats.numpy_files as numpy_files
import latent_scale.formats.torch_files as torch_files
from latent_scale.formats import formats
from latent_scale.formats.window import Span, stamp_of
from latent_scale.sources.tar import SPARSE, index_tar

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def span_of(path: Path) -> Span:
    st_ = os.stat(path)
    return Span(str(path), 0, st_.st_size, stamp_of(st_))


def ours(path: Path, span: Span | None = None) -> dict[str, np.ndarray]:
    """Every tensor of the file as latent-scale lists and reads it (whole, then row by row for batches)."""
    fmt, span = formats()[path.suffix], span or span_of(path)
    out = {}
    for key, h in fmt.headers(span).items():
        whole = fmt.read(span, h, None)
        if whole.numel() > 0:  # row by row too (an empty batch of 2**31 rows has nothing to compare)
            assert torch.equal(torch.stack([fmt.read(span, h, r) for r in range(whole.shape[0])]), whole)
        out[key] = whole.float().numpy() if whole.dtype == torch.bfloat16 else whole.numpy()
    return out


def outcome(read: Any, ours: bool = False) -> tuple[str, Any]:
    """("ok", value) or ("refused", the exception); anything but an Exception (a crash) propagates, and
    our readers never run out of memory or recursion on a header."""
    try:
        return "ok", read()
    except Exception as e:  # noqa: BLE001 - every refusal is a valid answer here
        assert not (ours and isinstance(e, (MemoryError, RecursionError))), e
        return "refused", e


def agrees(mine: tuple[str, Any], reference: tuple[str, Any]) -> None:
    """Ours is the reference's tensors or a refusal; never a number the library would not give."""
    event(f"ours {mine[0]}, library {reference[0]}")
    if mine[0] == "ok":
        assert reference[0] == "ok", f"read what the library refuses: {reference[1]!r}"
        assert mine[1].keys() == reference[1].keys()
        for k, v in mine[1].items():
            np.testing.assert_array_equal(v, reference[1][k])


def sample(shape: tuple[int, ...] = (3, 4, 5, 6), dtype: str = "float32", seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(shape) * 3 + 7).astype(dtype)


# --- safetensors -----------------------------------------------------------------------------------------

def safetensors_file(path: Path, header: dict[str, Any] | bytes, data: bytes) -> Path:
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(len(text).to_bytes(8, "little") + text + data)
    return path


def with_safe_open(path: Path) -> dict[str, np.ndarray]:
    with safe_open(str(path), "pt") as f:
        return {k: (t.float() if t.dtype == torch.bfloat16 else t).numpy() for k in f.keys() for t in [f.get_tensor(k)]}


BAD_OFFSETS = {"before the data (into the header)": [-64, 0], "past 64 bits": [0, 2**64], "a gap": [8, 72],
               "one byte short": [0, 63], "reversed": [64, 0], "three numbers": [0, 32, 64], "floats": [0.0, 64.0]}


@pytest.mark.parametrize("case", BAD_OFFSETS)
def test_safetensors_offsets_the_library_refuses_are_refused(tmp_path: Path, case: str) -> None:
    path = safetensors_file(tmp_path / "x.safetensors",
                            {"x": {"dtype": "F32", "shape": [4, 4], "data_offsets": BAD_OFFSETS[case]}}, bytes(64))
    assert outcome(lambda: with_safe_open(path))[0] == "refused"
    with pytest.raises(ValueError, match="is not a valid safetensors file"):
        formats()[".safetensors"].headers(span_of(path))


def test_safetensors_bytes_beyond_or_short_of_the_tensors_are_refused(tmp_path: Path) -> None:
    header = {"x": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}
    for data in (bytes(12), bytes(20)):
        path = safetensors_file(tmp_path / f"{len(data)}.safetensors", header, data)
        assert outcome(lambda p=path: with_safe_open(p))[0] == "refused"
        with pytest.raises(ValueError, match="the file has"):
            formats()[".safetensors"].headers(span_of(path))


SAFETENSORS_DTYPES = ["F16", "BF16", "F32", "F64", "I32", "U8", "BOOL", "F8_E4M3", "X9", 7]


@st.composite
def safetensors_headers(draw: st.DrawFn) -> tuple[dict[str, Any], int]:
    """Headers near valid ones: each tensor's dtype, shape and offsets either right or arbitrary."""
    header, offset = {}, 0
    for k in range(draw(st.integers(1, 3))):
        dtype = draw(st.sampled_from(SAFETENSORS_DTYPES[:4]) | st.sampled_from(SAFETENSORS_DTYPES))
        shape = draw(st.lists(st.integers(0, 5), max_size=3) | st.lists(st.integers(-3, 2**65), max_size=3))
        size = int(np.prod(shape)) * {"F16": 2, "BF16": 2, "F32": 4, "F64": 8}.get(dtype, 1)
        right = [offset, offset + max(size, 0)]
        offsets = draw(st.just(right) | st.lists(st.integers(-100, 400), min_size=0, max_size=3))
        header[f"t{k}"] = {"dtype": dtype, "shape": shape, "data_offsets": offsets}
        offset = right[1]
    return header, draw(st.integers(0, 400) | (st.just(offset) if offset < 4096 else st.nothing()))


@FUZZ
@given(case=safetensors_headers())
def test_fuzz_safetensors_headers_agree_with_safe_open(tmp_path: Path, case: tuple[dict[str, Any], int]) -> None:
    header, length = case
    path = safetensors_file(tmp_path / "f.safetensors", header, np.arange(length, dtype=np.uint8).tobytes())
    agrees(outcome(lambda: ours(path), ours=True), outcome(lambda: with_safe_open(path)))


@FUZZ
@given(edits=st.lists(st.tuples(st.integers(0, 200), st.binary(max_size=3), st.integers(0, 3)), max_size=4),
       declared=st.none() | st.integers(0, 300))
def test_fuzz_safetensors_header_bytes_edited(tmp_path: Path, edits: list[tuple[int, bytes, int]],
                                              declared: int | None) -> None:
    """A valid file's header with a few bytes replaced, inserted or dropped, and any declared length."""
    save_file({"a": sample((2, 3), seed=1), "b": sample((4,), "float16")}, str(tmp_path / "f.safetensors"))
    raw = (tmp_path / "f.safetensors").read_bytes()
    n = int.from_bytes(raw[:8], "little")
    text = bytearray(raw[8:8 + n])
    for at, new, drop in edits:
        text[at % len(text):at % len(text) + drop] = new
    head = (len(text) if declared is None else declared).to_bytes(8, "little")
    (tmp_path / "f.safetensors").write_bytes(head + bytes(text) + raw[8 + n:])
    agrees(outcome(lambda: ours(tmp_path / "f.safetensors"), ours=True),
           outcome(lambda: with_safe_open(tmp_path / "f.safetensors")))


@FUZZ
@given(shapes=st.lists(st.lists(st.integers(0, 4), min_size=1, max_size=4), min_size=1, max_size=3),
       dtype=st.sampled_from(["float16", "float32", "float64"]))
def test_fuzz_files_the_library_writes_are_read_exactly(tmp_path: Path, shapes: list[list[int]], dtype: str) -> None:
    tensors = {f"t{k}": sample(tuple(s), dtype, seed=k) for k, s in enumerate(shapes)}
    save_file(tensors, str(tmp_path / "f.safetensors"))
    mine = ours(tmp_path / "f.safetensors")
    assert mine.keys() == tensors.keys() and all(np.array_equal(mine[k], v) for k, v in tensors.items())


# --- .npy and .npz ---------------------------------------------------------------------------------------

def npy_bytes(array: np.ndarray, header: str | None = None) -> bytes:
    """A .npy of `array`, its header text replaced by `header` when given (padded as numpy pads it)."""
    f = io.BytesIO()
    np.save(f, array)
    if header is None:
        return f.getvalue()
    npy = f.getvalue()
    data = npy[10 + struct.unpack("<H", npy[8:10])[0]:]
    text = header.encode("utf-8")
    text += b" " * (-(10 + len(text) + 1) % 64) + b"\n"
    return np.lib.format.MAGIC_PREFIX + b"\x01\x00" + struct.pack("<H", len(text)) + text + data


def with_np_load(path: Path) -> dict[str, np.ndarray]:
    """np.load's answer; a .npy header claiming more bytes than the file holds is refused without running it
    (numpy would allocate what the header claims before finding the bytes missing)."""
    if path.suffix == ".npy":
        with open(path, "rb") as f:
            read = {(1, 0): np.lib.format.read_array_header_1_0}[np.lib.format.read_magic(f)]  # as npy_bytes writes
            shape, _, dtype = read(f)
            if np.prod(shape, dtype=object) * dtype.itemsize > path.stat().st_size:
                raise ValueError("the header claims more bytes than the file holds")
    loaded = np.load(path, allow_pickle=False)
    if isinstance(loaded, np.ndarray):
        return {"": loaded}
    with loaded:
        return {k: loaded[k] for k in loaded.files}


NPY_HEADERS = st.builds(
    lambda descr, fortran, shape: f"{{'descr': {descr!r}, 'fortran_order': {fortran}, 'shape': {tuple(shape)!r}, }}",
    st.sampled_from(["<f4", "<f8", "<f2", ">f4", "<i4", "|O", "|V8", "<c8", "f4", "garbage"]),
    st.sampled_from([True, False, 1, "no"]),
    st.lists(st.integers(-2, 7) | st.integers(2**31, 2**70), max_size=4))


@FUZZ
@given(header=NPY_HEADERS | st.text(max_size=80), cut=st.integers(-40, 40))
def test_fuzz_npy_headers_agree_with_np_load(tmp_path: Path, header: str, cut: int) -> None:
    data = npy_bytes(sample((2, 3, 4, 5)), header)
    path = tmp_path / "f.npy"
    path.write_bytes(data[:len(data) + cut] if cut < 0 else data + bytes(cut))
    agrees(outcome(lambda: ours(path), ours=True), outcome(lambda: with_np_load(path)))


def npz_file(path: Path, arrays: dict[str, np.ndarray], compressed: bool) -> Path:
    (np.savez_compressed if compressed else np.savez)(path, **arrays)
    return path


def central_directory(raw: bytearray, name: str) -> int:
    """Where `name`'s central-directory entry starts (the directory follows the members, so its copy of
    the name is the last one)."""
    return raw.rindex(b"PK\x01\x02", 0, raw.rindex(name.encode()))


ZIP_FIELDS = {"file size": (24, "<I"), "compressed size": (20, "<I"), "local header offset": (42, "<I"),
              "name length": (28, "<H")}


@FUZZ
@given(compressed=st.booleans(), field=st.sampled_from(list(ZIP_FIELDS) + ["none"]), value=st.integers(0, 2**16 - 1),
       fortran=st.booleans())
def test_fuzz_npz_directory_fields_agree_with_np_load(tmp_path: Path, compressed: bool, field: str, value: int,
                                                      fortran: bool) -> None:
    array = sample((3, 4, 5, 6))
    path = npz_file(tmp_path / "f.npz", {"x": np.asfortranarray(array) if fortran else array}, compressed)
    if field != "none":
        raw = bytearray(path.read_bytes())
        at, fmt = ZIP_FIELDS[field]
        struct.pack_into(fmt, raw, central_directory(raw, "x.npy") + at, value)
        path.write_bytes(bytes(raw))
    agrees(outcome(lambda: ours(path), ours=True), outcome(lambda: with_np_load(path)))


def test_npz_is_decompressed_once_per_member(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """3000 latents of 4x16x16 in a compressed .npz, read row by row in a shuffled order: one decompression
    (it used to restart the member for every row: quadratic, about two minutes)."""
    array = sample((3000, 4, 16, 16))
    path = npz_file(tmp_path / "big.npz", {"x": array}, compressed=True)
    calls, decompress = [], numpy_files._decompress
    monkeypatch.setattr(numpy_files, "_decompress", lambda *a: calls.append(1) or decompress(*a))
    monkeypatch.setattr(numpy_files, "KEPT", numpy_files.Kept(numpy_files.KEPT_BYTES))
    span, fmt = span_of(path), formats()[".npz"]
    h = fmt.headers(span)["x"]
    start = time.perf_counter()
    for r in np.random.default_rng(0).permutation(3000):
        np.testing.assert_array_equal(fmt.read(span, h, int(r)).numpy(), array[r])
    assert len(calls) == 1 and time.perf_counter() - start < 20


def deflated_npz(path: Path, header_shape: tuple[int, ...], zeros: int, declared: int | None = None) -> Path:
    """A .npz whose member is an npy header for `header_shape` float32 then `zeros` zero bytes (in MiB),
    deflated: zeros compress about a thousandfold (a zip bomb). `declared`: the size its directory claims."""
    header = npy_bytes(np.zeros((1,), np.float32), f"{{'descr': '<f4', 'fortran_order': False, "
                                                    f"'shape': {header_shape}, }}")[:-4]
    deflate, crc = zlib.compressobj(9, zlib.DEFLATED, -15), zlib.crc32(header)
    chunks = [deflate.compress(header)]
    for _ in range(zeros >> 20):
        chunks.append(deflate.compress(bytes(1 << 20)))
        crc = zlib.crc32(bytes(1 << 20), crc)
    body, name = b"".join(chunks) + deflate.flush(), b"x.npy"
    size = declared or len(header) + (zeros >> 20 << 20)
    local = struct.pack("<4s5H3I2H", b"PK\x03\x04", 20, 0, 8, 0, 0, crc, len(body), size, len(name), 0) + name
    central = struct.pack("<4s6H3I5H2I", b"PK\x01\x02", 20, 20, 0, 8, 0, 0, crc, len(body), size, len(name),
                          0, 0, 0, 0, 0, 0) + name
    end = struct.pack("<4s4H2IH", b"PK\x05\x06", 0, 0, 1, 1, len(central), len(local) + len(body), 0)
    path.write_bytes(local + body + central + end)
    return path


def test_npz_bombs_decompress_no_more_than_their_header_says(tmp_path: Path) -> None:
    """A member claiming more than is read into memory is refused at listing; one whose stream holds far more
    than its header describes is read only as far as the header goes; one that is what it says (zeros) is
    read whole, once."""
    huge = deflated_npz(tmp_path / "huge.npz", (1 << 27, 4, 1, 1), 1 << 20, declared=(1 << 31) + 128)
    with pytest.raises(ValueError, match="more than the 1,073,741,824 read into memory"):
        formats()[".npz"].headers(span_of(huge))
    for name, shape in (("small-header.npz", (2, 4, 8, 8)), ("zeros.npz", (1 << 14, 4, 16, 16))):
        path = deflated_npz(tmp_path / name, shape, 64 << 20)
        assert path.stat().st_size < 100_000
        start = time.perf_counter()
        got = ours(path)["x"]
        assert got.shape == shape and not got.any() and time.perf_counter() - start < 10


# --- .pt ----------------------------------------------------------------------------------------------------

class _Storage:
    """Stands for the storage in the hand-written pickle: its persistent id says dtype, record and size."""

    def __init__(self, numel: int) -> None:
        self.numel = numel


class _Tensor:
    def __init__(self, storage: _Storage, offset: Any, shape: Any, stride: Any) -> None:
        self.args = (storage, offset, shape, stride, False, collections.OrderedDict())

    def __reduce__(self) -> tuple[Any, ...]:
        return torch._utils._rebuild_tensor_v2, self.args


class _Pickler(pickle.Pickler):
    def persistent_id(self, obj: Any) -> Any:
        return ("storage", torch.FloatStorage, "0", "cpu", obj.numel) if isinstance(obj, _Storage) else None


def pt_with_layout(path: Path, values: int, numel: int, offset: Any, shape: Any, stride: Any) -> Path:
    """A torch.save zip of a float32 storage holding `values` floats whose pickle says what it is told
    (an offset, size or stride torch.save would never write), as a zip with every record stored."""
    torch.save(torch.arange(values, dtype=torch.float32), path)
    pkl = io.BytesIO()
    _Pickler(pkl, protocol=2).dump(_Tensor(_Storage(numel), offset, shape, stride))
    with zipfile.ZipFile(path) as z:
        records = [(i.filename, pkl.getvalue() if i.filename.endswith("/data.pkl") else z.read(i))
                   for i in z.infolist()]
    with zipfile.ZipFile(path, "w") as z:
        for name, data in records:
            z.writestr(name, data)
    return path


def with_torch_load(path: Path) -> dict[str, np.ndarray]:
    return {"": torch.load(path, weights_only=True).contiguous().numpy()}


@pytest.mark.parametrize("layout", [dict(offset=-8, shape=(4, 2, 2), stride=(4, 2, 1)),
                                    dict(offset=8, shape=(4, 2, 2), stride=(4, 2, 1)),
                                    dict(offset=0, shape=(4, 2, 2), stride=(4, 2, 1), numel=64)],
                         ids=["negative storage offset", "beyond its storage", "storage larger than its record"])
def test_pt_layouts_torch_load_refuses_are_refused(tmp_path: Path, layout: dict[str, Any]) -> None:
    path = pt_with_layout(tmp_path / "x.pt", 16, layout.pop("numel", 16), **layout)
    assert outcome(lambda: with_torch_load(path))[0] == "refused"
    assert outcome(lambda: ours(path))[0] == "refused"


@st.composite
def pt_layouts(draw: st.DrawFn) -> tuple[int, int, Any, tuple[int, ...], tuple[int, ...]]:
    """(floats stored, the storage size the pickle claims, offset, shape, stride): torch.save's own layouts
    (contiguous views at an offset) or any numbers at all."""
    values = draw(st.integers(1, 40))
    shape = draw(st.lists(st.integers(1, 4), max_size=3) | st.lists(st.integers(-1, 5), max_size=4))
    contiguous = [math.prod(shape[d + 1:]) for d in range(len(shape))]
    stride = draw(st.just(contiguous) | st.lists(st.integers(-2, 24), max_size=4))
    offset = draw(st.integers(0, 8) | st.integers(-20, 40) | st.just(2**70))
    return values, draw(st.just(values) | st.integers(0, 48)), offset, tuple(shape), tuple(stride)


@FUZZ
@given(layout=pt_layouts())
def test_fuzz_pt_layouts_agree_with_torch_load(tmp_path: Path, layout: tuple[Any, ...]) -> None:
    path = pt_with_layout(tmp_path / "x.pt", *layout)
    agrees(outcome(lambda: ours(path), ours=True), outcome(lambda: with_torch_load(path)))


def test_pt_without_torchs_private_zip_reader_reads_the_same(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """torch._C.PyTorchFileReader (private) only speeds listing up: without it every file goes through torch.load."""
    torch.save({"latent": torch.from_numpy(sample())}, tmp_path / "x.pt")
    fast = ours(tmp_path / "x.pt")
    assert formats()[".pt"].headers(span_of(tmp_path / "x.pt"))["latent"].in_place
    monkeypatch.setattr(torch_files, "READER", None)
    assert not formats()[".pt"].headers(span_of(tmp_path / "x.pt"))["latent"].in_place
    np.testing.assert_array_equal(ours(tmp_path / "x.pt")["latent"], fast["latent"])
    np.testing.assert_array_equal(fast["latent"], sample())


# --- every format: rewritten after listing, tar members, sparse members ----------------------------------

WRITERS = {".npy": lambda p, a: np.save(p, a), ".npz": lambda p, a: np.savez_compressed(p, x=a),
           ".safetensors": lambda p, a: save_file({"x": a}, str(p)),
           ".pt": lambda p, a: torch.save(torch.from_numpy(a), p)}


@pytest.mark.parametrize("suffix", WRITERS)
def test_a_file_rewritten_after_listing_is_refused_not_read_with_its_old_header(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"x{suffix}"
    WRITERS[suffix](path, sample((4, 4, 8, 8)))
    fmt, span = formats()[suffix], span_of(path)
    h = next(iter(fmt.headers(span).values()))
    WRITERS[suffix](path, sample((2, 4, 8, 8), "float64", seed=1))
    with pytest.raises(OSError, match="changed after it was listed"):
        fmt.read(span, h, 1)


def test_tar_members_are_read_in_place_and_sparse_ones_refused(tmp_path: Path) -> None:
    array = sample()
    for suffix, write in WRITERS.items():
        write(tmp_path / f"m{suffix}", array)
    with tarfile.open(tmp_path / "s.tar", "w") as tf:
        for suffix in WRITERS:
            tf.add(tmp_path / f"m{suffix}", arcname=f"m{suffix}")
        sparse_member(tf, "holes.npy", (tmp_path / "m.npy").read_bytes())
    members = index_tar(str(tmp_path / "s.tar"), set(WRITERS))
    for uid, span in members.items():
        name = uid.split("::")[1]
        if name == "holes.npy":
            assert span.error == SPARSE
            continue
        assert np.array_equal(next(iter(ours(Path(name), span).values())), array), name


def sparse_member(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    """A GNU sparse member (what `tar --sparse` writes for a file with holes): its first half stored, the
    rest a hole. tarfile reads such members; their bytes in the shard are not the file's."""
    stored = data[:len(data) // 2]
    info = tarfile.TarInfo(name)
    info.type, info.size = tarfile.GNUTYPE_SPARSE, len(stored)
    header = bytearray(info.tobuf(format=tarfile.GNU_FORMAT))
    header[386:410] = tarfile.itn(0, 12, tarfile.GNU_FORMAT) + tarfile.itn(len(stored), 12, tarfile.GNU_FORMAT)
    header[483:495] = tarfile.itn(len(data), 12, tarfile.GNU_FORMAT)
    header[148:156] = b"%06o\0 " % tarfile.calc_chksums(bytes(header[:148]) + b" " * 8 + bytes(header[156:]))[0]
    tf.fileobj.write(bytes(header) + stored + bytes(-len(stored) % 512))
    tf.offset += 512 + len(stored) + (-len(stored) % 512)
