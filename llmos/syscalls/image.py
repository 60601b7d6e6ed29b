"""The image family on Pillow: inspect, resize, thumbnail, convert and crop workspace images."""

from __future__ import annotations

import io
import os
import posixpath
import stat
import warnings
from collections.abc import Iterable
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, Field

from llmos.apps.hooks import hookimpl
from llmos.errors import ErrorCode, LlmosError
from llmos.kernel.process import Process
from llmos.limits import MAX_IMAGE_FILE_BYTES, MAX_IMAGE_PIXELS, MAX_IMAGE_SIDE
from llmos.security.workspace import O_CLOEXEC, os_error
from llmos.syscalls.atomic import write_atomic_at
from llmos.syscalls.base import Registry, Syscall

if TYPE_CHECKING:
    from PIL import Image as PILImage

FORMATS = {
    "png": "PNG",
    "jpg": "JPEG",
    "jpeg": "JPEG",
    "webp": "WEBP",
    "gif": "GIF",
    "bmp": "BMP",
    "tiff": "TIFF",
    "tif": "TIFF",
}
OutputArg = Field(default=None, description="Output path; by default a new name beside the input.")
OverwriteArg = Field(default=False, description="Replace output if it already exists.")


class ImageInfo(Syscall):
    """Show an image's format, width, height, mode and EXIF summary."""

    call: Literal["image.info"] = "image.info"
    path: str = Field(description="Image path inside the workspace.")


class ImageInfoResult(BaseModel):
    """What the image is."""

    path: str
    format: str | None
    width: int
    height: int
    mode: str
    frames: int
    exif: dict[str, str]


class ImageResize(Syscall):
    """Resize an image to a width and/or height (keeps aspect ratio if one is given)."""

    call: Literal["image.resize"] = "image.resize"
    path: str = Field(description="Image path inside the workspace.")
    width: int | None = Field(default=None, ge=1, le=MAX_IMAGE_SIDE)
    height: int | None = Field(default=None, ge=1, le=MAX_IMAGE_SIDE)
    output: str | None = OutputArg
    overwrite: bool = OverwriteArg


class ImageThumbnail(Syscall):
    """Make a thumbnail no larger than size x size pixels."""

    call: Literal["image.thumbnail"] = "image.thumbnail"
    path: str = Field(description="Image path inside the workspace.")
    size: int = Field(default=256, ge=1, le=MAX_IMAGE_SIDE, description="Longest side in pixels.")
    output: str | None = OutputArg
    overwrite: bool = OverwriteArg


class ImageConvert(Syscall):
    """Convert an image to another format (png, jpeg, webp, gif, bmp, tiff)."""

    call: Literal["image.convert"] = "image.convert"
    path: str = Field(description="Image path inside the workspace.")
    format: Literal["png", "jpg", "jpeg", "webp", "gif", "bmp", "tiff"] = Field(
        description="Target format."
    )
    output: str | None = OutputArg
    overwrite: bool = OverwriteArg


class ImageCrop(Syscall):
    """Crop an image to the box left, top, right, bottom (pixels)."""

    call: Literal["image.crop"] = "image.crop"
    path: str = Field(description="Image path inside the workspace.")
    left: int = Field(ge=0)
    top: int = Field(ge=0)
    right: int = Field(ge=1)
    bottom: int = Field(ge=1)
    output: str | None = OutputArg
    overwrite: bool = OverwriteArg


class ImageWriteResult(BaseModel):
    """The image written."""

    path: str
    output: str
    format: str
    width: int
    height: int


