"""Saving and loading dictionaries in SAELens' format (cfg.json + sae_weights.safetensors)."""
from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import torch
from sae_lens import SAE
from sae_lens.constants import SAE_CFG_FILENAME, SAE_WEIGHTS_FILENAME
from sae_lens.saes.sae import TrainingSAE

from store.paths import staging_dir, swap_folder


def save_dictionary(sae: TrainingSAE, path: Path, activation_scale: float = 1.0) -> None:
    """Write the inference version of a training dictionary to the folder `path`, atomically.

    The training loop trains on x * activation_scale, where activation_scale brings the mean input norm to
    sqrt(d_in) (SAELens' convention, so coefficients and MP's residual threshold transfer across models).
    The scale is folded into the saved weights, so the saved dictionary works on raw activations; the live
    `sae` is left untouched. The folder is written next to `path` (`.NAME.partial-PID@HOST-XXXX`, what a killed
    save left there is swept first) and renamed into place: a reader sees the old dictionary or the new one,
    never half of one.
    """
    path = Path(path)
    if not activation_scale > 0:
        raise ValueError(f"activation_scale must be positive (got {activation_scale})")
    clone = _detached_copy(sae)
    if activation_scale != 1.0:
        clone.fold_activation_norm_scaling_factor(activation_scale)
    clone.cfg.metadata.activation_scale = activation_scale
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = staging_dir(path.parent, path.name)
    try:
        clone.save_inference_model(staging)
        swap_folder(staging, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _detached_copy(sae: TrainingSAE) -> TrainingSAE:
    """Same class, config and state, without the live module's caches: folding it leaves `sae` as it is."""
    clone = type(sae)(copy.deepcopy(sae.cfg))
    clone.load_state_dict(sae.state_dict())
    return clone


def load_dictionary(path: Path, device: str | torch.device = "cpu") -> SAE:
    """SAE.load_from_disk with one-line ValueErrors for a missing, incomplete or corrupt folder.

    The dictionary takes flat rows: SparseScope always passes hook_z activations flattened head-major
    [.., n_heads * d_head], so SAELens' hook_z reshaping (on for such dictionaries after loading) is turned off
    here, the one place every dictionary is loaded.
    """
    path = Path(path)
    if not path.is_dir():
        raise ValueError(f"no dictionary folder at {path}")
    for name in (SAE_CFG_FILENAME, SAE_WEIGHTS_FILENAME):
        if not (path / name).is_file():
            raise ValueError(f"{path} is not a dictionary folder (missing {name})")
    try:
        cfg = json.loads((path / SAE_CFG_FILENAME).read_text())
        architecture = cfg.get("architecture")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as exc:
        raise ValueError(f"{path / SAE_CFG_FILENAME} is not valid JSON ({exc.__class__.__name__})") from None
    _check_declared_size(path, cfg, torch.device(device))
    try:
        sae = SAE.load_from_disk(path, device=str(device))
    except KeyError:
        raise ValueError(f"{path}: unknown dictionary architecture {architecture!r}") from None
    except Exception as exc:  # noqa: BLE001 - safetensors, torch and SAELens fail in many ways on bad files
        first_line = str(exc).splitlines()[0] if str(exc) else ""
        raise ValueError(f"cannot load the dictionary in {path}: {exc.__class__.__name__}: {first_line}") from None
    sae.turn_off_forward_pass_hook_z_reshaping()
    return sae


def _check_declared_size(path: Path, cfg: dict, device: torch.device) -> None:
    """ValueError (InputError: memory) before SAELens allocates the dictionary cfg.json declares, unless the
    weights file holds a decoder of that size (read from the file's header, nothing loaded) and it fits.
    A file whose header cannot be read is left to SAELens to report."""
    from safetensors import safe_open

    from sae.device import require_memory

    d_in, d_sae = cfg.get("d_in"), cfg.get("d_sae")
    if d_in is None or d_sae is None:
        return
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (d_in, d_sae)):
        raise ValueError(f"{path / SAE_CFG_FILENAME} must give d_in and d_sae as positive integers "
                         f"(got {d_in!r}, {d_sae!r})")
    try:
        with safe_open(str(path / SAE_WEIGHTS_FILENAME), framework="pt") as handle:
            shapes = {name: tuple(handle.get_slice(name).get_shape()) for name in handle.keys()}
    except Exception:  # noqa: BLE001 - safetensors reports a bad file with its own error types
        shapes = {}
    if "W_dec" in shapes and shapes["W_dec"] != (d_sae, d_in):
        raise ValueError(f"{path / SAE_CFG_FILENAME} declares d_in={d_in:,}, d_sae={d_sae:,}, but "
                         f"{SAE_WEIGHTS_FILENAME} holds W_dec {list(shapes['W_dec'])}")
    require_memory(8 * d_in * d_sae, f"the dictionary in {path} (d_in={d_in:,} x d_sae={d_sae:,})", device)
