"""The image family on real Pillow images: info, resize, thumbnail, convert, crop and limits."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

import llmos.syscalls.image as image_mod
from llmos.errors import ErrorCode
from llmos.kernel.loop import compact_result
from llmos.limits import MAX_RESULT_CHARS
from llmos.syscalls.base import SyscallResult
from llmos.syscalls.context import Process
from llmos.system import System


def _call(system: System, proc: Process, call: str, **args: Any) -> SyscallResult:
    return system.dispatch(proc, {"call": call, **args})


def _png(path: Path, size: tuple[int, int] = (40, 20), mode: str = "RGB") -> Path:
    color: Any = (200, 30, 30, 120) if mode == "RGBA" else (200, 30, 30)
    Image.new(mode, size, color).save(path, format="PNG")
    return path


def _jpeg_with_exif(path: Path) -> Path:
    exif = Image.Exif()
    exif[0x010F] = "Acme Optics"  # Make
    exif[0x0110] = "Pinhole 3000"  # Model
    Image.new("RGB", (64, 48), (10, 120, 200)).save(path, format="JPEG", exif=exif)
    return path


def _gif(path: Path, frames: int = 3) -> Path:
    colors = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]
    images = [Image.new("RGB", (30, 20), colors[i % len(colors)]) for i in range(frames)]
    images[0].save(path, format="GIF", save_all=True, append_images=images[1:], duration=50)
    return path


def _size_of(path: Path) -> tuple[int, int]:
    with Image.open(path) as img:
        return img.size


def _format_of(path: Path) -> str | None:
    with Image.open(path) as img:
        return img.format


def _png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height, with a token IDAT: a decompression bomb."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 16)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _tiff_damaged_after_first_frame() -> bytes:
    """A valid 4x4 TIFF whose next-IFD pointer leads to a frame with no width tag."""
    buf = io.BytesIO()
    Image.new("RGB", (4, 4), (10, 20, 30)).save(buf, format="TIFF")
    data = bytearray(buf.getvalue())
    assert data[:2] == b"II"
    ifd = struct.unpack_from("<I", data, 4)[0]
    entries = struct.unpack_from("<H", data, ifd)[0]
    next_ptr = ifd + 2 + 12 * entries
    if len(data) % 2:
        data += b"\0"
    second = len(data)
    data += struct.pack("<H", 1) + struct.pack("<HHII", 257, 3, 1, 4) + struct.pack("<I", 0)
    struct.pack_into("<I", data, next_ptr, second)
    return bytes(data)


@pytest.fixture
def restore_pillow_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """image.py writes Pillow's global MAX_IMAGE_PIXELS; put it back after a test lowers it."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)


# image.info


def test_info_png(system: System, proc: Process, workspace: Path) -> None:
    _png(workspace / "a.png", (40, 20), "RGBA")
    res = _call(system, proc, "image.info", path="a.png")
    assert res.ok, res.message
    assert res.value == {
        "path": "a.png",
        "format": "PNG",
        "width": 40,
        "height": 20,
        "mode": "RGBA",
        "frames": 1,
        "exif": {},
        "note": "the words the image shows are not here: image.text reads them",
    }


def test_info_jpeg_exif_summary(system: System, proc: Process, workspace: Path) -> None:
    _jpeg_with_exif(workspace / "photo.jpg")
    res = _call(system, proc, "image.info", path="photo.jpg")
    assert res.ok, res.message
    assert res.value["format"] == "JPEG"
    assert (res.value["width"], res.value["height"]) == (64, 48)
    assert res.value["mode"] == "RGB"
    assert res.value["exif"]["Make"] == "Acme Optics"
    assert res.value["exif"]["Model"] == "Pinhole 3000"


def test_info_gif_counts_frames(system: System, proc: Process, workspace: Path) -> None:
    _gif(workspace / "anim.gif", frames=3)
    res = _call(system, proc, "image.info", path="anim.gif")
    assert res.ok, res.message
    assert res.value["format"] == "GIF"
    assert res.value["frames"] == 3
    assert (res.value["width"], res.value["height"]) == (30, 20)


def test_info_in_subfolder_reports_workspace_path(
    system: System, proc: Process, workspace: Path
) -> None:
    (workspace / "pics").mkdir()
    _png(workspace / "pics" / "b.png")
    res = _call(system, proc, "image.info", path="./pics/b.png")
    assert res.ok, res.message
    assert res.value["path"] == "pics/b.png"


# image.resize


