"""The pure core stays pure: adapters, audio, the Gladia wire format and the replay buffer import no
event loop, no network library and no logger (rule 1 of the house style)."""

from __future__ import annotations

import ast
import itertools
import subprocess
import sys
from pathlib import Path

import pytest

PURE = [
    "bridge.adapters.twilio",
    "bridge.adapters.base",
    "bridge.audio",
    "bridge.stt.protocol",
    "bridge.stt.addons",
    "bridge.stt.addon_links",
    "bridge.stt.analysis",
    "bridge.stt.read_back",
    "bridge.stt.utterance",
    "bridge.local_stt.context",
    "bridge.local_stt.languages",
    "bridge.transcript_addons",
    "bridge.transcript_schema",
    "bridge.transcript_schema_pg",  # the shared record's tables and statements in PostgreSQL
    "bridge.stt.replay",
    "bridge.reply.actions",
    "bridge.reply.playout",
    "bridge.reply.bargein",
    "bridge.reply.dtmf",
    "bridge.reply.gather",
    "bridge.reply.sensitive",  # the sensitive pause: holders, the maximum, what it covers
    "bridge.tools.ear",
    "bridge.tools.keypad",
    "bridge.tools.twiml_read",
    "bridge.fleet.keys",
    "bridge.adapters",  # the whole package: every adapter and carrier description
    "bridge.adapters.carrier",
    "bridge.adapters.stream_auth",
    "bridge.call.resume",
    "bridge.call.payloads",
    "bridge.call.record",
    "bridge.stt.session_state",
    "bridge.stt.counters",
    "bridge.stt_profile",
    "bridge.reply.figures",
    "bridge.transcript_render",
    "bridge.control",  # call control's pure pieces: tokens, allow-list, each carrier's transfer markup
    "bridge.control.tokens",
    "bridge.control.allow",
    "bridge.control.twiml",
    "bridge.control.dial_status",
    "bridge.control.plivo_xml",
    "bridge.control.ncco",
    "bridge.control.jambonz_verbs",
    "bridge.control.rest",  # carriers' call-control requests, built and not sent
    "bridge.control.esl",  # FreeSWITCH's event socket, sans-I/O
    "bridge.dial",  # outbound calls' pure pieces: the order, each carrier's requests and callbacks, the detector
    "bridge.dial.order",
    "bridge.dial.carriers",
    "bridge.dial.creates",
    "bridge.dial.links",
    "bridge.dial.reports",
    "bridge.dial.report_fields",
    "bridge.dial.detector",
    "bridge.recording.timeline",  # a call recording's two channels, assembled without I/O
    "bridge.recording.ogg",
    "bridge.recording.opus_encoder",  # libopus through ctypes: PCM in, packets out
    "bridge.recording.parts",  # a recording's parts in object storage joined on read
    "bridge.recording.index",  # the parts' index in the call record: SQL text and its rows read
    "bridge.redaction",  # BRIDGE_REDACT: cards, SSNs, phone numbers and emails found and replaced
    "bridge.redaction_numbers",
]
FORBIDDEN = ["asyncio", "aiohttp", "structlog", "websockets"]