def _load(process: Process, path: str) -> tuple[PILImage.Image, str]:
    """Open and fully decode a workspace image; corrupt files are E_INVAL, bombs E_TOOBIG."""
    from PIL import Image, UnidentifiedImageError

    Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
    with process.workspace.locate(path) as loc:
        info = loc.lstat()
        if info is None:
            raise LlmosError(ErrorCode.E_NOENT, f"{path} does not exist")
        if stat.S_ISDIR(info.st_mode):
            raise LlmosError(ErrorCode.E_ISDIR, f"{path} is a folder")
        if info.st_size > MAX_IMAGE_FILE_BYTES:
            raise LlmosError(
                ErrorCode.E_TOOBIG, f"{path} is {info.st_size} bytes, over {MAX_IMAGE_FILE_BYTES}"
            )
        try:
            fd = os.open(loc.name, os.O_RDONLY | os.O_NOFOLLOW | O_CLOEXEC, dir_fd=loc.dir_fd)
        except OSError as exc:
            raise os_error(exc, path) from None
        with os.fdopen(fd, "rb") as fh:
            data = fh.read(MAX_IMAGE_FILE_BYTES + 1)
        if len(data) > MAX_IMAGE_FILE_BYTES:  # it grew after the lstat
            raise LlmosError(ErrorCode.E_TOOBIG, f"{path} is over {MAX_IMAGE_FILE_BYTES} bytes")
        rel = loc.rel
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            img.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise LlmosError(ErrorCode.E_TOOBIG, f"{path}: too many pixels ({exc})") from None
    except UnidentifiedImageError:
        raise LlmosError(ErrorCode.E_INVAL, f"{path} is not an image Pillow can read") from None
    except Exception as exc:  # Pillow's decoders raise many types (TypeError, KeyError...)
        raise LlmosError(ErrorCode.E_INVAL, f"{path} is a damaged image: {exc}") from None
    return img, rel


def _exif_summary(img: PILImage.Image) -> dict[str, str]:
    from PIL import ExifTags

    out: dict[str, str] = {}
    for tag, value in img.getexif().items():
        name = ExifTags.TAGS.get(tag, str(tag))
        text = value.decode(errors="replace") if isinstance(value, bytes) else str(value)
        if len(text) <= 120:
            out[name] = text
        if len(out) >= 20:
            break
    return out


def image_info(call: ImageInfo, process: Process) -> ImageInfoResult:
    """Decode the image and report what it is."""
    img, rel = _load(process, call.path)
    try:
        # Counting frames reads every frame's header and EXIF is parsed lazily: a file damaged
        # past its first frame fails here, after _load, and is still just a damaged image.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            frames = getattr(img, "n_frames", 1)
            exif = _exif_summary(img)
    except Exception as exc:
        raise LlmosError(ErrorCode.E_INVAL, f"{call.path} is a damaged image: {exc}") from None
    return ImageInfoResult(
        path=rel,
        format=img.format,
        width=img.width,
        height=img.height,
        mode=img.mode,
        frames=frames,
        exif=exif,
    )


def _format_for(name: str, fallback: str | None) -> str:
    ext = posixpath.splitext(name)[1].lower().lstrip(".")
    if ext in FORMATS:
        return FORMATS[ext]
    if fallback:
        return fallback
    raise LlmosError(ErrorCode.E_INVAL, f"cannot tell an image format from {name!r}")


def _default_output(process: Process, rel: str, suffix: str, ext: str | None = None) -> str:
    """A new name beside the input (`photo_thumb.png`, `photo_thumb-2.png`...): never clobbers."""
    stem, old_ext = posixpath.splitext(rel)
    ext = ext or old_ext
    candidate = f"{stem}{suffix}{ext}"
    n = 2
    while _exists(process, candidate):
        candidate = f"{stem}{suffix}-{n}{ext}"
        n += 1
    return candidate


def _exists(process: Process, path: str) -> bool:
    with process.workspace.locate(path, follow=False, create_parents=False) as loc:
        return loc.lstat() is not None


def _save(
    process: Process, img: PILImage.Image, src: str, output: str, fmt: str, overwrite: bool
) -> ImageWriteResult:
    """Encode and write atomically; an existing output is E_EXISTS unless `overwrite`."""
    if fmt == "JPEG" and img.mode not in ("RGB", "L", "CMYK"):
        img = img.convert("RGB")
    buf = io.BytesIO()
    try:
        img.save(buf, format=fmt)
    except (OSError, ValueError, KeyError) as exc:
        raise LlmosError(ErrorCode.E_INVAL, f"cannot save as {fmt}: {exc}") from None
    with process.workspace.locate(output, create_parents=True) as loc:
        info = loc.lstat()
        if info is not None and stat.S_ISDIR(info.st_mode):
            raise LlmosError(ErrorCode.E_ISDIR, f"{output} is a folder")
        if info is not None and not overwrite:
            raise LlmosError(ErrorCode.E_EXISTS, f"{output} exists; pass overwrite=true")
        try:
            write_atomic_at(loc.dir_fd, loc.name, buf.getvalue(), exclusive=not overwrite)
        except OSError as exc:
            raise os_error(exc, output) from None
        out_rel = loc.rel
    return ImageWriteResult(
        path=src, output=out_rel, format=fmt, width=img.width, height=img.height
    )


