"""The image family on Pillow: inspect, resize, thumbnail, convert and crop workspace images,
and read the text they show (OCR, in the document converter's sandbox)."""

from __future__ import annotations

import io
import os
import posixpath
import stat
import warnings
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, Field

from llmos.atomic import write_atomic_at
from llmos.documents import Documents, kind_of
from llmos.errors import ErrorCode, LlmosError, os_error
from llmos.limits import MAX_IMAGE_BATCH, MAX_IMAGE_FILE_BYTES, MAX_IMAGE_PIXELS, MAX_IMAGE_SIDE
from llmos.security.workspace import O_CLOEXEC
from llmos.syscalls.base import Registrar, Syscall, existing_path
from llmos.syscalls.context import Process

# fs owns pattern expansion (one folder, last part only, temp files hidden); images reuse it so
# `pics/*.jpg` means the same in both families.
from llmos.syscalls.fs import _expand, _is_pattern
from llmos.syscalls.hooks import hookimpl

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
InputArg = existing_path(
    "any", patterns=True, description="An image, a folder, or a pattern like pics/*.jpg."
)
OutputArg = Field(
    default=None, description="Output path for one image; by default a new name beside it."
)
OutDirArg = Field(
    default=None, description="Output folder (made if missing); outputs keep the input names."
)
OverwriteArg = Field(default=False, description="Replace outputs that already exist.")
BINARY_SNIFF = 64
"""Bytes enough to tell an image's format by its signature."""


class ImageInfo(Syscall):
    """Show an image's format, width, height, mode and EXIF; not its words (image.text reads them).

    For a folder or a pattern, each image's size."""

    needs_files = True
    call: Literal["image.info"] = "image.info"
    path: str = InputArg


class ImageInfoResult(BaseModel):
    """What the image is."""

    path: str
    format: str | None
    width: int
    height: int
    mode: str
    frames: int
    exif: dict[str, str]
    note: str = "the words the image shows are not here: image.text reads them"
    """Said with every single image: asked what a screenshot says, the 1.5B model called
    image.info and then invented an answer from the size alone."""


class ImageText(Syscall):
    """Read the text an image shows (a screenshot, a photo of a page, a sign): OCR, offline."""

    needs_files = True
    call: Literal["image.text"] = "image.text"
    path: str = existing_path("file", description="The image, e.g. screenshot.png")


class ImageTextLine(BaseModel):
    """One line of text found: its words, the recogniser's confidence (0-1), its box in pixels
    as [left, top, right, bottom]."""

    text: str
    confidence: float
    box: list[int]


class ImageTextResult(BaseModel):
    """The image's text top to bottom, line by line."""

    path: str
    text: str
    lines: list[ImageTextLine]
    count: int
    """How many lines of text were found (0: the image shows no text)."""


class ImageResize(Syscall):
    """Resize images to a width and/or height (keeps aspect ratio if one is given)."""

    changes_files = True
    needs_files = True
    call: Literal["image.resize"] = "image.resize"
    path: str = InputArg
    width: int | None = Field(default=None, ge=1, le=MAX_IMAGE_SIDE)
    height: int | None = Field(default=None, ge=1, le=MAX_IMAGE_SIDE)
    output: str | None = OutputArg
    out_dir: str | None = OutDirArg
    overwrite: bool = OverwriteArg


class ImageThumbnail(Syscall):
    """Make thumbnails no larger than size x size pixels."""

    changes_files = True
    needs_files = True
    call: Literal["image.thumbnail"] = "image.thumbnail"
    path: str = InputArg
    size: int = Field(default=256, ge=1, le=MAX_IMAGE_SIDE, description="Longest side in pixels.")
    output: str | None = OutputArg
    out_dir: str | None = OutDirArg
    overwrite: bool = OverwriteArg


class ImageConvert(Syscall):
    """Convert images to another format (png, jpeg, webp, gif, bmp, tiff)."""

    changes_files = True
    needs_files = True
    call: Literal["image.convert"] = "image.convert"
    path: str = InputArg
    format: Literal["png", "jpg", "jpeg", "webp", "gif", "bmp", "tiff"] = Field(
        description="Target format."
    )
    output: str | None = OutputArg
    out_dir: str | None = OutDirArg
    overwrite: bool = OverwriteArg


class ImageCrop(Syscall):
    """Crop images to the box left, top, right, bottom (pixels)."""

    changes_files = True
    needs_files = True
    call: Literal["image.crop"] = "image.crop"
    path: str = InputArg
    left: int = Field(ge=0)
    top: int = Field(ge=0)
    right: int = Field(ge=1)
    bottom: int = Field(ge=1)
    output: str | None = OutputArg
    out_dir: str | None = OutDirArg
    overwrite: bool = OverwriteArg