@pytest.mark.parametrize("module", PURE)
def test_pure_module_imports_no_io(module: str) -> None:
    code = (
        f"import sys, {module}; bad = [m for m in {FORBIDDEN!r} if m in sys.modules]; "
        "print(','.join(bad)); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, f"{module} pulls in {result.stdout.strip()}"


def test_the_core_loads_no_tool_and_no_local_engine() -> None:
    """Importing the bridge application loads no user tool (demo, player, loadtest, writers), no local
    speech engine and no Redis client: a production install with a Gladia key carries none of them,
    and the single-machine bridge loads nothing of fleet mode."""
    heavy = [
        "bridge.tools",
        "bridge.local_stt",
        "faster_whisper",
        "ctranslate2",
        "onnxruntime",
        "av",
        "piper",
        "redis",  # fleet mode only (BRIDGE_REDIS_URL)
        "bridge.fleet",
    ]
    code = (
        "import sys, bridge.app, bridge.cli; "
        f"bad = sorted(m for m in sys.modules if any(m == h or m.startswith(h + '.') for h in {heavy!r})); "
        "print(','.join(bad)); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"bridge.app pulls in {result.stdout.strip()}"


def _imports(path: Path, package_root: Path) -> set[str]:
    """Every bridge module ``path`` imports, anywhere in the file (functions and TYPE_CHECKING blocks too)."""
    tree = ast.parse(path.read_text())
    module = ".".join(path.relative_to(package_root.parent).with_suffix("").parts).removesuffix(".__init__")
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = module.rsplit(".", node.level)[0] if path.name != "__init__.py" else module
                base = f"{parent}.{base}" if base else parent
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)
    return {m for m in found if m == "bridge" or m.startswith("bridge.")}


def _modules(root: Path) -> dict[str, Path]:
    """Every module of ``bridge/`` by dotted name (a package by its own name)."""
    return {
        ".".join(p.relative_to(root.parent).with_suffix("").parts).removesuffix(".__init__"): p
        for p in root.rglob("*.py")
    }


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every cycle a depth-first walk of ``graph`` meets, each as the ring of its nodes (first repeated)."""
    cycles: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for n in sorted(graph.get(node, ())):
            if state.get(n) == 1:
                cycles.append([*stack[stack.index(n) :], n])
            elif n not in state:
                visit(n)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return cycles


def test_no_import_cycle_in_the_bridge() -> None:
    """The modules of ``bridge/`` form no import cycle, counting every import (lazy ones inside functions
    and TYPE_CHECKING ones included): each layer can be read, tested and replaced on its own."""
    root = Path(__file__).resolve().parent.parent / "bridge"
    modules = _modules(root)
    graph = {m: {i for i in _imports(p, root) if i in modules and i != m} for m, p in modules.items()}
    cycles = _cycles(graph)
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


def _package(module: str) -> str:
    """``bridge.x`` for every module of ``bridge/x/`` and for the top-level module ``bridge/x.py``."""
    return ".".join(module.split(".")[:2])


def test_no_import_cycle_between_packages() -> None:
    """Packages (and top-level modules) of ``bridge/`` form no cycle either, every import counted: a
    package that reaches up to what uses it (a handler inside ``reply`` importing the app's state, which
    imports ``reply``) cannot be understood or replaced on its own."""
    root = Path(__file__).resolve().parent.parent / "bridge"
    modules = _modules(root)
    edges: dict[str, dict[str, str]] = {}  # package -> package it imports -> one import that does it
    for m, p in modules.items():
        for i in _imports(p, root):
            target = i if i in modules else i.rsplit(".", 1)[0]
            if target in modules and _package(target) != _package(m) and _package(m) != "bridge":
                edges.setdefault(_package(m), {}).setdefault(_package(target), f"{m} imports {i}")
    cycles = [
        ", ".join(edges[a][b] for a, b in itertools.pairwise(ring))
        for ring in _cycles({pkg: set(targets) for pkg, targets in edges.items()})
    ]
    assert not cycles, "cycles between packages:\n" + "\n".join(cycles)


# Pure cores with one job may be longer: their length is one state machine, read as one.
LONG_PURE_CORES = {"bridge/reply/playout.py"}
MAX_MODULE_LINES = 450


def test_no_module_over_450_lines_except_pure_cores() -> None:
    """A shell that grows past 450 lines is doing several jobs: split it by job (a reader changing one
    thing should hold one file). The pure cores allowed to be longer are named, and must stay pure."""
    root = Path(__file__).resolve().parent.parent
    long = {
        str(p.relative_to(root)): n
        for p in (root / "bridge").rglob("*.py")
        if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert set(long) <= LONG_PURE_CORES, f"modules over {MAX_MODULE_LINES} lines: {long}"
    for path in LONG_PURE_CORES:
        assert path.replace("/", ".").removesuffix(".py") in PURE, f"{path} is long and not a pure core"
