"""A checkpoint directory's manifest: every file's size and SHA-256, written at commit, checked at resume.

The manifest catches flipped bytes, truncation, missing and stray files; a checksum is not a
signature, so torch files are also read statically (`safe_load.disallowed_globals`) and refused
when their pickle names anything outside the allow-list. Nothing here executes checkpoint content.
"""

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from hpo_ray.learner.safe_load import TORCH_SUFFIXES, UnsafeCheckpointFileError, disallowed_globals

MANIFEST_FILE = "manifest.json"
FORMAT = 1
_CHUNK = 8 << 20


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in 8 MiB chunks (hashlib releases the GIL, so files hash in parallel)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _files(root: Path) -> list[str]:
    """Every file under `root` except the manifest, as sorted POSIX paths relative to `root`."""
    out = []
    for dirpath, _, names in os.walk(root):
        for name in names:
            rel = (Path(dirpath) / name).relative_to(root).as_posix()
            if rel != MANIFEST_FILE:
                out.append(rel)
    return sorted(out)


def _digests(root: Path, rels: list[str]) -> list[str]:
    with ThreadPoolExecutor(max_workers=max(1, min(8, os.cpu_count() or 1, len(rels)))) as pool:
        return list(pool.map(lambda rel: file_sha256(root / rel), rels))


def write_manifest(root: str | Path) -> dict:
    """Hash every file under `root` and write `manifest.json` there (fsync'd); returns the manifest."""
    root = Path(root)
    rels = _files(root)
    files = {rel: {"size": (root / rel).stat().st_size, "sha256": digest} for rel, digest in zip(rels, _digests(root, rels))}
    manifest = {"format": FORMAT, "algorithm": "sha256", "files": files}
    with open(root / MANIFEST_FILE, "w") as f:
        f.write(json.dumps(manifest, indent=1, sort_keys=True))
        f.flush()
        os.fsync(f.fileno())
    return manifest


def read_manifest(root: Path) -> tuple[dict | None, str | None]:
    """(files table, None), or (None, what is wrong with the manifest)."""
    path = root / MANIFEST_FILE
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        return None, f"{MANIFEST_FILE}: missing (an incomplete checkpoint, or one written before manifests)"
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, f"{MANIFEST_FILE}: unreadable ({exc})"
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        return None, f"{MANIFEST_FILE}: unknown format (expected format {FORMAT})"
    files = manifest.get("files")
    if not isinstance(files, dict) or not all(isinstance(e, dict) and {"size", "sha256"} <= set(e) for e in files.values()):
        return None, f"{MANIFEST_FILE}: malformed file table"
    return files, None


def verify_dir(root: str | Path) -> list[str]:
    """What is wrong with checkpoint directory `root`, one line per problem naming the file and the
    expected vs the actual value; empty when every file matches and every torch file is loadable
    without code."""
    root = Path(root)
    files, problem = read_manifest(root)
    if files is None:
        return [problem]
    present = set(_files(root))
    problems = [f"{rel}: not in the manifest" for rel in sorted(present - set(files))]
    sized = []
    for rel, entry in sorted(files.items()):
        if rel not in present:
            problems.append(f"{rel}: missing (expected {entry['size']} bytes)")
            continue
        size = (root / rel).stat().st_size
        if size != entry["size"]:
            problems.append(f"{rel}: {size} bytes, expected {entry['size']}")
        else:
            sized.append(rel)
    for rel, digest in zip(sized, _digests(root, sized)):
        if digest != files[rel]["sha256"]:
            problems.append(f"{rel}: sha256 {digest[:16]}…, expected {files[rel]['sha256'][:16]}…")
        elif rel.endswith(TORCH_SUFFIXES):
            problems += _unsafe(root, rel)
    return problems


def _unsafe(root: Path, rel: str) -> list[str]:
    try:
        names = disallowed_globals(root / rel)
    except UnsafeCheckpointFileError as exc:
        return [f"{rel}: {exc.reason}"]
    return [f"{rel}: its pickle names {', '.join(names)}, outside the allow-list (loading would run code)"] if names else []
