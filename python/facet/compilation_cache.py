"""Jax's persistent compilation cache for Facet's programs, keyed by host.

Compiled CPU executables are specific to the instruction set they were compiled for,
so the cache directory carries a fingerprint of the host's CPU and jaxlib. Also here:
a stderr filter for one false alarm XLA:CPU prints when it loads a cached executable.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import threading
from pathlib import Path

_CACHE_ENV = "FACET_CACHE_DIR"




def _host_fingerprint() -> str:
    """A short hash of this host's CPU model and features and of the jaxlib version.

    Compiled CPU executables are specific to the instruction set they were
    compiled for; keying the cache directory by it keeps hosts with different
    CPUs that share a home directory from loading each other's executables.
    """
    import hashlib
    import platform

    parts = [platform.machine(), platform.processor()]
    try:
        import jaxlib

        parts.append(getattr(jaxlib, "__version__", ""))
    except ImportError:  # pragma: no cover
        pass
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            seen = set()
            for line in fh:
                key = line.split(":", 1)[0].strip()
                if key in ("model name", "flags", "Features", "CPU part") and key not in seen:
                    seen.add(key)
                    parts.append(line.strip())
    except OSError:
        pass
    return f"{platform.machine() or 'cpu'}-{hashlib.sha256(chr(10).join(parts).encode()).hexdigest()[:12]}"


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "facet" / "jax"


def compilation_cache_dir() -> str | None:
    """The directory Facet's compilations are cached in, or None when disabled.

    ``$FACET_CACHE_DIR`` overrides the default (``$XDG_CACHE_HOME/facet/jax``,
    i.e. ``~/.cache/facet/jax``); an empty value, ``0`` or ``off`` disables
    caching.  Entries go to a per-host subdirectory (CPU model, features and
    jaxlib version).  A cache directory the user already gave jax
    (``jax_compilation_cache_dir``) is used as is.
    """
    import jax

    current = jax.config.jax_compilation_cache_dir
    if current:
        return current
    env = os.environ.get(_CACHE_ENV)
    if env is not None and env.strip().lower() in ("", "0", "off", "none", "false"):
        return None
    path = (Path(env).expanduser() if env else default_cache_dir()) / _host_fingerprint()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return str(path)


# XLA:CPU logs two very long ERROR lines whenever it loads a cached executable on
# hosts where LLVM adds the tuning pseudo-features +prefer-no-gather/-scatter:
# they are not ISA features, the host check cannot see them, and the message is
# a false alarm (the cache directory is already keyed by the host's CPU).
_FALSE_ALARM = re.compile(
    rb"cpu_aot_loader.*Target machine feature \+prefer-no-(gather|scatter) is not +supported"
)


@contextlib.contextmanager
def _filtered_stderr(pattern: re.Pattern):
    """Forward file descriptor 2 line by line, dropping lines matching ``pattern``."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
        read_end, write_end = os.pipe()
    except (OSError, ValueError, AttributeError):
        yield
        return

    def pump():
        buf = b""
        with os.fdopen(read_end, "rb", buffering=0) as src:
            while True:
                chunk = src.read(65536)
                if not chunk:
                    break
                buf += chunk
                *lines, buf = buf.split(b"\n")
                out = b"".join(l + b"\n" for l in lines if not pattern.search(l))
                if out:
                    os.write(saved, out)
        if buf and not pattern.search(buf):
            os.write(saved, buf)

    thread = threading.Thread(target=pump, name="facet-stderr-filter", daemon=True)
    thread.start()
    os.dup2(write_end, 2)
    os.close(write_end)
    try:
        yield
    finally:
        try:
            sys.stderr.flush()
        except Exception:
            pass
        os.dup2(saved, 2)  # closes the pipe's last write end: the pump sees EOF
        thread.join(timeout=5.0)
        os.close(saved)


@contextlib.contextmanager
def cache_scope(path: str | None):
    """Use jax's persistent compilation cache at ``path`` for the compilations inside.

    The settings are restored afterwards, so the caller's own jax programs are
    not cached in Facet's directory.  Does nothing when ``path`` is None or
    the user has configured a cache directory of their own.
    """
    import jax

    if path is None or jax.config.jax_compilation_cache_dir:
        yield
        return
    names = (
        "jax_compilation_cache_dir",
        "jax_persistent_cache_min_compile_time_secs",
        "jax_persistent_cache_min_entry_size_bytes",
    )
    saved = {n: getattr(jax.config, n) for n in names}
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    try:
        with _filtered_stderr(_FALSE_ALARM):
            yield
    finally:
        for n, v in saved.items():
            jax.config.update(n, v)