def test_resize_width_only_keeps_aspect(system: System, proc: Process, workspace: Path) -> None:
    _png(workspace / "a.png", (40, 20))
    res = _call(system, proc, "image.resize", path="a.png", width=20)
    assert res.ok, res.message
    assert res.value["output"] == "a_20x10.png"
    assert (res.value["width"], res.value["height"]) == (20, 10)
    assert _size_of(workspace / "a_20x10.png") == (20, 10)
    assert _format_of(workspace / "a_20x10.png") == "PNG"
    assert _size_of(workspace / "a.png") == (40, 20)


def test_resize_height_only_keeps_aspect(system: System, proc: Process, workspace: Path) -> None:
    _png(workspace / "a.png", (40, 20))
    res = _call(system, proc, "image.resize", path="a.png", height=5)
    assert res.ok, res.message
    assert _size_of(workspace / res.value["output"]) == (10, 5)


def test_resize_both_sides_exact(system: System, proc: Process, workspace: Path) -> None:
    _png(workspace / "a.png", (40, 20))
    res = _call(system, proc, "image.resize", path="a.png", width=7, height=33, output="out.png")
    assert res.ok, res.message
    assert res.value["output"] == "out.png"
    assert _size_of(workspace / "out.png") == (7, 33)


def test_resize_explicit_output_extension_picks_format(
    system: System, proc: Process, workspace: Path
) -> None:
    _png(workspace / "a.png", (40, 20))
    res = _call(system, proc, "image.resize", path="a.png", width=10, output="small.jpg")
    assert res.ok, res.message
    assert res.value["format"] == "JPEG"
    assert _format_of(workspace / "small.jpg") == "JPEG"


def test_resize_needs_a_side(system: System, proc: Process, workspace: Path) -> None:
    _png(workspace / "a.png")
    res = _call(system, proc, "image.resize", path="a.png")
    assert res.code == ErrorCode.E_INVAL
    assert sorted(p.name for p in workspace.iterdir()) == ["a.png"]


def test_resize_output_over_pixel_limit_is_toobig(
    system: System,
    proc: Process,
    workspace: Path,
    monkeypatch: pytest.MonkeyPatch,
    restore_pillow_limit: None,
) -> None:
    _png(workspace / "a.png", (10, 10))
    monkeypatch.setattr(image_mod, "MAX_IMAGE_PIXELS", 1000)
    res = _call(system, proc, "image.resize", path="a.png", width=100, height=100)
    assert res.code == ErrorCode.E_TOOBIG, res
    assert sorted(p.name for p in workspace.iterdir()) == ["a.png"]


def test_resize_one_side_that_makes_other_too_long(
    system: System, proc: Process, workspace: Path
) -> None:
    _png(workspace / "tall.png", (1, 100))
    res = _call(system, proc, "image.resize", path="tall.png", width=1000)
    assert res.code == ErrorCode.E_TOOBIG


@pytest.mark.parametrize("width", [0, -5, image_mod.MAX_IMAGE_SIDE + 1])
def test_resize_rejects_bad_width(
    system: System, proc: Process, workspace: Path, width: int
) -> None:
    _png(workspace / "a.png")
    res = _call(system, proc, "image.resize", path="a.png", width=width)
    assert res.code == ErrorCode.E_INVAL
    assert "width" in (res.message or "")


# image.thumbnail


def test_thumbnail_fits_in_box(system: System, proc: Process, workspace: Path) -> None:
    _png(workspace / "wide.png", (400, 100))
    res = _call(system, proc, "image.thumbnail", path="wide.png", size=50)
    assert res.ok, res.message
    assert res.value["output"] == "wide_thumb.png"
    w, h = _size_of(workspace / "wide_thumb.png")
    assert w == 50
    assert h in (12, 13)


def test_thumbnail_never_enlarges(system: System, proc: Process, workspace: Path) -> None:
    _png(workspace / "small.png", (40, 20))
    res = _call(system, proc, "image.thumbnail", path="small.png", size=256)
    assert res.ok, res.message
    assert _size_of(workspace / res.value["output"]) == (40, 20)


def test_thumbnail_of_gif_stays_gif(system: System, proc: Process, workspace: Path) -> None:
    _gif(workspace / "anim.gif")
    res = _call(system, proc, "image.thumbnail", path="anim.gif", size=15)
    assert res.ok, res.message
    assert res.value["output"] == "anim_thumb.gif"
    assert _format_of(workspace / "anim_thumb.gif") == "GIF"
    assert max(_size_of(workspace / "anim_thumb.gif")) == 15