def image_resize(call: ImageResize, process: Process) -> ImageWriteResult:
    """Resize; with one side given, the other keeps the aspect ratio."""
    if call.width is None and call.height is None:
        raise LlmosError(ErrorCode.E_INVAL, "give width, height, or both")
    img, rel = _load(process, call.path)
    width = call.width or max(1, round(img.width * (call.height or 1) / img.height))
    height = call.height or max(1, round(img.height * width / img.width))
    if width > MAX_IMAGE_SIDE or height > MAX_IMAGE_SIDE:
        raise LlmosError(ErrorCode.E_TOOBIG, f"{width}x{height} is over {MAX_IMAGE_SIDE} px a side")
    if width * height > MAX_IMAGE_PIXELS:
        raise LlmosError(
            ErrorCode.E_TOOBIG, f"{width}x{height} is over the {MAX_IMAGE_PIXELS}-pixel limit"
        )
    out = img.resize((width, height))
    output = call.output or _default_output(process, rel, f"_{width}x{height}")
    return _save(process, out, rel, output, _format_for(output, img.format), call.overwrite)


def image_thumbnail(call: ImageThumbnail, process: Process) -> ImageWriteResult:
    """Shrink (never enlarge) to fit in size x size, keeping the aspect ratio."""
    img, rel = _load(process, call.path)
    img.thumbnail((call.size, call.size))
    output = call.output or _default_output(process, rel, "_thumb")
    return _save(process, img, rel, output, _format_for(output, img.format), call.overwrite)


def image_convert(call: ImageConvert, process: Process) -> ImageWriteResult:
    """Re-encode in another format; the default output swaps the extension."""
    img, rel = _load(process, call.path)
    fmt = FORMATS[call.format]
    ext = "." + ("jpg" if fmt == "JPEG" else call.format)
    output = call.output or _default_output(process, rel, "", ext)
    if call.output is not None and _format_for(output, fmt) != fmt:
        raise LlmosError(ErrorCode.E_INVAL, f"{output}'s extension does not match {call.format}")
    return _save(process, img, rel, output, fmt, call.overwrite)


def image_crop(call: ImageCrop, process: Process) -> ImageWriteResult:
    """Crop to a box that must lie inside the image."""
    img, rel = _load(process, call.path)
    if call.right <= call.left or call.bottom <= call.top:
        raise LlmosError(ErrorCode.E_INVAL, "the box needs right > left and bottom > top")
    if call.right > img.width or call.bottom > img.height:
        raise LlmosError(
            ErrorCode.E_INVAL, f"the box goes outside the {img.width}x{img.height} image"
        )
    out = img.crop((call.left, call.top, call.right, call.bottom))
    output = call.output or _default_output(process, rel, "_crop")
    return _save(process, out, rel, output, _format_for(output, img.format), call.overwrite)


def _in_resource(call: ImageInfo, process: Process) -> Iterable[str]:
    return [process.workspace.relpath(call.path)]


def _in_out_resources(
    call: ImageResize | ImageThumbnail | ImageConvert | ImageCrop, process: Process
) -> Iterable[str]:
    paths = [process.workspace.relpath(call.path)]
    if call.output is not None:
        paths.append(process.workspace.relpath(call.output))
    return paths


@hookimpl
def register_syscalls(registry: Registry) -> None:
    """Register the image family."""
    registry.register(ImageInfo, image_info, result=ImageInfoResult, resources=_in_resource)
    for model, handler in (
        (ImageResize, image_resize),
        (ImageThumbnail, image_thumbnail),
        (ImageConvert, image_convert),
        (ImageCrop, image_crop),
    ):
        registry.register(model, handler, result=ImageWriteResult, resources=_in_out_resources)  # type: ignore[arg-type]
