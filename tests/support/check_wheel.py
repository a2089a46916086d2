"""Run inside a fresh venv holding one installed wheel: it imports and has the right shape."""

import importlib
import importlib.metadata
import importlib.util
import sys

dist, module = sys.argv[1], sys.argv[2]
mod = importlib.import_module(module)
version = importlib.metadata.version(dist)
assert mod.__version__ == version, (mod.__version__, version)
assert isinstance(mod.__all__, list), "no __all__"
for name in mod.__all__:
    assert hasattr(mod, name), f"{module}.{name} is in __all__ but missing"
if dist == "frp-core":
    assert importlib.util.find_spec("websockets") is None, "frp-core alone pulled in websockets"
if dist == "frp-ws" and importlib.util.find_spec("uvicorn") is None:
    message = ""
    try:
        importlib.import_module("frp_ws.uvicorn")
    except ImportError as exc:  # without uvicorn, the splice says what to install
        message = str(exc)
    assert "frp-ws[uvicorn]" in message, f"frp_ws.uvicorn without uvicorn: {message!r}"
for name in importlib.metadata.metadata(dist).get_all("License-File") or ["<none>"]:
    assert name == "LICENSE", f"{dist} ships no LICENSE ({name})"
print(f"{dist} {version}: imports, {len(mod.__all__)} public names")