# image.convert


def test_convert_png_to_jpeg_swaps_extension(
    system: System, proc: Process, workspace: Path
) -> None:
    _png(workspace / "a.png")
    res = _call(system, proc, "image.convert", path="a.png", format="jpeg")
    assert res.ok, res.message
    assert res.value["output"] == "a.jpg"
    assert res.value["format"] == "JPEG"
    assert _format_of(workspace / "a.jpg") == "JPEG"


def test_convert_rgba_png_to_jpeg(system: System, proc: Process, workspace: Path) -> None:
    _png(workspace / "alpha.png", mode="RGBA")
    res = _call(system, proc, "image.convert", path="alpha.png", format="jpg")
    assert res.ok, res.message
    with Image.open(workspace / "alpha.jpg") as img:
        assert img.format == "JPEG"
        assert img.mode == "RGB"
        assert img.size == (40, 20)


def test_convert_jpeg_to_png_and_webp(system: System, proc: Process, workspace: Path) -> None:
    _jpeg_with_exif(workspace / "photo.jpg")
    for fmt, name, pil in (("png", "photo.png", "PNG"), ("webp", "photo.webp", "WEBP")):
        res = _call(system, proc, "image.convert", path="photo.jpg", format=fmt)
        assert res.ok, res.message
        assert res.value["output"] == name
        assert _format_of(workspace / name) == pil


def test_convert_mismatched_explicit_extension(
    system: System, proc: Process, workspace: Path
) -> None:
    _png(workspace / "a.png")
    res = _call(system, proc, "image.convert", path="a.png", format="jpeg", output="b.png")
    assert res.code == ErrorCode.E_INVAL
    assert not (workspace / "b.png").exists()


def test_convert_unknown_format_is_invalid(system: System, proc: Process, workspace: Path) -> None:
    _png(workspace / "a.png")
    res = _call(system, proc, "image.convert", path="a.png", format="svg")
    assert res.code == ErrorCode.E_INVAL
    assert "format" in (res.message or "")


def test_convert_same_format_default_name_does_not_clobber_input(
    system: System, proc: Process, workspace: Path
) -> None:
    _jpeg_with_exif(workspace / "photo.jpg")
    before = (workspace / "photo.jpg").read_bytes()
    res = _call(system, proc, "image.convert", path="photo.jpg", format="jpeg")
    assert res.ok, res.message
    assert res.value["output"] == "photo-2.jpg"
    assert (workspace / "photo.jpg").read_bytes() == before


# image.crop


def test_crop_box(system: System, proc: Process, workspace: Path) -> None:
    img = Image.new("RGB", (40, 20), (0, 0, 0))
    img.putpixel((10, 5), (255, 255, 255))
    img.save(workspace / "a.png")
    res = _call(system, proc, "image.crop", path="a.png", left=10, top=5, right=30, bottom=15)
    assert res.ok, res.message
    assert res.value["output"] == "a_crop.png"
    with Image.open(workspace / "a_crop.png") as out:
        assert out.size == (20, 10)
        assert out.convert("RGB").getpixel((0, 0)) == (255, 255, 255)


@pytest.mark.parametrize(
    "box",
    [
        {"left": 10, "top": 0, "right": 10, "bottom": 5},  # zero width
        {"left": 20, "top": 0, "right": 10, "bottom": 5},  # right < left
        {"left": 0, "top": 8, "right": 5, "bottom": 3},  # bottom < top
        {"left": 0, "top": 0, "right": 41, "bottom": 5},  # past the right edge
        {"left": 0, "top": 0, "right": 5, "bottom": 21},  # past the bottom edge
        {"left": -1, "top": 0, "right": 5, "bottom": 5},  # negative
        {"left": 0, "top": 0, "right": 5},  # missing bottom
    ],
)
def test_crop_bad_box_is_invalid(
    system: System, proc: Process, workspace: Path, box: dict[str, int]
) -> None:
    _png(workspace / "a.png", (40, 20))
    res = _call(system, proc, "image.crop", path="a.png", **box)
    assert res.code == ErrorCode.E_INVAL, res
    assert sorted(p.name for p in workspace.iterdir()) == ["a.png"]


def test_crop_whole_image_is_allowed(system: System, proc: Process, workspace: Path) -> None:
    _png(workspace / "a.png", (40, 20))
    res = _call(system, proc, "image.crop", path="a.png", left=0, top=0, right=40, bottom=20)
    assert res.ok, res.message
    assert _size_of(workspace / "a_crop.png") == (40, 20)