class ImageWriteResult(BaseModel):
    """The image written."""

    path: str
    output: str
    format: str
    width: int
    height: int


class ImageDone(BaseModel):
    """One image written by a call over many."""

    path: str
    output: str
    size: str


class ImageSkip(BaseModel):
    """One file a call over many left alone, and why."""

    path: str
    code: ErrorCode
    why: str


class ImageBatchResult(BaseModel):
    """What a call over a folder or pattern did: a count, each file skipped and why, each done."""

    path: str
    out_dir: str | None = None
    summary: str
    skipped: list[ImageSkip]
    done: list[ImageDone]


class ImageSize(BaseModel):
    """One image's format and size, as image.info over many reports it."""

    path: str
    format: str | None
    width: int
    height: int


class ImageInfoBatchResult(BaseModel):
    """Each image's format and size in a folder or pattern, with the extremes named."""

    path: str
    summary: str
    tallest: str | None
    widest: str | None
    largest: str | None
    skipped: list[ImageSkip]
    images: list[ImageSize]


WriteCall = ImageResize | ImageThumbnail | ImageConvert | ImageCrop


def _read(process: Process, path: str) -> tuple[bytes, str]:
    """A workspace image file's bytes and workspace path: a regular file, never through a link,
    at most MAX_IMAGE_FILE_BYTES."""
    with process.workspace.locate(path) as loc:
        info = loc.lstat()
        if info is None:
            raise LlmosError(ErrorCode.E_NOENT, f"{path} does not exist")
        if stat.S_ISDIR(info.st_mode):
            raise LlmosError(ErrorCode.E_ISDIR, f"{path} is a folder")
        if not stat.S_ISREG(info.st_mode):  # a FIFO would block the open for good
            raise LlmosError(ErrorCode.E_INVAL, f"{path} is not a regular file")
        if info.st_size > MAX_IMAGE_FILE_BYTES:
            raise LlmosError(
                ErrorCode.E_TOOBIG, f"{path} is {info.st_size} bytes, over {MAX_IMAGE_FILE_BYTES}"
            )
        try:
            flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | O_CLOEXEC
            fd = os.open(loc.name, flags, dir_fd=loc.dir_fd)
        except OSError as exc:
            raise os_error(exc, path) from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # swapped for a FIFO since the lstat
            os.close(fd)
            raise LlmosError(ErrorCode.E_INVAL, f"{path} is not a regular file")
        with os.fdopen(fd, "rb") as fh:
            data = fh.read(MAX_IMAGE_FILE_BYTES + 1)
        if len(data) > MAX_IMAGE_FILE_BYTES:  # it grew after the lstat
            raise LlmosError(ErrorCode.E_TOOBIG, f"{path} is over {MAX_IMAGE_FILE_BYTES} bytes")
        return data, loc.rel


def _load(process: Process, path: str) -> tuple[PILImage.Image, str]:
    """Open and fully decode a workspace image; corrupt files are E_INVAL, bombs E_TOOBIG."""
    from PIL import Image, UnidentifiedImageError

    Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
    data, rel = _read(process, path)
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


def _inputs(process: Process, path: str) -> list[str] | None:
    """The files a folder or pattern names (sorted), or None when `path` is one file (or
    nothing: loading it then says what is wrong)."""
    ws = process.workspace
    if _is_pattern(ws, path):
        pattern = path
    else:
        with ws.locate(path) as loc:
            info = loc.lstat()
            if info is None or not stat.S_ISDIR(info.st_mode):
                return None
            pattern = f"./{loc.rel}/*" if loc.rel else "./*"
    try:
        matches = _expand(ws, pattern)
    except LlmosError as exc:
        if exc.code is ErrorCode.E_NOENT and pattern != path:
            raise LlmosError(ErrorCode.E_NOENT, f"{path} is an empty folder") from None
        raise
    if len(matches) > MAX_IMAGE_BATCH:
        raise LlmosError(
            ErrorCode.E_TOOBIG,
            f"{path} names {len(matches)} files, over {MAX_IMAGE_BATCH} at once; "
            "use a narrower pattern",
        )
    # "./" so that a name like "~x" at the top is not read as the home folder.
    return [m if "/" in m else f"./{m}" for m in matches]


def _skip(process: Process, shown: str, exc: LlmosError) -> ImageSkip:
    """A per-file failure, its message without the path the entry already gives."""
    why = exc.message
    for prefix in (f"{shown}: ", f"{shown} "):
        if why.startswith(prefix):
            why = why[len(prefix) :]
            break
    return ImageSkip(path=process.workspace.relpath(shown), code=exc.code, why=why)


