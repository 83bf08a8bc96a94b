"""A folder model registry: ``<registry>/<name>/<version>/`` plus a production pointer.

Each registered model is a copy of its model folder. ``<registry>/<name>/PRODUCTION``
holds the version that mapping runs use by default; it is replaced atomically.
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from pathlib import Path

from eoseg.errors import InputNotFoundError
from eoseg.models.card import CARD_FILE, WEIGHTS_FILE, ModelCard, read_card
from eoseg.store import staged_folder

logger = logging.getLogger(__name__)

PRODUCTION_FILE = "PRODUCTION"


def register(model_dir: str | os.PathLike[str], registry_dir: str | os.PathLike[str]) -> ModelCard:
    """Copy a model folder into the registry as ``<name>/<version>/``.

    Registering the same version twice is a no-op (versions are content hashes).

    Args:
        model_dir: Folder written by `eoseg.models.save_model`.
        registry_dir: Registry root (created if missing).

    Returns:
        The card of the registered model.

    Raises:
        InputNotFoundError: If the model folder is incomplete.
    """
    src = Path(model_dir)
    card = read_card(src)
    if not (src / WEIGHTS_FILE).is_file():
        raise InputNotFoundError(
            f"no {WEIGHTS_FILE} in {src}: register a complete model folder written by training"
        )
    dest = Path(registry_dir) / card.name / card.version
    if (dest / CARD_FILE).is_file():
        logger.info("model %s %s already registered", card.name, card.version)
        return card
    with staged_folder(dest) as tmp:
        shutil.copytree(src, tmp, dirs_exist_ok=True)
    logger.info("registered model %s %s at %s", card.name, card.version, dest)
    return card


def list_models(registry_dir: str | os.PathLike[str]) -> list[ModelCard]:
    """Cards of every registered model, sorted by name then creation time.

    A missing registry folder gives an empty list.
    """
    root = Path(registry_dir)
    if not root.is_dir():
        return []
    cards = [read_card(p.parent) for p in sorted(root.glob(f"*/*/{CARD_FILE}"))]
    return sorted(cards, key=lambda c: (c.name, c.created, c.version))


def _model_path(registry_dir: str | os.PathLike[str], name: str, version: str) -> Path:
    path = Path(registry_dir) / name / version
    if not (path / CARD_FILE).is_file():
        known = [c.version for c in list_models(registry_dir) if c.name == name]
        raise InputNotFoundError(
            f"model {name!r} version {version!r} is not in registry {registry_dir}; "
            f"registered versions: {known or 'none'}: register it first (eoseg.registry.register)"
        )
    return path


def set_production(registry_dir: str | os.PathLike[str], name: str, version: str) -> None:
    """Mark ``name``/``version`` as the production model of its name.

    Raises:
        InputNotFoundError: If that version is not registered.
    """
    path = _model_path(registry_dir, name, version)
    pointer = path.parent / PRODUCTION_FILE
    tmp = path.parent / f".{PRODUCTION_FILE}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.write_text(version + "\n")
    os.replace(tmp, pointer)
    logger.info("production model %s is now %s", name, version)


def production_model(registry_dir: str | os.PathLike[str], name: str) -> Path:
    """Folder of the production version of ``name``.

    Raises:
        InputNotFoundError: If no production version is set or it is missing.
    """
    pointer = Path(registry_dir) / name / PRODUCTION_FILE
    if not pointer.is_file():
        raise InputNotFoundError(
            f"model {name!r} has no production version in registry {registry_dir}: "
            "call eoseg.registry.set_production first"
        )
    return _model_path(registry_dir, name, pointer.read_text().strip())