# output names and overwriting


def test_default_output_never_clobbers(system: System, proc: Process, workspace: Path) -> None:
    _png(workspace / "a.png", (100, 50))
    first = _call(system, proc, "image.thumbnail", path="a.png", size=20)
    assert first.ok, first.message
    first_bytes = (workspace / "a_thumb.png").read_bytes()
    second = _call(system, proc, "image.thumbnail", path="a.png", size=10)
    assert second.ok, second.message
    third = _call(system, proc, "image.thumbnail", path="a.png", size=5)
    assert third.ok, third.message
    assert [first.value["output"], second.value["output"], third.value["output"]] == [
        "a_thumb.png",
        "a_thumb-2.png",
        "a_thumb-3.png",
    ]
    assert (workspace / "a_thumb.png").read_bytes() == first_bytes
    assert _size_of(workspace / "a_thumb-2.png") == (10, 5)


def test_default_output_sits_beside_input(system: System, proc: Process, workspace: Path) -> None:
    (workspace / "pics").mkdir()
    _png(workspace / "pics" / "a.png")
    res = _call(system, proc, "image.thumbnail", path="pics/a.png", size=8)
    assert res.ok, res.message
    assert res.value["output"] == "pics/a_thumb.png"
    assert (workspace / "pics" / "a_thumb.png").is_file()


@pytest.mark.parametrize(
    "call,args",
    [
        ("image.resize", {"width": 10}),
        ("image.thumbnail", {"size": 10}),
        ("image.convert", {"format": "png"}),
        ("image.crop", {"left": 0, "top": 0, "right": 10, "bottom": 10}),
    ],
)
def test_explicit_existing_output_needs_overwrite(
    system: System, proc: Process, workspace: Path, call: str, args: dict[str, Any]
) -> None:
    _png(workspace / "a.png", (40, 20))
    (workspace / "out.png").write_bytes(b"precious")
    res = _call(system, proc, call, path="a.png", output="out.png", **args)
    assert res.code == ErrorCode.E_EXISTS, res
    assert "overwrite" in (res.message or "")
    assert (workspace / "out.png").read_bytes() == b"precious"

    res = _call(system, proc, call, path="a.png", output="out.png", overwrite=True, **args)
    assert res.ok, res.message
    assert (workspace / "out.png").read_bytes() != b"precious"
    assert _format_of(workspace / "out.png") == "PNG"
    assert _size_of(workspace / "out.png") == (res.value["width"], res.value["height"])


def test_output_onto_a_folder_is_isdir(system: System, proc: Process, workspace: Path) -> None:
    _png(workspace / "a.png")
    (workspace / "dir.png").mkdir()
    res = _call(
        system, proc, "image.thumbnail", path="a.png", output="dir.png", overwrite=True, size=5
    )
    assert res.code == ErrorCode.E_ISDIR
    assert (workspace / "dir.png").is_dir()


def test_output_creates_parent_folders(system: System, proc: Process, workspace: Path) -> None:
    _png(workspace / "a.png")
    res = _call(system, proc, "image.thumbnail", path="a.png", output="out/deep/t.png", size=5)
    assert res.ok, res.message
    assert (workspace / "out" / "deep" / "t.png").is_file()


@pytest.mark.parametrize("output", ["../escape.png", "/etc/llmos-escape.png", "~/escape.png"])
def test_output_outside_workspace_is_perm(
    system: System, proc: Process, workspace: Path, output: str
) -> None:
    _png(workspace / "a.png")
    res = _call(system, proc, "image.thumbnail", path="a.png", output=output, size=5)
    assert res.code == ErrorCode.E_PERM, res
    assert not (workspace.parent / "escape.png").exists()
    assert not Path("/etc/llmos-escape.png").exists()
    assert sorted(p.name for p in workspace.iterdir()) == ["a.png"]