def _summary(done: int, skipped: int) -> str:
    return f"{done} done, {skipped} skipped"


def _info_one(process: Process, path: str) -> ImageInfoResult:
    """Decode one image and report what it is."""
    img, rel = _load(process, path)
    try:
        # Counting frames reads every frame's header and EXIF is parsed lazily: a file damaged
        # past its first frame fails here, after _load, and is still just a damaged image.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            frames = getattr(img, "n_frames", 1)
            exif = _exif_summary(img)
    except Exception as exc:
        raise LlmosError(ErrorCode.E_INVAL, f"{path} is a damaged image: {exc}") from None
    return ImageInfoResult(
        path=rel,
        format=img.format,
        width=img.width,
        height=img.height,
        mode=img.mode,
        frames=frames,
        exif=exif,
    )


def image_info(call: ImageInfo, process: Process) -> ImageInfoResult | ImageInfoBatchResult:
    """One image in full; over a folder or pattern, each image's format and size."""
    files = _inputs(process, call.path)
    if files is None:
        return _info_one(process, call.path)
    images: list[ImageSize] = []
    skipped: list[ImageSkip] = []
    for path in files:
        try:
            img, rel = _load(process, path)
        except LlmosError as exc:
            skipped.append(_skip(process, path, exc))
            continue
        images.append(ImageSize(path=rel, format=img.format, width=img.width, height=img.height))

    def most(key: Callable[[ImageSize], int]) -> str | None:
        return max(images, key=key).path if images else None

    return ImageInfoBatchResult(
        path=process.workspace.relpath(call.path) or ".",
        summary=f"{len(images)} images, {len(skipped)} skipped",
        tallest=most(lambda i: i.height),
        widest=most(lambda i: i.width),
        largest=most(lambda i: i.width * i.height),
        skipped=skipped,
        images=images,
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


def _out_folder(process: Process, out_dir: str) -> str:
    """`out_dir` as a "./"-prefixed workspace folder, made (with its parents) if missing."""
    with process.workspace.locate(out_dir, create_parents=True) as loc:
        info = loc.lstat()
        if info is None:
            try:
                os.mkdir(loc.name, 0o777, dir_fd=loc.dir_fd)
            except OSError as exc:
                raise os_error(exc, out_dir) from None
        elif not stat.S_ISDIR(info.st_mode):
            raise LlmosError(ErrorCode.E_NOTDIR, f"{out_dir} is not a folder")
        return f"./{loc.rel}" if loc.rel else "."


Edit = Callable[["PILImage.Image"], tuple["PILImage.Image", str]]
"""An image operation: the edited image and the suffix its default output name gets."""


def _write_one(
    process: Process,
    path: str,
    edit: Edit,
    fmt: str | None,
    output: str | None,
    out_dir: str | None,
    overwrite: bool,
) -> ImageWriteResult:
    """Load, edit and save one image: to `output`, into `out_dir` under its own name, or beside
    it under a new name. `fmt` forces a format (convert), which also sets the extension."""
    img, rel = _load(process, path)
    out, suffix = edit(img)
    ext = None if fmt is None else "." + ("jpg" if fmt == "JPEG" else fmt.lower())
    if out_dir is not None:
        stem, old_ext = posixpath.splitext(posixpath.basename(rel))
        output = f"{out_dir}/{stem}{ext or old_ext}"
    elif output is None:
        output = _default_output(process, rel, suffix, ext)
    elif fmt is not None and _format_for(output, fmt) != fmt:
        raise LlmosError(ErrorCode.E_INVAL, f"{output}'s extension does not match {fmt.lower()}")
    return _save(process, out, rel, output, fmt or _format_for(output, img.format), overwrite)


def _apply(
    call: WriteCall, process: Process, edit: Edit, fmt: str | None = None
) -> ImageWriteResult | ImageBatchResult:
    """Run `edit` on the image `call.path` names, or on each one of a folder or pattern: a file
    that fails is reported in `skipped` and the rest go on."""
    if call.output is not None and call.out_dir is not None:
        raise LlmosError(ErrorCode.E_INVAL, "give output or out_dir, not both")
    files = _inputs(process, call.path)
    if files is not None and call.output is not None:
        raise LlmosError(
            ErrorCode.E_INVAL, f"output names one file; for {call.path} give out_dir instead"
        )
    out_dir = None if call.out_dir is None else _out_folder(process, call.out_dir)
    if files is None:
        return _write_one(process, call.path, edit, fmt, call.output, out_dir, call.overwrite)
    done: list[ImageDone] = []
    skipped: list[ImageSkip] = []
    for path in files:
        try:
            res = _write_one(process, path, edit, fmt, None, out_dir, call.overwrite)
        except LlmosError as exc:
            skipped.append(_skip(process, path, exc))
            continue
        done.append(ImageDone(path=res.path, output=res.output, size=f"{res.width}x{res.height}"))
    return ImageBatchResult(
        path=process.workspace.relpath(call.path) or ".",
        out_dir=None if out_dir is None else process.workspace.relpath(out_dir) or ".",
        summary=_summary(len(done), len(skipped)),
        skipped=skipped,
        done=done,
    )


def image_resize(call: ImageResize, process: Process) -> ImageWriteResult | ImageBatchResult:
    """Resize; with one side given, the other keeps each image's aspect ratio."""
    if call.width is None and call.height is None:
        raise LlmosError(ErrorCode.E_INVAL, "give width, height, or both")

    def edit(img: PILImage.Image) -> tuple[PILImage.Image, str]:
        width = call.width or max(1, round(img.width * (call.height or 1) / img.height))
        height = call.height or max(1, round(img.height * width / img.width))
        if width > MAX_IMAGE_SIDE or height > MAX_IMAGE_SIDE:
            raise LlmosError(
                ErrorCode.E_TOOBIG, f"{width}x{height} is over {MAX_IMAGE_SIDE} px a side"
            )
        if width * height > MAX_IMAGE_PIXELS:
            raise LlmosError(
                ErrorCode.E_TOOBIG, f"{width}x{height} is over the {MAX_IMAGE_PIXELS}-pixel limit"
            )
        return img.resize((width, height)), f"_{width}x{height}"

    return _apply(call, process, edit)


def image_thumbnail(call: ImageThumbnail, process: Process) -> ImageWriteResult | ImageBatchResult:
    """Shrink (never enlarge) to fit in size x size, keeping the aspect ratio."""

    def edit(img: PILImage.Image) -> tuple[PILImage.Image, str]:
        img.thumbnail((call.size, call.size))
        return img, "_thumb"

    return _apply(call, process, edit)


def image_convert(call: ImageConvert, process: Process) -> ImageWriteResult | ImageBatchResult:
    """Re-encode in another format; default and out_dir outputs get the format's extension."""
    return _apply(call, process, lambda img: (img, ""), FORMATS[call.format])


def image_crop(call: ImageCrop, process: Process) -> ImageWriteResult | ImageBatchResult:
    """Crop to a box that must lie inside each image."""
    if call.right <= call.left or call.bottom <= call.top:
        raise LlmosError(ErrorCode.E_INVAL, "the box needs right > left and bottom > top")

    def edit(img: PILImage.Image) -> tuple[PILImage.Image, str]:
        if call.right > img.width or call.bottom > img.height:
            raise LlmosError(
                ErrorCode.E_INVAL, f"the box goes outside the {img.width}x{img.height} image"
            )
        return img.crop((call.left, call.top, call.right, call.bottom)), "_crop"

    return _apply(call, process, edit)


def image_text(call: ImageText, process: Process) -> ImageTextResult:
    """OCR of one image in the document converter's sandbox, cached per image version."""
    data, rel = _read(process, call.path)
    if kind_of(rel, data[:BINARY_SNIFF]) != "image":
        raise LlmosError(ErrorCode.E_INVAL, f"{call.path} is not an image (PNG, JPEG, GIF...)")
    extracted = (process.services.get(Documents) or Documents()).read(data, "image", call.path)
    lines = [
        ImageTextLine(text=line.text, confidence=round(line.confidence, 3), box=list(line.box))
        for unit in extracted.units
        for line in unit.lines
    ]
    return ImageTextResult(path=rel, text=extracted.text, lines=lines, count=len(lines))


def _in_resource(call: ImageInfo | ImageText, process: Process) -> Iterable[str]:
    return [process.workspace.relpath(call.path)]


def _in_out_resources(call: WriteCall, process: Process) -> Iterable[str]:
    paths = [process.workspace.relpath(call.path)]
    for out in (call.output, call.out_dir):
        if out is not None:
            paths.append(process.workspace.relpath(out))
    return paths


@hookimpl
def register_syscalls(register: Registrar) -> None:
    """Register the image family."""
    # image.text first: listed after image.info, the 1.5B model called image.info for "what
    # does the screenshot say?" and invented the words from the size.
    register(ImageText, image_text, result=ImageTextResult, resources=_in_resource)
    register(ImageInfo, image_info, result=ImageInfoResult, resources=_in_resource)
    for model, handler in (
        (ImageResize, image_resize),
        (ImageThumbnail, image_thumbnail),
        (ImageConvert, image_convert),
        (ImageCrop, image_crop),
    ):
        register(model, handler, result=ImageWriteResult, resources=_in_out_resources)  # type: ignore[arg-type]