def test_output_through_symlink_outside_is_perm(
    system: System, proc: Process, workspace: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (workspace / "link").symlink_to(outside)
    _png(workspace / "a.png")
    res = _call(system, proc, "image.thumbnail", path="a.png", output="link/t.png", size=5)
    assert res.code == ErrorCode.E_PERM, res
    assert list(outside.iterdir()) == []


# damaged, hostile and missing inputs


def test_truncated_png_is_invalid(system: System, proc: Process, workspace: Path) -> None:
    buf = io.BytesIO()
    Image.effect_noise((64, 64), 60).save(buf, format="PNG")
    data = buf.getvalue()
    (workspace / "cut.png").write_bytes(data[: len(data) // 2])
    for call, extra in (("image.info", {}), ("image.thumbnail", {"size": 8})):
        res = _call(system, proc, call, path="cut.png", **extra)
        assert res.code == ErrorCode.E_INVAL, res
    assert sorted(p.name for p in workspace.iterdir()) == ["cut.png"]


def test_text_named_png_is_invalid(system: System, proc: Process, workspace: Path) -> None:
    (workspace / "notes.png").write_text("not an image at all\n")
    res = _call(system, proc, "image.info", path="notes.png")
    assert res.code == ErrorCode.E_INVAL
    assert "notes.png" in (res.message or "")


def test_empty_file_is_invalid(system: System, proc: Process, workspace: Path) -> None:
    (workspace / "empty.jpg").write_bytes(b"")
    res = _call(system, proc, "image.resize", path="empty.jpg", width=5)
    assert res.code == ErrorCode.E_INVAL


def test_damage_past_first_frame_is_invalid_not_internal(
    system: System, proc: Process, workspace: Path
) -> None:
    (workspace / "bad.tif").write_bytes(_tiff_damaged_after_first_frame())
    res = _call(system, proc, "image.info", path="bad.tif")
    assert res.code == ErrorCode.E_INVAL, res


def test_crafted_huge_header_is_toobig(system: System, proc: Process, workspace: Path) -> None:
    (workspace / "bomb.png").write_bytes(_png_claiming(100_000, 100_000))
    res = _call(system, proc, "image.info", path="bomb.png")
    assert res.code == ErrorCode.E_TOOBIG, res


@pytest.mark.parametrize("side", [15, 40])  # 225 px: over the limit; 1600 px: over twice it
def test_pixel_limit_is_toobig(
    system: System,
    proc: Process,
    workspace: Path,
    monkeypatch: pytest.MonkeyPatch,
    restore_pillow_limit: None,
    side: int,
) -> None:
    _png(workspace / "a.png", (side, side))
    monkeypatch.setattr(image_mod, "MAX_IMAGE_PIXELS", 200)
    for call, extra in (("image.info", {}), ("image.thumbnail", {"size": 4})):
        res = _call(system, proc, call, path="a.png", **extra)
        assert res.code == ErrorCode.E_TOOBIG, res
    assert sorted(p.name for p in workspace.iterdir()) == ["a.png"]


def test_image_under_pixel_limit_passes(
    system: System,
    proc: Process,
    workspace: Path,
    monkeypatch: pytest.MonkeyPatch,
    restore_pillow_limit: None,
) -> None:
    _png(workspace / "a.png", (10, 10))
    monkeypatch.setattr(image_mod, "MAX_IMAGE_PIXELS", 200)
    assert _call(system, proc, "image.info", path="a.png").ok


def test_file_over_byte_limit_is_toobig(
    system: System, proc: Process, workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _png(workspace / "a.png", (40, 20))
    monkeypatch.setattr(image_mod, "MAX_IMAGE_FILE_BYTES", path.stat().st_size - 1)
    res = _call(system, proc, "image.info", path="a.png")
    assert res.code == ErrorCode.E_TOOBIG
    monkeypatch.setattr(image_mod, "MAX_IMAGE_FILE_BYTES", path.stat().st_size)
    assert _call(system, proc, "image.info", path="a.png").ok


def test_missing_is_noent(system: System, proc: Process) -> None:
    for call, extra in (
        ("image.info", {}),
        ("image.resize", {"width": 5}),
        ("image.thumbnail", {}),
        ("image.convert", {"format": "png"}),
        ("image.crop", {"left": 0, "top": 0, "right": 1, "bottom": 1}),
    ):
        res = _call(system, proc, call, path="nope.png", **extra)
        assert res.code == ErrorCode.E_NOENT, (call, res)


def test_empty_folder_is_noent(system: System, proc: Process, workspace: Path) -> None:
    (workspace / "d.png").mkdir()
    res = _call(system, proc, "image.info", path="d.png")
    assert res.code == ErrorCode.E_NOENT
    assert "d.png is an empty folder" in (res.message or "")


def test_input_outside_workspace_is_perm(system: System, proc: Process) -> None:
    res = _call(system, proc, "image.info", path="../x.png")
    assert res.code == ErrorCode.E_PERM


# many images at once: a folder or a pattern


def _truncated_png(path: Path) -> Path:
    buf = io.BytesIO()
    Image.effect_noise((64, 64), 60).save(buf, format="PNG")
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    return path


def _photos(folder: Path) -> Path:
    """A folder of real images in three formats, plus a text file."""
    folder.mkdir()
    _png(folder / "a.png", (400, 100))
    Image.new("RGB", (100, 300), (0, 90, 0)).save(folder / "b.jpg", format="JPEG")
    _gif(folder / "c.gif")
    (folder / "notes.txt").write_text("not a picture\n")
    return folder


def _wh(size: str) -> tuple[int, int]:
    width, height = size.split("x")
    return int(width), int(height)


def test_thumbnail_folder_into_out_dir(system: System, proc: Process, workspace: Path) -> None:
    pics = _photos(workspace / "pics")
    before = {p.name: p.read_bytes() for p in pics.iterdir()}
    res = _call(system, proc, "image.thumbnail", path="pics", size=64, out_dir="pics/small")
    assert res.ok, res.message
    value = res.value
    assert value["path"] == "pics"
    assert value["out_dir"] == "pics/small"
    assert value["summary"] == "3 done, 1 skipped"
    assert [d["path"] for d in value["done"]] == ["pics/a.png", "pics/b.jpg", "pics/c.gif"]
    assert [d["output"] for d in value["done"]] == [
        "pics/small/a.png",
        "pics/small/b.jpg",
        "pics/small/c.gif",
    ]
    for done in value["done"]:
        assert _size_of(workspace / done["output"]) == _wh(done["size"])
    assert _size_of(pics / "small" / "a.png") == (64, 16)
    assert max(_size_of(pics / "small" / "b.jpg")) == 64
    assert _size_of(pics / "small" / "c.gif") == (30, 20)  # never enlarged
    assert _format_of(pics / "small" / "b.jpg") == "JPEG"
    assert value["skipped"] == [
        {"path": "pics/notes.txt", "code": "E_INVAL", "why": "is not an image Pillow can read"}
    ]
    assert sorted(p.name for p in (pics / "small").iterdir()) == ["a.png", "b.jpg", "c.gif"]
    assert {p.name: p.read_bytes() for p in pics.iterdir() if p.is_file()} == before


def test_pattern_takes_only_its_matches(system: System, proc: Process, workspace: Path) -> None:
    shots = workspace / "shots"
    shots.mkdir()
    _png(shots / "1.png", (40, 20))
    _png(shots / "2.png", (20, 40))
    _jpeg_with_exif(shots / "3.jpg")
    res = _call(system, proc, "image.resize", path="shots/*.png", width=10, out_dir="shots/tiny")
    assert res.ok, res.message
    assert [(d["output"], d["size"]) for d in res.value["done"]] == [
        ("shots/tiny/1.png", "10x5"),
        ("shots/tiny/2.png", "10x20"),
    ]
    assert res.value["skipped"] == []
    assert _size_of(shots / "tiny" / "2.png") == (10, 20)
    assert sorted(p.name for p in (shots / "tiny").iterdir()) == ["1.png", "2.png"]


def test_corrupt_image_among_good_ones(system: System, proc: Process, workspace: Path) -> None:
    pics = workspace / "pics"
    pics.mkdir()
    _png(pics / "good1.png", (80, 40))
    _truncated_png(pics / "bad.png")
    _png(pics / "good2.png", (40, 80))
    res = _call(system, proc, "image.thumbnail", path="pics/*.png", size=20, out_dir="thumbs")
    assert res.ok, res.message
    assert res.value["summary"] == "2 done, 1 skipped"
    assert [d["output"] for d in res.value["done"]] == ["thumbs/good1.png", "thumbs/good2.png"]
    [bad] = res.value["skipped"]
    assert bad["path"] == "pics/bad.png"
    assert bad["code"] == "E_INVAL"
    assert "damaged" in bad["why"]
    assert sorted(p.name for p in (workspace / "thumbs").iterdir()) == ["good1.png", "good2.png"]
    assert _size_of(workspace / "thumbs" / "good2.png") == (10, 20)


def test_info_over_folder(system: System, proc: Process, workspace: Path) -> None:
    pics = workspace / "pics"
    pics.mkdir()
    _png(pics / "tall.png", (10, 90))
    _png(pics / "wide.png", (120, 20))
    Image.new("RGB", (60, 60)).save(pics / "big.jpg", format="JPEG")
    (pics / "readme.md").write_text("# photos\n")
    (pics / "sub").mkdir()
    res = _call(system, proc, "image.info", path="pics")
    assert res.ok, res.message
    value = res.value
    assert value["images"] == [
        {"path": "pics/big.jpg", "format": "JPEG", "width": 60, "height": 60},
        {"path": "pics/tall.png", "format": "PNG", "width": 10, "height": 90},
        {"path": "pics/wide.png", "format": "PNG", "width": 120, "height": 20},
    ]
    assert (value["tallest"], value["widest"], value["largest"]) == (
        "pics/tall.png",
        "pics/wide.png",
        "pics/big.jpg",
    )
    assert value["summary"] == "3 images, 2 skipped"
    assert [(s["path"], s["code"]) for s in value["skipped"]] == [
        ("pics/readme.md", "E_INVAL"),
        ("pics/sub", "E_ISDIR"),
    ]


def test_info_over_pattern_and_workspace_root(
    system: System, proc: Process, workspace: Path
) -> None:
    _png(workspace / "a.png", (5, 7))
    _png(workspace / "b.png", (8, 3))
    (workspace / "c.txt").write_text("text")
    res = _call(system, proc, "image.info", path="*.png")
    assert res.ok, res.message
    assert [i["path"] for i in res.value["images"]] == ["a.png", "b.png"]
    assert res.value["skipped"] == []
    res = _call(system, proc, "image.info", path=".")
    assert res.ok, res.message
    assert [i["path"] for i in res.value["images"]] == ["a.png", "b.png"]
    assert [s["path"] for s in res.value["skipped"]] == ["c.txt"]


def test_convert_folder_changes_extensions(system: System, proc: Process, workspace: Path) -> None:
    _photos(workspace / "pics")
    res = _call(system, proc, "image.convert", path="pics/", format="webp", out_dir="web")
    assert res.ok, res.message
    assert [d["output"] for d in res.value["done"]] == ["web/a.webp", "web/b.webp", "web/c.webp"]
    for name in ("a", "b", "c"):
        assert _format_of(workspace / "web" / f"{name}.webp") == "WEBP"


def test_folder_without_out_dir_writes_beside_each(
    system: System, proc: Process, workspace: Path
) -> None:
    _photos(workspace / "pics")
    res = _call(system, proc, "image.crop", path="pics", left=0, top=0, right=60, bottom=60)
    assert res.ok, res.message
    assert [d["output"] for d in res.value["done"]] == ["pics/a_crop.png", "pics/b_crop.jpg"]
    assert [(s["path"], s["code"]) for s in res.value["skipped"]] == [
        ("pics/c.gif", "E_INVAL"),  # 30x20: the box goes outside it
        ("pics/notes.txt", "E_INVAL"),
    ]
    assert res.value["out_dir"] is None


def test_existing_outputs_need_overwrite_per_file(
    system: System, proc: Process, workspace: Path
) -> None:
    _photos(workspace / "pics")
    (workspace / "small").mkdir()
    (workspace / "small" / "b.jpg").write_bytes(b"precious")
    res = _call(system, proc, "image.thumbnail", path="pics/*", size=8, out_dir="small")
    assert res.ok, res.message
    assert [d["output"] for d in res.value["done"]] == ["small/a.png", "small/c.gif"]
    exists = [s for s in res.value["skipped"] if s["code"] == "E_EXISTS"]
    assert [s["path"] for s in exists] == ["pics/b.jpg"]
    assert "overwrite" in exists[0]["why"]
    assert (workspace / "small" / "b.jpg").read_bytes() == b"precious"
    res = _call(
        system, proc, "image.thumbnail", path="pics/*", size=8, out_dir="small", overwrite=True
    )
    assert res.value["summary"] == "3 done, 1 skipped"
    assert _format_of(workspace / "small" / "b.jpg") == "JPEG"


def test_one_file_into_out_dir(system: System, proc: Process, workspace: Path) -> None:
    _png(workspace / "a.png", (40, 20))
    res = _call(system, proc, "image.thumbnail", path="a.png", size=10, out_dir="new/small")
    assert res.ok, res.message
    assert res.value == {
        "path": "a.png",
        "output": "new/small/a.png",
        "format": "PNG",
        "width": 10,
        "height": 5,
    }


@pytest.mark.parametrize(
    "args,words",
    [
        ({"path": "pics", "output": "x.png"}, "out_dir"),
        ({"path": "pics/*.png", "output": "x.png"}, "out_dir"),
        ({"path": "pics/a.png", "output": "x.png", "out_dir": "o"}, "not both"),
        ({"path": "p*/a.png"}, "only the last part"),
    ],
)
def test_bad_combinations_are_invalid(
    system: System, proc: Process, workspace: Path, args: dict[str, Any], words: str
) -> None:
    _photos(workspace / "pics")
    res = _call(system, proc, "image.thumbnail", size=8, **args)
    assert res.code == ErrorCode.E_INVAL, res
    assert words in (res.message or "")
    assert sorted(p.name for p in workspace.iterdir()) == ["pics"]


def test_out_dir_that_is_a_file_is_notdir(system: System, proc: Process, workspace: Path) -> None:
    _photos(workspace / "pics")
    (workspace / "small").write_text("a file")
    res = _call(system, proc, "image.thumbnail", path="pics", out_dir="small")
    assert res.code == ErrorCode.E_NOTDIR, res


def test_pattern_matching_nothing_is_noent(system: System, proc: Process, workspace: Path) -> None:
    _photos(workspace / "pics")
    res = _call(system, proc, "image.info", path="pics/*.bmp")
    assert res.code == ErrorCode.E_NOENT


def test_pattern_outside_workspace_is_perm(system: System, proc: Process) -> None:
    for path in ("../*.png", "/etc/*"):
        res = _call(system, proc, "image.info", path=path)
        assert res.code == ErrorCode.E_PERM, (path, res)


def test_too_many_files_is_toobig_before_any_work(
    system: System, proc: Process, workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _photos(workspace / "pics")
    monkeypatch.setattr(image_mod, "MAX_IMAGE_BATCH", 3)
    res = _call(system, proc, "image.thumbnail", path="pics", out_dir="small")
    assert res.code == ErrorCode.E_TOOBIG, res
    assert "4 files" in (res.message or "")
    assert not (workspace / "small").exists()


def test_pixel_limit_applies_per_file(
    system: System,
    proc: Process,
    workspace: Path,
    monkeypatch: pytest.MonkeyPatch,
    restore_pillow_limit: None,
) -> None:
    _png(workspace / "small.png", (10, 10))
    _png(workspace / "big.png", (40, 40))
    (workspace / "bomb.png").write_bytes(_png_claiming(100_000, 100_000))
    monkeypatch.setattr(image_mod, "MAX_IMAGE_PIXELS", 200)
    res = _call(system, proc, "image.thumbnail", path="*.png", size=4, out_dir="t")
    assert res.ok, res.message
    assert [d["output"] for d in res.value["done"]] == ["t/small.png"]
    assert [(s["path"], s["code"]) for s in res.value["skipped"]] == [
        ("big.png", "E_TOOBIG"),
        ("bomb.png", "E_TOOBIG"),
    ]


def test_scoped_capability_guards_each_file(
    system: System, workspace: Path, tmp_path: Path
) -> None:
    pics = workspace / "pics"
    pics.mkdir()
    _png(pics / "a.png")
    (workspace / "private").mkdir()
    _png(workspace / "private" / "secret.png")
    (pics / "link.png").symlink_to(workspace / "private" / "secret.png")
    proc = system.spawn("scoped", workspace, patterns=[])
    proc.caps.add(system.authority.mint("image.thumbnail", scope="pics"))
    res = _call(system, proc, "image.thumbnail", path="pics", size=8, out_dir="elsewhere")
    assert res.code == ErrorCode.E_PERM, res
    assert not (workspace / "elsewhere").exists()
    res = _call(system, proc, "image.thumbnail", path="pics", size=8, out_dir="pics/small")
    assert res.ok, res.message
    assert [d["output"] for d in res.value["done"]] == ["pics/small/a.png"]
    assert [(s["path"], s["code"]) for s in res.value["skipped"]] == [("pics/link.png", "E_PERM")]
    assert sorted(p.name for p in (pics / "small").iterdir()) == ["a.png"]


def test_many_results_stay_compact(system: System, proc: Process, workspace: Path) -> None:
    pics = workspace / "pics"
    pics.mkdir()
    for i in range(20):
        _png(pics / f"img{i:02}.png", (64, 32))
    res = _call(system, proc, "image.thumbnail", path="pics", size=16, out_dir="small")
    assert res.ok, res.message
    assert len(res.value["done"]) == 20
    assert len(compact_result(res)) < MAX_RESULT_CHARS
